#!/bin/sh
# Validates records of every event kind, written by the real JsonWriter,
# against the checked-in schema.
set -eu
samples="$1"; src="$2"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$samples" > "$out"
/usr/bin/python3 "$src/tools/validate-records.py" --min 50 "$out"
