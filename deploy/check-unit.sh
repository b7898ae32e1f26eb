#!/usr/bin/env bash
# Checks deploy/pinsight.service with systemd's own tools:
#   1. systemd-analyze verify: syntax, known keys and values, ExecStart binary present;
#   2. systemd-analyze security --offline: the sandbox's exposure score stays at or below 3.0.
# When /usr/bin/pinsight is not installed (a build machine), a temporary copy of the unit
# whose ExecStart runs /bin/true with the same arguments is checked instead; everything
# else in the unit is checked as is. Exits non-zero on any error or warning.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
unit="$here/pinsight.service"
max_exposure=30   # systemd-analyze's scale: 30 = "3.0", still "OK"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-unit: systemd-analyze not found; install the 'systemd' package" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [ -x /usr/bin/pinsight ]; then
  cp "$unit" "$tmp/pinsight.service"
else
  echo "check-unit: /usr/bin/pinsight not installed; verifying a copy with ExecStart=/bin/true"
  sed 's#^ExecStart=/usr/bin/pinsight #ExecStart=/bin/true #' "$unit" > "$tmp/pinsight.service"
  grep -q '^ExecStart=/bin/true run --config ' "$tmp/pinsight.service" \
    || { echo "check-unit: ExecStart no longer starts with /usr/bin/pinsight" >&2; exit 1; }
fi

# verify exits 0 on warnings (unknown keys, bad values are "ignored"), so any output fails.
out="$(cd "$tmp" && systemd-analyze verify ./pinsight.service 2>&1)" || {
  printf '%s\n' "$out" >&2; echo "check-unit: systemd-analyze verify failed" >&2; exit 1; }
if [ -n "$out" ]; then
  printf '%s\n' "$out" >&2
  echo "check-unit: systemd-analyze verify printed warnings" >&2
  exit 1
fi
echo "check-unit: systemd-analyze verify: OK"

# --offline needs systemd >= 250 (Debian 12 has 252).
if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
  (cd "$tmp" && systemd-analyze security --offline=yes --no-pager \
      --threshold="$max_exposure" ./pinsight.service) > "$tmp/security.txt" 2>&1 || {
    cat "$tmp/security.txt" >&2
    echo "check-unit: exposure above $max_exposure (see the list above)" >&2
    exit 1
  }
  echo "check-unit: $(grep 'Overall exposure' "$tmp/security.txt")"
else
  echo "check-unit: systemd-analyze security --offline not supported by this systemd; skipped"
fi
echo "check-unit: OK"
