#!/usr/bin/env bash
# The README's test command: installs and starts what the tests need (scripts/test-tools.sh), then runs
# the whole suite — the Rust tests of the workspace against real PostgreSQL, Redis and a Kafka-protocol
# broker, the OpenAPI and alert-rule validators, contract fuzzing, the operator's manifests, the Helm
# chart, the local end-to-end of what the operator renders, and the 5-minute soak.
# `.ci/run` runs exactly this after its static checks (fmt, clippy).
#
# Needs only the machine image (Rust toolchain, gcc/make, Python 3, Node.js, PostgreSQL and Redis);
# root for the Debian packages. Builds go to $CARGO_TARGET_DIR (default: ./target, as cargo's).
# SOAK_SECONDS shortens the soak for a quick local run (default 300).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }

step "Tools and services (scripts/test-tools.sh)"
# shellcheck source=scripts/test-tools.sh
source scripts/test-tools.sh
ensure_test_tools
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step "Leftover test databases"
# Only databases nobody is connected to: a test run in progress on this machine keeps its own.
psql -h 127.0.0.1 -U postgres -Atqc \
  "SELECT d.datname FROM pg_database d WHERE d.datname LIKE 'plamatio\_test\_%'
     AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)" |
  while read -r name; do psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$name\"" || true; done

step "Rust tests: cargo test --workspace"
cargo test --workspace

step "OpenAPI document validates"
openapi_file=$(mktemp --suffix=.json)
"$CARGO_TARGET_DIR/debug/plamatio-api" openapi > "$openapi_file"
python3 -m openapi_spec_validator "$openapi_file"
rm -f "$openapi_file"

step "Alert rules (promtool)"
promtool check rules charts/plamatio/alerts/plamatio-api.rules.yaml

step "Contract fuzzing (schemathesis, storefront and admin keys)"
e2e/contract/schemathesis.sh "$CARGO_TARGET_DIR/debug/plamatio-api"

step "Operator manifests (CRD freshness, kubernetes-validate 1.31 and 1.30)"
bash operator/ci.sh

step "Helm chart (lint, template, kubernetes-validate 1.31/1.30, security, CRD copy, shellcheck)"
bash charts/ci.sh

step "Local end-to-end: what the operator renders, run as processes against PostgreSQL, Redis and tansu"
python3 e2e/local/run.py "$CARGO_TARGET_DIR"

step "Soak: mixed storefront traffic, RSS must stay flat"
SOAK_SECONDS="${SOAK_SECONDS:-300}" e2e/soak/run.sh "$CARGO_TARGET_DIR/debug/plamatio-api"

step "all test suites passed"
