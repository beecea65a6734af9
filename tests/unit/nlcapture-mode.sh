#!/bin/sh
# ipsec-audit-nlcapture writes XFRM captures (SA messages, keys included)
# owner-only, also when appending to a file that was readable before, and says
# so on stderr. Needs CAP_NET_ADMIN (the XFRM multicast group).
set -eu
tool="$1"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
umask 022
"$tool" --bus xfrm --group sa --out "$dir/new.bin" --timeout 0.2 2>"$dir/err"
[ "$(stat -c %a "$dir/new.bin")" = 600 ] || fail "new capture is mode $(stat -c %a "$dir/new.bin"), not 600"
grep -q "WARNING.*keys" "$dir/err" || fail "no warning about keys on stderr: $(cat "$dir/err")"
: >"$dir/old.bin"
chmod 644 "$dir/old.bin"
"$tool" --bus xfrm --group sa --out "$dir/old.bin" --timeout 0.2 2>/dev/null
[ "$(stat -c %a "$dir/old.bin")" = 600 ] || fail "appended capture left mode $(stat -c %a "$dir/old.bin")"
echo "ok: captures are written 0600 with a warning"
