#!/usr/bin/env bash
# Plamatio benchmarks (see shared/guide/bench.md), each against a peer measured back to back in the
# same run on the same machine. One command runs them all:
#
#   e2e/bench/run.sh
#
# B1 in both cache configurations (in-process, and REDIS_URL on the local Redis) vs nginx, B6, B3 vs
# pgbench, B2 (uncached by-id read) vs pgbench running the same SELECT, S1 (data/scale.sh: every by-id
# and paged route on a small and a real-size store), S2 (sse/run.sh: 10,000 live streams), and B4
# (events/run.sh: outbox -> Kafka vs a direct producer).
# B1otel repeats B1 with an OTLP exporter configured (traces to a local rotel collector that drops
# them) against the B1 run without one: the cost of observability with an exporter, at the trace
# sample ratio a store runs with (BENCH_TRACE_RATIO, default 0.1) and with every request traced.
# Environment: BENCH_ONLY (comma list of b1,b1otel,b1redis,b2,b3,s1,s2,b4; B6 goes with b1; b1otel
# needs b1; default all),
# BENCH_SECONDS (per measured run, default 20), BENCH_WARMUP (unmeasured seconds before
# each run, default 2), BENCH_PAIRS (B1 and B2: how many times the peer and the API are measured
# one after the other, default 3; the pair with the median ratio is reported, every pair is listed), PGHOST/PGPORT/PGUSER (default 127.0.0.1/5432/postgres), CARGO_TARGET_DIR,
# BENCH_REDIS_URL (default redis://127.0.0.1:6379), BENCH_SKIP_BUILD=1 (use the existing release
# binary), BENCH_KEEP=1 (keep the work directory), BENCH_OUT (the generated report, default
# e2e/bench/last-run.md); S1 and S2 take their own knobs (see their headers).
# Everything listens on 127.0.0.1; every load is bounded in time; the bench database
# plamatio_bench_<pid>, the processes and the role it creates are removed at the end.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${BENCH_SECONDS:-20}
WARMUP=${BENCH_WARMUP:-2}
PAIRS=${BENCH_PAIRS:-3}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
DB=plamatio_bench_$$
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB"
OUT=${BENCH_OUT:-$HERE/last-run.md}
WORK=$(mktemp -d /tmp/plamatio-bench.XXXXXX)
TABLE=$WORK/table.md
export BENCH_LUA_DIR=$HERE/lua

PIDS=()
CLEANED=0
API_PID=""
SF_KEY=""

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
want() { [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *",$1,"* ]]; }
REDIS_BENCH_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
die() { log "error: $*"; exit 1; }

cleanup() {
  [ "$CLEANED" = 1 ] && return 0
  CLEANED=1
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  dropdb --if-exists --force "$DB" 2>/dev/null || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# tools

APT_UPDATED=0
apt_install() {
  log "installing $*"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$WORK/apt.log" 2>&1; then
    if [ "$APT_UPDATED" = 0 ]; then
      APT_UPDATED=1
      apt-get update -qq >>"$WORK/apt.log" 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$WORK/apt.log" 2>&1 && return 0
    fi
    return 1
  fi
}

need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || apt_install "$2" || true
  command -v "$1" >/dev/null 2>&1
}

need wrk wrk || die "wrk is missing and could not be installed"
need nginx nginx-light || die "nginx is missing and could not be installed"
need pgbench postgresql-contrib || die "pgbench is missing and could not be installed"
need psql postgresql-client || die "psql is missing and could not be installed"
need curl curl || die "curl is missing and could not be installed"
need xxd xxd || die "xxd is missing and could not be installed"

pg_isready -q || die "PostgreSQL is not answering on $PGHOST:$PGPORT"

# ---------------------------------------------------------------------------------------------
# helpers

