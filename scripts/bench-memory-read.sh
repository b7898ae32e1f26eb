#!/usr/bin/env bash
# Cost of a VM's memory-by-node reading: cgroup counters vs /proc/PID/numa_maps, on real
# guests of each SIZE (MiB, all of it preallocated by QEMU), interleaved in one run.
#   bash scripts/bench-memory-read.sh [ROUNDS=50] [SIZE...=256 1024 4096]
# Ends only the VMs (by name) it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-50}; shift || true
SIZES=("${@:-256 1024 4096}")
read -r -a SIZES <<< "${SIZES[*]}"
PREFIX="pinsight-bench-mem-$$"
WORK=$(mktemp -d /tmp/pinsight-bench-mem.XXXXXX)
cleanup() {
  for s in "${SIZES[@]}"; do virsh -q -c qemu:///system destroy "$PREFIX-$s" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release --example memory_read_cost 2>&1 | grep -v '^warning: pinsight' | tail -1
for s in "${SIZES[@]}"; do
  cat > "$WORK/d$s.xml" <<XML
<domain type='kvm'><name>$PREFIX-$s</name><memory unit='MiB'>$s</memory>
<memoryBacking><allocation mode='immediate'/></memoryBacking><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
<devices><memballoon model='none'/></devices></domain>
XML
  virsh -q -c qemu:///system create "$WORK/d$s.xml" >/dev/null
  sleep 3
  pid=$(cat "/run/libvirt/qemu/$PREFIX-$s.pid")
  echo "== guest of $s MiB"
  target/release/examples/memory_read_cost --pid "$pid" --rounds "$ROUNDS"
  virsh -q -c qemu:///system destroy "$PREFIX-$s" >/dev/null
done
