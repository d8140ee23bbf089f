#!/usr/bin/env bash
# Contract fuzzing: serves the API (the debug binary the test build produced) on a fresh database and
# runs schemathesis against its /openapi.json, once with a storefront key and once with an admin key.
# Fails on any 5xx, any response that violates the document, or any schema-invalid request accepted.
# Usage: e2e/contract/schemathesis.sh [path-to-plamatio-api] ; MAX_EXAMPLES (default 25) bounds the run.
set -euo pipefail

binary="${1:-${CARGO_TARGET_DIR:-target}/debug/plamatio-api}"
max_examples="${MAX_EXAMPLES:-25}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
database="plamatio_contract_$$"
storefront_key="plm_contract_storefront_$RANDOM$RANDOM"
admin_key="plm_contract_admin_$RANDOM$RANDOM"
digest() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

workdir=$(mktemp -d)
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT

DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database" HOST=127.0.0.1 PORT="$port" \
  PLAMATIO_RATE_LIMIT_PER_MINUTE=0 RUST_LOG=warn \
  PLAMATIO_API_KEYS="storefront:$(digest "$storefront_key"),admin:$(digest "$admin_key")" \
  "$binary" serve > "$workdir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$workdir/server.log"; echo "API did not start" >&2; exit 1; }

run_schemathesis() {
  (cd "$workdir" && python3 -m schemathesis.cli run "http://127.0.0.1:$port/openapi.json" \
      --header "Authorization: Bearer $1" \
      --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection \
      --phases examples,coverage,fuzzing,stateful \
      --max-examples "$max_examples" \
      --exclude-path '/events/stream/{user_id}' \
      --workers 2 --seed 1 --no-color)
}

status=0
for scope in storefront admin; do
  key_var="${scope}_key"
  echo "--- schemathesis with the $scope key"
  if ! run_schemathesis "${!key_var}" | tee "$workdir/$scope.log"; then
    # A finding (ST1xx/ST2xx/ST3xx) fails at once; an internal error of schemathesis alone (seen
    # rarely: a KeyError in its coverage phase) gets one more try.
    if grep -qE '^- ST[0-9]+' "$workdir/$scope.log"; then
      status=1
    else
      echo "--- schemathesis reported an internal error only; running the $scope pass again"
      run_schemathesis "${!key_var}" || status=1
    fi
  fi
done
if grep -q "panicked" "$workdir/server.log"; then
  grep -n "panicked" "$workdir/server.log"; status=1
fi
exit $status
