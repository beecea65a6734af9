#!/usr/bin/env python3
"""e2e ESP lab scenario: runs INSIDE the lab VM (as root, in the VM's init netns).

Two netns a (10.0.0.1, fd00::1) and b (10.0.0.2, fd00::2) joined by a veth
pair va/vb, transport-mode ESP SAs a->b, policies out in a / in in b. The agent
runs in the init netns with --enable-kernel-audit. Each packet event is
provoked by re-injecting (possibly altered) captured ESP frames with AF_PACKET;
see README.md. Afterwards the agent's JSONL is checked field by field.

Python 3.11 stdlib only. Output (in --out): scenario.log (PASS/FAIL lines and
the final "e2e: N passed, M failed"), trace.log, events.jsonl (agent output),
steps.json (per step: expected record, /proc/net/xfrm_stat deltas, per-SA
stats), agent.log.
"""
import argparse, ctypes, hashlib, json, os, re, select, signal, socket, struct, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keyscan  # noqa: E402  (tests/e2e/keyscan.py)

# ---------------------------------------------------------------- expectations
# Replay below the window. Until the agent tracks SAs it cannot tell this from
# a duplicate inside the window and writes 4961 with replay_detail "unknown".
# Accepted alternatives, first one is the target. To require the target only,
# drop the second entry.
BELOW_WINDOW_ACCEPT = [
    {"event": "replay-sequence-too-low", "event_id": 4962, "replay_basis": "counter"},
]
# Extra agent arguments (after the contract's). The inbound SAs live in netns b;
# watching b (not a, which holds the same dst+SPI outbound) lets the agent tie
# packet records to one SA and tell 4961 from 4962. E2E_AGENT_ARGS overrides.
AGENT_EXTRA_ARGS = os.environ.get("E2E_AGENT_ARGS", "--netns all").split()
DUPLICATE = {"event": "replay-check-failed", "event_id": 4961, "replay_basis": "counter"}
ICV = {"event": "integrity-check-failed", "event_id": 4960}
NOTFOUND = {"event": "incorrect-spi", "event_id": 4965}
OVERFLOW = {"event": "sequence-overflow", "event_id": None}
PACKET_EVENTS = {"integrity-check-failed", "replay-check-failed", "replay-sequence-too-low",
                 "incorrect-spi", "sequence-overflow"}
PACKET_EVENT_IDS = {4960, 4961, 4962, 4963, 4964, 4965}

# The agent's catalogue classes the packet events 4960-4965 (and the overflow)
# as "success" audits, as Windows does for its IPsec Driver events.
PACKET_AUDIT_CLASS = "success"

FLOW_LABEL = 0x12345
NS_A, NS_B = "a", "b"
# SA keys: fixed but random-looking, so keyscan.py can look for them in the
# agent's files and memory without false hits.
KEYS = {
    "v4 aead rfc4106(gcm(aes))": hashlib.sha256(b"ipsec-audit e2e v4 aead").digest()[:20],
    "v6 auth hmac(sha256)": hashlib.sha256(b"ipsec-audit e2e v6 auth").digest(),
    "v6 enc cbc(aes)": hashlib.sha256(b"ipsec-audit e2e v6 enc").digest()[:16],
}
_K = list(KEYS.values())
FAM = {
    4: dict(name="inet", a="10.0.0.1", b="10.0.0.2", plen=24, spi=0x1001, reqid=1,
            ospi=0x1003, oreqid=3,
            algo=["aead", "rfc4106(gcm(aes))", "0x" + _K[0].hex(), "128"]),
    6: dict(name="inet6", a="fd00::1", b="fd00::2", plen=64, spi=0x2001, reqid=2,
            ospi=0x2003, oreqid=4,
            algo=["auth-trunc", "hmac(sha256)", "0x" + _K[1].hex(), "128", "enc", "cbc(aes)", "0x" + _K[2].hex()]),
}
# The `sa.algorithms` object the agent writes for each family's SAs (names only).
ALGS = {4: {"aead": {"name": "rfc4106(gcm(aes))", "icv_bits": 128}},
        6: {"auth": {"name": "hmac(sha256)", "trunc_bits": 128}, "enc": {"name": "cbc(aes)"}}}
PORT, OPORT = 9999, 8888
# A bad-SPI flood (step v4-bad-spi-flood): FLOOD_N packets to an unknown SPI,
# sent in paced batches (the kernel audit backlog is small), against the
# agent's default flood limits (50 at once, then 10/s per event, SPI and peer).
FLOOD_SPI, FLOOD_N, FLOOD_BATCH = 0xBAD0, 400, 25
FLOOD_BURST, FLOOD_RATE = 50, 10
ICV_LEN = 16
# Cleartext (4963): CLEAR_N UDP datagrams per family a->b:CLEAR_PORT, let out of
# a in clear by a bypass policy, dropped by b's inbound policy (it requires
# ESP for all UDP a->b): XfrmInTmplMismatch +CLEAR_N and CLEAR_N predicted
# records from NFLOG. BLOCK_N v4 datagrams to BLOCK_PORT, which a block policy
# in b covers: XfrmInPolBlock +BLOCK_N, counters only (no predicted record).
CLEAR_PORT, CLEAR_N = 7777, 5
BLOCK_PORT, BLOCK_N = 7778, 3
# ESP fragments: FRAG_DGRAMS UDP datagrams of FRAG_SIZE bytes over the SA; the
# ESP packet (~3.1 KB) is fragmented after encryption to the veth's 1500 MTU.
FRAG_DGRAMS, FRAG_SIZE = 3, 3000

# ---------------------------------------------------------------- plumbing
OUT = "/run/e2e/out"
TRACE = None
T_START = time.monotonic()


def log(*a):
    line = "[%6.2f] %s" % (time.monotonic() - T_START, " ".join(str(x) for x in a))
    print(line, flush=True)
    if TRACE:
        TRACE.write(line + "\n")
        TRACE.flush()


def sh(*cmd, check=True, input=None):
    cmd = [str(c) for c in cmd]
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=30)
    if p.returncode != 0 and check:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (p.returncode, " ".join(cmd), p.stdout, p.stderr))
    return p.stdout


def ipn(ns, *args, check=True):
    return sh("ip", "-n", ns, *args, check=check)


libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
INIT_NS_FD = os.open("/proc/self/ns/net", os.O_RDONLY)


