#!/usr/bin/env bash
# Crash safety, end to end: `smallbatch train --out DIR` and `smallbatch compare --out DIR` are
# stopped at random moments, in turn by SIGKILL, SIGINT, SIGTERM and SIGHUP. The last three must
# save and exit with status 128 + the signal's number, saying so (once training has begun; before
# that the signal's default action may still end the process). After every stop each checkpoint
# in DIR must load, and running the same command again (train: --resume) must finish with files
# byte-identical (cmp) to an uninterrupted run's: every file of a train run, and summary.csv and
# each run's checkpoints, metrics and result.json (wall-clock fields aside) of a sweep. The data is
# chosen so that the validation mIoU stays the same from epoch to epoch: a resumed run must not
# count an equal epoch as better. Also: a diverging run (--lr 1e4) stops with an error, a status
# below 128, and leaves a loadable checkpoint.
#
# Usage: tests/crash_safety.sh path/to/smallbatch [train stops, default 24] [compare stops, default 6]
# SB_CRASH_SEED=N repeats a run's kill moments (the seed is printed).
set -euo pipefail
# Job control: without it, bash starts background commands with SIGINT ignored.
set -m

sb=$1
train_kills=${2:-24}
compare_kills=${3:-6}
work=$(mktemp -d "${TMPDIR:-/tmp}/sb_crash.XXXXXX")
trap 'rm -rf "$work"' EXIT
seed=${SB_CRASH_SEED:-$(( $$ ^ $(date +%s) ))}
RANDOM=$seed
echo "crash_safety: seed $seed (SB_CRASH_SEED=$seed repeats the kill moments)"

fail() {
  echo "crash_safety: FAIL: $*" >&2
  exit 1
}
now_ms() { date +%s%3N; }
# A random delay in [0, max_ms] milliseconds, as seconds for sleep.
random_delay() { local ms=$(( (RANDOM * 32768 + RANDOM) % ($1 + 1) )); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }
signals=(KILL INT TERM HUP)
saves=0  # stops by a catchable signal that saved the state and said so
signo() { kill -l "$1"; }

# stop PID SIGNAL LOG: sends the signal at once and waits. Sets outcome to "stopped" or
# "finished"; fails on any other outcome: an error, or a catchable signal that did not save and say so.
stop() {
  local pid=$1 sig=$2 log=$3 status=0
  kill -s "$sig" "$pid" 2>/dev/null || true
  { wait "$pid"; } 2>/dev/null || status=$?  # (the braces keep bash's "Killed" notice quiet)
  if [ "$status" -eq 0 ]; then
    outcome=finished
  elif [ "$status" -eq $((128 + $(signo "$sig"))) ]; then
    if [ "$sig" != KILL ] && grep -q '^training \|^smallbatch compare' "$log" &&
       ! grep -q '^interrupted' "$log"; then
      fail "SIG$sig ended the process (status $status) without saving and saying so: $(cat "$log")"
    fi
    if grep -q '^interrupted' "$log"; then saves=$((saves + 1)); fi
    outcome=stopped
  else
    fail "exited with status $status after SIG$sig: $(cat "$log")"
  fi
}

# With 6 validation images the model predicts background everywhere for all 5 epochs: every
# epoch's mIoU is 0.17213541666666668, which 6 significant digits round down (0.172135), so an
# inexactly saved best mIoU makes a resumed run's equal epoch count as better.
data="shapes:train=24,val=6,size=16"
train=(train --data "$data" --base-width 4 --groups 2 --norm gn --batch 4 --epochs 5 --lr 0.05 --seed 5
       --threads 1 --workers 1)

