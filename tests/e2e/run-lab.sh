#!/bin/sh
# run-lab.sh --build-dir DIR [--scenario NAME] [options]
# Boots Debian's 6.1 kernel in qemu with the host root shared read-only over
# 9p, runs tests/e2e/scenario.py inside and copies its results out through a
# writable 9p share. Exit code = scenario result (non-zero on any failure,
# including "qemu or the kernel cannot be had": this test never skips).
#
# Options:
#   --build-dir DIR   build tree; agent = DIR/bin/ipsec-auditd (required)
#   --scenario NAME   esp (default) | strongswan | flood | boot | sidebyside (benchmark:
#                     auditd + laurel and the agent on one stream, tools/bench/sidebyside.py;
#                     figures in OUT/sidebyside.txt; env E2E_SIDEBYSIDE="n=20000 flood=off perf=0")
#   --agent PATH      agent binary, or "standin" for the python stand-in
#   --cache DIR       kernel/initramfs cache (default DIR/e2e-cache)
#   --out DIR         results (default DIR/e2e-out; wiped each run)
#   --accel A         auto (default) | kvm | tcg   (env E2E_ACCEL)
#   --timeout S       hard bound for the VM, seconds (default 300; 3600 with --scale)
#   --scale LIST      tunnel-scale benchmark instead (scenario scale, scale.py):
#                     e.g. 250,1000,4000 tunnels up and flushed; figures in OUT/scale.txt
#   --scale-dump M    with --scale: then a start-up dump of M SAs + M policies
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD="" SCENARIO=esp AGENT="" CACHE="" OUT="" ACCEL=${E2E_ACCEL:-auto} TIMEOUT=${E2E_TIMEOUT:-}
SCALE="" SCALE_DUMP=0
die() { echo "run-lab: ERROR: $*" >&2; echo "e2e: 0 passed, 1 failed" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --build-dir) BUILD=$2; shift 2 ;;
        --scenario) SCENARIO=$2; shift 2 ;;
        --agent) AGENT=$2; shift 2 ;;
        --cache) CACHE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --accel) ACCEL=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --scale) SCALE=$2; SCENARIO=scale; shift 2 ;;
        --scale-dump) SCALE_DUMP=$2; shift 2 ;;
        -h|--help) sed -n "2,21p" "$0" | sed "s|^# \{0,1\}||"; echo "Env: E2E_ACCEL E2E_TIMEOUT E2E_SCALE_PROBE=1 E2E_AGENT_ARGS E2E_MODPROBE=on E2E_VM_DEBUG=CMD E2E_KVM_CPU E2E_TCG_CPU E2E_KVM_PROBE_TIMEOUT"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ -n "$BUILD" ] || die "--build-dir is required"
if [ -z "$TIMEOUT" ]; then
    case "$SCENARIO" in scale) TIMEOUT=3600 ;; sidebyside) TIMEOUT=1800 ;; *) TIMEOUT=300 ;; esac
