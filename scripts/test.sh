#!/usr/bin/env bash
# test.sh - install what is missing, build, and run every test: once in a
# normal build and once under AddressSanitizer + UndefinedBehaviorSanitizer.
# CI runs this (through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
mg_install $MG_BUILD_PKGS $MG_TEST_PKGS
mg_install_node
mg_sdk_modules

echo "== deploy: alert rules and the Grafana dashboard"
# promtool check rules and test rules on deploy/prometheus/alerts.yml, and
# the dashboard's fields and metric names (tests/deploy/check_deploy.py).
tests/deploy/check.sh

jobs=$(nproc 2>/dev/null || echo 2)
run_suite() {
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j"$jobs")
}

echo "== build and test (RelWithDebInfo)"
run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "== build and test under ASan + UBSan"
# detect_leaks stays on: every test binary and every server the integration
# tests start must exit without leaks.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DMG_SANITIZE=ON
unset ASAN_OPTIONS UBSAN_OPTIONS
echo "== build with clang and test under ThreadSanitizer"
# The workers share the runtime, the telemetry and the decision log: every
# test runs with two of them, and TSan must find no race.
export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1"
CC=clang run_suite build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMG_TSAN=ON
echo "== fuzz the client connection for a bounded time"
# fuzz_conn (tests/fuzz/fuzz_conn.c): client bytes through a whole
# connection, many requests per input. New inputs go to a scratch corpus;
# the seeds in tests/fuzz/corpus/conn are only read. A crash fails CI and
# leaves its input in build-fuzz/.
CC=clang cmake -S . -B build-fuzz -DMG_FUZZ=ON -DMG_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_conn
fuzz_work=$(mktemp -d)
build-fuzz/tests/fuzz/fuzz_conn -max_total_time=30 -timeout=10 \
  -dict=tests/fuzz/conn.dict -artifact_prefix=build-fuzz/ \
  -print_final_stats=1 "$fuzz_work" tests/fuzz/corpus/conn
rm -rf "$fuzz_work"
echo "== all tests passed"
