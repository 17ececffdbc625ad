#!/usr/bin/env bash
# bench/all.sh - every benchmark figure of the project in one command:
#
#   1. bench/run.sh        proxy throughput, latency, memory and instructions
#                          against nginx, haproxy and Portkey, with a flag and
#                          with the decision log off (issues 2, 3.8, 5.7)
#   2. bench/outage.sh     the primary hangs, the fallback is healthy:
#                          modelgate against Portkey's fallback (issue 4.9)
#   3. mg-flagbench        one flag evaluation, 5 rules and 3 variants
#                          (issue 3.8: under 1 µs)
#   4. bench/reportbench.sh  `modelgate report` over 1,000,000 lines
#                          (issue 5.7: at most 2 s)
#
# Each part is also runnable alone, with the same variables (see
# bench/README.md); ALL_PARTS selects parts ("run outage flag report").
# BENCH_QUIET_WAIT applies to every part: each waits for a quiet machine
# first. Output: a summary of every figure against its target, then each
# part's own report, on stdout and in bench/out/all.md. Exit 0 when every
# part ran (targets may FAIL: they are printed, never hidden); 1 when one
# could not run; with BENCH_STRICT=1 also 1 when a target FAILs.
set -euo pipefail

ALL_PARTS=${ALL_PARTS:-"run outage flag report"}
BENCH_BUILD_DIR=${BENCH_BUILD_DIR:-build}
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
BENCH_STRICT=${BENCH_STRICT:-0}
FLAG_RUNS=${FLAG_RUNS:-5}               # mg-flagbench runs (median)
FLAG_EVALS=${FLAG_EVALS:-20000000}      # evaluations per run
export BENCH_BUILD_DIR BENCH_QUIET_WAIT
export REPORT_BUILD_DIR=${REPORT_BUILD_DIR:-$BENCH_BUILD_DIR}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
COMMAND="$({ env | grep -E '^(BENCH|OUTAGE|REPORT|FLAG|ALL)_' || true; } | sort | tr '\n' ' ')bash bench/all.sh${*:+ $*}"
START_TS=$(date +%s)
BENCH_TAG=all
# shellcheck source=bench/lib.sh
. bench/lib.sh

for part in $ALL_PARTS; do
  case $part in run | outage | flag | report) ;; *) die "unknown part '$part' in ALL_PARTS" ;; esac
done
for v in FLAG_RUNS FLAG_EVALS BENCH_QUIET_WAIT; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 0 ] || die "$v must be a whole number, not '${!v}'"
done
has() { [[ " $ALL_PARTS " == *" $1 "* ]]; }

mkdir -p bench/out
OUTDIR=bench/out/all
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"

if has run; then
  log "part 1: bench/run.sh"
  bash bench/run.sh >"$OUTDIR/run.md" || die "bench/run.sh failed"
  cp bench/out/latest.figures.tsv "$OUTDIR/run.figures.tsv"
fi
if has outage; then
  log "part 2: bench/outage.sh"
  bash bench/outage.sh >"$OUTDIR/outage.md" || die "bench/outage.sh failed"
  cp bench/out/outage.figures.tsv "$OUTDIR/outage.figures.tsv"
fi
if has flag; then
  log "part 3: mg-flagbench, $FLAG_RUNS runs of $FLAG_EVALS evaluations"
  build_modelgate "$BENCH_BUILD_DIR" modelgate mg-flagbench
  quiet_wait
  : >"$OUTDIR/flag.txt"
  for _ in $(seq "$FLAG_RUNS"); do
    timeout 300 "$ROOT/$BENCH_BUILD_DIR/mg-flagbench" "$FLAG_EVALS" | tee -a "$OUTDIR/flag.txt" >&2 ||
      die "mg-flagbench failed"
  done
  FLAG_NS=$(sed -n 's/^flag evaluation: \([0-9.]*\) ns.*/\1/p' "$OUTDIR/flag.txt" | median_max | cut -d' ' -f1)
  FLAG_ALL=$(sed -n 's/^flag evaluation: \([0-9.]*\) ns.*/\1/p' "$OUTDIR/flag.txt" | paste -sd' ' | sed 's/ /, /g')
  FLAG_IDLE=$IDLE_BUSY
fi
if has report; then
  log "part 4: bench/reportbench.sh"
  quiet_wait
  REPORT_IDLE=$IDLE_BUSY
  bash bench/reportbench.sh >"$OUTDIR/report.txt" || die "bench/reportbench.sh failed"
  # "text  1000000 lines: 1.234 s wall (median of 5), 1.200 s cpu: ok"
  REPORT_LINE=$(grep '^text ' "$OUTDIR/report.txt" || true)
  [ -n "$REPORT_LINE" ] || die "no text line in bench/reportbench.sh's output"
  REPORT_WALL=$(sed -n 's/^text *\([0-9]*\) lines: \([0-9.]*\) s wall.*/\2/p' <<<"$REPORT_LINE")
  REPORT_LINES=$(sed -n 's/^text *\([0-9]*\) lines:.*/\1/p' <<<"$REPORT_LINE")
  REPORT_CPU=$(sed -n 's/.*), \([0-9.]*\) s cpu.*/\1/p' <<<"$REPORT_LINE")
