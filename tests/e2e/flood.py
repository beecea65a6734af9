"""Flood scenario of the ESP lab (`run-lab.sh --scenario flood`): nothing lost silently.

Runs inside the lab VM, called by scenario.py with that module's helpers. Netns
a/b and a v4 transport SA a->b as in the esp scenario. FLOOD_N UDP packets are
sent over the SA while an AF_PACKET socket on vb captures their ESP frames
(distinct sequence numbers 1..N, all accepted by b). Re-injected, each is a
replay that the kernel audits with its own `seqno`, so a record names the
packet it stands for. The kernel audit backlog limit is raised for the run so
that the kernel itself drops nothing (its `lost` counter is read before and
after each phase). An independent listener (a NETLINK_AUDIT socket on the
multicast group AUDIT_NLGRP_READLOG with a 256 MiB SO_RCVBUFFORCE buffer)
counts what the kernel really emitted.

Each phase runs its own agent (its own totals in service-stopped), with flood
limits burst 100, rate 20/s, interval 2 s, counters every 2 s, kernel audit
status every second:

1. replay flood, no loss: the records written one by one and the flood
   summaries account for every injected sequence number exactly once. The
   check: injected in ascending order, each summary stands for the injected
   numbers in [first_seq, last_seq] not written one by one (records of one
   key arrive in order, and a key's summary windows follow each other), so
   the summaries' ranges are disjoint and their `count` is that number; and
   the sum of events-lost counts == the kernel's `lost` delta (0).
2. the same flood with induced loss: the agent runs with a 64 KiB receive
   buffer and is SIGSTOPped while the flood is sent; the listener gets all N,
   the agent's socket overflows. Every record written names an injected
   number, no number twice; the events-lost total == N - what the agent
   received (records + summarised: its pipeline sees every record it reads).
   Twice: `loss` (counters every 2 s: a periodic settle finds the shortfall)
   and `loss-at-stop` (counters every 600 s: only the settle at SIGTERM can).
3. bad-SPI flood as fast as a python AF_PACKET loop goes, for a bounded time:
   records written one by one <= burst + rate x duration, and written +
   summarised + events-lost == XfrmInNoStates delta == what the listener got.
"""
import json, os, re, select, shutil, signal, socket, struct, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "live"))
import livelib  # noqa: E402  (tests/live/livelib.py: AUDIT_GET / AUDIT_SET)

FLOOD_N = int(os.environ.get("E2E_FLOOD_N", "2000"))
BURST, RATE, INTERVAL = 100, 20, 2
BADSPI = 0xBAD1
BADSPI_SECONDS, BADSPI_MAX = 3.0, 60000
BACKLOG = 262144
NETLINK_AUDIT, AUDIT_MAC_IPSEC_EVENT, SO_RCVBUFFORCE = 9, 1415, 33
REPLAY_EVENTS = ("replay-check-failed", "replay-sequence-too-low")
AGENT_CONF = {"flood": {"burst": BURST, "rate": RATE, "interval_seconds": INTERVAL},
              "counters": {"interval_seconds": 2}, "kernel_audit": {"status_interval_seconds": 1}}


class AuditListener:
    """The test's own reader of the kernel audit multicast group: what the kernel emitted."""

    def __init__(self):
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        self.s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 << 20)
        self.s.bind((0, 1))  # groups bitmask: AUDIT_NLGRP_READLOG (1)
        self.s.setblocking(False)
        self.overruns = 0
        self.texts = []

    def read(self, want=None, pred=None, quiet=1.0, timeout=40):
        """Read until `want` records matching pred arrived (or nothing came for `quiet` s)."""
        got = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            if want is not None and len(got) >= want:
                break
            if want is None and time.monotonic() - last > quiet:
                break
            r, _, _ = select.select([self.s], [], [], 0.2)
            if not r:
                if want is not None and time.monotonic() - last > 10:
                    break  # nothing for 10 s: the kernel sent what it sent
                continue
            while True:
                try:
                    data = self.s.recv(1 << 16)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == 105:  # ENOBUFS: must not happen with this buffer
                        self.overruns += 1
                        continue
                    raise
                last = time.monotonic()
                off = 0
                while off + 16 <= len(data):
                    ln, typ = struct.unpack_from("=IH", data, off)
                    if typ == AUDIT_MAC_IPSEC_EVENT:
                        t = data[off + 16: off + ln].split(b"\0")[0].decode(errors="replace")
                        if pred is None or pred(t):
                            got.append(t)
                    off += max(16, (ln + 3) & ~3)
        return got

    def close(self):
        self.s.close()


