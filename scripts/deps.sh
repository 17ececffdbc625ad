#!/usr/bin/env bash
# deps.sh - install the Debian packages modelgate needs, if any are missing.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail

# Build: compiler, CMake, and the libraries named in the README.
MG_BUILD_PKGS="gcc make cmake pkg-config libuv1-dev libcurl4-openssl-dev
  libcjson-dev libxxhash-dev libcmocka-dev node-llhttp ca-certificates
  libssl-dev libhiredis-dev"
# Tests: nginx terminates TLS in front of the mock for the HTTPS upstream
# test; openssl makes its certificate; curl drives the demo. prometheus
# ships promtool, which checks deploy/prometheus/alerts.yml; python3 runs
# tests/deploy/check_deploy.py on the Grafana dashboard.
MG_TEST_PKGS="nginx-light openssl curl chromium clang libclang-rt-14-dev
  redis-server prometheus python3"
# The SDK test (tests/integration/test_sdk.c) runs the official Node SDKs
# (openai, @anthropic-ai/sdk), installed into tests/sdk/node_modules by
# mg_sdk_modules below.
MG_NODE_PKGS="nodejs npm"

mg_missing() {
  local p missing=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing="$missing $p"
  done
  echo "$missing"
}

mg_install() {
  # shellcheck disable=SC2086
  local missing
  missing=$(mg_missing $*)
  [ -z "$missing" ] && return 0
  echo "modelgate: installing:$missing" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Node.js and npm, unless both commands are there already: they are looked
# for by command, not by package, because a machine may carry NodeSource's
# nodejs, which bundles npm and conflicts with Debian's npm package.
mg_install_node() {
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  # shellcheck disable=SC2086
  mg_install $MG_NODE_PKGS
}

# tests/sdk/node_modules exactly as tests/sdk/package-lock.json pins it:
# `npm ci` when it is missing or was installed from another package.json or
# lock file (a stamp of both is kept in node_modules).
mg_sdk_modules() {
  local dir=tests/sdk stamp
  stamp=$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)
  [ "$(cat "$dir/node_modules/.mg-stamp" 2>/dev/null)" = "$stamp" ] && return 0
  echo "modelgate: npm ci in $dir" >&2
  npm_config_update_notifier=false timeout 600 \
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error </dev/null >/dev/null
  echo "$stamp" >"$dir/node_modules/.mg-stamp"
}
