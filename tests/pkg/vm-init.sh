#!/bin/sh
# /init of the package test's initramfs (busybox sh, PID 1), built by
# tests/e2e/mkinitramfs.sh with E2E_INIT pointing here.
# Makes a writable Debian 12 system out of the host root: the host root
# (9p tag hostroot, read-only) is the lower layer of an overlayfs whose upper
# layer is a tmpfs, so dpkg can install into it and nothing reaches the host.
# Then a fresh tmpfs /run with the writable out share (9p tag out) at
# /run/e2e/out, the test's units from out/units copied into /etc/systemd/system,
# and switch_root to /lib/systemd/systemd: systemd is PID 1 and boots
# e2e-pkg.target (kernel command line), which runs the test.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
if grep -q 'e2e.probe' /proc/cmdline; then   # accelerator probe
    echo "E2E-PROBE-OK uptime $(cut -d' ' -f1 /proc/uptime)"
    poweroff -f
fi
while read -r m; do insmod "/lib/modules/$m.ko" || echo "pkg-init: insmod $m failed"; done < /modules.order
while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null || echo "pkg-init: insmod $m failed"; done < /preload.order
fail() {
    echo "pkg-init: FATAL: $*"
    [ -d /newroot/run/e2e/out ] && echo "init: $*" > /newroot/run/e2e/out/init-error
    sync; poweroff -f; echo o > /proc/sysrq-trigger; sleep 10
}
R=/newroot
mkdir -p /lower /upper $R
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "cannot mount 9p hostroot"
mount -t tmpfs -o mode=0755 tmpfs /upper || fail "cannot mount the upper tmpfs"
mkdir -p /upper/rw /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/rw,workdir=/upper/work $R || fail "cannot mount the overlay root"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $R/run || fail "cannot mount /run"
mkdir -p $R/run/e2e/out
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000,cache=none out $R/run/e2e/out || fail "cannot mount 9p out share"
for u in $R/run/e2e/out/units/*; do cp "$u" $R/etc/systemd/system/ || fail "cannot install $u"; done
# The host root may be a container image: without this, systemd would take
# itself for a container's init (and then ignore the kernel command line).
rm -f $R/.dockerenv $R/run/.containerenv
# A container image's "start no service" policy; a Debian system has none.
rm -f $R/usr/sbin/policy-rc.d
# No mandb run from the man-db trigger on each dpkg call (minutes under TCG).
rm -f $R/var/lib/man-db/auto-update
: > $R/etc/fstab
echo "pkg-init: uptime $(cut -d' ' -f1 /proc/uptime) overlay root ready, starting systemd"
umount /proc/sys/fs/binfmt_misc 2>/dev/null
umount /proc /sys /dev 2>/dev/null
exec switch_root $R /lib/systemd/systemd --unit=e2e-pkg.target
fail "switch_root failed"
