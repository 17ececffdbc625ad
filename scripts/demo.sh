#!/usr/bin/env bash
# demo.sh - install what is missing, build, start the mock model server and
# modelgate on its built-in demo config (conf/demo.json), and show a few
# requests going through. Ctrl-C stops both.
#
#   MG_DEMO_EXIT=1 scripts/demo.sh   run the walkthrough, then stop
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
mg_install $MG_BUILD_PKGS curl

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMG_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

logs=$(mktemp -d)
cleanup() {
  [ -n "${gate:-}" ] && kill -TERM "$gate" 2>/dev/null && wait "$gate" 2>/dev/null || true
  [ -n "${mock:-}" ] && kill -TERM "$mock" 2>/dev/null && wait "$mock" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

./build/mg-mock --listen 127.0.0.1:9900 --quiet 2>"$logs/mock.log" &
mock=$!
# The demo's admin token, so that the walkthrough can flip the kill switch.
export MODELGATE_ADMIN_TOKEN=demo-token
# The demo config's state file and decision log are relative paths: they go
# into a directory of the demo's own (never the shared /tmp, where anyone
# could plant a symlink in their place).
run=build/demo
rm -rf "$run" && mkdir -p "$run"
(cd "$run" && exec ../modelgate serve) 2>"$logs/modelgate.log" &
gate=$!
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf http://127.0.0.1:8080/readyz >/dev/null || {
  echo "modelgate did not start; its log:" >&2; cat "$logs/modelgate.log" >&2; exit 1; }

show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; eval "$@"; echo; }

echo "modelgate is listening on http://127.0.0.1:8080 (mock upstream on :9900, admin API on :8081)"
echo "# gpt-4o is a flag: 90% of users get mock-large, 10% mock-small; the headers say which and why"
show "curl -si http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' -d '{\"model\":\"gpt-4o\",\"user\":\"alice\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}'"
echo "# a targeting rule: free-tier users get the small model"
show "curl -s -D - -o /dev/null http://127.0.0.1:8080/v1/chat/completions -H 'x-modelgate-attr-tier: free' -d '{\"model\":\"gpt-4o\",\"user\":\"alice\",\"messages\":[]}' | grep -i x-modelgate"
echo "# the kill switch, through the admin API: everyone gets the off variant from the next request on"
show "curl -s -X POST -H 'authorization: Bearer demo-token' http://127.0.0.1:8081/admin/flags/chat-model/kill | head -c 160"
show "curl -s -D - -o /dev/null http://127.0.0.1:8080/v1/chat/completions -d '{\"model\":\"gpt-4o\",\"user\":\"alice\",\"messages\":[]}' | grep -i x-modelgate-reason"
curl -s -X POST -H 'authorization: Bearer demo-token' http://127.0.0.1:8081/admin/flags/chat-model/unkill >/dev/null
show "curl -sN http://127.0.0.1:8080/v1/chat/completions -d '{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Stream please\"}]}'"
show "curl -s http://127.0.0.1:8080/v1/embeddings -d '{\"model\":\"text-embedding-3-small\",\"input\":\"hi\"}'"
echo "# an unknown model goes to the default route (gpt-4o-mini):"
show "curl -s http://127.0.0.1:8080/v1/chat/completions -d '{\"model\":\"some-other-model\",\"messages\":[]}'"
echo "# bad input gets an OpenAI-shaped error:"
show "curl -si http://127.0.0.1:8080/v1/chat/completions -d '{\"model\":'"
echo "# the large model hangs: after first_byte_ms (1.5 s) the small model answers instead"
curl -s http://127.0.0.1:9900/_mock/behaviour -d '{"model":"large-v2","mode":"hang"}' >/dev/null
show "curl -s -D - -o /dev/null http://127.0.0.1:8080/v1/chat/completions -d '{\"model\":\"gpt-4o\",\"user\":\"alice\",\"messages\":[]}' | grep -i -E 'x-modelgate-(served-by|fallback)'"
echo "# ...and both hang: the last tier is a fixed, non-AI answer"
curl -s http://127.0.0.1:9900/_mock/behaviour -d '{"model":"*","mode":"hang"}' >/dev/null
show "curl -s http://127.0.0.1:8080/v1/chat/completions -d '{\"model\":\"gpt-4o-mini\",\"messages\":[]}'"
curl -s -X DELETE http://127.0.0.1:9900/_mock/behaviour >/dev/null
show "curl -s http://127.0.0.1:8080/metrics | grep -E '^modelgate_(requests_total|flag_requests_total|fallbacks_total)'"

echo "# every request left a decision record (prompts and answers never written):"
show "tail -n 1 build/demo/modelgate-demo.decisions.jsonl"
echo "# 300 users call gpt-4o; then compare the two arms of the flag, per user:"
for i in $(seq 300); do
  [ "$i" -gt 1 ] && echo next
  printf 'silent\nurl = "http://127.0.0.1:8080/v1/chat/completions"\ndata = "{\\"model\\":\\"gpt-4o\\",\\"user\\":\\"user-%d\\",\\"messages\\":[{\\"role\\":\\"user\\",\\"content\\":\\"Hi\\"}]}"\noutput = "/dev/null"\n' "$i"
done >"$logs/users.curl"
curl -s --parallel --parallel-max 8 -K "$logs/users.curl" 2>/dev/null
sleep 0.5 # the log writer flushes every 200 ms
show "./build/modelgate report --flag chat-model build/demo/modelgate-demo.decisions.jsonl | sed -n '1,24p'"

if [ "${MG_DEMO_EXIT:-0}" = 1 ]; then
  exit 0
fi
echo "Try it with an OpenAI SDK: base_url=http://127.0.0.1:8080/v1, any api_key."
echo "Logs: $logs. Press Ctrl-C to stop."
wait "$gate"
