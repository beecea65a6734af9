"""strongSwan scenario of the ESP lab (`run-lab.sh --scenario strongswan`, ctest e2e.strongswan).

Runs inside the lab VM, called by scenario.py with that module's helpers.
Two charons (Debian's strongswan-charon, from the host root), one per netns
(a = 10.0.0.1 initiator, b = 10.0.0.2 responder), IKEv2 with a PSK, and one
IKE_SA with two children:

  tr  transport mode, dynamic[udp] <-> dynamic[udp] (policies with wildcard
      template addresses, a reqid and, outbound, the SPI: as charon installs them)
  rb  route-based: tunnel mode, 0.0.0.0/0 <-> 0.0.0.0/0 with if_id 42, on an
      xfrm interface `xfrm42` in each netns (10.42.0.1 / 10.42.0.2)

Each charon gets its own mount namespace (`ip netns exec NS unshare -m`, a
tmpfs over /run for its pid file) and its own strongswan.conf
(STRONGSWAN_CONF), vici socket and log under /tmp/sw/NS; swanctl talks to it
by --uri. The agent runs in the init netns on `--netns all` with kernel audit.

Steps: initiate tr and rb; a UDP packet over each, its ESP frame captured at
vb and injected again (a replay in b); `swanctl --rekey --child tr` and a
replay on the new inbound SA; `swanctl --terminate --ike lab`. `ip xfrm
monitor` runs in each netns as the ground truth of the changes made.

Checks: each SA/policy change in a netns is written exactly once (records
per netns and SPI / policy direction equal the monitor's messages; no
audit-only leftovers; correlation matched or paired, never ambiguous); each
replay names the right SA (spi, netns b, direction in, if_id for rb; sa_match
not ambiguous; replay_basis counter or inferred); no SA key in the records.
"""
import json, os, re, signal, socket, struct, subprocess, time

PSK = "ipsec-audit e2e strongswan lab psk"  # lab-only
IF_ID = 42
XA, XB = "10.42.0.1", "10.42.0.2"  # xfrm42 addresses in a and b
SW = "/tmp/sw"
CHANGES = ("sa-added", "sa-deleted", "policy-added", "policy-deleted")

STRONGSWAN_CONF = """charon {{
  load = random nonce aes sha1 sha2 hmac kdf gmp kernel-netlink socket-default vici
  install_routes = no
  install_virtual_ip = no
  retransmit_timeout = 10
  filelog {{
    log {{
      path = {d}/charon.log
      time_format = %H:%M:%S
      default = 1
      knl = 2
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
}}
swanctl {{
  load = random nonce pem pkcs1 x509 pubkey
}}
"""

SWANCTL_CONF = """connections {{
  lab {{
    version = 2
    local_addrs = {me}
    remote_addrs = {peer}
    proposals = aes128-sha256-modp2048
    local {{
      auth = psk
      id = {me}
    }}
    remote {{
      auth = psk
      id = {peer}
    }}
    children {{
      tr {{
        mode = transport
        local_ts = dynamic[udp]
        remote_ts = dynamic[udp]
        esp_proposals = aes128gcm16
      }}
      rb {{
        mode = tunnel
        local_ts = 0.0.0.0/0
        remote_ts = 0.0.0.0/0
        if_id_in = {if_id}
        if_id_out = {if_id}
        esp_proposals = aes128gcm16
      }}
    }}
  }}
}}
secrets {{
  ike-lab {{
    id-a = 10.0.0.1
    id-b = 10.0.0.2
    secret = "{psk}"
  }}
}}
"""


