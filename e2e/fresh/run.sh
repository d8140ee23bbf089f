#!/usr/bin/env bash
# Release gate for issue "the README's two commands on a fresh machine": makes a clean clone of the
# committed HEAD and runs the README's two commands as a new user would, on this machine but with
# everything the machine image lacks hidden.
#
# How the tools are hidden: a private mount namespace lays a copy-on-write overlay over /usr, /etc,
# /var/lib/{dpkg,apt}, /var/cache and /root; inside it every Debian and PyPI package that is not in
# e2e/fresh/image-baseline.txt (the image as a fresh machine shows it) is purged, the tools folder
# (/var/tmp/plamatio-tools) and the pip/npm caches are empty, and CARGO_HOME is a new folder (crates are
# downloaded again). Whatever the commands install lands in the overlay and vanishes with it; the
# machine itself is not changed. PostgreSQL and Redis (part of the image) keep running and are shared.
#
# Steps, each timed:
#   1. `PLAMATIO_DEV_KEYS=1 cargo run --release -p plamatio-api -- serve` from nothing; passes when
#      /readyz answers, the printed storefront key reads the catalog, and a bad request gets a JSON 400.
#   2. the test command `./test.sh` (or, with --ci, `.ci/run`, which runs the same command after fmt
#      and clippy, with an empty CARGO_TARGET_DIR) — must exit 0.
#
# Usage (root): bash e2e/fresh/run.sh [--ci | --run-only] [--skip-run]
#   --run-only: command 1 only; --skip-run: step 2 only.
# Environment: FRESH_WORK_DIR (default /var/tmp/plamatio-fresh; removed first), SOAK_SECONDS (passed on).
# Takes ~25-35 minutes on 2 cores (two builds from nothing). Prints `fresh: N passed, M failed`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mode="test"
skip_run=""
for argument in "$@"; do
  case "$argument" in
    --ci) mode=ci ;;
    --run-only) mode=none ;;
    --skip-run) skip_run=1 ;;
    *) echo "usage: $0 [--ci | --run-only] [--skip-run]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "e2e/fresh/run.sh: needs root (mount namespace, overlays)" >&2; exit 2; }

if [ -z "${FRESH_INSIDE:-}" ]; then
  work="${FRESH_WORK_DIR:-/var/tmp/plamatio-fresh}"
  rm -rf "$work"
  mkdir -p "$work"
  git clone --quiet --no-local "$repo" "$work/clone"
  echo "fresh: clean clone of $(git -C "$work/clone" rev-parse --short HEAD) in $work/clone"
  FRESH_INSIDE=1 FRESH_WORK="$work" exec unshare --mount --propagation private bash "$here/run.sh" "$@"
fi

# --- inside the private mount namespace ---
work="$FRESH_WORK"
baseline="$work/clone/e2e/fresh/image-baseline.txt"
log() { printf '\nfresh [%s] %s\n' "$(date +%T)" "$*"; }

for layer in /usr /etc /var/lib/dpkg /var/lib/apt /var/cache /root; do
  name=$(echo "$layer" | tr / _)
  mkdir -p "$work/overlay/$name/upper" "$work/overlay/$name/work"
  mount -t overlay "fresh$name" \
    -o "lowerdir=$layer,upperdir=$work/overlay/$name/upper,workdir=$work/overlay/$name/work" "$layer"
done
# The tools folder and the caches start empty.
for folder in /var/tmp/plamatio-tools /var/tmp/plamatio-target; do
  mkdir -p "$folder" "$work/empty$(echo "$folder" | tr / _)"
  mount --bind "$work/empty$(echo "$folder" | tr / _)" "$folder"
done
rm -rf /root/.cache/pip /root/.npm

log "hiding what the machine image lacks"
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
mapfile -t extra_apt < <(comm -23 <(dpkg-query -W -f '${Package}\n' | sort -u) \
  <(sed -n 's/^apt //p' "$baseline" | sort -u))
