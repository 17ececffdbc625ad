#!/usr/bin/env bash
# bench/reportbench.sh - how long `modelgate report` takes over 1,000,000
# decision-log lines plus 300,000 feedback lines (the target: at most 2 s on
# this machine, memory bounded: the peak RSS is printed).
#
# mg-gen-decisions (bench/gen_decisions.c) writes a synthetic log of
# REPORT_LINES decision lines (three flags, heavy-tailed users, a planted
# long-input regression, events and unflagged records; about 780 bytes a
# line) and about REPORT_FEEDBACK feedback lines (half right after their
# decision, half at the end), once, into REPORT_DIR. The file is read once to warm the page cache, then the
# report runs REPORT_RUNS times per format with its output thrown away;
# wall-clock seconds of each run and their median are printed, with the CPU
# seconds (user + system) and peak resident memory of the median run and
# the load average, since a busy machine stretches wall time.
#
# Output: one line per run on stderr, a summary on stdout. Exit 0 when the
# benchmark ran; with REPORT_STRICT=1, 1 when the text median is over 2 s.
set -euo pipefail

REPORT_LINES=${REPORT_LINES:-1000000}
REPORT_FEEDBACK=${REPORT_FEEDBACK:-300000}
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
LOG="$REPORT_DIR/decisions-$REPORT_LINES-fb$REPORT_FEEDBACK.jsonl"
# Regenerate when the generator changed since the log was written.
if [ ! -s "$LOG" ] || [ "$GEN" -nt "$LOG" ]; then
  echo "generating $LOG ($REPORT_LINES lines, $REPORT_FEEDBACK feedback)" >&2
  "$GEN" --lines "$REPORT_LINES" --feedback "$REPORT_FEEDBACK" --seed 1 \
    --out "$LOG.tmp"
  mv "$LOG.tmp" "$LOG"
fi
cat "$LOG" >/dev/null
lines=$(wc -l <"$LOG")
bytes=$(stat -c %s "$LOG")

# One run: prints "wall cpu rss_mib" (seconds, MiB).
run_once() {
  local t
  t=$( { /usr/bin/time -f '%e %U %S %M' "$MG" report "$@" "$LOG" >/dev/null; } 2>&1 | tail -1)
  awk '{ printf "%.3f %.3f %.1f\n", $1, $2 + $3, $4 / 1024 }' <<<"$t"
}

# Median of REPORT_RUNS runs: prints "median_wall cpu rss" of that run.
measure() {
  local i r results=()
  for ((i = 1; i <= REPORT_RUNS; i++)); do
    r=$(run_once "$@")
    read -r w c m <<<"$r"
    echo "  run $i ($*): wall $w s, cpu $c s, peak RSS $m MiB" >&2
    results+=("$r")
  done
  printf '%s\n' "${results[@]}" | sort -n | awk -v n="$REPORT_RUNS" \
    'NR == int((n + 1) / 2) { print $1, $2, $3 }'
}

fblines=$(grep -c '"feedback"' "$LOG" || true)
echo "modelgate report over $LOG: $lines lines ($fblines feedback), $((bytes / 1048576)) MiB" \
  "(load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs)"
status=0
for fmt in text json html; do
  m=$(measure --format "$fmt")
  read -r wall cpu rss <<<"$m"
  verdict=ok
  if awk -v w="$wall" -v t="$REPORT_TARGET" 'BEGIN { exit !(w > t) }'; then
    verdict="OVER ${REPORT_TARGET} s"
    [ "$fmt" = text ] && status=1
  fi
  printf '%-5s %s lines: %s s wall (median of %s), %s s cpu, peak RSS %s MiB: %s\n' \
    "$fmt" "$lines" "$wall" "$REPORT_RUNS" "$cpu" "$rss" "$verdict"
done
if [ "$REPORT_STRICT" = 1 ]; then
  exit $status
fi
exit 0
