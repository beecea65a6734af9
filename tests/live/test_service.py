#!/usr/bin/python3
"""Live test of the agent as a service on this machine's real kernel: it keeps
only the capabilities its configuration needs (read from /proc/PID/status),
as root and as a non-root user given ambient capabilities, and is not
dumpable; sd_notify watchdog pings from the event loop; SIGHUP reloads the
config (a bad one is refused and the last good one runs on, a good one is
applied, what needs a restart is said); kernel audit switched off, on, or its
backlog limit changed under the running agent is a kernel-audit-changed
record. Kernel audit settings are put back as they were."""
import json
import os
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from livelib import (Agent, KernelAuditGuard, Netns, audit_set_backlog_limit, audit_set_enabled,  # noqa: E402
                     audit_status, process_caps, live_test)

BASE = {"audit_read", "net_admin"}


def check_caps(c, agent, want, what, bounding=None):
    caps = process_caps(agent.proc.pid)
    c.check(caps["CapEff"] == want and caps["CapPrm"] == want, f"{what}: effective = permitted = {sorted(want)}",
            {k: sorted(map(str, v)) if isinstance(v, set) else v for k, v in caps.items()})
    c.check(caps["CapBnd"] == (want if bounding is None else bounding), f"{what}: bounding set",
            sorted(map(str, caps["CapBnd"])))
    c.check(not caps["CapInh"] and not caps["CapAmb"] and caps["NoNewPrivs"] == 1,
            f"{what}: no inheritable or ambient capabilities, no_new_privs")
    return caps


def test_capabilities(a, c):
    with Agent(a.agent) as agent:
        s = agent.wait_for(lambda r: r["event"] == "service-started")[0]
        check_caps(c, agent, BASE | {"audit_control"}, "root, defaults")
        c.check(s["capabilities"] == "cap_audit_read,cap_net_admin,cap_audit_control",
                "service-started names the capabilities kept", s.get("capabilities"))
    with Netns() as ns, Agent(a.agent, ["--netns", ns.name]) as agent:
        check_caps(c, agent, BASE | {"audit_control", "sys_admin"}, "root, --netns other")
    with Agent(a.agent, ["--audit-status-interval", "0"]) as agent:
        s = agent.wait_for(lambda r: r["event"] == "service-started")[0]
        check_caps(c, agent, BASE, "root, status polling off")
        c.check(s["kernel_audit"] == {"status": "unknown"} and "polling is off" in s["message"],
                "status polling off is said", s["message"])

    # A dedicated user with ambient capabilities (what the systemd unit does),
    # given two more than it needs: those go, the bounding set cannot (no
    # CAP_SETPCAP) and stays, and records still arrive.
    tmp = tempfile.mkdtemp(prefix="ipsec-audit-live-")
    os.chown(tmp, 65534, 65534)
    give = "+audit_read,+net_admin,+audit_control,+net_raw,+chown"
    wrap = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps={give}",
            f"--ambient-caps={give}", "--")
    with KernelAuditGuard():
        audit_set_enabled(True)
        with Agent(a.agent, tmp=tmp, wrap=wrap) as agent, Netns() as ns:
            bnd = process_caps(agent.proc.pid)["CapBnd"]
            check_caps(c, agent, BASE | {"audit_control"}, "user 65534 with ambient capabilities", bounding=bnd)
            st = os.stat(f"/proc/{agent.proc.pid}/environ")
            with open(f"/proc/{agent.proc.pid}/status") as f:
                uid = [int(x) for x in f.read().split("\nUid:")[1].split()[:1]][0]
            # Not dumpable: the kernel makes its /proc files root's although it runs as 65534.
            c.check(uid == 65534 and st.st_uid == 0, "not dumpable (its /proc files belong to root)",
                    (uid, st.st_uid))
            ns.ip("xfrm", "policy", "add", "src", "10.77.9.1/32", "dst", "10.77.9.2/32", "dir", "out")
            got = agent.wait_for(lambda r: r["event"] == "policy-added" and r["src"] == "10.77.9.1", timeout=5)
            c.check(len(got) == 1, "as user 65534: kernel audit records arrive")
            c.check(agent.stop() == 0, "as user 65534: clean stop", agent.stderr())
            st = os.stat(agent.out)
            c.check(st.st_uid == 65534 and st.st_mode & 0o777 == 0o640, "its output file is its own, mode 0640",
                    (st.st_uid, oct(st.st_mode)))