fi

# ---- summary -------------------------------------------------------------------
fig() { awk -F'\t' -v k="$2" '$1 == k { print $2; exit }' "$OUTDIR/$1.figures.tsv" 2>/dev/null; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
pf() { awk "BEGIN { exit !($1) }" && echo PASS || echo FAIL; }
ms() { awk -v x="$1" 'BEGIN { if (x >= 100000) printf "%.0f ms", x / 1000; else printf "%.2f ms", x / 1000 }'; }

OUT="$OUTDIR/all.md"
{
  echo "# modelgate: every benchmark figure"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- command: \`$COMMAND\`"
  echo "- machine: $(machine_desc)"
  for part in run outage; do
    has "$part" && sed -n 's/^- modelgate: \(.* built at [^,]*\),.*/- modelgate ('"$part"'.sh): \1/p' "$OUTDIR/$part.md" | head -1
  done
  has flag && echo "- mg-flagbench: built at ${MG_BUILT_FROM:-?}"
  echo "- parts: $ALL_PARTS (their own reports follow the table)"
  echo
  echo "| issue | figure | measured | target | verdict | by |"
  echo "|---|---|---|---|---|---|"
  if has run; then
    echo "| 2 | proxy throughput at 32 connections, modelgate ÷ nginx proxy_pass | $(fig run ratio32_modelgate)x ($(fig run rps32_modelgate) vs $(fig run rps32_nginx) req/s) | ≥ 1.00x | $(fig run T1) | run.sh |"
    echo "| 2 | latency added at 1 connection (p50 − direct p50) | modelgate $(fig run added1_modelgate) µs, nginx $(fig run added1_nginx) µs | ≤ nginx + 10 µs | $(fig run T2) | run.sh |"
    echo "| 2 | RSS with $(fig run idle_conns) idle keep-alive connections | $(fig run rss_idle_mib) MiB | ≤ 32 MiB (at 1,000) | $(fig run T3) | run.sh |"
    [ -n "$(fig run ipr_modelgate)" ] &&
      echo "| 2 | user-space instructions per request (callgrind) | modelgate $(fig run ipr_modelgate), nginx $(fig run ipr_nginx): $(calc "$(fig run ipr_modelgate) / $(fig run ipr_nginx)")x | – (explains the throughput) | – | run.sh |"
  fi
  if has run && [ -n "$(fig run G1)" ]; then
    echo "| 17 | throughput at 32 connections, full gating (flag, log on, 1 worker, native engine) ÷ nginx | $(fig run ratio32_flag)x ($(fig run rps32_flag) vs $(fig run rps32_nginx) req/s); libcurl engine $(fig run ratio32_curl)x | ≥ 1.00x | $(fig run G1) | run.sh |"
    echo "| 17 | latency added at 1 connection, full gating | $(fig run added1_flag) µs (libcurl engine $(fig run added1_curl) µs), nginx $(fig run added1_nginx) µs | ≤ nginx + 10 µs | $(fig run G2) | run.sh |"
    [ -n "$(fig run ipr_flag)" ] &&
      echo "| 17 | user-space instructions per request, full gating | $(fig run ipr_flag) (libcurl engine $(fig run ipr_curl)), nginx $(fig run ipr_nginx): $(calc "$(fig run ipr_flag) / $(fig run ipr_nginx)")x | ≤ 2.00x | $(fig run G3) | run.sh |"
    echo "| 17 | RSS with $(fig run idle_conns) idle connections, full gating | $(fig run rss_idle_mib) MiB | ≤ 32 MiB | $(fig run G4) | run.sh |"
    [ -n "$(fig run ratio32_w2)" ] &&
      echo "| 17 | 2 workers each, 32 connections, full gating ÷ nginx | $(fig run ratio32_w2)x ($(fig run rps32_flag_w2) vs $(fig run rps32_nginx_w2) req/s) | – (reported) | – | run.sh |"
  fi
  if has run && [ -n "$(fig run W32)" ]; then
    for c in 32 256; do
      [ -n "$(fig run "W$c")" ] || continue
      echo "| 12 | 2 workers vs 1 at $c connections, full gating: CPU per request 2 ÷ 1; modelgate ÷ nginx with 1 and with 2 workers each | $(fig run "cpu_ratio_w2_$c")x; $(fig run "ratio_w1_$c")x, $(fig run "ratio_w2_$c")x | CPU ≤ 1.05x; ratio with 2 ≥ ratio with 1 | $(fig run "W$c") | run.sh |"
    done
  fi
  if has run && [ -n "$(fig run R)" ]; then
    echo "| 13 | req/s with Redis configured ÷ the same config without, 32 connections | $(fig run ratio_redis)x | ≥ 0.95x | $(fig run R) | run.sh |"
  fi
  for p in modelgate-resp modelgate-msg; do
    has run && [ -n "$(fig run "A_$p")" ] || continue
    echo "| 14 | $([ $p = modelgate-resp ] && echo "POST /v1/responses" || echo "POST /v1/messages") req/s ÷ chat completions, 32 connections (instructions/req) | $(fig run "ratio_api_$p")x ($(fig run "ipr_$p") vs $(fig run ipr_modelgate)) | ≥ 0.90x | $(fig run "A_$p") | run.sh |"
  done
  if has flag; then
    echo "| 3.8 | one flag evaluation (5 rules, 3 variants) | $FLAG_NS ns (median of $FLAG_RUNS runs: $FLAG_ALL) | < 1,000 ns | $(pf "$FLAG_NS < 1000") | mg-flagbench |"
  fi
  if has run && [ -n "$(fig run T4)" ]; then
    echo "| 3.8 | proxy throughput at 32 connections with a flag on the path, ÷ nginx | $(fig run ratio32_flag)x ($(fig run rps32_flag) req/s; $(fig run flag_cost)x plain modelgate) | ≥ 1.00x | $(fig run T4) | run.sh |"
  fi
  if has outage; then
    echo "| 4.9 | outage, primary hangs: p50 / p99 / errors, modelgate | $(ms "$(fig outage p50_modelgate)") / $(ms "$(fig outage p99_modelgate)") / $(fig outage errors_modelgate) errors | no figure set; side by side with Portkey | errors: $(fig outage check_errors_modelgate) | outage.sh |"
    [ -n "$(fig outage p50_portkey)" ] &&
      echo "| 4.9 | outage, same for Portkey's gateway (fallback strategy) | $(ms "$(fig outage p50_portkey)") / $(ms "$(fig outage p99_portkey)") / $(fig outage errors_portkey) errors; p50 $(fig outage ratio_p50)x, p99 $(fig outage ratio_p99)x modelgate's | – | errors: $(fig outage check_errors_portkey) | outage.sh |"
    [ -n "$(fig outage check_rest_p99)" ] &&
      echo "| 4.8 | outage, breaker open: modelgate p99 − the fallback's own p99 | $(ms "$(calc "$(fig outage rest_p99_modelgate) - $(fig outage p99_direct)" 0)") | < 5 ms | $(fig outage check_rest_p99) | outage.sh |"
  fi
  if has report; then
    echo "| 5.7 | \`modelgate report\` over $REPORT_LINES lines (text) | $REPORT_WALL s wall, $REPORT_CPU s CPU | ≤ 2 s | $(pf "$REPORT_WALL <= 2.0") | reportbench.sh |"
  fi
  if has run && [ -n "$(fig run T5)" ]; then
    echo "| 5.7 | proxy throughput at 32 connections with the decision log on, ÷ nginx | $(fig run ratio32_modelgate)x$([ -n "$(fig run log_cost)" ] && echo "; with the log off: $(fig run ratio32_nolog)x; log on ÷ log off: $(fig run log_cost)x req/s") | ≥ 1.00x | $(fig run T5) | run.sh |"
  fi
  echo
  if has flag; then
    echo "mg-flagbench ran with other processes using ${FLAG_IDLE}% of a core just before; reportbench.sh with ${REPORT_IDLE:-?}%."
    echo
  fi
  echo "Finished in $(($(date +%s) - START_TS)) s."
  for part in run outage; do
    has "$part" || continue
    echo
    echo "---"
    echo
    sed 's/^#/##/' "$OUTDIR/$part.md"
  done
  if has flag; then
    echo
    echo "---"
    echo
    echo "## mg-flagbench ($FLAG_RUNS runs)"
    echo
    echo '```'
    cat "$OUTDIR/flag.txt"
    echo '```'
  fi
  if has report; then
    echo
    echo "---"
    echo
    echo "## bench/reportbench.sh"
    echo
    echo '```'
    cat "$OUTDIR/report.txt"
    echo '```'
  fi
} >"$OUT"

cp "$OUT" bench/out/all.md
cat "$OUT"
log "report written to bench/out/all.md"
if [ "$BENCH_STRICT" = 1 ] && grep -q '| FAIL |' "$OUT"; then exit 1; fi
exit 0
