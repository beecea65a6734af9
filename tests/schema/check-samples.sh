#!/bin/sh
# Writes one record of every event kind through the real JsonWriter (the
# audit_tests binary) and validates them against the checked-in schema.
set -eu
bin="$1"; src="$2"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
IPSEC_AUDIT_SAMPLE_OUT="$out" "$bin" --gtest_filter='JsonWriter.EveryKindForSchemaCheck' >/dev/null
/usr/bin/python3 "$src/tools/validate-records.py" --min 38 "$out"
