#!/usr/bin/python3
"""Live test of the outputs on this machine's real kernel.

Full disk: a JSON Lines output on a 48 KiB tmpfs and a second output
elsewhere; 250 policy changes in a fresh netns fill the tmpfs. The file holds
whole lines only, every record it missed is counted (output-failed on the
other output, the counters in service-stopped add up), and once space is
freed records resume there behind an output-recovered record with the number
lost. A deleted output file is noticed and reopened with a record.

journald: a real systemd-journald, started by this test in its own mount
namespace (a private /run, so the host's journal is untouched; without its
audit capabilities, so it cannot touch the kernel audit switch), receives the
agent's records; `journalctl -D DIR MESSAGE_ID=...` finds them with their
IPSEC_* fields. syslog: RFC 5424 datagrams on a socket of the test's own."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from livelib import Agent, Netns, sh, live_test  # noqa: E402

CHANGES = 250


def message_id(source, kind):
    with open(os.path.join(source, "audit", "catalogue.cpp")) as f:
        m = re.search(r'"([0-9a-f]{32})",\s+// ' + re.escape(kind) + r"\n", f.read())
    return m.group(1)


def batch_policies(ns, prefix, n):
    """n SPD entries in one `ip -batch` run: src PREFIX.i/32."""
    lines = "".join(f"xfrm policy add src {prefix}.{i // 250}.{i % 250 + 1}/32 dst 10.99.0.1/32 dir out\n"
                    for i in range(n))
    r = subprocess.run(["ip", "-n", ns.name, "-batch", "-"], input=lines, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_full_disk(a, c, validate_file):
    tmp = tempfile.mkdtemp(prefix="ipsec-audit-live-")
    mnt = os.path.join(tmp, "tiny")
    os.mkdir(mnt)
    sh("mount", "-t", "tmpfs", "-o", "size=48k,mode=0755", "tmpfs", mnt)
    try:
        ballast = os.path.join(mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\0" * 16384)
        tiny = os.path.join(mnt, "events.jsonl")
        mine = lambda r: (r.get("src") or "").startswith("10.88.")  # noqa: E731
        # The namespace is watched through XFRM: a burst of 250 changes would
        # overflow the kernel audit backlog (64 by default) and lose records
        # before they reach any output, which is not what this measures.
        with Netns() as ns, Agent(a.agent, ["--output", f"jsonl:{tiny}", "--netns", ns.name], tmp=tmp) as agent:
            batch_policies(ns, "10.88", CHANGES)
            agent.wait_for(lambda r: r["event"] == "policy-added" and mine(r), count=CHANGES, timeout=60)
            failed = agent.wait_for(lambda r: r["event"] == "output-failed", timeout=10)[0]
            c.check(failed["output"]["name"] == f"jsonl:{tiny}" and "No space left" in failed["message"],
                    "the full disk is an output-failed record on the other output", failed)
            os.unlink(ballast)
            batch_policies(ns, "10.89", 5)
            agent.wait_for(lambda r: r["event"] == "policy-added" and r["src"].startswith("10.89."), count=5,
                           timeout=20, path=tiny)
            rc = agent.stop()
            c.check(rc == 0, "clean stop", agent.stderr())
        with open(tiny, "rb") as f:
            raw = f.read()
        lines = raw.split(b"\n")
        whole = raw.endswith(b"\n")
        parsed = 0
        for ln in lines[:-1]:
            try:
                json.loads(ln)
                parsed += 1
            except ValueError:
                pass
        c.check(whole and parsed == len(lines) - 1, f"the tmpfs file holds whole, parsable lines only ({parsed})",
                [ln[:80] for ln in lines if ln][-3:])
        c.check(not validate_file(tiny), "every line in it is a valid record")
        other = agent.records()
        in_tiny = [json.loads(ln) for ln in lines[:-1]]
        stopped = other[-1]
        out = [o for o in stopped["outputs"] if o["name"] == f"jsonl:{tiny}"][0]
        print(f"INFO {len(other)} records on the other output, {len(in_tiny)} in the tmpfs file, "
              f"{out['failed']} counted as failed")
        c.check(out["failed"] > 100, f"most records did not fit and were counted ({out['failed']})", out)
        # Everything before service-stopped went to both outputs: written + failed = all of them.
        c.check(out["written"] + out["failed"] == len(other) - 1 and out["written"] == len(in_tiny) - 1,
                "service-stopped's counters add up: written + failed = records on the other output", out)
        recovered = [r for r in other if r["event"] == "output-recovered" and r["output"]["name"] == f"jsonl:{tiny}"]
        c.check(recovered and sum(r["output"]["lost"] for r in recovered) == out["failed"],
                "output-recovered records count every lost record", [r["output"] for r in recovered])
        failed_recs = [r for r in other if r["event"] == "output-failed"]
        c.check(len(failed_recs) == len(recovered), "one output-failed per failure episode, not per record",
                (len(failed_recs), len(recovered)))
        kinds = [r["event"] for r in in_tiny]
        after = kinds[kinds.index("output-recovered"):] if "output-recovered" in kinds else []
        c.check(after and [r for r in in_tiny if r["event"] == "policy-added" and r["src"].startswith("10.89.")],
                "after space was freed the tmpfs file resumes with output-recovered and the new records", kinds[-8:])
    finally:
        sh("umount", mnt, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def test_deleted_file(a, c):
    with Agent(a.agent) as agent:
        os.unlink(agent.out)
        r = agent.wait_for(lambda r: r["event"] == "output-recovered", timeout=10)[0]
        c.check("deleted" in r["output"]["reason"] and r["output"]["name"] == f"jsonl:{agent.out}",
                "a deleted output file is noticed, reopened and said so in it", r["output"])
        agent.stop()
        c.check(agent.records()[-1]["event"] == "service-stopped", "records go on into the new file")


def test_syslog(a, c):
    tmp = tempfile.mkdtemp(prefix="ipsec-audit-live-")
    path = os.path.join(tmp, "log.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(5)
    with Agent(a.agent, ["--output", f"syslog:{path}"], tmp=tmp) as agent:
        agent.stop()
    got = []
    rx.settimeout(0.5)
    try:
        while True:
            got.append(rx.recv(65536))
    except socket.timeout:
        pass
    rx.close()
    m = [re.match(rb"<(\d+)>1 \S+Z \S+ ipsec-auditd (\d+) ([a-z-]+) \[ipsec@32473 event=\"([a-z-]+)\"[^\]]*\] "
                  rb"\xef\xbb\xbf(\{.*\})$", d) for d in got]
    c.check(got and all(m), "every syslog datagram is RFC 5424 with structured data and the JSON as MSG",
            got[:2])
    if got and all(m):
        c.check([x.group(3).decode() for x in m] == [r["event"] for r in agent.records()]
                and int(m[0].group(2)) == agent.proc.pid and m[0].group(1) == b"86",
                "one datagram per record, MSGID = event, PROCID = pid, <86> authpriv.info", [x.group(1) for x in m])
        c.check(all(json.loads(x.group(5))["event"] == x.group(4).decode() for x in m), "MSG is the JSON record")


JOURNALD_SCRIPT = r"""
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal /run/netns
# Without audit capabilities journald cannot turn kernel audit on.
setpriv --inh-caps=-all --bounding-set=-audit_control,-audit_read,-audit_write \
  /lib/systemd/systemd-journald >"$TMP/journald.log" 2>&1 &
