#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs every test: formatting, lints, unit tests,
# and the root integration tests against the real kernel, libvirtd and QEMU/KVM.
# A missing precondition makes the tests FAIL with the reason; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --all-targets -- -D warnings
echo "== operator artifacts (alert rules, systemd unit, manifests)"
bash deploy/check-rules.sh
bash deploy/check-unit.sh
python3 deploy/check-manifests.py
python3 dashboards/extract_queries.py --lint --check-promtool '.*' '.*' 1m >/dev/null
echo "== Debian package (cargo deb; contents checked)"
bash deploy/build-deb.sh >/dev/null
echo "== cargo test (unit and root integration tests, one at a time: they pin real vCPUs)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release -- --test-threads=1 2>&1 | tee "$log"
# One closing line over all test binaries (cargo prints one per binary, the last being an
# empty doc-test run).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
