#!/bin/sh
# mkinitramfs.sh MODROOT KVER OUT.cpio.gz
# Build a tiny initramfs: static busybox + the virtio/9p modules of kernel KVER
# (taken from MODROOT/lib/modules/KVER, as unpacked by fetch-kernel.sh) + init.sh
# (or $E2E_INIT) as /init. Nothing outside OUT's directory is written. If /bin/busybox is not a
# static busybox, busybox-static is fetched with apt-get download next to OUT.
set -eu
MODROOT=${1:?usage: mkinitramfs.sh MODROOT KVER OUT.cpio.gz}
KVER=${2:?usage: mkinitramfs.sh MODROOT KVER OUT.cpio.gz}
OUT=${3:?usage: mkinitramfs.sh MODROOT KVER OUT.cpio.gz}
HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "mkinitramfs: ERROR: $*" >&2; exit 1; }

MODDIR="$MODROOT/lib/modules/$KVER"
[ -f "$MODDIR/modules.dep" ] || die "no modules.dep in $MODDIR (run fetch-kernel.sh)"
OUTDIR=$(cd "$(dirname "$OUT")" && pwd)

# Load order matters: dependencies first.
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p"
# Preloaded by /init as well (with their dependencies, resolved here by the
# host's modprobe): everything the lab's SAs, netns and nft rules need, so the
# VM can run with kernel module autoloading off (each usermode modprobe spawn
# costs ~0.3 s under TCG and the crypto API asks for a dozen). xfrm_interface:
# the strongSwan scenario's route-based child. nft_fib_inet (+ ipv4/ipv6): the
# agent's own table (inet ipsec_audit) matches `fib daddr type local`.
PRELOAD=${E2E_PRELOAD:-"esp4 esp6 xfrm_user xfrm_interface veth nf_tables nft_log nfnetlink_log nft_fib_inet nft_fib_ipv4
 nft_fib_ipv6 crypto-gcm crypto-ctr
 crypto-ghash crypto-authenc crypto-seqiv crypto-echainiv crypto-sha512 crypto-sha3-256
 crypto-jitterentropy_rng crypto-stdrng"}

is_static_busybox() {
    [ -x "$1" ] && file -L "$1" 2>/dev/null | grep -q 'statically linked'
}
BUSYBOX=${E2E_BUSYBOX:-/bin/busybox}
if ! command -v file >/dev/null 2>&1; then
    # no file(1): trust a busybox that runs without a dynamic loader listing
    if [ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1; then :; else BUSYBOX=; fi
elif ! is_static_busybox "$BUSYBOX"; then
    BUSYBOX=
fi
if [ -z "$BUSYBOX" ]; then
    BB="$OUTDIR/busybox-static"
    if [ ! -x "$BB/bin/busybox" ]; then
        rm -rf "$BB" && mkdir -p "$BB/dl"
        ( cd "$BB/dl" && apt-get download busybox-static >&2 ) ||
            die "no static busybox at /bin/busybox and 'apt-get download busybox-static' failed"
        dpkg -x "$BB"/dl/*.deb "$BB"
        rm -rf "$BB/dl"
    fi
    BUSYBOX="$BB/bin/busybox"
    [ -x "$BUSYBOX" ] || die "busybox-static package has no bin/busybox"
fi

STAGE=$(mktemp -d "$OUTDIR/initramfs.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib/modules" "$STAGE/proc" "$STAGE/sys" "$STAGE/dev" "$STAGE/newroot"
cp "$BUSYBOX" "$STAGE/bin/busybox"
ln -s busybox "$STAGE/bin/sh"
: > "$STAGE/modules.order"
for m in $MODS; do
    rel=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -n1 | cut -d: -f1)
    if [ -z "$rel" ]; then
        # built into this kernel: nothing to load
        grep -qE "(^|/)$m\.ko$" "$MODDIR/modules.builtin" 2>/dev/null || die "module $m not found for $KVER"
        continue
    fi
    case "$rel" in
        *.ko) cp "$MODDIR/$rel" "$STAGE/lib/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$MODDIR/$rel" > "$STAGE/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$MODDIR/$rel" > "$STAGE/lib/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$MODDIR/$rel" > "$STAGE/lib/modules/$m.ko" ;;
        *) die "unknown module format $rel" ;;
    esac
    echo "$m" >> "$STAGE/modules.order"
done
MODPROBE=$(command -v modprobe || echo /sbin/modprobe)
: > "$STAGE/preload.order"
for m in $PRELOAD; do
    deps=$("$MODPROBE" -d "$MODROOT" -S "$KVER" --show-depends "$m" 2>/dev/null) ||
        die "cannot resolve module $m for $KVER (modprobe --show-depends)"
    echo "$deps" | sed -n 's/^insmod \([^ ]*\).*/\1/p' | while read -r ko; do
        name=$(basename "$ko"); name=${name%%.ko*}
        grep -qx "$name" "$STAGE/preload.order" && continue
        case "$ko" in
            *.ko) cp "$ko" "$STAGE/lib/modules/$name.ko" ;;
            *.ko.xz) xz -dc "$ko" > "$STAGE/lib/modules/$name.ko" ;;
            *.ko.zst) zstd -qdc "$ko" > "$STAGE/lib/modules/$name.ko" ;;
            *) die "unknown module format $ko" ;;
        esac
        echo "$name" >> "$STAGE/preload.order"
    done
done
cp "${E2E_INIT:-$HERE/init.sh}" "$STAGE/init"
chmod 755 "$STAGE/init"
( cd "$STAGE" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null ) | gzip -1 > "$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
echo "INITRD=$OUT"
