#!/usr/bin/python3
"""Looks for SA key material where it must never be: files (records, logs,
state) and a live process's memory. A key is searched as raw bytes, as hex in
either case (with and without 0x), and as base64.

Usage as a module: forms(key_bytes), scan_files(paths, key), scan_process(pid, key).
Usage as a script: keyscan.py KEYHEX [--pid PID] [PATH...]  (exit 1 when found)
"""
import base64
import os
import re
import sys


def forms(key: bytes):
    hx = key.hex()
    out = {"raw": key, "hex": hx.encode(), "HEX": hx.upper().encode(), "base64": base64.b64encode(key).rstrip(b"=")}
    # Also the middle of the key, so a partial copy is found too (16 bytes at least).
    if len(key) >= 20:
        out["raw-middle"] = key[2:18]
    return out


def scan_bytes(data: bytes, key: bytes):
    return [name for name, f in forms(key).items() if f and f in data]


def scan_files(paths, key: bytes):
    hits = []
    for root in paths:
        walk = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        for p in walk:
            try:
                with open(p, "rb") as f:
                    found = scan_bytes(f.read(), key)
            except OSError:
                continue
            hits += [f"{p}: {h}" for h in found]
    return hits


def scan_process(pid: int, key: bytes):
    """Every readable private mapping of the process (heap, stacks, anonymous)."""
    hits = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)", line)
            if not m or m.group(3)[0] != "r":
                continue
            path = m.group(4)
            if path and not path.startswith("[") and path != "":
                continue  # file-backed text/data of binaries and libraries
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if end - start > (1 << 32):
                continue  # reserved address space (e.g. a sanitizer's shadow), not data
            # In chunks that overlap by more than a key form, so that nothing
            # straddling a boundary is missed and memory use stays small.
            chunk, overlap = 16 << 20, 256
            pos = start
            while pos < end:
                try:
                    mem.seek(pos)
                    data = mem.read(min(chunk + overlap, end - pos))
                except (OSError, ValueError, OverflowError):
                    break
                if not data:
                    break
                hits += [f"{path or 'anon'}@{pos:x}: {h}" for h in scan_bytes(data, key)]
                pos += chunk
    return hits


def main(argv):
    key = bytes.fromhex(argv[1].removeprefix("0x"))
    pid, paths = None, []
    it = iter(argv[2:])
    for a in it:
        if a == "--pid":
            pid = int(next(it))
        else:
            paths.append(a)
    hits = scan_files(paths, key) + (scan_process(pid, key) if pid else [])
    for h in hits:
        print("KEY FOUND", h)
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