jpid=$!
i=0
while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip netns add "$NS"
"$AGENT" --output journald --output "jsonl:$TMP/events.jsonl" --state-dir "$TMP/state" \
  --control-socket "$TMP/control.sock" --netns "$NS" --audit-status-interval 0 2>"$TMP/agent.log" &
apid=$!
i=0
while ! grep -q service-started "$TMP/events.jsonl" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip -n "$NS" xfrm policy add src 10.66.0.1/32 dst 10.66.0.2/32 dir out
i=0
while ! grep -q policy-added "$TMP/events.jsonl" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -TERM $apid
wait $apid || true
ip netns del "$NS"
journalctl --sync 2>/dev/null || true
kill -TERM $jpid
wait $jpid || true
cp -r /run/log/journal "$TMP/journal"
"""


def test_journald(a, c):
    journald = "/lib/systemd/systemd-journald"
    if not os.path.exists(journald) or not shutil.which("journalctl"):
        c.check(False, "systemd-journald and journalctl are installed (package systemd)")
        return
    tmp = tempfile.mkdtemp(prefix="ipsec-audit-live-")
    ns = f"iat-j{os.getpid()}"
    env = {**os.environ, "TMP": tmp, "AGENT": a.agent, "NS": ns}
    r = subprocess.run(["unshare", "--mount", "sh", "-c", JOURNALD_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=60)
    c.check(r.returncode == 0, "journald in a private mount namespace ran", r.stderr)
    jdir = os.path.join(tmp, "journal")

    def query(*match):
        q = subprocess.run(["journalctl", "-D", jdir, "-o", "json", *match], capture_output=True, text=True)
        return [json.loads(x) for x in q.stdout.splitlines() if x.strip()]

    started = query(f"MESSAGE_ID={message_id(a.source, 'service-started')}")
    c.check(len(started) == 1 and started[0]["IPSEC_EVENT"] == "service-started"
            and started[0]["IPSEC_EVENT_ID"] == "5478" and started[0]["PRIORITY"] == "6"
            and json.loads(started[0]["IPSEC_RECORD"])["event"] == "service-started",
            "journalctl MESSAGE_ID=<service-started> finds the record with its fields", started)
    added = query(f"MESSAGE_ID={message_id(a.source, 'policy-added')}", "IPSEC_SRC=10.66.0.1")
    c.check(len(added) == 1 and added[0]["IPSEC_DST"] == "10.66.0.2" and added[0]["IPSEC_NETNS"] == ns
            and added[0]["SYSLOG_IDENTIFIER"] == "ipsec-auditd",
            "journalctl MESSAGE_ID=<policy-added> IPSEC_SRC=... finds the policy change", added)
    stopped = query(f"MESSAGE_ID={message_id(a.source, 'service-stopped')}")
    c.check(len(stopped) == 1, "service-stopped is in the journal too")
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    a, c, validate_file = live_test("live.outputs")
    test_full_disk(a, c, validate_file)
    test_deleted_file(a, c)
    test_syslog(a, c)
    test_journald(a, c)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