if [ ${#extra_apt[@]} -gt 0 ]; then
  echo "purging Debian packages: ${extra_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${extra_apt[@]}" >/dev/null
fi
rm -f /usr/sbin/policy-rc.d
mapfile -t extra_pip < <(comm -23 \
  <(python3 -m pip list --format=freeze --disable-pip-version-check 2>/dev/null | sed 's/==.*//' | tr 'A-Z_' 'a-z-' | sort -u) \
  <(sed -n 's/^pip //p' "$baseline" | sort -u))
if [ ${#extra_pip[@]} -gt 0 ]; then
  echo "uninstalling PyPI packages: ${extra_pip[*]}"
  python3 -m pip uninstall -y -q --disable-pip-version-check --root-user-action=ignore "${extra_pip[@]}" >/dev/null
fi
if command -v pyenv >/dev/null 2>&1; then pyenv rehash 2>/dev/null || true; fi
hidden_ok=1
for tool in cmake tansu helm promtool shellcheck schemathesis kubernetes-validate; do
  if command -v "$tool" >/dev/null 2>&1; then echo "still visible: $tool ($(command -v "$tool"))"; hidden_ok=""; fi
done
[ -n "$hidden_ok" ] || { echo "fresh: could not hide the tools above" >&2; exit 1; }
echo "not on PATH: cmake tansu helm promtool shellcheck schemathesis kubernetes-validate"

export CARGO_HOME="$work/cargo-home"
mkdir -p "$CARGO_HOME"
export PATH="/root/.cargo/bin:$PATH"
unset CARGO_TARGET_DIR REDIS_URL KAFKA_BOOTSTRAP_SERVERS DATABASE_URL OTEL_EXPORTER_OTLP_ENDPOINT TANSU_BIN
cd "$work/clone"
passed=0
failed=0
result() { if [ "$1" -eq 0 ]; then passed=$((passed + 1)); echo "PASS $2"; else failed=$((failed + 1)); echo "FAIL $2"; fi; }

if [ -z "$skip_run" ]; then
  log "command 1: PLAMATIO_DEV_KEYS=1 cargo run --release -p plamatio-api -- serve"
  port=18080
  database="plamatio_fresh_$$"
  start=$SECONDS
  PLAMATIO_DEV_KEYS=1 PORT=$port DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database" \
    cargo run --release -p plamatio-api -- serve > "$work/serve.log" 2>&1 &
  serve_pid=$!
  ready=""
  for _ in $(seq 1 1800); do
    if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 1
  done
  run_seconds=$((SECONDS - start))
  status=1
  if [ -n "$ready" ]; then
    key=$(sed -n 's/.*storefront key: *\(plm_[A-Za-z0-9_]*\).*/\1/p' "$work/serve.log" | head -n 1)
    products=$(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:$port/products/all")
    bad=$(curl -s -o /dev/null -w '%{http_code} %{content_type}' -H "Authorization: Bearer $key" \
      "http://127.0.0.1:$port/products/get/not-a-number")
    count=$(printf '%s' "$products" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]))' 2>/dev/null || echo 0)
    echo "ready after ${run_seconds}s; storefront key read $count products; bad id answered: $bad"
    if [ "$count" -ge 25 ] && [[ "$bad" == 400\ application/json* ]]; then status=0; fi
  else
    tail -n 40 "$work/serve.log"
  fi
  kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  pkill -f "target/release/plamatio-api serve" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  result "$status" "command 1 (run the API) in ${run_seconds}s"
fi

status=0
if [ "$mode" = none ]; then
  :
elif [ "$mode" = ci ]; then
  log "CI: bash .ci/run (static checks, then ./test.sh) with an empty CARGO_TARGET_DIR"
  start=$SECONDS
  status=0
  CI=true CARGO_TARGET_DIR=/var/tmp/plamatio-target bash .ci/run > "$work/test.log" 2>&1 || status=$?
  result "$status" ".ci/run in $((SECONDS - start))s"
else
  log "command 2: ./test.sh"
  start=$SECONDS
  status=0
  ./test.sh > "$work/test.log" 2>&1 || status=$?
  result "$status" "command 2 (./test.sh) in $((SECONDS - start))s"
fi
if [ "$mode" != none ]; then
  grep -E '^=== |test result:|passed, [0-9]+ failed' "$work/test.log" | tail -n 60 || true
  [ "$status" -eq 0 ] || tail -n 60 "$work/test.log"
fi

echo "fresh: $passed passed, $failed failed (logs: $work/serve.log, $work/test.log)"
[ "$failed" -eq 0 ]
