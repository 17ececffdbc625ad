#!/usr/bin/env bash
# bench/outage.sh - an outage, through modelgate and through Portkey's
# gateway, side by side in one run (issue 4, point 9).
#
# The primary upstream accepts connections and never answers (mg-mock with
# the behaviour "hang"); the fallback is healthy (the canned nginx of
# bench/run.sh). Both gateways give the primary the same timeout
# (OUTAGE_TIMEOUT_MS) and fall back to the healthy upstream: modelgate with
# `timeouts.first_byte_ms`, `fallbacks: ["backup"]` and its default circuit
# breaker; Portkey with an `x-portkey-config` in `strategy.mode: "fallback"`
# whose first target has `request_timeout`. Each run starts each gateway
# afresh (a closed breaker: the outage begins with the measurement), warms it
# up on the healthy upstream alone, then loads it with bench/outload.c
# (OUTAGE_CONNS connections for OUTAGE_SECONDS, a client timeout far above
# the primary's); the fallback upstream is also measured directly, so that
# each gateway reads as "fallback latency + X". Medians of OUTAGE_RUNS runs.
#
# Output: a Markdown report on stdout and in bench/out/outage.md; progress on
# stderr. Exit 0 when the benchmark ran; 1 when it could not (a peer did not
# start, or a check before measuring failed: the primary answered, or a
# gateway did not fall back to the canned answer); with BENCH_STRICT=1 also
# 1 when a check of the results FAILs.
set -euo pipefail

# ---- settings (environment) -------------------------------------------------
OUTAGE_TIMEOUT_MS=${OUTAGE_TIMEOUT_MS:-1000}        # the primary's timeout, both gateways
OUTAGE_CONNS=${OUTAGE_CONNS:-8}                     # client connections
OUTAGE_SECONDS=${OUTAGE_SECONDS:-20}                # load per measurement
OUTAGE_WARMUP=${OUTAGE_WARMUP:-2}                   # seconds on the healthy upstream first
OUTAGE_RUNS=${OUTAGE_RUNS:-3}                       # measurements per row (median)
OUTAGE_PHASE_N=${OUTAGE_PHASE_N:-100}               # "first requests" of the phase view
OUTAGE_CLIENT_TIMEOUT_MS=${OUTAGE_CLIENT_TIMEOUT_MS:-30000} # a request slower than this is an error
OUTAGE_MAX_REQUESTS=${OUTAGE_MAX_REQUESTS:-4000000} # bound on requests per measurement (16 bytes each)
OUTAGE_PEERS=${OUTAGE_PEERS:-"direct modelgate portkey"}
BENCH_BUILD_DIR=${BENCH_BUILD_DIR:-build}
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-0}             # wait up to N s for an idle machine
BENCH_KEEP_TMP=${BENCH_KEEP_TMP:-0}
BENCH_STRICT=${BENCH_STRICT:-0}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
COMMAND="$({ env | grep -E '^(BENCH|OUTAGE)_' || true; } | sort | tr '\n' ' ')bash bench/outage.sh${*:+ $*}"
START_TS=$(date +%s)
BENCH_TAG=outage
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in OUTAGE_TIMEOUT_MS OUTAGE_CONNS OUTAGE_SECONDS OUTAGE_WARMUP OUTAGE_RUNS OUTAGE_PHASE_N \
  OUTAGE_CLIENT_TIMEOUT_MS OUTAGE_MAX_REQUESTS BENCH_QUIET_WAIT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
[ "$OUTAGE_RUNS" -ge 1 ] || die "OUTAGE_RUNS must be >= 1"
[ "$OUTAGE_SECONDS" -ge 1 ] || die "OUTAGE_SECONDS must be >= 1"
[ "$OUTAGE_CONNS" -ge 1 ] || die "OUTAGE_CONNS must be >= 1"
[ "$OUTAGE_TIMEOUT_MS" -ge 1 ] || die "OUTAGE_TIMEOUT_MS must be >= 1"
[ "$OUTAGE_CLIENT_TIMEOUT_MS" -ge $((3 * OUTAGE_TIMEOUT_MS)) ] ||
  die "OUTAGE_CLIENT_TIMEOUT_MS must be at least 3x OUTAGE_TIMEOUT_MS (slow answers must count as latency, not errors)"
for p in $OUTAGE_PEERS; do
  case $p in direct | modelgate | portkey) ;; *) die "unknown peer '$p' in OUTAGE_PEERS" ;; esac
