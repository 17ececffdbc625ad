#!/usr/bin/env bash
# bench/run.sh - modelgate against its peers, in one run on this machine.
#
# A canned upstream (nginx, one worker, `return 200` with a fixed chat
# completion) is measured with wrk at 1 and 32 connections: directly, through
# modelgate, through nginx proxy_pass, through haproxy and through Portkey's
# open-source gateway. Then modelgate's resident memory with idle keep-alive
# connections, and user-space instructions per proxied request under callgrind
# for modelgate and nginx. See bench/README.md for how to read the output.
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
BENCH_PEERS=${BENCH_PEERS:-"direct modelgate nginx haproxy portkey"}
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
PORTKEY_VERSION=1.15.2                 # keep in step with bench/package.json
CONNS_LIST="1 32"                      # the targets are defined at these two

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
COMMAND="$({ env | grep -E '^BENCH_' || true; } | sort | tr '\n' ' ')bash bench/run.sh${*:+ $*}"
START_TS=$(date +%s)

log() { printf '[bench %3ds] %s\n' "$(($(date +%s) - START_TS))" "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

for v in BENCH_SECONDS BENCH_WARMUP BENCH_RUNS BENCH_IDLE_CONNS BENCH_QUIET_WAIT \
  BENCH_IDLE_SECONDS BENCH_CG_N1 BENCH_CG_N2 BENCH_CG_CONNS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
[ "$BENCH_RUNS" -ge 1 ] && [ "$BENCH_SECONDS" -ge 1 ] || die "BENCH_RUNS and BENCH_SECONDS must be >= 1"
[ "$BENCH_CG_N2" -gt "$BENCH_CG_N1" ] || die "BENCH_CG_N2 must exceed BENCH_CG_N1"
for p in $BENCH_PEERS; do
  case $p in direct | modelgate | nginx | haproxy | portkey) ;;
  *) die "unknown peer '$p' in BENCH_PEERS" ;; esac
done
for p in direct modelgate nginx; do
  [[ " $BENCH_PEERS " == *" $p "* ]] || die "BENCH_PEERS must include $p (the targets need it)"
done

# ---- install what is missing ---------------------------------------------
install_debs() {
  local missing="" sudo=""
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
  command -v wrk >/dev/null || missing="$missing wrk"
  command -v valgrind >/dev/null || missing="$missing valgrind"
  command -v curl >/dev/null || missing="$missing curl"
  command -v gcc >/dev/null || missing="$missing gcc libc6-dev"
  if [[ " $BENCH_PEERS " == *" portkey "* ]]; then
    command -v node >/dev/null || missing="$missing nodejs"
    command -v npm >/dev/null || missing="$missing npm"
  fi
  [ -z "$missing" ] && return 0
  log "installing Debian packages:$missing"
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
}
install_debs
export PATH="$PATH:/usr/sbin:/sbin"

if [[ " $BENCH_PEERS " == *" portkey "* ]]; then
  PK_DIR=bench/node_modules/@portkey-ai/gateway
  have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$PK_DIR/package.json" 2>/dev/null | head -1 || true)
  if [ "$have" != "$PORTKEY_VERSION" ]; then
    log "installing @portkey-ai/gateway@$PORTKEY_VERSION into bench/node_modules"
    (cd bench && timeout 600 npm install --no-audit --no-fund --loglevel=error >&2) ||
      die "npm install of @portkey-ai/gateway failed"
  fi
  [ -f "$PK_DIR/build/start-server.js" ] || die "$PK_DIR/build/start-server.js missing after npm install"
fi

# ---- build modelgate ---------------------------------------------------------
BUILD="$BENCH_BUILD_DIR"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  log "configuring $BUILD (RelWithDebInfo)"
  . scripts/deps.sh
  # shellcheck disable=SC2086
  mg_install $MG_BUILD_PKGS
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
grep -q '^MG_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" &&
  die "$BUILD is a sanitizer build: set BENCH_BUILD_DIR to a plain RelWithDebInfo build"
BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
log "building modelgate in $BUILD ($BUILD_TYPE)"
cmake --build "$BUILD" -j"$(nproc)" --target modelgate >/dev/null ||
  die "cmake --build $BUILD --target modelgate failed"
