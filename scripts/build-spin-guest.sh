#!/usr/bin/env bash
# Builds the busy test guest (scripts/spin-guest.S, a multiboot v1 kernel) into OUTDIR and
# prints the ELF's path. ITERATIONS (default 2000) sets the countdown between two port-IO
# exits. Idempotent: rebuilds only when the source, this script or ITERATIONS changed.
set -euo pipefail

die() { printf 'build-spin-guest: error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUTDIR [ITERATIONS]"
OUTDIR=$1
ITERATIONS=${2:-2000}
[[ "$ITERATIONS" =~ ^[1-9][0-9]*$ ]] && [ "$ITERATIONS" -le 4294967295 ] \
  || die "ITERATIONS must be an integer from 1 to 4294967295, got '$ITERATIONS'"

for tool in as ld; do
  command -v "$tool" >/dev/null \
    || die "'$tool' not found: install binutils (apt-get install binutils, or run scripts/setup.sh)"
done

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/spin-guest.S"
[ -r "$SRC" ] || die "guest source $SRC is missing"
mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
ELF="$OUTDIR/spin-$ITERATIONS.elf"

if [ ! -s "$ELF" ] || [ "$SRC" -nt "$ELF" ] || [ "${BASH_SOURCE[0]}" -nt "$ELF" ]; then
  # Build under temporary names and rename at the end, so a concurrent or interrupted run
  # never leaves a half-written ELF behind.
  OBJ=$(mktemp "$OUTDIR/.spin-XXXXXX.o")
  TMP=$(mktemp "$OUTDIR/.spin-XXXXXX.elf")
  trap 'rm -f "$OBJ" "$TMP"' EXIT
  as --32 --defsym ITERATIONS="$ITERATIONS" -o "$OBJ" "$SRC" \
    || die "as failed to assemble $SRC"
  ld -m elf_i386 -Ttext=0x100000 -o "$TMP" "$OBJ" || die "ld failed to link $OBJ"
  chmod 0644 "$TMP"
  mv -f "$TMP" "$ELF"
fi
printf '%s\n' "$ELF"
