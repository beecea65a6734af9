#!/usr/bin/python3
"""audit-load: a sustained stream of kernel audit records on this host, and
what ipsec-auditd costs to turn it into JSON lines.

IPsec records: SPD changes (`ip -batch` policy add/del) in a private network
namespace at --rate records per second (each change is one MAC_IPSEC_EVENT
record, SPD-add or SPD-delete). Noise: --noise AUDIT_TRUSTED_APP user records
per second sent on a NETLINK_AUDIT socket (not IPsec: the agent's BPF filter
should drop them in the kernel). Kernel audit is switched on for the run and
put back, the backlog limit raised to 8192 and put back.

Prints records/s written, CPU seconds per 100k records, syscalls per record
(perf stat -e raw_syscalls:sys_enter on the agent), voluntary context
switches per record, peak RSS, and the delay from the kernel's record time to
the agent's receive time (p50/p99). A figure, never a test: --smoke only
checks the harness runs (short, no figure asserted). Root only.

  tools/bench/audit-load.py --agent build-rel/bin/ipsec-auditd --rate 2000 --seconds 20

--sidebyside ROOT: also run, on the same stream, Debian's auditd + laurel
unpacked in ROOT (tools/bench/sidebyside-root.sh CACHE makes
CACHE/sidebyside-root/root; auditd takes the audit pid for the run, which
ends with it) and ipsec-audit-floor (next to the agent's binary: the
cheapest reader that keeps every record), and print CPU s per 100k records
and wake-ups for each: the ESP lab's side-by-side, on this host's CPU
instead of qemu TCG (SPD records instead of replays: this kernel has no ESP).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "live"))
from livelib import KernelAuditGuard, Netns, audit_set_backlog_limit, audit_set_enabled, audit_status  # noqa: E402

NETLINK_AUDIT = 9
AUDIT_TRUSTED_APP = 1121
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


class HostShim:
    """What sidebyside.Auditd needs from the lab's scenario module, on the host."""

    @staticmethod
    def log(*a):
        print("audit-load:", *a, file=sys.stderr)

    @staticmethod
    def terminate(p, timeout, what):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def kib(v):
    return int(v.split()[0])


class Noise:
    """AUDIT_TRUSTED_APP records from user space (root: CAP_AUDIT_WRITE)."""

    def __init__(self):
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        self.s.bind((0, 0))
        self.s.setblocking(False)
        self.seq = 0
        self.sent = 0

    def send(self, n):
        for _ in range(n):
            self.seq += 1
            text = f"op=audit-load-noise seq={self.seq} res=success".encode() + b"\0"
            msg = struct.pack("=IHHII", 16 + len(text), AUDIT_TRUSTED_APP, 0x1, self.seq, 0) + text
            try:
                self.s.send(msg)
                self.sent += 1
            except BlockingIOError:
                pass
        try:  # acks are not requested; drain anything the kernel sends back
            while self.s.recv(65536):
                pass
        except (BlockingIOError, OSError):
            pass


def percentile(v, p):
    if not v:
        return None
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def parse_time(s):
    # "2026-12-01T09:00:00.123456789Z" -> seconds (float; ns precision is not needed here)
    from datetime import datetime, timezone
    main, frac = s[:-1].split(".")
    t = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return t + int(frac) / 10 ** len(frac)