MG="$ROOT/$BUILD/modelgate"
[ -x "$MG" ] || die "$MG missing after the build"

# ---- temp dir, processes, cleanup -----------------------------------------
T=$(mktemp -d /tmp/modelgate-bench.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ "$BENCH_KEEP_TMP" = 1 ]; then echo "bench: temp files kept in $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stop one process we started and wait for it (bounded).
stop_pid() {
  local pid=$1 sig=${2:-TERM} secs=${3:-10}
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() q
  for q in "${PIDS[@]}"; do [ "$q" = "$pid" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
  ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
  [ "$(ulimit -n)" -ge $((BENCH_IDLE_CONNS + 100)) ] ||
    die "ulimit -n is $(ulimit -n); $((BENCH_IDLE_CONNS + 100)) descriptors are needed"
fi

log "temp dir $T"
gcc -O2 -w -o "$T/mgload" bench/mgload.c || die "cannot compile bench/mgload.c"

# A port below the kernel's ephemeral range (which the load's own client
# connections use) that no socket on the machine is bound to.
USED_PORTS=" "
EPHEMERAL_LO=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_LO" -gt 12000 ] || EPHEMERAL_LO=60000
free_port() {
  local p hex
  while :; do
    p=$((10000 + RANDOM % (EPHEMERAL_LO - 10000)))
    [[ $USED_PORTS == *" $p "* ]] && continue
    hex=$(printf '%04X' "$p")
    if ! awk -v h="$hex" '{ split($2, a, ":"); if (a[2] == h) f = 1 } END { exit !f }' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return
    fi
  done
}

# Wait until PORT accepts connections while PID lives; LOG is shown on failure.
wait_port() {
  local port=$1 pid=$2 what=$3 logf=$4 secs=${5:-30}
  for _ in $(seq $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || { cat "$logf" >&2 || true; die "$what exited during start-up"; }
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$logf" >&2 || true
  die "$what did not listen on 127.0.0.1:$port within ${secs}s"
}

NGINX_USER=""
[ "$(id -u)" -eq 0 ] && NGINX_USER="user root root;"

TOKEN="chatcmpl-bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
CANNED='{"id":"'$TOKEN'","object":"chat.completion","created":1700000000,"model":"canned-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark! This is a canned answer."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":9,"total_tokens":23}}'
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark, please."}]}'
API=/v1/chat/completions

# nginx config common head: one worker, no access log, temp paths in $T.
nginx_head() { # NAME [extra main-context lines]
  local d="$T/$1"
  mkdir -p "$d"
  cat <<EOF
$NGINX_USER
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
${2:-}
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
EOF
}

# ---- canned upstream ---------------------------------------------------------
UP_PORT=$(free_port)
{
  nginx_head upstream
  cat <<EOF
  server {
    listen 127.0.0.1:$UP_PORT;
    location = $API {
      default_type application/json;
      return 200 '$CANNED';
    }
  }
}
EOF
} >"$T/upstream.conf"
nginx -c "$T/upstream.conf" -e "$T/upstream/error.log" >"$T/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_port "$UP_PORT" "$UP_PID" "canned upstream (nginx)" "$T/upstream.log"

# ---- peers -----------------------------------------------------------------
declare -A PORT PID HDRS

start_modelgate() { # NAME -> sets MG_PORT_OUT, MG_PID_OUT
  local name=$1 cmd_prefix=${2:-}
  cat >"$T/$name.json" <<EOF
{
  "server": {"listen": "127.0.0.1:0", "log_level": "warn"},
  "admin": {"listen": "127.0.0.1:0"},
  "targets": {
    "canned": {"base_url": "http://127.0.0.1:$UP_PORT/v1", "model": "canned-model"}
  },
  "aliases": {"gpt-4o-mini": {"target": "canned"}},
  "default_route": "gpt-4o-mini"
}
EOF
  rm -f "$T/$name.port"
  # Its working directory is a temp dir of its own: the decision log (on by
  # default, relative path decisions.jsonl) goes there, not into the tree.
  mkdir -p "$T/$name.cwd"
  # shellcheck disable=SC2086
  (cd "$T/$name.cwd" && exec $cmd_prefix "$MG" serve -c "$T/$name.json" --port-file "$T/$name.port") \
    >"$T/$name.log" 2>&1 &
  MG_PID_OUT=$!
  PIDS+=("$MG_PID_OUT")
  for _ in $(seq 600); do
    [ -s "$T/$name.port" ] && break
    kill -0 "$MG_PID_OUT" 2>/dev/null || { cat "$T/$name.log" >&2; die "modelgate ($name) exited during start-up"; }
    sleep 0.1
  done
  MG_PORT_OUT=$(sed -n 's/^listen=//p' "$T/$name.port")
  [ -n "$MG_PORT_OUT" ] || { cat "$T/$name.log" >&2; die "modelgate ($name) wrote no port file"; }
  wait_port "$MG_PORT_OUT" "$MG_PID_OUT" "modelgate ($name)" "$T/$name.log" 60
}

start_nginx_proxy() { # NAME PORT [main-context extra]
  local name=$1 port=$2
  {
    nginx_head "$name" "${3:-}"
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
    }
  }
}
EOF
  } >"$T/$name.conf"
}

