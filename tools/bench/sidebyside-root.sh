#!/bin/sh
# sidebyside-root.sh CACHE -> prints the root directory (CACHE/sidebyside-root/root)
# Unpacks Debian's auditd, laurel and the libraries the host lacks for them
# (libauparse0, libwrap0) into CACHE/sidebyside-root/root with `apt-get download`
# + `dpkg -x`: nothing is installed, no service is started, the host's kernel
# audit is not touched. tools/bench/sidebyside.py runs these binaries inside the
# ESP lab VM only (run-lab.sh --scenario sidebyside). Idempotent (a .done marker).
set -eu
CACHE=${1:?usage: sidebyside-root.sh CACHE}
PKGS="auditd laurel libauparse0 libwrap0"
DIR=$CACHE/sidebyside-root
ROOT=$DIR/root
if [ -f "$DIR/.done" ] && [ "$(cat "$DIR/.done")" = "$PKGS" ]; then echo "$ROOT"; exit 0; fi
rm -rf "$DIR"
mkdir -p "$DIR/debs" "$ROOT"
( cd "$DIR/debs" && apt-get download $PKGS >&2 ) || {
    echo "sidebyside-root: apt-get download $PKGS failed (apt-get update? network?)" >&2; exit 1; }
for d in "$DIR"/debs/*.deb; do dpkg -x "$d" "$ROOT"; done
for b in sbin/auditd usr/sbin/laurel; do
    [ -x "$ROOT/$b" ] || { echo "sidebyside-root: $b missing after unpacking" >&2; exit 1; }
done
( cd "$DIR/debs" && ls ) > "$DIR/versions.txt"
echo "$PKGS" > "$DIR/.done"
echo "$ROOT"