free_port() { # first port from $1 on that nobody listens on
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

wait_http() { # wait_http URL [curl args...]: until it answers 200, at most 60 s
  local url=$1 i
  shift
  for i in $(seq 1 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null)" = 200 ]; then return 0; fi
    sleep 0.2
  done
  log "no 200 from $url after 60 s (try $i)"
  return 1
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

field() { # field NAME FILE: value of NAME=... on the BENCH line
  sed -n 's/^BENCH .*\b'"$1"'=\([^ ]*\).*/\1/p' "$2" | tail -n1
}

calc() { awk "BEGIN { printf \"%s\", $* }"; }

# paired NAME PEER_FN API_FN: the peer then the API, PAIRS times in turn (this machine's speed
# drifts by tens of percent within minutes, so one pair can land on either side of a target). The
# pair with the median ratio becomes $WORK/NAME-peer.wrk and $WORK/NAME-api.wrk; every pair is
# listed under the table.
paired() {
  local name=$1 peer_fn=$2 api_fn=$3 i median
  : >"$WORK/$name-pairs.txt"
  for i in $(seq 1 "$PAIRS"); do
    "$peer_fn" "$name-peer-$i"
    "$api_fn" "$name-api-$i"
    printf '%s %s %s\n' "$i" "$(field rps "$WORK/$name-api-$i.wrk")" "$(field rps "$WORK/$name-peer-$i.wrk")" \
      >>"$WORK/$name-pairs.txt"
  done
  median=$(awk '{ printf "%s %.6f\n", $1, ($3 > 0) ? $2 / $3 : 0 }' "$WORK/$name-pairs.txt" | sort -k2 -g |
    awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  cp "$WORK/$name-peer-$median.wrk" "$WORK/$name-peer.wrk"
  cp "$WORK/$name-api-$median.wrk" "$WORK/$name-api.wrk"
  awk -v name="$name" -v median="$median" 'BEGIN { printf "- %s, every pair (API / peer req/s):", name }
    { printf "%s %.2f× (%.0f / %.0f)%s", (NR > 1 ? "," : ""), ($3 > 0) ? $2 / $3 : 0, $2, $3, ($1 == median ? " ← reported" : "") }
    END { print "" }' "$WORK/$name-pairs.txt" >>"$WORK/pairs.md"
}

run_wrk() { # run_wrk NAME CONNECTIONS URL [wrk args...]: warm-up, measured run, BENCH line in $WORK/NAME.wrk
  local name=$1 conns=$2 url=$3
  shift 3
  if [ "$WARMUP" -gt 0 ]; then
    wrk -t2 -c"$conns" -d"${WARMUP}s" "$url" "$@" >/dev/null 2>&1 || true
  fi
  log "$name: wrk -t2 -c$conns -d${DURATION}s --latency $url"
  wrk -t2 -c"$conns" -d"${DURATION}s" --latency --timeout 5s "$url" "$@" >"$WORK/$name.wrk" 2>&1 ||
    die "wrk failed for $name: $(cat "$WORK/$name.wrk")"
  grep -q '^BENCH ' "$WORK/$name.wrk" || die "no result for $name: $(cat "$WORK/$name.wrk")"
}

percentiles_of_pgbench_log() { # stdout: "p50_ms p99_ms" of pgbench -l logs with prefix $1
  cat "$1".* | awk '{ print $3 }' | sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "0 0"; exit }
    i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
    i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
    printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }'
}

run_pgbench() { # run_pgbench NAME CLIENTS SCRIPT [pgbench args...]: BENCH line in $WORK/NAME.wrk
  local name=$1 clients=$2 script=$3
  shift 3
  if [ "$WARMUP" -gt 0 ]; then
    pgbench -n -M prepared -c "$clients" -j 2 -T "$WARMUP" -f "$script" "$@" "$DB" >/dev/null 2>&1 || true
  fi
  log "$name: pgbench -n -M prepared -c $clients -j 2 -T $DURATION -f $(basename "$script")"
  rm -f "$WORK/$name.log".*
  pgbench -n -M prepared -c "$clients" -j 2 -T "$DURATION" -f "$script" -l --log-prefix="$WORK/$name.log" \
    "$@" "$DB" >"$WORK/$name.pgbench" 2>&1 || die "pgbench failed for $name: $(tail -5 "$WORK/$name.pgbench")"
  local tps failed p50 p99
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$WORK/$name.pgbench")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/$name.pgbench")
  read -r p50 p99 < <(percentiles_of_pgbench_log "$WORK/$name.log")
  echo "BENCH requests=0 seconds=$DURATION rps=${tps:-0} p50_ms=$p50 p99_ms=$p99 errors=${failed:-0} non2xx=0" \
    >"$WORK/$name.wrk"
}