for p in $BENCH_PEERS; do
  case $p in
  direct)
    PORT[direct]=$UP_PORT
    PID[direct]=$UP_PID
    ;;
  modelgate)
    start_modelgate modelgate
    PORT[modelgate]=$MG_PORT_OUT
    PID[modelgate]=$MG_PID_OUT
    ;;
  nginx)
    PORT[nginx]=$(free_port)
    start_nginx_proxy nginx "${PORT[nginx]}"
    nginx -c "$T/nginx.conf" -e "$T/nginx/error.log" >"$T/nginx.log" 2>&1 &
    PID[nginx]=$!
    PIDS+=("${PID[nginx]}")
    wait_port "${PORT[nginx]}" "${PID[nginx]}" "nginx proxy" "$T/nginx.log"
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

# A request through each peer must reach the canned upstream (its body carries
# this run's random id) and come back 200.
verify() {
  local p=$1 code h args=()
  while IFS= read -r h; do [ -n "$h" ] && args+=(-H "$h"); done <<<"${HDRS[$p]:-}"
  code=$(curl -s -m 10 -o "$T/verify.$p" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' "${args[@]}" --data-binary "$BODY" \
    "http://127.0.0.1:${PORT[$p]}$API" || true)
  if [ "$code" != 200 ] || ! grep -q "$TOKEN" "$T/verify.$p"; then
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
    echo "wrk.body = '$BODY'"
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

# CPU accounting, in clock ticks: the whole machine's busy time, and that of
# some processes with their children (nginx's worker is its master's child).
HZ=$(getconf CLK_TCK)
TIMEFORMAT='%3U %3S'
# user + nice + system + steal; irq and softirq are left out: loopback traffic
# is mostly softirq work done for our own processes.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $9; exit }' /proc/stat; }
proc_ticks() {
  local p q sum=0
  for p in "$@"; do
    for q in "$p" $(cat /proc/"$p"/task/*/children 2>/dev/null || true); do
      [ -r "/proc/$q/stat" ] || continue
      sum=$((sum + $(sed 's/.*) //' "/proc/$q/stat" | awk '{ print $12 + $13 }')))
    done
  done
  echo "$sum"
}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Busy CPU of the whole machine over 2 s, in % of one core (nothing of ours
# runs then: the peers are idle).
machine_busy() {
  local b0 b1
  b0=$(busy_ticks)
  sleep 2
  b1=$(busy_ticks)
  echo $(((b1 - b0) * 100 / HZ / 2))
}
if [ "$BENCH_QUIET_WAIT" -gt 0 ]; then
  waited=0
  while :; do
    busy=$(machine_busy)
    [ "$busy" -le 25 ] && break
    [ "$waited" -ge "$BENCH_QUIET_WAIT" ] && { log "machine still busy (${busy}% of a core); measuring anyway"; break; }
    log "machine busy (${busy}% of a core used by other processes); waiting for it to quieten"
    sleep 8
    waited=$((waited + 10))
  done
fi
IDLE_BUSY=$(machine_busy)
[ "$IDLE_BUSY" -le 25 ] || log "WARNING: other processes use ${IDLE_BUSY}% of a core: expect noisy figures"

RAW="$T/raw.tsv"
: >"$RAW"
read -r -a PEERS <<<"$BENCH_PEERS"
NP=${#PEERS[@]}
total=$((BENCH_RUNS * 2 * NP))
n=0
log "wrk: $BENCH_RUNS runs x {1,32} connections x $NP peers, ${BENCH_WARMUP}s warm-up + ${BENCH_SECONDS}s each (~$((total * (BENCH_SECONDS + BENCH_WARMUP + 1) / 60)) min)"
for run in $(seq "$BENCH_RUNS"); do
  for c in $CONNS_LIST; do
    # Rotate the order every run so that no peer always goes first or last.
    for k in $(seq 0 $((NP - 1))); do
      p=${PEERS[$(((k + run - 1) % NP))]}
      url="http://127.0.0.1:${PORT[$p]}$API"
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
start_modelgate mem
MEM_PID=$MG_PID_OUT
curl -s -m 10 -o /dev/null -X POST -H 'Content-Type: application/json' \
  --data-binary "$BODY" "http://127.0.0.1:$MG_PORT_OUT$API" || true
sleep 0.5
RSS_FRESH=$(vmrss_kib "$MEM_PID")
"$T/mgload" "$MG_PORT_OUT" "$BENCH_IDLE_CONNS" 0 --idle "$BENCH_IDLE_SECONDS" >"$T/idle.out" 2>&1 &
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
cg_load() { # PORT N NAME
  timeout 300 "$T/mgload" "$1" "$BENCH_CG_CONNS" "$2" >"$T/cg.$3.$2.load" 2>&1 ||
    { cat "$T/cg.$3.$2.load" >&2; die "mgload against $3 under callgrind failed"; }
}
CG_MG_1="" CG_MG_2="" CG_NG_1="" CG_NG_2=""
if [ "$BENCH_CALLGRIND" = 1 ]; then
  for N in "$BENCH_CG_N1" "$BENCH_CG_N2"; do
    log "callgrind: modelgate, $N requests"
    start_modelgate "cgmg$N" "valgrind --tool=callgrind --callgrind-out-file=$T/callgrind.modelgate.$N.out"
    pid=$MG_PID_OUT
    verify_port=$MG_PORT_OUT
    curl -s -m 30 -o /dev/null -X POST -H 'Content-Type: application/json' \
      --data-binary "$BODY" "http://127.0.0.1:$verify_port$API" || true
    cg_load "$verify_port" "$N" modelgate
    stop_pid "$pid" INT 60
    v=$(cg_total "$T/callgrind.modelgate.$N.out")
    [ -n "$v" ] || { tail -n 20 "$T/cgmg$N.log" >&2; die "no callgrind totals for modelgate ($N)"; }
    if [ "$N" = "$BENCH_CG_N1" ]; then CG_MG_1=$v; else CG_MG_2=$v; fi

    log "callgrind: nginx, $N requests"
    port=$(free_port)
    start_nginx_proxy "cgng$N" "$port" "master_process off;"
    valgrind --tool=callgrind --callgrind-out-file="$T/callgrind.nginx.$N.out" \
      nginx -c "$T/cgng$N.conf" -e "$T/cgng$N/error.log" >"$T/cgng$N.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid" "nginx under callgrind" "$T/cgng$N.log" 60
    curl -s -m 30 -o /dev/null -X POST -H 'Content-Type: application/json' \
      --data-binary "$BODY" "http://127.0.0.1:$port$API" || true
    cg_load "$port" "$N" nginx
    stop_pid "$pid" QUIT 60
    v=$(cg_total "$T/callgrind.nginx.$N.out")
    [ -n "$v" ] || { tail -n 20 "$T/cgng$N.log" >&2; die "no callgrind totals for nginx ($N)"; }
    if [ "$N" = "$BENCH_CG_N1" ]; then CG_NG_1=$v; else CG_NG_2=$v; fi
  done
fi

# ---- report ------------------------------------------------------------------------
fmt_int() { awk -v x="$1" 'BEGIN { if (x == "") print "n/a"; else printf "%.0f", x }'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

OUT="$T/report.md"
{
  echo "# modelgate benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- command: \`$COMMAND\`"
  echo "- machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "- modelgate: $("$MG" version | awk '{print $2}') at $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src CMakeLists.txt 2>/dev/null || echo ' (+ uncommitted changes in src/)'), $BUILD_TYPE, libuv $(pkg-config --modversion libuv 2>/dev/null || echo '?'), libcurl $(pkg-config --modversion libcurl 2>/dev/null || echo '?'); config: one target on the canned upstream, alias gpt-4o-mini, log_level warn, admin API on an ephemeral port, decision log on (the default; written to a temp dir)"
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
      case $p in
      direct) label="upstream directly" ;; modelgate) label="modelgate" ;;
      nginx) label="nginx proxy_pass" ;; haproxy) label="haproxy" ;;
      portkey) label="Portkey gateway" ;; esac
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
    dn=$((BENCH_CG_N2 - BENCH_CG_N1))
    IPR_MG=$(calc "($CG_MG_2 - $CG_MG_1) / $dn" 0)
    IPR_NG=$(calc "($CG_NG_2 - $CG_NG_1) / $dn" 0)
    echo "mgload at $BENCH_CG_CONNS connections; (I($BENCH_CG_N2) − I($BENCH_CG_N1)) / $dn requests."
    echo
    echo "| process | I($BENCH_CG_N1 req) | I($BENCH_CG_N2 req) | instructions / request |"
    echo "|---|--:|--:|--:|"
    echo "| modelgate | $CG_MG_1 | $CG_MG_2 | $IPR_MG |"
    echo "| nginx proxy_pass | $CG_NG_1 | $CG_NG_2 | $IPR_NG |"
    echo
    echo "modelgate ÷ nginx: $(calc "$IPR_MG / $IPR_NG")x"
  else
    echo "skipped (BENCH_CALLGRIND=0)"
  fi
  echo
  echo "## Targets"
  echo
  mg32=$(get 32 modelgate rps)
  ng32=$(get 32 nginx rps)
  r=$(calc "$mg32 / $ng32")
  add_mg=$(calc "$(get 1 modelgate p50) - $d50" 1)
  add_ng=$(calc "$(get 1 nginx p50) - $d50" 1)
  pf() { awk "BEGIN { exit !($1) }" && echo PASS || echo FAIL; }
  T1=$(pf "$mg32 >= 1.0 * $ng32")
  T2=$(pf "$add_mg <= $add_ng + 10")
  T3=$(pf "$RSS_IDLE <= 32 * 1024")
  echo "- $T1: throughput at 32 connections: modelgate $mg32 req/s = ${r}x nginx ($ng32 req/s); target ≥ 1.00x"
  echo "- $T2: latency added at 1 connection: modelgate $add_mg µs vs nginx $add_ng µs; target ≤ nginx + 10 µs ($(calc "$add_ng + 10" 1) µs)"
  echo "- $T3: modelgate RSS with $BENCH_IDLE_CONNS idle connections: $(calc "$RSS_IDLE / 1024" 1) MiB; target ≤ 32 MiB"
  echo
  echo "<details><summary>raw wrk results (run, conns, peer, req/s, p50 µs, p99 µs, errors, other CPU % of a core, peer CPU µs/request)</summary>"
  echo
  echo '```'
  cat "$RAW"
  echo '```'
  echo
  echo "</details>"
  echo
  echo "Finished in $(($(date +%s) - START_TS)) s."
} >"$OUT"

mkdir -p bench/out
cp "$OUT" bench/out/latest.md
cp "$RAW" bench/out/latest.raw.tsv
cat "$OUT"
log "report written to bench/out/latest.md"
if [ "$BENCH_STRICT" = 1 ] && grep -q '^- FAIL' "$OUT"; then exit 1; fi
exit 0