class netns:
    """Run a block in a named netns (this thread only); sockets keep their netns."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "setns(%s): %s" % (self.name, os.strerror(e)))
        finally:
            os.close(fd)

    def __exit__(self, *a):
        if libc.setns(INIT_NS_FD, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns(init)")


def xfrm_stat(ns):
    with netns(ns):
        with open("/proc/thread-self/net/xfrm_stat") as f:
            return {k: int(v) for k, v in (l.split() for l in f if l.strip())}


def counters():
    return {ns: xfrm_stat(ns) for ns in (NS_A, NS_B)}


def delta(before, after):
    d = {}
    for ns in after:
        for k, v in after[ns].items():
            if v != before[ns].get(k, 0):
                d["%s:%s" % (ns, k)] = v - before[ns].get(k, 0)
    return d


def sa_stats(ns, src, dst, spi):
    txt = ipn(ns, "-s", "-s", "xfrm", "state", "get", "src", src, "dst", dst, "proto", "esp", "spi", hex(spi), check=False)
    st = {"raw": txt}
    m = re.search(r"stats:\s*\n\s*replay-window (\d+) replay (\d+) failed (\d+)", txt)
    if m:
        st.update(replay_window=int(m.group(1)), replay=int(m.group(2)), failed=int(m.group(3)))
    m = re.search(r"anti-replay context: seq (0x[0-9a-f]+), oseq (0x[0-9a-f]+)", txt)
    if m:
        st.update(ar_seq=int(m.group(1), 16), ar_oseq=int(m.group(2), 16))
    m = re.search(r"lifetime current:\s*\n\s*(\d+)\(bytes\), (\d+)\(packets\)", txt)
    if m:
        st.update(bytes=int(m.group(1)), packets=int(m.group(2)))
    return st


# ---------------------------------------------------------------- lab setup
def setup_net():
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "add", ns)
        ipn(ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", "va", "netns", NS_A, "type", "veth", "peer", "name", "vb", "netns", NS_B)
    macs = {}
    for ns, dev, key in ((NS_A, "va", "a"), (NS_B, "vb", "b")):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
           "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.%s.accept_dad=0" % dev)
        for f in (4, 6):
            ipn(ns, "addr", "add", "%s/%d" % (FAM[f][key], FAM[f]["plen"]), "dev", dev, *(["nodad"] if f == 6 else []))
        ipn(ns, "link", "set", dev, "up")
        macs[ns] = json.loads(ipn(ns, "-j", "link", "show", dev))[0]["address"]
    # static neighbours: no ARP/ND traffic to disturb the lab
    for ns, dev, peer, key in ((NS_A, "va", NS_B, "b"), (NS_B, "vb", NS_A, "a")):
        for f in (4, 6):
            ipn(ns, "neigh", "replace", FAM[f][key], "lladdr", macs[peer], "dev", dev, "nud", "permanent")
    return macs


def add_sa(f, spi, reqid, extra=()):
    F = FAM[f]
    for ns in (NS_A, NS_B):
        ipn(ns, "xfrm", "state", "add", "src", F["a"], "dst", F["b"], "proto", "esp", "spi", hex(spi),
            "reqid", reqid, "mode", "transport", "replay-window", 32, *(extra if ns == NS_A else ()), *F["algo"])


def policy_args(f, ns, dport=None):
    F = FAM[f]
    bits = 32 if f == 4 else 128
    # UDP by number: a minimal root has no /etc/protocols (netbase) to name it.
    sel = ["src", "%s/%d" % (F["a"], bits), "dst", "%s/%d" % (F["b"], bits), "proto", 17]
    if dport:
        sel += ["dport", dport]
    d = "out" if ns == NS_A else "in"
    return sel + ["dir", d]


def add_policies(f):
    F = FAM[f]
    tmpl = ["tmpl", "src", F["a"], "dst", F["b"], "proto", "esp", "mode", "transport"]
    ipn(NS_A, "xfrm", "policy", "add", *policy_args(f, NS_A), "priority", 100, *tmpl, "reqid", F["reqid"])
    ipn(NS_B, "xfrm", "policy", "add", *policy_args(f, NS_B), "priority", 100, *tmpl)  # reqid 0: any SA


# ---------------------------------------------------------------- traffic
IPV6_FLOWLABEL_MGR, IPV6_FLOWINFO_SEND = 32, 33


class Sender:
    """UDP sockets in netns a; the v6 one sends with flow label FLOW_LABEL if the kernel lets us."""

    def __init__(self):
        with netns(NS_A):
            self.s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.flow = 0
        try:
            req = struct.pack("=16s4sBBHHHI", socket.inet_pton(socket.AF_INET6, FAM[6]["b"]),
                              struct.pack("!I", FLOW_LABEL), 0, 255, 1, 0, 0, 0)  # GET, share ANY, CREATE
            self.s6.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWLABEL_MGR, req)
            self.s6.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWINFO_SEND, 1)
            self.flow = FLOW_LABEL
        except OSError as e:
            log("flow label manager unavailable (%s): v6 packets sent from sockets carry the auto label" % e)

    def send(self, f, port, n=1, size=None):
        res = {}
        for i in range(n):
            data = b"e2e-%d" % i if size is None else (b"e2e-%d-" % i).ljust(size, b"x")
            try:
                if f == 4:
                    self.s4.sendto(data, (FAM[4]["b"], port))
                else:
                    self.s6.sendto(data, (FAM[6]["b"], port, self.flow, 0))
                k = "ok"
            except OSError as e:
                k = "errno %d" % e.errno
            res[k] = res.get(k, 0) + 1
        return res


class Receiver:
    """UDP listeners in netns b, to count what arrives."""

    def __init__(self):
        self.socks = []
        with netns(NS_B):
            for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                for port in (PORT, OPORT):
                    s = socket.socket(fam, socket.SOCK_DGRAM)
                    if fam == socket.AF_INET6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind((addr, port))
                    s.setblocking(False)
                    self.socks.append(s)

    def drain(self, wait=0.3):
        n = 0
        deadline = time.monotonic() + wait
        while True:
            rl, _, _ = select.select(self.socks, [], [], max(0, deadline - time.monotonic()))
            if not rl:
                return n
            for s in rl:
                try:
                    s.recv(2048)
                    n += 1
                except BlockingIOError:
                    pass


def esp_offset(frame):
    et = struct.unpack_from("!H", frame, 12)[0]
    if et == 0x0800 and frame[14 + 9] == 50:
        return 4, 14 + (frame[14] & 0x0F) * 4, 14 + struct.unpack_from("!H", frame, 16)[0]
    if et == 0x86DD and frame[14 + 6] == 50:
        return 6, 14 + 40, 14 + 40 + struct.unpack_from("!H", frame, 18)[0]
    return None, None, None


def capture_esp(f, sender, spi):
    """Send one UDP packet a->b while b drops ESP in prerouting; grab the frame at vb."""
    sh("ip", "netns", "exec", NS_B, "nft", "-f", "-", input=
       "table inet e2edrop {\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n"
       "  meta l4proto 50 drop\n }\n}\n")
    with netns(NS_B):
        ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        ps.bind(("vb", 0x0003))
    ps.settimeout(0.5)
    frame = None
    try:
        sender.send(f, PORT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and frame is None:
            try:
                data = ps.recv(4096)
            except socket.timeout:
                continue
            fam, off, _ = esp_offset(data)
            if fam == f and struct.unpack_from("!I", data, off)[0] == spi:
                frame = bytearray(data)
    finally:
        ps.close()
        sh("ip", "netns", "exec", NS_B, "nft", "delete", "table", "inet", "e2edrop")
    if frame is None:
        raise RuntimeError("no ESP frame with spi %#x captured at vb" % spi)
    _, off, _ = esp_offset(frame)
    log("captured at vb: v%d spi=%#x seq=%d (%d bytes)" % (f, spi, struct.unpack_from("!I", frame, off + 4)[0], len(frame)))
    return frame


def inject(frame, how=None, times=1):
    fr = bytearray(frame)
    f, off, end = esp_offset(fr)
    if f == 6:  # set the flow label (not covered by the ESP ICV)
        w = struct.unpack_from("!I", fr, 14)[0]
        struct.pack_into("!I", fr, 14, (w & 0xFFF00000) | FLOW_LABEL)
    if how == "flip":
        fr[end - ICV_LEN - 1] ^= 0x01  # last ciphertext byte
    elif how and how.startswith("spi="):
        struct.pack_into("!I", fr, off, int(how[4:], 0))
    with netns(NS_A):
        ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        ps.bind(("va", 0))
    try:
        for i in range(times):
            ps.send(bytes(fr))
            if times > 1 and (i + 1) % FLOOD_BATCH == 0:
                time.sleep(0.02)  # let kauditd drain its queue: loss here is not the agent's
    finally:
        ps.close()


# ---------------------------------------------------------------- cleartext and fragments
def wait_until(cond, timeout, what=None, step=0.05):
    """Polls cond() every `step` s until it is true or timeout seconds passed;
    returns its last value (logs `what` when it never came true)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    v = cond()
    if not v and what:
        log("not within %.0fs: %s" % (timeout, what))
    return v


