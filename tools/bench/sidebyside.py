"""Side-by-side benchmark in the ESP lab (`run-lab.sh --scenario sidebyside`): a figure, not a test.

Runs INSIDE the lab VM, called by tests/e2e/scenario.py with that module's
helpers (setup_net, add_sa, add_policies, capture_esp, inject, counters,
sa_stats, Agent). One kernel stream, four consumers at once:

  auditd   Debian's auditd 3.0.9 (unpacked by tools/bench/sidebyside-root.sh
           into E2E_CACHE/sidebyside-root/root, never installed on the host),
           `auditd -n -c DIR` with Debian's auditd.conf (log file, log group
           and plugin dir pointed at /tmp/sbs): it registers as the audit
           daemon (unicast, audit pid) and writes its log;
  laurel   Debian's laurel 0.5.1 as auditd's plugin (Debian's plugins.d/
           laurel.conf and config.toml; directory /tmp/sbs/laurel, user root:
           the VM has no _laurel user), one JSON line per audit event;
  agent    ipsec-auditd --netns b --enable-kernel-audit: the audit multicast
           group (and XFRM in netns b);
  floor    ipsec-audit-floor (tools/bench/audit_floor.cpp), when built: the
           cheapest reader that keeps every record (the multicast group read
           on the agent's tick with recvmmsg, each record's text appended
           raw, one writev per read). Its CPU is what receiving the stream
           costs; the agent's CPU above it is what the agent's work costs.

The stream: one ESP frame a->b (v4, SPI 0x1001) captured and accepted, then
re-injected N times (E2E_SIDEBYSIDE="n=20000"): every injection is a replay
inside the window, one `SA-replayed-pkt` MAC_IPSEC_EVENT record, +1
XfrmInStateSeqError in b and +1 on the SA's `replay` counter. Injection is
paced on the kernel audit backlog (AUDIT_GET; below 2,000 of Debian's 8,192)
so the kernel does not drop what auditd has not yet read.

Per consumer: CPU (utime+stime from /proc/PID/stat, from just before the
stream to when every consumer's output stopped growing) per 100k kernel
events, wake-ups (voluntary context switches, all threads), events seen (auditd: `SA-replayed-pkt` lines in its log; laurel:
`SA-replayed-pkt` in its JSON lines; agent: the `count` of its replay
records, flood summaries included), loss (kernel counter - seen; for the
agent also what it reported lost), VmHWM and VmRSS. The accounting check:
agent records + agent-reported loss == the SA's replay delta ==
XfrmInStateSeqError delta. kauditd's CPU is printed too (shared by all).

Options (E2E_SIDEBYSIDE, space-separated key=value): n (20000), flood
(off: one line per event like laurel, the agent's flood limiter opened to
1,000,000/s; default: the agent's defaults), perf (1: `perf record -g` of the
agent during the stream, report in OUT/perf-agent.txt), batch (100 per
injection burst), delay_ms (agent batch.delay_ms; unset = default), netns (b:
the agent's --netns, so it tracks the SA and ties records to it; none: no
--netns, the audit stream alone), floor (1: also run ipsec-audit-floor, the
cheapest reader that keeps every record, next to the agent's binary when it
is built: what receiving the stream costs; 0: not), smoke (1:
n=500, the harness only). Only the lab is checked (PASS/FAIL: auditd took the
audit pid, laurel ran, the kernel counted every injection); the targets of
issue 17 are TARGET lines, never asserted. Results: sidebyside.txt and
sidebyside.json in OUT, plus auditd.log / laurel.log / agent.log tails.
"""
import json, os, signal, struct, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "live"))
from livelib import audit_set_backlog_limit, audit_status  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
WORK = "/tmp/sbs"
SPI = 0x1001
REPLAY_EVENTS = ("replay-check-failed", "replay-sequence-too-low")
OP = b"SA-replayed-pkt"


