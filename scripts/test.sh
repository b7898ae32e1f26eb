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
for check in deploy/check-rules.sh deploy/check-unit.sh; do
  [ -f "$check" ] && bash "$check"
done
[ -f deploy/check-manifests.py ] && python3 deploy/check-manifests.py
echo "== cargo test (unit and root integration tests, one at a time: they pin real vCPUs)"
cargo test --release --workspace -- --test-threads=1