def seqno(text):
    m = re.search(r"seqno=(\d+)", text)
    return int(m.group(1)) if m else None


def capture_many(S, sender, n):
    """Send n UDP packets a->b over the SA; return the ESP frames seen at vb (accepted by b)."""
    with S.netns(S.NS_B):
        ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        ps.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        ps.bind(("vb", 0x0003))
    ps.setblocking(False)
    frames = {}
    spi = S.FAM[4]["spi"]
    try:
        for i in range(n):
            sender.s4.sendto(b"flood-%d" % i, (S.FAM[4]["b"], S.PORT))
        deadline = time.monotonic() + 30
        while len(frames) < n and time.monotonic() < deadline:
            r, _, _ = select.select([ps], [], [], 0.5)
            if not r:
                continue
            while True:
                try:
                    data = ps.recv(4096)
                except BlockingIOError:
                    break
                fam, off, _ = S.esp_offset(data)
                if fam == 4 and struct.unpack_from("!I", data, off)[0] == spi:
                    frames[struct.unpack_from("!I", data, off + 4)[0]] = bytes(data)
    finally:
        ps.close()
    return [frames[k] for k in sorted(frames)]


def inject_all(S, frames):
    with S.netns(S.NS_A):
        ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        ps.bind(("va", 0))
    try:
        for fr in frames:
            ps.send(fr)
    finally:
        ps.close()


def wait_quiet(agent, quiet=3.0, timeout=30):
    """Until the agent's output stopped growing for `quiet` seconds (it read what it will read)."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        try:
            s = os.path.getsize(agent.events)
        except OSError:
            s = 0
        if s != size:
            size, since = s, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
        time.sleep(0.2)
    return False


def run_agent(S, args, name, st):
    conf = dict(AGENT_CONF)
    if name == "loss-at-stop":  # no periodic settle: only the one at SIGTERM can find the loss
        conf["counters"] = {"interval_seconds": 600}
    agent = S.Agent(args.agent, args.out, extra=["--netns", S.NS_B] + (["--receive-buffer", "65536"]
                                                                         if name.startswith("loss") else []),
                    logname="agent-%s.log" % name, conf=conf)
    st["agent"] = agent  # stopped by scenario.py if this phase fails half-way
    return agent


def start_phase(S, args, C, name, st):
    """A fresh agent for the phase, the listener, the kernel's `lost` and the counters; None if no agent."""
    agent = run_agent(S, args, name, st)
    if not C.check(agent.wait_started(30), "%s: agent started" % name):
        finish_agent(S, args, agent, name)
        return None
    return agent, AuditListener(), livelib.audit_status(), S.counters()


def end_phase(S, args, agent, name, a0, c0):
    """Once the agent's output is quiet: stop it; its records, the counters' deltas, the kernel's lost delta."""
    wait_quiet(agent)
    recs = finish_agent(S, args, agent, name)
    a1, c1 = livelib.audit_status(), S.counters()
    return recs, S.delta(c0, c1), a1["lost"] - a0["lost"]


def finish_agent(S, args, agent, name):
    agent.stop()
    recs = agent.records()
    dest = os.path.join(args.out, "events-%s.jsonl" % name)
    if os.path.exists(agent.events):
        shutil.move(agent.events, dest)  # another filesystem: no rename
    return recs