class Tail(threading.Thread):
    """Polls the output file every 2 ms: when each whole line appeared (the
    delay from the kernel's record time to the line written, to within the
    poll period), and whether a partial line was ever seen at the end of a
    read that was followed by more bytes of the same line (never a fault: a
    reader can see a write in progress) -- what counts is that every line
    ends up whole, checked at the end."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.stop, self.seen = path, threading.Event(), []

    def run(self):
        while not os.path.exists(self.path) and not self.stop.is_set():
            time.sleep(0.002)
        with open(self.path, "rb") as f:
            rest = b""
            while not self.stop.is_set():
                chunk = f.read()
                now = time.time()
                if chunk:
                    rest += chunk
                    *lines, rest = rest.split(b"\n")
                    for line in lines:
                        if b'"op":"SPD-' in line or b'"op":"SA-' in line:
                            self.seen.append((now, line))
                else:
                    time.sleep(0.002)


def count_ops(prefix):
    """SPD-add/SPD-delete records in a file and its rotations (prefix.1, ...)."""
    d, base = os.path.split(prefix)
    n = 0
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if name == base or name.startswith(base + "."):
            with open(os.path.join(d, name), "rb") as f:
                data = f.read()
            n += data.count(b"op=SPD-") + data.count(b'"op":"SPD-')
    return n


def run(a):
    # Side by side: every consumer writes to tmpfs, as in the ESP lab (auditd's
    # periodic fdatasync on a disk would charge auditd for the disk).
    tmp = tempfile.mkdtemp(prefix="ipsec-audit-load-", dir="/dev/shm" if a.sidebyside else None)
    out = os.path.join(tmp, "events.jsonl")
    result = {}
    with KernelAuditGuard(), Netns("ial") as ns:
        st = audit_status()
        if st["backlog_limit"] and st["backlog_limit"] < 8192:
            audit_set_backlog_limit(8192)
        if not st["enabled"]:
            audit_set_enabled(True)
        others, auditd = {}, None
        if a.sidebyside:
            import sidebyside as sbs
            sbs.WORK = os.path.join(tmp, "sbs")
            os.makedirs(sbs.WORK)
            auditd = sbs.Auditd(HostShim, a.sidebyside, tmp)
            laurel, why = auditd.wait_ready()
            if laurel is None:
                auditd.stop()
                raise SystemExit("auditd + laurel did not start: " + why)
            others = {"auditd": auditd.p.pid, "laurel": laurel}
            floor_bin = os.path.join(os.path.dirname(os.path.abspath(a.agent)), "ipsec-audit-floor")
            floor = subprocess.Popen([floor_bin, os.path.join(tmp, "floor.log"),
                                      str(a.batch_delay_ms if a.batch_delay_ms > 0 else 50)])
            others["floor"] = floor.pid
        agent = subprocess.Popen(
            [a.agent, "--foreground", "--output", f"jsonl:{out}", "--state-dir", os.path.join(tmp, "state"),
             "--control-socket", os.path.join(tmp, "control.sock"),
             *(["--batch-delay-ms", str(a.batch_delay_ms)] if a.batch_delay_ms >= 0 else []),
             *(["--netns", ns.name] if a.track else []),
             *(["--correlation-window-ms", str(a.correlation_window_ms)] if a.correlation_window_ms >= 0 else [])],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "stderr.log"), "w"))
        try:
            deadline = time.time() + 15
            while time.time() < deadline and not (os.path.exists(out) and "service-started" in open(out).read()):
                if agent.poll() is not None:
                    raise SystemExit(f"agent exited: {open(os.path.join(tmp, 'stderr.log')).read()}")
                time.sleep(0.05)
            ipb = subprocess.Popen(["ip", "-n", ns.name, "-batch", "-"], stdin=subprocess.PIPE, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            noise = Noise() if a.noise > 0 else None
            perf = None
            if shutil.which("perf") and not a.smoke:
                perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(agent.pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            strace = None
            if a.strace:  # which syscalls: costs CPU, so the CPU figure of such a run is not one
                strace = subprocess.Popen(["strace", "-c", "-f", "-o", a.strace, "-p", str(agent.pid)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tail = Tail(out)
            tail.start()
            cpu0, st0 = proc_cpu_seconds(agent.pid), proc_status(agent.pid)
            o_cpu0 = {k: proc_cpu_seconds(p) for k, p in others.items()}
            o_sw0 = {k: int(proc_status(p)["voluntary_ctxt_switches"]) for k, p in others.items()}
            t0 = time.time()
            tick, changes, noise_due = 0.01, 0, 0.0
            i = 0
            while time.time() - t0 < a.seconds:
                target = int((time.time() - t0) * a.rate)
                lines = []
                while changes < target:
                    # Each pair is one add and one delete: two records.
                    x = i % 60000
                    sel = f"src 10.{x >> 8 & 255}.{x & 255}.1/32 dst 10.200.0.1/32 dir out"
                    lines.append(f"xfrm policy {'add' if changes % 2 == 0 else 'del'} {sel}\n")
                    if changes % 2 == 1:
                        i += 1
                    changes += 1
                if lines:
                    ipb.stdin.write("".join(lines))
                    ipb.stdin.flush()
                if noise:
                    noise_due += a.noise * tick
                    noise.send(int(noise_due))
                    noise_due -= int(noise_due)
                time.sleep(tick)
            ipb.stdin.close()
            ipb.wait(30)
            elapsed = time.time() - t0
            # Wait for the last records (the correlator holds SPD records up to its window).
            want = changes
            deadline = time.time() + 10
            got = 0
            while time.time() < deadline:
                with open(out) as f:
                    got = sum(1 for line in f if '"op":"SPD-' in line)
                if got >= want and (not auditd or min(count_ops(auditd.log_prefix), count_ops(auditd.laurel_prefix),
                                                      count_ops(os.path.join(tmp, "floor.log"))) >= want):
                    break
                time.sleep(0.1)
            cpu1, st1 = proc_cpu_seconds(agent.pid), proc_status(agent.pid)
            o_cpu1 = {k: proc_cpu_seconds(p) for k, p in others.items()}
            o_sw1 = {k: int(proc_status(p)["voluntary_ctxt_switches"]) for k, p in others.items()}
            o_seen = {}
            if auditd:
                o_seen = {"auditd": count_ops(auditd.log_prefix), "laurel": count_ops(auditd.laurel_prefix),
                          "floor": count_ops(os.path.join(tmp, "floor.log"))}
            syscalls = None
            if perf:
                perf.send_signal(signal.SIGINT)
                _, err = perf.communicate(timeout=10)
                for line in err.splitlines():
                    if "raw_syscalls:sys_enter" in line:
                        try:
                            syscalls = int(line.split(",")[0])
                        except ValueError:
                            pass
            tail.stop.set()
            tail.join(5)
            if strace:
                strace.send_signal(signal.SIGINT)
                strace.wait(10)
            agent.send_signal(signal.SIGTERM)
            agent.wait(15)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            if auditd:
                HostShim.terminate(floor, 10, "floor")
                auditd.stop()
        records = [json.loads(line) for line in open(out) if line.endswith("\n")]
        spd = [r for r in records if r.get("audit", {}).get("op", "").startswith("SPD-")]
        delays = [parse_time(r["time"]) - parse_time(r["kernel_time"]) for r in spd if r.get("kernel_time")]
        written = []
        for t, line in tail.seen:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("kernel_time"):
                written.append(t - parse_time(r["kernel_time"]))
        partial = sum(1 for line in open(out, "rb") if not line.endswith(b"\n"))
        stopped = [r for r in records if r["event"] == "service-stopped"]
        n = max(1, len(spd))
        result = {
            "rate_asked": a.rate, "seconds": round(elapsed, 2), "changes_made": changes,
            "noise_sent": noise.sent if noise else 0,
            "records_written": len(spd), "records_per_s": round(len(spd) / elapsed, 1),
            "cpu_s_per_100k": round((cpu1 - cpu0) / n * 100000, 2),
            "syscalls_per_record": round(syscalls / n, 3) if syscalls is not None else None,
            "voluntary_ctxt_switches_per_record": round(
                (int(st1["voluntary_ctxt_switches"]) - int(st0["voluntary_ctxt_switches"])) / n, 3),
            "peak_rss_kib": kib(st1["VmHWM"]), "rss_kib": kib(st1["VmRSS"]),
            "receive_delay_ms_p50": round(percentile(delays, 50) * 1000, 1) if delays else None,
            "receive_delay_ms_p99": round(percentile(delays, 99) * 1000, 1) if delays else None,
            # Kernel record time -> line seen in the file (2 ms poll): what a reader waits.
            "write_delay_ms_p50": round(percentile(written, 50) * 1000, 1) if written else None,
            "write_delay_ms_p99": round(percentile(written, 99) * 1000, 1) if written else None,
            "write_delay_ms_max": round(max(written) * 1000, 1) if written else None,
            "partial_lines": partial,
            "lost": changes - len(spd),
            "events_lost_records": sum(1 for r in records if r["event"] == "events-lost"),
            "kernel_audit_stats": stopped[0].get("kernel_audit_stats") if stopped else None,
            "batch_delay_ms": a.batch_delay_ms,
            "correlation_window_ms": a.correlation_window_ms,
        }
        if others:
            agent_cpu = cpu1 - cpu0
            both = (o_cpu1["auditd"] - o_cpu0["auditd"]) + (o_cpu1["laurel"] - o_cpu0["laurel"])
            result["sidebyside"] = {
                k: {"cpu_s_per_100k": round((o_cpu1[k] - o_cpu0[k]) / n * 100000, 2),
                    "wakeups": o_sw1[k] - o_sw0[k], "seen": o_seen[k]} for k in others}
            result["sidebyside"]["agent"] = {"cpu_s_per_100k": result["cpu_s_per_100k"], "seen": len(spd),
                                             "wakeups": int(st1["voluntary_ctxt_switches"])
                                             - int(st0["voluntary_ctxt_switches"])}
            result["agent_to_auditd_laurel"] = round(agent_cpu / both, 4) if both else None
            result["floor_to_auditd_laurel"] = round((o_cpu1["floor"] - o_cpu0["floor"]) / both, 4) if both else None
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--rate", type=int, default=2000, help="IPsec audit records per second (SPD add/del)")
    ap.add_argument("--noise", type=int, default=0, help="non-IPsec AUDIT_TRUSTED_APP records per second")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch-delay-ms", type=int, default=-1,
                    help="the agent's batch.delay_ms; -1 (default): pass no option (the agent's default)")
    ap.add_argument("--correlation-window-ms", type=int, default=-1,
                    help="the agent's correlation window; 0 writes SPD records without waiting for a partner, "
                         "as packet records are (this host's kernel cannot make packet records: no ESP); "
                         "-1 (default): pass no option (250 ms)")
    ap.add_argument("--strace", metavar="FILE", help="also write strace -c -f of the agent to FILE")
    ap.add_argument("--track", action="store_true",
                    help="the agent watches the stream's netns (--netns): each SPD record is then matched with its "
                         "XFRM message, the tracked path")
    ap.add_argument("--sidebyside", metavar="ROOT",
                    help="also run Debian's auditd + laurel unpacked in ROOT and ipsec-audit-floor on the stream")
    ap.add_argument("--smoke", action="store_true", help="short run: checks the harness works, asserts no figure")
    a = ap.parse_args()
    if a.smoke:
        a.rate, a.seconds, a.noise = min(a.rate, 200), min(a.seconds, 2), min(a.noise, 200)
    if os.geteuid() != 0:
        raise SystemExit("audit-load needs root (kernel audit switch, netns, CAP_AUDIT_WRITE)")
    r = run(a)
    print(json.dumps(r, indent=1))
    if a.smoke:
        ok = r["records_written"] > 0 and r["changes_made"] > 0
        print("audit-load smoke:", "ok" if ok else "FAILED (no IPsec record came through)")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
