#!/usr/bin/python3
"""Parse an ipsec-auditd metrics file with the Prometheus client's own text
parser (python3-prometheus-client) and check what the agent promises.

Usage: check-metrics.py FILE|- [--json]   exit 0 when it parses and adds up;
--json prints {"name{label=value,...}": value} for tests to compare.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def samples(text):
    """{"name{k=v,...}": value} for every sample; raises on text that is not the format."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            extra = set(s.labels) - LABELS
            if extra:
                raise ValueError(f"{s.name}: unexpected labels {sorted(extra)}")
            key = s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
            if key in out:
                raise ValueError(f"duplicate series {key}")
            out[key] = s.value
    return out


def problems(series):
    found = []
    for name in ("ipsec_audit_up{}", "ipsec_audit_start_time_seconds{}"):
        if name not in series:
            found.append(f"{name} missing")
    return found


# Bounded cardinality: these label names only (none per SPI or peer).
LABELS = {"event", "outcome", "counter", "sink"}


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    if argv[1] == "-":
        text = sys.stdin.read()
    else:
        with open(argv[1], encoding="utf-8") as f:
            text = f.read()
    try:
        series = samples(text)
    except Exception as e:  # the parser raises ValueError and friends
        print(f"{argv[1]}: not Prometheus text: {e}")
        return 1
    bad = problems(series)
    for p in bad:
        print(f"{argv[1]}: {p}")
    if "--json" in argv:
        print(json.dumps(series, sort_keys=True))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
