#!/usr/bin/python3
"""Live test of namespaces by identity and of the non-blocking request path,
on this machine's kernel (XFRM, no ESP), in namespaces the test creates:
- a namespace deleted and created again under the same name is the new one
  (the dead one is dropped, the new one watched), with --netns all and with an
  explicit --netns NAME that is not there at start and appears later;
- a namespace given by path (/proc/PID/ns/net) is watched and named by it;
- a start-up dump of 10,000 policies completes and is counted before READY;
- changes the kernel queued before SIGTERM are written before service-stopped.
No check depends on how fast the machine is: every wait is for a record."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from livelib import Agent, Netns, host_xfrm_snapshot, live_test, sh  # noqa: E402


def policy(ns_args, i, extra=()):
    sh("ip", *ns_args, "xfrm", "policy", "add", "src", f"10.91.{i // 250}.{i % 250 + 1}/32", "dst", "10.92.0.1/32",
       "dir", "out", *extra)


def added(agent, src, netns=None, timeout=10):
    return agent.wait_for(lambda r: r["event"] == "policy-added" and r.get("src") == src
                          and (netns is None or r.get("netns") == netns), timeout=timeout)[0]


def main():
    a, c, validate_file = live_test("live.netns_io")
    host_before = host_xfrm_snapshot()
    name = f"iorec-{os.getpid()}"

    # Recreated under the same name, with --netns all.
    with Agent(a.agent, ["--netns", "all"]) as agent:
        sh("ip", "netns", "add", name)
        try:
            policy(["-n", name], 1)
            added(agent, "10.91.0.2", name)
            sh("ip", "netns", "del", name)
            sh("ip", "netns", "add", name)
            policy(["-n", name], 2)
            r = added(agent, "10.91.0.3", name)
            c.check(r["netns"] == name, "--netns all: a namespace recreated under its name is watched anew", r)
        finally:
            sh("ip", "netns", "del", name, check=False)
        c.check(agent.stop() == 0, "clean stop")
        c.check(not validate_file(agent.out), "records valid against the schema", validate_file(agent.out)[:3])

    # An explicit name that is not there at start, appears, and is recreated.
    late = f"iolate-{os.getpid()}"
    with Agent(a.agent, ["--netns", late]) as agent:
        s = agent.wait_for(lambda r: r["event"] == "service-started")[0]
        c.check(s["xfrm"].get("netns_missing") == [late], "service-started names the explicit netns not there yet",
                s["xfrm"])
        c.check(s["agent_netns"] == {"initial": True, "label": "init"},
                "service-started: the agent is in the initial netns", s.get("agent_netns"))
        try:
            sh("ip", "netns", "add", late)
            policy(["-n", late], 3)
            r = added(agent, "10.91.0.4", late)
            c.check(r["netns"] == late and r.get("resync") is True,
                    "an explicit --netns that appears after start is picked up (its first dump written)", r)
            policy(["-n", late], 4)
            added(agent, "10.91.0.5", late)
            sh("ip", "netns", "del", late)
            sh("ip", "netns", "add", late)
            policy(["-n", late], 5)
            r = added(agent, "10.91.0.6", late)
            c.check(r["netns"] == late, "an explicit --netns recreated under its name is watched anew", r)
        finally:
            sh("ip", "netns", "del", late, check=False)
        agent.stop()

    # By path: a namespace with no name at all.
    holder = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        path = f"/proc/{holder.pid}/ns/net"
        deadline = time.time() + 10
        while os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino and time.time() < deadline:
            time.sleep(0.02)  # unshare has not switched yet
        with Agent(a.agent, ["--netns", path]) as agent:
            sh("nsenter", f"--net={path}", "ip", "xfrm", "policy", "add", "src", "10.91.9.1/32", "dst",
               "10.92.0.1/32", "dir", "in")
            r = added(agent, "10.91.9.1")
            c.check(r["netns"] == path, "a namespace given by path is watched and named by its path", r)
            agent.stop()
    finally:
        holder.kill()
        holder.wait()

    # A large start-up dump: 10,000 policies, counted before READY.
    with Netns("iobig") as nb:
        n = 10000
        batch = "".join(f"xfrm policy add src 10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}/32 "
                        f"dst 10.99.0.1/32 dir out\n" for i in range(n))
        subprocess.run(["ip", "-n", nb.name, "-batch", "-"], input=batch, text=True, check=True)
        agent = Agent(a.agent, ["--netns", nb.name])
        agent.start(timeout=60)
        s = agent.wait_for(lambda r: r["event"] == "service-started")[0]
        c.check(s["xfrm"]["policies"] == n, f"start-up dump of {n} policies complete before READY", s["xfrm"])
        agent.stop()

        # SIGTERM with changes queued: they are written before service-stopped.
        with Agent(a.agent, ["--netns", nb.name]) as agent:
            agent.proc.send_signal(signal.SIGSTOP)
            for i in range(40):
                nb.ip("xfrm", "policy", "add", "src", f"10.98.0.{i + 1}/32", "dst", "10.99.0.2/32", "dir", "in")
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.send_signal(signal.SIGCONT)
            c.check(agent.proc.wait(30) == 0, "clean stop on SIGTERM")
            recs = agent.records()
            stopped = [i for i, r in enumerate(recs) if r["event"] == "service-stopped"]
            mine = [i for i, r in enumerate(recs) if r["event"] == "policy-added" and r["dst"] == "10.99.0.2"]
            c.check(len(stopped) == 1 and len(mine) == 40 and max(mine) < stopped[0],
                    "changes queued at SIGTERM are all written, before service-stopped",
                    f"{len(mine)} of 40, stopped at {stopped}")
    c.check(host_xfrm_snapshot() == host_before, "host SPD/SAD untouched")
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
