#!/usr/bin/env bash
# bench/run.sh - modelgate against its peers, in one run on this machine.
#
# A canned upstream (nginx, one worker, `return 200` with a fixed chat
# completion) is measured with wrk at 1 and 32 connections: directly, through
# modelgate, through nginx proxy_pass, through haproxy and through Portkey's
# open-source gateway; and, as further modelgate configurations, modelgate
# with a flag on the path (5 rules, 3 variants, requests carrying a user) and
# modelgate with its decision log off, for issues 3.8 and 5.7. Then
# modelgate's resident memory with idle keep-alive connections, and
# user-space instructions per proxied request under callgrind for modelgate
# and nginx. See bench/README.md for how to read the output.
#
# Output: a Markdown report on stdout and in bench/out/latest.md; progress on
# stderr. Exit 0 when the benchmark ran (targets may FAIL: they are printed,
# never hidden); 1 when it could not run; with BENCH_STRICT=1, also 1 when a
# target FAILs.
set -euo pipefail

# ---- settings (environment) -------------------------------------------------
BENCH_SECONDS=${BENCH_SECONDS:-10}     # wrk duration of one measurement
BENCH_WARMUP=${BENCH_WARMUP:-2}        # wrk warm-up before each measurement
BENCH_RUNS=${BENCH_RUNS:-3}            # measurements per configuration (median)
BENCH_PEERS=${BENCH_PEERS:-"direct modelgate nginx haproxy portkey modelgate-flag modelgate-curl modelgate-nolog modelgate-flag-w2 modelgate-curl-w2 nginx-w2 modelgate-resp modelgate-msg modelgate-redis"}
# Connections at which the extra configurations are measured: the full
# gating ones (modelgate-flag, modelgate-curl: issue 17's targets are defined
# on them at 1 and 32) at both; modelgate-nolog and the two-worker rows
# (modelgate-flag-w2, modelgate-curl-w2, nginx-w2) at 32 only.
BENCH_VARIANT_CONNS=${BENCH_VARIANT_CONNS:-"1 32"}
BENCH_IDLE_CONNS=${BENCH_IDLE_CONNS:-1000}
BENCH_IDLE_SECONDS=${BENCH_IDLE_SECONDS:-20}
BENCH_CG_N1=${BENCH_CG_N1:-2000}       # callgrind: requests in the short run
BENCH_CG_N2=${BENCH_CG_N2:-6000}       # callgrind: requests in the long run
BENCH_CG_CONNS=${BENCH_CG_CONNS:-4}
BENCH_CALLGRIND=${BENCH_CALLGRIND:-1}  # 0 skips the callgrind section
BENCH_BUILD_DIR=${BENCH_BUILD_DIR:-build}
BENCH_STRICT=${BENCH_STRICT:-0}
BENCH_KEEP_TMP=${BENCH_KEEP_TMP:-0}
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-0} # wait up to N s for an idle machine
# The targets are defined at 1 and 32; 256 is where workers 1 and 2 are
# compared (issue 12), for modelgate (plain and full gating) and nginx only.
CONNS_LIST="1 32 256"
BENCH_WIDE=${BENCH_WIDE:-1}            # 0 skips the 256-connection rows
[ "$BENCH_WIDE" = 1 ] || CONNS_LIST="1 32"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
COMMAND="$({ env | grep -E '^BENCH_' || true; } | sort | tr '\n' ' ')bash bench/run.sh${*:+ $*}"
START_TS=$(date +%s)
BENCH_TAG=bench
# shellcheck source=bench/lib.sh
. bench/lib.sh

for v in BENCH_SECONDS BENCH_WARMUP BENCH_RUNS BENCH_IDLE_CONNS BENCH_QUIET_WAIT \
  BENCH_IDLE_SECONDS BENCH_CG_N1 BENCH_CG_N2 BENCH_CG_CONNS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
[ "$BENCH_RUNS" -ge 1 ] && [ "$BENCH_SECONDS" -ge 1 ] || die "BENCH_RUNS and BENCH_SECONDS must be >= 1"
[ "$BENCH_CG_N2" -gt "$BENCH_CG_N1" ] || die "BENCH_CG_N2 must exceed BENCH_CG_N1"
KNOWN_PEERS="direct modelgate nginx haproxy portkey modelgate-flag modelgate-curl modelgate-nolog
  modelgate-flag-w2 modelgate-curl-w2 nginx-w2 modelgate-resp modelgate-msg modelgate-redis"
for p in $BENCH_PEERS; do
  [[ " $(echo $KNOWN_PEERS) " == *" $p "* ]] || die "unknown peer '$p' in BENCH_PEERS"
done
for c in $BENCH_VARIANT_CONNS; do
  [[ " $CONNS_LIST " == *" $c "* ]] || die "BENCH_VARIANT_CONNS may hold only: $CONNS_LIST"
done
for p in direct modelgate modelgate-flag nginx; do
  [[ " $BENCH_PEERS " == *" $p "* ]] || die "BENCH_PEERS must include $p (the targets need it)"
done

# ---- install what is missing ---------------------------------------------
need_cmd nginx nginx-light
need_cmd haproxy haproxy
need_cmd wrk wrk
need_cmd valgrind valgrind
need_cmd curl curl
need_cmd gcc gcc libc6-dev
[[ " $BENCH_PEERS " == *" modelgate-redis "* ]] && need_cmd redis-server redis-server
if [[ " $BENCH_PEERS " == *" portkey "* ]]; then
  need_cmd node nodejs
  need_cmd npm npm
fi
install_missing
export PATH="$PATH:/usr/sbin:/sbin"
[[ " $BENCH_PEERS " == *" portkey "* ]] && install_portkey

# ---- build modelgate ---------------------------------------------------------
BUILD="$BENCH_BUILD_DIR"
build_modelgate "$BUILD" modelgate

# ---- temp dir, processes, cleanup -----------------------------------------
bench_tmp_init modelgate-bench

if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
  ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
  [ "$(ulimit -n)" -ge $((BENCH_IDLE_CONNS + 100)) ] ||
    die "ulimit -n is $(ulimit -n); $((BENCH_IDLE_CONNS + 100)) descriptors are needed"
fi

log "temp dir $T"
gcc -O2 -w -o "$T/mgload" bench/mgload.c || die "cannot compile bench/mgload.c"

