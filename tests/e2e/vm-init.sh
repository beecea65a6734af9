#!/bin/sh
# PID 1 of the lab VM after switch_root into the host root (read-only 9p, tmpfs on
# /tmp /run /var/tmp), with config.env sourced (E2E_DIR MODROOT KVER AGENT
# SCENARIO OUT_VM SCENARIO_TIMEOUT). Sets up kernel module loading from the
# fetched module tree, then runs the scenario. Exit code = scenario result.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
set -a; . /run/e2e/out/config.env; set +a
OUT=${OUT_VM:-/run/e2e/out}
echo "vm-init: uptime $(cut -d' ' -f1 /proc/uptime) kernel $(uname -r)"

# The kernel requests crypto/xfrm modules via /proc/sys/kernel/modprobe: point
# it at the fetched module tree (its version differs from the host's).
mkdir -p /run/e2e/bin
MODPROBE=$(command -v modprobe || echo /sbin/modprobe)
cat > /run/e2e/bin/modprobe <<EOT
#!/bin/sh
exec $MODPROBE -d "$MODROOT" -S "$KVER" "\$@"
EOT
chmod 755 /run/e2e/bin/modprobe
echo /run/e2e/bin/modprobe > /proc/sys/kernel/modprobe
for m in esp4 esp6 xfrm_user veth nf_tables nft_log nfnetlink_log; do
    /run/e2e/bin/modprobe "$m" || echo "vm-init: modprobe $m failed"
done
ip link set lo up

main() {
echo "vm-init: uptime $(cut -d' ' -f1 /proc/uptime) starting scenario $SCENARIO"
timeout -k 5 "${SCENARIO_TIMEOUT:-200}" python3 "$E2E_DIR/scenario.py" \
    --scenario "$SCENARIO" --agent "$AGENT" --out "$OUT" --e2e-dir "$E2E_DIR"
rc=$?
[ $rc -eq 124 ] && echo "vm-init: scenario timed out after ${SCENARIO_TIMEOUT:-200}s"
echo "vm-init: uptime $(cut -d' ' -f1 /proc/uptime) scenario exited $rc"
dmesg > "$OUT/dmesg.txt" 2>/dev/null
cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ' > "$OUT/modules.txt"
return $rc
}
main
rc=$?
echo "$rc" > "$OUT/rc"
sync
echo "vm-init: uptime $(cut -d' ' -f1 /proc/uptime) powering off"
echo o > /proc/sysrq-trigger
while :; do :; done
