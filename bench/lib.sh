# bench/lib.sh - helpers shared by bench/run.sh, bench/outage.sh and
# bench/all.sh (sourced, not run). Each script sets BENCH_TAG (its name in
# log lines) and START_TS before sourcing, and calls bench_tmp_init before
# starting processes: everything it starts goes into PIDS and is stopped on
# exit or Ctrl-C, and its files go into the temp dir $T.
# shellcheck shell=bash

log() { printf '[%s %3ds] %s\n' "${BENCH_TAG:-bench}" "$(($(date +%s) - START_TS))" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "${BENCH_TAG:-bench}" "$*" >&2; exit 1; }

# ---- install what is missing ------------------------------------------------
# need_cmd COMMAND PACKAGE...: remember PACKAGE(s) when COMMAND is missing;
# install_missing then installs them all with apt-get (sudo when not root).
BENCH_MISSING=""
need_cmd() {
  local c=$1
  shift
  command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || BENCH_MISSING="$BENCH_MISSING $*"
}
install_missing() {
  local sudo=""
  [ -z "$BENCH_MISSING" ] && return 0
  log "installing Debian packages:$BENCH_MISSING"
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $BENCH_MISSING >/dev/null
  BENCH_MISSING=""
}

# Portkey's gateway, pinned in bench/package.json, into bench/node_modules.
PORTKEY_VERSION=1.15.2 # keep in step with bench/package.json
PK_DIR=bench/node_modules/@portkey-ai/gateway
install_portkey() {
  local have
  have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$PK_DIR/package.json" 2>/dev/null | head -1 || true)
  if [ "$have" != "$PORTKEY_VERSION" ]; then
    log "installing @portkey-ai/gateway@$PORTKEY_VERSION into bench/node_modules"
    (cd bench && timeout 600 npm install --no-audit --no-fund --loglevel=error >&2) ||
      die "npm install of @portkey-ai/gateway failed"
  fi
  [ -f "$PK_DIR/build/start-server.js" ] || die "$PK_DIR/build/start-server.js missing after npm install"
}

# build_modelgate DIR TARGET...: configure DIR (RelWithDebInfo) if needed and
# build the targets; sets BUILD_TYPE and MG (the modelgate binary).
build_modelgate() {
  local dir=$1
  shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    log "configuring $dir (RelWithDebInfo)"
    # shellcheck disable=SC1091
    . scripts/deps.sh
    # shellcheck disable=SC2086
    mg_install $MG_BUILD_PKGS
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  grep -q '^MG_SANITIZE:BOOL=ON' "$dir/CMakeCache.txt" &&
    die "$dir is a sanitizer build: set BENCH_BUILD_DIR to a plain RelWithDebInfo build"
  BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$dir/CMakeCache.txt")
  # What is being built, read now: others may commit while the bench runs.
  MG_BUILT_FROM="$(git rev-parse --short HEAD 2>/dev/null || echo '?') (src/ last changed in $(git log -1 --format=%h -- src CMakeLists.txt 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src CMakeLists.txt 2>/dev/null || echo '; + uncommitted changes in src/'))"
  log "building $* in $dir ($BUILD_TYPE) at $MG_BUILT_FROM"
  cmake --build "$dir" -j"$(nproc)" --target "$@" >/dev/null ||
    die "cmake --build $dir --target $* failed"
  MG="$ROOT/$dir/modelgate"
  [ -x "$MG" ] || die "$MG missing after the build"
}

# modelgate's version line for a report header.
modelgate_desc() {
  echo "$("$MG" version | awk '{print $2}') built at ${MG_BUILT_FROM:-?}, $BUILD_TYPE, libuv $(pkg-config --modversion libuv 2>/dev/null || echo '?'), libcurl $(pkg-config --modversion libcurl 2>/dev/null || echo '?')"
}
# shellcheck disable=SC1091
machine_desc() {
  echo "$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
}