row() { # row ID WHAT PLAMATIO_FILE PEER_FILE PEER_NAME TARGET_RATIO [P99_LIMIT_MS]
  local id=$1 what=$2 ours=$3 peer=$4 peer_name=$5 target=$6 p99_limit=${7:-}
  local o_rps p_rps ratio o50 o99 p50 p99 o_err p_err verdict target_text
  o_rps=$(field rps "$ours"); p_rps=$(field rps "$peer")
  o50=$(field p50_ms "$ours"); o99=$(field p99_ms "$ours")
  p50=$(field p50_ms "$peer"); p99=$(field p99_ms "$peer")
  o_err=$(field errors "$ours"); p_err=$(field errors "$peer")
  ratio=$(calc "($p_rps > 0) ? $o_rps / $p_rps : 0" | awk '{ printf "%.2f", $1 }')
  if [ "$target" = - ]; then
    verdict=INFO
    target_text="no target (peer is not the one bench.md names)"
  else
    verdict=PASS
    target_text="≥ ${target}×"
    [ "$(calc "($ratio >= $target) ? 1 : 0")" = 1 ] || verdict=MISS
    if [ -n "$p99_limit" ]; then
      target_text="$target_text, p99 < ${p99_limit} ms"
      [ "$(calc "($o99 < $p99_limit) ? 1 : 0")" = 1 ] || verdict=MISS
    fi
  fi
  [ "$o_err" = 0 ] || verdict="$verdict (Plamatio errors: $o_err)"
  printf '| %s | %s | %.0f | %s: %.0f | %s× | %s / %s ms | %s / %s ms | %s | %s |\n' \
    "$id" "$what" "$o_rps" "$peer_name" "$p_rps" "$ratio" "$o50" "$o99" "$p50" "$p99" "$target_text" "$verdict" \
    >>"$TABLE"
  [ "$p_err" = 0 ] || echo "|  | (peer reported $p_err errors) |  |  |  |  |  |  |  |" >>"$TABLE"
}