done

# ---- install, build -----------------------------------------------------------
need_cmd nginx nginx-light
need_cmd curl curl
need_cmd gcc gcc libc6-dev
if [[ " $OUTAGE_PEERS " == *" portkey "* ]]; then
  need_cmd node nodejs
  need_cmd npm npm
fi
install_missing
export PATH="$PATH:/usr/sbin:/sbin"
[[ " $OUTAGE_PEERS " == *" portkey "* ]] && install_portkey
build_modelgate "$BENCH_BUILD_DIR" modelgate mg-mock
MOCK="$ROOT/$BENCH_BUILD_DIR/mg-mock"

bench_tmp_init modelgate-outage
log "temp dir $T"
gcc -O2 -Wall -o "$T/outload" bench/outload.c || die "cannot compile bench/outload.c"

# ---- the fallback (healthy) and the primary (hangs) ---------------------------
start_canned_upstream
rm -f "$T/mock.port"
"$MOCK" --listen 127.0.0.1:0 --port-file "$T/mock.port" --quiet >"$T/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
for _ in $(seq 100); do [ -s "$T/mock.port" ] && break; sleep 0.1; done
MOCK_PORT=$(sed -n 's/^listen=//p' "$T/mock.port")
[ -n "$MOCK_PORT" ] || { cat "$T/mock.log" >&2; die "mg-mock wrote no port file"; }
wait_port "$MOCK_PORT" "$MOCK_PID" "mg-mock" "$T/mock.log"
mock_api() { # METHOD PATH [BODY]
  curl -s -m 5 -X "$1" ${3:+-d "$3"} "http://127.0.0.1:$MOCK_PORT$2"
}
mock_api POST /_mock/behaviour '{"model": "*", "mode": "hang"}' | grep -q '"ok":true' ||
  die "mg-mock refused the hang behaviour"
mock_stat() { mock_api GET /_mock/stats | sed -n 's/.*"'"$1"'":\([0-9]*\).*/\1/p'; }

BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark, please."}]}'
BODY_WARM='{"model":"warmup","messages":[{"role":"user","content":"Say hello to the benchmark, please."}]}'
T_S=$(awk -v t="$OUTAGE_TIMEOUT_MS" 'BEGIN { printf "%g", t / 1000 }')
# A request "waited" for the primary when it took at least 90% of the
# primary's timeout (a timer of the gateway's loop may fire a little early
# against the client's clock; nothing else takes that long here).
SLOW_MS=$((OUTAGE_TIMEOUT_MS * 9 / 10))

# The primary must really hang: nothing within 3x its timeout.
rc=0
curl -s -m "$(awk -v t="$OUTAGE_TIMEOUT_MS" 'BEGIN { printf "%g", 3 * t / 1000 }')" -o /dev/null -X POST \
  -H 'Content-Type: application/json' --data-binary "$BODY" "http://127.0.0.1:$MOCK_PORT$API" || rc=$?
[ "$rc" = 28 ] || die "the primary (mg-mock, hang) did not hang: curl exit code $rc"
code=$(curl -s -m 10 -o "$T/verify.direct" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary "$BODY" "http://127.0.0.1:$UP_PORT$API" || true)
[ "$code" = 200 ] && grep -q "$TOKEN" "$T/verify.direct" || die "the fallback upstream did not answer 200 with the canned completion"

# ---- the gateways ----------------------------------------------------------------
MG_CONFIG=$(
  cat <<EOF
{
  "server": {"listen": "127.0.0.1:0", "log_level": "warn"},
  "admin": {"listen": "127.0.0.1:0"},
  "targets": {
    "primary": {"base_url": "http://127.0.0.1:$MOCK_PORT/v1", "model": "primary-model",
                "timeouts": {"first_byte_ms": $OUTAGE_TIMEOUT_MS},
                "fallbacks": ["backup"]},
    "backup": {"base_url": "http://127.0.0.1:$UP_PORT/v1", "model": "canned-model"}
  },
  "aliases": {"gpt-4o-mini": {"target": "primary"}, "warmup": {"target": "backup"}}
}
EOF
)
PK_CONFIG='{"strategy":{"mode":"fallback"},"targets":[{"provider":"openai","api_key":"sk-bench-not-a-key","custom_host":"http://127.0.0.1:'$MOCK_PORT'/v1","request_timeout":'$OUTAGE_TIMEOUT_MS'},{"provider":"openai","api_key":"sk-bench-not-a-key","custom_host":"http://127.0.0.1:'$UP_PORT'/v1"}]}'

