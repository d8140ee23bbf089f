#!/usr/bin/env bash
# B5: 500 PlamatioStores created at once against the in-memory API server; prints the time until all
# children are applied, the RSS, and the writes of a resync (exit 1 when a target is missed).
#   bash e2e/bench/operator/run.sh [--stores N]
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo bench -p plamatio-operator --bench b5_operator -- "$@"
