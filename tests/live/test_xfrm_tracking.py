#!/usr/bin/python3
"""Live test of SA/policy tracking on this machine's real kernel (XFRM, no
ESP): in network namespaces the test creates, policy add / delete /
setdefault / hard expiry / flush and an ACQUIRE give the right records with
the right netns, joined with their kernel audit records; a netns created
after start is followed with --netns all; an overrun forced with a tiny
receive buffer and a burst gives events-lost and, after the resync, a table
equal to `ip xfrm policy`. SA cases need ESP: they run in the ESP lab."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from livelib import Agent, KernelAuditGuard, Netns, host_xfrm_snapshot, live_test, sh  # noqa: E402


def policy_indexes(ns):
    out = sh("ip", "-s", "-n", ns.name, "xfrm", "policy", "list").stdout
    return sorted(int(line.split(" index ")[1].split()[0]) for line in out.splitlines() if " index " in line)


def main():
    a, c, validate_file = live_test("live.xfrm_tracking")
    host_before = host_xfrm_snapshot()

    with KernelAuditGuard(), Netns("ixa") as na, Netns("ixb") as nb:
        # a <-> b over veth, so that an outbound policy with no SA triggers ACQUIRE.
        sh("ip", "link", "add", "ixv-" + na.name[-6:], "netns", na.name, "type", "veth",
           "peer", "name", "ixv-" + nb.name[-6:], "netns", nb.name)
        na.ip("link", "set", "ixv-" + na.name[-6:], "up")
        nb.ip("link", "set", "ixv-" + nb.name[-6:], "up")
        na.ip("addr", "add", "10.78.0.1/24", "dev", "ixv-" + na.name[-6:])
        nb.ip("addr", "add", "10.78.0.2/24", "dev", "ixv-" + nb.name[-6:])
        na.ip("xfrm", "policy", "add", "src", "10.78.9.9/32", "dst", "10.78.9.10/32", "dir", "in")  # before start

        with Agent(a.agent, ["--enable-kernel-audit", "--netns", "all"]) as agent:
            s = agent.wait_for(lambda r: r["event"] == "service-started")[0]
            c.check(s["xfrm"]["netns_watched"] >= 3 and s["xfrm"]["aevents"] is False,
                    "service-started reports watched netns, AEVENTS not joined", s["xfrm"])

            na.ip("xfrm", "policy", "add", "src", "10.78.0.1/32", "dst", "10.78.0.2/32", "proto", "17", "dport",
                  "6666", "dir", "out", "priority", "10", "tmpl", "proto", "esp", "mode", "transport", "reqid", "66")
            r = agent.wait_for(lambda r: r["event"] == "policy-added" and r["dst"] == "10.78.0.2", timeout=2)[0]
            c.check(r["source"] == "xfrm" and r["netns"] == na.name and r["policy"]["dir"] == "out"
                    and r["policy"]["templates"][0]["reqid"] == 66 and r["policy"]["selector"]["dport"] == 6666,
                    "policy-added from XFRM with netns, dir, template, selector", r)
            c.check(r.get("correlation") == "matched" and r["audit"]["op"] == "SPD-add" and "auid" in r["audit"],
                    "joined with its SPD-add audit record (who made the change)", r)

            nb.ip("xfrm", "policy", "add", "src", "fd00:78::1/128", "dst", "fd00:78::2/128", "dir", "in",
                  "tmpl", "proto", "esp", "mode", "transport")
            r6 = agent.wait_for(lambda r: r["event"] == "policy-added" and r["family"] == "inet6", timeout=2)[0]
            c.check(r6["netns"] == nb.name and r6["src"] == "fd00:78::1" and r6["policy"]["dir"] == "in",
                    "v6 policy-added in the other netns", r6)

            na.ip("xfrm", "policy", "setdefault", "in", "block")
            d = agent.wait_for(lambda r: r["event"] == "policy-default-changed", timeout=2)[0]
            c.check(d["netns"] == na.name and d["default"]["in"] == "block" and d["previous"]["in"] == "accept",
                    "policy-default-changed (no audit record exists for it)", d)
            na.ip("xfrm", "policy", "setdefault", "in", "accept")

            # ACQUIRE: outbound traffic that needs an SA that does not exist.
            subprocess.run(["ip", "netns", "exec", na.name, "/usr/bin/python3", "-c",
                            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                            ".sendto(b'x', ('10.78.0.2', 6666))"], check=False, timeout=10)
            q = agent.wait_for(lambda r: r["event"] == "acquire", timeout=2)[0]
            c.check(q["netns"] == na.name and q["src"] == "10.78.0.1" and q["dst"] == "10.78.0.2"
                    and q["policy"]["templates"][0]["reqid"] == 66 and q["selector"]["dport"] == 6666,
                    "acquire with the policy that wanted the SA", q)

            na.ip("xfrm", "policy", "add", "src", "10.78.5.1/32", "dst", "10.78.5.2/32", "dir", "out",
                  "limit", "time-hard", "1", "tmpl", "proto", "esp", "mode", "transport")
            x = agent.wait_for(lambda r: r["event"] == "policy-expired", timeout=5)[0]
            c.check(x["expire"] == "hard" and x["src"] == "10.78.5.1" and x["netns"] == na.name,
                    "policy-expired (hard lifetime)", x)

            na.ip("xfrm", "policy", "delete", "src", "10.78.0.1/32", "dst", "10.78.0.2/32", "proto", "17",
                  "dport", "6666", "dir", "out")
            dl = agent.wait_for(lambda r: r["event"] == "policy-deleted" and r["dst"] == "10.78.0.2", timeout=2)[0]
            c.check(dl["netns"] == na.name and dl["policy"]["templates"][0]["reqid"] == 66
                    and dl.get("correlation") == "matched", "policy-deleted, with what was deleted", dl)

            # Route-based tunnels: 0.0.0.0/0 policies that differ only by if_id
            # (xfrm interfaces) or by mark, added in one batch (so that both
            # changes and their identical SPD-add audit lines meet in one
            # correlation window). Each change is written once, with its actor,
            # and each deletion names the policy that went.
            batch = "".join(
                f"xfrm policy add src 0.0.0.0/0 dst 0.0.0.0/0 dir out {ident} "
                f"tmpl src 10.78.0.1 dst 10.78.0.{n} proto esp mode tunnel\n"
                for ident, n in (("if_id 7", 17), ("if_id 8", 18), ("mark 1", 21), ("mark 2", 22)))
            subprocess.run(["ip", "-n", na.name, "-batch", "-"], input=batch, text=True, check=True)

            def wild(ev):
                return lambda r: (r["event"] == ev and r["src"] == "0.0.0.0" and r["dst"] == "0.0.0.0"
                                  and r.get("netns") == na.name)

            added = agent.wait_for(lambda r: wild("policy-added")(r) and r["source"] == "xfrm", timeout=3, count=4)
            idents = sorted((r["policy"].get("if_id") or 0, r["policy"].get("mark", {}).get("value", 0))
                            for r in added)
            c.check(len(added) == 4 and idents == [(0, 1), (0, 2), (7, 0), (8, 0)],
                    "four 0/0 policies differing by if_id / mark: four policy-added records",
                    [(r["policy"].get("if_id"), r["policy"].get("mark")) for r in added])
            index_of = {(r["policy"].get("if_id"), r["policy"].get("mark", {}).get("value")): r["policy"]["index"]
                        for r in added}
            wild_added = wild("policy-added")
            for ident, key in ((["if_id", "8"], (8, None)), (["mark", "2"], (None, 2)),
                               (["if_id", "7"], (7, None)), (["mark", "1"], (None, 1))):
                na.ip("xfrm", "policy", "delete", "src", "0.0.0.0/0", "dst", "0.0.0.0/0", "dir", "out", *ident)
                gone = agent.wait_for(lambda r: wild("policy-deleted")(r) and r["policy"]["index"] == index_of.get(key),
                                      timeout=2)[0]
                c.check((gone["policy"].get("if_id"), gone["policy"].get("mark", {}).get("value")) == key,
                        f"deleting the 0/0 policy with {' '.join(ident)} names that one", gone)

            # A netns that appears after start is followed (--netns all).
            with Netns("ixc") as nc:
                # A change made before the agent has seen the new netns is not lost:
                # the first dump of it is written, marked resync.
                nc.ip("xfrm", "policy", "add", "src", "10.78.6.1/32", "dst", "10.78.6.2/32", "dir", "out")
                t0 = time.time()
                early = agent.wait_for(lambda r: r["event"] == "policy-added" and r["src"] == "10.78.6.1",
                                       timeout=5)[0]
                c.check(time.time() - t0 < 1.5, f"new netns noticed in {time.time() - t0:.2f} s (inotify)")
                c.check(early["netns"] == nc.name and early.get("resync") is True,
                        "a policy set before the new netns was seen is written on discovery (resync)", early)
                nc.ip("xfrm", "policy", "add", "src", "10.78.7.1/32", "dst", "10.78.7.2/32", "dir", "fwd",
                      "tmpl", "proto", "esp", "mode", "transport")
                n3 = agent.wait_for(lambda r: r["event"] == "policy-added" and r["src"] == "10.78.7.1", timeout=3)[0]
                c.check(n3["netns"] == nc.name and n3["policy"]["dir"] == "fwd", "new netns followed", n3)

            nb.ip("xfrm", "policy", "flush")
            f = agent.wait_for(lambda r: r["event"] == "policy-deleted" and r.get("flush"), timeout=2)
            c.check(len(f) == 1 and f[0]["netns"] == nb.name, "flush gives one policy-deleted per policy", f)

            c.check(agent.stop() == 0, "clean stop")
            recs = agent.records()
            problems = validate_file(agent.out)
            c.check(not problems, f"all {len(recs)} records valid against the schema", problems[:5])
            c.check(not any(r["event"] == "policy-added" and r["src"] == "10.78.9.9" for r in recs),
                    "the start-up dump writes no records")
            # Each of the four batched changes once, with its actor: paired (or
            # matched); an audit line that came after its window would stand on
            # its own (unmatched) beside an XFRM record without one (none).
            xf = [r for r in recs if wild_added(r) and r["source"] == "xfrm"]
            lone = [r for r in recs if wild_added(r) and r["source"] != "xfrm"]
            c.check(len(xf) == 4 and all(r.get("correlation") in ("matched", "paired", "none") for r in xf)
                    and all(r["audit"]["op"] == "SPD-add" for r in xf if r.get("correlation") != "none")
                    and all(r.get("correlation") == "unmatched" for r in lone)
                    and len(lone) == sum(1 for r in xf if r.get("correlation") == "none"),
                    "identical SPD-add lines of the batch: each change written once, with its actor",
                    [(r["source"], r.get("correlation"), r["policy"].get("if_id"), r["policy"].get("mark"))
                     for r in xf + lone])

        # Overrun: a tiny buffer, the agent stopped while a burst of changes happens.
        with Netns("ixd") as nd:
            burst = 400
            with Agent(a.agent, ["--netns", nd.name, "--receive-buffer", "4096"]) as agent:
                agent.proc.send_signal(signal.SIGSTOP)
                batch = "".join(f"xfrm policy add src 10.79.{i // 250}.{i % 250 + 1}/32 dst 10.80.0.1/32 dir out\n"
                                for i in range(burst))
                subprocess.run(["ip", "-n", nd.name, "-batch", "-"], input=batch, text=True, check=True)
                for i in range(0, burst, 3):  # and some deletes
                    nd.ip("xfrm", "policy", "delete", "src", f"10.79.{i // 250}.{i % 250 + 1}/32",
                          "dst", "10.80.0.1/32", "dir", "out")
                agent.proc.send_signal(signal.SIGCONT)
                lost = agent.wait_for(lambda r: r["event"] == "events-lost", timeout=5)[0]
                c.check(lost["source"] == "xfrm" and lost["netns"] == nd.name and lost["lost"]["at_least"]
                        and lost["count"] >= 1, "ENOBUFS -> events-lost, at least N", lost)
                agent.wait_for(lambda r: r.get("resync"), timeout=5)
                time.sleep(1.0)  # the correlation window
                agent.stop()
                have = set()
                for r in agent.records():
                    if r["event"] == "policy-added":
                        have.add(r["policy"]["index"])
                    elif r["event"] == "policy-deleted":
                        have.discard(r["policy"]["index"])
                kernel = set(policy_indexes(nd))
                c.check(have == kernel and len(kernel) == burst - len(range(0, burst, 3)),
                        f"after resync the records add up to the kernel's SPD ({len(have)} vs {len(kernel)})",
                        sorted(kernel ^ have)[:10])
                c.check(any(r.get("resync") for r in agent.records()), "missed changes marked resync")
    c.check(host_xfrm_snapshot() == host_before, "host SPD/SAD untouched")
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
