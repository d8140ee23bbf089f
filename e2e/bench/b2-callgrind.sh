#!/usr/bin/env bash
# Instructions per request of the B1 and B2 reads (callgrind counts are deterministic here, unlike
# wall clock on a shared machine). The release binary runs under callgrind, configured as run.sh
# configures it for the benchmark (default log filter, rate limiting off), twice: once answering
# CALLGRIND_WARMUP requests, once CALLGRIND_WARMUP + CALLGRIND_REQUESTS (one keep-alive
# connection); the difference of the two totals over CALLGRIND_REQUESTS is the cost per request.
# Also prints the top functions by self cost.
# Modes (CALLGRIND_MODE):
#   b2       (default) uncached `GET /products/get/:id`, ids 1–25 in turn, every cache off (as B2);
#   b1       cached `GET /products/all` from the in-process cache (as B1);
#   b1redis  cached `GET /products/all` with REDIS_URL set (the in-process tier in front of Redis).
# Usage: e2e/bench/b2-callgrind.sh [path-to-plamatio-api]
# Environment: CALLGRIND_MODE, CALLGRIND_REQUESTS (2000), CALLGRIND_WARMUP (200),
# TEST_DATABASE_SERVER, CALLGRIND_TOP (25), CALLGRIND_REDIS_URL (redis://127.0.0.1:6379),
# CALLGRIND_KEEP=1 (keep the profiles; `callgrind_annotate --tree=caller` shows who calls what).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/release/plamatio-api}"
requests=${CALLGRIND_REQUESTS:-2000}
warmup=${CALLGRIND_WARMUP:-200}
server="${TEST_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}"
mode=${CALLGRIND_MODE:-b2}
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
case "$mode" in
  b2)
    what="uncached by-id request"
    cache_env=(REDIS_URL="redis://127.0.0.1:$dead" REDIS_TIMEOUT_MS=50 PLAMATIO_MEMORY_CACHE_MIB=0)
    path_of() { echo "/products/get/$((1 + $1 % 25))"; } ;;
  b1 | b1redis)
    what="cached GET /products/all ($mode)"
    cache_env=()
    if [ "$mode" = b1redis ]; then
      cache_env=(REDIS_URL="${CALLGRIND_REDIS_URL:-redis://127.0.0.1:6379}" PLAMATIO_CACHE_PREFIX="callgrind$$:")
    fi
    path_of() { echo "/products/all"; } ;;
  *) echo "b2-callgrind.sh: unknown CALLGRIND_MODE $mode (b1, b1redis, b2)" >&2; exit 1 ;;
esac
profile() { # profile REQUESTS: runs the API under callgrind, sends REQUESTS requests, stops it
  # gracefully; prints the total instruction count and leaves the profile in $workdir/cg.$1
  env DATABASE_URL="$server/$database" HOST=127.0.0.1 PORT="$port" PLAMATIO_RATE_LIMIT_PER_MINUTE=0 \
    PLAMATIO_API_KEYS="storefront:$digest" "${cache_env[@]}" \
    valgrind --tool=callgrind --vgdb=no --callgrind-out-file="$workdir/cg.$1" \
    "$binary" serve >"$workdir/server-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
  for i in $(seq 1 "$1"); do
    printf 'url = "http://127.0.0.1:%s%s"\noutput = "/dev/null"\n' "$port" "$(path_of "$i")"
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
echo "$mode callgrind: $full − $base instructions for $requests requests = $per instructions per $what"
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
