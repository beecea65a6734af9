#!/usr/bin/env python3
"""Python stand-in for ipsec-auditd, used by the e2e lab while (or where) the
real agent is not built: `run-lab.sh --agent standin`. It implements only the
slice of the agent contract that the lab checks, from kernel audit records
(NETLINK_AUDIT multicast group 1) alone: no SA tracking, so a replay below the
window is reported as replay-check-failed with replay_detail "unknown".

Usage: standin-agent.py --foreground --enable-kernel-audit \
        --output jsonl:PATH [--state-dir D] [--control-socket S]
"""
import argparse, ipaddress, json, os, re, select, signal, socket, struct, sys, time

NETLINK_AUDIT = 9
AUDIT_SET = 1001
AUDIT_MAC_IPSEC_EVENT = 1415
NLM_F_REQUEST, NLM_F_ACK = 1, 4
AUDIT_STATUS_ENABLED = 1

OPS = {  # audit op -> (event, event_id, class)
    "SA-icv-failure": ("integrity-check-failed", 4960, "success"),
    "SA-replayed-pkt": ("replay-check-failed", 4961, "success"),
    "SA-notfound": ("incorrect-spi", 4965, "success"),
    "SA-replay-overflow": ("sequence-overflow", None, "success"),
    "SAD-add": ("sa-added", None, "success"),
    "SAD-delete": ("sa-deleted", None, "success"),
    "SPD-add": ("policy-added", None, "success"),
    "SPD-delete": ("policy-deleted", None, "success"),
}
HDR = re.compile(r"audit\((\d+)\.(\d+):(\d+)\):\s*(.*)", re.S)


def rfc3339(t_ns):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ns // 10**9)) + ".%09dZ" % (t_ns % 10**9)


def now():
    return rfc3339(time.time_ns())


def base(event, event_id, cls, source, message):
    return {"schema": "ipsec-audit/1", "time": now(), "kernel_time": None, "audit_serial": None,
            "event": event, "event_id": event_id, "audit_class": cls, "family": None,
            "spi": None, "src": None, "dst": None, "seq": None, "flow_label": None, "sa": None,
            "source": source, "count": 1, "host": os.uname().nodename, "message": message}


def parse(text):
    m = HDR.match(text)
    if not m:
        return None
    fields = dict(re.findall(r"(\w+)=(\S+)", m.group(4)))
    op = fields.get("op")
    if op not in OPS:
        return None
    ev, eid, cls = OPS[op]
    if fields.get("res") == "0":
        cls = "failure"
    r = base(ev, eid, cls, "kernel-audit", m.group(4).strip())
    r["audit"] = {"op": op}
    r["kernel_time"] = rfc3339(int(m.group(1)) * 10**9 + int(m.group(2)) * 10**6)
    r["audit_serial"] = int(m.group(3))
    for k in ("src", "dst"):
        if k in fields:
            a = ipaddress.ip_address(fields[k])
            r[k] = str(a)
            r["family"] = "inet6" if a.version == 6 else "inet"
    if "spi" in fields:
        r["spi"] = int(fields["spi"].split("(")[0])
    if "seqno" in fields:
        r["seq"] = int(fields["seqno"])
    if "flowlbl" in fields:
        r["flow_label"] = int(fields["flowlbl"], 16)
    if op == "SA-replayed-pkt":
        r["replay_basis"] = "unknown"
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--foreground", action="store_true")
    ap.add_argument("--enable-kernel-audit", action="store_true")
    ap.add_argument("--output", required=True)
    ap.add_argument("--state-dir")
    ap.add_argument("--control-socket")
    ap.add_argument("--netns", action="append")  # accepted, ignored: no SA tracking here
    a = ap.parse_args()
    path = a.output.split(":", 1)[1]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = open(path, "a")

    def emit(r):
        out.write(json.dumps(r, separators=(",", ":")) + "\n")
        out.flush()

    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    s.bind((0, 1))
    if a.enable_kernel_audit:
        c = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        body = struct.pack("=8I", AUDIT_STATUS_ENABLED, 1, 0, 0, 0, 0, 0, 0)
        c.send(struct.pack("=IHHII", 16 + len(body), AUDIT_SET, NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body)
        c.recv(65536)
        c.close()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    emit(base("service-started", 5478, "success", "agent", "stand-in started"))
    while not stop:
        try:
            rl, _, _ = select.select([s], [], [], 0.2)
        except InterruptedError:
            continue
        if not rl:
            continue
        data = s.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            ln, typ, _fl, _seq, _pid = struct.unpack_from("=IHHII", data, off)
            if ln < 16:
                break
            if typ == AUDIT_MAC_IPSEC_EVENT:
                r = parse(data[off + 16:off + ln].rstrip(b"\0").decode(errors="replace"))
                if r:
                    emit(r)
            off += (ln + 3) & ~3
    emit(base("service-stopped", 5479, "success", "agent", "stand-in stopped"))
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
