#!/usr/bin/env bash
# Writes tests/fixtures/compat/: small checkpoints trained by a given smallbatch binary, with the
# eval logits that binary computes from them. tests/test_compat.cpp evaluates the same
# checkpoints with the current code and requires the same bits, so a refactor that changes what
# an old checkpoint means is caught. Made with commit 9b41e9e (before the normalization unit):
#   tools/scripts/make_compat_checkpoints.sh OLD_BUILD/smallbatch tests/fixtures/compat
# Pinned to the baseline kernels, OpenBLAS's generic core and one thread, so the bits are the
# same on every x86-64 machine.
set -euo pipefail
bin=${1:?usage: make_compat_checkpoints.sh SMALLBATCH_BINARY OUT_DIR}
out=${2:?usage: make_compat_checkpoints.sh SMALLBATCH_BINARY OUT_DIR}
export SMALLBATCH_SIMD=baseline OPENBLAS_CORETYPE=Prescott
mkdir -p "$out"
for norm in gn bn brn frozenbn; do
  "$bin" train --norm "$norm" --groups 2 --base-width 4 --steps 6 --batch 4 --image-size 16 --limit 16 \
    --val-data none --threads 1 --norm-warmup 3 --save "$out/$norm.safetensors" >/dev/null
  "$bin" eval --weights "$out/$norm.safetensors" --image-size 16 --limit 2 --threads 1 \
    --save-logits "$out/$norm.logits.safetensors" >/dev/null
done
# BatchNorm evaluated with batch statistics too.
"$bin" eval --weights "$out/bn.safetensors" --image-size 16 --limit 2 --threads 1 --bn-mode batch \
  --save-logits "$out/bn.batch.logits.safetensors" >/dev/null
