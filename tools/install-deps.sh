#!/bin/sh
# Installs what ipsec-audit needs to build, run and test, from Debian 12's
# own packages. Run as root. Idempotent.
set -eu
export DEBIAN_FRONTEND=noninteractive
BUILD="build-essential cmake pkg-config libmnl-dev libnl-3-dev libnl-route-3-dev libnl-xfrm-3-dev libnftables-dev \
libboost-dev nlohmann-json3-dev libsystemd-dev libcap-ng-dev libgtest-dev libgmock-dev libbenchmark-dev"
RUN="iproute2"
# netbase: /etc/protocols, which `ip xfrm ... proto NAME` and getprotobyname need
# (a minimal root such as debootstrap minbase or a container image lacks it).
# clang, libclang-rt-14-dev, llvm-14: the fuzzers and sanitizer runtimes; rpm, lintian,
# rpmlint, systemd, logrotate: building and checking the packages. python3-prometheus-client:
# its text parser reads the metrics file in the tests.
# strongswan-charon, strongswan-swanctl: the e2e lab's strongSwan scenario runs the
# host's charon inside the VM (never on the host: see the policy-rc.d guard below).
TEST="python3 python3-jsonschema python3-prometheus-client netbase nftables qemu-system-x86 busybox-static kmod cpio \
clang libclang-rt-14-dev llvm-14 rpm lintian rpmlint systemd logrotate strongswan-charon strongswan-swanctl"
case "${1:-all}" in
  run) PKGS="$BUILD $RUN" ;;
  *) PKGS="$BUILD $RUN $TEST" ;;
esac
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  apt-get update -qq
  # Test tools only: no service of theirs is started on this host (strongswan-starter's
  # postinst would start charon). An existing policy-rc.d (containers) is left alone.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
fi
