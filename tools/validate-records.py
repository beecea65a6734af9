#!/usr/bin/python3
"""Validate ipsec-audit JSON Lines files against docs/schema/ipsec-audit-1.schema.json.

Usage: validate-records.py [--min N] FILE...   (exit 0 when every line is a valid record)
"""
import json
import pathlib
import sys

import jsonschema

SCHEMA = pathlib.Path(__file__).resolve().parent.parent / "docs" / "schema" / "ipsec-audit-1.schema.json"


def validator():
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_lines(lines, v=None):
    """Returns a list of 'line N: problem' strings; empty when all are valid."""
    v = v or validator()
    problems = []
    for n, line in enumerate(lines, 1):
        if not line.endswith("\n"):
            problems.append(f"line {n}: not newline-terminated (partial record)")
        try:
            rec = json.loads(line)
        except ValueError as e:
            problems.append(f"line {n}: not JSON: {e}")
            continue
        for err in v.iter_errors(rec):
            problems.append(f"line {n}: {'/'.join(map(str, err.path)) or '(record)'}: {err.message}")
    return problems


def main(argv):
    minimum = 1
    if len(argv) > 2 and argv[1] == "--min":
        minimum = int(argv[2])
        argv = argv[2:]
    v = validator()
    total, bad = 0, 0
    for path in argv[1:]:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.readlines()
        total += len(lines)
        for p in validate_lines(lines, v):
            bad += 1
            print(f"{path}: {p}")
    print(f"schema: {total} records checked, {bad} problems")
    if total < minimum:
        print(f"schema: expected at least {minimum} records")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