rotel_agent() { # path of rotel-agent (an OTLP collector in Rust, shipped in a PyPI wheel)
  local dir=$WORK/rotel
  if [ ! -x "$dir/rotel/rotel-agent" ]; then
    mkdir -p "$dir"
    pip download -q --no-deps rotel==0.0.1a15 -d "$dir" >"$WORK/rotel-pip.log" 2>&1 || return 1
    python3 -m zipfile -e "$dir"/rotel-*.whl "$dir" || return 1
    chmod +x "$dir/rotel/rotel-agent"
  fi
  echo "$dir/rotel/rotel-agent"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

rss_row() { # rss_row WHAT KIB LIMIT_MIB
  local mib verdict=PASS
  mib=$(calc "$2 / 1024" | awk '{ printf "%.1f", $1 }')
  [ "$(calc "($mib < $3) ? 1 : 0")" = 1 ] || verdict=MISS
  printf '| B6 | %s | %s MiB | — | — | — | — | < %s MiB | %s |\n' "$1" "$mib" "$3" "$verdict" >>"$TABLE"
}

start_api() { # start_api NAME [VAR=value...]: sets API_PID, API_URL, SF_KEY
  local name=$1
  shift
  API_PORT=$(free_port $((20000 + $$ % 20000)))
  API_URL="http://127.0.0.1:$API_PORT"
  env DATABASE_URL="$DB_URL" HOST=127.0.0.1 PORT="$API_PORT" PLAMATIO_DEV_KEYS=1 \
    PLAMATIO_RATE_LIMIT_PER_MINUTE=0 "$@" "$API_BIN" serve >"$WORK/api-$name.log" 2>&1 &
  API_PID=$!
  PIDS+=("$API_PID")
  wait_http "$API_URL/readyz" || die "API ($name) did not start: $(tail -20 "$WORK/api-$name.log")"
  SF_KEY=$(sed -n 's/^storefront key: *\(plm_[0-9a-f]*\).*/\1/p' "$WORK/api-$name.log" | head -n1)
  [ -n "$SF_KEY" ] || die "no storefront key in the API log"
  log "API ($name) pid $API_PID on $API_URL"
}

# ---------------------------------------------------------------------------------------------
# build

cd "$ROOT"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p plamatio-api"
  cargo build --release -p plamatio-api >"$WORK/build.log" 2>&1 || die "build failed: $(tail -20 "$WORK/build.log")"
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
API_BIN=$TARGET_DIR/release/plamatio-api
[ -x "$API_BIN" ] || die "no binary at $API_BIN"

# ---------------------------------------------------------------------------------------------
# machine

{
  echo "# Plamatio benchmark run"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (work tree modified)')"
  echo "- machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr); shared: other work may run concurrently"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- PostgreSQL: $(psql -At -d postgres -c 'SHOW server_version') on $PGHOST:$PGPORT; wrk $(wrk -v 2>&1 | head -n1 | awk '{ print $2 }'); $(nginx -v 2>&1); pgbench $(pgbench --version | awk '{ print $3 }')"
  echo "- each measured run: ${DURATION} s after a ${WARMUP} s unmeasured warm-up; peer and Plamatio run back to back, one at a time"
  echo
} >"$WORK/header.md"
{
  echo "| id | what | Plamatio (req/s) | peer (req/s) | ratio | Plamatio p50 / p99 | peer p50 / p99 | target | result |"
  echo "|---|---|---|---|---|---|---|---|---|"
} >"$TABLE"

# ---------------------------------------------------------------------------------------------
# B1 in both cache configurations (each against an nginx run made right before it), B6, B3

nginx_run() { # nginx_run NAME: nginx serving the captured bytes, measured like the API
  nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_http "http://127.0.0.1:$NGINX_PORT/products/all" || die "nginx did not start: $(tail -5 "$WORK/nginx-error.log")"
  curl -sf "http://127.0.0.1:$NGINX_PORT/products/all" | cmp -s - "$WORK/www/products-all.json" ||
    die "nginx does not serve the same bytes"
  run_wrk "$1" 64 "http://127.0.0.1:$NGINX_PORT/products/all" -s "$BENCH_LUA_DIR/report.lua" \
    -H "Authorization: Bearer $SF_KEY"
  stop_pid "$NGINX_PID"
}

b1_api_run() { # b1_api_run NAME: the cached list from the running API, sampling its RSS
  : >"$WORK/rss-$1.txt"
  (while kill -0 "$API_PID" 2>/dev/null; do rss_kib "$API_PID" >>"$WORK/rss-$1.txt"; sleep 1; done) &
  SAMPLER_PID=$!
  PIDS+=("$SAMPLER_PID")
  curl -sf -H "Authorization: Bearer $SF_KEY" "$API_URL/products/all" | cmp -s - "$WORK/www/products-all.json" ||
    die "the API ($1) does not serve the same bytes as the captured list"
  run_wrk "$1" 64 "$API_URL/products/all" -s "$BENCH_LUA_DIR/report.lua" -H "Authorization: Bearer $SF_KEY"
  stop_pid "$SAMPLER_PID"
}

if want b1 || want b1redis || want b3; then
  start_api default
  sleep 3
  IDLE_RSS=$(rss_kib "$API_PID")
  log "B6 idle RSS: ${IDLE_RSS} KiB"

  # B1: the cached list vs nginx serving the same bytes
  mkdir -p "$WORK/www" "$WORK/nginx-tmp"
  # nginx's workers run unprivileged (www-data): let them traverse the work directory and read www/.
  chmod 711 "$WORK"
  chmod 755 "$WORK/www"
  curl -sf -H "Authorization: Bearer $SF_KEY" "$API_URL/products/all" -o "$WORK/www/products-all.json" ||
    die "GET /products/all failed"
  curl -sf -H "Authorization: Bearer $SF_KEY" "$API_URL/products/all" -o "$WORK/check.json"
  cmp -s "$WORK/www/products-all.json" "$WORK/check.json" || die "/products/all is not stable"
  chmod 644 "$WORK/www/products-all.json"
  NGINX_PORT=$(free_port $((API_PORT + 1)))
  cat >"$WORK/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
      access_log off;
      sendfile on;
      tcp_nopush on;
      keepalive_requests 1000000;
      client_body_temp_path $WORK/nginx-tmp/body;
      proxy_temp_path $WORK/nginx-tmp/proxy;
      fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
      uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
      scgi_temp_path $WORK/nginx-tmp/scgi;
      server {
          listen 127.0.0.1:$NGINX_PORT;
          location = /products/all {
              types { }
              default_type application/json;
              alias $WORK/www/products-all.json;
          }
      }
}
EOF

  if want b1; then
    paired b1 nginx_run b1_api_run
    LOAD_RSS=$(cat "$WORK"/rss-b1-api-*.txt | sort -n | tail -n1)
    log "B6 max RSS under B1: ${LOAD_RSS} KiB ($(cat "$WORK"/rss-b1-api-*.txt | wc -l) samples)"
    row B1 "GET /products/all, cached, in-process cache, 64 conns" "$WORK/b1-api.wrk" "$WORK/b1-peer.wrk" nginx 0.8 5
    rss_row "RSS idle (3 s after start)" "$IDLE_RSS" 64
    rss_row "RSS max under B1 load (1 s samples)" "$LOAD_RSS" 150
  fi

  if want b1 && want b1otel; then
    # B1 with traces exported over OTLP/gRPC to a collector that drops them (rotel, from PyPI),
    # compared with the B1 run above (no exporter).
    stop_pid "$API_PID"
    ROTEL_BIN=$(rotel_agent) || die "no rotel collector (pip download rotel failed)"
    OTLP_PORT=$(free_port $((API_PORT + 2)))
    "$ROTEL_BIN" start --otlp-grpc-endpoint "127.0.0.1:$OTLP_PORT" --otlp-http-endpoint "127.0.0.1:$(free_port $((OTLP_PORT + 1)))" \
      --exporter blackhole --debug-log traces --debug-log-verbosity basic \
      >"$WORK/rotel.log" 2>&1 &
    ROTEL_PID=$!
    PIDS+=("$ROTEL_PID")
    for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$OTLP_PORT") 2>/dev/null && break; sleep 0.1; done
    # as a store runs it (the operator's default trace sample ratio, 0.1), then every request traced
    start_api otel OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" \
      OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="${BENCH_TRACE_RATIO:-0.1}"
    grep -q "exporting traces over OTLP" "$WORK/api-otel.log" || die "the API did not configure the exporter"
    b1_api_run b1-api-otel
    stop_pid "$API_PID"
    start_api otel-all OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT"
    b1_api_run b1-api-otel-all
    sleep 6 # one more batch interval: spans reach the collector
    SPAN_LINES=$(grep -ci "span" "$WORK/rotel.log" || true)
    log "B1otel: collector log lines naming spans: $SPAN_LINES"
    [ "${SPAN_LINES:-0}" -gt 0 ] || die "the collector received no spans: $(tail -5 "$WORK/rotel.log")"
    row B1otel "GET /products/all, in-process cache, OTLP exporter, ${BENCH_TRACE_RATIO:-0.1} of requests traced, vs B1 without" \
      "$WORK/b1-api-otel.wrk" "$WORK/b1-api.wrk" "B1 without exporter" 0.9
    row B1otel "GET /products/all, in-process cache, OTLP exporter, every request traced, vs B1 without" \
      "$WORK/b1-api-otel-all.wrk" "$WORK/b1-api.wrk" "B1 without exporter" -
    stop_pid "$API_PID"
    stop_pid "$ROTEL_PID"
    start_api default
  fi

  if want b3; then
    # B3: checkout vs pgbench running the same statements
    psql -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'EOF'
