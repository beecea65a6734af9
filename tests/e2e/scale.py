"""Tunnel-scale benchmark of the ESP lab (`run-lab.sh --scale 250,1000,4000`): a figure, not a test.

Runs inside the lab VM, called by scenario.py (`--scenario scale`) with that
module's helpers. For each size N, in one netns `s`:

  up:    one `ip -batch`: 2N SAs (tunnel mode, one reqid per tunnel, aead
         rfc4106(gcm(aes))), then 2N policies (out and in, distinct selectors,
         templates with the tunnel endpoints and the reqid) -- SAs before their
         policies, as an IKE daemon installs them;
  flush: one `ip -batch`: `xfrm state flush`, `xfrm policy flush`.

The agent watches `s` (`--netns s --enable-kernel-audit`, so each change
also comes as a kernel audit record to join), and `ip -n s xfrm monitor`
runs alongside, writing to a file. Per size and phase: agent and monitor CPU
seconds (utime+stime from /proc/PID/stat, before/after), CPU per change,
the ratio to the monitor, sa/policy records written against changes made,
events-lost, and the time from the end of the batch to the last record.
With E2E_SCALE_PROBE=1, beside it, `ipsec-audit-nlcapture --bus audit --group
readlog` (when built next to the agent) appends every kernel audit datagram to a file as it comes:
the time that file last grew is when kauditd delivered the last audit record
(`last_audit_after_batch_s`), which tells kauditd's delay from the agent's.
Off by default: a second multicast listener doubles kauditd's sending work,
and in run 5 (docs/BENCHMARKS.md) the kernel then dropped audit records.
Optionally (E2E_SCALE_DUMP=M) a start-up dump: M SAs and M policies in the
netns before a fresh agent starts; time to service-started and its CPU.

Only the lab itself is checked (PASS/FAIL: batches applied, SAD/SPD sizes);
the issue's targets are reported as TARGET lines, never asserted.
Results: scale.json and scale.txt in the out dir.
"""
import json, os, subprocess, time

NS = "s"
LOCAL = "192.0.2.1"
KEY = "0x" + "5a" * 20  # rfc4106: 16-byte key + 4-byte salt; lab-only
CHANGE_EVENTS = (b"sa-added", b"sa-deleted", b"policy-added", b"policy-deleted")