def opts():
    o = {"n": "20000", "flood": "off", "perf": "0", "batch": "100", "delay_ms": "", "smoke": "0", "netns": "b",
         "floor": "1"}
    for kv in os.environ.get("E2E_SIDEBYSIDE", "").split():
        k, _, v = kv.partition("=")
        o[k] = v
    if o["smoke"] == "1":
        o["n"] = "500"
    return o


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0])  # KiB
    return out


def proc_switches(pid):
    """Voluntary context switches over all the process's threads: how often
    it went to sleep, i.e. its wake-ups."""
    n = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, t)) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n


def find_procs(comm, ppid=None):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        c = st[st.index("(") + 1:st.rindex(")")]
        pp = int(st.rsplit(")", 1)[1].split()[1])
        if c == comm and (ppid is None or pp == ppid):
            pids.append(int(d))
    return pids


def count_in_files(prefix, needle):
    """Occurrences of needle in prefix and its rotations (prefix.1, ...)."""
    d, base = os.path.split(prefix)
    n = 0
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return 0
    for name in names:
        if name == base or name.startswith(base + "."):
            with open(os.path.join(d, name), "rb") as f:
                n += f.read().count(needle)
    return n


def conf_subst(text, repl):
    """Debian's key = value config with some keys replaced (others kept as shipped)."""
    out, seen = [], set()
    for line in text.splitlines():
        k = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and "=" in line and k in repl:
            out.append("%s = %s" % (k, repl[k]))
            seen.add(k)
        else:
            out.append(line)
    out += ["%s = %s" % (k, v) for k, v in repl.items() if k not in seen]
    return "\n".join(out) + "\n"


class Auditd:
    def __init__(self, S, root, out):
        self.S = S
        etc = WORK + "/etc"
        os.makedirs(etc + "/plugins.d", exist_ok=True)
        os.makedirs(WORK + "/log", exist_ok=True)
        os.makedirs(WORK + "/laurel", exist_ok=True)
        with open(root + "/etc/audit/auditd.conf") as f:
            conf = conf_subst(f.read(), {"log_file": WORK + "/log/audit.log", "log_group": "root",
                                         "plugin_dir": etc + "/plugins.d"})
        self._write(etc + "/auditd.conf", conf)
        self.laurel_conf = WORK + "/laurel.toml"
        with open(root + "/etc/laurel/config.toml") as f:
            lconf = f.read()
        lconf = lconf.replace('directory = "/var/log/laurel"', 'directory = "%s/laurel"' % WORK)
        lconf = lconf.replace('user = "_laurel"', 'user = "root"')
        self._write(self.laurel_conf, lconf)
        with open(root + "/etc/audit/plugins.d/laurel.conf") as f:
            pconf = conf_subst(f.read(), {"path": root + "/usr/sbin/laurel", "args": "--config " + self.laurel_conf})
        self._write(etc + "/plugins.d/laurel.conf", pconf)
        env = dict(os.environ, LD_LIBRARY_PATH="%s/lib/x86_64-linux-gnu:%s/usr/lib/x86_64-linux-gnu" % (root, root))
        self.logf = open(os.path.join(out, "auditd.out"), "w")
        cmd = [root + "/sbin/auditd", "-n", "-c", etc]
        S.log("starting auditd:", " ".join(cmd))
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.log_prefix = WORK + "/log/audit.log"
        self.laurel_prefix = WORK + "/laurel/audit.log"

    @staticmethod
    def _write(path, text):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o640)

    def wait_ready(self, timeout=60):
        """auditd holds the audit pid and laurel runs as its child."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                return None, "auditd exited with %s" % self.p.returncode
            st = audit_status()
            laurels = find_procs("laurel", self.p.pid)
            if st["pid"] == self.p.pid and laurels:
                return laurels[0], ""
            time.sleep(0.2)
        return None, "audit pid %s (auditd %d), laurel children %s" % (
            audit_status()["pid"], self.p.pid, find_procs("laurel"))

    def stop(self):
        self.S.terminate(self.p, 30, "auditd")
        self.logf.close()


def agent_counts(recs):
    seen = lost = 0
    lost_by = {}
    for r in recs:
        if r.get("event") in REPLAY_EVENTS and r.get("spi") == SPI and r.get("source") == "kernel-audit":
            seen += r.get("count", 1)
        elif r.get("event") == "events-lost":
            lo = r.get("lost") or {}
            c = lo.get("counter", "?")
            k = lo.get("count") or r.get("count", 1)
            lost_by[c] = lost_by.get(c, 0) + k
            if c == "replay":
                lost += k
    return seen, lost, lost_by


def agent_seen_fast(path):
    """Replay records written so far (bytes only: cheap while the stream runs)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    return data.count(b'"event":"replay-check-failed"') + data.count(b'"event":"replay-sequence-too-low"')