def agent_table(ns):
    """The agent's nftables table in ns, as nft lists it ("" when there is none)."""
    return sh("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "ipsec_audit", check=False)


def predicted(recs, f=None):
    """The agent's predicted 4963 records (NFLOG), of one family's destination b."""
    return [r for r in recs if r.get("event") == "cleartext-packet-dropped" and r.get("source") == "nflog"
            and (f is None or r.get("dst") == FAM[f]["b"])]


def stat_rise(ns, name, before):
    return xfrm_stat(ns).get(name, 0) - before


def run_cleartext(C, st, step, sender, agent):
    """CLEAR_N UDP datagrams per family a->b:CLEAR_PORT in clear (a bypass policy in
    a lets them out), which b's inbound policy (ESP for all UDP a->b) drops; then
    BLOCK_N v4 ones to BLOCK_PORT, which a block policy in b drops."""
    st["flow"] = sender.flow
    got = wait_until(lambda: agent_table(NS_B).count('"ipsec-audit:in:') >= 2, 20,
                     "the agent's table in b with a logging rule per inbound ESP policy")
    C.check(bool(got), "lab: the agent's table inet ipsec_audit in b logs for both inbound ESP policies",
            agent_table(NS_B)[-600:])
    clear = st["cleartext"] = {}
    for f in (4, 6):
        def send():
            ipn(NS_A, "xfrm", "policy", "add", *policy_args(f, NS_A, CLEAR_PORT), "priority", 10)  # no template
            before = xfrm_stat(NS_B).get("XfrmInTmplMismatch", 0)
            sent = sender.send(f, CLEAR_PORT, CLEAR_N)
            sport = (sender.s4 if f == 4 else sender.s6).getsockname()[1]
            wait_until(lambda: stat_rise(NS_B, "XfrmInTmplMismatch", before) >= CLEAR_N, 10,
                       "b:XfrmInTmplMismatch +%d" % CLEAR_N)
            # the predicted records, before the next step (a late one would count there)
            wait_until(lambda: len(predicted(agent.records(), f)) >= CLEAR_N, 15, "%d predicted records" % CLEAR_N)
            return {"sent": sent, "sport": sport}

        clear[f] = step("v%d-cleartext" % f, send, label="%d UDP in clear to port %d" % (CLEAR_N, CLEAR_PORT),
                        lab_expect={"b:XfrmInTmplMismatch": CLEAR_N})
        C.check(clear[f]["sent"] == {"ok": CLEAR_N}, "lab: v%d %d cleartext datagrams sent" % (f, CLEAR_N),
                json.dumps(clear[f]["sent"]))

        # One datagram of FRAG_SIZE bytes in clear: it leaves a as fragments, the
        # kernel counts one drop after reassembly; one predicted record, not one
        # per fragment (the lab has no conntrack: no defragmentation before the
        # agent's chain).
        def send_big():
            before = xfrm_stat(NS_B).get("XfrmInTmplMismatch", 0)
            sent = sender.send(f, CLEAR_PORT, 1, size=FRAG_SIZE)
            wait_until(lambda: stat_rise(NS_B, "XfrmInTmplMismatch", before) >= 1, 10, "b:XfrmInTmplMismatch +1")
            wait_until(lambda: len(predicted(agent.records(), f)) >= CLEAR_N + 1, 15, "1 more predicted record")
            return {"sent": sent}

        r = step("v%d-cleartext-fragmented" % f, send_big, label="1 UDP datagram of %d bytes in clear, fragmented"
                 % FRAG_SIZE, lab_expect={"b:XfrmInTmplMismatch": 1})
        clear[f]["big"] = r["sent"]

    def block():
        ipn(NS_B, "xfrm", "policy", "add", *policy_args(4, NS_B, BLOCK_PORT), "priority", 10, "action", "block")
        ipn(NS_A, "xfrm", "policy", "add", *policy_args(4, NS_A, BLOCK_PORT), "priority", 10)
        # Until the agent's table has the block policy's `return`, these packets
        # would match the ESP policy's logging rule: wait for it.
        ready = wait_until(lambda: "dport %d" % BLOCK_PORT in agent_table(NS_B), 20,
                           "the block policy's rule in the agent's table")
        before = xfrm_stat(NS_B).get("XfrmInPolBlock", 0)
        sent = sender.send(4, BLOCK_PORT, BLOCK_N)
        wait_until(lambda: stat_rise(NS_B, "XfrmInPolBlock", before) >= BLOCK_N, 10, "b:XfrmInPolBlock +%d" % BLOCK_N)
        return {"sent": sent, "table_ready": bool(ready)}

    r = st["blocked"] = step("v4-block-policy", block, label="%d UDP to port %d, which a block policy in b covers"
                             % (BLOCK_N, BLOCK_PORT), lab_expect={"b:XfrmInPolBlock": BLOCK_N})
    C.check(r["table_ready"] and r["sent"] == {"ok": BLOCK_N},
            "lab: block policy in the agent's table before %d datagrams sent" % BLOCK_N, json.dumps(r))


def esp_fragment(frame):
    """(family, first, spi, seq) of an Ethernet frame holding an ESP fragment, else None."""
    et = struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
    if et == 0x0800 and len(frame) >= 34 and frame[23] == 50:
        fo = struct.unpack_from("!H", frame, 20)[0]
        if fo & 0x3FFF == 0:
            return None
        fam, first, l4 = 4, fo & 0x1FFF == 0, 14 + (frame[14] & 0x0F) * 4
    elif et == 0x86DD and len(frame) >= 62 and frame[20] == 44 and frame[54] == 50:
        fam, first, l4 = 6, struct.unpack_from("!H", frame, 56)[0] & 0xFFF8 == 0, 62
    else:
        return None
    spi, seq = struct.unpack_from("!II", frame, l4) if first and len(frame) >= l4 + 8 else (None, None)
    return fam, first, spi, seq


def run_fragments(C, st, step, sender, rx):
    """FRAG_DGRAMS datagrams of FRAG_SIZE bytes per family over the SA: the ESP packet
    is fragmented after encryption. An AF_PACKET socket on vb counts the ESP
    fragments independently of the agent (taps see frames before netfilter)."""
    frag = st["fragments"] = {}
    for f in (4, 6):
        F = FAM[f]

        def send():
            oseq = sa_stats(NS_A, F["a"], F["b"], F["spi"]).get("ar_oseq")
            with netns(NS_B):
                ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
                ps.bind(("vb", 0x0003))
            ps.setblocking(False)
            seen = []
            try:
                sent = sender.send(f, PORT, FRAG_DGRAMS, size=FRAG_SIZE)
                received = 0
                deadline = time.monotonic() + 15
                while received < FRAG_DGRAMS and time.monotonic() < deadline:
                    received += rx.drain(0.3)
                # delivered to the socket: every fragment went past the tap before
                while True:
                    try:
                        data, addr = ps.recvfrom(65535)
                    except BlockingIOError:
                        break
                    x = esp_fragment(data) if addr[2] != socket.PACKET_OUTGOING else None
                    if x and x[0] == f:
                        seen.append(x)
            finally:
                ps.close()
            firsts = [x for x in seen if x[1]]
            return {"sent": sent, "received": received, "oseq_before": oseq, "fragments": len(seen),
                    "first_fragments": len(firsts), "spis": sorted({x[2] for x in firsts}),
                    "seqs": [x[3] for x in firsts]}

        r = frag[f] = step("v%d-esp-fragments" % f, send, label="%d UDP datagrams of %d bytes over ESP"
                           % (FRAG_DGRAMS, FRAG_SIZE), sa=(NS_B, F["a"], F["b"], F["spi"]))
        want_seqs = list(range(r["oseq_before"] + 1, r["oseq_before"] + 1 + FRAG_DGRAMS)) \
            if r["oseq_before"] is not None else None
        C.check(r["received"] == FRAG_DGRAMS and r["first_fragments"] == FRAG_DGRAMS
                and r["fragments"] >= 2 * FRAG_DGRAMS and r["spis"] == [F["spi"]] and r["seqs"] == want_seqs,
                "lab: v%d %d datagrams received, arrived as %d ESP fragments (%d first), SPI %#x, seq %s"
                % (f, FRAG_DGRAMS, r["fragments"], r["first_fragments"], F["spi"], want_seqs), json.dumps(r))


def check_cleartext(C, recs, st):
    """4963: per family exactly CLEAR_N predicted records (NFLOG) for the CLEAR_N
    cleartext datagrams, each naming src, dst, protocol, ports, interface and
    b's inbound policy; the counter aggregates (source counters) add up to the
    kernel's XfrmInTmplMismatch and XfrmInPolBlock rises; nothing predicted
    for traffic that arrived over ESP, nor for the block policy's."""
    if "blocked" not in st:
        C.check(False, "cleartext: the steps ran")
        return
    d = delta(st["counters_start"], st["counters_end"])
    nf = predicted(recs)
    for f in (4, 6):
        F = FAM[f]
        mine = predicted(recs, f)
        n = CLEAR_N + 1  # the small datagrams and the fragmented one
        want = {"event_id": 4963, "audit_class": PACKET_AUDIT_CLASS, "basis": "predicted", "family": F["name"],
                "src": F["a"], "dst": F["b"], "protocol": "udp", "sport": st["cleartext"][f]["sport"],
                "dport": CLEAR_PORT, "interface": "vb", "netns": NS_B, "count": 1}
        if f == 4:
            want["flow_label"] = None
        elif st.get("flow"):
            want["flow_label"] = st["flow"]
        bad = ["%s=%r (want %r)" % (k, r.get(k, "<missing>"), v) for r in mine for k, v in want.items()
               if r.get(k, "<missing>") != v]
        pol = [r.get("policy") or {} for r in mine]
        bad += ["policy %s" % json.dumps(p)[:200] for p, r in zip(pol, mine)
                if p.get("dir") != "in" or p.get("action") != "allow" or p.get("priority") != 100
                or p.get("index") != r.get("policy_index") or (p.get("selector") or {}).get("src") != F["a"]
                or [t.get("proto") for t in p.get("templates", [])] != ["esp"]]
        C.check(len(mine) == n and not bad,
                "cleartext: v%d exactly %d predicted 4963 records for %d datagrams, one of them fragmented (src, dst, "
                "udp, ports, vb, b's inbound ESP policy)" % (f, n, n), "%d records; %s" % (len(mine), "; ".join(bad[:6])))
    C.check(len(nf) == 2 * (CLEAR_N + 1) and all(r.get("dport") == CLEAR_PORT for r in nf),
            "cleartext: no predicted record for traffic over ESP or for the block policy's",
            json.dumps([(r.get("dst"), r.get("dport")) for r in nf])[:300])
    for name, n in (("XfrmInTmplMismatch", 2 * (CLEAR_N + 1)), ("XfrmInPolBlock", BLOCK_N)):
        agg = [r for r in recs if r.get("event") == "cleartext-packet-dropped" and r.get("source") == "counters"
               and (r.get("counter") or {}).get("name") == name]
        got = sum(r.get("count", 0) for r in agg)
        C.check(got == d.get("b:" + name, 0) == n and all(r.get("netns") == NS_B and r.get("event_id") == 4963
                                                          for r in agg),
                "cleartext: %s counter aggregates in b sum to %d == the kernel's rise %d == %d sent"
                % (name, got, d.get("b:" + name, 0), n), json.dumps(agg)[:400])


def check_fragments(C, recs, st):
    """fragment-received: per (peer, interval) summaries whose counts add up to the
    ESP fragments the tap on vb saw, with the SPI and the sequence numbers of the
    first fragments; never one record per fragment."""
    if len(st.get("fragments", {})) != 2:
        C.check(False, "fragments: the steps ran")
        return
    fr = [r for r in recs if r.get("event") == "fragment-received"]
    n = 0
    for f in (4, 6):
        F, lab = FAM[f], st["fragments"][f]
        mine = [r for r in fr if r.get("src") == F["a"] and r.get("dst") == F["b"]]
        n += len(mine)
        x = [r.get("fragments") or {} for r in mine]
        got = {"fragments": sum(r.get("count", 0) for r in mine),
               "first_fragments": sum(d.get("first_fragments", 0) for d in x),
               "spis": sorted({s for d in x for s in d.get("spis", [])}),
               "seq_first": min((d["seq_first"] for d in x if "seq_first" in d), default=None),
               "seq_last": max((d["seq_last"] for d in x if "seq_last" in d), default=None)}
        want = {"fragments": lab["fragments"], "first_fragments": lab["first_fragments"], "spis": [F["spi"]],
                "seq_first": min(lab["seqs"], default=None), "seq_last": max(lab["seqs"], default=None)}
        C.check(got == want and all(r.get("netns") == NS_B and r.get("spi") == F["spi"] and d.get("interface") == "vb"
                                    and r.get("seq") == d.get("seq_first") for r, d in zip(mine, x)),
                "fragments: v%d summaries count %d ESP fragments (%d first), SPI %#x, seq %s..%s as the tap on vb saw"
                % (f, want["fragments"], want["first_fragments"], F["spi"], want["seq_first"], want["seq_last"]),
                "agent %s; records %s" % (json.dumps(got), json.dumps(mine)[:400]))
        C.check(1 <= len(mine) <= 2 < lab["fragments"],
                "fragments: v%d %d summar%s for %d fragments, not one per fragment"
                % (f, len(mine), "y" if len(mine) == 1 else "ies", lab["fragments"]))
    C.check(n == len(fr), "fragments: no other fragment-received records",
            json.dumps([(r.get("src"), r.get("dst"), r.get("count")) for r in fr])[:300])


# ---------------------------------------------------------------- agent
def terminate(p, timeout, what):
    """SIGTERM, then SIGKILL if p has not exited after timeout s; its exit
    code, or "killed"."""
    if p.poll() is not None:
        return p.returncode
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        log("%s did not exit %ds after SIGTERM; killing it" % (what, timeout))
        p.kill()
        p.wait()
        return "killed"


class Agent:
    def __init__(self, agent, out, extra=None, logname="agent.log", conf=None):
        self.dir = "/tmp/lab"
        os.makedirs(self.dir + "/state", exist_ok=True)
        self.events = self.dir + "/events.jsonl"
        args = ["--foreground", "--enable-kernel-audit", "--output", "jsonl:" + self.events,
                "--state-dir", self.dir + "/state", "--control-socket", self.dir + "/ctl.sock"] + \
            (AGENT_EXTRA_ARGS if extra is None else extra)
        # The real agent also writes Prometheus metrics (config file only).
        self.metrics = None
        if agent != "standin":
            self.metrics = self.dir + "/ipsec_audit.prom"
            with open(self.dir + "/agent.conf", "w") as f:
                json.dump({"metrics": {"path": self.metrics, "interval_seconds": 1}, **(conf or {})}, f)
            args += ["--config", self.dir + "/agent.conf"]
        if agent == "standin":
            cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin-agent.py")] + args
        else:
            cmd = [agent] + args
        self.cmd = cmd
        self.logf = open(os.path.join(out, logname), "w")
        log("starting agent:", " ".join(cmd))
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.exit_code = None
        self.live = True  # does the agent write records as they come?

    def records(self):
        recs = []
        try:
            with open(self.events) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        try:
                            recs.append(json.loads(line))
                        except ValueError:
                            recs.append({"_unparsable": line})
        except FileNotFoundError:
            pass
        return recs

    def wait_started(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r.get("event") == "service-started" for r in self.records()):
                log("agent started after %.2fs" % (time.monotonic() - self.t0))
                return True
            if self.p.poll() is not None:
                log("agent exited early with", self.p.returncode)
                return False
            time.sleep(0.1)
        return False

    def wait_packet_records(self, n, timeout=3.0):
        """Wait until n packet records were written (only while the agent writes live)."""
        if not self.live:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len([r for r in self.records() if is_packet(r)]) >= n:
                return
            time.sleep(0.05)
        log("agent: %d packet records not seen within %.1fs; not waiting any more" % (n, timeout))
        self.live = False

    def stop(self, timeout=15):
        self.exit_code = terminate(self.p, timeout, "agent")
        self.logf.close()


def is_packet(r):
    """A packet record of the provoking steps (the flood's are checked by check_flood,
    the predicted 4963 ones from NFLOG by check_cleartext)."""
    return (r.get("event") in PACKET_EVENTS or r.get("event_id") in PACKET_EVENT_IDS) \
        and r.get("source") not in ("counters", "nflog") and r.get("spi") != FLOOD_SPI


# ---------------------------------------------------------------- checks
class Checks:
    def __init__(self, path):
        self.f = open(path, "w")
        self.passed = self.failed = 0

    def check(self, ok, name, detail=""):
        line = "%s: %s%s" % ("PASS" if ok else "FAIL", name, (" -- " + detail) if detail and not ok else "")
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()
        return ok

    def note(self, text):
        print("NOTE: " + text, flush=True)
        self.f.write("NOTE: " + text + "\n")

    def finish(self):
        line = "e2e: %d passed, %d failed" % (self.passed, self.failed)
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.close()
        return 0 if self.failed == 0 and self.passed > 0 else 1


COMMON = {
    "schema": lambda v: v == "ipsec-audit/1",
    "time": lambda v: isinstance(v, (str, int, float)) and v != "",
    "kernel_time": lambda v: True,
    "audit_serial": lambda v: v is None or isinstance(v, int),
    "event": lambda v: isinstance(v, str) and v != "",
    "event_id": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "audit_class": lambda v: v in ("success", "failure"),
    "family": lambda v: v in ("inet", "inet6", None),
    "spi": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "src": lambda v: v is None or isinstance(v, str),
    "dst": lambda v: v is None or isinstance(v, str),
    "seq": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "flow_label": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "sa": lambda v: v is None or isinstance(v, dict),
    "source": lambda v: v in ("kernel-audit", "xfrm", "nflog", "counters", "agent"),
    "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "host": lambda v: isinstance(v, str),
    "message": lambda v: isinstance(v, str),
}


def diff(exp, rec):
    """Field-by-field differences of rec against exp (exp values may be a list of alternatives dicts)."""
    bad = []
    for k, v in exp.items():
        if k.startswith("_"):
            continue
        if rec.get(k, "<missing>") != v:
            bad.append("%s=%r (want %r)" % (k, rec.get(k, "<missing>"), v))
    if "_sa" in exp:  # the SA the agent tied the record to: None, or {key: value} to match in rec["sa"]
        want, sa = exp["_sa"], rec.get("sa")
        if want is None and sa is not None:
            bad.append("sa=%s (want null)" % json.dumps(sa)[:120])
        elif want is not None and (not isinstance(sa, dict) or any(sa.get(k) != v for k, v in want.items())):
            bad.append("sa=%s (want %s)" % (json.dumps(sa)[:160] if sa is not None else "null", json.dumps(want)))
    alts = exp.get("_alt")
    if alts:
        if not any(all(rec.get(k, "<missing>") == v for k, v in alt.items()) for alt in alts):
            bad.append("%s (want one of %s)" % (
                ", ".join("%s=%r" % (k, rec.get(k, "<missing>")) for k in sorted({k for a in alts for k in a})),
                " | ".join(json.dumps(a) for a in alts)))
    return bad


def check_reconciliation(C, recs, st):
    """Nothing unaccounted: the agent's packet records add up to the kernel's
    own counters over the run, per namespace (/proc/net/xfrm_stat) and per SA
    (ip -s -s xfrm state: replay, replay-window, failed)."""
    d = delta(st["counters_start"], st["counters_end"])
    # A flood summary stands for `count` records.
    n = lambda ev, **kw: sum(r.get("count", 1) for r in recs
                             if r.get("event") == ev and r.get("source") != "counters"
                             and all(r.get(k) == v for k, v in kw.items()))
    pairs = [("b:XfrmInStateProtoError", n("integrity-check-failed")),
             ("b:XfrmInStateSeqError", n("replay-check-failed") + n("replay-sequence-too-low")),
             ("b:XfrmInNoStates", n("incorrect-spi")),
             ("a:XfrmOutStateSeqError", n("sequence-overflow"))]
    for counter, records in pairs:
        C.check(d.get(counter, 0) == records and records > 0,
                "reconciled: %s +%d == %d records" % (counter, d.get(counter, 0), records))
    # The agent's own reconciliation (service-stopped) found the same: every
    # paired counter had its records, nothing written as lost.
    stopped = [r for r in recs if r.get("event") == "service-stopped"]
    rc = (stopped[-1].get("counters") or {}).get("reconciliation", {}) if stopped else {}
    lost = [r for r in recs if r.get("event") == "events-lost" and r.get("source") == "counters"]
    C.check(set(rc) >= {"XfrmInNoStates", "XfrmOutStateSeqError", "integrity_failed", "replay"}
            and all(v.get("lost") == 0 and 0 < v.get("counted", 0) <= v.get("seen", 0) for v in rc.values())
            and not lost, "agent's reconciliation: every paired counter's rise had its records, no events-lost",
            "%s %s" % (json.dumps(rc), json.dumps(lost[:2])[:300]))
    for f in (4, 6):
        sa, spi = st["sa_final"][f], FAM[f]["spi"]
        got = {"failed": n("integrity-check-failed", spi=spi), "replay": n("replay-check-failed", spi=spi),
               "replay_window": n("replay-sequence-too-low", spi=spi)}
        C.check(all(sa.get(k) == v for k, v in got.items()),
                "reconciled: per-SA stats of b's SA %#x equal its records %s" % (spi, got),
                "kernel %s" % {k: sa.get(k) for k in got})


def check_flood(C, recs, st, agent):
    """The bad-SPI flood: a log bounded by the token bucket, and counts that add
    up: records written one by one + the counts of the summaries == packets
    sent == the kernel's XfrmInNoStates delta for the step."""
    ent = next((e for e in st["steps"] if e["step"] == "v4-bad-spi-flood"), None)
    if ent is None:
        C.check(False, "flood: the step ran")
        return
    fl = [r for r in recs if r.get("event") == "incorrect-spi" and r.get("spi") == FLOOD_SPI]
    single = [r for r in fl if "summary" not in r]
    sums = [r for r in fl if "summary" in r]
    summarised = sum(r["count"] for r in sums)
    kernel = ent["xfrm_stat_delta"].get("b:XfrmInNoStates", 0)
    lost = sum(r.get("count", 0) for r in recs if r.get("event") == "events-lost")
    C.check(len(single) + summarised == FLOOD_N == kernel,
            "flood: %d records + %d summarised in %d summaries == %d sent == XfrmInNoStates +%d"
            % (len(single), summarised, len(sums), FLOOD_N, kernel), "events-lost total %d" % lost)
    bound = FLOOD_BURST + FLOOD_RATE * (ent["seconds"] + 1.5)  # + the wait before the step's counters
    C.check(len(single) <= bound and sums,
            "flood: records written one by one bounded by the bucket (%d <= %d) and the rest summarised"
            % (len(single), bound))
    C.check(all(r["summary"]["summarised"] == r["count"] and r.get("seq") is None and r.get("src") == FAM[4]["a"]
                and r["summary"]["first_seq"] == ent["seq"] == r["summary"]["last_seq"] for r in sums),
            "flood: summaries carry the SPI, the peer, count = summarised, first/last sequence number",
            json.dumps(sums[:2])[:400])
    stopped = next((r for r in recs if r.get("event") == "service-stopped"), {})
    by = stopped.get("records", {}).get("by_event", {})
    k = by.get("incorrect-spi", {})
    C.check(bool(by) and all(v["received"] == v["written"] + v["suppressed"] + v["summarised"] for v in by.values())
            and k.get("summarised") == sum(r["count"] for r in recs
                                           if r.get("event") == "incorrect-spi" and "summary" in r),
            "service-stopped: per event received = written + suppressed + summarised; summarised matches the summaries",
            json.dumps(by)[:400])
    if agent.metrics is None:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    tool = os.path.normpath(os.path.join(here, "..", "..", "tools", "check-metrics.py"))
    p = subprocess.run([sys.executable, tool, agent.metrics, "--json"], capture_output=True, text=True, timeout=60)
    C.check(p.returncode == 0, "metrics file parses with the Prometheus client's parser", (p.stdout + p.stderr)[-400:])
    if p.returncode != 0:
        return
    m = json.loads(p.stdout.strip().splitlines()[-1])
    want = {o: k.get(o) for o in ("written", "suppressed", "summarised")}
    got = {o: m.get("ipsec_audit_records_total{event=incorrect-spi,outcome=%s}" % o) for o in want}
    C.check(all(got[o] == want[o] for o in want) and m.get("ipsec_audit_up{}") == 0,
            "metrics at stop match service-stopped (incorrect-spi %s) and say up 0" % want, json.dumps(got))


def check_sa_lifecycle(C, recs):
    """SA lifetime expiry of SA 0x1004 in b: soft, then hard (which deletes it)."""
    exp = [r for r in recs if r.get("event") == "sa-expired" and r.get("spi") == 0x1004]
    kinds = [r.get("expire") for r in exp]
    C.check(kinds == ["soft", "hard"], "sa-expired soft then hard for SA 0x1004", "got %s" % kinds)
    C.check(all(r.get("netns") == NS_B and r.get("source") == "xfrm" and isinstance(r.get("sa"), dict)
                and r["sa"].get("reqid") == 9 and r["sa"].get("lifetime", {}).get("hard", {}).get("add_seconds") == 2
                for r in exp), "sa-expired names netns b and carries the SA (reqid, lifetime)",
            json.dumps(exp)[:400])
    hard = [r for r in exp if r.get("expire") == "hard"]
    C.check(len(hard) == 1 and hard[0].get("correlation") == "matched" and hard[0]["audit"]["op"] == "SAD-delete"
            and "auid" not in hard[0]["audit"]
            and not any(r.get("event") == "sa-deleted" and r.get("spi") == 0x1004 for r in recs),
            "hard expiry joined with the kernel's SAD-delete (no bystander auid), no separate sa-deleted",
            json.dumps(hard)[:400])
    added = [r for r in recs if r.get("event") == "sa-added" and r.get("spi") == 0x1004]
    C.check(len(added) == 1 and added[0].get("netns") == NS_B and added[0]["sa"]["algorithms"] == ALGS[4]
            and added[0].get("correlation") == "matched" and added[0]["audit"]["op"] == "SAD-add",
            "sa-added from XFRM, with algorithm names, joined with its SAD-add audit record",
            json.dumps(added)[:400])
    # The same SA (src, dst, SPI) added in a and in b: two XFRM messages and two
    # identical audit lines. Which audit line belongs to which netns cannot be
    # told, and whether both fall inside one correlation window depends on the
    # machine's load, so the label (matched, ambiguous, paired in order) is not
    # checked; what must hold under any interleaving is: one XFRM record per
    # netns, each audit line written exactly once (joined to one XFRM record or
    # on its own), and an audit line on its own never given a netns (the
    # kernel's audit record names none).
    check_identical_changes(C, [r for r in recs if r.get("event") == "sa-added" and r.get("spi") == FAM[4]["spi"]])


def check_identical_changes(C, same):
    xfrm = [r for r in same if r.get("source") == "xfrm"]
    alone = [r for r in same if r.get("source") == "kernel-audit"]
    joined = [r for r in xfrm if isinstance(r.get("audit"), dict)]
    C.check(sorted(str(r.get("netns")) for r in xfrm) == sorted([NS_A, NS_B])
            and len(joined) + len(alone) == 2 and len(same) == len(xfrm) + len(alone)
            and all(r["audit"].get("op") == "SAD-add" for r in joined + alone)
            and not any(r.get("netns") for r in alone),
            "identical changes in two netns: one record per netns, each audit line written once, none given a netns",
            json.dumps([(r["source"], r.get("netns"), r.get("correlation"), "audit" in r) for r in same]))


def check_records(C, recs, expected, agent):
    """Check the agent's records; returns {step: matched packet record}."""
    C.check(bool(recs), "agent wrote records", "events.jsonl empty or missing")
    if not recs:
        return {}
    unparsable = [r["_unparsable"] for r in recs if "_unparsable" in r]
    C.check(not unparsable, "every line is a JSON object", "%d bad lines, first: %.200s" % (len(unparsable), unparsable[:1]))
    recs = [r for r in recs if "_unparsable" not in r]
    C.check(recs[0].get("event") == "service-started" and recs[0].get("event_id") == 5478,
            "first record is service-started 5478", "first: %s" % json.dumps(recs[0])[:300])
    C.check(recs[-1].get("event") == "service-stopped" and recs[-1].get("event_id") == 5479,
            "last record is service-stopped 5479", "last: %s" % json.dumps(recs[-1])[:300])
    C.check(agent.exit_code == 0, "agent exited 0 on SIGTERM", "exit: %r" % agent.exit_code)
    badf = []
    for i, r in enumerate(recs):
        for k, ok in COMMON.items():
            if k not in r:
                badf.append("#%d %s: missing %s" % (i, r.get("event"), k))
            elif not ok(r[k]):
                badf.append("#%d %s: %s=%r" % (i, r.get("event"), k, r[k]))
    C.check(not badf, "common fields present and well-typed in all %d records" % len(recs),
            "; ".join(badf[:8]) + (" ... (%d problems)" % len(badf) if len(badf) > 8 else ""))

    pkt = [r for r in recs if is_packet(r)]
    matched = {}
    used = set()
    order = []
    for e in expected:
        exp = e["record"]
        cands = [i for i, r in enumerate(pkt) if i not in used and r.get("spi") == exp["spi"]
                 and r.get("seq") == exp["seq"] and r.get("family") == exp["family"]]
        best, best_bad = None, None
        for i in cands:
            bad = diff(exp, pkt[i])
            if best is None or len(bad) < len(best_bad):
                best, best_bad = i, bad
            if not bad:
                break
        name = "record %s: %s" % (e["step"], e["label"])
        if best is None:
            C.check(False, name, "no packet record with family=%s spi=%s seq=%s" % (exp["family"], exp["spi"], exp["seq"]))
            continue
        used.add(best)
        order.append(best)
        matched[e["step"]] = pkt[best]
        C.check(not best_bad, name, "; ".join(best_bad) + " | got " + json.dumps(pkt[best])[:400])
        if exp.get("_alt") and not best_bad:
            r = pkt[best]
            C.note("%s: agent wrote %s %s%s" % (e["step"], r.get("event"), r.get("event_id"), "".join(
                " %s=%s" % (k, r[k]) for k in ("replay_basis", "replay_detail") if k in r)))
    extra = [pkt[i] for i in range(len(pkt)) if i not in used]
    C.check(not extra, "no unexpected packet records (%d expected, %d written)" % (len(expected), len(pkt)),
            " | ".join(json.dumps({k: r.get(k) for k in ("event", "event_id", "family", "spi", "seq", "src", "source", "count")})
                       for r in extra[:6]))
    C.check(order == sorted(order), "packet records in provoking order", "order: %s" % order)
    others = [r for r in recs if r.get("source") == "counters" and (r.get("event") in PACKET_EVENTS)]
    if others:
        C.note("%d counter-derived packet records (not matched): %s" % (len(others), json.dumps(others[:3])[:400]))

    # administrative records (lenient: at least one each; the agent may report SAD/SPD changes from several sources)
    def has(ev, spi=None):
        return any(r.get("event") == ev and (spi is None or r.get("spi") == spi) for r in recs)

    for f in (4, 6):
        C.check(has("sa-added", FAM[f]["spi"]), "sa-added for spi %#x" % FAM[f]["spi"])
        C.check(has("sa-deleted", FAM[f]["ospi"]), "sa-deleted for spi %#x" % FAM[f]["ospi"])
    C.check(has("policy-added"), "policy-added seen")
    C.check(has("policy-deleted"), "policy-deleted seen")
    return matched


def validate_schema(C, path):
    """The repo's own schema validator (tools/validate-records.py, needs python3-jsonschema)."""
    here = os.path.dirname(os.path.abspath(__file__))
    tool = os.path.normpath(os.path.join(here, "..", "..", "tools", "validate-records.py"))
    if not os.path.exists(tool):
        C.note("no %s: schema not checked" % tool)
        return
    p = subprocess.run([sys.executable, tool, "--min", "3", path], capture_output=True, text=True, timeout=60)
    out = (p.stdout + p.stderr).strip().splitlines()
    C.check(p.returncode == 0, "events.jsonl valid against docs/schema (tools/validate-records.py)",
            " | ".join(out[-6:]) + (" (install python3-jsonschema)" if "jsonschema" in p.stderr else ""))


# ---------------------------------------------------------------- scenario
def run_esp(args, C, st):
    steps = st["steps"]
    expected = st["expected"]
    macs = setup_net()
    log("netns a/b up, veth va=%s vb=%s" % (macs[NS_A], macs[NS_B]))
    rx = Receiver()
    sender = Sender()

    agent = st["agent"] = Agent(args.agent, args.out)
    started = agent.wait_started(30)
    C.check(started, "agent wrote service-started", "see agent.log")
    if not started:
        agent.stop()
        return
    st["counters_start"] = counters()

    def step(name, fn, exp=None, label="", lab_expect=None, sa=None):
        """Run one provocation; record counters and SA stats; lab self-check on counter deltas."""
        c0 = counters()
        t0 = time.monotonic()
        info = fn() or {}
        time.sleep(0.2)
        c1 = counters()
        d = delta(c0, c1)
        ent = {"step": name, "label": label, "seconds": round(time.monotonic() - t0, 3), "xfrm_stat_delta": d, **info}
        if sa:
            ent["sa_stats"] = {k: v for k, v in sa_stats(*sa).items() if k != "raw"}
        if exp is not None:
            ent["expected"] = exp
            expected.append({"step": name, "label": label, "record": exp})
            agent.wait_packet_records(len(expected))
        steps.append(ent)
        log("step %-22s %s counters %s%s" % (name, info or "", d, (" sa " + json.dumps(ent.get("sa_stats"))) if sa else ""))
        if lab_expect is not None:
            want = dict(lab_expect)
            C.check(all(d.get(k) == v for k, v in want.items()), "lab: %s moves %s" % (name, want), "deltas %s" % d)
        return ent

    # The agent tracks SAs when it watches netns b (or all): packet records then
    # name the SA, and its direction picks b's inbound copy over a's outbound one.
    tracked = "--netns" in AGENT_EXTRA_ARGS and (NS_B in AGENT_EXTRA_ARGS or "all" in AGENT_EXTRA_ARGS) \
        and args.agent != "standin"
    watch_all = "all" in AGENT_EXTRA_ARGS

    def rec(kind, f, seq, spi=None, sa_ns=None, **extra):
        F = FAM[f]
        r = {"family": F["name"], "spi": spi if spi is not None else F["spi"], "src": F["a"], "dst": F["b"],
             "seq": seq, "flow_label": FLOW_LABEL if f == 6 else None, "audit_class": PACKET_AUDIT_CLASS,
             "source": "kernel-audit", "count": 1}
        r.update({k: v for k, v in kind.items()})
        r.update(extra)
        if tracked and (sa_ns != "any" or watch_all):
            if sa_ns == "any":  # the overflow: a's outbound SA
                sa_ns = NS_A
            r["_sa"] = {"spi": r["spi"], "netns": sa_ns, "direction": "in" if sa_ns == NS_B else "out",
                        "direction_source": "policy", "reqid": F["oreqid"] if sa_ns == NS_A else F["reqid"],
                        "algorithms": ALGS[f]} if sa_ns else None
            if sa_ns and watch_all:  # a holds the same (dst, SPI) the other way round
                r["sa_match"] = "by-direction"
        return r

    for f in (4, 6):
        F = FAM[f]
        v = "v%d" % f
        sab = (NS_B, F["a"], F["b"], F["spi"])
        step(v + "-sa-policy-add", lambda: (add_sa(f, F["spi"], F["reqid"]), add_policies(f)) and None)
        r = step(v + "-baseline", lambda: {"sent": sender.send(f, PORT, 3), "received": rx.drain()}, sa=sab)
        C.check(r["received"] == 3, "lab: %s 3 UDP over ESP received in b" % v, "received %s" % r["received"])
        held = {}
        step(v + "-capture", lambda: held.update(frame=capture_esp(f, sender, F["spi"])))
        frame = held["frame"]
        st.setdefault("frames", {})[f] = frame
        _, off, _ = esp_offset(frame)
        seq = struct.unpack_from("!I", frame, off + 4)[0]
        step(v + "-icv-failure", lambda: inject(frame, "flip"), rec(ICV, f, seq, sa_ns=NS_B), "ICV failure (flipped ciphertext byte)",
             {"b:XfrmInStateProtoError": 1}, sa=sab)
        r = step(v + "-accept-held", lambda: (inject(frame), {"received": rx.drain()})[1], sa=sab)
        C.check(r["received"] == 1, "lab: %s held packet accepted after the ICV failure" % v, "received %s" % r["received"])
        step(v + "-replay-duplicate", lambda: inject(frame), rec(DUPLICATE, f, seq, sa_ns=NS_B), "replay inside the window",
             {"b:XfrmInStateSeqError": 1}, sa=sab)
        r = step(v + "-advance-window", lambda: {"sent": sender.send(f, PORT, 40), "received": rx.drain()}, sa=sab)
        C.check(r["received"] == 40, "lab: %s 40 fresh packets received" % v, "received %s" % r["received"])
        below = rec({}, f, seq, sa_ns=NS_B)
        below["_alt"] = BELOW_WINDOW_ACCEPT
        step(v + "-replay-below-window", lambda: inject(frame), below, "replay below the window",
             {"b:XfrmInStateSeqError": 1}, sa=sab)
        C.check(steps[-1].get("sa_stats", {}).get("replay_window") == 1,
                "lab: %s SA stats count the below-window replay as replay-window" % v, json.dumps(steps[-1].get("sa_stats")))
        step(v + "-unknown-spi", lambda: inject(frame, "spi=0xdead"), rec(NOTFOUND, f, seq, spi=0xDEAD),
             "unknown SPI 0xdead", {"b:XfrmInNoStates": 1})
        if f == 4 and tracked and watch_all:
            # The same (dst, SPI) in a and in b, neither with a policy that gives
            # it a direction (tunnel mode: b's inbound transport template does
            # not cover it): the agent must say ambiguous, not pick one.
            def ambiguous_setup():
                for ns in (NS_A, NS_B):
                    ipn(ns, "xfrm", "state", "add", "src", F["a"], "dst", F["b"], "proto", "esp", "spi", "0x1005",
                        "reqid", 5, "mode", "tunnel", "replay-window", 32, *F["algo"])
            step(v + "-ambiguous-setup", ambiguous_setup)
            step(v + "-ambiguous-sa", lambda: inject(frame, "spi=0x1005"),
                 rec(ICV, f, seq, spi=0x1005, sa_ns=None, sa_match="ambiguous"),
                 "ICV failure on an SA two netns hold, direction unknown", {"b:XfrmInStateProtoError": 1})

    for f in (4, 6):
        F = FAM[f]
        v = "v%d" % f
        tmpl = ["tmpl", "src", F["a"], "dst", F["b"], "proto", "esp", "mode", "transport", "reqid", F["oreqid"]]

        def setup_overflow():
            add_sa(f, F["ospi"], F["oreqid"], extra=["replay-oseq", "0xfffffffe"])
            ipn(NS_A, "xfrm", "policy", "add", *policy_args(f, NS_A, OPORT), "priority", 50, *tmpl)

        step(v + "-overflow-setup", setup_overflow)
        r = step(v + "-sequence-overflow", lambda: {"sent": sender.send(f, OPORT, 2), "received": rx.drain()},
                 rec(OVERFLOW, f, None, spi=F["ospi"], sa_ns="any", flow_label=(sender.flow if f == 6 else None)),
                 "sequence number overflow (replay-oseq 0xfffffffe)", {"a:XfrmOutStateSeqError": 1},
                 sa=(NS_A, F["a"], F["b"], F["ospi"]))
        C.check(r["sent"] == {"ok": 1, "errno 75": 1} and r["received"] == 1,
                "lab: %s last sequence number sent, next one refused with EOVERFLOW" % v, json.dumps(r))

        def teardown_overflow():
            ipn(NS_A, "xfrm", "policy", "delete", *policy_args(f, NS_A, OPORT))
            for ns in (NS_A, NS_B):
                ipn(ns, "xfrm", "state", "delete", "src", F["a"], "dst", F["b"], "proto", "esp", "spi", hex(F["ospi"]))

        step(v + "-overflow-teardown", teardown_overflow)

    # Cleartext the kernel drops by policy (4963), and ESP that arrives fragmented.
    if args.agent != "standin":
        run_cleartext(C, st, step, sender, agent)
        run_fragments(C, st, step, sender, rx)

    # A bad-SPI flood from a: bounded by the agent's flood limiter, accounted for.
    frame4 = st["frames"][4]
    _, off4, _ = esp_offset(frame4)
    step("v4-bad-spi-flood", lambda: {"sent": inject(frame4, "spi=%#x" % FLOOD_SPI, FLOOD_N) or FLOOD_N,
                                      "seq": struct.unpack_from("!I", frame4, off4 + 4)[0]},
         label="%d packets to unknown SPI %#x" % (FLOOD_N, FLOOD_SPI), lab_expect={"b:XfrmInNoStates": FLOOD_N})

    # SA lifetime: soft then hard expiry of an SA in b (XFRM EXPIRE; no packet).
    F = FAM[4]
    ipn(NS_B, "xfrm", "state", "add", "src", F["a"], "dst", F["b"], "proto", "esp", "spi", "0x1004", "reqid", 9,
        "mode", "transport", "replay-window", 32, *F["algo"], "limit", "time-soft", 1, "limit", "time-hard", 2)
    st["expiry_added"] = time.monotonic()

    time.sleep(0.5)
    agent.wait_packet_records(len(expected))
    st["sa_final"] = {f: sa_stats(NS_B, FAM[f]["a"], FAM[f]["b"], FAM[f]["spi"]) for f in (4, 6)}
    st["counters_end"] = counters()
    # the scanner itself must see a key where one is (this process holds them all)
    C.check(all(keyscan.scan_process(os.getpid(), k) for k in KEYS.values()),
            "lab: keyscan finds the SA keys in the scenario's own memory")
    if agent.p.poll() is None:  # SA keys must not linger in the running agent's memory
        for name, key in KEYS.items():
            try:
                hits = keyscan.scan_process(agent.p.pid, key)
            except OSError as e:
                hits = ["cannot scan: %s" % e]
            C.check(not hits, "no SA key in the agent's memory (%s)" % name, "; ".join(hits[:6]))
    left = 3.5 - (time.monotonic() - st["expiry_added"])
    if left > 0:
        time.sleep(left)  # past the hard lifetime
    if agent.p.poll() is None:  # a figure, not a check
        with open("/proc/%d/status" % agent.p.pid) as f:
            mem = {k: v.strip() for k, v in (l.split(":", 1) for l in f) if k in ("VmRSS", "VmHWM")}
        C.note("agent memory at the end: %s" % mem)
    final = {ns: sh("ip", "-n", ns, "-s", "-s", "xfrm", "state") for ns in (NS_A, NS_B)}
    steps.append({"step": "final", "xfrm_stat": counters(), "ip_s_s_xfrm_state": final})
    agent.stop()
    log("agent exit code", agent.exit_code)


def main():
    global TRACE, OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="esp")
    ap.add_argument("--agent", required=True)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--e2e-dir")
    args = ap.parse_args()
    OUT = args.out
    os.makedirs(OUT, exist_ok=True)
    TRACE = open(os.path.join(OUT, "trace.log"), "w")
    C = Checks(os.path.join(OUT, "scenario.log"))
    log("scenario %s, agent %s, kernel %s" % (args.scenario, args.agent, os.uname().release))
    if args.scenario == "boot":
        C.check(os.uname().release.startswith("6.1."), "booted the lab kernel", os.uname().release)
        return C.finish()
    if args.scenario == "capture-fixtures":
        # One-off: ESP SA fixtures for tests/fixtures/xfrm (the dev host has no ESP).
        here = os.path.dirname(os.path.abspath(__file__))
        script = os.path.join(here, "..", "fixtures", "xfrm", "capture-esp.sh")
        tool = os.path.join(os.path.dirname(args.agent), "ipsec-audit-nlcapture")
        dest = os.path.join(OUT, "fixtures")
        os.makedirs(dest, exist_ok=True)
        p = subprocess.run(["bash", script, tool], env=dict(os.environ, OUT=dest), capture_output=True, text=True,
                           timeout=240)
        log(p.stdout[-4000:], p.stderr[-4000:])
        C.check(p.returncode == 0, "capture-esp.sh ran", "rc %d" % p.returncode)
        C.check(any(f.startswith("esp-") for f in os.listdir(dest)), "esp-*.bin captured", str(os.listdir(dest)))
        return C.finish()
    if args.scenario not in ("esp", "scale", "strongswan", "flood", "sidebyside"):
        C.check(False, "known scenario", "unknown scenario %r" % args.scenario)
        return C.finish()
    st = {"agent": None, "expected": [], "steps": []}
    if args.scenario in ("scale", "strongswan", "flood", "sidebyside"):
        # scale.py: the tunnel-scale benchmark (figures, lab checks only);
        # strongswan.py: two charons; flood.py: replay and bad-SPI floods, every
        # packet accounted for; tools/bench/sidebyside.py: auditd + laurel and
        # the agent on one stream. All use this module's helpers.
        import shutil
        if args.scenario == "sidebyside":
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bench"))
        mod = __import__(args.scenario)
        try:
            getattr(mod, "run_" + args.scenario)(args, C, sys.modules[__name__], st)
        except Exception as e:
            import traceback
            traceback.print_exc()
            TRACE.write(traceback.format_exc())
            C.check(False, "%s scenario ran to completion" % args.scenario, "%s: %s" % (type(e).__name__, e))
        for c in st.get("charons", {}).values():
            c.stop()
        for m in st.get("monitors", {}).values():
            if m.p.poll() is None:
                m.stop()
        if st["agent"] is not None and st["agent"].exit_code is None:
            st["agent"].stop()
        keep = ["/tmp/lab/events.jsonl", "/tmp/lab/monitor.txt", "/tmp/lab/events-dump.jsonl"]
        keep += ["/tmp/sw/%s/%s" % (ns, f) for ns in (NS_A, NS_B) for f in ("charon.log", "charon.out")]
        keep += ["/tmp/sw/monitor-%s.txt" % ns for ns in (NS_A, NS_B)]
        for path in keep:
            if os.path.exists(path) and os.path.getsize(path) < 64 << 20:
                name = os.path.basename(path)
                if path.startswith("/tmp/sw/%s/" % NS_A) or path.startswith("/tmp/sw/%s/" % NS_B):
                    name = name.replace("charon", "charon-" + path.split("/")[3])
                shutil.copyfile(path, os.path.join(OUT, name))
        return C.finish()
    try:
        run_esp(args, C, st)
    except Exception as e:
        import traceback
        traceback.print_exc()
        TRACE.write(traceback.format_exc())
        C.check(False, "scenario ran to completion", "%s: %s" % (type(e).__name__, e))
    agent, expected, steps = st["agent"], st["expected"], st["steps"]
    if agent is not None:
        if agent.exit_code is None:
            agent.stop()
        recs = agent.records()
        if os.path.exists(agent.events):
            import shutil
            shutil.copyfile(agent.events, os.path.join(OUT, "events.jsonl"))  # verbatim
        matched = check_records(C, recs, expected, agent)
        if "counters_end" in st:
            check_reconciliation(C, recs, st)
            check_sa_lifecycle(C, recs)
            if args.agent != "standin":
                check_flood(C, recs, st, agent)
                check_cleartext(C, recs, st)
                check_fragments(C, recs, st)
        validate_schema(C, agent.events)
        files = [agent.dir, os.path.join(OUT, "agent.log")]
        hits = [h for key in KEYS.values() for h in keyscan.scan_files(files, key)]
        C.check(not hits, "no SA key in the agent's records, log or state", "; ".join(hits[:6]))
        for ent in steps:
            if "expected" in ent:
                ent["agent_record"] = matched.get(ent["step"])
    # steps.json: per step the kernel's view (xfrm_stat deltas, per-SA stats) next to
    # the record expected and the one the agent wrote, for reconciliation.
    with open(os.path.join(OUT, "steps.json"), "w") as f:
        json.dump(steps, f, indent=1)
    log("scenario done")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