# start_peer PEER NAME: sets PEER_PORT, PEER_PID.
start_peer() {
  case $1 in
  direct) PEER_PORT=$UP_PORT PEER_PID=$UP_PID ;;
  modelgate)
    start_modelgate_cfg "$2" "$MG_CONFIG"
    PEER_PORT=$MG_PORT_OUT PEER_PID=$MG_PID_OUT
    ;;
  portkey)
    PEER_PORT=$(free_port)
    node "$ROOT/$PK_DIR/build/start-server.js" --port="$PEER_PORT" --headless >"$T/$2.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_port "$PEER_PORT" "$PEER_PID" "Portkey gateway" "$T/$2.log" 60
    ;;
  esac
}
# Extra request headers and the answer header to tally, per peer.
peer_args() {
  case $1 in
  direct) PEER_ARGS=() ;;
  modelgate) PEER_ARGS=(-x x-modelgate-fallback) ;;
  portkey) PEER_ARGS=(-H "x-portkey-config: $PK_CONFIG" -x x-portkey-last-used-option-index) ;;
  esac
}

# Before measuring: one request through each gateway must wait for the
# primary's timeout, then come back 200 with the canned completion, and the
# gateway must say that the fallback served it.
verify_peer() {
  local p=$1 code t want args=()
  [ "$p" = direct ] && return 0
  start_peer "$p" "verify-$p"
  [ "$p" = portkey ] && args=(-H "x-portkey-config: $PK_CONFIG")
  mock_api DELETE /_mock/stats >/dev/null
  read -r code t < <(curl -s -m 30 -D "$T/verify.$p.h" -o "$T/verify.$p" -w '%{http_code} %{time_total}\n' -X POST \
    -H 'Content-Type: application/json' "${args[@]}" --data-binary "$BODY" "http://127.0.0.1:$PEER_PORT$API" || true)
  case $p in
  modelgate) want='^x-modelgate-served-by: backup' ;;
  portkey) want='^x-portkey-last-used-option-index: config.targets\[1\]' ;;
  esac
  if [ "$code" != 200 ] || ! grep -q "$TOKEN" "$T/verify.$p" || ! grep -qi "$want" "$T/verify.$p.h" ||
    awk -v t="$t" -v s="$T_S" 'BEGIN { exit !(t < s) }' || [ "$(mock_stat requests)" != 1 ]; then
    echo "--- response from $p (HTTP $code, ${t}s; primary requests: $(mock_stat requests)):" >&2
    cat "$T/verify.$p.h" "$T/verify.$p" >&2 || true
    echo "--- log of $p:" >&2
    tail -n 30 "$T/verify-$p.log" >&2 || true
    die "a request through $p did not fall back to the canned completion after the primary's timeout"
  fi
  log "$p falls back: 200 with the canned completion after ${t}s, primary tried once"
  stop_pid "$PEER_PID" TERM 10
}
for p in $OUTAGE_PEERS; do verify_peer "$p"; done

# ---- measurements -------------------------------------------------------------------
TIMEFORMAT='%3U %3S'
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
quiet_wait