def kauditd_pid():
    p = find_procs("kauditd")
    return p[0] if p else None


def run_sidebyside(args, C, S, st):
    o = opts()
    n, batch = int(o["n"]), int(o["batch"])
    res = {"options": o, "kernel": os.uname().release, "n": n}
    root = os.path.join(os.environ.get("E2E_CACHE", "/work/e2e-cache"), "sidebyside-root", "root")
    if not C.check(os.path.exists(root + "/sbin/auditd") and os.path.exists(root + "/usr/sbin/laurel"),
                   "lab: auditd and laurel unpacked in %s" % root, "run tools/bench/sidebyside-root.sh CACHE"):
        return
    os.makedirs(WORK, exist_ok=True)

    # The lab: SA 0x1001 a->b, one frame captured and accepted; each
    # re-injection is then a replay inside the window.
    S.setup_net()
    S.add_sa(4, SPI, 1)
    S.add_policies(4)
    sender, rx = S.Sender(), S.Receiver()
    frame = S.capture_esp(4, sender, SPI)
    S.inject(frame)
    C.check(rx.drain() == 1, "lab: the captured frame is accepted once")
    sab = (S.NS_B, S.FAM[4]["a"], S.FAM[4]["b"], SPI)

    audit_set_backlog_limit(8192)  # Debian's audit.rules: -b 8192
    auditd = st["auditd"] = Auditd(S, root, args.out)
    laurel, why = auditd.wait_ready()
    if not C.check(laurel is not None, "lab: auditd holds the audit pid and runs laurel", why):
        auditd.stop()
        return
    conf = {}
    if o["flood"] == "off":
        conf["flood"] = {"burst": 1000000, "rate": 1000000}
    if o["delay_ms"]:
        conf["batch"] = {"delay_ms": int(o["delay_ms"])}
    extra = [] if o["netns"] == "none" else ["--netns", o["netns"]]
    agent = st["agent"] = S.Agent(args.agent, args.out, extra=extra, conf=conf)
    if not C.check(agent.wait_started(60), "agent wrote service-started", "see agent.log"):
        agent.stop()
        auditd.stop()
        return
    floor = None
    floor_bin = os.path.join(os.path.dirname(os.path.abspath(args.agent)), "ipsec-audit-floor")
    if o["floor"] == "1" and os.path.exists(floor_bin):
        floor = subprocess.Popen([floor_bin, WORK + "/floor.log", o["delay_ms"] or "50"],
                                               stderr=open(os.path.join(args.out, "floor.err"), "w"))
    time.sleep(1)
    procs = {"auditd": auditd.p.pid, "laurel": laurel, "agent": agent.p.pid}
    if floor is not None:
        procs["floor"] = floor.pid
    kd = kauditd_pid()
    if kd:
        procs["kauditd"] = kd
    base_seen = {"auditd": count_in_files(auditd.log_prefix, OP), "laurel": count_in_files(auditd.laurel_prefix, OP),
                 "agent": agent_seen_fast(agent.events), "floor": count_in_files(WORK + "/floor.log", OP)}
    c0, sa0, a0 = S.counters(), S.sa_stats(*sab), audit_status()
    cpu0 = {k: proc_cpu(p) for k, p in procs.items()}
    sw0 = {k: proc_switches(p) for k, p in procs.items()}
    perf = None
    if o["perf"] == "1":
        perf = subprocess.Popen(["perf", "record", "-g", "-e", "cpu-clock", "-F", "999", "-p", str(agent.p.pid),
                                 "-o", WORK + "/perf.data"], stdout=open(os.path.join(args.out, "perf.out"), "w"),
                                stderr=subprocess.STDOUT)
        time.sleep(1)
    t0 = time.monotonic()
    sent, waits, max_backlog = 0, 0, 0
    while sent < n:
        k = min(batch, n - sent)
        S.inject(frame, times=k)
        sent += k
        while True:
            b = audit_status()["backlog"]
            max_backlog = max(max_backlog, b)
            if b < 2000:
                break
            waits += 1
            time.sleep(0.05)
    t_stream = time.monotonic() - t0
    S.log("injected %d replays in %.1f s (%d backlog waits, max backlog %d)" % (sent, t_stream, waits, max_backlog))

    # Settled: every consumer's output stopped growing for 3 s (or 300 s in all).
    last, last_change = None, time.monotonic()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        now = (count_in_files(auditd.log_prefix, OP), count_in_files(auditd.laurel_prefix, OP),
               agent_seen_fast(agent.events), os.path.getsize(agent.events),
               count_in_files(WORK + "/floor.log", OP))
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= 3:
            break
        time.sleep(0.5)
    t_settle = time.monotonic() - t0
    cpu1 = {k: proc_cpu(p) for k, p in procs.items()}
    sw1 = {k: proc_switches(p) for k, p in procs.items()}
    mem = {k: proc_mem(p) for k, p in procs.items() if k != "kauditd"}
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
    c1, sa1, a1 = S.counters(), S.sa_stats(*sab), audit_status()
    agent.stop()  # reconciliation and flood summaries are written by then
    auditd.stop()
    if floor is not None:
        S.terminate(floor, 10, "ipsec-audit-floor")
    kernel = S.delta(c0, c1).get("b:XfrmInStateSeqError", 0)
    sa_replay = sa1.get("replay", 0) - sa0.get("replay", 0)
    kernel_lost = a1["lost"] - a0["lost"]
    C.check(kernel == n and sa_replay == n, "lab: the kernel counted every injection as a replay",
            "XfrmInStateSeqError +%d, SA replay +%d, sent %d" % (kernel, sa_replay, n))
    recs = agent.records()
    a_seen, a_lost, a_lost_by = agent_counts(recs)
    a_written = sum(1 for r in recs if r.get("event") in REPLAY_EVENTS and r.get("spi") == SPI)
    seen = {"auditd": count_in_files(auditd.log_prefix, OP) - base_seen["auditd"],
            "laurel": count_in_files(auditd.laurel_prefix, OP) - base_seen["laurel"], "agent": a_seen}
    if floor is not None:
        seen["floor"] = count_in_files(WORK + "/floor.log", OP) - base_seen["floor"]
    rows = ["side by side: %d replays injected (batches of %d), kernel XfrmInStateSeqError +%d, SA replay +%d, "
            "kernel audit lost +%d; stream %.1f s, settled after %.1f s; kernel %s" % (
                n, batch, kernel, sa_replay, kernel_lost, t_stream, t_settle, res["kernel"]),
            "%-8s %10s %12s %8s %8s %10s %10s %9s" % ("who", "CPU s", "CPU s/100k", "seen", "loss", "VmHWM KiB", "VmRSS KiB",
                                                 "wake-ups")]
    res["consumers"] = {}
    for k in ("auditd", "laurel", "agent", "floor", "kauditd"):
        if k not in procs:
            continue
        cpu = round(cpu1[k] - cpu0[k], 2)
        per = round(cpu * 100000 / kernel, 2) if kernel else None
        r = {"cpu_s": cpu, "cpu_s_per_100k": per, "wakeups": sw1[k] - sw0[k]}
        if k in seen:
            r.update(seen=seen[k], loss=kernel - seen[k], **mem[k])
        res["consumers"][k] = r
        rows.append("%-8s %10.2f %12s %8s %8s %10s %10s %9d" % (k, cpu, per, r.get("seen", ""), r.get("loss", ""),
                                                                  r.get("VmHWM", ""), r.get("VmRSS", ""), r["wakeups"]))
    both = res["consumers"]["auditd"]["cpu_s"] + res["consumers"]["laurel"]["cpu_s"]
    ratio = res["consumers"]["agent"]["cpu_s"] / both if both else None
    unaccounted = kernel - a_seen - a_lost
    res.update(agent_written_lines=a_written, agent_lost_reported=a_lost, agent_lost_by_counter=a_lost_by,
               agent_unaccounted=unaccounted, ratio_agent_to_auditd_laurel=ratio, sa_replay=sa_replay,
               xfrm_in_state_seq_error=kernel, kernel_audit_lost=kernel_lost, stream_s=round(t_stream, 1),
               settle_s=round(t_settle, 1), backlog_waits=waits, max_backlog=max_backlog)
    if floor is not None and both:
        fl = res["consumers"]["floor"]["cpu_s"]
        res["ratio_floor_to_auditd_laurel"] = fl / both
        rows.append("floor (ipsec-audit-floor: receive and append only) / (auditd + laurel): %.1f%%; agent above "
                    "the floor: %.2f CPU s per 100k" % (100 * fl / both, res["consumers"]["agent"]["cpu_s_per_100k"]
                                                        - res["consumers"]["floor"]["cpu_s_per_100k"]))
    rows.append("agent: %d replay lines for %d events (flood %s), events-lost by counter %s" % (
        a_written, a_seen, o["flood"], a_lost_by or "{}"))
    rows.append("accounting: agent records %d + reported loss %d = %d; kernel XfrmInStateSeqError %d, SA replay %d"
                % (a_seen, a_lost, a_seen + a_lost, kernel, sa_replay))
    rows.append("TARGET agent CPU <= 5%% of auditd + laurel: %s (%.1f%%)" % (
        "met" if ratio is not None and ratio <= 0.05 else "MISSED", 100 * (ratio or 0)))
    rows.append("TARGET zero unaccounted events: %s (%d)" % ("met" if unaccounted == 0 else "MISSED", unaccounted))
    hwm = res["consumers"]["agent"].get("VmHWM", 0)
    rows.append("TARGET agent RSS <= 16 MiB: %s (VmHWM %.1f MiB)" % ("met" if hwm <= 16 * 1024 else "MISSED", hwm / 1024))
    if perf is not None:
        rep = subprocess.run(["perf", "report", "-i", WORK + "/perf.data", "--stdio", "--no-children",
                              "--percent-limit", "0.5", "-g", "none", "--sort", "dso,symbol"],
                             capture_output=True, text=True, timeout=300)
        with open(os.path.join(args.out, "perf-agent.txt"), "w") as f:
            f.write(rep.stdout + rep.stderr)
        rep = subprocess.run(["perf", "report", "-i", WORK + "/perf.data", "--stdio", "--children",
                              "--percent-limit", "2", "-g", "none", "--sort", "symbol"],
                             capture_output=True, text=True, timeout=300)
        with open(os.path.join(args.out, "perf-agent-children.txt"), "w") as f:
            f.write(rep.stdout + rep.stderr)
        rep = subprocess.run(["perf", "report", "-i", WORK + "/perf.data", "--stdio", "--no-children",
                              "-g", "none", "--sort", "dso"], capture_output=True, text=True, timeout=300)
        with open(os.path.join(args.out, "perf-agent-dso.txt"), "w") as f:
            f.write(rep.stdout + rep.stderr)
    for line in rows:
        C.note(line)
    with open(os.path.join(args.out, "sidebyside.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")
    with open(os.path.join(args.out, "sidebyside.json"), "w") as f:
        json.dump(res, f, indent=1)
    for src, name in ((auditd.laurel_prefix, "laurel-tail.jsonl"), (auditd.log_prefix, "auditd-tail.log")):
        try:
            with open(src, "rb") as f:
                f.seek(max(0, os.path.getsize(src) - 4000))
                tail = f.read()
            with open(os.path.join(args.out, name), "wb") as f:
                f.write(tail)
        except OSError:
            pass
