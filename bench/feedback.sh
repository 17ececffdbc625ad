#!/usr/bin/env bash
# bench/feedback.sh - feedback ingestion beside chat (issue 15, Performance):
# req/s of POST /v1/feedback (one item, and batches of 20) next to
# POST /v1/chat/completions through a flag, on the same modelgate, with wrk
# on loopback against mg-mock. The decision log is on (a file in the temp
# dir): feedback lines go through the same writer as the records.
#
#   bench/feedback.sh                 # 5 s per measurement, 8 connections
#   FB_SECONDS=10 FB_CONNS=32 bench/feedback.sh
#
# Output: a small Markdown table on stdout. Needs wrk and a RelWithDebInfo
# build in $FB_BUILD_DIR (default build).
set -euo pipefail
FB_SECONDS=${FB_SECONDS:-5}
FB_CONNS=${FB_CONNS:-8}
FB_BUILD_DIR=${FB_BUILD_DIR:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MG=$ROOT/$FB_BUILD_DIR/modelgate
MOCK=$ROOT/$FB_BUILD_DIR/mg-mock
command -v wrk >/dev/null || { echo "feedback.sh: wrk is needed" >&2; exit 1; }
[ -x "$MG" ] && [ -x "$MOCK" ] || { echo "feedback.sh: build $FB_BUILD_DIR first" >&2; exit 1; }

T=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

port_of() { # FILE KEY: wait for KEY=PORT in a port file
  local i
  for i in $(seq 1 100); do
    if [ -s "$1" ] && grep -q "^$2=" "$1"; then
      sed -n "s/^$2=//p" "$1"
      return 0
    fi
    sleep 0.1
  done
  echo "feedback.sh: no port in $1" >&2
  exit 1
}

"$MOCK" --listen 127.0.0.1:0 --port-file "$T/mock.port" --quiet 2>"$T/mock.log" &
PIDS+=($!)
MOCK_PORT=$(port_of "$T/mock.port" listen)
cat >"$T/mg.json" <<JSON
{"admin": {"listen": "127.0.0.1:0", "state_file": "$T/state.json"},
 "server": {"listen": "127.0.0.1:0", "log_level": "warn"},
 "decision_log": {"path": "$T/decisions.jsonl"},
 "feedback": {"metrics": {"thumbs_up": {"type": "boolean"}},
              "rate_per_client": {"per_second": 1000000, "burst": 10000000}},
 "targets": {"old": {"base_url": "http://127.0.0.1:$MOCK_PORT/v1", "model": "m-old"},
             "new": {"base_url": "http://127.0.0.1:$MOCK_PORT/v1", "model": "m-new"}},
 "flags": {"chat": {"off_variant": "old", "variants": {
   "old": {"target": "old", "weight": 50}, "new": {"target": "new", "weight": 50}}}},
 "aliases": {"gpt": {"flag": "chat"}}}
JSON
"$MG" serve -c "$T/mg.json" --port-file "$T/mg.port" 2>"$T/mg.log" &
PIDS+=($!)
PORT=$(port_of "$T/mg.port" listen)

# A decision id to name (any 32 hex digits would be accepted).
ID=$(curl -s -D - -o /dev/null "http://127.0.0.1:$PORT/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -d '{"model":"gpt","user":"u1","messages":[{"role":"user","content":"hi"}]}' |
  tr -d '\r' | sed -n 's/^x-modelgate-decision: //p')
ITEM="{\"decision_id\":\"$ID\",\"metric\":\"thumbs_up\",\"value\":true}"
BATCH="[$ITEM$(for _ in $(seq 2 20); do printf ',%s' "$ITEM"; done)]"

lua() { # FILE PATH BODY
  cat >"$1" <<LUA
wrk.method = "POST"
wrk.path = "$2"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[$3]==]
LUA
}
lua "$T/chat.lua" /v1/chat/completions \
  '{"model":"gpt","user":"u1","messages":[{"role":"user","content":"hello"}]}'
lua "$T/one.lua" /v1/feedback "$ITEM"
lua "$T/batch.lua" /v1/feedback "$BATCH"

rps() { # LUA: requests per second over FB_SECONDS (non-2xx answers fail)
  local out
  out=$(wrk -t2 -c"$FB_CONNS" -d"${FB_SECONDS}s" -s "$1" "http://127.0.0.1:$PORT" 2>&1)
  if printf '%s' "$out" | grep -q 'Non-2xx\|Error\|error'; then
    printf 'feedback.sh: %s:\n%s\n' "$1" "$out" >&2
    exit 1
  fi
  printf '%s' "$out" | sed -n 's/^Requests\/sec: *//p'
}
CHAT=$(rps "$T/chat.lua")
ONE=$(rps "$T/one.lua")
BATCH_RPS=$(rps "$T/batch.lua")
ITEMS=$(awk -v r="$BATCH_RPS" 'BEGIN { printf "%.0f", r * 20 }')
DROPPED=$(curl -s "http://127.0.0.1:$PORT/metrics" |
  sed -n 's/^modelgate_decision_log_dropped_total //p')

cat <<MD
| $FB_CONNS connections, ${FB_SECONDS} s each | req/s |
|---|---|
| POST /v1/chat/completions (through a flag, mock upstream) | $CHAT |
| POST /v1/feedback, one item | $ONE |
| POST /v1/feedback, batches of 20 | $BATCH_RPS ($ITEMS items/s) |

decision-log lines dropped: ${DROPPED:-0}
MD
