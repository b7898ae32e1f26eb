#!/usr/bin/env bash
# Runs COMMAND with kernel.pid_max set to PID_MAX, then puts the old value back, also when
# COMMAND fails or the script is interrupted. For benchmarks of the probes' per-tid tables at
# the pid_max of most systemd hosts (4194304) on a machine whose default is 32768:
#     flock -o /work/vmtest.lock scripts/with-pid-max.sh 4194304 target/release/examples/probe_cost ...
set -euo pipefail

die() { printf 'with-pid-max: error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 PID_MAX COMMAND [ARGS...]"
WANTED=$1; shift
[[ "$WANTED" =~ ^[1-9][0-9]*$ ]] && [ "$WANTED" -le 4194304 ] \
  || die "PID_MAX must be an integer from 1 to 4194304, got '$WANTED'"
SYSCTL=/proc/sys/kernel/pid_max
OLD=$(cat "$SYSCTL") || die "cannot read $SYSCTL"

restore() {
  if ! echo "$OLD" > "$SYSCTL"; then
    printf 'with-pid-max: error: could not restore %s to %s: run `sysctl -w kernel.pid_max=%s`\n' \
      "$SYSCTL" "$OLD" "$OLD" >&2
  fi
}
trap restore EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "$WANTED" > "$SYSCTL" || die "cannot write $SYSCTL (root needed)"
printf 'with-pid-max: kernel.pid_max %s -> %s for: %s\n' "$OLD" "$WANTED" "$*" >&2
"$@"
