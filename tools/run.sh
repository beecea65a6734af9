#!/bin/sh
# Sets up and runs ipsec-auditd in the foreground on its embedded default:
# JSON Lines to /var/log/ipsec-audit/events.jsonl, echoed to stdout. Ctrl-C
# stops it cleanly. Extra arguments go to ipsec-auditd (see --help).
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh run
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
exec ./build/bin/ipsec-auditd --foreground "$@"
