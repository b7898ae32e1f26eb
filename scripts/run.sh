#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), builds pinsight and runs the daemon against this
# host. Extra arguments go to `pinsight run` (see `pinsight run --help`), e.g.
#   bash scripts/run.sh --listen 127.0.0.1:9812 --config deploy/pinsight.toml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The dist profile (Cargo.toml): what the .deb ships, smaller and lighter in memory; its
# first build takes a few minutes longer than --release.
cargo build --profile dist
exec target/dist/pinsight run "$@"
