#!/usr/bin/env bash
# B4: outbox → Kafka, 100k events, against a direct FutureProducer measured in the same run.
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and a tansu binary ($TANSU_BIN,
# /var/tmp/plamatio-tools/bin/tansu or tansu on PATH). Prints a table; exit 1 only on errors.
#   bash e2e/bench/events/run.sh
#   B4_BATCH_SIZE=2000 B4_EVENTS=50000 bash e2e/bench/events/run.sh   # knobs: see README.md
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo bench -p plamatio-api --bench b4_events -- "$@"