INSERT INTO users (id, first_name, last_name, email) VALUES ('bench-user', 'Bench', 'User', 'bench-user@example.com');
INSERT INTO addresses (street, city, state, country, zip_code, user_id)
VALUES ('1 Llama Way', 'Cusco', 'Cusco', 'PE', '08000', 'bench-user');
EOF
    ADDRESS_ID=$(psql -At -d "$DB" -c "SELECT id FROM addresses WHERE user_id = 'bench-user'")
    ORDER_BODY=$(printf '{"order":{"user_id":"bench-user","address_id":%s,"total_price":75,"status":"pending"},"items":[{"product_id":1,"quantity":1},{"product_id":2,"quantity":2},{"product_id":3,"quantity":1}]}' "$ADDRESS_ID")
    curl -sf -H "Authorization: Bearer $SF_KEY" -H 'Content-Type: application/json' -d "$ORDER_BODY" \
      "$API_URL/orders/detailed/add" >"$WORK/b3-check.json" || die "POST /orders/detailed/add failed"
    run_pgbench b3-pgbench 32 "$HERE/sql/checkout.sql" -D uid=bench-user -D addr="$ADDRESS_ID"
    run_wrk b3-api 32 "$API_URL/orders/detailed/add" -s "$BENCH_LUA_DIR/post_json.lua" \
      -H "Authorization: Bearer $SF_KEY" -- "$ORDER_BODY"
    row B3 "POST /orders/detailed/add, 3 items, 32 conns" "$WORK/b3-api.wrk" "$WORK/b3-pgbench.wrk" pgbench 0.5
  fi
  stop_pid "$API_PID"

  if want b1redis; then
    if redis-cli -u "$REDIS_BENCH_URL" ping >/dev/null 2>&1 || (exec 3<>"/dev/tcp/127.0.0.1/6379") 2>/dev/null; then
      start_api redis REDIS_URL="$REDIS_BENCH_URL" PLAMATIO_CACHE_PREFIX="bench$$:"
      paired b1redis nginx_run b1_api_run
      row B1 "GET /products/all, cached, REDIS_URL set, 64 conns" "$WORK/b1redis-api.wrk" \
        "$WORK/b1redis-peer.wrk" nginx 0.8 5
      stop_pid "$API_PID"
    else
      log "no Redis at $REDIS_BENCH_URL: B1 with REDIS_URL skipped"
      echo "| B1 | GET /products/all, REDIS_URL set | — | — | — | — | — | ≥ 0.8×, p99 < 5 ms | NOT RUN (no Redis at $REDIS_BENCH_URL) |" >>"$TABLE"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