start_canned_upstream
# Keys as in production: the client sends its own key, as the SDKs do; every
# proxy sends the upstream a 164-character key (an OpenAI project key's
# length): modelgate from its target's api_key_env, nginx with
# proxy_set_header, haproxy with http-request set-header.
CLIENT_KEY="sk-client-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
UPSTREAM_KEY="sk-proj-$(od -An -N78 -tx1 /dev/urandom | tr -d ' \n')"
[ ${#UPSTREAM_KEY} -eq 164 ] || die "the upstream key is ${#UPSTREAM_KEY} characters, not 164"
export MG_BENCH_UPSTREAM_KEY="$UPSTREAM_KEY"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark, please."}]}'
# modelgate-flag's body: the same request with a user (so the flag's rollout
# bucketing runs) and attributes that no rule matches (so all five rules are
# evaluated before the rollout decides).
BODY_RESP='{"model":"gpt-4o-mini","input":"Say hello to the benchmark, please."}'
BODY_MSG='{"model":"claude-bench","max_tokens":64,"messages":[{"role":"user","content":"Say hello to the benchmark, please."}]}'
BODY_FLAG='{"model":"gpt-4o-mini","user":"user-4242","messages":[{"role":"user","content":"Say hello to the benchmark, please."}],"metadata":{"region":"eu","tier":"pro","customer":"acme-4242","plan":"team"}}'

# ---- peers -----------------------------------------------------------------
declare -A PORT PID HDRS

# modelgate's config for a configuration of the table: plain (one target on
# the canned upstream, decision log on as by default), flag (the alias routed
# through a flag with 5 rules and 3 variants, like bench/flagbench.c's, every
# variant's target on the canned upstream), nolog (plain, decision log off).
modelgate_config() { # plain|flag|nolog|curl|redis [WORKERS]
  local targets route log="" eng="" workers=${2:-1} key kind=$1
  # redis: the flag config with the fleet's store on (overrides and breaker
  # hints; nothing on the request path talks to Redis).
  [ "$kind" = redis ] && set -- flag "${2:-1}" && log=',
  "redis": {"url": "redis://127.0.0.1:'$REDIS_PORT'/0", "instance": "bench-1"}'
  key=', "api_key_env": "MG_BENCH_UPSTREAM_KEY"'
  [ "$1" = curl ] && eng=', "engine": "curl"'
  targets='"canned": {"base_url": "http://127.0.0.1:'$UP_PORT'/v1", "model": "canned-model"'$key'},
    "canned-claude": {"base_url": "http://127.0.0.1:'$UP_PORT'/v1", "model": "canned-model", "api": "anthropic"'$key'}'
  route='"gpt-4o-mini": {"target": "canned"}, "claude-bench": {"target": "canned-claude"}'
  case $1 in
  flag | curl)
    targets='"v1": {"base_url": "http://127.0.0.1:'$UP_PORT'/v1", "model": "canned-model"'$key$eng'},
    "v2": {"base_url": "http://127.0.0.1:'$UP_PORT'/v1", "model": "canned-model"'$key$eng'},
    "v3": {"base_url": "http://127.0.0.1:'$UP_PORT'/v1", "model": "canned-model"'$key$eng'}'
    route='"gpt-4o-mini": {"flag": "chat"}'
    ;;
  nolog) log=',
  "decision_log": {"enabled": false}' ;;
  esac
  cat <<EOF
{
  "server": {"listen": "127.0.0.1:0", "log_level": "warn", "workers": $workers},
  "admin": {"listen": "127.0.0.1:0"},
  "targets": {
    $targets
  },$({ [ "$1" = flag ] || [ "$1" = curl ]; } && cat <<'FLAG'

  "flags": {"chat": {
    "off_variant": "control",
    "block": ["banned-1", "banned-2"],
    "variants": {
      "control": {"target": "v1", "weight": 80, "allow": ["qa-1"]},
      "treatment": {"target": "v2", "weight": 15, "allow": ["beta-1"]},
      "large": {"target": "v3", "weight": 5}
    },
    "rules": [
      {"if": {"attr": "region", "op": "in", "values": ["cn", "ru"]}, "variant": "control"},
      {"if": {"all": [{"attr": "tier", "op": "eq", "value": "enterprise"},
                      {"input": "tools", "op": "gt", "value": 4}]}, "variant": "large"},
      {"if": {"input": "chars", "op": "gt", "value": 50000}, "variant": "control"},
      {"if": {"attr": "customer", "op": "prefix", "value": "internal-"}, "variant": "treatment"},
      {"if": {"not": {"attr": "plan", "op": "exists"}}, "variant": "control"}
    ]
  }},
FLAG
)
  "aliases": {$route},
  "default_route": "gpt-4o-mini"$log
}
EOF
}

# start_modelgate NAME [COMMAND_PREFIX] [plain|flag|nolog|curl] [WORKERS]: sets MG_PORT_OUT,
# MG_PID_OUT. Its working directory is a temp dir of its own: the decision
# log (on by default, relative path decisions.jsonl) goes there, not into
# the tree.
start_modelgate() {
  start_modelgate_cfg "$1" "$(modelgate_config "${3:-plain}" "${4:-1}")" "${2:-}"
}

start_nginx_proxy() { # NAME PORT [main-context extra] [WORKERS]
  local name=$1 port=$2
  {
    nginx_head "$name" "${3:-}" "${4:-1}"
    cat <<EOF
  upstream canned {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://canned;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $UPSTREAM_KEY";
    }
  }
}
EOF
  } >"$T/$name.conf"
}

# modelgate's configuration and worker count for a peer of the table.
mg_variant() {
  case $1 in modelgate-flag | modelgate-flag-w2) echo flag ;; modelgate-curl | modelgate-curl-w2) echo curl ;;
  modelgate-nolog) echo nolog ;; modelgate-redis) echo redis ;; *) echo plain ;; esac
}
mg_workers() { case $1 in *-w2) echo 2 ;; *) echo 1 ;; esac; }

# A Redis of the run's own for modelgate-redis (issue 13): no persistence,
# loopback, a free port.
if [[ " $BENCH_PEERS " == *" modelgate-redis "* ]]; then
  REDIS_PORT=$(free_port)
  mkdir -p "$T/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$T/redis" >"$T/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_port "$REDIS_PORT" "$REDIS_PID" "redis-server" "$T/redis.log"
fi

for p in $BENCH_PEERS; do
  [ "$p" = portkey ] || HDRS[$p]="Authorization: Bearer $CLIENT_KEY"
  [ "$p" = modelgate-msg ] && HDRS[$p]="x-api-key: $CLIENT_KEY
anthropic-version: 2023-06-01"
  case $p in
  direct)
    PORT[direct]=$UP_PORT
    PID[direct]=$UP_PID
    ;;
  modelgate | modelgate-flag | modelgate-nolog | modelgate-curl | modelgate-flag-w2 | modelgate-curl-w2 | \
    modelgate-resp | modelgate-msg | modelgate-redis)
    start_modelgate "$p" "" "$(mg_variant "$p")" "$(mg_workers "$p")"
    PORT[$p]=$MG_PORT_OUT
    PID[$p]=$MG_PID_OUT
    ;;
  nginx | nginx-w2)
    PORT[$p]=$(free_port)
    if [ "$p" = nginx-w2 ]; then
      start_nginx_proxy "$p" "${PORT[$p]}" "" 2
    else
      start_nginx_proxy "$p" "${PORT[$p]}"
    fi
    nginx -c "$T/$p.conf" -e "$T/$p/error.log" >"$T/$p.log" 2>&1 &
    PID[$p]=$!
    PIDS+=("${PID[$p]}")
    wait_port "${PORT[$p]}" "${PID[$p]}" "nginx proxy ($p)" "$T/$p.log"
    ;;
  haproxy)
    PORT[haproxy]=$(free_port)
    cat >"$T/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  default_backend canned
