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

# /init preloaded the lab's modules from the initramfs. Kernel-requested
# modules (crypto templates etc.) would go through /proc/sys/kernel/modprobe:
# with E2E_MODPROBE=on, point it at the fetched module tree (its version differs
# from the host's); by default autoloading is off, as every request spawns a
# process (slow under TCG) and everything needed is preloaded.
mkdir -p /run/e2e/bin
MODPROBE=$(command -v modprobe || echo /sbin/modprobe)
cat > /run/e2e/bin/modprobe <<EOT
#!/bin/sh
exec $MODPROBE -d "$MODROOT" -S "$KVER" "\$@"
EOT
chmod 755 /run/e2e/bin/modprobe
if [ "${E2E_MODPROBE:-off}" = on ]; then
    echo /run/e2e/bin/modprobe > /proc/sys/kernel/modprobe
    for m in esp4 esp6 xfrm_user veth nf_tables nft_log nfnetlink_log; do
        /run/e2e/bin/modprobe "$m" || echo "vm-init: modprobe $m failed"
    done
else
    echo > /proc/sys/kernel/modprobe
fi
ip link set lo up
# optional debugging hook: run-lab.sh passes E2E_VM_DEBUG through config.env
if [ -n "${E2E_VM_DEBUG:-}" ]; then
    echo "vm-init: debug: $E2E_VM_DEBUG"
    sh -c "$E2E_VM_DEBUG" 2>&1
fi

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
