#!/usr/bin/env bash
# bench/reportbench.sh - how long `modelgate report` takes over 1,000,000
# decision-log lines (the target: at most 2 s on this machine).
#
# mg-gen-decisions (bench/gen_decisions.c) writes a synthetic log of
# REPORT_LINES lines (three flags, heavy-tailed users, a planted long-input
# regression, events and unflagged records; about 700 bytes a line), once,
# into REPORT_DIR. The file is read once to warm the page cache, then the
# report runs REPORT_RUNS times per format with its output thrown away;
# wall-clock seconds of each run and their median are printed, with the CPU
# seconds (user + system) of the median run and the load average, since a
# busy machine stretches wall time.
#
# Output: one line per run on stderr, a summary on stdout. Exit 0 when the
# benchmark ran; with REPORT_STRICT=1, 1 when the text median is over 2 s.
set -euo pipefail

REPORT_LINES=${REPORT_LINES:-1000000}
REPORT_RUNS=${REPORT_RUNS:-5}
REPORT_BUILD_DIR=${REPORT_BUILD_DIR:-build}
REPORT_DIR=${REPORT_DIR:-${TMPDIR:-/tmp}/modelgate-reportbench}
REPORT_STRICT=${REPORT_STRICT:-0}
REPORT_TARGET=2.0

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ ! -f "$REPORT_BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$REPORT_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$REPORT_BUILD_DIR" -j"$(nproc 2>/dev/null || echo 2)" \
  --target modelgate mg-gen-decisions >/dev/null
MG="$REPORT_BUILD_DIR/modelgate"
GEN="$REPORT_BUILD_DIR/mg-gen-decisions"

mkdir -p "$REPORT_DIR"
LOG="$REPORT_DIR/decisions-$REPORT_LINES.jsonl"
# Regenerate when the generator changed since the log was written.
if [ ! -s "$LOG" ] || [ "$GEN" -nt "$LOG" ]; then
  echo "generating $LOG ($REPORT_LINES lines)" >&2
  "$GEN" --lines "$REPORT_LINES" --seed 1 --out "$LOG.tmp"
  mv "$LOG.tmp" "$LOG"
fi
cat "$LOG" >/dev/null
lines=$(wc -l <"$LOG")
bytes=$(stat -c %s "$LOG")

# One run: prints "wall cpu" in seconds.
run_once() {
  local t
  t=$( { /usr/bin/time -f '%e %U %S' "$MG" report "$@" "$LOG" >/dev/null; } 2>&1 | tail -1)
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' <<<"$t"
}

# Median of REPORT_RUNS runs: prints "median_wall cpu_of_that_run".
measure() {
  local i results=()
  for ((i = 1; i <= REPORT_RUNS; i++)); do
    r=$(run_once "$@")
    echo "  run $i ($*): wall ${r% *} s, cpu ${r#* } s" >&2
    results+=("$r")
  done
  printf '%s\n' "${results[@]}" | sort -n | awk -v n="$REPORT_RUNS" \
    'NR == int((n + 1) / 2) { print $1, $2 }'
}

echo "modelgate report over $LOG: $lines lines, $((bytes / 1048576)) MiB" \
  "(load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs)"
status=0
for fmt in text json html; do
  m=$(measure --format "$fmt")
  wall=${m% *}
  cpu=${m#* }
  verdict=ok
  if awk -v w="$wall" -v t="$REPORT_TARGET" 'BEGIN { exit !(w > t) }'; then
    verdict="OVER ${REPORT_TARGET} s"
    [ "$fmt" = text ] && status=1
  fi
  printf '%-5s %s lines: %s s wall (median of %s), %s s cpu: %s\n' \
    "$fmt" "$lines" "$wall" "$REPORT_RUNS" "$cpu" "$verdict"
done
if [ "$REPORT_STRICT" = 1 ]; then
  exit $status
fi
exit 0
