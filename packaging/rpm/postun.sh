# %postun of ipsec-audit ($1: 0 = erase, 1 = upgrade). Restart on upgrade.
# rpm has no purge: records (/var/log/ipsec-audit) and the saved policy
# (/var/lib/ipsec-audit) stay, a changed config is kept as .rpmsave.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart ipsec-auditd.service >/dev/null 2>&1 || :
	fi
fi
