#!/usr/bin/python3
"""Live test of the backbone on this machine's real kernel (no ESP needed):
SPD changes in a fresh netns reach the agent through kernel audit as
policy-added / policy-deleted records, within a second, with the right
addresses; service events; the audit switch is put back; bad options exit 2;
every record validates against the schema; the host's own SPD/SAD untouched."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from livelib import Agent, KernelAuditGuard, Netns, audit_set_enabled, audit_status, host_xfrm_snapshot, live_test  # noqa: E402


def main():
    a, c, validate_file = live_test("live.kernel_audit")

    # Command-line contract.
    r = subprocess.run([a.agent, "--help"], capture_output=True, text=True)
    c.check(r.returncode == 0 and all(o in r.stdout for o in
            ("--foreground", "--config", "--output", "--state-dir", "--control-socket")), "--help documents the options")
    for bad in (["--bogus"], ["--output", "nowhere"], ["--config", "/nonexistent/ipsec-auditd.conf"]):
        r = subprocess.run([a.agent, *bad], capture_output=True, text=True, timeout=5)
        c.check(r.returncode == 2 and r.stderr.count("\n") == 1, f"{' '.join(bad)} -> one-line error, exit 2",
                f"rc={r.returncode} stderr={r.stderr!r}")
    cfg = os.path.join("/tmp", f"ipsec-audit-badcfg-{os.getpid()}.conf")
    with open(cfg, "w") as f:
        f.write('{"outputs": ["stdout"], "kernel_audit": {"enabel": true}}')
    r = subprocess.run([a.agent, "--config", cfg], capture_output=True, text=True, timeout=5)
    os.unlink(cfg)
    c.check(r.returncode == 2 and "kernel_audit.enabel" in r.stderr, "bad config key named, exit 2", r.stderr)

    host_before = host_xfrm_snapshot()
    with KernelAuditGuard() as guard:
        with Agent(a.agent, ["--enable-kernel-audit"]) as agent, Netns() as ns:
            started = agent.wait_for(lambda r: r["event"] == "service-started")[0]
            c.check(started["event_id"] == 5478 and started["kernel_audit"]["enabled"] == 1,
                    "service-started 5478 with kernel audit enabled")
            c.check(audit_status()["enabled"] == 1, "kernel audit switched on by --enable-kernel-audit")

            t0 = time.time()
            ns.ip("xfrm", "policy", "add", "src", "10.77.0.1/32", "dst", "10.77.0.2/32", "dir", "out",
                  "tmpl", "proto", "esp", "mode", "transport")
            got = agent.wait_for(lambda r: r["event"] == "policy-added" and r["src"] == "10.77.0.1", timeout=1.0)[0]
            c.check(True, f"policy-added v4 within a second ({(time.time() - t0) * 1000:.0f} ms)")
            c.check(got["dst"] == "10.77.0.2" and got["family"] == "inet" and got["source"] == "kernel-audit"
                    and got["audit"]["op"] == "SPD-add" and got["audit"]["res"] == 1 and got["event_id"] is None,
                    "policy-added v4 fields", got)

            ns.ip("xfrm", "policy", "add", "src", "fd00:77::1/128", "dst", "fd00:77::2/128", "dir", "in",
                  "tmpl", "proto", "esp", "mode", "transport")
            got6 = agent.wait_for(lambda r: r["event"] == "policy-added" and r["family"] == "inet6", timeout=1.0)[0]
            c.check(got6["src"] == "fd00:77::1" and got6["dst"] == "fd00:77::2",
                    "policy-added v6 with canonical addresses", got6)

            t0 = time.time()
            ns.ip("xfrm", "policy", "delete", "src", "10.77.0.1/32", "dst", "10.77.0.2/32", "dir", "out")
            dele = agent.wait_for(lambda r: r["event"] == "policy-deleted" and r["src"] == "10.77.0.1", timeout=1.0)[0]
            c.check(dele["dst"] == "10.77.0.2" and dele["audit"]["op"] == "SPD-delete",
                    f"policy-deleted v4 within a second ({(time.time() - t0) * 1000:.0f} ms)", dele)

            rc = agent.stop()
            recs = agent.records()
            c.check(rc == 0, "SIGTERM -> exit 0", agent.stderr())
            c.check(recs[-1]["event"] == "service-stopped" and recs[-1]["event_id"] == 5479,
                    "service-stopped 5479 is the last record", recs[-1])
            # Kernel audit is host-wide: count only this test's own changes.
            ours = [r for r in recs if r["src"] in ("10.77.0.1", "fd00:77::1")]
            c.check([r["event"] for r in ours] == ["policy-added", "policy-added", "policy-deleted"],
                    "exactly this test's two policy-added and one policy-deleted records",
                    [(r["event"], r["src"]) for r in recs])
            problems = validate_file(agent.out)
            c.check(not problems, f"all {len(recs)} records valid against the schema", problems[:5])
        c.check(audit_status()["enabled"] == guard.before, "kernel audit switch put back as it was")
    c.check(host_xfrm_snapshot() == host_before, "host SPD/SAD untouched")

    # Without CAP_AUDIT_CONTROL (least privilege): the records still arrive
    # (CAP_AUDIT_READ is enough); the status is said to be unknown.
    with KernelAuditGuard():
        audit_set_enabled(True)
        # Root gets at exec what the bounding set allows.
        drop = ("setpriv", "--bounding-set", "-audit_control", "--")
        with Agent(a.agent, wrap=drop) as agent, Netns() as ns:
            s = agent.wait_for(lambda r: r["event"] == "service-started")[0]
            ns.ip("xfrm", "policy", "add", "src", "10.77.3.1/32", "dst", "10.77.3.2/32", "dir", "out")
            got = agent.wait_for(lambda r: r["event"] == "policy-added" and r["src"] == "10.77.3.1", timeout=2)
            agent.stop()
            c.check(s["kernel_audit"] == {"status": "unknown"} and "CAP_AUDIT_CONTROL" in agent.stderr()
                    and len(got) == 1, "without CAP_AUDIT_CONTROL: records arrive, status said unknown",
                    (s["kernel_audit"], agent.stderr()))

    # Disabled audit is said loudly, and the agent still runs.
    with KernelAuditGuard():
        if audit_status()["enabled"] == 0:
            with Agent(a.agent) as agent:
                s = agent.wait_for(lambda r: r["event"] == "service-started")[0]
                agent.stop()
                c.check(s["kernel_audit"]["enabled"] == 0 and "disabled" in s["message"]
                        and "KERNEL AUDIT IS DISABLED" in agent.stderr(), "disabled kernel audit is reported loudly")
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
