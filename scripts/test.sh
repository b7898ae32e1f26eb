#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs every check: formatting, lints, operator
# artifacts, the Debian package, unit tests and the root integration tests against the real
# kernel, libvirtd and QEMU/KVM. A missing precondition makes the tests FAIL with the reason;
# nothing is skipped.
#
# Every step runs even when an earlier one failed, and every test binary runs even when
# another failed (--no-fail-fast), so one run shows everything that is wrong. The last line
# is always `N passed, N failed` over all test binaries; a failed step that is not a test
# (setup, fmt, clippy, an artifact check, the package, the test build, a test binary that
# died before its summary) counts as one failure there and is named just above it. The exit
# status is non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

failed_steps=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# step NAME COMMAND...: runs COMMAND; on failure says so and remembers NAME.
step() {
  local name=$1
  shift
  echo "== $name"
  if ! "$@"; then
    echo "test.sh: FAILED: $name" >&2
    failed_steps+=("$name")
  fi
}

check_dashboards() {
  python3 dashboards/extract_queries.py --lint --check-promtool '.*' '.*' 1m >/dev/null
}

step "setup (scripts/setup.sh)" bash scripts/setup.sh
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --release --all-targets -- -D warnings
step "alert rules (deploy/check-rules.sh)" bash deploy/check-rules.sh
step "systemd unit (deploy/check-unit.sh)" bash deploy/check-unit.sh
step "manifests (deploy/check-manifests.py)" python3 deploy/check-manifests.py
step "dashboard queries (dashboards/extract_queries.py)" check_dashboards
step "Debian package (deploy/build-deb.sh)" bash deploy/build-deb.sh

# Unit and root integration tests, one at a time: they pin real vCPUs to real CPUs.
echo "== cargo test"
cargo test --release --no-fail-fast -- --test-threads=1 2>&1 | tee "$log"
test_rc=${PIPESTATUS[0]}

# One summary line per test binary that finished; a binary that died (a signal, an abort)
# has none, but cargo names every failed binary with "to rerun pass".
read -r passed failed summaries_failed < <(awk '
  /^test result:/ { p += $4; f += $6; if ($3 == "FAILED.") sf++ }
  END { printf "%d %d %d\n", p, f, sf }' "$log")
targets_failed=$(grep -c '^error: test failed, to rerun pass' "$log")
if grep -q '^error: could not compile' "$log"; then
  failed_steps+=("cargo test: the build failed")
elif [ "$targets_failed" -gt "$summaries_failed" ]; then
  failed_steps+=("cargo test: $((targets_failed - summaries_failed)) test binary(ies) died before their summary")
elif [ "$test_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed_steps+=("cargo test: exited $test_rc without a failing test")
fi

if [ ${#failed_steps[@]} -gt 0 ]; then
  echo "test.sh: failed steps:" >&2
  printf '  - %s\n' "${failed_steps[@]}" >&2
fi
failed=$((failed + ${#failed_steps[@]}))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