# B2: every request reaches PostgreSQL: REDIS_URL on a port nobody listens on (every look-up fails at
# once and counts as a miss; Redis is bypassed for 1 s after each failure) and no in-process tier
# (PLAMATIO_MEMORY_CACHE_MIB=0); /metrics is checked afterwards for 0 hits. The peer is pgbench
# running the API's SELECT over as many connections as the API's pool (16): PostgreSQL's own
# ceiling for this query on this machine (PostgREST has no package for these machines).

if want b2; then
  DEAD_PORT=$(free_port $((20000 + $$ % 20000 + 100)))
  start_api nocache REDIS_URL="redis://127.0.0.1:$DEAD_PORT" REDIS_TIMEOUT_MS=50 PLAMATIO_MEMORY_CACHE_MIB=0
  b2_peer() { run_pgbench "$1" 16 "$HERE/sql/get_product.sql"; }
  b2_api() {
    run_wrk "$1" 64 "$API_URL" -s "$BENCH_LUA_DIR/random_id.lua" -H "Authorization: Bearer $SF_KEY" -- /products/get/
  }
  paired b2 b2_peer b2_api
  HITS=$(curl -s "$API_URL/metrics" | awk '/^cache_lookups_total\{.*keyspace="product-cache".*result="hit"/ { s += $NF } END { print s + 0 }')
  MISSES=$(curl -s "$API_URL/metrics" | awk '/^cache_lookups_total\{.*keyspace="product-cache"/ && !/result="hit"/ { s += $NF } END { print s + 0 }')
  log "B2 product-cache look-ups: $HITS hits, $MISSES misses/errors"
  row B2 "GET /products/get/:id, random 1–25, no cache, 64 conns" "$WORK/b2-api.wrk" "$WORK/b2-peer.wrk" \
    "pgbench SELECT, 16 conns" 0.3
  echo "|  | (B2 cache check: product-cache look-ups $HITS hits, $MISSES misses/errors) |  |  |  |  |  |  |  |" >>"$TABLE"
  stop_pid "$API_PID"