def lost_total(recs):
    return sum(r.get("count", 0) for r in recs if r.get("event") == "events-lost")


def account(C, name, recs, injected, events, spi):
    """Every record of `events` for `spi` names an injected sequence number; each
    number is covered once, by a record or by one summary's range. Returns
    (written one by one, summarised, summaries)."""
    inj = sorted(injected)
    injset = set(inj)
    mine = [r for r in recs if r.get("event") in events and r.get("spi") == spi and r.get("source") != "counters"]
    single = [r for r in mine if "summary" not in r]
    sums = [r for r in mine if "summary" in r]
    seqs = [r.get("seq") for r in single]
    C.check(all(s in injset for s in seqs) and len(set(seqs)) == len(seqs),
            "%s: %d records written one by one, each an injected sequence number, none twice" % (name, len(single)),
            "foreign %s, twice %d" % ([s for s in seqs if s not in injset][:5], len(seqs) - len(set(seqs))))
    written = set(seqs)
    covered, bad = set(), []
    import bisect
    for r in sums:
        sm = r["summary"]
        lo, hi = sm.get("first_seq"), sm.get("last_seq")
        if lo is None or hi is None or lo > hi:
            bad.append("range %s..%s" % (lo, hi))
            continue
        rng = {s for s in inj[bisect.bisect_left(inj, lo):bisect.bisect_right(inj, hi)] if s not in written}
        if covered & rng:
            bad.append("summary %d..%d overlaps another" % (lo, hi))
        covered |= rng
        # Inside a range: every held number of it, the ones lost excepted (phase 2).
        if r["count"] > len(rng) or sm.get("summarised") != r["count"]:
            bad.append("summary %d..%d count %d, %d numbers in it" % (lo, hi, r["count"], len(rng)))
    summarised = sum(r["count"] for r in sums)
    C.check(not bad, "%s: %d summaries, disjoint ranges of injected numbers, count <= numbers in range"
            % (name, len(sums)), "; ".join(bad[:5]))
    return single, summarised, sums, covered | written


def phase_noloss(S, args, C, sender, frames, res):
    seqs = [struct.unpack_from("!I", f, S.esp_offset(f)[1] + 4)[0] for f in frames]
    spi = S.FAM[4]["spi"]
    ph = start_phase(S, args, C, "noloss", res["_st"])
    if ph is None:
        return
    agent, lis, a0, c0 = ph
    t0 = time.monotonic()
    inject_all(S, frames)
    S.log("noloss: %d replays injected in %.2fs" % (len(frames), time.monotonic() - t0))
    heard = lis.read(want=len(frames), pred=lambda t: "SA-replayed-pkt" in t and "spi=%d(" % spi in t)
    lis.close()
    recs, d, klost = end_phase(S, args, agent, "noloss", a0, c0)
    C.check(sorted(seqno(t) for t in heard) == sorted(seqs) and lis.overruns == 0,
            "noloss: the independent listener got all %d replay records from the kernel" % len(seqs),
            "got %d, overruns %d" % (len(heard), lis.overruns))
    C.check(d.get("b:XfrmInStateSeqError") == len(seqs), "lab: noloss XfrmInStateSeqError +%d" % len(seqs), str(d))
    single, summarised, sums, cov = account(C, "noloss", recs, seqs, REPLAY_EVENTS, spi)
    C.check(len(single) + summarised == len(seqs) and cov == set(seqs),
            "noloss: records (%d) + summarised (%d) == %d injected, every number accounted for once"
            % (len(single), summarised, len(seqs)), "missing %s" % sorted(set(seqs) - cov)[:8])
    lt = lost_total(recs)
    C.check(lt == klost, "noloss: events-lost total %d == kernel audit lost delta %d" % (lt, klost))
    stopped = next((r for r in recs if r.get("event") == "service-stopped"), {})
    rc = (stopped.get("counters") or {}).get("reconciliation", {}).get("replay", {})
    C.check(rc.get("counted") == len(seqs) == rc.get("seen") and rc.get("lost") == 0,
            "noloss: agent's reconciliation of the SA's replay counters: counted == seen == %d, lost 0" % len(seqs),
            json.dumps(rc))
    res["noloss"] = {"injected": len(seqs), "listener": len(heard), "written": len(single),
                     "summarised": summarised, "summaries": len(sums), "events_lost": lt, "kernel_lost": klost,
                     "xfrm_stat": d}