# ---- temp dir, processes, cleanup -------------------------------------------
PIDS=()
bench_cleanup() {
  local pid alive
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ -n "${T:-}" ]; then
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then echo "${BENCH_TAG:-bench}: temp files kept in $T" >&2; else rm -rf "$T"; fi
  fi
}
bench_tmp_init() { # PREFIX
  T=$(mktemp -d "/tmp/$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

# Stop one process we started and wait for it (bounded).
stop_pid() {
  local pid=$1 sig=${2:-TERM} secs=${3:-10} keep=() q
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for _ in $(seq $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for q in "${PIDS[@]}"; do [ "$q" = "$pid" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

# ---- ports ------------------------------------------------------------------
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

# ---- CPU accounting and waiting for a quiet machine -------------------------
# In clock ticks: the whole machine's busy time, and that of some processes
# with their children (nginx's worker is its master's child).
HZ=$(getconf CLK_TCK)
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
# Busy CPU of the whole machine over 2 s, in % of one core (call it while
# nothing of ours runs).
machine_busy() {
  local b0 b1
  b0=$(busy_ticks)
  sleep 2
  b1=$(busy_ticks)
  echo $(((b1 - b0) * 100 / HZ / 2))
}
# Wait up to BENCH_QUIET_WAIT seconds for other processes to use at most 25%
# of a core; sets IDLE_BUSY to the last reading.
quiet_wait() {
  local waited=0 busy
  if [ "${BENCH_QUIET_WAIT:-0}" -gt 0 ]; then
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
  return 0
}
# Median and max of numbers on stdin, "median max" (empty input: "0 0").
median_max() {
  sort -n | awk '{ v[++n] = $1 } END { if (!n) { print "0 0"; exit } print v[int((n + 1) / 2)], v[n] }'
}

# ---- the canned upstream (nginx) --------------------------------------------
NGINX_USER=""
[ "$(id -u)" -eq 0 ] && NGINX_USER="user root root;"
API=/v1/chat/completions

# nginx config common head: one worker, no access log, temp paths in $T.
nginx_head() { # NAME [extra main-context lines] [WORKERS]
  local d="$T/$1"
  mkdir -p "$d"
  cat <<EOF
$NGINX_USER
worker_processes ${3:-1};
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

# start_canned_upstream: nginx answering POST $API with CANNED, a chat
# completion whose id is TOKEN (random per run, so a check that an answer
# carries it proves the answer came from this upstream). Sets UP_PORT, UP_PID.
start_canned_upstream() {
  TOKEN="chatcmpl-bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  CANNED='{"id":"'$TOKEN'","object":"chat.completion","created":1700000000,"model":"canned-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark! This is a canned answer."},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":9,"total_tokens":23}}'
  # The same answer as an OpenAI Responses object and as an Anthropic
  # message (issue 14's rows), the run's id in the text.
  CANNED_RESP='{"id":"resp_bench","object":"response","created_at":1700000000,"status":"completed","model":"canned-model","output":[{"type":"message","id":"msg_bench","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello, benchmark! '$TOKEN'","annotations":[]}]}],"usage":{"input_tokens":14,"output_tokens":9,"total_tokens":23}}'
  CANNED_MSG='{"id":"msg_bench","type":"message","role":"assistant","model":"canned-model","content":[{"type":"text","text":"Hello, benchmark! '$TOKEN'"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":14,"output_tokens":9}}'
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
    location = /v1/responses {
      default_type application/json;
      return 200 '$CANNED_RESP';
    }
    location = /v1/messages {
      default_type application/json;
      return 200 '$CANNED_MSG';
    }
  }
}
EOF
  } >"$T/upstream.conf"
  nginx -c "$T/upstream.conf" -e "$T/upstream/error.log" >"$T/upstream.log" 2>&1 &
  UP_PID=$!
  PIDS+=("$UP_PID")
  wait_port "$UP_PORT" "$UP_PID" "canned upstream (nginx)" "$T/upstream.log"
}

# start_modelgate NAME CONFIG_JSON [COMMAND_PREFIX]: modelgate on an
# ephemeral port with CONFIG_JSON in $T/NAME.json, its working directory (and
# so its decision log) in $T/NAME.cwd. Sets MG_PORT_OUT and MG_PID_OUT.
start_modelgate_cfg() {
  local name=$1 cfg=$2 cmd_prefix=${3:-}
  printf '%s\n' "$cfg" >"$T/$name.json"
  rm -f "$T/$name.port"
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

# The end of a report: the raw results in a collapsed block and the run's
# length (inside the report's { ... } >"$OUT" group).
raw_footer() { # SUMMARY RAW_FILE [NOTE]
  echo "<details><summary>$1</summary>"
  echo
  if [ -n "${3:-}" ]; then
    echo "$3"
    echo
  fi
  echo '```'
  cat "$2"
  echo '```'
  echo
  echo "</details>"
  echo
  echo "Finished in $(($(date +%s) - START_TS)) s."
}

# Copy a finished report and its data to bench/out/NAME.md, NAME.raw.tsv and
# NAME.figures.tsv, print it, and exit: 1 under BENCH_STRICT=1 when a
# target FAILs, else 0.
publish_report() { # NAME
  mkdir -p bench/out
  cp "$OUT" "bench/out/$1.md"
  cp "$RAW" "bench/out/$1.raw.tsv"
  cp "$FIG" "bench/out/$1.figures.tsv"
  cat "$OUT"
  log "report written to bench/out/$1.md"
  if [ "$BENCH_STRICT" = 1 ] && grep -q '^- FAIL' "$OUT"; then exit 1; fi
  exit 0
}