# Every checkpoint that exists must load: eval rebuilds the model from it and runs it.
check_loadable() {
  local dir=$1 f
  for f in model.safetensors best.safetensors state.safetensors; do
    [ -e "$dir/$f" ] || continue
    "$sb" eval --weights "$dir/$f" --data "$data" --threads 1 --json >"$work/eval.out" 2>&1 ||
      fail "$dir/$f does not load after a kill: $(cat "$work/eval.out")"
  done
  if [ -e "$dir/metrics.csv" ]; then
    head -n 1 "$dir/metrics.csv" | grep -qx 'epoch,step,lr,train_loss,val_loss,val_pixel_acc,val_miou' ||
      fail "$dir/metrics.csv has a damaged header"
    [ -z "$(tail -c 1 "$dir/metrics.csv")" ] || fail "$dir/metrics.csv ends mid-line"
  fi
}

same_files() {  # same_files A B file...
  local a=$1 b=$2 f
  shift 2
  for f in "$@"; do
    cmp "$a/$f" "$b/$f" || fail "$b/$f differs from the uninterrupted run's"
  done
}

# ---- train ----
t0=$(now_ms)
"$sb" "${train[@]}" --out "$work/ref" >"$work/ref.log" 2>&1 || fail "the reference run failed: $(cat "$work/ref.log")"
ref_ms=$(( $(now_ms) - t0 ))
echo "crash_safety: uninterrupted train run: $ref_ms ms"
train_files=(model.safetensors best.safetensors state.safetensors metrics.csv config.json)

