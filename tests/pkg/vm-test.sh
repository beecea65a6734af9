#!/bin/sh
# vm-test.sh OUT — runs inside the package test VM (run-vm.sh), as root, from
# e2e-pkg.service with systemd as PID 1. Installs, exercises, upgrades,
# removes and purges the .deb; one PASS:/FAIL: line per check, then
# "pkg-vm: N passed, M failed". Writes OUT/rc and powers the VM off.
set -u
OUT=${1:?usage: vm-test.sh OUT}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
PASS=0 FAIL=0
UNIT=ipsec-auditd.service
LOG=/var/log/ipsec-audit/events.jsonl
DROPIN=/run/systemd/system/$UNIT.d
# the documented set: CAP_NET_ADMIN (12), CAP_AUDIT_CONTROL (30), CAP_AUDIT_READ (37)
CAPS=0000002040001000
CAPS_NETNS=0000002040201000   # + CAP_SYS_ADMIN (21), with the netns drop-in

up() { cut -d' ' -f1 /proc/uptime; }
ok() { PASS=$((PASS + 1)); echo "PASS: [$(up)s] $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL: [$(up)s] $*"; }
check() { d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
note() { echo "----- [$(up)s] $*"; }
loud_skip() {
    echo "SKIP: ******************************************************************"
    echo "SKIP: $*"
    echo "SKIP: ******************************************************************"
}
finish() {
    note "done"
    echo "pkg-vm: $PASS passed, $FAIL failed"
    timeout 60 journalctl -b -u $UNIT --no-pager -o short-monotonic > "$OUT/journal-unit.txt" 2>&1
    timeout 60 journalctl -b --no-pager > "$OUT/journal.txt" 2>&1
    [ "$FAIL" -eq 0 ] && echo 0 > "$OUT/rc" || echo 1 > "$OUT/rc"
    sync
    echo o > /proc/sysrq-trigger
    sleep 30
}
# wait_for SECONDS COMMAND...: polls until COMMAND succeeds (bounded wait for
# an event, never a timing assertion)
wait_for() {
    n=$(( $1 * 4 )); shift
    while [ $n -gt 0 ]; do "$@" 2>/dev/null && return 0; sleep 0.25; n=$((n - 1)); done
    return 1
}
prop() { systemctl show -p "$1" --value $UNIT; }
# show P1 P2 ...: sets S_P1 S_P2 ... with one systemctl call
show() {
    args=""; for p in "$@"; do args="$args -p $p"; done
    eval "$(systemctl show $args $UNIT | sed "s/'//g; s/^\([A-Za-z]*\)=\(.*\)$/S_\1='\2'/")"
}
mainpid() { prop MainPID; }
is_active() { [ "$(systemctl is-active $UNIT)" = active ]; }
records() { c=$(grep -c "\"event\":\"$1\"" $LOG 2>/dev/null); echo "${c:-0}"; }
last_event() { tail -n 1 $LOG | sed -n 's/.*"event":"\([^"]*\)".*/\1/p'; }
status_field() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"; }
new_main_pid() { p=$(mainpid); [ "$p" != 0 ] && [ "$p" != "$1" ] && is_active; }
more_records() { [ "$(records "$1")" -gt "$2" ]; }
daemon_reload() { systemctl daemon-reload; }

note "system: PID 1 is $(cat /proc/1/comm), $(systemctl --version | head -n1), kernel $(uname -r)"
check "systemd is PID 1" [ "$(cat /proc/1/comm)" = systemd ]
check "/run/systemd/system exists (what the maintainer scripts test)" [ -d /run/systemd/system ]
DEB=$OUT/debs/install.deb
UPG=$OUT/debs/upgrade.deb
VER=$(dpkg-deb -f "$DEB" Version)
UPVER=$(dpkg-deb -f "$UPG" Version)
dpkg-deb -c "$DEB" | grep -q ' ./usr/sbin/ipsec-auditctl$' && CTL=yes || CTL=no
strings_has() { grep -qa "$1" /usr/sbin/ipsec-auditd; }

# --- install ----------------------------------------------------------------------
note "dpkg -i ipsec-audit $VER"
T=$(date +%s)
if dpkg -i "$DEB" > "$OUT/dpkg-install.log" 2>&1; then ok "dpkg -i ($(( $(date +%s) - T ))s)"; else bad "dpkg -i"; cat "$OUT/dpkg-install.log"; fi
check "the user ipsec-audit exists (sysusers), system uid, no login shell" \
    sh -c '[ "$(id -u ipsec-audit)" -lt 1000 ] && getent passwd ipsec-audit | grep -q ":/usr/sbin/nologin$"'
show UnitFileState ActiveState Type
check "service enabled on install" [ "$S_UnitFileState" = enabled ]
check "service active when dpkg returns (started on install)" [ "$S_ActiveState" = active ]
# Type=notify: the start job (which postinst waited for) ends only at READY=1,
# and the agent sends READY=1 right after writing 5478. So 5478 is already
# there when dpkg returns; with Type=simple it could not be relied on.
check "Type=notify" [ "$S_Type" = notify ]
check "5478 service-started written before the unit became active" grep -q '"event_id":5478' $LOG
check "log directory ipsec-audit:ipsec-audit 0750" [ "$(stat -c '%U:%G %a' /var/log/ipsec-audit)" = "ipsec-audit:ipsec-audit 750" ]
check "events.jsonl owned by ipsec-audit, mode 0640" [ "$(stat -c '%U %a' $LOG)" = "ipsec-audit 640" ]
check "state directory /var/lib/ipsec-audit ipsec-audit 0750" [ "$(stat -c '%U %a' /var/lib/ipsec-audit)" = "ipsec-audit 750" ]
if [ -f /usr/share/man/man8/ipsec-auditd.8.gz ]; then
    systemd-analyze verify $UNIT > "$OUT/verify.txt" 2>&1 && ok "systemd-analyze verify $UNIT" ||
        { bad "systemd-analyze verify $UNIT"; cat "$OUT/verify.txt"; }
else
    loud_skip "no man page ipsec-auditd(8) in the package: verify runs with --man=no"
    systemd-analyze verify --man=no $UNIT > "$OUT/verify.txt" 2>&1 && ok "systemd-analyze verify --man=no $UNIT" ||
        { bad "systemd-analyze verify $UNIT"; cat "$OUT/verify.txt"; }
fi
SCORE=$(systemd-analyze security $UNIT 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
check "systemd-analyze security (installed unit): exposure ${SCORE:-?} <= 2.0" \
    awk -v s="${SCORE:-9}" 'BEGIN{exit !(s <= 2.0)}'

# A short watchdog for the whole test (until the upgrade), so that a stuck
# agent is noticed within the test's time; WatchdogSec=0 if the agent never
# pings (it would be killed every period).
WDSEC=15
mkdir -p $DROPIN
if strings_has 'WATCHDOG=1'; then
    WD=yes
    printf '[Service]\nWatchdogSec=%ss\n' $WDSEC > $DROPIN/10-watchdog.conf
else
    WD=no
    loud_skip "this ipsec-auditd never sends WATCHDOG=1: WatchdogSec=0 for this test, no watchdog check"
    printf '[Service]\nWatchdogSec=0\n' > $DROPIN/10-watchdog.conf
fi
daemon_reload && systemctl restart $UNIT
WD_SINCE=$(cut -d' ' -f1 /proc/uptime)

# --- the running agent ----------------------------------------------------------------
PID=$(mainpid)
note "agent pid $PID: $(grep -E '^(Uid|Gid|Cap|NoNewPrivs|Seccomp)' /proc/$PID/status | tr '\t\n' ' ')"
UID_A=$(id -u ipsec-audit)
check "agent runs as ipsec-audit (real, effective, saved uid)" \
    sh -c "[ \"\$(sed -n 's/^Uid:[[:space:]]*//p' /proc/$PID/status | tr -s '\t ' ' ')\" = '$UID_A $UID_A $UID_A $UID_A' ]"
check "CapEff is exactly CAP_AUDIT_READ CAP_AUDIT_CONTROL CAP_NET_ADMIN" [ "$(status_field $PID CapEff)" = $CAPS ]
check "CapPrm is exactly the same set" [ "$(status_field $PID CapPrm)" = $CAPS ]
check "CapBnd is exactly the same set" [ "$(status_field $PID CapBnd)" = $CAPS ]
amb=$(status_field $PID CapAmb)
check "CapAmb ($amb) within the set" [ $(( 0x$amb & ~0x$CAPS )) -eq 0 ]
check "NoNewPrivs" [ "$(status_field $PID NoNewPrivs)" = 1 ]
check "seccomp filter on" [ "$(status_field $PID Seccomp)" = 2 ]

note "an XFRM policy change"
n=$(records policy-added)
ip xfrm policy add src 10.81.0.0/24 dst 10.82.0.0/24 dir out \
    tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel
check "policy-added record for ip xfrm policy add" wait_for 30 more_records policy-added "$n"
ip xfrm policy delete src 10.81.0.0/24 dst 10.82.0.0/24 dir out

PID=$(mainpid)
if command -v logrotate >/dev/null 2>&1; then
    note "logrotate -f /etc/logrotate.d/ipsec-audit (postrotate: systemctl reload)"
    logrotate -f -s /run/logrotate.status /etc/logrotate.d/ipsec-audit > "$OUT/logrotate.log" 2>&1 &&
        ok "logrotate -f" || { bad "logrotate -f"; cat "$OUT/logrotate.log"; }
    ROTATED=$LOG.1
else
    loud_skip "no logrotate here: the log moved away by hand and systemctl reload"
    mv $LOG $LOG.1 && systemctl reload $UNIT
    ROTATED=$LOG.1
fi
check "rotated: $ROTATED holds the old records" grep -q '"event_id":5478' $ROTATED
check "reload: same process, still active" sh -c "[ \"\$(systemctl show -p MainPID --value $UNIT)\" = $PID ] && systemctl -q is-active $UNIT"
ip xfrm policy add src 10.83.0.0/24 dst 10.84.0.0/24 dir in \
    tmpl src 192.0.2.2 dst 192.0.2.1 proto esp mode tunnel
check "after the rotation, records go to a new events.jsonl" wait_for 30 more_records policy-added 0
ip xfrm policy delete src 10.83.0.0/24 dst 10.84.0.0/24 dir in
cat $ROTATED $LOG > $LOG.all && cat $LOG.all > $LOG && rm -f $ROTATED $LOG.all

if [ $CTL = yes ]; then
    note "ipsec-auditctl"
    ipsec-auditctl get > "$OUT/ctl-get.txt" 2>&1 && ok "ipsec-auditctl get as root: $(tr '\n' ' ' < "$OUT/ctl-get.txt")" ||
        { bad "ipsec-auditctl get as root"; cat "$OUT/ctl-get.txt"; }
    setpriv --reuid=nobody --regid=nogroup --clear-groups ipsec-auditctl set --success disable \
        > "$OUT/ctl-set-nobody.txt" 2>&1 && rc=0 || rc=$?
    check "ipsec-auditctl set as an ordinary user refused (exit $rc: $(tr '\n' ' ' < "$OUT/ctl-set-nobody.txt"))" [ $rc -ne 0 ]
    ipsec-auditctl get > "$OUT/ctl-get2.txt" 2>&1
    check "policy unchanged after the refused set" cmp -s "$OUT/ctl-get.txt" "$OUT/ctl-get2.txt"
    n=$(records audit-policy-changed)
    check "ipsec-auditctl set --success disable as root" ipsec-auditctl set --success disable
    check "audit-policy-changed record" wait_for 20 more_records audit-policy-changed "$n"
    ipsec-auditctl get > "$OUT/ctl-get3.txt" 2>&1
    check "policy changed ($(tr '\n' ' ' < "$OUT/ctl-get3.txt"))" sh -c "! cmp -s '$OUT/ctl-get.txt' '$OUT/ctl-get3.txt'"
    # Success off: a policy change (a Success record) is counted as suppressed, not written.
    suppressed() {
        ipsec-auditctl --json status 2>/dev/null | python3 -c \
            'import json,sys; print(json.load(sys.stdin)["records"]["by_event"]["policy-added"]["suppressed"])'
    }
    more_suppressed() { [ "$(suppressed)" -gt "$1" ]; }
    added0=$(records policy-added) s0=$(suppressed)   # not $n: wait_for counts with it
    ip xfrm policy add src 10.85.0.0/24 dst 10.86.0.0/24 dir in
    check "Success off: the policy-added is counted as suppressed (status)" wait_for 20 more_suppressed "${s0:-0}"
    check "Success off: ... and not written" [ "$(records policy-added)" -eq "$added0" ]
    ip xfrm policy delete src 10.85.0.0/24 dst 10.86.0.0/24 dir in
    # Back to the CIS setting for the rest of the test (5478/5479 and policy records are Success).
    check "ipsec-auditctl enable" ipsec-auditctl enable
    check "policy back to Success and Failure" sh -c "ipsec-auditctl get | grep -qx 'IPsec Driver: Success and Failure'"
else
    loud_skip "no ipsec-auditctl in this package: control socket checks not run"
fi

# --- restart on a crash ----------------------------------------------------------------
note "kill -SEGV"
PID=$(mainpid)
NR=$(prop NRestarts)
kill -SEGV "$PID"
check "restarted after SIGSEGV (new MainPID, active)" wait_for 60 new_main_pid "$PID"
check "NRestarts went up" [ "$(prop NRestarts)" -gt "$NR" ]
check "journal: the agent died of SIGSEGV" sh -c "journalctl -b -u $UNIT --no-pager | grep -q 'status=11/SEGV'"

# --- watchdog ------------------------------------------------------------------------------
if [ $WD = yes ]; then
    note "watchdog (WatchdogSec=${WDSEC}s): SIGSTOP"
    # the agent pings: 2.5 periods after the restart it was never killed by the watchdog
    left=$(awk -v a="$WD_SINCE" -v b="$(cut -d' ' -f1 /proc/uptime)" -v w=$WDSEC 'BEGIN{d=2.5*w-(b-a); print (d>0)?int(d)+1:0}')
    [ "$left" -gt 0 ] && sleep "$left"
    check "agent pings the watchdog: no watchdog timeout in $(awk -v a="$WD_SINCE" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN{print int(b-a)}')s" \
        sh -c "! journalctl -b -u $UNIT --no-pager | grep -q 'Watchdog timeout'"
    PID=$(mainpid)
    kill -STOP "$PID"
    check "a stopped agent is restarted by the watchdog" wait_for 120 new_main_pid "$PID"
    check "journal: watchdog timeout" sh -c "journalctl -b -u $UNIT --no-pager | grep -q 'Watchdog timeout'"
fi

# --- other network namespaces: the documented drop-in ------------------------------------
note "watch-other-netns.conf drop-in + \"netns\": [\"all\"]"
cp /etc/ipsec-audit/ipsec-auditd.conf "$OUT/conf.orig"
sed -i 's/"netns": \[""\]/"netns": ["all"]/' /etc/ipsec-audit/ipsec-auditd.conf
mkdir -p /etc/systemd/system/$UNIT.d
cp /usr/share/doc/ipsec-audit/examples/watch-other-netns.conf /etc/systemd/system/$UNIT.d/
ip netns add pkgtest
daemon_reload && systemctl restart $UNIT
check "active with the netns drop-in" is_active
PID=$(mainpid)
eff=$(status_field "$PID" CapEff)
check "with the drop-in: CapEff ($eff) is the set + CAP_SYS_ADMIN, or less (the agent drops what it does not use)" \
    [ $(( 0x$eff & ~0x$CAPS_NETNS )) -eq 0 ] 
n=$(records policy-added)
ip -n pkgtest xfrm policy add src 10.91.0.0/24 dst 10.92.0.0/24 dir out \
    tmpl src 192.0.2.9 dst 192.0.2.10 proto esp mode tunnel
check "policy-added record from netns pkgtest" wait_for 30 sh -c "grep '\"event\":\"policy-added\"' $LOG | grep -q pkgtest"
ip netns del pkgtest

# --- a start that fails before READY=1 never becomes active ---------------------------------
note "bad config: the agent exits 2 before READY=1"
echo '{"no such key": 1}' > /etc/ipsec-audit/ipsec-auditd.conf
systemctl restart $UNIT > /dev/null 2>&1 && rc=0 || rc=$?
show ActiveState ExecMainStatus
check "systemctl restart fails (exit $rc), unit failed, never active" [ $rc -ne 0 -a "$S_ActiveState" = failed ]
check "exit status 2 ($S_ExecMainStatus) is not restarted (RestartPreventExitStatus=2)" [ "$S_ExecMainStatus" = 2 ]

# back to the packaged unit and config; a changed setting for the upgrade test
rm -f /etc/systemd/system/$UNIT.d/watch-other-netns.conf
rmdir /etc/systemd/system/$UNIT.d
# (an agent that never pings keeps WatchdogSec=0: it would be killed every 30s)
[ $WD = yes ] && rm -f $DROPIN/10-watchdog.conf
sed 's/"status_interval_seconds": 5/"status_interval_seconds": 7/' "$OUT/conf.orig" > /etc/ipsec-audit/ipsec-auditd.conf
daemon_reload && systemctl reset-failed $UNIT && systemctl start $UNIT
check "starts again with the packaged unit and a good config" is_active

# --- stop -------------------------------------------------------------------------------------
note "systemctl stop"
systemctl stop $UNIT
check "stopped: inactive" [ "$(systemctl is-active $UNIT)" = inactive ]
check "systemctl stop wrote 5479 service-stopped last" [ "$(last_event)" = service-stopped ]
systemctl start $UNIT

# --- upgrade --------------------------------------------------------------------------------
note "upgrade to $UPVER"
[ $CTL = yes ] && ipsec-auditctl get > "$OUT/ctl-before-upgrade.txt" 2>&1
( cd /var/lib/ipsec-audit && find . -type f -exec md5sum {} + | sort ) > "$OUT/state-before.txt"
PID=$(mainpid)
nlines=$(wc -l < $LOG)
T=$(date +%s)
if dpkg -i "$UPG" > "$OUT/dpkg-upgrade.log" 2>&1; then ok "dpkg -i (upgrade, $(( $(date +%s) - T ))s)"; else bad "dpkg -i upgrade"; cat "$OUT/dpkg-upgrade.log"; fi
check "version $UPVER installed" [ "$(dpkg-query -W -f '${Version}' ipsec-audit)" = "$UPVER" ]
check "restarted on upgrade (new MainPID, active)" new_main_pid "$PID"
check "changed config kept" grep -q '"status_interval_seconds": 7' /etc/ipsec-audit/ipsec-auditd.conf
check "no .dpkg-dist/.dpkg-old beside it" sh -c '! ls /etc/ipsec-audit/*.dpkg-* 2>/dev/null | grep -q .'
( cd /var/lib/ipsec-audit && find . -type f -exec md5sum {} + | sort ) > "$OUT/state-after.txt"
check "state directory (policy) kept ($(wc -l < "$OUT/state-before.txt") files)" cmp -s "$OUT/state-before.txt" "$OUT/state-after.txt"
if [ $CTL = yes ]; then
    ipsec-auditctl get > "$OUT/ctl-after-upgrade.txt" 2>&1
    check "policy kept across the upgrade" cmp -s "$OUT/ctl-before-upgrade.txt" "$OUT/ctl-after-upgrade.txt"
fi
check "old records kept, 5479 and a new 5478 appended" \
    sh -c "[ \$(wc -l < $LOG) -gt $nlines ] && tail -n +$((nlines + 1)) $LOG | grep -q '\"event_id\":5479' && tail -n +$((nlines + 1)) $LOG | grep -q '\"event_id\":5478'"

# --- remove, purge ------------------------------------------------------------------------------
cp $LOG "$OUT/events.jsonl"
note "dpkg -r"
if dpkg -r ipsec-audit > "$OUT/dpkg-remove.log" 2>&1; then ok "dpkg -r"; else bad "dpkg -r"; cat "$OUT/dpkg-remove.log"; fi
check "stopped on remove, 5479 last" sh -c "! systemctl -q is-active $UNIT && [ \"\$(tail -n 1 $LOG | sed -n 's/.*\"event\":\"\\([^\"]*\\)\".*/\\1/p')\" = service-stopped ]"
check "program and unit gone" [ ! -e /usr/sbin/ipsec-auditd -a ! -e /lib/systemd/system/$UNIT ]
check "config kept on remove" [ -f /etc/ipsec-audit/ipsec-auditd.conf ]
check "records kept on remove" [ -s $LOG ]
check "state kept on remove" [ -d /var/lib/ipsec-audit ]
note "dpkg -P"
if dpkg -P ipsec-audit > "$OUT/dpkg-purge.log" 2>&1; then ok "dpkg -P"; else bad "dpkg -P"; cat "$OUT/dpkg-purge.log"; fi
check "purge: /etc/ipsec-audit gone" [ ! -e /etc/ipsec-audit ]
check "purge: /var/log/ipsec-audit gone" [ ! -e /var/log/ipsec-audit ]
check "purge: /var/lib/ipsec-audit gone" [ ! -e /var/lib/ipsec-audit ]
check "purge: no enablement symlink left" [ ! -e /etc/systemd/system/multi-user.target.wants/$UNIT ]
check "purge: dpkg knows no ipsec-audit" sh -c '! dpkg-query -W ipsec-audit >/dev/null 2>&1'
finish
