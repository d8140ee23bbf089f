#!/usr/bin/env bash
# Validates every manifest the operator emits: the children `render` produces for a minimal and a
# maximal sample store, and the CRD, against the Kubernetes 1.31 and 1.30 schemas (strict: unknown
# fields are errors). Also fails when the committed CRD differs from the generated one.
# Usage: bash operator/ci.sh   (uses $CARGO_TARGET_DIR/debug/plamatio-operator, default target/debug)
set -euo pipefail

cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
binary="$target_dir/debug/plamatio-operator"
if [ ! -x "$binary" ]; then
  echo "operator/ci.sh: $binary missing; building it"
  cargo build -p plamatio-operator --bin plamatio-operator
fi

# shellcheck source=scripts/test-tools.sh
source scripts/test-tools.sh
ensure_python_module kubernetes_validate kubernetes-validate

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

crd=crds/plamatio.io_plamatiostores.yaml
"$binary" crd > "$work/crd.yaml"
if ! diff -u "$crd" "$work/crd.yaml"; then
  echo "operator/ci.sh: $crd is stale; run: cargo run -p plamatio-operator --bin crdgen" >&2
  exit 1
fi

files=("$crd")
for sample in minimal maximal; do
  "$binary" render -f "operator/samples/$sample.yaml" > "$work/$sample.yaml"
  files+=("$work/$sample.yaml")
done

objects=0
for file in "${files[@]}"; do
  count=$(grep -c '^kind:' "$file")
  objects=$((objects + count))
done
if [ "$objects" -lt 20 ]; then
  echo "operator/ci.sh: only $objects objects rendered; expected the full set" >&2
  exit 1
fi

failed=0
for version in 1.31.0 1.30.0; do
  if ! python3 -m kubernetes_validate --strict --quiet -k "$version" "${files[@]}"; then
    failed=$((failed + 1))
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "operator/ci.sh: invalid manifests (see the errors above)" >&2
  echo "manifests: 0 passed, $failed failed"
  exit 1
fi
echo "manifests: $((objects * 2)) passed, 0 failed"