kills=0 rounds=0
while [ "$kills" -lt "$train_kills" ]; do
  rounds=$((rounds + 1))
  # Runs that always finish before the signal mean it is ignored (a shell that started this one
  # with SIGINT or SIGHUP ignored passes that on): fail rather than loop for ever.
  [ "$rounds" -le $((10 * train_kills + 20)) ] ||
    fail "$rounds runs and only $kills stops: is SIG${signals[$((kills % ${#signals[@]}))]} ignored? ($(grep SigIgn /proc/$$/status))"
  dir="$work/run$rounds"
  while :; do
    # Once the folder holds a run, resume it as the README does: no flag but --out and --resume
    # (and --workers, which is not part of the run); the saved configuration supplies the rest.
    if [ -e "$dir/config.json" ]; then cmd=(train --out "$dir" --resume --workers 1)
    else cmd=("${train[@]}" --out "$dir" --resume); fi
    "$sb" "${cmd[@]}" >"$work/run.log" 2>&1 &
    pid=$!
    sleep "$(random_delay "$ref_ms")"
    sig=${signals[$((kills % ${#signals[@]}))]}
    stop "$pid" "$sig" "$work/run.log"
    [ "$outcome" = stopped ] || break  # finished before the signal
    kills=$((kills + 1))
    check_loadable "$dir"
  done
  same_files "$work/ref" "$dir" "${train_files[@]}"
  leftovers=$(find "$dir" -name '*.tmp-*' | wc -l)
  [ "$leftovers" -eq 0 ] || fail "$dir keeps $leftovers temporary files: $(ls "$dir")"
done
echo "crash_safety: train: $kills stops (SIGKILL, SIGINT, SIGTERM, SIGHUP in turn; $saves saved and said so) over" \
  "$rounds runs; every checkpoint loaded after every stop, and each resumed run ended byte-identical to the uninterrupted one"

# ---- compare ----
# Two epochs, and validation data on which every epoch's mIoU is the same and rounds down at 6
# digits (as above), so that a resumed run's best_miou in result.json is put to the test.
cdata="shapes:train=16,val=6,size=16"
sweep=(compare --norms bn,gn --batch-sizes 4,2 --seeds 1 --epochs 2 --data "$cdata" --base-width 4 --threads 1)
t0=$(now_ms)
"$sb" "${sweep[@]}" --out "$work/cref" >"$work/cref.log" 2>&1 || fail "the reference sweep failed: $(cat "$work/cref.log")"
cref_ms=$(( $(now_ms) - t0 ))
echo "crash_safety: uninterrupted sweep: $cref_ms ms"
ckills=0 crounds=0 saves=0
while [ "$ckills" -lt "$compare_kills" ]; do
  crounds=$((crounds + 1))
  [ "$crounds" -le $((10 * compare_kills + 20)) ] ||
    fail "$crounds sweeps and only $ckills stops: is SIG${signals[$((ckills % ${#signals[@]}))]} ignored? ($(grep SigIgn /proc/$$/status))"
  dir="$work/cmp$crounds"
  while :; do
    "$sb" "${sweep[@]}" --out "$dir" >"$work/cmp.log" 2>&1 &
    pid=$!
    sleep "$(random_delay "$cref_ms")"
    sig=${signals[$((ckills % ${#signals[@]}))]}
    stop "$pid" "$sig" "$work/cmp.log"
    [ "$outcome" = stopped ] || break
    ckills=$((ckills + 1))
    for f in "$dir"/runs/*/model.safetensors "$dir"/runs/*/best.safetensors "$dir"/runs/*/state.safetensors; do
      [ -e "$f" ] || continue
      "$sb" eval --weights "$f" --data "$cdata" --threads 1 >"$work/eval.out" 2>&1 ||
        fail "$f does not load after SIG$sig: $(cat "$work/eval.out")"
    done
  done
  same_files "$work/cref" "$dir" summary.csv
  # (A run's state.safetensors and config.json record the path of its initial weights, which
  # lives in the sweep's folder, so those two differ between folders by design.)
  for r in "$work"/cref/runs/*/; do
    same_files "$r" "$dir/runs/$(basename "$r")" model.safetensors best.safetensors metrics.csv pred.safetensors
    # result.json holds wall-clock seconds and images/s (one key a line); everything else must match.
    for f in "$r/result.json" "$dir/runs/$(basename "$r")/result.json"; do
      grep -v '"seconds"\|"images_per_s"' "$f" >"$f.results" || fail "$f is missing"
    done
    cmp "$r/result.json.results" "$dir/runs/$(basename "$r")/result.json.results" ||
      fail "$dir/runs/$(basename "$r")/result.json differs from the uninterrupted sweep's (timing aside)"
  done
  leftovers=$(find "$dir" -name '*.tmp-*' | wc -l)
  [ "$leftovers" -eq 0 ] || fail "$dir keeps $leftovers temporary files: $(find "$dir" -name '*.tmp-*')"
done
echo "crash_safety: compare: $ckills stops ($saves saved and said so) over $crounds sweeps; each completed with the same summary.csv and" \
  "run files, and no temporary files"

# ---- a diverging run ----
div=(train --data "$data" --base-width 4 --groups 2 --norm gn --batch 4 --threads 1 --workers 1 --seed 5)
"$sb" "${div[@]}" --epochs 1 --out "$work/div" >"$work/div.log" 2>&1 || fail "the good run failed: $(cat "$work/div.log")"
cp "$work/div/model.safetensors" "$work/good.safetensors"
status=0
"$sb" "${div[@]}" --epochs 20 --lr 1e4 --momentum 0.9 --out "$work/div" --overwrite >"$work/div.log" 2>"$work/div.err" || status=$?
[ "$status" -gt 0 ] && [ "$status" -lt 128 ] || fail "a diverging run exited with status $status"
grep -q "training diverged at step" "$work/div.err" || fail "a diverging run said: $(cat "$work/div.err")"
grep -q "last good checkpoint is kept" "$work/div.err" || fail "a diverging run said: $(cat "$work/div.err")"
check_loadable "$work/div"
cmp "$work/good.safetensors" "$work/div/model.safetensors" || fail "the diverging run replaced the good checkpoint"
"$sb" eval --weights "$work/div/model.safetensors" --data "$data" --threads 1 --json >"$work/eval.out" 2>&1
grep -q '"loss":[0-9]' "$work/eval.out" || fail "the kept checkpoint does not evaluate to a finite loss: $(cat "$work/eval.out")"
echo "crash_safety: a diverging run stopped with status $status: $(head -c 200 "$work/div.err")"
echo "crash_safety: ok"
