#!/bin/sh
# run-vm.sh --pkg-dir DIR --cache DIR --out DIR [--accel auto|kvm|tcg] [--timeout S]
# Installs the .deb from build-packages.sh into Debian 12 booted with systemd
# as PID 1: the ESP lab's kernel (tests/e2e/fetch-kernel.sh) under qemu, the
# host root read-only over 9p below a tmpfs overlay (vm-init.sh), and
# vm-test.sh run by e2e-pkg.service. Results come back through the out share.
# Exit code = the test's (non-zero on any failure; never skips).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
E2E=$(cd "$HERE/../e2e" && pwd)
PKG="" CACHE="" OUT="" ACCEL=${E2E_ACCEL:-auto} TIMEOUT=${PKG_VM_TIMEOUT:-600}
die() { echo "run-vm: ERROR: $*" >&2; echo "pkg-vm: 0 passed, 1 failed" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --pkg-dir) PKG=$2; shift 2 ;;
        --cache) CACHE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --accel) ACCEL=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ -n "$PKG" ] && [ -n "$CACHE" ] && [ -n "$OUT" ] || die "usage: run-vm.sh --pkg-dir DIR --cache DIR --out DIR"
[ "$(id -u)" = 0 ] || die "run as root (the 9p share of / must see every file)"
QEMU=$(command -v qemu-system-x86_64 || true)
[ -n "$QEMU" ] || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
[ -x /lib/systemd/systemd ] || die "/lib/systemd/systemd not found (apt-get install systemd)"
DEB=$(ls "$PKG"/ipsec-audit_*.deb 2>/dev/null | head -n1)
UPG=$(ls "$PKG"/upgrade/ipsec-audit_*.deb 2>/dev/null | head -n1)
[ -f "$DEB" ] && [ -f "$UPG" ] || die "no .deb in $PKG and $PKG/upgrade (run build-packages.sh)"

T0=$(date +%s)
mkdir -p "$CACHE"
KINFO=$("$E2E/fetch-kernel.sh" "$CACHE") || die "cannot get the kernel (tests/e2e/fetch-kernel.sh failed)"
eval "$KINFO"
INITRD="$CACHE/initramfs-pkg-$KVER.cpio.gz"
if [ ! -f "$INITRD" ] || [ "$HERE/vm-init.sh" -nt "$INITRD" ] || [ "$E2E/mkinitramfs.sh" -nt "$INITRD" ]; then
    E2E_INIT="$HERE/vm-init.sh" E2E_PRELOAD="overlay xfrm_user" \
        "$E2E/mkinitramfs.sh" "$MODROOT" "$KVER" "$INITRD" >/dev/null || die "mkinitramfs.sh failed"
fi

rm -rf "$OUT"
mkdir -p "$OUT/units" "$OUT/debs"
OUT=$(cd "$OUT" && pwd)
# Everything the VM needs is copied into the out share: the source or build
# tree may sit below a path the VM mounts over.
cp "$DEB" "$OUT/debs/install.deb"
cp "$UPG" "$OUT/debs/upgrade.deb"
cp "$HERE/vm-test.sh" "$OUT/vm-test.sh"
cat > "$OUT/units/e2e-pkg.target" <<EOT
[Unit]
Description=ipsec-audit package test
Requires=basic.target
Wants=e2e-pkg.service
After=basic.target
AllowIsolate=yes
EOT
cat > "$OUT/units/e2e-pkg.service" <<EOT
[Unit]
Description=ipsec-audit package test (vm-test.sh)
After=basic.target
[Service]
Type=simple
ExecStart=/bin/sh /run/e2e/out/vm-test.sh /run/e2e/out
StandardOutput=file:/run/e2e/out/vm-test.log
StandardError=inherit
EOT

# KVM only if a probe boot of this kernel gets to /init in time (nested
# virtualisation can hang silently), else TCG; as tests/e2e/run-lab.sh does.
if [ "$ACCEL" = auto ]; then
    ACCEL=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
        timeout -k 2 6 "$QEMU" -accel kvm -cpu host -m 256 -nodefaults -no-user-config -display none \
            -monitor none -no-reboot -serial "file:$OUT/kvm-probe.log" -kernel "$VMLINUZ" -initrd "$INITRD" \
            -append "console=ttyS0 loglevel=1 panic=-1 e2e.probe" </dev/null >/dev/null 2>&1 || true
        grep -q E2E-PROBE-OK "$OUT/kvm-probe.log" 2>/dev/null && ACCEL=kvm
    fi
fi
case "$ACCEL" in
    kvm) ACCEL_ARGS="-accel kvm -cpu host" ;;
    tcg) ACCEL_ARGS="-accel tcg -cpu max" ;;
    *) die "bad --accel $ACCEL" ;;
esac

# Boot-time units a test VM does without (each costs seconds under TCG).
MASK=""
for u in systemd-timesyncd.service systemd-pstore.service e2scrub_reap.service systemd-tmpfiles-setup.service \
         systemd-journal-flush.service systemd-update-utmp.service systemd-modules-load.service \
         apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
         man-db.timer systemd-tmpfiles-clean.timer; do
    MASK="$MASK systemd.mask=$u"
done
echo "run-vm: kernel $KVER, booting systemd ($ACCEL, timeout ${TIMEOUT}s)"
set +e
timeout -k 5 "$TIMEOUT" "$QEMU" $ACCEL_ARGS -m 1536 -smp 2 \
    -nodefaults -no-user-config -display none -monitor none -no-reboot \
    -serial "file:$OUT/console.log" -kernel "$VMLINUZ" -initrd "$INITRD" \
    -append "console=ttyS0 loglevel=4 panic=-1 quiet systemd.unit=e2e-pkg.target systemd.firstboot=off systemd.show_status=error $MASK" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$OUT,mount_tag=out,security_model=none" \
    </dev/null >"$OUT/qemu.log" 2>&1
QRC=$?
set -e
RC=$(cat "$OUT/rc" 2>/dev/null || echo none)
echo "run-vm: VM ran, qemu exit $QRC, test rc $RC, $(( $(date +%s) - T0 ))s in all"
[ -f "$OUT/vm-test.log" ] && cat "$OUT/vm-test.log"
if [ "$RC" != 0 ]; then
    [ $QRC -eq 124 ] || [ $QRC -eq 137 ] && echo "run-vm: ERROR: VM killed after ${TIMEOUT}s" >&2
    echo "run-vm: ---- VM console ($OUT/console.log) ----" >&2
    cat "$OUT/console.log" >&2 2>/dev/null || true
    echo "run-vm: ---- qemu ----" >&2
    cat "$OUT/qemu.log" >&2 2>/dev/null || true
    grep '^pkg-vm: [0-9]* passed, [0-9]* failed$' "$OUT/vm-test.log" 2>/dev/null | tail -n 1 | grep . ||
        echo "pkg-vm: 0 passed, 1 failed"
    exit 1
fi
echo "run-vm: results in $OUT"