def test_watchdog(a, c):
    tmp = tempfile.mkdtemp(prefix="ipsec-audit-live-")
    path = os.path.join(tmp, "notify.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(0.5)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    msgs = []
    with Agent(a.agent, tmp=tmp, env=env) as agent:
        deadline = time.time() + 20
        while time.time() < deadline and msgs.count("WATCHDOG=1") < 3:
            try:
                msgs.extend(rx.recv(4096).decode().split("\n"))
            except socket.timeout:
                pass
        agent.stop()
    rx.close()
    c.check("READY=1" in msgs and msgs.count("WATCHDOG=1") >= 3,
            "READY=1, then WATCHDOG=1 pings from the event loop (WATCHDOG_USEC set)", msgs[:10])


def test_reload(a, c):
    tmp = tempfile.mkdtemp(prefix="ipsec-audit-live-")
    cfg = os.path.join(tmp, "ipsec-auditd.conf")
    out = os.path.join(tmp, "events.jsonl")
    second = os.path.join(tmp, "second.jsonl")

    def write_cfg(text):
        with open(cfg + ".new", "w") as f:
            f.write(text if isinstance(text, str) else json.dumps(text))
        os.rename(cfg + ".new", cfg)

    write_cfg({"outputs": [f"jsonl:{out}"], "kernel_audit": {"status_interval_seconds": 5}})
    with Agent(a.agent, ["--config", cfg], tmp=tmp, output=False) as agent:
        def hup_and_wait(event, n):
            agent.proc.send_signal(signal.SIGHUP)
            return agent.wait_for(lambda r: r["event"] == event, count=n, timeout=10)[n - 1]

        write_cfg('{"outputs": ["jsonl:' + out + '"], ')
        r = hup_and_wait("config-rejected", 1)
        c.check(r["config"]["path"] == cfg and "not valid JSON" in r["config"]["reason"]
                and r["audit_class"] == "failure", "SIGHUP with a broken file: config-rejected with the reason", r)
        write_cfg({"outputs": [f"jsonl:{out}"], "kernel_audit": {"status_interval": 5}})
        r = hup_and_wait("config-rejected", 2)
        c.check("kernel_audit.status_interval" in r["config"]["reason"], "an unknown key is named", r["config"])
        write_cfg({"outputs": [f"jsonl:{out}", "jsonl:/proc/version/x.jsonl"]})
        r = hup_and_wait("config-rejected", 3)
        c.check(r["config"]["reason"].startswith("outputs:"), "an output that cannot be opened refuses the config",
                r["config"])
        c.check(agent.proc.poll() is None, "the agent runs on after three bad configs")

        write_cfg({"outputs": [f"jsonl:{out}", f"jsonl:{second}"], "kernel_audit": {"status_interval_seconds": 2},
                   "netns": ["", "elsewhere"]})
        r = hup_and_wait("config-reloaded", 1)
        c.check(r["config"]["applied"] == ["outputs", "kernel_audit.status_interval_seconds"]
                and r["config"]["restart_required"] == ["netns"] and "restart" in r["message"],
                "a good config is applied; what needs a restart is said", r["config"])
        c.check(any(x["event"] == "config-reloaded" for x in agent.records(second)),
                "the new output is open and has the config-reloaded record")
        c.check(agent.stop() == 0, "clean stop")
        c.check(agent.records()[-1]["event"] == "service-stopped"
                and agent.records(second)[-1]["event"] == "service-stopped", "both outputs get service-stopped")


def test_kernel_audit_changes(a, c):
    with KernelAuditGuard() as guard:
        with Agent(a.agent, ["--enable-kernel-audit", "--audit-status-interval", "1"]) as agent:
            changed = lambda r: r["event"] == "kernel-audit-changed" and "kernel_audit_before" in r  # noqa: E731
            audit_set_enabled(False)  # what `auditctl -e 0` does
            r = agent.wait_for(changed, timeout=15)[0]
            c.check(r["kernel_audit"]["enabled"] == 0 and r["kernel_audit_before"]["enabled"] == 1
                    and "disabled" in r["concerns"] and r["audit_class"] == "failure",
                    "kernel audit switched off under the agent: kernel-audit-changed", r)
            audit_set_enabled(True)
            r = agent.wait_for(changed, timeout=15, count=2)[1]
            c.check(r["kernel_audit"]["enabled"] == 1 and "disabled" not in r["concerns"]
                    and "enabled 0 -> 1" in r["message"], "switched back on: kernel-audit-changed", r["message"])
            limit = audit_status()["backlog_limit"]
            audit_set_backlog_limit(limit + 1)
            r = agent.wait_for(changed, timeout=15, count=3)[2]
            c.check(r["kernel_audit"]["backlog_limit"] == limit + 1
                    and f"backlog_limit {limit} -> {limit + 1}" in r["message"],
                    "backlog limit changed: kernel-audit-changed", r["message"])
            audit_set_backlog_limit(guard.backlog_limit)
            agent.stop()
        st = audit_status()
        with Agent(a.agent, ["--audit-status-interval", "1"]) as agent:
            first = agent.records()
            agent.stop()
            kinds = [r["event"] for r in first]
            if st["enabled"] == 0 or st["backlog_limit"] < 8192:
                at_start = [r for r in agent.records() if r["event"] == "kernel-audit-changed"]
                c.check(kinds[0] == "service-started" and at_start and "kernel_audit_before" not in at_start[0],
                        "a risky state at start is a kernel-audit-changed record, after service-started", kinds)
    st = audit_status()
    c.check(st["enabled"] == guard.before and st["backlog_limit"] == guard.backlog_limit,
            "kernel audit switch and backlog limit put back")


def main():
    a, c, validate_file = live_test("live.service")
    test_capabilities(a, c)
    test_watchdog(a, c)
    test_reload(a, c)
    test_kernel_audit_changes(a, c)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
