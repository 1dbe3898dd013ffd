#!/bin/sh
# Models end to end as a new user runs them: one quick sweep, one prune with --compare, then the
# saved files timed by a plain loop in three separate processes (bench/probes/e2e_independent.py).
#
#   sh bench/probes/e2e.sh OUTDIR 3,64,64 0.6 googlenet densenet121 resnext50_32x4d
#
# Writes OUTDIR/M.parquet, OUTDIR/M.out/ (pruned.pt, prune.json), OUTDIR/M.{sweep,prune}.log and
# OUTDIR/independent.txt. Run it alone: other work on the machine moves the timings.
set -u
out=$1; size=$2; ratio=$3; shift 3
py=$(dirname "$0")/../../.venv/bin/python
mkdir -p "$out"
pairs=""
for m in "$@"; do
  t0=$(date +%s)
  "$py" -m latprof sweep --model "$m" --input-size "$size" --batch 1 --quick --no-progress \
      --out "$out/$m.parquet" > "$out/$m.sweep.log" 2>&1
  t1=$(date +%s)
  "$py" -m latprof prune "$m" --input-size "$size" --table "$out/$m.parquet" --target-ratio "$ratio" \
      --quick --compare --out "$out/$m.out" --json "$out/$m.out/prune.json" > "$out/$m.prune.log" 2>&1
  echo "$m: sweep $((t1 - t0)) s, prune exit $? in $(($(date +%s) - t1)) s" | tee -a "$out/runs.txt"
  [ -f "$out/$m.out/prune.json" ] && pairs="$pairs $m=$out/$m.out"
done
for i in 1 2 3; do
  [ -n "$pairs" ] && "$py" "$(dirname "$0")/e2e_independent.py" "$size" $pairs >> "$out/independent.txt" 2>&1
done