RAW="$T/raw.tsv"
: >"$RAW"
read -r -a PEERS <<<"$OUTAGE_PEERS"
NP=${#PEERS[@]}
total=$((OUTAGE_RUNS * NP))
n=0
log "outload: $OUTAGE_RUNS runs x $NP peers, ${OUTAGE_CONNS} connections, ${OUTAGE_WARMUP}s warm-up + ${OUTAGE_SECONDS}s each (~$((total * (OUTAGE_SECONDS + OUTAGE_WARMUP + 4) / 60 + 1)) min)"
kv() { awk -v k="$1" '$1 == k { print $2; exit }' "$2"; }
row() { awk -v k="$1" '$1 == k { print $2, $3, $4, $5, $6; exit }' "$2"; } # n p50 p99 max waited
for run in $(seq "$OUTAGE_RUNS"); do
  for k in $(seq 0 $((NP - 1))); do
    p=${PEERS[$(((k + run - 1) % NP))]}
    n=$((n + 1))
    name="$p.run$run"
    start_peer "$p" "$name"
    peer_args "$p"
    if [ "$OUTAGE_WARMUP" -gt 0 ] && [ "$p" != direct ]; then
      # On the healthy upstream alone: modelgate's alias "warmup" names the
      # backup target; Portkey is sent straight to it.
      if [ "$p" = modelgate ]; then
        w=(-b "$BODY_WARM")
      else
        w=(-b "$BODY" -H "x-portkey-provider: openai" -H "x-portkey-custom-host: http://127.0.0.1:$UP_PORT/v1"
          -H "Authorization: Bearer sk-bench-not-a-key")
      fi
      timeout $((OUTAGE_WARMUP + 30)) "$T/outload" -p "$PEER_PORT" -c "$OUTAGE_CONNS" -d "$OUTAGE_WARMUP" \
        -t 5000 "${w[@]}" -k "$TOKEN" >"$T/warm.$name.txt" 2>&1 || die "warm-up of $p failed"
      [ "$(kv errors "$T/warm.$name.txt")" = 0 ] || { cat "$T/warm.$name.txt" >&2; die "warm-up of $p had errors"; }
    fi
    mock_api DELETE /_mock/stats >/dev/null
    out="$T/load.$name.txt"
    ours="$UP_PID $MOCK_PID"
    [ "$PEER_PID" = "$UP_PID" ] || ours="$ours $PEER_PID"
    # shellcheck disable=SC2086
    t0=$(date +%s.%N) b0=$(busy_ticks) o0=$(proc_ticks $ours) q0=$(proc_ticks "$PEER_PID")
    { time timeout $((OUTAGE_SECONDS + OUTAGE_CLIENT_TIMEOUT_MS / 1000 + 30)) "$T/outload" -p "$PEER_PORT" \
      -c "$OUTAGE_CONNS" -d "$OUTAGE_SECONDS" -n "$OUTAGE_MAX_REQUESTS" -t "$OUTAGE_CLIENT_TIMEOUT_MS" \
      -b "$BODY" "${PEER_ARGS[@]}" -k "$TOKEN" -N "$OUTAGE_PHASE_N" -s "$SLOW_MS" \
      -l "$T/requests.$name.tsv" >"$out" 2>&1; } 2>"$T/load.time" ||
      { cat "$out" >&2; die "outload against $p failed"; }
    # shellcheck disable=SC2086
    t1=$(date +%s.%N) b1=$(busy_ticks) o1=$(proc_ticks $ours) q1=$(proc_ticks "$PEER_PID")
    kill -0 "$PEER_PID" 2>/dev/null || die "$p died during the measurement"
    attempts=$(mock_stat requests)
    hung=$(($(mock_stat connections_active) - 1)) # minus the stats request's own
    opened=""
    if [ "$p" = modelgate ]; then
      opened=$(curl -s -m 5 "http://127.0.0.1:$PEER_PORT/metrics" 2>/dev/null |
        awk '/^modelgate_breaker_transitions_total/ && /target="primary"/ && /state="open"/ { print $NF + 0 }')
    fi
    [ "$p" = direct ] || stop_pid "$PEER_PID" TERM 10
    other=$(awk -v b="$((b1 - b0))" -v o="$((o1 - o0))" -v hz="$HZ" -v t0="$t0" -v t1="$t1" \
      -v w="$(cat "$T/load.time")" 'BEGIN { split(w, x, " "); v = ((b - o) / hz - x[1] - x[2]) / (t1 - t0) * 100; printf "%.0f", v < 0 ? 0 : v }')
    reqs=$(kv requests "$out")
    cpu=$(awk -v t="$((q1 - q0))" -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
    tally=$(awk '$1 == "tally" { printf "%s%s=%s", (n++ ? "," : ""), $2, $3 }' "$out")
    read -r _ p50 p99 max waited <<<"$(row all "$out")"
    read -r fn fp50 _ fmax fwaited <<<"$(row first "$out")"
    read -r rn rp50 rp99 rmax rwaited <<<"$(row rest "$out")"
    # run peer requests rps p50 p99 max errors backup other waited | first: n p50 max waited |
    # rest: n p50 p99 max waited | primary attempts, primary connections left open, breaker opened,
    # peer CPU us/req, other CPU %, tally
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
      "$run" "$p" "$reqs" "$(kv rps "$out")" "$p50" "$p99" "$max" "$(kv errors "$out")" \
      "$(kv served_backup "$out")" "$(kv served_other "$out")" "$waited" \
      "$fn" "$fp50" "$fmax" "$fwaited" "$rn" "$rp50" "$rp99" "$rmax" "$rwaited" \
      "${attempts:-?}" "$hung" "${opened:--}" "$cpu" "$other" "${tally:--}" >>"$RAW"
    log "[$n/$total] run $run $p: $reqs requests, $(kv rps "$out") req/s, p50 ${p50} us, p99 ${p99} us, max ${max} us, errors $(kv errors "$out"), fallback served $(kv served_backup "$out"), waited $waited, primary attempts ${attempts:-?}, other CPU ${other}%"
  done
done

# ---- report ------------------------------------------------------------------------
# Median per peer of a column of RAW (1-based).
med() { # PEER COLUMN
  awk -F'\t' -v p="$1" -v c="$2" '$2 == p { print $c }' "$RAW" | median_max | cut -d' ' -f1
}
ms() { awk -v x="$1" 'BEGIN { if (x == "") print "n/a"; else if (x >= 100000) printf "%.0f", x / 1000; else if (x >= 10000) printf "%.1f", x / 1000; else printf "%.2f", x / 1000 }'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
pf() { awk "BEGIN { exit !($1) }" && echo PASS || echo FAIL; }
label() { case $1 in direct) echo "fallback upstream directly" ;; modelgate) echo "modelgate" ;; portkey) echo "Portkey gateway" ;; esac; }
has() { [[ " $OUTAGE_PEERS " == *" $1 "* ]]; }
per_run() { # PEER COLUMN [us->ms]
  awk -F'\t' -v p="$1" -v c="$2" -v m="${3:-}" '$2 == p { printf "%s%s", (n++ ? ", " : ""), (m ? sprintf("%.2f", $c / 1000) : $c) }' "$RAW"
}

