"""Helpers for live tests: network namespaces the test owns, the kernel audit
switch (read and put back), and a running ipsec-auditd whose records are read
as they are written. Python 3.11 stdlib only."""
import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid

NETLINK_AUDIT = 9
AUDIT_GET, AUDIT_SET = 1000, 1001
NLMSG_ERROR = 2


def _audit_request(msg_type, payload=b""):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    try:
        s.bind((0, 0))
        s.settimeout(2)
        hdr = struct.pack("=IHHII", 16 + len(payload), msg_type, 0x1 | 0x4, 1, 0)
        s.send(hdr + payload)
        status, acked = None, False
        deadline = time.time() + 2
        while time.time() < deadline and not (acked and (status or msg_type != AUDIT_GET)):
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                ln, typ, _fl, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                body = data[off + 16: off + ln]
                if typ == NLMSG_ERROR:
                    err = struct.unpack_from("=i", body)[0]
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    acked = True
                elif typ == AUDIT_GET:
                    f = struct.unpack_from("=8I", body)
                    status = dict(mask=f[0], enabled=f[1], failure=f[2], pid=f[3], rate_limit=f[4],
                                  backlog_limit=f[5], lost=f[6], backlog=f[7])
                off += (ln + 3) & ~3
        return status
    finally:
        s.close()


def audit_status():
    return _audit_request(AUDIT_GET)


def audit_set_enabled(on):
    payload = struct.pack("=10I", 1, 1 if on else 0, 0, 0, 0, 0, 0, 0, 0, 0)
    _audit_request(AUDIT_SET, payload)


def audit_set_backlog_limit(n):
    """AUDIT_SET with AUDIT_STATUS_BACKLOG_LIMIT (what auditctl -b does)."""
    payload = struct.pack("=10I", 0x10, 0, 0, 0, 0, n, 0, 0, 0, 0)
    _audit_request(AUDIT_SET, payload)


CAPS = {"net_admin": 12, "sys_admin": 21, "audit_control": 30, "audit_read": 37, "net_raw": 13, "setpcap": 8,
        "dac_override": 1, "chown": 0}


def process_caps(pid):
    """{'CapEff': {'audit_read', ...}, ...} from /proc/PID/status; unnamed bits as numbers."""
    names = {v: k for k, v in CAPS.items()}
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key.startswith("Cap"):
                bits = int(val.strip(), 16)
                out[key] = {names.get(i, i) for i in range(64) if bits >> i & 1}
            elif key == "NoNewPrivs":
                out[key] = int(val)
    return out


class KernelAuditGuard:
    """Remembers the kernel audit switch and backlog limit and puts them back,
    whatever happens."""

    def __enter__(self):
        st = audit_status()
        self.before, self.backlog_limit = st["enabled"], st["backlog_limit"]
        return self

    def __exit__(self, *exc):
        st = audit_status()
        if st["backlog_limit"] != self.backlog_limit:
            audit_set_backlog_limit(self.backlog_limit)
        if st["enabled"] != self.before:
            audit_set_enabled(bool(self.before))
        return False


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


class Netns:
    """A network namespace owned by the test, deleted on exit."""

    def __init__(self, prefix="iat"):
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"

    def __enter__(self):
        sh("ip", "netns", "add", self.name)
        return self

    def ip(self, *args, check=True):
        return sh("ip", "-n", self.name, *args, check=check)

    def __exit__(self, *exc):
        sh("ip", "netns", "del", self.name, check=False)
        return False


def host_xfrm_snapshot():
    return sh("ip", "xfrm", "policy").stdout + sh("ip", "xfrm", "state").stdout


# What AddressSanitizer, LeakSanitizer and UBSan print when the agent was
# built with them (tools/test.sh, build-asan). Any of these fails the test.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
SANITIZER_OPTIONS = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1",
                     "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
sanitizer_reports = []  # (agent command, report excerpt), read by Checks.done()


def sanitizer_report(stderr_text):
    """The sanitizer report in a process's stderr (from its first line), or None."""
    lines = stderr_text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            return "\n".join(lines[max(0, i - 1):i + 40])
    return None


class Agent:
    """ipsec-auditd in the foreground, writing JSON Lines to a temp file. A
    sanitizer report on its stderr fails the test (see Checks.done)."""

    def __init__(self, binary, extra_args=(), tmp=None, wrap=(), output=True, env=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="ipsec-audit-live-")
        self.out = os.path.join(self.tmp, "events.jsonl")
        # output=False: the outputs come from a --config file (the command line would override it).
        outs = ["--output", f"jsonl:{self.out}"] if output else []
        self.args = [*wrap, binary, "--foreground", *outs,
                     "--state-dir", os.path.join(self.tmp, "state"),
                     "--control-socket", os.path.join(self.tmp, "control.sock"), *extra_args]
        self.proc = None
        self.env = env
        self.stderr_path = os.path.join(self.tmp, "stderr.log")

    def start(self, wait_for="service-started", timeout=10):
        self._err = open(self.stderr_path, "w")
        env = {**SANITIZER_OPTIONS, **os.environ, **(self.env or {})}  # the caller's own settings win
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._err, env=env)
        if wait_for:
            self.wait_for(lambda r: r["event"] == wait_for, timeout=timeout)
        return self

    def records(self, path=None):
        try:
            with open(path or self.out, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def wait_for(self, pred, timeout=5, count=1, path=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            hits = [r for r in self.records(path) if pred(r)]
            if len(hits) >= count:
                return hits
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for records; have: {self.records()}")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("agent did not stop on signal")
        self._err.close()
        self._check_sanitizer()
        return self.proc.returncode

    def _check_sanitizer(self):
        if getattr(self, "_checked", False):
            return
        self._checked = True
        report = sanitizer_report(self.stderr())
        if report:
            sanitizer_reports.append((" ".join(self.args), report))

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self._err.close()
            self._check_sanitizer()
        return False


class Checks:
    """PASS/FAIL lines and a closing 'N passed, M failed' line."""

    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {what}")
        else:
            self.failed += 1
            print(f"FAIL {what} {detail}")
        return ok

    def done(self):
        for args, report in sanitizer_reports:
            self.check(False, "no sanitizer report from the agent", f"({args}):\n{report}")
        print(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.stdout.flush()
        return 0 if self.failed == 0 and self.passed > 0 else 1


def live_test(name):
    """Parses --agent/--source; returns (args, Checks, validate_file) where
    validate_file(path) lists schema problems of a JSON Lines file."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--source", required=True)
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(a.source, "tools"))
    validate = __import__("validate-records")

    def validate_file(path):
        with open(path, encoding="utf-8", newline="") as f:
            return validate.validate_lines(f.readlines())
    return a, Checks(name), validate_file
