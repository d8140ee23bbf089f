#!/usr/bin/env bash
# Search at real store sizes: one API binary on a fresh database with the generated catalog
# (generate.sql, PRODUCTS products, no users/orders), then wrk on three routes:
#   rare   /products/search/<a token exactly one product has>   (trigram index, or a full scan)
#   common /products/search/llama?limit=20                       (a word every product has, one page)
#   by-id  /products/get/<id>                                    (uncached? no: cached after the first)
# Usage: e2e/bench/data/search.sh [path-to-plamatio-api]   (default: the release build)
# Environment: PRODUCTS (100000), CONNECTIONS (16), SECONDS_PER_ROUTE (10), TEST_DATABASE_SERVER.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/release/plamatio-api}"
products="${PRODUCTS:-100000}"
connections="${CONNECTIONS:-16}"
seconds="${SECONDS_PER_ROUTE:-10}"
server="${TEST_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}"
command -v wrk >/dev/null 2>&1 || { echo "search.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
database="plamatio_bench_search_$$"
key="plm_bench_search_$RANDOM$RANDOM$RANDOM"
digest=$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)

workdir=$(mktemp -d)
cleanup() {
  if [ -n "${server_pid:-}" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT

DATABASE_URL="$server/$database" "$binary" migrate > "$workdir/migrate.log" 2>&1 ||
  { cat "$workdir/migrate.log"; exit 1; }
start=$(date +%s.%N)
PGOPTIONS="-c plamatio.products=$products -c plamatio.users=0 -c plamatio.orders=0 -c plamatio.cart_rows=0" \
  psql "$server/$database" -v ON_ERROR_STOP=1 -q -f "$here/generate.sql"
echo "generated $products products in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
token=$(psql "$server/$database" -Atc "SELECT 'tok' || left(md5('$((products / 2 + 7))'), 12)")

DATABASE_URL="$server/$database" HOST=127.0.0.1 PORT="$port" PLAMATIO_RATE_LIMIT_PER_MINUTE=0 \
  RUST_LOG=warn PLAMATIO_API_KEYS="storefront:$digest" "$binary" serve > "$workdir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

printf '%-7s %10s %9s %9s %9s\n' route 'req/s' 'p50 ms' 'p99 ms' 'status'
for route in "rare:/products/search/$token" "common:/products/search/llama?limit=20" "by-id:/products/get/$((products / 3))"; do
  name=${route%%:*}; path=${route#*:}
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://127.0.0.1:$port$path")
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$port$path" > "$workdir/wrk-$name.txt"
  python3 - "$workdir/wrk-$name.txt" "$name" "$status" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % label, text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
print(f"{sys.argv[2]:<7} {rps:10.0f} {ms('50'):9.2f} {ms('99'):9.2f} {sys.argv[3]:>9}")
PY
done