class Charon:
    def __init__(self, S, ns, me, peer):
        self.S, self.ns = S, ns
        self.dir = "%s/%s" % (SW, ns)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = self.dir + "/strongswan.conf"
        with open(self.conf, "w") as f:
            f.write(STRONGSWAN_CONF.format(d=self.dir))
        with open(self.dir + "/swanctl.conf", "w") as f:
            f.write(SWANCTL_CONF.format(me=me, peer=peer, if_id=IF_ID, psk=PSK))
        self.env = dict(os.environ, STRONGSWAN_CONF=self.conf)
        self.uri = "unix://%s/charon.vici" % self.dir
        self.out = open(self.dir + "/charon.out", "w")
        # A private /run for charon's fixed /var/run/charon.pid (one charon per
        # mount namespace); everything else it needs is under self.dir.
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "-m", "sh", "-c",
             "mount -t tmpfs -o mode=755 tmpfs /run && exec /usr/lib/ipsec/charon"],
            env=self.env, stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.dir + "/charon.vici"):
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def swanctl(self, *args, timeout=60):
        p = subprocess.run(["swanctl", *args, "--uri", self.uri], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        self.S.log("swanctl %s (%s): rc %d %s" % (" ".join(args), self.ns, p.returncode,
                                                 (p.stdout + p.stderr).strip().replace("\n", " | ")[-300:]))
        return p

    def swanctl_bg(self, *args):
        """swanctl started, not waited for (output to the log dir)."""
        return subprocess.Popen(["swanctl", *args, "--uri", self.uri], env=self.env, stdin=subprocess.DEVNULL,
                                stdout=open(self.dir + "/swanctl.out", "a"), stderr=subprocess.STDOUT)

    def stop(self):
        self.S.terminate(self.p, 15, "charon in " + self.ns)
        self.out.close()


class Monitor:
    """`ip -n NS xfrm monitor` to a file: the changes as the kernel announced them."""

    def __init__(self, ns):
        self.ns = ns
        self.path = "%s/monitor-%s.txt" % (SW, ns)
        self.f = open(self.path, "w")
        # SA and policy messages only: a listener on the AEVENTS group would
        # make the kernel send replay/lifetime events it does not send otherwise.
        self.p = subprocess.Popen(["ip", "-n", ns, "xfrm", "monitor", "nokeys", "SA", "policy"], stdout=self.f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def stop(self):
        self.p.terminate()
        self.p.wait(10)
        self.f.close()

    def changes(self):
        """[(event, spi or None, dir or None, update)] per SA/policy message, in order."""
        with open(self.path) as f:
            text = f.read()
        out = []
        for block in re.split(r"\n(?=\S)", text):
            head = block.split("\n", 1)[0]
            deleted, updated = head.startswith("Deleted "), head.startswith("Updated ")
            if not re.match(r"(Deleted |Updated )?src ", head):
                continue  # Expired, acquire, Flushed, Async event ...
            d = re.search(r"\n\s*dir (in|out|fwd) ", block)
            if d:
                out.append(("policy-deleted" if deleted else "policy-added", None, d.group(1), updated))
                continue
            m = re.match(r"[^\n]*\n\s*proto \S+ spi (0x[0-9a-f]+)", block)
            if m:
                out.append(("sa-deleted" if deleted else "sa-added", int(m.group(1), 16), None, updated))
        return out


def sas(S, ns):
    """[(spi, src, dst, mode, if_id)] of the SAs in the netns."""
    txt = S.ipn(ns, "xfrm", "state")
    res = []
    for block in re.split(r"\n(?=src )", txt.strip()):
        m = re.match(r"src (\S+) dst (\S+)\n\s*proto esp spi (0x[0-9a-f]+) reqid (\d+) mode (\S+)", block)
        if m:
            i = re.search(r"if_id (0x[0-9a-f]+|\d+)", block)
            res.append((int(m.group(3), 16), m.group(1), m.group(2), m.group(5), int(i.group(1), 0) if i else 0))
    return res


def spd(S, ns):
    """The netns's SPD but socket policies (charon's IKE socket bypass)."""
    return [b for b in re.split(r"\n(?=src )", S.ipn(ns, "xfrm", "policy").strip()) if b and "\tsocket " not in b]


def sa_keys(S):
    """The SA keys charon negotiated, as `ip xfrm state` shows them (bytes)."""
    keys = set()
    for ns in (S.NS_A, S.NS_B):
        for m in re.finditer(r"\baead \S+ 0x([0-9a-f]+)", S.ipn(ns, "xfrm", "state")):
            keys.add(bytes.fromhex(m.group(1)))
    return keys


def send_capture_replay(S, C, rx, dst, name):
    """One UDP packet a->dst:9999; its ESP frame as vb saw it is injected again
    on va (the original was received: this is a duplicate in b's window).
    Returns (spi, seq) of the replayed frame."""
    with S.netns(S.NS_B):
        ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        ps.bind(("vb", 0x0003))
    with S.netns(S.NS_A):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ps.settimeout(0.5)
    frame = None
    try:
        tx.sendto(b"e2e-strongswan", (dst, S.PORT))
        deadline = time.monotonic() + 10
        while frame is None and time.monotonic() < deadline:
            try:
                data = ps.recv(4096)
            except socket.timeout:
                continue
            if S.esp_offset(data)[0] == 4:
                frame = bytes(data)
    finally:
        ps.close()
        tx.close()
    got = rx.drain()
    C.check(frame is not None and got == 1, "lab: %s UDP to %s went out as ESP and was received in b" % (name, dst),
            "frame %s, received %d" % (frame is not None, got))
    if frame is None:
        return None, None
    _, off, _ = S.esp_offset(frame)
    spi, seq = struct.unpack_from("!II", frame, off)
    c0 = S.xfrm_stat(S.NS_B)
    S.inject(frame)
    ok = S.wait_until(lambda: S.xfrm_stat(S.NS_B).get("XfrmInStateSeqError", 0) > c0.get("XfrmInStateSeqError", 0), 10)
    C.check(bool(ok), "lab: %s replayed ESP frame (spi %#x seq %d) refused by b as a replay" % (name, spi, seq))
    return spi, seq


def run_strongswan(args, C, S, st):
    macs = S.setup_net()
    S.log("netns a/b up, veth va=%s vb=%s" % (macs[S.NS_A], macs[S.NS_B]))
    for ns, dev, addr in ((S.NS_A, "va", XA), (S.NS_B, "vb", XB)):
        S.ipn(ns, "link", "add", "xfrm42", "type", "xfrm", "dev", dev, "if_id", IF_ID)
        S.ipn(ns, "addr", "add", addr + "/24", "dev", "xfrm42")
        S.ipn(ns, "link", "set", "xfrm42", "up")
    rx = S.Receiver()
    os.makedirs(SW, exist_ok=True)
    # charon starting makes no XFRM change (its IKE sockets get socket
    # policies, which the kernel announces to no one): start both beside the agent.
    ch = {S.NS_A: Charon(S, S.NS_A, "10.0.0.1", "10.0.0.2"), S.NS_B: Charon(S, S.NS_B, "10.0.0.2", "10.0.0.1")}
    st["charons"] = ch
    agent = st["agent"] = S.Agent(args.agent, args.out, extra=["--netns", "all"])
    started = agent.wait_started(30)
    C.check(started, "agent wrote service-started", "see agent.log")
    if not started:
        agent.stop()
        return
    mons = {ns: Monitor(ns) for ns in (S.NS_A, S.NS_B)}
    st["monitors"] = mons
    ready = all(c.wait_ready() for c in ch.values())
    C.check(ready, "lab: charon running in a and in b (vici sockets up)", "see charon-*.log")
    if not ready:
        return
    loads = [c.swanctl_bg("--load-all", "--noprompt", "--file", c.dir + "/swanctl.conf") for c in ch.values()]
    C.check(all(p.wait(60) == 0 for p in loads), "lab: swanctl --load-all in a and b")
    a = ch[S.NS_A]
    up = a.swanctl("--initiate", "--child", "tr", "--timeout", "60").returncode == 0 and \
        a.swanctl("--initiate", "--child", "rb", "--timeout", "60").returncode == 0
    C.check(up, "lab: IKE_SA and children tr, rb established")
    if not up:
        return
    n_sas = lambda ns: len(sas(S, ns))
    C.check(S.wait_until(lambda: n_sas(S.NS_A) == 4 and n_sas(S.NS_B) == 4, 10),
            "lab: 4 SAs in each netns", "a %s b %s" % (sas(S, S.NS_A), sas(S, S.NS_B)))
    keys = sa_keys(S)
    replays = []  # (name, spi, want if_id)
    spi, _ = send_capture_replay(S, C, rx, "10.0.0.2", "transport child")
    if spi is not None:
        replays.append(("transport child", spi, 0))
    spi, _ = send_capture_replay(S, C, rx, XB, "route-based child (xfrm42)")
    if spi is not None:
        replays.append(("route-based child", spi, IF_ID))

    # rekey the transport child: new SAs, the old ones deleted
    old = {s[0] for s in sas(S, S.NS_B) if s[3] == "transport"}
    a.swanctl("--rekey", "--child", "tr")
    tr_now = lambda ns: {s[0] for s in sas(S, ns) if s[3] == "transport"}
    rekeyed = S.wait_until(lambda: all(len(tr_now(ns)) == 2 and not (tr_now(ns) & old) for ns in (S.NS_A, S.NS_B)), 30)
    C.check(bool(rekeyed), "lab: transport child rekeyed (2 new SAs, the old ones gone, in a and b)",
            "old %s now a %s b %s" % (old, tr_now(S.NS_A), tr_now(S.NS_B)))
    keys |= sa_keys(S)
    spi, _ = send_capture_replay(S, C, rx, "10.0.0.2", "transport child after the rekey")
    if spi is not None:
        replays.append(("transport child after the rekey", spi, 0))

    # The agent reads the SA's counters for each replay record (GETSA): wait for
    # the records before the terminate deletes the SAs, or the replay basis of
    # the last one may rightly be "unknown" (the SA gone before it was read).
    replayed = {spi for _, spi, _ in replays}
    S.wait_until(lambda: replayed <= {r.get("spi") for r in agent.records() if r.get("event", "").startswith("replay-")},
               20, step=0.25)
    a.swanctl("--terminate", "--ike", "lab", "--timeout", "30")
    empty = lambda ns: not sas(S, ns) and not spd(S, ns)
    C.check(bool(S.wait_until(lambda: empty(S.NS_A) and empty(S.NS_B), 30)),
            "lab: terminate left no SA, no policy (but charon's socket policies)",
            "a: %s b: %s" % (spd(S, S.NS_A)[:3], spd(S, S.NS_B)[:3]))
    S.log("terminated")
    for c in ch.values():
        c.stop()
    # every change the monitors saw is written (or the agent is behind): then stop
    want = sum(len(m.changes()) for m in mons.values())
    S.wait_until(lambda: sum(1 for r in agent.records() if r.get("event") in CHANGES) >= want, 20, step=0.25)
    time.sleep(0.5)  # the correlation window (250 ms): let a late duplicate show, if any
    for m in mons.values():
        m.stop()
    agent.stop()
    S.log("agent stopped; checks")
    st["replays"], st["keys"] = replays, keys
    check_strongswan(C, S, agent, mons, replays, keys)


def check_strongswan(C, S, agent, mons, replays, keys):
    recs = agent.records()
    C.check(agent.exit_code == 0, "agent exited 0 on SIGTERM", "exit: %r" % agent.exit_code)
    C.check(recs and recs[-1].get("event") == "service-stopped", "last record is service-stopped")
    changes = [r for r in recs if r.get("event") in CHANGES]
    # each change once: per netns, the records per (event, spi) / (event, dir) equal the monitor's messages
    for ns, m in mons.items():
        seen = m.changes()
        want, got = {}, {}
        for ev, spi, d, _ in seen:
            k = (ev, spi if spi is not None else d)
            want[k] = want.get(k, 0) + 1
        for r in changes:
            if r.get("netns") != ns:
                continue
            pol = r.get("policy") if isinstance(r.get("policy"), dict) else {}
            k = (r["event"], r.get("spi") if r["event"].startswith("sa-") else pol.get("dir"))
            got[k] = got.get(k, 0) + 1
        diff = {"%s %s" % k: (want.get(k, 0), got.get(k, 0)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
        C.check(seen and not diff, "each SA/policy change in %s written exactly once (%d changes: %s)" % (
            ns, len(seen), ", ".join("%d %s" % (sum(1 for c in seen if c[0] == e), e) for e in CHANGES)),
            "monitor vs records: %s" % json.dumps(diff)[:600])
    alone = [r for r in changes if not r.get("netns")]
    C.check(not alone, "no SA/policy change written again from its audit record alone",
            json.dumps([(r["event"], r.get("spi"), r.get("correlation")) for r in alone])[:400])
    corr = {}
    for r in changes:
        corr[r.get("correlation")] = corr.get(r.get("correlation"), 0) + 1
    C.check(set(corr) <= {"matched", "paired"}, "every change joined with its audit record (matched or paired, "
            "never ambiguous): %s" % corr, json.dumps(corr))
    C.note("correlation of the %d changes: %s" % (len(changes), corr))
    # the transport SAs' directions are known once their policies are there
    pkt = [r for r in recs if r.get("event") in ("replay-check-failed", "replay-sequence-too-low")]
    C.check(len(pkt) == len(replays), "one replay record per replayed frame (%d)" % len(replays),
            json.dumps([(r.get("spi"), r.get("seq")) for r in pkt]))
    for name, spi, if_id in replays:
        rs = [r for r in pkt if r.get("spi") == spi]
        r = rs[0] if len(rs) == 1 else {}
        sa = r.get("sa") if isinstance(r.get("sa"), dict) else {}
        ok = (r.get("event_id") == 4961 and sa.get("spi") == spi and sa.get("netns") == S.NS_B
              and sa.get("direction") == "in" and r.get("sa_match") not in (None, "ambiguous")
              and r.get("replay_basis") in ("counter", "inferred") and (sa.get("if_id") or 0) == if_id)
        C.check(ok, "replay on the %s (spi %#x) names b's inbound SA%s, sa_match %s, replay_basis %s" % (
            name, spi, " with if_id %d" % if_id if if_id else "", r.get("sa_match"), r.get("replay_basis")),
            json.dumps(r)[:700])
    S.validate_schema(C, agent.events)
    files = [agent.dir, os.path.join(S.OUT, "agent.log")]
    C.check(len(keys) >= 6, "lab: %d SA keys read from ip xfrm state for the key scan" % len(keys))
    hits = [h for k in keys for h in S.keyscan.scan_files(files, k)]
    C.check(not hits, "no SA key in the agent's records, log or state", "; ".join(hits[:6]))
