# %preun of ipsec-audit ($1: 0 = erase, 1 = upgrade): stop and disable on
# erase only.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
	if [ -d /run/systemd/system ]; then
		systemctl stop ipsec-auditd.service >/dev/null 2>&1 || :
	fi
	systemctl disable ipsec-auditd.service >/dev/null 2>&1 || :
fi
