#!/usr/bin/env bash
# Checks the alert and recording rules (syntax, lint), runs their unit tests, and checks the scrape config
# snippet (which loads the rules) with promtool.
# Usage: deploy/check-rules.sh        (from anywhere; exits non-zero on any failure)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v promtool >/dev/null 2>&1; then
  echo "check-rules: promtool not found; install it with 'apt-get install prometheus'" \
       "(Debian/Ubuntu; scripts/setup.sh does this) or put the Prometheus release's promtool on PATH" >&2
  exit 2
fi

echo "check-rules: $(promtool --version 2>&1 | head -n1)"
promtool check rules "$here/pinsight.rules.yml" "$here/pinsight.recording.yml"
promtool test rules "$here/tests/pinsight.rules.test.yml" "$here/tests/pinsight.recording.test.yml"
promtool check config "$here/prometheus-scrape.yml"
echo "check-rules: OK"