def phase_loss(S, args, C, sender, frames, res, name="loss"):
    seqs = [struct.unpack_from("!I", f, S.esp_offset(f)[1] + 4)[0] for f in frames]
    spi = S.FAM[4]["spi"]
    ph = start_phase(S, args, C, name, res["_st"])
    if ph is None:
        return
    agent, lis, a0, c0 = ph
    agent.p.send_signal(signal.SIGSTOP)
    try:
        inject_all(S, frames)
        heard = lis.read(want=len(frames), pred=lambda t: "SA-replayed-pkt" in t and "spi=%d(" % spi in t)
    finally:
        agent.p.send_signal(signal.SIGCONT)
    lis.close()
    S.log("%s: %d replays injected while the agent was stopped; listener got %d" % (name, len(frames), len(heard)))
    recs, d, klost = end_phase(S, args, agent, name, a0, c0)
    C.check(sorted(seqno(t) for t in heard) == sorted(seqs) and lis.overruns == 0,
            "%s: the independent listener got all %d replay records: the kernel sent them all" % (name, len(seqs)),
            "got %d, overruns %d" % (len(heard), lis.overruns))
    C.check(klost == 0, "%s: kernel audit lost delta 0 (backlog limit %d)" % (name, BACKLOG), "lost +%d" % klost)
    single, summarised, sums, cov = account(C, name, recs, seqs, REPLAY_EVENTS, spi)
    received = len(single) + summarised
    lost = [r for r in recs if r.get("event") == "events-lost"]
    lt = lost_total(recs)
    C.check(received < len(seqs), "%s: the agent's socket overflowed (%d of %d received)" % (name, received, len(seqs)))
    C.check(lt == len(seqs) - received,
            "%s: events-lost total %d == injected %d - received by the agent %d" % (name, lt, len(seqs), received),
            json.dumps([{k: r.get(k) for k in ("count", "source", "lost")} for r in lost])[:600])
    stopped = next((r for r in recs if r.get("event") == "service-stopped"), {})
    by = (stopped.get("records") or {}).get("by_event", {})
    got = sum(by.get(e, {}).get("received", 0) for e in REPLAY_EVENTS)
    C.check(got == received, "%s: service-stopped says %d replay records received, as written + summarised" % (name, got))
    res[name] = {"injected": len(seqs), "listener": len(heard), "written": len(single), "summarised": summarised,
                   "summaries": len(sums), "agent_received": received, "events_lost": lt, "kernel_lost": klost,
                   "events_lost_records": [{k: r.get(k) for k in ("count", "source", "lost")} for r in lost]}


