#!/usr/bin/python3
"""Live test of the control socket and ipsec-auditctl on this machine's real
kernel: the Success/Failure switch works live (a switched-off class is not
written but counted) and is persisted across a restart; a corrupt policy file
is a record and the default (or running) policy stays; `set` is refused for
an unprivileged client (exit 4) who may still `get`; `check` fails with kernel
audit off or the agent down and passes with it on; a directory at the socket
path is a 5483 and auditing goes on; garbage, 8 MiB of random bytes, deep
nesting, over-long lines, a half request left stalled and hundreds of
connections at once never stall the agent. Kernel audit is put back."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from livelib import Agent, KernelAuditGuard, Netns, audit_set_enabled, live_test  # noqa: E402

CTL = None
VALIDATE = None


def schema_ok(c, agent, what):
    problems = VALIDATE(agent.out)
    c.check(not problems, f"{what}: every record valid against the schema", problems[:5])
NOBODY = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")


def ctl(sock, *args, user=False):
    cmd = [*(NOBODY if user else ()), CTL, "--socket", sock, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=15)


def sock_of(agent):
    return os.path.join(agent.tmp, "control.sock")


def status(agent):
    r = ctl(sock_of(agent), "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_until(pred, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def policy_added(agent, src):
    return [r for r in agent.records() if r["event"] == "policy-added" and r["src"] == src]


def test_switch_and_persistence(a, c):
    with Netns() as ns:
        agent = Agent(a.agent, ["--netns", ns.name]).start()
        try:
            s = sock_of(agent)
            r = ctl(s, "get")
            c.check(r.returncode == 0 and r.stdout == "IPsec Driver: Success and Failure\n",
                    "fresh install: get prints 'IPsec Driver: Success and Failure'", (r.returncode, r.stdout, r.stderr))
            pfile = os.path.join(agent.tmp, "state", "audit-policy.json")
            c.check(os.path.exists(pfile), "the default policy is written to the state directory")
            st = os.stat(s)
            c.check(st.st_mode & 0o777 == 0o660, "control socket mode 0660", oct(st.st_mode))

            r = ctl(s, "set", "--success", "disable")
            c.check(r.returncode == 0 and r.stdout == "IPsec Driver: Failure\n", "set --success disable",
                    (r.returncode, r.stdout, r.stderr))
            ch = agent.wait_for(lambda x: x["event"] == "audit-policy-changed")[0]
            by = ch.get("changed_by", {})
            c.check(ch.get("cause") == "control-socket" and ch["old"]["label"] == "Success and Failure"
                    and ch["new"] == {"success": False, "failure": True, "label": "Failure"}
                    and by.get("uid") == 0 and by.get("comm") == "ipsec-auditctl" and by.get("pid", 0) > 0,
                    "audit-policy-changed with old, new and changed_by (uid, pid, comm)", ch)
            before = status(agent)["records"]["by_event"]["policy-added"]["suppressed"]
            ns.ip("xfrm", "policy", "add", "src", "10.61.0.1/32", "dst", "10.61.0.2/32", "dir", "out")
            got = wait_until(lambda: status(agent)["records"]["by_event"]["policy-added"]["suppressed"] > before)
            c.check(got and not policy_added(agent, "10.61.0.1"),
                    "Success off: a policy-added in a fresh netns is not written but counted as suppressed")
            r = ctl(s, "enable")
            c.check(r.returncode == 0 and "Success and Failure" in r.stdout, "enable", r.stdout + r.stderr)
            ns.ip("xfrm", "policy", "add", "src", "10.61.0.3/32", "dst", "10.61.0.4/32", "dir", "out")
            c.check(bool(wait_until(lambda: policy_added(agent, "10.61.0.3"))), "Success on again: written live")
            r = ctl(s, "set", "--success", "disable", "--failure", "disable")
            c.check(r.returncode == 0 and r.stdout == "IPsec Driver: No Auditing\n", "set both off: No Auditing",
                    r.stdout + r.stderr)
            c.check(agent.stop() == 0, "clean stop")
            c.check(not os.path.exists(s), "the socket is removed on a clean stop")
            agent = Agent(a.agent, ["--netns", ns.name], tmp=agent.tmp).start(wait_for=None)
            # No Auditing: service-started is a Success record, not written now.
            r = wait_until(lambda: (lambda p: p if p.returncode == 0 else None)(ctl(s, "get")), timeout=10)
            c.check(r is not None and len([x for x in agent.records() if x["event"] == "service-started"]) == 1,
                    "restarted with No Auditing: service-started (Success) not written")
            r = r or ctl(s, "get")
            c.check(r.stdout == "IPsec Driver: No Auditing\n", "persisted across a restart", r.stdout + r.stderr)
            r = ctl(s, "set", "--failure", "enable", "--json")
            c.check(r.returncode == 0 and json.loads(r.stdout)["policy"]["label"] == "Failure", "set --json",
                    r.stdout)
            c.check(agent.stop() == 0, "clean stop (2)")
            schema_ok(c, agent, "switch records")
        finally:
            agent.__exit__(None, None, None)


def test_corrupt_policy_file(a, c):
    agent = Agent(a.agent)
    os.makedirs(os.path.join(agent.tmp, "state"))
    pfile = os.path.join(agent.tmp, "state", "audit-policy.json")
    with open(pfile, "w") as f:
        f.write('{"v":1,"success":fal')
    with agent:
        r = agent.wait_for(lambda x: x["event"] == "audit-policy-changed")[0]
        c.check(r.get("cause") == "policy-file-rejected" and r.get("error") and r["new"]["label"] ==
                "Success and Failure", "a truncated policy file at start: record, the default runs", r)
        recs = agent.records()
        c.check(recs[0]["event"] == "service-started", "service-started still comes first", recs[0]["event"])
        s = sock_of(agent)
        c.check(ctl(s, "get").stdout == "IPsec Driver: Success and Failure\n", "get: the default")
        ctl(s, "set", "--failure", "disable")
        with open(pfile, "wb") as f:
            f.write(b"\xff\x00garbage")
        agent.proc.send_signal(signal.SIGHUP)
        got = agent.wait_for(lambda x: x["event"] == "audit-policy-changed" and x.get("cause") ==
                             "policy-file-rejected", count=2)
        c.check(got[-1]["new"]["label"] == "Success" and ctl(s, "get").stdout == "IPsec Driver: Success\n",
                "a corrupt file on SIGHUP: record, the running policy stays", got[-1])
        os.unlink(pfile)
        os.mkdir(pfile)
        r = ctl(s, "enable")
        c.check(r.returncode == 1 and "not changed" in r.stderr and ctl(s, "get").stdout == "IPsec Driver: Success\n",
                "a directory in place of the file: set fails clearly, nothing changes", (r.returncode, r.stderr))
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for(lambda x: x.get("cause") == "policy-file-rejected" and "directory" in x.get("error", ""))
        c.check(agent.stop() == 0 and agent.proc.returncode == 0, "still running, clean stop")
        schema_ok(c, agent, "policy file records")


def test_refused_and_check(a, c):
    with Agent(a.agent, ["--audit-status-interval", "1"]) as agent:
        s = sock_of(agent)
        os.chmod(agent.tmp, 0o755)
        r = ctl(s, "get", user=True)
        c.check(r.returncode == 4, "uid 65534 without write permission on the socket: exit 4", (r.returncode, r.stderr))
        os.chmod(s, 0o666)
        r = ctl(s, "set", "--success", "disable", user=True)
        c.check(r.returncode == 4 and "refused" in r.stderr, "set as uid 65534: refused, exit 4",
                (r.returncode, r.stderr))
        r = ctl(s, "get", user=True)
        c.check(r.returncode == 0 and r.stdout == "IPsec Driver: Success and Failure\n",
                "get as uid 65534: allowed, policy unchanged", (r.returncode, r.stdout, r.stderr))
        c.check(not [x for x in agent.records() if x["event"] == "audit-policy-changed"],
                "no audit-policy-changed from a refused set")
        with KernelAuditGuard() as g:
            if g.before:
                audit_set_enabled(False)
            r = wait_until(lambda: (lambda p: p if p.returncode == 1 else None)(ctl(s, "check")), timeout=5)
            c.check(r is not None and "FAIL kernel-audit" in r.stdout and "PASS policy" in r.stdout,
                    "check with kernel audit off: exit 1, FAIL kernel-audit", r and r.stdout)
            audit_set_enabled(True)
            r = wait_until(lambda: (lambda p: p if p.returncode == 0 else None)(ctl(s, "check")), timeout=8)
            c.check(r is not None and "compliant" in r.stdout and "FAIL" not in r.stdout,
                    "check with kernel audit on: exit 0, every condition PASS", r and r.stdout)
            r = ctl(s, "check", "--json")
            j = json.loads(r.stdout)
            c.check(j["compliant"] and {x["name"] for x in j["conditions"]} ==
                    {"policy", "agent", "kernel-audit", "sources"}, "check --json", j)
            st = status(agent)
            c.check(st["kernel_audit"]["enabled"] == 1 and st["sources"]["kernel_audit"]["subscribed"]
                    and st["pid"] == agent.proc.pid and st["sinks"][0]["healthy"], "status --json", st)
            r = ctl(s, "status")
            c.check(r.returncode == 0 and "IPsec Driver: Success and Failure" in r.stdout
                    and "Kernel audit: enabled 1" in r.stdout, "status (text)", r.stdout)
    r = ctl(s, "check")
    c.check(r.returncode == 1 and r.stdout.startswith("FAIL agent:"), "check with the agent down: exit 1, FAIL agent",
            (r.returncode, r.stdout))
    r = ctl(s, "get")
    c.check(r.returncode == 3, "get with the agent down: exit 3", (r.returncode, r.stderr))
    r = ctl(s, "set", "--success", "perhaps")
    c.check(r.returncode == 2 and r.stderr.count("\n") == 1, "bad usage: exit 2, one line", r.stderr)


def test_5483(a, c):
    with Netns() as ns:
        agent = Agent(a.agent, ["--netns", ns.name])
        os.mkdir(sock_of(agent))
        with agent:
            r = agent.wait_for(lambda x: x["event"] == "control-server-failed")[0]
            started = agent.wait_for(lambda x: x["event"] == "service-started")[0]
            c.check(r["event_id"] == 5483 and "directory" in r["control"]["error"]
                    and started["control"]["status"] == "failed",
                    "a directory at the socket path: 5483, and service-started says so", r)
            c.check(os.path.isdir(sock_of(agent)), "the directory is left alone")
            ns.ip("xfrm", "policy", "add", "src", "10.62.0.1/32", "dst", "10.62.0.2/32", "dir", "out")
            c.check(bool(wait_until(lambda: policy_added(agent, "10.62.0.1"))), "auditing goes on without it")
            c.check(ctl(sock_of(agent), "get").returncode == 3, "ctl: exit 3 (no answer)")
            agent.stop()
            schema_ok(c, agent, "5483 records")


def raw(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)  # blocking: waits while the listen backlog is full
    s.settimeout(10)
    return s


def read_lines(s, n, timeout=10):
    s.settimeout(timeout)
    buf = b""
    try:
        while buf.count(b"\n") < n:
            d = s.recv(65536)
            if not d:
                break
            buf += d
    except (ConnectionResetError, socket.timeout):
        pass
    return buf.split(b"\n")


def read_line_or_close(s, timeout=10):
    return b"\n".join(read_lines(s, 1, timeout))


def closed_within(s, timeout):
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_abuse(a, c):
    with Netns() as ns, Agent(a.agent, ["--netns", ns.name]) as agent:
        path = sock_of(agent)
        # A half request, then nothing: closed after the request timeout (5 s).
        stalled = raw(path)
        stalled.sendall(b'{"v":1,"cmd":')
        t0 = time.time()
        stall_closed = []

        def watch_stalled():
            if closed_within(stalled, 20):
                stall_closed.append(time.time() - t0)
        stall_th = threading.Thread(target=watch_stalled)
        stall_th.start()

        # 8 MiB of random bytes.
        def blast():
            try:
                b = raw(path)
                b.sendall(os.urandom(8 << 20))
            except OSError:
                pass
        th = threading.Thread(target=blast)
        th.start()
        # Deep nesting and garbage: an error each, then the connection is closed.
        d = raw(path)
        d.sendall(b'{"v":1,"cmd":"get","x":' + b"[" * 5000 + b"]" * 5000 + b"}\n")
        resp = read_line_or_close(d)
        c.check(b'"bad-request"' in resp and b"nested" in resp, "deep nesting: bad-request", resp[:200])
        c.check(closed_within(d, 5), "... and closed")
        g = raw(path)
        g.sendall(b'{"v":1,"cmd":"get","id":"\xff\xfe"}\n')
        c.check(b'"bad-request"' in read_line_or_close(g), "invalid UTF-8: bad-request")
        w = raw(path)
        w.sendall(b'{"v":1,"cmd":"get","success":"yes","id":7}\n{"v":1,"cmd":"get","id":8}\n')
        one, two, _ = (read_lines(w, 2) + [b"", b""])[:3]
        c.check(b'"bad-request"' in one and b'"id":7' in one, "wrong type: bad-request, id echoed", one)
        c.check(b'"ok":true' in two and b'"id":8' in two, "the same connection answers the next request", two)
        big = raw(path)
        try:
            big.sendall(b"a" * (70 << 10))
        except OSError:
            pass
        c.check(b'"too-large"' in read_line_or_close(big), "a 70 KiB line: too-large")
        # Hundreds of connections at once, held open.
        held = []
        for _ in range(220):
            try:
                held.append(raw(path))
            except OSError:
                break
        c.check(len(held) == 220, "220 connections accepted by the kernel", len(held))
        ns.ip("xfrm", "policy", "add", "src", "10.63.0.1/32", "dst", "10.63.0.2/32", "dir", "out")
        c.check(bool(wait_until(lambda: policy_added(agent, "10.63.0.1"))),
                "with 220 connections open: records keep flowing")
        closed = sum(1 for s in held[100:] if closed_within(s, 0.5))
        c.check(closed >= 100, "connections over the limit of 64 are closed at once", closed)
        for s in held:
            s.close()
        th.join(20)
        c.check(not th.is_alive(), "the 8 MiB writer is done (answered or closed)")
        stall_th.join(20)
        c.check(stall_closed and 4.5 <= stall_closed[0] <= 9, "a stalled half request is closed after 5 s",
                stall_closed)
        t1 = time.time()
        r = wait_until(lambda: (lambda p: p if p.returncode == 0 else None)(ctl(path, "get")), timeout=5)
        c.check(r is not None and r.stdout == "IPsec Driver: Success and Failure\n" and time.time() - t1 < 5,
                "afterwards get answers", r and (r.stdout, r.stderr))
        ns.ip("xfrm", "policy", "add", "src", "10.63.0.3/32", "dst", "10.63.0.4/32", "dir", "out")
        c.check(bool(wait_until(lambda: policy_added(agent, "10.63.0.3"))), "afterwards records keep flowing")
        c.check(agent.proc.poll() is None, "the agent is still running")


def main():
    global CTL, VALIDATE
    a, c, VALIDATE = live_test("live.control")
    CTL = os.path.join(os.path.dirname(a.agent), "ipsec-auditctl")
    t = time.time()
    for test in (test_switch_and_persistence, test_corrupt_policy_file, test_refused_and_check, test_5483,
                 test_abuse):
        try:
            test(a, c)
        except AssertionError as e:
            c.check(False, f"{test.__name__} ran to the end", str(e)[:2000])
    print(f"live.control took {time.time() - t:.1f}s")
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
