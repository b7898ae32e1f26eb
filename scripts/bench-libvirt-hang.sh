#!/usr/bin/env bash
# How fast a hung libvirtd shows: runs the daemon with the DEFAULT timing (tick 1 s, rescan
# 5 s, libvirt_timeout_seconds 5 s) on the two-socket fixture, stops libvirtd (SIGSTOP) at a
# random point of the daemon's cycle, and times until /metrics says pinsight_libvirt_up 0, then
# after SIGCONT until it says 1 again. RUNS rounds; prints each and the median and range.
#   bash scripts/bench-libvirt-hang.sh [RUNS=5]
# Continues libvirtd whatever happens; ends only the daemon (by pid) it started.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
WORK=$(mktemp -d /tmp/pinsight-bench-hang.XXXXXX)
ADDR="127.0.0.1:${PINSIGHT_BENCH_PORT:-9815}"
LIBVIRTD=$(cat /run/libvirtd.pid)
DAEMON_PID=""
cleanup() {
  kill -CONT "$LIBVIRTD" 2>/dev/null || true
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release 2>&1 | grep -v '^warning: pinsight' | tail -1
printf 'listen = "%s"\nsysfs_root = "monitor/tests/fixtures/sysfs/two-socket-gpu"\n' "$ADDR" > "$WORK/pinsight.toml"
target/release/pinsight run --config "$WORK/pinsight.toml" --lock-file "$WORK/lock" 2> "$WORK/daemon.log" &
DAEMON_PID=$!
up() { curl -s "http://$ADDR/metrics" | awk '$1 == "pinsight_libvirt_up" {print $2}'; }
# Seconds until up() prints $1 (polled every 50 ms), at most 30 s.
until_up() {
  local want=$1 t0; t0=$(date +%s.%N)
  while [ "$(up)" != "$want" ]; do
    sleep 0.05
    if (( $(echo "$(date +%s.%N) - $t0 > 30" | bc) )); then echo "timeout"; return; fi
  done
  echo "$(date +%s.%N) - $t0" | bc
}
until_up 1 >/dev/null
down_times=(); up_times=()
for i in $(seq 1 "$RUNS"); do
  sleep "$(awk -v s="$RANDOM" 'BEGIN {srand(s); printf "%.2f", 2 + 5 * rand()}')"
  kill -STOP "$LIBVIRTD"
  d=$(until_up 0)
  sleep 2
  kill -CONT "$LIBVIRTD"
  u=$(until_up 1)
  echo "round $i: SIGSTOP -> up 0 in ${d} s; SIGCONT -> up 1 in ${u} s"
  down_times+=("$d"); up_times+=("$u")
done
summary() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "median %.2f s, range %.2f-%.2f s", a[int((NR+1)/2)], a[1], a[NR]}'; }
echo "SIGSTOP -> pinsight_libvirt_up 0: $(summary "${down_times[@]}") over $RUNS rounds"
echo "SIGCONT -> pinsight_libvirt_up 1: $(summary "${up_times[@]}") over $RUNS rounds"
