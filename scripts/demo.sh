#!/usr/bin/env bash
# See it work on a host without GPUs, in under a minute: starts a busy KVM guest whose
# (fixture) GPU sits on the far socket of a two-socket fixture topology, runs the daemon on
# that fixture, and prints `pinsight status` as the vCPU is moved from the far socket to the
# GPU's socket. Cleans up the VM and the daemon it started on exit (Ctrl-C included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cargo build --release 2>&1 | grep -v '^warning: pinsight' | tail -1

NAME="pinsight-demo-$$"
ADDR="127.0.0.1:${PINSIGHT_DEMO_PORT:-9813}"
WORK=$(mktemp -d /tmp/pinsight-demo.XXXXXX)
DAEMON_PID=""
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  virsh -q -c qemu:///system destroy "$NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

GUEST=$(bash scripts/build-spin-guest.sh "$WORK" 2000)
cat > "$WORK/domain.xml" <<XML
<domain type='kvm'>
  <name>$NAME</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <metadata>
    <pinsight:domain xmlns:pinsight="urn:pinsight:domain:1">
      <pinsight:gpu address="0000:3b:00.0"/>
    </pinsight:domain>
  </metadata>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>$GUEST</kernel></os>
  <devices><serial type='pty'/></devices>
</domain>
XML
virsh -q -c qemu:///system create "$WORK/domain.xml" >/dev/null
echo "started VM $NAME (busy guest); its GPU 0000:3b:00.0 is on node 1 = socket 1 (CPU 1) of the fixture"
virsh -q -c qemu:///system vcpupin "$NAME" 0 0 --live
echo "pinned its vCPU to CPU 0: the far socket"

FIXTURE=monitor/tests/fixtures/sysfs/two-socket-gpu
printf 'listen = "%s"\nsysfs_root = "%s"\nremote_ratio_window_seconds = 5.0\n' "$ADDR" "$FIXTURE" > "$WORK/pinsight.toml"
target/release/pinsight run --config "$WORK/pinsight.toml" 2> "$WORK/daemon.log" &
DAEMON_PID=$!
sleep 8
echo; echo "\$ pinsight status --addr $ADDR     (vCPU on the far socket)"
target/release/pinsight status --addr "$ADDR"
virsh -q -c qemu:///system vcpupin "$NAME" 0 1 --live
echo; echo "moved the vCPU to CPU 1, the GPU's socket; waiting 8 s"
sleep 8
echo; echo "\$ pinsight status --addr $ADDR     (vCPU next to its GPU)"
target/release/pinsight status --addr "$ADDR"
echo; echo "metrics: curl -s http://$ADDR/metrics | grep ^pinsight_domain"
curl -s "http://$ADDR/metrics" | grep '^pinsight_domain_\(remote\|run\)' || true
