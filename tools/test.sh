#!/bin/sh
# Sets up, builds and runs every test, as CI does. Run as root. Three trees,
# one after another (the live tests share the host's kernel audit switch, so
# two live suites must never run at once); a failure in one tree does not
# stop the others, and the script fails at the end if any failed:
#   build/       warnings are errors; unit, schema, live tests on this kernel
#                in their own network namespaces, and the ESP lab (an
#                ESP-capable Debian kernel under qemu)
#   build-asan/  the unit and live tests again, everything (the agent too)
#                built with AddressSanitizer + UndefinedBehaviorSanitizer
#   build-fuzz/  clang: each libFuzzer target for 60 s (docs/FUZZING.md)
set -eu
cd "$(dirname "$0")/.."
jobs=$(nproc)
failed=""
./tools/install-deps.sh all

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPSEC_AUDIT_WERROR=ON -DIPSEC_AUDIT_TESTS=ON >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" || failed="$failed build"

sanitize="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DIPSEC_AUDIT_WERROR=ON -DIPSEC_AUDIT_TESTS=ON -DCMAKE_CXX_FLAGS="$sanitize" >/dev/null
cmake --build build-asan -j"$jobs"
ctest --test-dir build-asan -L 'unit|live' --output-on-failure -j"$jobs" || failed="$failed build-asan"

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DIPSEC_AUDIT_FUZZ=ON -DIPSEC_AUDIT_WERROR=ON -DIPSEC_AUDIT_TESTS=ON >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzzers
ctest --test-dir build-fuzz -L fuzz --output-on-failure -j"$jobs" || failed="$failed build-fuzz"

if [ -n "$failed" ]; then
  echo "tests failed in:$failed" >&2
  exit 1
fi
