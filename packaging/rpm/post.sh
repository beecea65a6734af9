# %post of ipsec-audit ($1: 1 = install, 2 = upgrade). The user and its
# directories, then enable on first install and start where systemd runs
# (upgrades are restarted by %postun of the old package).
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers ipsec-audit.conf || :
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create ipsec-audit.conf || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || :
		systemctl enable --now ipsec-auditd.service >/dev/null 2>&1 || :
	else
		systemctl enable ipsec-auditd.service >/dev/null 2>&1 || :
	fi
fi
