#!/usr/bin/env bash
# Scrape latency of /metrics with TLS + basic auth vs plain HTTP, side by side in one run.
#
#   sudo scripts/bench-tls.sh [N]        (N scrapes each, default 200; needs a release build)
#
# Two daemons on loopback (one plain, one with a web config: a fresh CA and server
# certificate from openssl, one bcrypt cost-10 user) watch the same host. Two ways to scrape:
#   new connection: one curl per scrape, plain and TLS interleaved scrape by scrape, so each
#                   TLS number includes the TCP + TLS handshake (a client without keep-alive);
#   keep-alive:     curl fetching the URL N times on one connection (what Prometheus does),
#                   the two modes alternating in rounds of 20.
# Figures are curl's time_total, in milliseconds: median, p10-p90 and max.
set -euo pipefail

N=${1:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PINSIGHT_BIN:-$ROOT/target/release/pinsight}
SYSFS=$ROOT/monitor/tests/fixtures/sysfs/two-socket-gpu
WORK=$(mktemp -d /tmp/pinsight-bench-tls.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
    -out ca.pem -days 1 -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key \
    -out server.csr -subj "/CN=bench" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
    -days 1 -extfile server.ext 2>/dev/null
HASH=$(python3 -W ignore -c 'import crypt; print(crypt.crypt("bench-pass", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))')
cat >web.yml <<EOF
tls_server_config:
  cert_file: server.pem
  key_file: server.key
basic_auth_users:
  bench: '$HASH'
EOF

PLAIN=127.0.0.1:$(free_port)
TLS=127.0.0.1:$(free_port)
"$BIN" run --listen "$PLAIN" --sysfs-root "$SYSFS" 2>plain.log &
PIDS+=($!)
"$BIN" run --listen "$TLS" --sysfs-root "$SYSFS" --web.config.file "$WORK/web.yml" 2>tls.log &
PIDS+=($!)
PLAIN_CURL=(curl -sS -o /dev/null -w '%{time_total}\n' "http://$PLAIN/metrics")
TLS_CURL=(curl -sS -o /dev/null -w '%{time_total}\n' --cacert ca.pem -u bench:bench-pass "https://$TLS/metrics")
for _ in $(seq 100); do
    "${PLAIN_CURL[@]}" >/dev/null 2>&1 && "${TLS_CURL[@]}" >/dev/null 2>&1 && break
    sleep 0.1
done
# Warm up (the first authenticated scrape pays bcrypt once; it is cached after).
"${PLAIN_CURL[@]}" >/dev/null && "${TLS_CURL[@]}" >/dev/null

for _ in $(seq "$N"); do
    "${PLAIN_CURL[@]}" >>plain-new.txt
    "${TLS_CURL[@]}" >>tls-new.txt
done
# Keep-alive: one curl, one connection, the URL repeated (curl -w prints once per URL).
ROUND=20
for _ in $(seq $((N / ROUND))); do
    curl -sS -w '%{time_total}\n' $(printf -- "-o /dev/null http://$PLAIN/metrics %.0s" $(seq $ROUND)) >>plain-keep.txt
    curl -sS --cacert ca.pem -u bench:bench-pass -w '%{time_total}\n' \
        $(printf -- "-o /dev/null https://$TLS/metrics %.0s" $(seq $ROUND)) >>tls-keep.txt
done
BYTES=$(curl -sS "http://$PLAIN/metrics" | wc -c)

python3 - "$N" "$BYTES" <<'EOF'
import statistics, sys
n, size = sys.argv[1], sys.argv[2]
def row(name, file):
    xs = sorted(float(x) * 1000 for x in open(file))
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
    return f"| {name} | {len(xs)} | {statistics.median(xs):.3f} | {q(0.1):.3f}-{q(0.9):.3f} | {xs[-1]:.3f} |"
print(f"/metrics body {size} bytes, N = {n} per row; curl time_total in ms")
print("| scrape | n | median | p10-p90 | max |")
print("|---|---|---|---|---|")
print(row("plain HTTP, new connection", "plain-new.txt"))
print(row("TLS 1.3 + basic auth, new connection", "tls-new.txt"))
print(row("plain HTTP, keep-alive", "plain-keep.txt"))
print(row("TLS 1.3 + basic auth, keep-alive", "tls-keep.txt"))
EOF
