#!/bin/sh
# /init of the e2e lab initramfs (busybox sh, PID 1).
# Mounts the host root (9p tag hostroot, read-only) at /newroot with tmpfs over
# tmp/run/var/tmp, mounts the writable out share (9p tag out) at
# /newroot/run/e2e/out, then chroots into the host root and runs
# $E2E_DIR/vm-init.sh (as configured by out/config.env) as PID 1 of the host
# root; that script writes its exit code to out/rc and powers the VM off.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
if grep -q 'e2e.probe' /proc/cmdline; then   # run-lab.sh's accelerator probe
    echo "E2E-PROBE-OK uptime $(cut -d' ' -f1 /proc/uptime)"
    poweroff -f
fi
echo "e2e-init: uptime $(cut -d' ' -f1 /proc/uptime) loading modules"
while read -r m; do
    insmod "/lib/modules/$m.ko" || echo "e2e-init: insmod $m failed"
done < /modules.order
while read -r m; do   # lab modules (ESP, crypto, veth, nftables): failures are not fatal
    insmod "/lib/modules/$m.ko" 2>/dev/null || echo "e2e-init: insmod $m failed"
done < /preload.order

halt_vm() {
    sync
    echo "e2e-init: uptime $(cut -d' ' -f1 /proc/uptime) powering off"
    poweroff -f
    echo o > /proc/sysrq-trigger
    sleep 10
}
fail() { echo "e2e-init: FATAL: $*"; [ -d /newroot/run/e2e/out ] && echo "init: $*" > /newroot/run/e2e/out/init-error; halt_vm; }

R=/newroot
H=/hostro
mkdir -p $H
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot $H || fail "cannot mount 9p hostroot"
mount --bind $H $R || fail "cannot bind the host root"
for d in tmp run var/tmp; do
    [ -d $R/$d ] && mount -t tmpfs -o mode=1777 tmpfs $R/$d
done
mkdir -p $R/run/e2e/out
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000,cache=none out $R/run/e2e/out || fail "cannot mount 9p out share"
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
[ -f $R/run/e2e/out/config.env ] || fail "no config.env in the out share"
# The tree under test may live below a directory the tmpfs mounts above hide
# (a CI clone in /tmp): bind those paths back from the host root.
E2E_BIND=$(. $R/run/e2e/out/config.env; echo "$E2E_BIND")
for p in $E2E_BIND; do
    mkdir -p "$R$p" && mount --bind "$H$p" "$R$p" || fail "cannot bind $p"
done
echo "e2e-init: uptime $(cut -d' ' -f1 /proc/uptime) host root mounted, switching root"
# switch_root (not chroot): kernel-spawned helpers such as modprobe must see the
# host root too. vm-init.sh becomes PID 1, writes out/rc and powers off.
exec switch_root $R /bin/sh -c '. /run/e2e/out/config.env && exec /bin/sh "$E2E_DIR/vm-init.sh"'
fail "switch_root failed"