fi
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
CACHE=${CACHE:-$BUILD/e2e-cache}
OUT=${OUT:-$BUILD/e2e-out}
AGENT=${AGENT:-$BUILD/bin/ipsec-auditd}
if [ "$AGENT" != standin ]; then
    case "$AGENT" in /*) ;; *) AGENT=$(pwd)/$AGENT ;; esac
    [ -x "$AGENT" ] || die "agent binary $AGENT not found (build it, or pass --agent standin)"
fi
[ "$(id -u)" = 0 ] || echo "run-lab: warning: not root; the 9p share of / may miss unreadable files" >&2

T0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

QEMU=$(command -v qemu-system-x86_64 || true)
[ -n "$QEMU" ] || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
command -v python3 >/dev/null || die "python3 not found"
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || die "ip (iproute2) not found"
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || die "nft not found (apt-get install nftables)"

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
SRC_ROOT_EARLY=$(cd "$HERE/../.." && pwd)
KINFO=$("$HERE/fetch-kernel.sh" "$CACHE") || die "cannot get the kernel (fetch-kernel.sh failed)"
eval "$KINFO"
# Named by the content of its inputs: several trees (worktrees, branches) may
# share one cache, each with its own module list.
IHASH=$(cat "$HERE/init.sh" "$HERE/mkinitramfs.sh" | sha256sum | cut -c1-12)
INITRD="$CACHE/initramfs-$KVER-$IHASH.cpio.gz"
if [ ! -f "$INITRD" ]; then
    "$HERE/mkinitramfs.sh" "$MODROOT" "$KVER" "$INITRD" >/dev/null || die "mkinitramfs.sh failed"
fi
echo "run-lab: kernel $KVER ready ($(since "$T0") s)"
if [ "$SCENARIO" = sidebyside ]; then
    # Debian's auditd + laurel unpacked (not installed) for the VM to run
    "$SRC_ROOT_EARLY/tools/bench/sidebyside-root.sh" "$CACHE" >/dev/null ||
        die "cannot unpack auditd + laurel (tools/bench/sidebyside-root.sh failed)"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Accelerator: KVM only if it really works here, else TCG. /dev/kvm can exist
# and qemu start with it while the guest kernel then hangs (nested setups), so
# the probe boots the lab kernel to /init, which prints a marker and powers off.
KVM_CPU=${E2E_KVM_CPU:-host}
if [ "$ACCEL" = auto ]; then
    ACCEL=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
        TP=$(date +%s.%N)
        timeout -k 2 "${E2E_KVM_PROBE_TIMEOUT:-6}" "$QEMU" -accel kvm -cpu "$KVM_CPU" -m 256 \
            -nodefaults -no-user-config -display none -monitor none -no-reboot \
            -serial "file:$OUT/kvm-probe.log" -kernel "$VMLINUZ" -initrd "$INITRD" \
            -append "console=ttyS0 loglevel=1 panic=-1 e2e.probe" </dev/null >/dev/null 2>&1 || true
        if grep -q E2E-PROBE-OK "$OUT/kvm-probe.log" 2>/dev/null; then
            ACCEL=kvm
        fi
        echo "run-lab: KVM probe: $( [ $ACCEL = kvm ] && echo works || echo 'does not work here, using TCG') ($(since "$TP") s)"
    fi
fi
case "$ACCEL" in
    kvm) ACCEL_ARGS="-accel kvm -cpu $KVM_CPU" ;;
    tcg) ACCEL_ARGS="-accel tcg -cpu ${E2E_TCG_CPU:-max}" ;;
    *) die "bad --accel $ACCEL" ;;
esac

# Paths the VM needs that sit below the VM's own tmpfs mounts (tmp, run,
# var/tmp) are bound back from the host root by the VM's /init.
SRC_ROOT=$(cd "$HERE/../.." && pwd)
E2E_BIND=""
AGENT_DIR=$SRC_ROOT
[ "$AGENT" = standin ] || AGENT_DIR=$(dirname "$AGENT")
for p in "$SRC_ROOT" "$BUILD" "$MODROOT" "$AGENT_DIR" "$CACHE"; do
    p=$(cd "$p" && pwd -P)
    case "$p/" in
        /tmp/*|/run/*|/var/tmp/*) E2E_BIND="$E2E_BIND $p" ;;
    esac
done

cat > "$OUT/config.env" <<EOT
E2E_BIND='$E2E_BIND'
E2E_DIR='$HERE'
MODROOT='$MODROOT'
KVER='$KVER'
AGENT='$AGENT'
SCENARIO='$SCENARIO'
OUT_VM=/run/e2e/out
SCENARIO_TIMEOUT=$((TIMEOUT - 60))
E2E_VM_DEBUG='${E2E_VM_DEBUG:-}'
E2E_MODPROBE='${E2E_MODPROBE:-off}'
E2E_SCALE='$SCALE'
E2E_SCALE_DUMP='$SCALE_DUMP'
E2E_SCALE_PROBE='${E2E_SCALE_PROBE:-0}'
E2E_AUDIT_BACKLOG='${E2E_AUDIT_BACKLOG:-8192}'
E2E_CACHE='$CACHE'
E2E_SIDEBYSIDE='${E2E_SIDEBYSIDE:-}'
${E2E_AGENT_ARGS+E2E_AGENT_ARGS='$E2E_AGENT_ARGS'}
EOT

echo "run-lab: booting ($ACCEL, timeout ${TIMEOUT}s), scenario $SCENARIO, agent $AGENT"
TB=$(date +%s.%N)
set +e
timeout -k 5 "$TIMEOUT" "$QEMU" $ACCEL_ARGS -m 2048 -smp 2 \
    -nodefaults -no-user-config -display none -monitor none -no-reboot \
    -serial "file:$OUT/console.log" \
    -kernel "$VMLINUZ" -initrd "$INITRD" \
    -append "console=ttyS0 loglevel=4 panic=-1 quiet" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$OUT,mount_tag=out,security_model=none" \
    </dev/null >"$OUT/qemu.log" 2>&1
QRC=$?
set -e
VMTIME=$(since "$TB")
RC=$(cat "$OUT/rc" 2>/dev/null || echo none)
echo "run-lab: VM ran ${VMTIME}s (qemu exit $QRC, scenario rc $RC, accel $ACCEL); total $(since "$T0")s"
echo "accel=$ACCEL vm_seconds=$VMTIME total_seconds=$(since "$T0")" > "$OUT/timing.txt"

if [ -f "$OUT/scenario.log" ]; then cat "$OUT/scenario.log"; fi
if [ "$RC" != 0 ]; then
    [ $QRC -eq 124 ] || [ $QRC -eq 137 ] && echo "run-lab: ERROR: VM killed after ${TIMEOUT}s timeout" >&2
    echo "run-lab: ---- VM console ($OUT/console.log) ----" >&2
    cat "$OUT/console.log" >&2 2>/dev/null || true
    if [ -s "$OUT/agent.log" ]; then
        echo "run-lab: ---- agent log (last 40 lines) ----" >&2
        tail -n 40 "$OUT/agent.log" >&2
    fi
    echo "run-lab: ---- qemu output ----" >&2
    cat "$OUT/qemu.log" >&2 2>/dev/null || true
    echo "run-lab: ---- end; results in $OUT ----" >&2
    # repeat the summary as the very last line
    grep '^e2e: [0-9]* passed, [0-9]* failed$' "$OUT/scenario.log" 2>/dev/null | tail -n 1 | grep . ||
        echo "e2e: 0 passed, 1 failed"
    case "$RC" in ''|none|*[!0-9]*) exit 1 ;; 0) exit 1 ;; *) exit "$RC" ;; esac
fi
echo "run-lab: results in $OUT"
exit 0