def phase_badspi(S, args, C, frames, res):
    fr = bytearray(frames[0])
    _, off, _ = S.esp_offset(fr)
    struct.pack_into("!I", fr, off, BADSPI)
    fr = bytes(fr)
    ph = start_phase(S, args, C, "badspi", res["_st"])
    if ph is None:
        return
    agent, lis, a0, c0 = ph
    with S.netns(S.NS_A):
        ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        ps.bind(("va", 0))
    sent, t0 = 0, time.monotonic()
    try:
        while sent < BADSPI_MAX:  # as fast as it goes, bounded in time and count
            for _ in range(100):
                ps.send(fr)
            sent += 100
            if time.monotonic() - t0 >= BADSPI_SECONDS:
                break
    finally:
        ps.close()
    secs = time.monotonic() - t0
    S.log("badspi: %d packets in %.2fs (%.0f/s)" % (sent, secs, sent / secs))
    heard = lis.read(want=sent, pred=lambda t: "SA-notfound" in t and "spi=%d(" % BADSPI in t)
    lis.close()
    recs, d, klost = end_phase(S, args, agent, "badspi", a0, c0)
    ns = d.get("b:XfrmInNoStates", 0)
    mine = [r for r in recs if r.get("event") == "incorrect-spi" and r.get("spi") == BADSPI]
    single = [r for r in mine if "summary" not in r]
    sums = [r for r in mine if "summary" in r]
    summarised = sum(r["count"] for r in sums)
    lt = lost_total(recs)
    C.check(ns == sent, "lab: badspi XfrmInNoStates +%d == %d sent" % (ns, sent))
    C.check(len(single) + summarised + lt == ns,
            "badspi: %d written + %d summarised (%d summaries) + %d events-lost == XfrmInNoStates +%d"
            % (len(single), summarised, len(sums), lt, ns),
            "listener %d, kernel lost +%d" % (len(heard), klost))
    # The bucket: BURST at once, RATE/s after; the agent may read the records a
    # while after they were sent, so its own time is the bound (start to stop).
    span = agent_span(recs) + 1
    bound = BURST + RATE * span
    C.check(len(single) <= bound, "badspi: records written one by one bounded by the bucket (%d <= %d + %d x %.1fs)"
            % (len(single), BURST, RATE, span))
    C.check(len(sums) <= span / INTERVAL + 3, "badspi: %d summaries, at most one per %ds interval" % (len(sums), INTERVAL))
    res["badspi"] = {"sent": sent, "seconds": round(secs, 2), "rate_pps": round(sent / secs), "listener": len(heard),
                     "xfrm_in_no_states": ns, "written": len(single), "summarised": summarised, "summaries": len(sums),
                     "events_lost": lt, "kernel_lost": klost}


def agent_span(recs):
    """Seconds from service-started to service-stopped (the agent's own clock, RFC 3339 times)."""
    import datetime
    t = {}
    for r in recs:
        if r.get("event") in ("service-started", "service-stopped") and isinstance(r.get("time"), str):
            t[r["event"]] = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
    if len(t) < 2:
        return 120.0
    return t["service-stopped"] - t["service-started"]


def run_flood(args, C, S, st):
    t_start = time.monotonic()
    S.setup_net()
    S.add_sa(4, S.FAM[4]["spi"], S.FAM[4]["reqid"])
    S.add_policies(4)
    sender = S.Sender()
    with livelib.KernelAuditGuard():
        livelib.audit_set_backlog_limit(BACKLOG)
        t0 = time.monotonic()
        frames = capture_many(S, sender, FLOOD_N)
        S.log("captured %d ESP frames in %.2fs" % (len(frames), time.monotonic() - t0))
        if not C.check(len(frames) == FLOOD_N, "lab: %d distinct ESP frames captured at vb" % FLOOD_N,
                       "got %d" % len(frames)):
            return
        res = {"_st": st}
        for name, fn in (("noloss", lambda: phase_noloss(S, args, C, sender, frames, res)),
                         ("loss", lambda: phase_loss(S, args, C, sender, frames, res)),
                         ("loss-at-stop", lambda: phase_loss(S, args, C, sender, frames, res, "loss-at-stop")),
                         ("badspi", lambda: phase_badspi(S, args, C, frames, res))):
            t0 = time.monotonic()
            fn()
            S.log("phase %s took %.1fs" % (name, time.monotonic() - t0))
    res.pop("_st", None)
    res["seconds"] = round(time.monotonic() - t_start, 1)
    with open(os.path.join(args.out, "flood.json"), "w") as f:
        json.dump(res, f, indent=1)
    C.note("flood figures: " + json.dumps(res))
