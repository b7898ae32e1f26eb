#!/usr/bin/env bash
# Regenerates the README's pictures of the placement map at / from the browser tests
# (monitor/tests/page_browser.rs, headless Chromium): docs/placement-map.png (a real busy VM
# on the two-socket fixture, after its vCPU was repinned to the far socket) and
# docs/placement-map-100x8.png (the synthetic 100 VM x 8 vCPU host on 2 x 64 cores).
# Root: the first test starts a real VM and the daemon. Where several people share the host,
# set PINSIGHT_TEST_LOCK to the lock file that serializes VM tests (flock).
# Usage: sudo bash scripts/screenshot.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo test --release --no-run --test page_browser
run=(cargo test --release --test page_browser -- --test-threads=1)
if [ -n "${PINSIGHT_TEST_LOCK:-}" ]; then
  flock "$PINSIGHT_TEST_LOCK" "${run[@]}"
else
  "${run[@]}"
fi
target=${CARGO_TARGET_DIR:-target}
mkdir -p docs
cp "$target/page-browser/remote.png" docs/placement-map.png
cp "$target/page-browser/scale-100x8.png" docs/placement-map-100x8.png
echo "screenshot: docs/placement-map.png and docs/placement-map-100x8.png updated"
