#!/usr/bin/env bash
# End-to-end run on a real cluster (whatever KUBECONFIG points at; cannot run on the CI machines):
# installs the CRD and the operator, applies a store with an in-cluster PostgreSQL, waits for the
# store to be Ready, and calls the API through its Service.
#
#   KUBECONFIG=~/.kube/config bash e2e/cluster/run.sh
#
# Environment:
#   API_IMAGE       image of the store API (default ghcr.io/plamatio/plamatio-api:0.1.0)
#   OPERATOR_IMAGE  run the operator in the cluster from this image (2 replicas, leader election);
#                   unset: run the locally built binary against the cluster instead
#   KEEP=1          leave everything installed afterwards
#   TIMEOUT         seconds to wait for Ready (default 300)
set -euo pipefail

cd "$(dirname "$0")/../.."
: "${KUBECONFIG:?set KUBECONFIG to the cluster to test against}"
API_IMAGE="${API_IMAGE:-ghcr.io/plamatio/plamatio-api:0.1.0}"
TIMEOUT="${TIMEOUT:-300}"
NAMESPACE=plamatio-e2e
command -v kubectl >/dev/null || { echo "kubectl is required" >&2; exit 1; }

operator_pid=""
cleanup() {
  if [ -n "$operator_pid" ]; then kill "$operator_pid" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" != "1" ]; then
    kubectl delete namespace "$NAMESPACE" --ignore-not-found --wait=false
    if [ -n "${OPERATOR_IMAGE:-}" ]; then
      sed -e "s|\${OPERATOR_IMAGE}|$OPERATOR_IMAGE|" -e "s|\${API_IMAGE}|$API_IMAGE|" e2e/cluster/operator.yaml \
        | kubectl delete --ignore-not-found -f -
    fi
  fi
}
trap cleanup EXIT

echo "==> CRD"
kubectl apply --server-side -f crds/plamatio.io_plamatiostores.yaml
kubectl wait --for=condition=Established crd/plamatiostores.plamatio.io --timeout=60s

echo "==> operator"
if [ -n "${OPERATOR_IMAGE:-}" ]; then
  sed -e "s|\${OPERATOR_IMAGE}|$OPERATOR_IMAGE|" -e "s|\${API_IMAGE}|$API_IMAGE|" e2e/cluster/operator.yaml \
    | kubectl apply --server-side -f -
  kubectl -n plamatio-system rollout status deployment/plamatio-operator --timeout=180s
else
  cargo build -p plamatio-operator --bin plamatio-operator
  binary="${CARGO_TARGET_DIR:-target}/debug/plamatio-operator"
  PLAMATIO_DEFAULT_API_IMAGE="$API_IMAGE" LOG_FORMAT=pretty \
    "$binary" run --disable-leader-election --metrics-address 127.0.0.1:18080 &
  operator_pid=$!
fi

echo "==> store"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f e2e/cluster/store.yaml
started=$(date +%s)
kubectl -n "$NAMESPACE" wait --for=condition=Ready pstore/shop --timeout="${TIMEOUT}s"
echo "store Ready after $(( $(date +%s) - started )) s"
kubectl -n "$NAMESPACE" get pstore shop
kubectl -n "$NAMESPACE" get deployment,service,job,configmap,networkpolicy,pdb -l plamatio.io/store=shop

echo "==> API"
endpoint=$(kubectl -n "$NAMESPACE" get pstore shop -o jsonpath='{.status.endpoint}')
kubectl -n "$NAMESPACE" run e2e-curl --rm -i --restart=Never --image=curlimages/curl:8.11.1 -- \
  sh -c "curl -fsS $endpoint/healthz && echo && curl -fsS $endpoint/readyz && echo && curl -fsS $endpoint/metrics | head -n 5"
echo
echo "==> e2e passed"
