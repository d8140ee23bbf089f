#!/usr/bin/env bash
# S2 (shared/guide/bench.md): SSE_STREAMS (10,000) concurrent live streams on one API instance.
#   - RSS per idle stream: (VmRSS with every stream open and idle − VmRSS before) / streams
#   - idle CPU: the API's user+system CPU over SSE_IDLE_SECONDS, without streams and with all open
#   - fan-out: pgbench commits SSE_RATE (1,000) outbox events per second for SSE_SECONDS (10) to
#     random streaming users (event.sql: INSERT + pg_notify, as the API appends); client.py measures
#     commit → event (the payload's clock_timestamp() to the line's arrival), p50/p99 over all events.
#     Each pgbench transaction commits SSE_BATCH (10) events: PostgreSQL serialises the commits of
#     notifying transactions, and one event per commit tops out at ~350 events/s here. The achieved
#     event rate (committed events / SSE_SECONDS) is reported.
# Usage: e2e/bench/sse/run.sh [path-to-plamatio-api]   (default: the release build)
# Environment: SSE_STREAMS, SSE_RATE, SSE_SECONDS, SSE_IDLE_SECONDS (10), SSE_BATCH (events per
# commit, 10), SSE_CLIENTS (pgbench clients, 16), SSE_KEEP_ALIVE_SECONDS (the API's default, 15), SSE_OUT (copy of the table),
# TEST_DATABASE_SERVER (postgres://postgres@127.0.0.1:5432).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/release/plamatio-api}"
streams=${SSE_STREAMS:-10000}
rate=${SSE_RATE:-1000}
seconds=${SSE_SECONDS:-10}
idle=${SSE_IDLE_SECONDS:-10}
clients=${SSE_CLIENTS:-16}
batch=${SSE_BATCH:-10}
server="${TEST_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}"
[ -x "$binary" ] || { echo "sse/run.sh: no binary at $binary" >&2; exit 1; }
command -v pgbench >/dev/null 2>&1 || { echo "sse/run.sh: needs pgbench (postgresql-contrib)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((streams + 500)) ] || { echo "sse/run.sh: ulimit -n $(ulimit -n) < streams + 500" >&2; exit 1; }

log() { printf '[sse %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
workdir=$(mktemp -d /tmp/plamatio-sse.XXXXXX)
database="plamatio_sse_$$"
key="plm_bench_sse_$RANDOM$RANDOM$RANDOM"
digest=$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)
server_pid="" client_pid=""
cleanup() {
  for pid in $client_pid $server_pid; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql "$server/postgres" -qc "CREATE DATABASE $database" >/dev/null
DATABASE_URL="$server/$database" "$binary" migrate >"$workdir/migrate.log" 2>&1 || { cat "$workdir/migrate.log" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATABASE_URL="$server/$database" HOST=127.0.0.1 PORT="$port" PLAMATIO_RATE_LIMIT_PER_MINUTE=0 RUST_LOG=warn \
  PLAMATIO_API_KEYS="storefront:$digest" PLAMATIO_SSE_MAX_STREAMS_PER_KEY=$((streams * 2)) \
  PLAMATIO_SSE_KEEP_ALIVE_SECONDS="${SSE_KEEP_ALIVE_SECONDS:-15}" \
  "$binary" serve >"$workdir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }
idle_cpu_percent() { # CPU of the API over $idle s, in % of one core
  local before after
  before=$(cpu_ticks); sleep "$idle"; after=$(cpu_ticks)
  awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v s="$idle" 'BEGIN { printf "%.2f", 100 * t / hz / s }'
}

sleep 2
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
rss_before=$(rss)
cpu_none=$(idle_cpu_percent)
log "no streams: RSS ${rss_before} KiB, idle CPU ${cpu_none} %"

python3 "$here/client.py" 127.0.0.1 "$port" "$key" "$streams" "$workdir/ready" >"$workdir/client.out" 2>"$workdir/client.err" &
client_pid=$!
for _ in $(seq 1 600); do [ -s "$workdir/ready" ] && break; kill -0 "$client_pid" 2>/dev/null || break; sleep 0.5; done
[ -s "$workdir/ready" ] || { log "the streams did not open: $(tail -5 "$workdir/client.err")"; exit 1; }
log "$streams streams open in $(cat "$workdir/ready") s"
sleep 3
rss_open=$(rss)
cpu_open=$(idle_cpu_percent)
subscribers=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^sse_subscribers / { print $2 }')
per_stream=$(awk -v a="$rss_open" -v b="$rss_before" -v n="$streams" 'BEGIN { printf "%.1f", (a - b) / n }')
log "$streams idle streams (gauge: $subscribers): RSS ${rss_open} KiB (${per_stream} KiB/stream), idle CPU ${cpu_open} %"

log "pgbench: $rate events/s ($batch per commit) for $seconds s to random streaming users"
pgbench -n -c "$clients" -j 2 -R "$((rate / batch))" -T "$seconds" -D streams="$streams" -D batch="$batch" \
  -f "$here/event.sql" \
  "$server/$database" >"$workdir/pgbench.out" 2>&1 || { tail -5 "$workdir/pgbench.out" >&2; exit 1; }
sleep 2
rss_load=$(rss)
kill -TERM "$client_pid"
wait "$client_pid" || true
client_pid=""
result=$(grep '^SSE ' "$workdir/client.out" || true)
[ -n "$result" ] || { log "no client result: $(tail -5 "$workdir/client.err")"; exit 1; }
log "$result"
value() { sed -n 's/.*\b'"$1"'=\([^ ]*\).*/\1/p' <<<"$result"; }
events=$(value events) p50=$(value p50_ms) p99=$(value p99_ms) errors=$(value errors)
committed=$(psql "$server/$database" -Atc "SELECT count(*) FROM outbox WHERE event_key LIKE 'bench\\_sse\\_%'")
sent_rate=$(awk -v n="$committed" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')

verdict() { [ "$(awk "BEGIN { print ($1) ? 1 : 0 }")" = 1 ] && echo PASS || echo MISS; }
{
  echo "| S2 measure ($streams streams, one instance) | value | target | result |"
  echo "|---|---|---|---|"
  echo "| RSS per idle stream | $per_stream KiB (RSS $rss_before → $rss_open KiB; $rss_load KiB after the fan-out) | < 20 KiB | $(verdict "$per_stream < 20") |"
  echo "| idle CPU, no streams → $streams idle streams | $cpu_none % → $cpu_open % of one core ($idle s each) | flat in the subscriber count | $(verdict "$cpu_open < $cpu_none + 2") |"
  echo "| fan-out commit → event at ${sent_rate} events/s committed | p50 $p50 ms, p99 $p99 ms, max $(value max_ms) ms; $events of $committed events received, client errors $errors | p99 < 50 ms | $(verdict "$p99 < 50 && $events == $committed && $errors == 0") |"
  echo
  echo "S2: the streams were opened in $(cat "$workdir/ready") s; load average at start: $load_start, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$workdir/table.md"
cat "$workdir/table.md"
if [ -n "${SSE_OUT:-}" ]; then cp "$workdir/table.md" "$SSE_OUT"; fi
