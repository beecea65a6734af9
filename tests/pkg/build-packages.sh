#!/bin/sh
# build-packages.sh BUILD_DIR OUT_DIR
# Builds the .deb and .rpm from BUILD_DIR's CPack config into OUT_DIR, and a
# second .deb with a higher version (VERSION+1) into OUT_DIR/upgrade for the
# upgrade test. Prints the file names.
set -eu
BUILD=$(cd "${1:?usage: build-packages.sh BUILD_DIR OUT_DIR}" && pwd)
OUT=${2:?usage: build-packages.sh BUILD_DIR OUT_DIR}
rm -rf "$OUT"
mkdir -p "$OUT/upgrade"
OUT=$(cd "$OUT" && pwd)
VERSION=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$BUILD/CPackConfig.cmake")
[ -n "$VERSION" ] || { echo "build-packages: no CPACK_PACKAGE_VERSION in $BUILD/CPackConfig.cmake" >&2; exit 1; }
cd "$BUILD"
for g in DEB RPM; do
    cpack --config CPackConfig.cmake -G "$g" -B "$OUT" >"$OUT/cpack-$g.log" 2>&1 ||
        { cat "$OUT/cpack-$g.log" >&2; echo "build-packages: cpack -G $g failed" >&2; exit 1; }
done
cpack --config CPackConfig.cmake -G DEB -B "$OUT/upgrade" -D CPACK_PACKAGE_VERSION="$VERSION+1" \
    >"$OUT/cpack-upgrade.log" 2>&1 ||
    { cat "$OUT/cpack-upgrade.log" >&2; echo "build-packages: cpack of the upgrade .deb failed" >&2; exit 1; }
rm -rf "$OUT/_CPack_Packages" "$OUT/upgrade/_CPack_Packages"
ARCH=$(dpkg --print-architecture)
for f in "$OUT/ipsec-audit_${VERSION}_$ARCH.deb" "$OUT/ipsec-audit-$VERSION.$(uname -m).rpm" \
         "$OUT/upgrade/ipsec-audit_${VERSION}+1_$ARCH.deb"; do
    [ -f "$f" ] || { echo "build-packages: expected $f, have: $(ls "$OUT" "$OUT/upgrade")" >&2; exit 1; }
    echo "built $f"
done
