#!/usr/bin/env bash
# The glyph classifier table of docs/results.md: each method meta-trained with its defaults on the
# training families of the glyphs, scored once on the same 600 test episodes (5-way 1-shot), every
# episode's accuracy kept in docs/runs/glyphs/METHOD.json; then the paired differences.
# Two streams of one torch thread each, one per core of the reference machine.
#   bash benchmarks/glyph_table.sh            # all runs (about 20 minutes on 2 cores)
#   bash benchmarks/glyph_table.sh compare    # only the paired differences of finished runs
set -euo pipefail
case "${1:-all}" in
  all|compare) ;;
  *) echo "benchmarks/glyph_table.sh: error: $1: must be 'all' (the default) or 'compare'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=docs/runs/glyphs
mkdir -p "$OUT"
bench() {  # METHOD: run once; a finished run (its JSON exists) is kept
  [ -s "$OUT/$1.json" ] && return 0
  "$PY" -m mlcourse.bench "$1" --data glyphs --split test --threads 1 --json > "$OUT/$1.json.tmp" 2> "$OUT/$1.log"
  mv "$OUT/$1.json.tmp" "$OUT/$1.json"
}
if [ "${1:-all}" != compare ]; then
  (bench protonet; bench relation) &
  (bench pixel-nn; bench matching) &
  wait
fi
for pair in "protonet matching" "protonet relation" "matching relation" "relation pixel-nn"; do
  set -- $pair
  "$PY" -m mlcourse.evaluate "$OUT/$1.json" "$OUT/$2.json"
done
