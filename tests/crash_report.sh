#!/usr/bin/env bash
# A crash says what it was: a smallbatch process that gets SIGSEGV or SIGABRT (as from a bug in it
# or a library) prints the signal, its pid and its stack to stderr, and still ends by that signal
# (exit status 128 + it), so a shell, mpirun or CI sees the same status as without the report.
# An exception nobody catches (here thrown by a worker thread of tests/crash/uncaught.cpp) is named
# before the abort. The sanitizer build leaves crashes to the sanitizers' own reports: skipped there.
#
# Usage: tests/crash_report.sh path/to/smallbatch path/to/crash_uncaught
set -euo pipefail

sb=$1
uncaught=$2
if [[ -n "${ASAN_OPTIONS:-}" ]]; then
  echo "crash_report: skipped in the sanitizer build (AddressSanitizer reports crashes itself)"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/sb_crash_report.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Starts a long training run in folder $1 (stderr to file $2, or closed when $2 is "-") and waits
# until it trains: its first epoch has started writing. Sets pid.
start_training() {
  local cmd=("$sb" train --data "shapes:train=64,val=8,size=32" --base-width 8 --batch 2 --epochs 500 --threads 1
             --out "$1")
  if [[ $2 == - ]]; then "${cmd[@]}" >/dev/null 2>&- & else "${cmd[@]}" >/dev/null 2>"$2" & fi
  pid=$!
  for _ in $(seq 1 600); do
    [[ -e "$1/config.json" ]] && break
    sleep 0.05
  done
  sleep 0.3
}

for sig in SEGV ABRT; do
  start_training "$work/$sig" "$work/$sig.err"
  kill -s "$sig" "$pid"
  status=0
  wait "$pid" || status=$?
  expected=$((128 + $(kill -l "$sig")))
  err=$(cat "$work/$sig.err")
  if [[ $status -ne $expected ]]; then
    echo "crash_report: FAIL: after SIG$sig the exit status is $status, not $expected; stderr: $err" >&2
    exit 1
  fi
  case $sig in SEGV) name="segmentation fault" ;; ABRT) name="abort" ;; esac
  if ! grep -q "^smallbatch (pid $pid): crashed on signal $(kill -l "$sig") ($name): " <<<"$err"; then
    echo "crash_report: FAIL: SIG$sig did not print its line naming the signal and pid $pid; stderr: $err" >&2
    exit 1
  fi
  # The stack: backtrace_symbols_fd's lines, the binary and its offsets.
  frames=$(grep -c "(+0x[0-9a-f]*)\|\[0x[0-9a-f]*\]" <<<"$err" || true)
  if [[ $frames -lt 3 ]]; then
    echo "crash_report: FAIL: SIG$sig printed $frames stack frames, expected the stack; stderr: $err" >&2
    exit 1
  fi
  echo "crash_report: ok: SIG$sig printed its signal, pid and $frames stack frames and ended with status $status"
done

# With stderr closed the report cannot be written; the process must still end by the signal, not hang.
start_training "$work/closed" -
kill -s SEGV "$pid"
status=0
wait "$pid" || status=$?
if [[ $status -ne 139 ]]; then
  echo "crash_report: FAIL: with stderr closed, SIGSEGV ended the process with status $status, not 139" >&2
  exit 1
fi
echo "crash_report: ok: with stderr closed, SIGSEGV still ended the process with status 139"

status=0
"$uncaught" 2>"$work/uncaught.err" || status=$?
err=$(cat "$work/uncaught.err")
if [[ $status -ne 134 ]]; then
  echo "crash_report: FAIL: an uncaught exception ended with status $status, not 134 (SIGABRT); stderr: $err" >&2
  exit 1
fi
if ! grep -q "^smallbatch (pid [0-9]*): uncaught exception: thrown by a worker thread$" <<<"$err" ||
   ! grep -q "crashed on signal 6 (abort)" <<<"$err"; then
  echo "crash_report: FAIL: an uncaught exception was not named before the abort; stderr: $err" >&2
  exit 1
fi
echo "crash_report: ok: an uncaught exception was named, then the abort and its stack, status 134"