fi

# ---------------------------------------------------------------------------------------------
# report of the HTTP benchmarks, then S1, S2 and B4 (each prints and appends its own table)

{
  cat "$WORK/header.md"
  cat "$TABLE"
  echo
  echo "B2 Plamatio: REDIS_URL on a closed port and no in-process tier (every look-up misses); peer:"
  echo "pgbench -M prepared -c 16 running sql/get_product.sql (the API's SELECT)."
  echo "B3 peer: pgbench -M prepared -c 32 -j 2 running sql/checkout.sql (the API's statements per checkout)."
  [ ! -f "$WORK/pairs.md" ] || cat "$WORK/pairs.md"
  echo "- load average after the HTTP benchmarks: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT"
echo
cat "$OUT"

cleanup

if want s1; then
  log "S1: e2e/bench/data/scale.sh"
  echo >>"$OUT"
  echo "## S1: every by-id and paged route, small store vs real store (uncached)" >>"$OUT"
  echo >>"$OUT"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
  SCALE_OUT=$(mktemp) bash -c 'bash "$0/data/scale.sh" "$1" && cat "$SCALE_OUT" >>"$2"; rm -f "$SCALE_OUT"' \
    "$HERE" "$API_BIN" "$OUT" || log "S1 failed"
fi
if want s2; then
  log "S2: e2e/bench/sse/run.sh"
  echo >>"$OUT"
  echo "## S2: live streams at scale" >>"$OUT"
  echo >>"$OUT"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
  SSE_OUT=$(mktemp) bash -c 'bash "$0/sse/run.sh" "$1" && cat "$SSE_OUT" >>"$2"; rm -f "$SSE_OUT"' \
    "$HERE" "$API_BIN" "$OUT" || log "S2 failed"
fi
if want b4 && [ -f "$HERE/events/run.sh" ]; then
  log "B4: e2e/bench/events/run.sh"
  echo >>"$OUT"
  echo "## B4: outbox -> Kafka vs a direct producer" >>"$OUT"
  echo >>"$OUT"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
  echo '```' >>"$OUT"
  bash "$HERE/events/run.sh" 2>&1 | tee -a "$OUT" || log "B4 failed"
  echo '```' >>"$OUT"
fi
log "report: $OUT"
