#!/usr/bin/env python3
"""Live test of the cleartext (4963, predicted) and fragment detail through
nftables + NFLOG, and of filter health (5485) and interfaces (5480).

Two netns joined by a veth; in b an inbound policy requires ESP for UDP to
port 9999. Exactly N cleartext packets to it give N predicted
cleartext-packet-dropped records (with the policy and the interface) and an
XfrmInTmplMismatch delta of N; traffic to an unprotected port gives none.
`nft flush ruleset` in b removes the agent's table: it is applied again and
records keep coming. Fragmented ESP-proto packets (raw socket, MF set) give
one fragment-received summary with their count. The table is gone after the
agent stops; deleting the watched netns under the agent gives 5480."""
import ctypes
import os
import socket
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from livelib import Agent, Netns, live_test, sh  # noqa: E402

LIBC = ctypes.CDLL(None, use_errno=True)
N = 7
FRAGS = 5


def xfrm_stat(ns, name):
    out = sh("ip", "netns", "exec", ns.name, "cat", "/proc/net/xfrm_stat").stdout
    for line in out.splitlines():
        k, v = line.split()
        if k == name:
            return int(v)
    return 0


def in_netns(name, fn):
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open("/run/netns/" + name, os.O_RDONLY)
    try:
        if LIBC.setns(fd, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        return fn()
    finally:
        LIBC.setns(own, 0x40000000)
        os.close(fd)
        os.close(own)


def send_udp(ns, port, count):
    def go():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.77.0.1", 40000 + port % 1000))
        for _ in range(count):
            s.sendto(b"cleartext", ("10.77.0.2", port))
        s.close()
    in_netns(ns.name, go)


def send_esp_fragments(ns, count):
    def go():
        r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        esp = struct.pack("!II", 0x2002, 41) + b"e" * 64
        for i in range(count):
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(esp), 0x4000 + i, 0x2000, 64, 50, 0,
                              socket.inet_aton("10.77.0.1"), socket.inet_aton("10.77.0.2"))
            r.sendto(hdr + esp, ("10.77.0.2", 0))
        r.close()
    in_netns(ns.name, go)


def nft_list(ns):
    return sh("ip", "netns", "exec", ns.name, "nft", "list", "tables", check=False).stdout


def main():
    a, c, validate_file = live_test("live.nflog")
    t0 = time.time()
    with Netns("nfla") as na, Netns("nflb") as nb:
        na.ip("link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nb.name)
        na.ip("addr", "add", "10.77.0.1/24", "dev", "va")
        nb.ip("addr", "add", "10.77.0.2/24", "dev", "vb")
        for ns, dev in ((na, "va"), (nb, "vb")):
            ns.ip("link", "set", dev, "up")
            ns.ip("link", "set", "lo", "up")
        nb.ip("xfrm", "policy", "add", "src", "10.77.0.1/32", "dst", "10.77.0.2/32", "proto", "udp", "dport", "9999",
              "dir", "in", "tmpl", "src", "10.77.0.1", "dst", "10.77.0.2", "proto", "esp", "mode", "transport")
        cfg = os.path.join(tempfile.mkdtemp(prefix="ipsec-audit-nflog-"), "conf.json")
        with open(cfg, "w") as f:
            f.write('{"nflog": {"enable": true, "group": 4963, "fragment_interval_seconds": 1}}')
        with Agent(a.agent, ["--netns", nb.name, "--config", cfg]) as agent:
            deadline = time.time() + 10
            while "ipsec_audit" not in nft_list(nb) and time.time() < deadline:
                time.sleep(0.05)
            c.check("ipsec_audit" in nft_list(nb), "the agent's table inet ipsec_audit is in the watched netns")

            before = xfrm_stat(nb, "XfrmInTmplMismatch")
            send_udp(na, 9999, N)
            send_udp(na, 8888, 3)  # not covered by any policy
            recs = agent.wait_for(lambda r: r["event"] == "cleartext-packet-dropped", timeout=10, count=N)
            time.sleep(0.3)  # a late extra record would show here
            recs = [r for r in agent.records() if r["event"] == "cleartext-packet-dropped"]
            delta = xfrm_stat(nb, "XfrmInTmplMismatch") - before
            c.check(len(recs) == N, f"exactly {N} predicted 4963 records for {N} cleartext packets", len(recs))
            c.check(delta == N, f"XfrmInTmplMismatch rose by {N}", delta)
            r = recs[0]
            c.check(r["event_id"] == 4963 and r["source"] == "nflog" and r.get("basis") == "predicted",
                    "4963, source nflog, basis predicted", r)
            c.check(r["src"] == "10.77.0.1" and r["dst"] == "10.77.0.2" and r.get("protocol") == "udp"
                    and r.get("dport") == 9999, "src, dst, protocol and port", r)
            c.check(r.get("interface") == "vb", "the interface is named", r.get("interface"))
            c.check(isinstance(r.get("policy"), dict) and r["policy"]["dir"] == "in", "the matched policy", r)
            c.check(all(x.get("dport") == 9999 for x in recs), "no record for unprotected traffic")

            # The table removed under the agent: applied again, records keep coming.
            sh("ip", "netns", "exec", nb.name, "nft", "flush", "ruleset")
            deadline = time.time() + 10
            while "ipsec_audit" not in nft_list(nb) and time.time() < deadline:
                time.sleep(0.05)
            c.check("ipsec_audit" in nft_list(nb), "the table is applied again after nft flush ruleset")
            send_udp(na, 9999, 2)
            agent.wait_for(lambda r: r["event"] == "cleartext-packet-dropped", timeout=10, count=N + 2)
            c.check(not any(x["event"] == "filter-refresh-failed" for x in agent.records()),
                    "no 5485 when re-applying works")

            send_esp_fragments(na, FRAGS)
            frs = agent.wait_for(lambda r: r["event"] == "fragment-received", timeout=10)
            fr = frs[0]
            c.check(len(frs) == 1 and fr["count"] == FRAGS and fr["src"] == "10.77.0.1",
                    f"one fragment-received summary counting {FRAGS} fragments", fr)
            c.check(fr["spi"] == 0x2002 and fr.get("fragments", {}).get("first_fragments") == FRAGS,
                    "the SPI from the first fragments", fr)
            c.check(agent.stop() == 0, "the agent stops cleanly")
        c.check("ipsec_audit" not in nft_list(nb), "the table is removed when the agent stops")
        problems = validate_file(agent.out)
        c.check(not problems, "every record validates against the schema", problems[:3])

        # The watched namespace deleted under the agent: 5480.
        with Netns("nflc") as nc:
            with Agent(a.agent, ["--netns", nc.name]) as agent:
                time.sleep(0.3)
                sh("ip", "netns", "del", nc.name)
                r = agent.wait_for(lambda r: r["event"] == "interface-list-failed", timeout=15)[0]
                c.check(r["event_id"] == 5480 and r.get("netns") == nc.name, "5480 when the netns is deleted", r)
                agent.stop()

    # Without nf_tables: covered by the package test VM (no nf modules).
    c.check(time.time() - t0 < 60, "under 60 s", time.time() - t0)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
