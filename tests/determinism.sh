#!/usr/bin/env bash
# Determinism, end to end: two `smallbatch train` runs with the same seed and thread count write
# byte-identical metrics.csv, config.json and checkpoints (cmp). Only timing.csv (wall-clock time)
# may differ. Then 1 and 3 threads: the same metrics and weights. The run uses BatchNorm (running statistics), augmentation and two loader workers, and
# two threads, so threaded kernels and the loader are covered.
#
# Usage: tests/determinism.sh path/to/smallbatch
set -euo pipefail

sb=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/sb_determinism.XXXXXX")
trap 'rm -rf "$work"' EXIT

run=(train --data "shapes:train=32,val=8,size=32" --norm bn --base-width 8 --batch 4 --epochs 2 --lr 0.05
     --augment --workers 2 --seed 3 --threads 2)
for name in a b; do
  "$sb" "${run[@]}" --out "$work/$name" >"$work/$name.log" 2>&1 || {
    echo "determinism: FAIL: run $name failed: $(cat "$work/$name.log")" >&2
    exit 1
  }
done
for f in metrics.csv config.json model.safetensors best.safetensors state.safetensors; do
  cmp "$work/a/$f" "$work/b/$f" || {
    echo "determinism: FAIL: $f differs between two runs with the same seed and thread count" >&2
    exit 1
  }
done
echo "determinism: ok: metrics.csv, config.json and every checkpoint are byte-identical across two runs"

# The thread count: unet-s runs only kernels that compute each value on one thread in a fixed
# order (the direct convolutions, the norms per set, the per-channel sums), so 1 and 3 threads
# give the same weights and metrics too, at the same SIMD level. (config.json and the state
# record the thread count, so they differ by design.)
single=(train --data "shapes:train=32,val=8,size=32" --norm gn --groups 4 --base-width 8 --batch 2 --epochs 1
        --lr 0.05 --augment --workers 1 --seed 3)
for threads in 1 3; do
  "$sb" "${single[@]}" --threads "$threads" --out "$work/t$threads" >"$work/t$threads.log" 2>&1 || {
    echo "determinism: FAIL: the $threads-thread run failed: $(cat "$work/t$threads.log")" >&2
    exit 1
  }
done
for f in metrics.csv model.safetensors best.safetensors; do
  cmp "$work/t1/$f" "$work/t3/$f" || {
    echo "determinism: FAIL: $f differs between 1 and 3 threads" >&2
    exit 1
  }
done
echo "determinism: ok: 1 and 3 threads give byte-identical metrics.csv and weights"

# Large planes take the Winograd 3x3's other paths: at 128 x 128 with batch 4 on 2 threads each
# thread takes its own samples in bands of rows, against one thread's whole planes; the same bits.
large=(train --data "shapes:train=8,val=4,size=128" --norm gn --groups 4 --batch 4 --steps 2 --lr 0.05 --seed 5)
for threads in 1 2; do
  "$sb" "${large[@]}" --threads "$threads" --out "$work/l$threads" >"$work/l$threads.log" 2>&1 || {
    echo "determinism: FAIL: the 128 x 128 $threads-thread run failed: $(cat "$work/l$threads.log")" >&2
    exit 1
  }
done
for f in metrics.csv model.safetensors; do
  cmp "$work/l1/$f" "$work/l2/$f" || {
    echo "determinism: FAIL: $f differs between 1 and 2 threads at 128 x 128" >&2
    exit 1
  }
done
echo "determinism: ok: at 128 x 128, 1 and 2 threads give byte-identical metrics.csv and weights"
