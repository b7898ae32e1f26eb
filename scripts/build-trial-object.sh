#!/usr/bin/env bash
# Builds the eBPF object of a trial: this repository at REV with PATCH applied (one of
# docs/trials/*.patch; "none" for REV as it is), compiled as monitor/build.rs (aya-build)
# compiles the daemon's probes, and copied to OUT. The clone is made in a temporary directory
# and removed afterwards.
#
#   scripts/build-trial-object.sh docs/trials/floor-two-loads.patch /tmp/floor-two.o b2df0d2
#   scripts/build-trial-object.sh none /tmp/base.o b2df0d2
#
# The benchmarks (monitor/examples/*_cost) compare such objects with --compare LABEL=OUT.
set -euo pipefail

die() { printf 'build-trial-object: error: %s\n' "$*" >&2; exit 2; }

[ $# -eq 3 ] || die "usage: $0 PATCH OUT.o REV (PATCH from docs/trials, REV the commit it applies to)"
[ "$1" = none ] || [ -f "$1" ] || die "patch $1: no such file"
patch=none
[ "$1" = none ] || patch=$(realpath "$1")
out=$(realpath -m "$2")
rev=$3
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)

work=$(mktemp -d /tmp/pinsight-trial.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/src"
git -C "$work/src" checkout -q "$rev" || die "no commit $rev in $repo"
if [ "$patch" != none ]; then
    git -C "$work/src" apply "$patch" || die "$1 does not apply to $rev"
fi
# The flags aya-build passes: BTF in the object, so maps and globals load as the daemon's do.
flags=$(printf '%s\x1f%s\x1f%s' '--cfg=bpf_target_arch="x86_64"' -Cdebuginfo=2 -Clink-arg=--btf)
(cd "$work/src/monitor-ebpf" &&
    CARGO_ENCODED_RUSTFLAGS=$flags cargo +nightly build --quiet --package monitor-ebpf \
        -Z build-std=core --bins --release --target bpfel-unknown-none \
        --target-dir "$work/target")
cp "$work/target/bpfel-unknown-none/release/monitor" "$out"
echo "$out: $(basename "$patch") on $rev"