backend canned
  http-request set-header Authorization "Bearer $UPSTREAM_KEY"
  server up 127.0.0.1:$UP_PORT
EOF
    haproxy -c -q -f "$T/haproxy.cfg" >&2 || die "haproxy rejects its config"
    haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
    PID[haproxy]=$!
    PIDS+=("${PID[haproxy]}")
    wait_port "${PORT[haproxy]}" "${PID[haproxy]}" "haproxy" "$T/haproxy.log"
    ;;
  portkey)
    PORT[portkey]=$(free_port)
    HDRS[portkey]="x-portkey-provider: openai
x-portkey-custom-host: http://127.0.0.1:$UP_PORT/v1
Authorization: Bearer sk-bench-not-a-key"
    node "$ROOT/$PK_DIR/build/start-server.js" --port="${PORT[portkey]}" --headless \
      >"$T/portkey.log" 2>&1 &
    PID[portkey]=$!
    PIDS+=("${PID[portkey]}")
    wait_port "${PORT[portkey]}" "${PID[portkey]}" "Portkey gateway" "$T/portkey.log" 60
    ;;
  esac
done

body_for() {
  case $1 in modelgate-flag* | modelgate-curl* | modelgate-redis) echo "$BODY_FLAG" ;; modelgate-resp) echo "$BODY_RESP" ;;
  modelgate-msg) echo "$BODY_MSG" ;; *) echo "$BODY" ;; esac
}
# The path a peer is measured on: chat completions, except the Responses and
# Messages rows (issue 14).
path_for() { case $1 in modelgate-resp) echo /v1/responses ;; modelgate-msg) echo /v1/messages ;; *) echo "$API" ;; esac; }

# A request through each peer must reach the canned upstream (its body carries
# this run's random id) and come back 200; through modelgate-flag, it must
# also have been decided by the flag's rollout (which variant it got is
# reported).
FLAG_VARIANT=""
verify() {
  local p=$1 code h args=() ok=1
  while IFS= read -r h; do [ -n "$h" ] && args+=(-H "$h"); done <<<"${HDRS[$p]:-}"
  code=$(curl -s -m 10 -D "$T/verify.$p.h" -o "$T/verify.$p" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' "${args[@]}" --data-binary "$(body_for "$p")" \
    "http://127.0.0.1:${PORT[$p]}$(path_for "$p")" || true)
  [ "$code" = 200 ] && grep -q "$TOKEN" "$T/verify.$p" || ok=0
  if [ "$(mg_variant "$p")" = flag ] || [ "$(mg_variant "$p")" = curl ] || [ "$p" = modelgate-redis ]; then
    grep -qi '^x-modelgate-flag: chat' "$T/verify.$p.h" &&
      grep -qi '^x-modelgate-reason: rollout' "$T/verify.$p.h" || ok=0
    [ "$p" = modelgate-flag ] && FLAG_VARIANT=$(sed -n 's/^x-modelgate-variant: *\([^[:space:]]*\).*/\1/ip' "$T/verify.$p.h")
  fi
  if [ $ok = 0 ]; then
    cat "$T/verify.$p.h" >&2 || true
    echo "--- response from $p (HTTP $code):" >&2
    cat "$T/verify.$p" >&2 || true
    echo "--- log of $p:" >&2
    tail -n 30 "$T/$p.log" >&2 || true
    die "a request through $p did not come back 200 from the canned upstream"
  fi
}
for p in $BENCH_PEERS; do verify "$p"; done
log "all peers answer 200 with the canned completion: $BENCH_PEERS"

# ---- throughput and latency (wrk) ---------------------------------------------
lua_for() { # PEER -> path of its wrk script
  local p=$1 f="$T/wrk.$1.lua" h
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = '$(body_for "$p")'"
    echo 'wrk.headers["Content-Type"] = "application/json"'
    while IFS= read -r h; do
      [ -n "$h" ] && printf 'wrk.headers["%s"] = "%s"\n' "${h%%: *}" "${h#*: }"
    done <<<"${HDRS[$p]:-}"
  } >"$f"
  echo "$f"
}

# Parse wrk --latency output: rps, p50 us, p99 us, errors.
parse_wrk() {
  awk '
    function us(v) {
      if (v ~ /us$/) return v + 0
      if (v ~ /ms$/) return v * 1000
      if (v ~ /m$/) return v * 60e6
      if (v ~ /h$/) return v * 3600e6
      if (v ~ /s$/) return v * 1e6
      return -1
    }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { reqs = $1 }
    /Latency Distribution/ { dist = 1 }
    dist && $1 == "50%" { p50 = us($2) }
    dist && $1 == "99%" { p99 = us($2) }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
    END {
      if (rps == "" || p50 == "" || p99 == "") exit 1
      printf "%.2f\t%.1f\t%.1f\t%d\t%d\n", rps, p50, p99, err, reqs
    }'
}

# CPU accounting (lib.sh): busy_ticks, proc_ticks, machine_busy, quiet_wait.
TIMEFORMAT='%3U %3S'
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
quiet_wait