def tunnel(t):
    peer = "172.%d.%d.%d" % (16 + t // 62500, (t // 250) % 250, t % 250 + 1)
    left = "10.%d.%d.0/24" % (64 + t // 256, t % 256)    # up to 16,384 tunnels
    right = "10.%d.%d.0/24" % (128 + t // 256, t % 256)
    return peer, left, right, t + 1, 0x100000 + 2 * t


def up_batch(n):
    sas, pols = [], []
    for t in range(n):
        peer, left, right, reqid, spi = tunnel(t)
        for src, dst, s in ((LOCAL, peer, spi), (peer, LOCAL, spi + 1)):
            sas.append("xfrm state add src %s dst %s proto esp spi %#x reqid %d mode tunnel "
                       "replay-window 32 aead rfc4106(gcm(aes)) %s 128" % (src, dst, s, reqid, KEY))
        pols.append("xfrm policy add src %s dst %s dir out tmpl src %s dst %s proto esp reqid %d mode tunnel"
                    % (left, right, LOCAL, peer, reqid))
        pols.append("xfrm policy add src %s dst %s dir in tmpl src %s dst %s proto esp reqid %d mode tunnel"
                    % (right, left, peer, LOCAL, reqid))
    return "\n".join(sas + pols) + "\n"


def cpu_seconds(pid):
    """utime+stime of a live process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Tail:
    """Counts the agent's records as they are written, without parsing JSON
    (the VM has 2 emulated CPUs, shared with the agent being measured)."""

    def __init__(self, path):
        self.path, self.off, self.rest = path, 0, b""
        self.changes = 0       # sa/policy added/deleted records
        self.lost = 0          # events-lost records
        self.last_change = None  # monotonic time the change count last grew
        self.lines = 0

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self.off += len(data)
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        whole = data[:cut]
        self.lines += whole.count(b"\n")
        n = sum(whole.count(b'"event":"%s"' % e) for e in CHANGE_EVENTS)
        if n:
            self.changes += n
            self.last_change = time.monotonic()
        self.lost += whole.count(b'"event":"events-lost"')


def file_size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def measure(S, C, agent, mon, tail, phase, batch, expect, settle_s=1.0, stall_s=60, timeout_s=1200, audit=None):
    """Apply one batch; wait until `expect` more change records came and nothing
    more arrives for settle_s, and the monitor's output is quiet; return figures."""
    tail.poll()
    c0, l0 = tail.changes, tail.lost
    a0, m0 = cpu_seconds(agent.p.pid), cpu_seconds(mon.pid)
    t0 = time.monotonic()
    p = subprocess.run(["ip", "-n", NS, "-batch", "-"], input=batch, text=True, capture_output=True)
    t_end = time.monotonic()
    C.check(p.returncode == 0, "lab: %s batch applied by ip -batch" % phase, (p.stdout + p.stderr)[-400:])
    # done when all expected records came and neither the agent's file nor the
    # monitor's output grew for settle_s; given up when nothing grows for stall_s
    deadline = t_end + timeout_s
    last_activity, seen, msize = t_end, tail.changes, file_size(mon.out)
    mon_last = None  # when the monitor's output last grew
    asize, audit_last = file_size(audit.out) if audit else 0, None  # the audit capture likewise
    while time.monotonic() < deadline and agent.p.poll() is None:
        time.sleep(0.05)
        tail.poll()
        now, ms = time.monotonic(), file_size(mon.out)
        if ms != msize:
            mon_last = now
        if audit and file_size(audit.out) != asize:
            asize, audit_last = file_size(audit.out), now
        if ms != msize or tail.changes != seen:
            last_activity, seen, msize = now, tail.changes, ms
        if now - last_activity >= (settle_s if tail.changes - c0 >= expect else stall_s):
            break
    a1, m1 = cpu_seconds(agent.p.pid) if agent.p.poll() is None else float("nan"), cpu_seconds(mon.pid)
    written = tail.changes - c0
    last = (tail.last_change - t_end) if written and tail.last_change else None
    r = {"phase": phase, "changes": expect, "records": written, "events_lost": tail.lost - l0,
         "batch_s": round(t_end - t0, 3), "agent_cpu_s": round(a1 - a0, 3), "monitor_cpu_s": round(m1 - m0, 3),
         "last_record_after_batch_s": round(last, 3) if last is not None else None,
         "monitor_last_output_after_batch_s": round(mon_last - t_end, 3) if mon_last else None,
         "last_audit_after_batch_s": round(audit_last - t_end, 3) if audit_last else None}
    r["agent_cpu_per_change_us"] = round(1e6 * r["agent_cpu_s"] / expect, 1)
    r["ratio_to_monitor"] = round(r["agent_cpu_s"] / r["monitor_cpu_s"], 1) if r["monitor_cpu_s"] > 0 else None
    S.log("scale %s: %s" % (phase, json.dumps(r)))
    return r


S_MOD = None  # the scenario module (set by run_scale)


def sad_spd_counts():
    """(SAs, policies) in the netns: `ip xfrm state count` says "SAD count N",
    `ip xfrm policy count` "SPD IN  a OUT b FWD c"."""
    sad = S_MOD.sh("ip", "-n", NS, "xfrm", "state", "count").split()
    spd = S_MOD.sh("ip", "-n", NS, "xfrm", "policy", "count").splitlines()[0].split()
    pols = sum(int(spd[i + 1]) for i, t in enumerate(spd[:-1]) if t in ("IN", "OUT", "FWD"))
    return int(sad[-1]), pols


class Monitor:
    def __init__(self, out):
        self.out = out
        self.f = open(out, "w")
        # SA and policy messages (no AEVENTS listener: it would change what the kernel sends)
        self.p = subprocess.Popen(["ip", "-n", NS, "xfrm", "monitor", "nokeys", "SA", "policy"], stdout=self.f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        self.pid = self.p.pid

    def stop(self):
        self.p.terminate()
        self.p.wait(10)
        self.f.close()


class AuditCapture:
    """Every kernel audit datagram appended to a file as it comes (nlcapture, C)."""

    def __init__(self, tool, out):
        self.out = out
        self.p = subprocess.Popen([tool, "--bus", "audit", "--group", "readlog", "--out", out],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


def audit_backlog_limit():
    """The kernel audit backlog_limit (AUDIT_GET)."""
    import socket, struct
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)  # NETLINK_AUDIT
    try:
        s.bind((0, 0))
        s.send(struct.pack("=IHHII", 16, 1000, 1, 1, 0))  # AUDIT_GET, NLM_F_REQUEST
        while True:
            data = s.recv(65536)
            if struct.unpack_from("=H", data, 4)[0] == 1000:
                # struct audit_status: mask enabled failure pid rate_limit backlog_limit ...
                return struct.unpack_from("=6I", data, 16)[5]
    finally:
        s.close()


def set_audit_backlog(limit):
    """AUDIT_SET backlog_limit, as auditd's `-b` does."""
    import socket, struct
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)
    try:
        s.bind((0, 0))
        body = struct.pack("=9I", 0x10, 0, 0, 0, 0, limit, 0, 0, 0)  # mask AUDIT_STATUS_BACKLOG_LIMIT
        s.send(struct.pack("=IHHII", 16 + len(body), 1001, 5, 2, 0) + body)  # AUDIT_SET, REQUEST|ACK
        err = s.recv(65536)
        code = struct.unpack_from("=i", err, 16)[0] if struct.unpack_from("=H", err, 4)[0] == 2 else 0
        if code:
            raise OSError(-code, "AUDIT_SET backlog_limit: %s" % os.strerror(-code))
    finally:
        s.close()


def run_scale(args, C, S, st):
    global S_MOD
    S_MOD = S
    sizes = [int(x) for x in os.environ.get("E2E_SCALE", "250,1000,4000").split(",") if x.strip()]
    dump = int(os.environ.get("E2E_SCALE_DUMP", "0") or 0)
    backlog = int(os.environ.get("E2E_AUDIT_BACKLOG", "8192"))
    S.sh("ip", "netns", "add", NS)
    S.ipn(NS, "link", "set", "lo", "up")
    prev = audit_backlog_limit()
    set_audit_backlog(backlog)
    now = audit_backlog_limit()
    S.log("kernel audit backlog_limit %s -> %d" % (prev, now))
    C.check(now == backlog, "lab: kernel audit backlog_limit set to %d" % backlog, "it is %d" % now)
    agent = st["agent"] = S.Agent(args.agent, args.out, extra=["--netns", NS])
    started = agent.wait_started(60)
    C.check(started, "agent wrote service-started", "see agent.log")
    if not started:
        agent.stop()
        return
    mon = Monitor("/tmp/lab/monitor.txt")
    tool = os.path.join(os.path.dirname(args.agent), "ipsec-audit-nlcapture")
    probe = os.environ.get("E2E_SCALE_PROBE", "0") == "1"
    audit = AuditCapture(tool, "/tmp/lab/audit-capture.bin") if probe and os.access(tool, os.X_OK) else None
    S.log("audit capture: %s" % (tool if audit else "off (E2E_SCALE_PROBE=1 and %s built turn it on)" % tool))
    tail = Tail(agent.events)
    results = {"sizes": [], "audit_backlog_limit": backlog, "kernel": os.uname().release,
               "cpus": os.cpu_count()}
    try:
        for n in sizes:
            batch = up_batch(n)
            up = measure(S, C, agent, mon, tail, "up %d" % n, batch, 4 * n, audit=audit)
            sas, pols = sad_spd_counts()
            C.check(sas == 2 * n and pols == 2 * n, "lab: %d tunnels up: %d SAs, %d policies in the netns" % (n, 2 * n, 2 * n),
                    "SAD %d SPD %d" % (sas, pols))
            down = measure(S, C, agent, mon, tail, "flush %d" % n, "xfrm state flush\nxfrm policy flush\n", 4 * n,
                           audit=audit)
            sas, pols = sad_spd_counts()
            C.check(sas == 0 and pols == 0, "lab: %d tunnels flushed" % n, "SAD %d SPD %d" % (sas, pols))
            tot = {k: round(up[k] + down[k], 3) for k in ("changes", "records", "events_lost", "agent_cpu_s", "monitor_cpu_s")}
            tot["agent_cpu_per_change_us"] = round(1e6 * tot["agent_cpu_s"] / tot["changes"], 1)
            tot["ratio_to_monitor"] = round(tot["agent_cpu_s"] / tot["monitor_cpu_s"], 1) if tot["monitor_cpu_s"] else None
            results["sizes"].append({"tunnels": n, "up": up, "flush": down, "total": tot})
            if agent.p.poll() is not None:
                C.check(False, "agent still running after %d tunnels" % n, "exit %s" % agent.p.returncode)
                break
    finally:
        mon.stop()
        if audit:
            audit.stop()
    agent.stop()
    C.check(agent.exit_code == 0, "agent exited 0 on SIGTERM", "exit: %r" % agent.exit_code)
    if dump:
        results["startup_dump"] = startup_dump(S, C, args, dump)
    report(S, C, results)


def startup_dump(S, C, args, m):
    """m SAs and m policies in the netns, then a fresh agent: time to service-started."""
    n = m // 2
    p = subprocess.run(["ip", "-n", NS, "-batch", "-"], input=up_batch(n), text=True, capture_output=True)
    C.check(p.returncode == 0, "lab: start-up dump batch applied", (p.stdout + p.stderr)[-400:])
    sas, pols = sad_spd_counts()
    C.check(sas == m and pols == m, "lab: %d SAs and %d policies in the netns" % (m, m), "SAD %d SPD %d" % (sas, pols))
    os.replace("/tmp/lab/events.jsonl", "/tmp/lab/events-scale.jsonl")
    t0 = time.monotonic()
    agent = S.Agent(args.agent, args.out, extra=["--netns", NS], logname="agent-dump.log")
    ok = agent.wait_started(300)
    t = time.monotonic() - t0
    cpu = cpu_seconds(agent.p.pid) if agent.p.poll() is None else None
    started = [r for r in agent.records() if r.get("event") == "service-started"]
    xf = started[0].get("xfrm", {}) if started else {}
    C.check(ok, "agent started with a start-up dump of %d SAs + %d policies" % (m, m), "see agent-dump.log")
    C.check(xf.get("policies") == m and xf.get("sas", m) == m, "start-up dump complete before service-started",
            json.dumps(xf))
    agent.stop()
    S.sh("ip", "-n", NS, "-batch", "-", input="xfrm state flush\nxfrm policy flush\n")
    os.replace("/tmp/lab/events.jsonl", "/tmp/lab/events-dump.jsonl")
    os.replace("/tmp/lab/events-scale.jsonl", "/tmp/lab/events.jsonl")
    r = {"sas": m, "policies": m, "to_service_started_s": round(t, 2), "agent_cpu_s": cpu, "xfrm": xf}
    S.log("scale startup dump: %s" % json.dumps(r))
    return r


def report(S, C, res):
    rows = ["tunnels phase  changes records lost  batch_s agent_cpu_s mon_cpu_s us/change ratio last_rec_s mon_last_s "
            "last_audit_s"]
    for s in res["sizes"]:
        for ph in ("up", "flush", "total"):
            r = s[ph]
            rows.append("%7d %-6s %7d %7d %4d %8s %11.2f %9.2f %9.1f %5s %10s %10s %12s" % (
                s["tunnels"], ph, r["changes"], r["records"], r["events_lost"], r.get("batch_s", ""),
                r["agent_cpu_s"], r["monitor_cpu_s"], r["agent_cpu_per_change_us"], r["ratio_to_monitor"],
                r.get("last_record_after_batch_s", ""), r.get("monitor_last_output_after_batch_s", ""),
                r.get("last_audit_after_batch_s", "")))
    if "startup_dump" in res:
        d = res["startup_dump"]
        rows.append("start-up dump %d SAs + %d policies: service-started after %.2f s, agent CPU %s s" % (
            d["sas"], d["policies"], d["to_service_started_s"], d["agent_cpu_s"]))
    sizes = res["sizes"]
    if sizes:
        per = [s["total"]["agent_cpu_per_change_us"] for s in sizes]
        spread = max(per) / min(per) if min(per) > 0 else float("inf")
        ratios = [s["total"]["ratio_to_monitor"] or float("inf") for s in sizes]
        allrec = all(s["total"]["records"] == s["total"]["changes"] for s in sizes)
        lost = sum(s["total"]["events_lost"] for s in sizes)
        big = max(sizes, key=lambda s: s["tunnels"])
        lastb = max(big["up"]["last_record_after_batch_s"] or 1e9, big["flush"]["last_record_after_batch_s"] or 1e9)
        res["targets"] = {
            "cpu_per_change_spread": round(spread, 2), "max_ratio_to_monitor": max(ratios),
            "all_records": allrec, "events_lost": lost,
            "last_record_s_at_%d" % big["tunnels"]: lastb}
        rows.append("TARGET cpu/change flat within 2x: %s (spread %.2fx)" % ("met" if spread <= 2 else "MISSED", spread))
        rows.append("TARGET <= 10x monitor CPU: %s (max %sx)" % ("met" if max(ratios) <= 10 else "MISSED", max(ratios)))
        rows.append("TARGET every sa/policy record written (no more, no less): %s (%s)" % (
            "met" if allrec else "MISSED", ", ".join("%d/%d" % (s["total"]["records"], s["total"]["changes"]) for s in sizes)))
        rows.append("TARGET no events-lost: %s (%d)" % ("met" if lost == 0 else "MISSED", lost))
        rows.append("TARGET last record within 2 s at %d tunnels: %s (%.2f s)" % (
            big["tunnels"], "met" if lastb <= 2 else "MISSED", lastb))
    txt = "\n".join(rows)
    for line in rows:
        C.note(line)
    with open(os.path.join(S.OUT, "scale.txt"), "w") as f:
        f.write(txt + "\n")
    with open(os.path.join(S.OUT, "scale.json"), "w") as f:
        json.dump(res, f, indent=1)
