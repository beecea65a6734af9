#!/bin/sh
# check-packages.sh PKG_DIR SOURCE_DIR BUILD_DIR
# Static checks of the packages build-packages.sh made (run as root: the rpm
# install test chroots):
#  - the .deb and the .rpm hold the same files with the same modes, and what
#    the tree builds (ipsec-auditctl, docs/man pages) is in them;
#  - conffiles / %config(noreplace), generated runtime dependencies;
#  - maintainer scripts and rpm scriptlets pass sh -n;
#  - lintian and rpmlint: no errors (warnings printed);
#  - systemd-analyze security --offline of the packaged unit: exposure <= 2.0;
#  - the .rpm installs into and erases from an empty root with rpm --root; its
#    scriptlets run there (busybox sh, logging stand-ins for systemctl and
#    systemd-sysusers), only --nodeps as the root holds no libraries.
set -eu
PKG=$(cd "${1:?usage: check-packages.sh PKG_DIR SOURCE_DIR BUILD_DIR}" && pwd)
SRC=$(cd "${2:?}" && pwd)
BUILD=$(cd "${3:?}" && pwd)
PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "PASS: $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
check() { # check DESCRIPTION COMMAND...
    d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
DEB=$(ls "$PKG"/ipsec-audit_*.deb)
RPM=$(ls "$PKG"/ipsec-audit-*.rpm)
T=$(mktemp -d /tmp/pkg-check.XXXXXX)
trap 'rm -rf "$T"' EXIT

# --- same files, same modes ---------------------------------------------------
dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ {p=$6; sub(/^\./, "", p); print $1, p}' | sort > "$T/deb.files"
rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$RPM" 2>/dev/null | awk '$1 !~ /^d/' | sort > "$T/rpm.files"
if diff -u "$T/deb.files" "$T/rpm.files" > "$T/files.diff"; then
    ok "the .deb and the .rpm hold the same $(wc -l < "$T/deb.files") files with the same modes"
else
    bad "the .deb and the .rpm differ:"; cat "$T/files.diff"
fi
echo "package contents:"; sed 's/^/    /' "$T/deb.files"
has() { grep -q " $1\$" "$T/deb.files"; }
for f in /usr/sbin/ipsec-auditd /lib/systemd/system/ipsec-auditd.service \
         /usr/lib/sysusers.d/ipsec-audit.conf /usr/lib/tmpfiles.d/ipsec-audit.conf \
         /etc/ipsec-audit/ipsec-auditd.conf /etc/logrotate.d/ipsec-audit \
         /usr/share/ipsec-audit/schema/ipsec-audit-1.schema.json \
         /usr/share/doc/ipsec-audit/README.md /usr/share/doc/ipsec-audit/copyright \
         /usr/share/doc/ipsec-audit/changelog.gz /usr/share/licenses/ipsec-audit/LICENSE \
         /usr/share/doc/ipsec-audit/examples/watch-other-netns.conf; do
    check "packaged: $f" has "$f"
done
if [ -x "$BUILD/bin/ipsec-auditctl" ]; then
    check "packaged: /usr/sbin/ipsec-auditctl (built in this tree)" has /usr/sbin/ipsec-auditctl
else
    echo "NOTE: ************************************************************************"
    echo "NOTE: this tree builds no ipsec-auditctl: the packages hold ipsec-auditd only"
    echo "NOTE: ************************************************************************"
fi
npages=0
for page in "$SRC"/docs/man/*.[1-8]; do
    [ -f "$page" ] || continue
    npages=$((npages + 1))
    n=$(basename "$page")
    check "packaged man page: $n (gzipped)" has "/usr/share/man/man${n##*.}/$n.gz"
done
[ $npages -gt 0 ] || echo "NOTE: no docs/man pages in this tree: the packages hold no man page (lintian warns)"
[ "$(basename "$RPM")" = "ipsec-audit-$(rpm -qp --qf '%{VERSION}' "$RPM" 2>/dev/null).$(uname -m).rpm" ] &&
    ok "rpm file name $(basename "$RPM")" || bad "rpm file name $(basename "$RPM")"

# --- conffiles, dependencies ---------------------------------------------------
mkdir -p "$T/ctrl"
dpkg-deb -e "$DEB" "$T/ctrl"
printf '/etc/ipsec-audit/ipsec-auditd.conf\n/etc/logrotate.d/ipsec-audit\n' > "$T/want.conf"
check ".deb conffiles are the config and the logrotate file" cmp -s "$T/want.conf" "$T/ctrl/conffiles"
rpm -qp --qf '[%{FILEFLAGS:fflags}|%{FILENAMES}\n]' "$RPM" 2>/dev/null | awk -F'|' '$1 ~ /c/ {print $1, $2}' | sort > "$T/rpm.conf"
printf 'cn /etc/ipsec-audit/ipsec-auditd.conf\ncn /etc/logrotate.d/ipsec-audit\n' > "$T/want.rpmconf"
check ".rpm %config(noreplace): the config and the logrotate file, nothing else" cmp -s "$T/want.rpmconf" "$T/rpm.conf"
DEPS=$(dpkg-deb -f "$DEB" Depends)
echo ".deb Depends: $DEPS"
for d in libmnl0 libsystemd0 libc6 init-system-helpers; do
    check ".deb depends on $d" sh -c "echo '$DEPS' | grep -q '$d'"
done
REQS=$(rpm -qpR "$RPM" 2>/dev/null)
for d in 'libmnl.so.0()(64bit)' 'libsystemd.so.0()(64bit)'; do
    check ".rpm requires $d (generated)" sh -c "echo '$REQS' | grep -qxF '$d'"
done

# --- scripts: sh -n ---------------------------------------------------------------
for s in postinst prerm postrm; do
    check ".deb $s passes sh -n" sh -n "$T/ctrl/$s"
done
for tag in PREIN POSTIN PREUN POSTUN; do
    rpm -qp --qf "%{$tag}" "$RPM" 2>/dev/null > "$T/$tag.sh"
    [ "$(cat "$T/$tag.sh")" = "(none)" ] && continue
    check ".rpm %$tag scriptlet passes sh -n" sh -n "$T/$tag.sh"
done

# --- lintian, rpmlint ---------------------------------------------------------------
lintian --fail-on error "$DEB" > "$T/lintian.txt" 2>&1 && lrc=0 || lrc=$?
grep -v "running with root privileges" "$T/lintian.txt" | sed 's/^/    lintian: /'
check "lintian: no errors ($(grep -c '^E:' "$T/lintian.txt" || true) E, $(grep -c '^W:' "$T/lintian.txt" || true) W)" \
    sh -c "[ $lrc -eq 0 ] && ! grep -q '^E:' '$T/lintian.txt'"
rpmlint -c "$SRC/packaging/rpm/rpmlint.toml" "$RPM" > "$T/rpmlint.txt" 2>&1 || true
grep ': [EW]: \|errors' "$T/rpmlint.txt" | sed 's/^/    rpmlint: /'
check "rpmlint: no errors" grep -q ' 0 errors' "$T/rpmlint.txt"

# --- the unit's exposure ------------------------------------------------------------
mkdir -p "$T/root"
dpkg-deb -x "$DEB" "$T/root"
SCORE=$(systemd-analyze security --offline=yes --root="$T/root" ipsec-auditd.service 2>/dev/null |
        sed -n 's/.*Overall exposure level for ipsec-auditd.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security --offline: exposure ${SCORE:-?} <= 2.0" \
    sh -c "[ -n '$SCORE' ] && awk -v s='$SCORE' 'BEGIN{exit !(s <= 2.0)}'"

# --- rpm --root: install, erase ---------------------------------------------------------
R="$T/rpmroot"
mkdir -p "$R/bin" "$R/dev" "$R/var/tmp" "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
mknod -m 666 "$R/dev/null" c 1 3 2>/dev/null || : > "$R/dev/null"   # a file will do where mknod is not allowed
for c in systemctl systemd-sysusers systemd-tmpfiles; do   # stand-ins: log what the scriptlets ask for
    printf '#!/bin/sh\necho "%s $*" >> /stand-in.log\n' "$c" > "$R/bin/$c"
    chmod 755 "$R/bin/$c"
done
RPMQ="rpm --root $R --dbpath /var/lib/rpm"
$RPMQ --initdb
if $RPMQ -i --nodeps "$RPM" > "$T/rpm-i.log" 2>&1; then ok "rpm --root -i --nodeps"; else bad "rpm --root -i"; cat "$T/rpm-i.log"; fi
check "rpm --root: ipsec-auditd, unit and config in place" \
    test -x "$R/usr/sbin/ipsec-auditd" -a -f "$R/lib/systemd/system/ipsec-auditd.service" -a -f "$R/etc/ipsec-audit/ipsec-auditd.conf"
check "rpm --root: %post created the user and its directories" \
    sh -c "grep -qx 'systemd-sysusers ipsec-audit.conf' '$R/stand-in.log' && grep -qx 'systemd-tmpfiles --create ipsec-audit.conf' '$R/stand-in.log'"
check "rpm --root: %post enabled the service, did not start it (no systemd running there)" \
    sh -c "grep -qx 'systemctl enable ipsec-auditd.service' '$R/stand-in.log' && ! grep -q 'start\|--now' '$R/stand-in.log'"
check "rpm --root: rpm -V finds the installed files intact" $RPMQ -V --nodeps ipsec-audit
echo '{"netns": ["all"]}' > "$R/etc/ipsec-audit/ipsec-auditd.conf"
: > "$R/stand-in.log"
if $RPMQ -e ipsec-audit > "$T/rpm-e.log" 2>&1; then ok "rpm --root -e"; else bad "rpm --root -e"; cat "$T/rpm-e.log"; fi
check "rpm --root -e: %preun disabled the service" grep -qx 'systemctl disable ipsec-auditd.service' "$R/stand-in.log"
check "rpm --root -e: program and unit gone" test ! -e "$R/usr/sbin/ipsec-auditd" -a ! -e "$R/lib/systemd/system/ipsec-auditd.service"
check "rpm --root -e: the changed config kept as .rpmsave" grep -q all "$R/etc/ipsec-audit/ipsec-auditd.conf.rpmsave"

echo "pkg-check: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
