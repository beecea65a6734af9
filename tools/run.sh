#!/bin/sh
# Sets up and runs ipsec-auditd in the foreground on its embedded default:
# JSON Lines to /var/log/ipsec-audit/events.jsonl, echoed to stdout. Ctrl-C
# stops it cleanly. Extra arguments go to ipsec-auditd (see --help).
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh run
# The agent only: the tests (and the python3 they need at configure time) are
# tools/test.sh's business, and the run set of install-deps.sh has no python3.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPSEC_AUDIT_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target ipsec-auditd
exec ./build/bin/ipsec-auditd --foreground "$@"
