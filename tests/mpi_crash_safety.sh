#!/usr/bin/env bash
# Crash safety of a data-parallel run: `mpirun -np 2 smallbatch train --out DIR` has one of its
# ranks killed with SIGKILL at a random moment. The whole job must end (mpirun exits non-zero, no
# rank left waiting for the dead one) within seconds, every checkpoint in DIR must load, and
# `--resume` under mpirun must finish with files byte-identical to an uninterrupted mpirun run.
#
# Usage: tests/mpi_crash_safety.sh path/to/smallbatch [kills, default 4]
# Skips (status 0, saying so) when mpirun is not installed. SB_CRASH_SEED=N repeats the moments.
set -euo pipefail
set -m

sb=$1
kills_wanted=${2:-4}
if ! command -v mpirun >/dev/null; then
  echo "mpi_crash_safety: skipped: mpirun is not on PATH (apt-get install openmpi-bin)"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/sb_mpi_crash.XXXXXX")
trap 'rm -rf "$work"' EXIT
seed=${SB_CRASH_SEED:-$(( $$ ^ $(date +%s) ))}
RANDOM=$seed
echo "mpi_crash_safety: seed $seed (SB_CRASH_SEED=$seed repeats the kill moments)"
fail() {
  echo "mpi_crash_safety: FAIL: $*" >&2
  exit 1
}
now_ms() { date +%s%3N; }
# wait_bounded PID SECONDS LOG: waits for the background job PID (its exit status in `status`).
# A job still running after SECONDS fails the test naming every process of its group and their
# state, then is killed: a hang is a failure with its evidence, not a test timeout without it.
wait_bounded() {
  local pid=$1 limit=$2 log=$3 i state
  for ((i = 0; i < limit * 10; i++)); do
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    [[ -z $state || $state == Z* ]] && break
    sleep 0.1
  done
  state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
  if [[ -n $state && $state != Z* ]]; then
    local procs
    procs=$(ps -o pid,ppid,pgid,stat,etime,wchan:24,args -p "$( (pgrep -g "$pid"; pgrep -P "$pid") | sort -u | paste -sd, -)" 2>/dev/null || true)
    kill -KILL -- "-$pid" 2>/dev/null || true
    fail "the job did not end within $limit s; its processes:
$procs
its output: $(cat "$log")"
  fi
  status=0
  wait "$pid" || status=$?
}
random_delay() { local ms=$(( (RANDOM * 32768 + RANDOM) % ($1 + 1) )); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }

# No single-copy shared memory (CMA): containers often forbid the ptrace access it needs.
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none)
# The sanitizer build, no leak check in the ranks: see mpirun_command in tests/test_mpi.cpp.
if [ -n "${ASAN_OPTIONS:-}" ]; then
  mpi+=(--mca mca_base_component_disable_dlclose 1 -x "ASAN_OPTIONS=$ASAN_OPTIONS:fast_unwind_on_malloc=0:detect_leaks=0")
fi
mpi+=(-np 2)
train=(train --data "shapes:train=24,val=6,size=16" --base-width 4 --norm syncbn --batch 2 --epochs 4 --lr 0.05
       --seed 5 --threads 1 --workers 1)
files=(model.safetensors best.safetensors state.safetensors metrics.csv config.json)

t0=$(now_ms)
"${mpi[@]}" "$sb" "${train[@]}" --out "$work/ref" >"$work/ref.log" 2>&1 || fail "the reference run failed: $(cat "$work/ref.log")"
ref_ms=$(( $(now_ms) - t0 ))
echo "mpi_crash_safety: uninterrupted 2-rank run: $ref_ms ms"

kills=0 rounds=0
while [ "$kills" -lt "$kills_wanted" ]; do
  rounds=$((rounds + 1))
  dir="$work/run$rounds"
  while :; do
    "${mpi[@]}" "$sb" "${train[@]}" --out "$dir" --resume >"$work/run.log" 2>&1 &
    launcher=$!
    sleep "$(random_delay "$ref_ms")"
    # A rank: a child of mpirun running smallbatch (either one; the pick alternates).
    ranks=($(pgrep -P "$launcher" -f "$sb" || true))
    if [ ${#ranks[@]} -eq 0 ]; then
      wait_bounded "$launcher" 120 "$work/run.log"
      [ "$status" -eq 0 ] || fail "the run failed without a kill: $(cat "$work/run.log")"
      break  # finished before the kill
    fi
    victim=${ranks[$((kills % ${#ranks[@]}))]}
    kill -KILL "$victim" 2>/dev/null || true
    t_kill=$(now_ms)
    wait_bounded "$launcher" 60 "$work/run.log"
    ended_ms=$(( $(now_ms) - t_kill ))
    if [ "$status" -eq 0 ]; then break; fi  # the rank had already finished
    [ "$ended_ms" -lt 20000 ] || fail "the job took $ended_ms ms to end after a rank was killed"
    pgrep -f "$dir" >/dev/null && fail "a rank of the killed job is still running: $(pgrep -af "$dir")"
    kills=$((kills + 1))
    for f in model.safetensors best.safetensors state.safetensors; do
      [ -e "$dir/$f" ] || continue
      "$sb" eval --weights "$dir/$f" --data "shapes:train=24,val=6,size=16" --threads 1 --json >"$work/eval.out" 2>&1 ||
        fail "$dir/$f does not load after a kill: $(cat "$work/eval.out")"
    done
  done
  for f in "${files[@]}"; do cmp "$work/ref/$f" "$dir/$f" || fail "$dir/$f differs from the uninterrupted run's"; done
done
echo "mpi_crash_safety: ok: $kills ranks killed over $rounds runs; each job ended within seconds, every checkpoint" \
  "loaded, and each resumed run ended byte-identical to the uninterrupted one"