RAW="$T/raw.tsv"
: >"$RAW"
read -r -a PEERS <<<"$BENCH_PEERS"
NP=${#PEERS[@]}
is_variant() { case $1 in modelgate-* | nginx-w2) return 0 ;; *) return 1 ;; esac; }
# Is PEER measured at CONNS connections? The base peers at both; the full
# gating configurations at BENCH_VARIANT_CONNS; log off and two workers at 32.
measured_at() {
  if [ "$2" = 256 ]; then
    case $1 in modelgate | modelgate-flag | modelgate-flag-w2 | nginx | nginx-w2) return 0 ;; *) return 1 ;; esac
  fi
  case $1 in
  modelgate-nolog | *-w2 | modelgate-resp | modelgate-msg | modelgate-redis) [ "$2" = 32 ] ;;
  modelgate-*) [[ " $BENCH_VARIANT_CONNS " == *" $2 "* ]] ;;
  *) return 0 ;;
  esac
}
total=0
for c in $CONNS_LIST; do for p in "${PEERS[@]}"; do measured_at "$p" "$c" && total=$((total + 1)); done; done
total=$((total * BENCH_RUNS))
n=0
log "wrk: $BENCH_RUNS runs x {$CONNS_LIST} connections x $NP peers (not every peer at every count: $total measurements), ${BENCH_WARMUP}s warm-up + ${BENCH_SECONDS}s each (~$((total * (BENCH_SECONDS + BENCH_WARMUP + 1) / 60)) min)"
for run in $(seq "$BENCH_RUNS"); do
  for c in $CONNS_LIST; do
    # Rotate the order every run so that no peer always goes first or last.
    for k in $(seq 0 $((NP - 1))); do
      p=${PEERS[$(((k + run - 1) % NP))]}
      measured_at "$p" "$c" || continue
      url="http://127.0.0.1:${PORT[$p]}$(path_for "$p")"
      lua=$(lua_for "$p")
      n=$((n + 1))
      if [ "$BENCH_WARMUP" -gt 0 ]; then
        timeout $((BENCH_WARMUP + 30)) wrk -t1 -c"$c" -d"${BENCH_WARMUP}s" --timeout 5s \
          -s "$lua" "$url" >/dev/null 2>&1 || die "wrk warm-up against $p failed"
      fi
      out="$T/wrk.run$run.c$c.$p.txt"
      ours="$UP_PID"
      [ "${PID[$p]}" = "$UP_PID" ] || ours="$ours ${PID[$p]}"
      # shellcheck disable=SC2086
      t0=$(date +%s.%N) b0=$(busy_ticks) o0=$(proc_ticks $ours) q0=$(proc_ticks "${PID[$p]}")
      { time timeout $((BENCH_SECONDS + 30)) wrk -t1 -c"$c" -d"${BENCH_SECONDS}s" --timeout 5s \
        --latency -s "$lua" "$url" >"$out" 2>&1; } 2>"$T/wrk.time" ||
        { cat "$out" >&2; die "wrk against $p failed"; }
      # shellcheck disable=SC2086
      t1=$(date +%s.%N) b1=$(busy_ticks) o1=$(proc_ticks $ours) q1=$(proc_ticks "${PID[$p]}")
      kill -0 "${PID[$p]}" 2>/dev/null || die "$p died during the measurement"
      res=$(parse_wrk <"$out") || { cat "$out" >&2; die "cannot parse wrk output for $p"; }
      # CPU that neither wrk, the upstream nor the peer used during the
      # measurement, in % of one core: the noise from the rest of the machine.
      other=$(awk -v b="$((b1 - b0))" -v o="$((o1 - o0))" -v hz="$HZ" -v t0="$t0" -v t1="$t1" \
        -v w="$(cat "$T/wrk.time")" 'BEGIN { split(w, x, " "); v = ((b - o) / hz - x[1] - x[2]) / (t1 - t0) * 100; printf "%.0f", v < 0 ? 0 : v }')
      # CPU time of the peer's own processes per request it served.
      cpu=$(awk -v t="$((q1 - q0))" -v hz="$HZ" -v n="$(echo "$res" | cut -f5)" \
        'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
      res=$(echo "$res" | cut -f1-4)
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$c" "$p" "$res" "$other" "$cpu" >>"$RAW"
      log "[$n/$total] run $run c=$c $p: $(echo "$res" | awk -F'\t' '{printf "%s rps, p50 %s us, p99 %s us, errors %s", $1, $2, $3, $4}'), CPU $cpu us/request, other CPU ${other}% of a core"
    done
  done
done

# Portkey and the proxies are not needed any more: stop them so the memory and
# callgrind sections run on a quieter machine.
for p in $BENCH_PEERS; do
  [ "$p" = direct ] && continue
  stop_pid "${PID[$p]}" TERM 10
done

# median, min, max per (conns, peer) of rps / p50 / p99; errors summed.
SUMMARY="$T/summary.tsv"
awk -F'\t' '
  function sortv(a, n,   i, j, x) {
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
  }
  function vals(s, a,   n, j) { n = split(s, a, " "); for (j = 1; j <= n; j++) a[j] += 0; sortv(a, n); return n }
  function med(s,   a, n) { n = vals(s, a); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function lo(s,   a, n) { n = vals(s, a); return a[1] }
  function hi(s,   a, n) { n = vals(s, a); return a[n] }
  { k = $2 "\t" $3; if (!(k in rps)) order[++nk] = k
    rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6; err[k] += $7; cpu[k] = cpu[k] " " $9 }
  END {
    for (i = 1; i <= nk; i++) { k = order[i]
      printf "%s\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%d\t%.1f\n", k, med(rps[k]), lo(rps[k]), hi(rps[k]), med(p50[k]), med(p99[k]), err[k], med(cpu[k]) }
  }' "$RAW" >"$SUMMARY"

get() { # CONNS PEER FIELD(rps|rps_lo|rps_hi|p50|p99|err|cpu)
  awk -F'\t' -v c="$1" -v p="$2" -v f="$3" '
    BEGIN { col["rps"] = 3; col["rps_lo"] = 4; col["rps_hi"] = 5; col["p50"] = 6; col["p99"] = 7; col["err"] = 8; col["cpu"] = 9 }
    $1 == c && $2 == p { print $(col[f]); found = 1 }
    END { if (!found) print "" }' "$SUMMARY"
}

# ---- memory with idle keep-alive connections -------------------------------------
log "memory: fresh modelgate, $BENCH_IDLE_CONNS idle keep-alive connections"
vmrss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# The full gating configuration (modelgate-flag's), one worker.
start_modelgate mem "" flag 1
MEM_PID=$MG_PID_OUT
curl -s -m 10 -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $CLIENT_KEY" \
  --data-binary "$BODY_FLAG" "http://127.0.0.1:$MG_PORT_OUT$API" || true
sleep 0.5
RSS_FRESH=$(vmrss_kib "$MEM_PID")
"$T/mgload" "$MG_PORT_OUT" "$BENCH_IDLE_CONNS" 0 --idle "$BENCH_IDLE_SECONDS" --auth "$CLIENT_KEY" \
  --body "$BODY_FLAG" >"$T/idle.out" 2>&1 &
IDLE_PID=$!
PIDS+=("$IDLE_PID")
for _ in $(seq 300); do
  grep -q '^idle:' "$T/idle.out" && break
  kill -0 "$IDLE_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q '^idle:' "$T/idle.out" || { cat "$T/idle.out" >&2; die "mgload did not open $BENCH_IDLE_CONNS idle connections"; }
IDLE_LINE=$(grep '^idle:' "$T/idle.out")
sleep 2 # let the last requests finish and the allocator settle
OPEN_CONNS=$(ls -1 "/proc/$MEM_PID/fd" | wc -l)
RSS_IDLE=$(vmrss_kib "$MEM_PID")
HWM_IDLE=$(awk '/^VmHWM:/ { print $2 }' "/proc/$MEM_PID/status")
stop_pid "$IDLE_PID" TERM 5
stop_pid "$MEM_PID" TERM 15
log "memory: fresh $RSS_FRESH KiB, with idle connections $RSS_IDLE KiB ($IDLE_LINE; $OPEN_CONNS fds)"

# ---- instructions per request (callgrind) --------------------------------------
cg_total() { sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$1" | head -1; }
cg_load() { # PORT N NAME [BODY]
  local extra=()
  case $3 in
  modelgate-resp) extra=(--path /v1/responses) ;;
  modelgate-msg) extra=(--path /v1/messages --header "anthropic-version: 2023-06-01") ;;
  esac
  timeout 300 "$T/mgload" "$1" "$BENCH_CG_CONNS" "$2" --auth "$CLIENT_KEY" "${extra[@]}" ${4:+--body "$4"} >"$T/cg.$3.$2.load" 2>&1 ||
    { cat "$T/cg.$3.$2.load" >&2; die "mgload against $3 under callgrind failed"; }
}
# cg_modelgate PEER N: total instructions of modelgate (configuration of
# PEER) serving N requests from mgload (plus one from curl).
cg_modelgate() {
  local peer=$1 N=$2 v name
  v=$(mg_variant "$peer")
  name="cg.$peer.$N"
  log "callgrind: $peer, $N requests"
  start_modelgate "$name" "valgrind --tool=callgrind --callgrind-out-file=$T/callgrind.$peer.$N.out" "$v"
  curl -s -m 30 -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $CLIENT_KEY" \
    -H 'anthropic-version: 2023-06-01' --data-binary "$(body_for "$peer")" "http://127.0.0.1:$MG_PORT_OUT$(path_for "$peer")" || true
  cg_load "$MG_PORT_OUT" "$N" "$peer" "$(body_for "$peer")"
  stop_pid "$MG_PID_OUT" INT 60
  CG_OUT=$(cg_total "$T/callgrind.$peer.$N.out")
  [ -n "$CG_OUT" ] || { tail -n 20 "$T/$name.log" >&2; die "no callgrind totals for $peer ($N)"; }
}
# The modelgate configurations measured under callgrind: plain, and the
# extra ones in BENCH_PEERS; with modelgate-flag, also plain modelgate sent
# the flag's request body (modelgate-flagbody), which splits the flag's cost
# into the larger body and the flag itself.
CG_PEERS="modelgate"
for p in modelgate-flag modelgate-curl modelgate-nolog modelgate-resp modelgate-msg; do
  [[ " $BENCH_PEERS " == *" $p "* ]] && CG_PEERS="$CG_PEERS $p"
done
[[ " $BENCH_PEERS " == *" modelgate-flag "* ]] && CG_PEERS="$CG_PEERS modelgate-flagbody"
declare -A CG1 CG2
if [ "$BENCH_CALLGRIND" = 1 ]; then
  for N in "$BENCH_CG_N1" "$BENCH_CG_N2"; do
    for p in $CG_PEERS; do
      cg_modelgate "$p" "$N"
      if [ "$N" = "$BENCH_CG_N1" ]; then CG1[$p]=$CG_OUT; else CG2[$p]=$CG_OUT; fi
    done

    log "callgrind: nginx, $N requests"
    port=$(free_port)
    start_nginx_proxy "cgng$N" "$port" "master_process off;"
    valgrind --tool=callgrind --callgrind-out-file="$T/callgrind.nginx.$N.out" \
      nginx -c "$T/cgng$N.conf" -e "$T/cgng$N/error.log" >"$T/cgng$N.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid" "nginx under callgrind" "$T/cgng$N.log" 60
    curl -s -m 30 -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $CLIENT_KEY" \
      --data-binary "$BODY" "http://127.0.0.1:$port$API" || true
    cg_load "$port" "$N" nginx
    stop_pid "$pid" QUIT 60
    v=$(cg_total "$T/callgrind.nginx.$N.out")
    [ -n "$v" ] || { tail -n 20 "$T/cgng$N.log" >&2; die "no callgrind totals for nginx ($N)"; }
    if [ "$N" = "$BENCH_CG_N1" ]; then CG1[nginx]=$v; else CG2[nginx]=$v; fi
  done
fi

# ---- report ------------------------------------------------------------------------
fmt_int() { awk -v x="$1" 'BEGIN { if (x == "") print "n/a"; else printf "%.0f", x }'; }
label_of() {
  case $1 in
  direct) echo "upstream directly" ;; modelgate) echo "modelgate" ;;
  nginx) echo "nginx proxy_pass" ;; haproxy) echo "haproxy" ;;
  portkey) echo "Portkey gateway" ;; modelgate-flag) echo "modelgate + flag" ;;
  modelgate-nolog) echo "modelgate, log off" ;;
  modelgate-curl) echo "modelgate + flag, libcurl engine" ;;
  modelgate-flag-w2) echo "modelgate + flag, 2 workers" ;;
  modelgate-curl-w2) echo "modelgate + flag, libcurl engine, 2 workers" ;;
  nginx-w2) echo "nginx proxy_pass, 2 workers" ;;
  modelgate-resp) echo "modelgate, Responses API (POST /v1/responses)" ;;
  modelgate-msg) echo "modelgate, Anthropic Messages (POST /v1/messages)" ;;
  modelgate-redis) echo "modelgate + flag, Redis store on" ;;
  modelgate-flagbody) echo "modelgate, the flag's request body but no flag" ;; esac
}
# Per run, PEER's req/s over OTHER's at CONNS connections: "r1, r2, ..." and
# their median (RUN_RATIO_MED).
run_ratios() { # CONNS PEER OTHER
  awk -F'\t' -v c="$1" -v p="$2" -v o="$3" '$2 == c && $3 == p { a[$1] = $4 } $2 == c && $3 == o { b[$1] = $4 }
    END { for (r = 1; r in a; r++) if (r in b && b[r] > 0) printf "%s%.2f", (r > 1 ? ", " : ""), a[r] / b[r] }' "$RAW"
}
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

