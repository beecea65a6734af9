#!/bin/sh
# fetch-kernel.sh CACHE_DIR
# Idempotently fetch Debian's generic 6.1 kernel image package (the version that
# linux-image-amd64 depends on), unpack it under CACHE_DIR and run depmod on it.
# Nothing is installed; all files live under CACHE_DIR.
# Prints shell assignments: KVER=..., VMLINUZ=..., MODROOT=... (MODROOT is the
# dpkg -x root: modules are in $MODROOT/lib/modules/$KVER).
set -eu
CACHE=${1:?usage: fetch-kernel.sh CACHE_DIR}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

die() { echo "fetch-kernel: ERROR: $*" >&2; exit 1; }

# Resolve the versioned image package, e.g. linux-image-6.1.0-56-amd64.
resolve_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: *\(linux-image-[0-9][^ ]*-amd64\) *$/\1/p' | head -n1
}

PKG=${E2E_KERNEL_PKG:-}
if [ -z "$PKG" ]; then
    PKG=$(resolve_pkg || true)
    if [ -z "$PKG" ]; then
        # Maybe the apt lists are missing: refresh once (Debian only).
        apt-get update -qq >/dev/null 2>&1 || true
        PKG=$(resolve_pkg || true)
    fi
fi
[ -n "$PKG" ] || {
    # Fall back to a previously fetched tree, if any.
    PKG=$(ls -1 "$CACHE" 2>/dev/null | sed -n 's/^\(linux-image-.*-amd64\)\.done$/\1/p' | tail -n1)
    [ -n "$PKG" ] || die "cannot resolve the kernel image package from 'apt-cache depends linux-image-amd64'"
}
case "$PKG" in *cloud*) die "refusing $PKG: the -cloud- flavour lacks 9p" ;; esac
KVER=${PKG#linux-image-}
ROOT="$CACHE/$PKG"

if [ ! -f "$CACHE/$PKG.done" ]; then
    command -v dpkg >/dev/null || die "dpkg not found"
    command -v depmod >/dev/null || [ -x /sbin/depmod ] || die "depmod not found (install kmod)"
    DL="$CACHE/dl"
    rm -rf "$DL" "$ROOT"
    mkdir -p "$DL"
    if ! ( cd "$DL" && apt-get download "$PKG" >&2 ); then
        # stale apt lists (the mirror moved on to a newer ABI): refresh, re-resolve, retry
        apt-get update -qq >/dev/null 2>&1 || true
        if [ -z "${E2E_KERNEL_PKG:-}" ]; then
            NEW=$(resolve_pkg || true)
            if [ -n "$NEW" ] && [ "$NEW" != "$PKG" ]; then
                PKG=$NEW; KVER=${PKG#linux-image-}; ROOT="$CACHE/$PKG"; rm -rf "$ROOT"
            fi
        fi
        ( cd "$DL" && apt-get download "$PKG" >&2 ) || die "apt-get download $PKG failed"
    fi
    DEB=$(ls -1 "$DL"/*.deb | head -n1)
    [ -f "$DEB" ] || die "no .deb downloaded for $PKG"
    mkdir -p "$ROOT"
    dpkg -x "$DEB" "$ROOT"
    # Debian >= 12 may ship modules under /usr/lib/modules; normalise to lib/modules.
    if [ ! -d "$ROOT/lib/modules/$KVER" ] && [ -d "$ROOT/usr/lib/modules/$KVER" ]; then
        mkdir -p "$ROOT/lib"
        ln -s ../usr/lib/modules "$ROOT/lib/modules"
    fi
    PATH="$PATH:/sbin:/usr/sbin" depmod -b "$ROOT" "$KVER"
    rm -rf "$DL"
    : > "$CACHE/$PKG.done"
fi

VMLINUZ="$ROOT/boot/vmlinuz-$KVER"
[ -f "$VMLINUZ" ] || die "missing $VMLINUZ"
[ -f "$ROOT/lib/modules/$KVER/modules.dep" ] || die "missing modules.dep in $ROOT/lib/modules/$KVER"
echo "KVER=$KVER"
echo "VMLINUZ=$VMLINUZ"
echo "MODROOT=$ROOT"
