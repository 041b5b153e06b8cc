#!/usr/bin/env bash
# One performance sitting, every figure the README quotes, measured back to back on one machine:
# what runs (doctor), the BLAS peak, unet-s steps and the GroupNorm layer against PyTorch
# (alternating run by run), the step under each forced OpenBLAS core, the step with the 3x3
# convolutions' direct kernel against Winograd's, and the quick compare preset's wall time. Prints
# a log; quote it with its machine and load.
#
# Usage: tools/scripts/perf_sitting.sh [path/to/smallbatch] [rounds, default 7] [--no-compare]
# Needs Debian's python3-torch for the PyTorch side (tools/scripts/bench_torch.py).
set -euo pipefail
sb=${1:-build/smallbatch}
rounds=${2:-7}
run_compare=1
[ "${3:-}" = "--no-compare" ] && run_compare=0

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$sb" doctor --threads 2

echo "== sgemm 2048^3, 2 threads: the kernels smallbatch runs, then OpenBLAS's generic ones"
"$sb" bench --op sgemm --threads 2 --steps 10 --warmup 2 --json | python3 -c 'import json,sys; j=json.load(sys.stdin); print("sgemm default  %.1f GFLOP/s (%s)" % (j["gflops"], j["platform"]["blas_core"]))'
OPENBLAS_CORETYPE=Prescott "$sb" bench --op sgemm --threads 2 --steps 3 --warmup 1 --json | python3 -c 'import json,sys; j=json.load(sys.stdin); print("sgemm Prescott %.1f GFLOP/s" % j["gflops"])'

echo "== unet-s step against PyTorch, 64 x 64, 4 classes, 2 threads, $rounds rounds each"
for norm in gn bn; do
  for batch in 2 8; do
    steps=20; [ "$batch" = 8 ] && steps=8
    echo "-- $norm batch $batch"
    "$sb" bench --vs-torch --norm "$norm" --batch "$batch" --image-size 64 --classes 4 --threads 2 \
      --steps "$steps" --warmup 3 --rounds "$rounds" | grep -E "^(median|time ratio|CPU time ratio)"
    "$sb" bench --norm "$norm" --batch "$batch" --image-size 64 --classes 4 --threads 2 --steps "$steps" \
      --warmup 3 --json | python3 -c 'import json,sys; j=json.load(sys.stdin); print("   conv GFLOP/s %.1f, peak RSS %.1f MB" % (j["gflops"], j["peak_rss_mb"]))'
  done
done
echo "-- GroupNorm layer fwd + bwd, (8, 64, 64, 64)"
"$sb" bench --vs-torch --op groupnorm --groups 8 --shape 8,64,64,64 --threads 2 --steps 30 --warmup 5 \
  --rounds $((2 * rounds + 1)) | grep -E "^(median|time ratio|CPU time ratio)"

# The median ms of one unet-s step run: step_ms NORM BATCH STEPS [VAR=value ...] (set for the run).
step_ms() {
  local norm=$1 batch=$2 steps=$3
  shift 3
  env "$@" "$sb" bench --norm "$norm" --batch "$batch" --image-size 64 --classes 4 --threads 2 --steps "$steps" \
    --warmup 3 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])'
}

# The step under each forced OpenBLAS core against the default, core by core within each round
# (the order rotated round by round), so a busy minute of the host lands on every core alike. Each
# core's figure is the median over rounds of its time over the default's in the same round (a
# paired ratio, steadier than a ratio of medians on a shared host); the spread is the largest
# distance of those from 1. Batch 2 runs 60 steps a run, batch 8 runs 16.
core_rounds=11
echo "== the step under each OpenBLAS core (median of $core_rounds rounds; ms, and the paired ratio to the default)"
cores=(default Prescott Haswell SkylakeX)
for norm in gn bn; do
  for batch in 2 8; do
    steps=60; [ "$batch" = 8 ] && steps=16
    declare -A ms=()
    for ((i = 0; i < core_rounds; i++)); do
      for ((j = 0; j < ${#cores[@]}; j++)); do
        core=${cores[$(((i + j) % ${#cores[@]}))]}
        env_core=(); [ "$core" != default ] && env_core=(OPENBLAS_CORETYPE=$core)
        ms[$core]+="$(step_ms "$norm" "$batch" "$steps" "${env_core[@]}") "
      done
    done
    python3 - "$norm b$batch" "${ms[default]}" "${ms[Prescott]}" "${ms[Haswell]}" "${ms[SkylakeX]}" <<'PY'
import statistics, sys
label, runs = sys.argv[1], [[float(t) for t in a.split()] for a in sys.argv[2:]]
names = ["default", "Prescott", "Haswell", "SkylakeX"]
ratios = [statistics.median(t / d for t, d in zip(r, runs[0])) for r in runs]
print(label + ":", "  ".join("%s %.2f ms (x%.3f)" % (n, statistics.median(r), q) for n, r, q in zip(names, runs, ratios)),
      "  spread %.1f%%" % (100 * max(abs(q - 1) for q in ratios)))
PY
    unset ms
  done
done

# The 3x3 convolutions by Winograd F(4, 3) (the default) against the direct kernel, alternated.
echo "== the step with Winograd's 3x3 (default) and the direct kernel (SMALLBATCH_WINOGRAD=off), median of $core_rounds rounds; ms"
for norm in gn bn; do
  for batch in 2 8; do
    steps=20; [ "$batch" = 8 ] && steps=8
    on=""; off=""
    for ((i = 0; i < core_rounds; i++)); do
      for mode in on off; do
        t=$(step_ms "$norm" "$batch" "$steps" SMALLBATCH_WINOGRAD=$mode)
        if [ "$mode" = on ]; then on+="$t "; else off+="$t "; fi
      done
    done
    med() { printf '%s\n' $1 | sort -g | sed -n "$((core_rounds / 2 + 1))p"; }
    echo "$norm b$batch: winograd $(med "$on") direct $(med "$off")"
  done
done

if [ "$run_compare" = 1 ]; then
  echo "== the quick compare preset (2 threads)"
  out=$(mktemp -d "${TMPDIR:-/tmp}/sb_quick.XXXXXX")
  start=$(date +%s)
  "$sb" compare --threads 2 --out "$out/quick" > "$out/log" 2>&1
  echo "quick preset: $(( $(date +%s) - start )) s wall, load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  # The first table of summary.md: its title, then the rows after the blank line under it.
  sed -n '/^Validation mIoU/,/^| gn /p' "$out/quick/summary.md"
  cp "$out/quick/fig1_miou_vs_batch.png" "${TMPDIR:-/tmp}/sb_quick_fig1.png"
  cp "$out/quick/summary.md" "${TMPDIR:-/tmp}/sb_quick_summary.md"
  rm -rf "$out"
fi
echo "== done $(date -u '+%H:%M:%S UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