declare -A IPR
dn=$((BENCH_CG_N2 - BENCH_CG_N1))
if [ "$BENCH_CALLGRIND" = 1 ]; then
  for p in $CG_PEERS nginx; do IPR[$p]=$(calc "(${CG2[$p]} - ${CG1[$p]}) / $dn" 0); done
fi
# Where the instructions go: per function (self cost), the long run minus the
# short one, per request, top 15 (so start-up and shutdown cancel out).
cg_top() { # PEER
  local a="$T/callgrind.$1.$BENCH_CG_N1.out" b="$T/callgrind.$1.$BENCH_CG_N2.out"
  [ -s "$a" ] && [ -s "$b" ] || return 0
  fn_costs() { callgrind_annotate --inclusive=no --auto=no --threshold=100 "$1" 2>/dev/null |
    awk 'match($0, /^ *[0-9,]+ \( *[0-9.]+%\) +/) {
        v = substr($0, 1, RLENGTH); sub(/\(.*/, "", v); gsub(/[ ,]/, "", v)
        rest = substr($0, RLENGTH + 1); sub(/ \[.*\]$/, "", rest)
        f = rest; sub(/^.*:/, "", f)
        if (rest != "PROGRAM TOTALS") c[f] += v }
      END { for (k in c) print c[k] "\t" k }'; }
  fn_costs "$a" >"$T/cgfn.$1.a"
  fn_costs "$b" >"$T/cgfn.$1.b"
  awk -F'\t' -v dn="$dn" -v tot="${IPR[$1]}" 'NR == FNR { a[$2] = $1; next } { d = ($1 - a[$2]) / dn; if (d > 0) printf "%.0f\t%.1f\t%s\n", d, d * 100 / tot, $2 }' \
    "$T/cgfn.$1.a" "$T/cgfn.$1.b" | sort -t$'\t' -k1,1nr | awk 'NR <= 15'
}

OUT="$T/report.md"
{
  echo "# modelgate benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- command: \`$COMMAND\`"
  echo "- machine: $(machine_desc)"
  echo "- modelgate: $(modelgate_desc); config: one target on the canned upstream, alias gpt-4o-mini, log_level warn, admin API on an ephemeral port, decision log on (the default; written to a temp dir)"
  if [[ " $BENCH_PEERS " == *" modelgate-flag "* ]]; then
    echo "- modelgate + flag: the alias names a flag with 5 rules and 3 variants (80/15/5, block and allow lists, as in bench/flagbench.c), each variant's target on the canned upstream; requests carry \`user\` and \`metadata\` that no rule matches, so every request evaluates all five rules and is bucketed by the rollout (this user's variant: ${FLAG_VARIANT:-?}); decision log on"
  fi
  if [[ " $BENCH_PEERS " == *" modelgate-nolog "* ]]; then
    echo "- modelgate, log off: as modelgate, with \`decision_log.enabled: false\`"
  fi
  echo "- every modelgate configuration: \`server.workers: 1\` unless its row says 2 workers; the native engine for the \`http://\` targets unless the row says libcurl (\`engine: curl\`)"
  echo "- keys: every client (wrk, mgload, curl) sends \`Authorization: Bearer <${#CLIENT_KEY} characters>\` as the SDKs do; every proxy sends the upstream \`Authorization: Bearer <164 characters>\` in place of it (modelgate from the target's \`api_key_env\`, nginx by \`proxy_set_header\`, haproxy by \`http-request set-header\`)"
  echo "- peers: $(nginx -v 2>&1 | sed 's/^nginx version: //') (upstream and proxy_pass, 1 worker, upstream keepalive 64), $(haproxy -v | head -1 | awk '{print "haproxy " $3}') (nbthread 1, http-reuse always)$([[ " $BENCH_PEERS " == *" portkey "* ]] && echo ", @portkey-ai/gateway $PORTKEY_VERSION on node $(node --version)")"
  echo "- load: $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}') -t1 -c1 / -t1 -c32, ${BENCH_WARMUP}s warm-up + ${BENCH_SECONDS}s, median of $BENCH_RUNS runs per row (peers alternated within each run); $(valgrind --version)"
  echo
  echo "## Throughput and latency"
  echo
  echo "| configuration | conns | req/s (median) | req/s min–max | p50 µs | p99 µs | req/s ÷ modelgate | p50 ÷ modelgate | CPU µs/req | errors |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for c in $CONNS_LIST; do
    mg_rps=$(get "$c" modelgate rps)
    mg_p50=$(get "$c" modelgate p50)
    for p in $BENCH_PEERS; do
      measured_at "$p" "$c" || continue
      label=$(label_of "$p")
      printf '| %s | %s | %s | %s–%s | %s | %s | %s | %s | %s | %s |\n' "$label" "$c" \
        "$(get "$c" "$p" rps)" "$(get "$c" "$p" rps_lo)" "$(get "$c" "$p" rps_hi)" \
        "$(fmt_int "$(get "$c" "$p" p50)")" "$(fmt_int "$(get "$c" "$p" p99)")" \
        "$(calc "$(get "$c" "$p" rps) / $mg_rps")x" "$(calc "$(get "$c" "$p" p50) / $mg_p50")x" \
        "$(get "$c" "$p" cpu)" "$(get "$c" "$p" err)"
    done
  done
  echo
  echo "CPU µs/req: user + system CPU time of the peer's own processes (the upstream's for the direct row) per request served, from /proc; it depends far less on other work on the machine than req/s and latency do."
  echo
  awk -F'\t' '{ v[++n] = $8 } END {
      for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] + 0 > x + 0; j--) v[j + 1] = v[j]; v[j + 1] = x }
      printf "CPU used by other processes on the machine during the measurements (not wrk, the upstream or the peer): median %s%%, max %s%% of one core", v[int((n + 1) / 2)], v[n] }' "$RAW"
  echo " (just before them: ${IDLE_BUSY}%). Load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  other_med=$(awk -F'\t' '{ v[++n] = $8 } END { for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] + 0 > x + 0; j--) v[j + 1] = v[j]; v[j + 1] = x }; print v[int((n + 1) / 2)] + 0 }' "$RAW")
  if [ "$other_med" -gt 25 ]; then
    echo
    echo "**Warning: other work on the machine took ${other_med}% of a core (median) while this ran; the throughput and latency figures are distorted by it. Run again on a quiet machine (BENCH_QUIET_WAIT=600 waits for one).**"
  fi
  echo
  echo "## Latency added at 1 connection (p50 minus the direct p50)"
  echo
  echo "Medians of the runs; the target uses these."
  echo
  d50=$(get 1 direct p50)
  for p in $BENCH_PEERS; do
    [ "$p" = direct ] && continue
    measured_at "$p" 1 || continue
    per_run=$(awk -F'\t' -v p="$p" '$2 == 1 && $3 == "direct" { d[$1] = $5 } $2 == 1 && $3 == p { v[$1] = $5 }
      END { for (r = 1; r in v; r++) printf "%s%.0f", (r > 1 ? ", " : ""), v[r] - d[r] }' "$RAW")
    printf -- '- %s: %s µs (per run, against that run'"'"'s direct p50: %s)\n' "$p" "$(calc "$(get 1 "$p" p50) - $d50" 0)" "$per_run"
  done
  echo
  echo "## Resident memory"
  echo
  echo "- modelgate, fresh, after one request: $RSS_FRESH KiB ($(calc "$RSS_FRESH / 1024" 1) MiB)"
  echo "- with $BENCH_IDLE_CONNS idle keep-alive connections open (${IDLE_LINE#idle: }; $OPEN_CONNS fds): **$RSS_IDLE KiB ($(calc "$RSS_IDLE / 1024" 1) MiB)**, peak $HWM_IDLE KiB; $(calc "($RSS_IDLE - $RSS_FRESH) / $BENCH_IDLE_CONNS" 1) KiB per connection"
  echo
  echo "## User-space instructions per proxied request (callgrind)"
  echo
  if [ "$BENCH_CALLGRIND" = 1 ]; then
    echo "mgload at $BENCH_CG_CONNS connections; (I($BENCH_CG_N2) − I($BENCH_CG_N1)) / $dn requests."
    echo
    echo "| process | I($BENCH_CG_N1 req) | I($BENCH_CG_N2 req) | instructions / request | ÷ nginx |"
    echo "|---|--:|--:|--:|--:|"
    for p in $CG_PEERS nginx; do
      echo "| $(label_of "$p") | ${CG1[$p]} | ${CG2[$p]} | ${IPR[$p]} | $(calc "${IPR[$p]} / ${IPR[nginx]}")x |"
    done
    echo
    echo "modelgate ÷ nginx: $(calc "${IPR[modelgate]} / ${IPR[nginx]}")x"
  else
    echo "skipped (BENCH_CALLGRIND=0)"
  fi
  echo
  mg32=$(get 32 modelgate rps)
  ng32=$(get 32 nginx rps)
  r=$(calc "$mg32 / $ng32")
  pf() { awk "BEGIN { exit !($1) }" && echo PASS || echo FAIL; }
  HAVE_FLAG=0 HAVE_NOLOG=0
  measured_at modelgate-flag 32 && [[ " $BENCH_PEERS " == *" modelgate-flag "* ]] && HAVE_FLAG=1
  measured_at modelgate-nolog 32 && [[ " $BENCH_PEERS " == *" modelgate-nolog "* ]] && HAVE_NOLOG=1
  if [ $HAVE_FLAG = 1 ] || [ $HAVE_NOLOG = 1 ]; then
    echo "## Flag and decision log on the path (issues 3.8 and 5.7)"
    echo
    echo "At 32 connections; medians of the runs (\"per run\" pairs the two configurations' measurements of the same run)."
    echo
    echo "| configuration | flag | decision log | req/s | ÷ nginx | ÷ modelgate | CPU µs/req | instructions/req |"
    echo "|---|---|---|--:|--:|--:|--:|--:|"
    for p in modelgate modelgate-flag modelgate-curl modelgate-nolog nginx modelgate-flag-w2 modelgate-curl-w2 nginx-w2; do
      [[ " $BENCH_PEERS " == *" $p "* ]] && measured_at "$p" 32 || continue
      case $p in modelgate) fl="no" lg="on" ;; modelgate-flag* | modelgate-curl*) fl="5 rules, 3 variants" lg="on" ;;
      modelgate-nolog) fl="no" lg="off" ;; nginx*) fl="–" lg="–" ;; esac
      printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label_of "$p")" "$fl" "$lg" "$(get 32 "$p" rps)" \
        "$(calc "$(get 32 "$p" rps) / $ng32")x" "$(calc "$(get 32 "$p" rps) / $mg32")x" "$(get 32 "$p" cpu)" "${IPR[$p]:-n/a}"
    done
    echo
    if [ $HAVE_FLAG = 1 ]; then
      fl32=$(get 32 modelgate-flag rps)
      printf -- '- cost of the flag: modelgate + flag ÷ modelgate = %sx req/s (per run: %s); CPU %+.1f µs/request' \
        "$(calc "$fl32 / $mg32")" "$(run_ratios 32 modelgate-flag modelgate)" "$(calc "$(get 32 modelgate-flag cpu) - $(get 32 modelgate cpu)" 1)"
      if [ -n "${IPR[modelgate-flag]:-}" ]; then
        printf '; %+d instructions/request (%+.1f%%), of which %+d for the larger request body (plain modelgate sent the same body: %s) and %+d for the flag itself (evaluation, its headers, the longer decision record)' \
          "$((IPR[modelgate-flag] - IPR[modelgate]))" "$(calc "(${IPR[modelgate-flag]} - ${IPR[modelgate]}) * 100 / ${IPR[modelgate]}" 1)" \
          "$((IPR[modelgate-flagbody] - IPR[modelgate]))" "${IPR[modelgate-flagbody]}" "$((IPR[modelgate-flag] - IPR[modelgate-flagbody]))"
      fi
      echo " (the flag's request carries \`user\` and four \`metadata\` attributes)"
    fi
    if [ $HAVE_NOLOG = 1 ]; then
      nl32=$(get 32 modelgate-nolog rps)
      printf -- '- cost of the decision log: modelgate (log on) ÷ modelgate, log off = %sx req/s (per run: %s); CPU %+.1f µs/request' \
        "$(calc "$mg32 / $nl32")" "$(run_ratios 32 modelgate modelgate-nolog)" "$(calc "$(get 32 modelgate cpu) - $(get 32 modelgate-nolog cpu)" 1)"
      [ -n "${IPR[modelgate-nolog]:-}" ] &&
        printf '; %+d instructions/request (%+.1f%%; the writer thread'"'"'s share included)' "$((IPR[modelgate] - IPR[modelgate-nolog]))" "$(calc "(${IPR[modelgate]} - ${IPR[modelgate-nolog]}) * 100 / ${IPR[modelgate-nolog]}" 1)"
      echo
    fi
    echo
  fi
  has_peer() { [[ " $BENCH_PEERS " == *" $1 "* ]]; }
  echo "## Targets"
  echo
  add_mg=$(calc "$(get 1 modelgate p50) - $d50" 1)
  add_ng=$(calc "$(get 1 nginx p50) - $d50" 1)
  FIG="$T/figures.tsv"
  : >"$FIG"
  if [ $HAVE_FLAG = 1 ]; then
    fl32=$(get 32 modelgate-flag rps)
    add_fl=$(calc "$(get 1 modelgate-flag p50) - $d50" 1)
    echo "Issue 17's targets are set on full gating (modelgate + flag: 5 rules, 3 variants, decision log on), one worker, the native engine (\`engine: auto\` on an \`http://\` target):"
    echo
    G1=$(pf "$fl32 >= 1.0 * $ng32")
    G2=$(pf "$add_fl <= $add_ng + 10")
    G4=$(pf "$RSS_IDLE <= 32 * 1024")
    echo "- $G1: throughput at 32 connections: modelgate + flag $fl32 req/s = $(calc "$fl32 / $ng32")x nginx ($ng32 req/s); target ≥ 1.00x"
    echo "- $G2: latency added at 1 connection: modelgate + flag $add_fl µs vs nginx $add_ng µs; target ≤ nginx + 10 µs ($(calc "$add_ng + 10" 1) µs)"
    if [ -n "${IPR[modelgate-flag]:-}" ]; then
      G3=$(pf "${IPR[modelgate-flag]} <= 2 * ${IPR[nginx]}")
      echo "- $G3: user-space instructions per request: modelgate + flag ${IPR[modelgate-flag]} vs nginx ${IPR[nginx]} = $(calc "${IPR[modelgate-flag]} / ${IPR[nginx]}")x; target ≤ 2.00x"
    else
      G3=n/a
    fi
    echo "- $G4: RSS of modelgate + flag with $BENCH_IDLE_CONNS idle connections: $(calc "$RSS_IDLE / 1024" 1) MiB; target ≤ 32 MiB"
    printf '%s\t%s\n' rps32_flag "$fl32" ratio32_flag "$(calc "$fl32 / $ng32")" added1_flag "$add_fl" \
      G1 "$G1" G2 "$G2" G3 "$G3" G4 "$G4" flag_cost "$(calc "$fl32 / $mg32")" ipr_flag "${IPR[modelgate-flag]:-}" >>"$FIG"
    if has_peer modelgate-curl; then
      cu32=$(get 32 modelgate-curl rps)
      add_cu=$(calc "$(get 1 modelgate-curl p50) - $d50" 1)
      echo "- beside it, the libcurl engine (\`engine: curl\`, same config): $cu32 req/s = $(calc "$cu32 / $ng32")x nginx at 32 connections; $add_cu µs added at 1 connection$([ -n "${IPR[modelgate-curl]:-}" ] && echo "; ${IPR[modelgate-curl]} instructions per request ($(calc "${IPR[modelgate-curl]} / ${IPR[nginx]}")x nginx)"); native ÷ curl: $(calc "$fl32 / $cu32")x req/s"
      printf '%s\t%s\n' rps32_curl "$cu32" ratio32_curl "$(calc "$cu32 / $ng32")" added1_curl "$add_cu" ipr_curl "${IPR[modelgate-curl]:-}" >>"$FIG"
    fi
    if has_peer modelgate-flag-w2 && has_peer nginx-w2; then
      f2=$(get 32 modelgate-flag-w2 rps) n2=$(get 32 nginx-w2 rps)
      echo "- two workers each (on a 2-core machine that also runs wrk and the upstream): modelgate + flag $f2 req/s, nginx $n2 req/s: $(calc "$f2 / $n2")x$(has_peer modelgate-curl-w2 && echo "; the libcurl engine $(get 32 modelgate-curl-w2 rps) req/s: $(calc "$(get 32 modelgate-curl-w2 rps) / $n2")x")"
      printf '%s\t%s\n' rps32_flag_w2 "$f2" rps32_nginx_w2 "$n2" ratio32_w2 "$(calc "$f2 / $n2")" >>"$FIG"
    fi
    echo
  fi
  echo "Plain modelgate (one target, no flag), the targets of issue 2:"
  echo
  T1=$(pf "$mg32 >= 1.0 * $ng32")
  T2=$(pf "$add_mg <= $add_ng + 10")
  echo "- $T1: throughput at 32 connections: modelgate $mg32 req/s = ${r}x nginx ($ng32 req/s); target ≥ 1.00x"
  echo "- $T2: latency added at 1 connection: modelgate $add_mg µs vs nginx $add_ng µs; target ≤ nginx + 10 µs ($(calc "$add_ng + 10" 1) µs)"
  T3=$(pf "$RSS_IDLE <= 32 * 1024")
  printf '%s\t%s\n' rps32_modelgate "$mg32" rps32_nginx "$ng32" ratio32_modelgate "$r" T1 "$T1" \
    added1_modelgate "$add_mg" added1_nginx "$add_ng" T2 "$T2" rss_idle_mib "$(calc "$RSS_IDLE / 1024" 1)" idle_conns "$BENCH_IDLE_CONNS" T3 "$T3" \
    other_cpu_median "$other_med" ipr_modelgate "${IPR[modelgate]:-}" ipr_nginx "${IPR[nginx]:-}" >>"$FIG"
  if [ $HAVE_FLAG = 1 ]; then
    T4=$G1
    printf '%s\t%s\n' T4 "$T4" >>"$FIG"
  fi
  T5=$(pf "$mg32 >= 1.0 * $ng32")
  printf '%s\t%s\n' T5 "$T5" >>"$FIG"
  if has_peer modelgate-flag && has_peer modelgate-flag-w2 && has_peer nginx-w2; then
    echo
    echo "### Workers 1 and 2 (issue 12)"
    echo
    echo "Full gating, native engine. On this 2-core machine wrk and the upstream share the cores with the proxy, so two workers cannot double anything; what is judged is that the second worker costs no CPU per request (within 5%) and keeps modelgate's standing against nginx with as many workers."
    echo
    echo "| conns | modelgate 1 worker req/s | CPU µs/req | modelgate 2 workers req/s | CPU µs/req | 2 ÷ 1 CPU/req | nginx 1 ÷ 2 workers req/s | ratio ÷ nginx, 1 worker | ratio ÷ nginx, 2 workers | verdict |"
    echo "|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    for c in 32 256; do
      a=$(get "$c" modelgate-flag rps) ac=$(get "$c" modelgate-flag cpu)
      b=$(get "$c" modelgate-flag-w2 rps) bc=$(get "$c" modelgate-flag-w2 cpu)
      n1=$(get "$c" nginx rps) n2=$(get "$c" nginx-w2 rps)
      [ -n "$a" ] && [ -n "$b" ] && [ -n "$n1" ] && [ -n "$n2" ] || continue
      v=$(pf "$bc <= 1.05 * $ac && $b / $n2 >= $a / $n1")
      echo "| $c | $a | $ac | $b | $bc | $(calc "$bc / $ac")x | $n1 / $n2 | $(calc "$a / $n1")x | $(calc "$b / $n2")x | $v |"
      printf '%s\t%s\n' "W$c" "$v" "cpu_ratio_w2_$c" "$(calc "$bc / $ac")" "ratio_w1_$c" "$(calc "$a / $n1")" "ratio_w2_$c" "$(calc "$b / $n2")" >>"$FIG"
    done
  fi
  if has_peer modelgate-resp || has_peer modelgate-msg; then
    echo
    echo "### The Responses and Messages APIs (issue 14)"
    echo
    echo "Plain modelgate (one target, no flag), 32 connections; the canned upstream answers each API in its own shape. Target: req/s within 10% of the chat row."
    echo
    echo "| API | req/s | ÷ chat | CPU µs/req | instructions/req | verdict |"
    echo "|---|--:|--:|--:|--:|---|"
    echo "| chat completions | $mg32 | 1.00x | $(get 32 modelgate cpu) | ${IPR[modelgate]:-n/a} | – |"
    for p in modelgate-resp modelgate-msg; do
      has_peer "$p" || continue
      x=$(get 32 "$p" rps)
      v=$(pf "$x >= 0.9 * $mg32")
      echo "| $(label_of "$p") | $x | $(calc "$x / $mg32")x | $(get 32 "$p" cpu) | ${IPR[$p]:-n/a} | $v |"
      printf '%s\t%s\n' "A_$p" "$v" "ratio_api_$p" "$(calc "$x / $mg32")" "ipr_$p" "${IPR[$p]:-}" >>"$FIG"
    done
  fi
  if has_peer modelgate-redis && has_peer modelgate-flag; then
    x=$(get 32 modelgate-redis rps)
    v=$(pf "$x >= 0.95 * $fl32")
    echo
    echo "### With the fleet's store (issue 13)"
    echo
    echo "- $v: modelgate + flag with \`redis\` configured (overrides and breaker hints through a local redis-server; shared cache not built) $x req/s = $(calc "$x / $fl32")x the same config without Redis ($fl32 req/s) at 32 connections; CPU $(get 32 modelgate-redis cpu) vs $(get 32 modelgate-flag cpu) µs/request; target ≥ 0.95x"
    printf '%s\t%s\n' R "$v" ratio_redis "$(calc "$x / $fl32")" >>"$FIG"
  fi
  if [ "$BENCH_CALLGRIND" = 1 ]; then
    for p in modelgate-flag modelgate-curl; do
      [ -n "${IPR[$p]:-}" ] || continue
      echo
      echo "### Where $(label_of "$p")'s instructions go"
      echo
      echo "Self cost per function, (I($BENCH_CG_N2) − I($BENCH_CG_N1)) / $dn requests, top 15 (every thread of the process):"
      echo
      echo "| instructions / request | share | function |"
      echo "|--:|--:|---|"
      cg_top "$p" | awk -F'\t' '{ printf "| %s | %s%% | `%s` |\n", $1, $2, $3 }'
    done
  fi
  echo
  if [ $HAVE_NOLOG = 1 ]; then
    printf '%s\t%s\n' rps32_nolog "$nl32" ratio32_nolog "$(calc "$nl32 / $ng32")" log_cost "$(calc "$mg32 / $nl32")" \
      ipr_nolog "${IPR[modelgate-nolog]:-}" >>"$FIG"
  fi
  echo
  raw_footer "raw wrk results (run, conns, peer, req/s, p50 µs, p99 µs, errors, other CPU % of a core, peer CPU µs/request)" "$RAW"
} >"$OUT"

publish_report latest
