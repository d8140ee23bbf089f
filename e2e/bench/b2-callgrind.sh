#!/usr/bin/env bash
# B2 profile: user-space instructions per uncached `GET /products/get/:id` (callgrind counts are
# deterministic here, unlike wall clock on a shared machine). The release binary runs under
# callgrind with every cache off (as in run.sh's B2), twice: once answering CALLGRIND_WARMUP
# requests, once CALLGRIND_WARMUP + CALLGRIND_REQUESTS (ids 1–25 in turn, one keep-alive
# connection); the difference of the two totals over CALLGRIND_REQUESTS is the cost per request.
# Also prints the top functions by self cost.
# Usage: e2e/bench/b2-callgrind.sh [path-to-plamatio-api]
# Environment: CALLGRIND_REQUESTS (2000), CALLGRIND_WARMUP (200), TEST_DATABASE_SERVER, CALLGRIND_TOP (25).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/release/plamatio-api}"
requests=${CALLGRIND_REQUESTS:-2000}
warmup=${CALLGRIND_WARMUP:-200}
server="${TEST_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}"
command -v valgrind >/dev/null 2>&1 || { echo "b2-callgrind.sh: needs valgrind" >&2; exit 1; }
workdir=$(mktemp -d /tmp/plamatio-callgrind.XXXXXX)
database="plamatio_callgrind_$$"
key="plm_bench_cg_$RANDOM$RANDOM$RANDOM"
digest=$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  if [ "${CALLGRIND_KEEP:-0}" = 1 ]; then echo "kept: $workdir" >&2; else rm -rf "$workdir"; fi
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dead=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATABASE_URL="$server/$database" "$binary" migrate >"$workdir/migrate.log" 2>&1 || { cat "$workdir/migrate.log" >&2; exit 1; }
profile() { # profile REQUESTS: runs the API under callgrind, sends REQUESTS requests, stops it
  # gracefully; prints the total instruction count and leaves the profile in $workdir/cg.$1
  DATABASE_URL="$server/$database" HOST=127.0.0.1 PORT="$port" PLAMATIO_RATE_LIMIT_PER_MINUTE=0 RUST_LOG=warn \
    PLAMATIO_API_KEYS="storefront:$digest" REDIS_URL="redis://127.0.0.1:$dead" REDIS_TIMEOUT_MS=50 \
    PLAMATIO_MEMORY_CACHE_MIB=0 valgrind --tool=callgrind --vgdb=no --callgrind-out-file="$workdir/cg.$1" \
    "$binary" serve >"$workdir/server-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
  for i in $(seq 1 "$1"); do
    printf 'url = "http://127.0.0.1:%s/products/get/%s"\noutput = "/dev/null"\n' "$port" $((1 + i % 25))
  done >"$workdir/urls-$1.cfg"
  curl -s -K "$workdir/urls-$1.cfg" -H "Authorization: Bearer $key" -w '%{http_code}\n' >"$workdir/codes-$1.txt"
  local ok
  ok=$(grep -c '^200$' "$workdir/codes-$1.txt" || true)
  [ "$ok" = "$1" ] || { echo "only $ok of $1 answered 200" >&2; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
  callgrind_annotate "$workdir/cg.$1" 2>/dev/null | sed -n 's/^\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

# Start-up, migrations check, the pool and one /readyz are in both runs; the difference is requests.
base=$(profile "$warmup")
full=$(profile $((warmup + requests)))
per=$(((full - base) / requests))
echo "B2 callgrind: $full − $base instructions for $requests requests = $per instructions per uncached by-id request"
echo "top functions by self cost per request (difference of the two runs / $requests):"
python3 - "$workdir/cg.$warmup" "$workdir/cg.$((warmup + requests))" "$requests" "${CALLGRIND_TOP:-25}" <<'PY'
import re, subprocess, sys
def costs(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True).stdout
    table = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) +\([ \d.]+%\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in m.group(2):
            name = re.sub(r" \[.*\]$", "", m.group(2))
            table[name] = table.get(name, 0) + int(m.group(1).replace(",", ""))
    return table
base, full, n, top = costs(sys.argv[1]), costs(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = sorted(((full[k] - base.get(k, 0)) / n, k) for k in full)
for per, name in reversed(rows[-top:]):
    print(f"{per:10.0f}  {name}")
PY
