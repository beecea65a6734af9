#!/usr/bin/python3
"""Live test of the XFRM counters and of changes made while the agent was
stopped, on this machine's kernel (XFRM without ESP), in namespaces the test
creates:
- an inbound policy in netns X requires ESP; N cleartext UDP packets from a
  veth peer in netns Y raise XfrmInTmplMismatch by N (the kernel counts it
  without ESP support), and the agent writes cleartext-packet-dropped (4963)
  aggregates from the counters whose counts add up to exactly that rise;
- service-stopped carries the rise per netns; the state snapshot is written;
- a policy deleted and one added while the agent is stopped are written at
  the next start, marked while_stopped; the snapshot is used once (SAs: this
  kernel has no ESP/AH types, the SA diff is unit-tested);
- a corrupt snapshot gives a log line and no record, never a crash.
Every wait is for a record or a counter, never a fixed sleep."""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from livelib import Agent, Netns, host_xfrm_snapshot, live_test, sh  # noqa: E402

N = 7


def stat(ns, name):
    out = sh("ip", "netns", "exec", ns.name, "cat", "/proc/net/xfrm_stat").stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return int(parts[1])
    raise AssertionError(f"no {name} in xfrm_stat of {ns.name}")


def send_cleartext(ns, n):
    sh("ip", "netns", "exec", ns.name, "python3", "-c",
       "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
       f"for i in range({n}): s.sendto(b'x',('10.77.0.1',7777))")


def wait(pred, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def main():
    a, c, validate_file = live_test("live.counters")
    host_before = host_xfrm_snapshot()
    tmp = tempfile.mkdtemp(prefix="ipsec-audit-counters-")
    cfg = os.path.join(tmp, "agent.conf")
    with open(cfg, "w") as f:
        json.dump({"counters": {"interval_seconds": 1}}, f)
    state = os.path.join(tmp, "state", "state-snapshot.json")
    with Netns("cx") as x, Netns("cy") as y:
        sh("ip", "link", "add", "vcx", "netns", x.name, "type", "veth", "peer", "name", "vcy", "netns", y.name)
        x.ip("addr", "add", "10.77.0.1/24", "dev", "vcx")
        y.ip("addr", "add", "10.77.0.2/24", "dev", "vcy")
        x.ip("link", "set", "vcx", "up")
        y.ip("link", "set", "vcy", "up")
        x.ip("xfrm", "policy", "add", "src", "10.77.0.2/32", "dst", "10.77.0.1/32", "proto", "udp", "dport", "7777",
             "dir", "in", "tmpl", "proto", "esp", "mode", "transport")
        x.ip("xfrm", "policy", "add", "src", "10.77.0.1/32", "dst", "10.77.0.9/32", "dir", "out")

        args = ["--netns", x.name, "--config", cfg]
        agent = Agent(a.agent, args, tmp=tmp)
        with agent:
            # The agent's baseline is its first reading at start: packets after
            # service-started are its to count.
            before = stat(x, "XfrmInTmplMismatch")
            send_cleartext(y, N)
            ok = wait(lambda: stat(x, "XfrmInTmplMismatch") - before == N)
            c.check(ok, f"the kernel counted {N} cleartext packets (XfrmInTmplMismatch) without ESP",
                    stat(x, "XfrmInTmplMismatch") - before)

            def drops():
                # The counters' aggregates; the NFLOG source predicts the same
                # drops one by one (source nflog, live.nflog checks those).
                return [r for r in agent.records()
                        if r["event"] == "cleartext-packet-dropped" and r.get("source") == "counters"]
            wait(lambda: sum(r["count"] for r in drops()) >= N)
            d = drops()
            c.check(sum(r["count"] for r in d) == N, f"4963 aggregates add up to the counter's rise ({N})",
                    [(r["count"], r.get("counter")) for r in d])
            c.check(all(r["event_id"] == 4963 and r["source"] == "counters" and r["netns"] == x.name
                        and r["counter"]["name"] == "XfrmInTmplMismatch" for r in d),
                    "4963 records: source counters, the netns, the counter's name", d[:1])
            c.check(agent.stop() == 0, "clean stop")
            recs = agent.records()
            stopped = [r for r in recs if r["event"] == "service-stopped"]
            ctr = stopped[0].get("counters", {}) if stopped else {}
            c.check(ctr.get("netns", {}).get(x.name, {}).get("XfrmInTmplMismatch") == N,
                    "service-stopped: the counter's rise per netns", ctr)
            c.check("reconciliation" in ctr, "service-stopped: reconciliation totals", ctr)
            c.check(not any(r["event"] == "events-lost" for r in recs), "no loss reported", 
                    [r for r in recs if r["event"] == "events-lost"][:2])
        c.check(os.path.exists(state), "state snapshot written at the clean stop")
        with open(state) as f:
            snap = json.load(f)
        c.check(x.name in snap.get("netns", {}) and len(snap["netns"][x.name]["policies"]) == 2,
                "the snapshot holds the netns's two policies", snap)

        # Changes while the agent is stopped.
        x.ip("xfrm", "policy", "del", "src", "10.77.0.1/32", "dst", "10.77.0.9/32", "dir", "out")
        x.ip("xfrm", "policy", "add", "src", "10.77.0.1/32", "dst", "10.77.0.8/32", "dir", "out")
        os.unlink(agent.out)
        agent = Agent(a.agent, args, tmp=tmp)
        with agent:
            def changes():
                return [r for r in agent.records() if r.get("while_stopped")]
            wait(lambda: len(changes()) >= 2)
            ch = sorted((r["event"], r.get("dst") or "") for r in changes())
            c.check(ch == [("policy-added", "10.77.0.8"), ("policy-deleted", "10.77.0.9")],
                    "changes made while stopped: one record each, marked while_stopped", changes())
            c.check(not os.path.exists(state), "the snapshot is used once (removed at start)")
            c.check(agent.stop() == 0, "clean stop")
            problems = validate_file(agent.out)
            c.check(not problems, "records valid against the schema", problems[:3])
        c.check(os.path.exists(state), "a new snapshot at the second clean stop")

        # A corrupt snapshot: a log line, no records, no crash.
        with open(state, "w") as f:
            f.write('{"format":"ipsec-audit-state/1","netns":{"x":{"sas":[{"daddr":1}]')
        os.unlink(agent.out)
        agent = Agent(a.agent, args, tmp=tmp)
        with agent:
            c.check(not any(r.get("while_stopped") for r in agent.records()), "corrupt snapshot: no records")
            c.check(agent.stop() == 0, "corrupt snapshot: clean stop")
            c.check("not a usable state snapshot" in agent.stderr(), "corrupt snapshot: said in the log",
                    agent.stderr()[-500:])
            c.check(not validate_file(agent.out), "records valid against the schema")
    c.check(host_xfrm_snapshot() == host_before, "the host's own SAD/SPD untouched")
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
