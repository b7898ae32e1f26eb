#!/usr/bin/env bash
# Daemon cost with many real VMs: starts N KVM guests of VCPUS vCPUs (BUSY of them keep a
# vCPU busy, the rest idle), runs the daemon on the two-socket fixture with every source on
# (probes, memory cgroups, the fixture's GPU interrupts, every QEMU thread by role), and
# reports its CPU share and memory over DURATION seconds, the /metrics scrape time (median
# of 20), and each probe's cost per event from bpf_stats (the daemon runs with --bpf-stats).
#   bash scripts/bench-scale.sh [N=20] [BUSY=3] [DURATION=60] [VCPUS=1]
# Side by side: PINSIGHT_BENCH_COMPARE="old=/path/to/pinsight new=target/release/pinsight"
# runs each binary in turn against the same VMs, PINSIGHT_BENCH_ROUNDS times (default 1),
# the order rotated each round, and prints one line per run and the median per binary.
# PINSIGHT_BENCH_PERF=DIR also profiles each run after its figures are taken (perf record
# -e cpu-clock -g of the daemon's pid for 30 s, into DIR/perf-NAME-ROUND.data), so the
# profile never weighs on the figures.
# Ends only the VMs (by name) and the daemons (by pid) it started.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}; BUSY=${2:-3}; DURATION=${3:-60}; VCPUS=${4:-1}
read -r -a BINARIES <<< "${PINSIGHT_BENCH_COMPARE:-this=target/release/pinsight}"
ROUNDS=${PINSIGHT_BENCH_ROUNDS:-1}
PREFIX="pinsight-bench-$$"
WORK=$(mktemp -d /tmp/pinsight-bench.XXXXXX)
ADDR="127.0.0.1:${PINSIGHT_BENCH_PORT:-9814}"
DAEMON_PID=""
stop_daemon() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  DAEMON_PID=""
}
cleanup() {
  stop_daemon || true
  for i in $(seq 1 "$N"); do virsh -q -c qemu:///system destroy "$PREFIX-$i" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
for spec in "${BINARIES[@]}"; do
  [ -x "${spec#*=}" ] || { echo "bench-scale: ${spec#*=} (of $spec) is not an executable" >&2; exit 2; }
done
cargo build --release 2>&1 | grep -v '^warning: pinsight' | tail -1
GUEST=$(bash scripts/build-spin-guest.sh "$WORK" 2000)
for i in $(seq 1 "$N"); do
  if [ "$i" -le "$BUSY" ]; then os="<kernel>$GUEST</kernel>"; else os="<boot dev='network'/>"; fi
  cat > "$WORK/d$i.xml" <<XML
<domain type='kvm'><name>$PREFIX-$i</name><memory unit='MiB'>64</memory><vcpu>$VCPUS</vcpu>
<metadata><pinsight:domain xmlns:pinsight="urn:pinsight:domain:1"><pinsight:gpu address="0000:3b:00.0"/></pinsight:domain></metadata>
<os><type arch='x86_64' machine='pc'>hvm</type>$os</os><devices><serial type='pty'/></devices></domain>
XML
  virsh -q -c qemu:///system create "$WORK/d$i.xml" >/dev/null
done
echo "started $N VMs of $VCPUS vCPU(s) ($BUSY busy)"
printf 'listen = "%s"\nsysfs_root = "monitor/tests/fixtures/sysfs/two-socket-gpu"\nirq_proc_root = "monitor/tests/fixtures/proc/two-socket-gpu"\n' "$ADDR" > "$WORK/pinsight.toml"
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat"; }
# One run of binary $2 (named $1): a line of figures into $WORK/runs.
run_one() {
  local name=$1 bin=$2
  "$bin" run --bpf-stats --config "$WORK/pinsight.toml" 2> "$WORK/daemon-$name.log" &
  DAEMON_PID=$!
  sleep 10   # let it find every VM and settle
  local metrics vms threads memory t0 s0 t1 s1 rss hwm scrapes median
  metrics=$(curl -s "http://$ADDR/metrics")
  vms=$(grep -c '^pinsight_domain_info' <<< "$metrics" || true)
  threads=$(awk '/^pinsight_domain_threads\{/ { n += $NF } END { print n + 0 }' <<< "$metrics")
  memory=$(grep -c '^pinsight_domain_memory_remote_ratio' <<< "$metrics" || true)
  echo "$name: the daemon sees $vms VMs, $threads QEMU threads by role, memory of $memory VMs"
  t0=$(ticks); s0=$(date +%s.%N)
  sleep "$DURATION"
  t1=$(ticks); s1=$(date +%s.%N)
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$DAEMON_PID/status")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$DAEMON_PID/status")
  # What the resident size is made of: the daemon's own memory (heap, stacks) and the pages of
  # its binary and the shared libraries it maps.
  awk '/^RssAnon|^RssFile/ { printf "  %s %.1f MiB\n", $1, $2 / 1024 }' "/proc/$DAEMON_PID/status"
  scrapes=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' "http://$ADDR/metrics"; done | sort -n)
  median=$(echo "$scrapes" | sed -n 10p)
  awk -v name="$name" -v t="$((t1 - t0))" -v hz="$hz" -v s0="$s0" -v s1="$s1" -v rss="$rss" \
      -v hwm="$hwm" -v med="$median" 'BEGIN {
    printf "%s %.3f %.1f %.1f %.1f\n", name, 100 * t / hz / (s1 - s0), rss / 1024, hwm / 1024, med * 1000 }' >> "$WORK/runs"
  tail -1 "$WORK/runs" | awk '{ printf "  daemon CPU %.3f%% of one core over '"$DURATION"' s, RSS %.1f MiB (peak %.1f MiB), scrape median %.1f ms (20 scrapes)\n", $2, $3, $4, $5 }'
  # Per-event cost of each probe over the run (kernel.bpf_stats_enabled, set by --bpf-stats).
  curl -s "http://$ADDR/metrics" | awk -F'[{}" ]+' '
    /^pinsight_probe_run_seconds_total/ { t[$3] = $NF }
    /^pinsight_probe_runs_total/ { n[$3] = $NF }
    END { for (p in n) if (n[p] > 0) printf "  probe %s: %.1f ns per run over %d runs\n", p, t[p] * 1e9 / n[p], n[p] }'
  if [ -n "${PINSIGHT_BENCH_PERF:-}" ]; then
    mkdir -p "$PINSIGHT_BENCH_PERF"
    perf record -q -e cpu-clock -g -p "$DAEMON_PID" -o "$PINSIGHT_BENCH_PERF/perf-$name-$round.data" -- sleep 30 2>/dev/null
  fi
  stop_daemon
}
count=${#BINARIES[@]}
for round in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((count - 1))); do
    spec=${BINARIES[$(((k + round - 1) % count))]}
    echo "round $round: ${spec%%=*}"
    run_one "${spec%%=*}" "${spec#*=}"
  done
done
# Median per binary over the rounds (CPU %, RSS MiB, scrape ms).
sort -k1,1 "$WORK/runs" | awk '
  function median(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function flush() { if (name != "") printf "%s: median of %d runs: daemon CPU %.3f%%, RSS %.1f MiB, scrape %.1f ms\n", name, n, median(c, n), median(r, n), median(s, n) }
  $1 != name { flush(); name = $1; n = 0; delete c; delete r; delete s }
  { n++; c[n] = $2; r[n] = $3; s[n] = $5 }
  END { flush() }'
