#!/usr/bin/env bash
# deps.sh - install the Debian packages modelgate needs, if any are missing.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail

# Build: compiler, CMake, and the libraries named in the README.
MG_BUILD_PKGS="gcc make cmake pkg-config libuv1-dev libcurl4-openssl-dev
  libcjson-dev libxxhash-dev libcmocka-dev node-llhttp ca-certificates"
# Tests: nginx terminates TLS in front of the mock for the HTTPS upstream
# test; openssl makes its certificate; curl drives the demo.
MG_TEST_PKGS="nginx-light openssl curl chromium"

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
