#!/usr/bin/env bash
# check.sh - the deploy/ files checked (issue 16.4): the alert rules parse
# (promtool check rules) and fire when they should (promtool test rules on
# tests/deploy/alerts_test.yml); the Grafana dashboard has the fields Grafana
# needs and queries only metrics modelgate exports (check_deploy.py).
# scripts/test.sh runs it; so does ctest (test_deploy), which skips (77)
# when promtool or python3 is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in promtool python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "check.sh: $tool is not installed (scripts/deps.sh installs it): skipping"
    exit 77
  fi
done
promtool check rules deploy/prometheus/alerts.yml
(cd tests/deploy && promtool test rules alerts_test.yml)
python3 tests/deploy/check_deploy.py .
