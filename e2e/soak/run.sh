#!/usr/bin/env bash
# Soak: serves the API (the debug binary unless given another) on a fresh database and drives mixed
# storefront traffic (browse, search, cart add/update/delete, checkout) at a steady rate for
# SOAK_SECONDS (default 300), sampling the server's RSS every 5 s. Fails on any error response, on RSS
# growth beyond SOAK_RSS_GROWTH (default 0.20) from the first minute after warm-up to the last, or a
# dead server. Prints the RSS curve and a closing line `soak: N passed, M failed`.
# Usage: e2e/soak/run.sh [path-to-plamatio-api]
# Environment: SOAK_SECONDS, SOAK_RATE (req/s, 50), SOAK_WORKERS (10), SOAK_RSS_GROWTH, and
# TEST_DATABASE_SERVER (default postgres://postgres@127.0.0.1:5432) as for the tests.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/plamatio-api}"
if [ ! -x "$binary" ]; then
  (cd "$root" && cargo build -p plamatio-api)
fi
server="${TEST_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
database="plamatio_soak_$$_$RANDOM"
storefront_key="plm_soak_storefront_$RANDOM$RANDOM$RANDOM"
digest() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

workdir=$(mktemp -d)
cleanup() {
  if [ -n "${server_pid:-}" ]; then kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true; fi
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT

DATABASE_URL="$server/$database" HOST=127.0.0.1 PORT="$port" \
  PLAMATIO_RATE_LIMIT_PER_MINUTE=0 RUST_LOG=warn \
  PLAMATIO_API_KEYS="storefront:$(digest "$storefront_key")" \
  env -u REDIS_URL -u KAFKA_BOOTSTRAP_SERVERS -u OTEL_EXPORTER_OTLP_ENDPOINT "$binary" serve > "$workdir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
if ! curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then
  cat "$workdir/server.log"
  echo "soak: the API did not start" >&2
  echo "soak: 0 passed, 1 failed"
  exit 1
fi

status=0
python3 "$here/driver.py" --base "http://127.0.0.1:$port" --key "$storefront_key" --pid "$server_pid" || status=$?
if grep -q "panicked" "$workdir/server.log"; then
  echo "--- the server panicked:"
  grep -A5 "panicked" "$workdir/server.log" | head -40
  status=1
fi
exit "$status"
