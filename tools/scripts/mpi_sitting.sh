#!/usr/bin/env bash
# The data-parallel measurements of docs/PERFORMANCE.md in one sitting: on one machine, 2 ranks x
# 1 thread (mpirun) against 1 process x 2 threads at the same global batch, bn and syncbn and gn,
# per-rank batch 2 and 8; rounds alternate the configurations and the medians are printed.
# A step's time is timing.csv's training seconds over the steps (setup and startup excluded);
# the all-reduce figures are what `train` prints at the end of a data-parallel run (rank 0's).
#
# Usage: tools/scripts/mpi_sitting.sh path/to/smallbatch [rounds, default 5] [steps, default 12]
set -euo pipefail
sb=$1
rounds=${2:-5}
steps=${3:-12}
work=$(mktemp -d "${TMPDIR:-/tmp}/sb_mpi_sitting.XXXXXX")
trap 'rm -rf "$work"' EXIT
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)
common=(train --data "shapes:train=256,size=64" --val-data none --steps "$steps" --workers 1 --seed 1)

echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
     "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A times comm after
for r in $(seq "$rounds"); do
  for b in 2 8; do
    for norm in gn bn syncbn; do
      for mode in ranks process; do
        [ "$mode" = process ] && [ "$norm" = syncbn ] && continue  # one process: syncbn is bn
        out="$work/$mode-$norm-$b-$r"
        if [ "$mode" = ranks ]; then
          "${mpi[@]}" "$sb" "${common[@]}" --norm "$norm" --batch "$b" --threads 1 --out "$out" >"$out.log" 2>&1
        else
          "$sb" "${common[@]}" --norm "$norm" --batch $((2 * b)) --threads 2 --out "$out" >"$out.log" 2>&1
        fi
        secs=$(tail -1 "$out/timing.csv" | cut -d, -f3)
        key="$mode $norm b$b"
        times[$key]+="$(awk -v s="$secs" -v n="$steps" 'BEGIN { printf "%.1f", 1000 * s / n }') "
        if [ "$mode" = ranks ]; then
          line=$(grep '^all-reduce:' "$out.log")
          comm[$key]+="$(echo "$line" | sed -E 's/.* ([0-9.]+) ms per step from.*/\1/') "
          after[$key]+="$(echo "$line" | sed -E 's/.*, ([0-9.]+) ms of it after.*/\1/') "
          bytes=$(echo "$line" | sed -E 's/all-reduce: ([0-9]+) bytes.*/\1/')
          buckets=$(echo "$line" | sed -E 's/.* in ([0-9]+) buckets.*/\1/')
        fi
      done
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
echo "# gradient: $bytes bytes per step in $buckets buckets; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %14s %18s %22s   %s\n' configuration "ms/step (med)" "all-reduce ms/step" "of it after backward" "all rounds (ms/step)"
for key in "${!times[@]}"; do
  printf '%-22s %14s %18s %22s   %s\n' "$key" "$(echo "${times[$key]}" | median)" \
    "$( [ -n "${comm[$key]:-}" ] && echo "${comm[$key]}" | median || echo -)" \
    "$( [ -n "${after[$key]:-}" ] && echo "${after[$key]}" | median || echo -)" "${times[$key]}"
done | sort
