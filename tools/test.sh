#!/bin/sh
# Sets up, builds (warnings are errors) and runs every test: unit, schema,
# live tests on this kernel in their own network namespaces, and the ESP lab
# (an ESP-capable Debian kernel under qemu). Run as root.
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh all
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPSEC_AUDIT_WERROR=ON -DIPSEC_AUDIT_TESTS=ON >/dev/null
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