OUT="$T/report.md"
{
  echo "# modelgate outage benchmark: the primary hangs, the fallback is healthy"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- command: \`$COMMAND\`"
  echo "- machine: $(machine_desc)"
  echo "- modelgate: $(modelgate_desc)"
  has portkey && echo "- peer: @portkey-ai/gateway $PORTKEY_VERSION on node $(node --version)"
  echo "- primary upstream: mg-mock (the project's mock) with behaviour \`hang\` for every model: it accepts the connection, reads the request and never answers"
  echo "- fallback upstream: $(nginx -v 2>&1 | sed 's/^nginx version: //') answering a canned chat completion (\`return 200\`, 1 worker)"
  echo "- load: bench/outload.c, ${OUTAGE_CONNS} keep-alive connections, one request in flight on each, ${OUTAGE_SECONDS} s per measurement (requests still in flight at the end are waited for and counted), client timeout ${OUTAGE_CLIENT_TIMEOUT_MS} ms (a slower request would count as an error), at most $OUTAGE_MAX_REQUESTS requests; each gateway started afresh for each measurement and warmed up for ${OUTAGE_WARMUP} s on the fallback upstream alone; median of $OUTAGE_RUNS runs per row, the order rotated between runs"
  echo
  echo "## Setup, identical for both gateways"
  echo
  echo "The primary's timeout is ${OUTAGE_TIMEOUT_MS} ms in both; both fall back to the same healthy upstream; the client sends the same request to both."
  echo
  echo "- modelgate: target \`primary\` with \`timeouts.first_byte_ms: $OUTAGE_TIMEOUT_MS\` and \`fallbacks: [\"backup\"]\`; its circuit breaker at the defaults: open after 5 consecutive failures, or an error rate of 0.5 over a 10,000 ms window with at least 20 requests; half-open after a 5,000 ms cooldown, letting 1 probe through. Other settings: \`log_level\` warn, admin API on an ephemeral port, decision log on (the default; in a temp dir). Config:"
  echo
  echo '```json'
  sed "s/$MOCK_PORT/MOCK_PORT/; s/$UP_PORT/FALLBACK_PORT/" <<<"$MG_CONFIG"
  echo '```'
  echo
  if has portkey; then
    echo "- Portkey: no config file; every request carries \`x-portkey-config\`, a fallback strategy (it falls back on any non-2xx answer; a \`request_timeout\` expiry is a 408), no retries, no cache (its open-source gateway has no circuit breaker: every request tries the primary first):"
    echo
    echo '```json'
    sed "s/$MOCK_PORT/MOCK_PORT/; s/$UP_PORT/FALLBACK_PORT/" <<<"$PK_CONFIG"
    echo '```'
    echo
  fi
  echo "Before measuring, one request through each gateway was checked: it waited for the primary's timeout, then came back 200 with this run's canned completion (random id), the gateway said the fallback served it (\`x-modelgate-served-by: backup\`, \`x-portkey-last-used-option-index: config.targets[1]\`), and the primary had received it."
  echo
  echo "## Results"
  echo
  echo "Medians of the runs. Latencies in ms. \"waited\": requests that took at least 90% of the primary's timeout (${SLOW_MS} ms), i.e. that paid for it. \"served by\": whose answer the client got (the fallback's canned body carries this run's random id). \"primary attempts\": requests the primary received (mg-mock's count)."
  echo
  echo "| | requests | req/s | p50 | p99 | max | errors | served by fallback | served by primary | waited | primary attempts | CPU µs/req |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for p in $OUTAGE_PEERS; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$p")" \
      "$(med "$p" 3)" "$(calc "$(med "$p" 4)" 1)" "$(ms "$(med "$p" 5)")" "$(ms "$(med "$p" 6)")" "$(ms "$(med "$p" 7)")" \
      "$(med "$p" 8)" "$(med "$p" 9)" "$(med "$p" 10)" "$(med "$p" 11)" \
      "$([ "$p" = direct ] && echo – || med "$p" 21)" "$(med "$p" 24)"
  done
  echo
  echo "Errors: non-2xx answers, socket errors and client timeouts; summed over the runs: $(for p in $OUTAGE_PEERS; do printf '%s %s; ' "$p" "$(awk -F'\t' -v p="$p" '$2 == p { s += $8 } END { print s + 0 }' "$RAW")"; done | sed 's/; $//')."
  echo "CPU µs/req: user + system CPU of the gateway's processes (the upstream's for the direct row) per request, from /proc."
  echo
  if has modelgate && has direct; then
    echo "### Ratios and the fallback's own latency"
    echo
    d50=$(med direct 5) d99=$(med direct 6)
    m50=$(med modelgate 5) m99=$(med modelgate 6)
    echo "- modelgate = fallback latency + $(ms "$(calc "$m50 - $d50" 0)") ms at p50, + $(ms "$(calc "$m99 - $d99" 0)") ms at p99 (fallback directly: p50 $(ms "$d50"), p99 $(ms "$d99") ms)"
    if has portkey; then
      k50=$(med portkey 5) k99=$(med portkey 6)
      echo "- Portkey = fallback latency + $(ms "$(calc "$k50 - $d50" 0)") ms at p50, + $(ms "$(calc "$k99 - $d99" 0)") ms at p99"
      echo "- Portkey p50 ÷ modelgate p50 = **$(calc "$k50 / $m50" 0)x**; Portkey p99 ÷ modelgate p99 = **$(calc "$k99 / $m99" 0)x**; Portkey max ÷ modelgate max = $(calc "$(med portkey 7) / $(med modelgate 7)")x"
      echo "- modelgate req/s ÷ Portkey req/s = **$(calc "$(med modelgate 4) / $(med portkey 4)" 0)x** (closed loop: ${OUTAGE_CONNS} connections each wait for their answer, so throughput follows latency)"
      echo "- requests that paid the primary's timeout: modelgate $(med modelgate 11) of $(med modelgate 3), Portkey $(med portkey 11) of $(med portkey 3) (per run: modelgate $(per_run modelgate 11), Portkey $(per_run portkey 11))"
    fi
    echo
  fi
  echo "### Phases: the first $OUTAGE_PHASE_N requests (by send time) and the rest"
  echo
  echo "| | first: requests | waited | p50 | max | rest: requests | waited | p50 | p99 | max |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for p in $OUTAGE_PEERS; do
    if [ "$(med "$p" 16)" = 0 ]; then
      rest="0 | – | – | – | –"
    else
      rest="$(med "$p" 16) | $(med "$p" 20) | $(ms "$(med "$p" 17)") | $(ms "$(med "$p" 18)") | $(ms "$(med "$p" 19)")"
    fi
    printf '| %s | %s | %s | %s | %s | %s |\n' "$(label "$p")" \
      "$(med "$p" 12)" "$(med "$p" 15)" "$(ms "$(med "$p" 13)")" "$(ms "$(med "$p" 14)")" "$rest"
  done
  echo
  if has modelgate; then
    echo "modelgate's \`x-modelgate-fallback\` per run: $(awk -F'\t' '$2 == "modelgate" { printf "%s%s", (n++ ? "; " : ""), $26 }' "$RAW"). Its breaker opened $(per_run modelgate 23) times per run (\`modelgate_breaker_transitions_total{state=\"open\"}\`): once at the start, then again after each failed half-open probe (one probe every ~$((5000 + OUTAGE_TIMEOUT_MS)) ms: the cooldown plus the probe's own timeout). The first requests in flight when the outage began (one per connection) all paid the timeout: the breaker opens after the 5th failure, but requests already sent to the primary are not called back."
    echo
  fi
  if has portkey; then
    echo "Portkey's \`x-portkey-last-used-option-index\` per run: $(awk -F'\t' '$2 == "portkey" { printf "%s%s", (n++ ? "; " : ""), $26 }' "$RAW")."
    echo
  fi
  echo "Primary connections still open when each measurement ended (mg-mock's count): $(for p in modelgate portkey; do has "$p" && printf '%s %s; ' "$p" "$(per_run "$p" 22)"; done | sed 's/; $//')."
  echo
  awk -F'\t' '{ print $25 }' "$RAW" | median_max | {
    read -r om ox
    echo "CPU used by other processes on the machine during the measurements (not the load, the upstreams or the gateway): median ${om}%, max ${ox}% of one core (just before them: ${IDLE_BUSY}%). Load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    if [ "$om" -gt 25 ]; then
      echo
      echo "**Warning: other work on the machine took ${om}% of a core (median) while this ran; the figures are distorted by it. Run again on a quiet machine (BENCH_QUIET_WAIT=600 waits for one).**"
    fi
  }
  echo
  echo "## Checks"
  echo
  FIG="$T/figures.tsv"
  : >"$FIG"
  for p in modelgate portkey; do
    has "$p" || continue
    e=$(awk -F'\t' -v p="$p" '$2 == p { s += $8 } END { print s + 0 }' "$RAW")
    o=$(awk -F'\t' -v p="$p" '$2 == p { s += $10 } END { print s + 0 }' "$RAW")
    c=$(pf "$e == 0 && $o == 0")
    echo "- $c: $(label "$p"): no client-visible error and every answer from the fallback, in all runs (errors $e, answers not from the fallback $o)"
    printf '%s\t%s\n' "errors_$p" "$e" "check_errors_$p" "$c" "p50_$p" "$(med "$p" 5)" "p99_$p" "$(med "$p" 6)" \
      "max_$p" "$(med "$p" 7)" "rps_$p" "$(med "$p" 4)" "waited_$p" "$(med "$p" 11)" "requests_$p" "$(med "$p" 3)" >>"$FIG"
  done
  if has modelgate && has direct; then
    rd=$(calc "$(med modelgate 18) - $(med direct 6)" 0)
    c=$(pf "$rd < 5000")
    echo "- $c: modelgate after its first $OUTAGE_PHASE_N requests (breaker open): p99 $(ms "$(med modelgate 18)") ms = the fallback's own p99 + $(ms "$rd") ms; bound < 5 ms (issue 4.8, there as an integration test at low load; here at ${OUTAGE_CONNS} connections of closed-loop load)"
    printf '%s\t%s\n' p50_direct "$(med direct 5)" p99_direct "$(med direct 6)" rest_p99_modelgate "$(med modelgate 18)" \
      check_rest_p99 "$c" >>"$FIG"
    if has portkey; then
      printf '%s\t%s\n' ratio_p50 "$(calc "$(med portkey 5) / $(med modelgate 5)" 0)" \
        ratio_p99 "$(calc "$(med portkey 6) / $(med modelgate 6)" 0)" >>"$FIG"
    fi
  fi
  echo
  raw_footer "raw results per measurement" "$RAW" \
    "Columns: run, peer, requests, req/s, p50 µs, p99 µs, max µs, errors, served by fallback, served by other, waited; first $OUTAGE_PHASE_N: requests, p50 µs, max µs, waited; rest: requests, p50 µs, p99 µs, max µs, waited; primary attempts, primary connections left open, breaker opened, peer CPU µs/request, other CPU % of a core, header tally."
} >"$OUT"

publish_report outage
