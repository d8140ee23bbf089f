#!/usr/bin/env bash
# End-to-end run of the Helm chart on a real cluster (kind, k3d, or whatever KUBECONFIG points at; it
# cannot run on the CI machines, which have neither a Docker engine nor a cluster):
#   1. builds the API and operator images (the root Dockerfile, BINARY=plamatio-api / plamatio-operator), loads them
#      into the kind/k3d cluster when the current context is one (else pushes them with PUSH=1);
#   2. `helm install`s charts/plamatio in evaluation mode (PostgreSQL, Redis, Kafka, a sample store);
#   3. waits for the store's Ready condition;
#   4. runs the storefront flow through a port-forward to the store's Service: core/info,
#      products/all, users/get (404) -> users/add, users/addresses/add, cart/add,
#      orders/detailed/add, orders/detailed/all;
#   5. runs the operator scenarios of e2e/cluster/scenarios.sh (drift repair, an apply failure shown on
#      the store, the autoscaling handover, lost leadership, namespace deletion with topic cleanup, the
#      namespace-scoped install; SCENARIOS=0 skips them): the release gate for operator changes;
#   6. uninstalls (unless KEEP=1).
#
#   kind create cluster --name plamatio && bash e2e/cluster/run.sh
#   k3d cluster create plamatio && bash e2e/cluster/run.sh
#   KUBECONFIG=~/.kube/other IMAGE_REGISTRY=registry.example.com/me PUSH=1 bash e2e/cluster/run.sh
#   API_IMAGE=ghcr.io/plamatio/plamatio-api:0.1.0 OPERATOR_IMAGE=ghcr.io/plamatio/plamatio-operator:0.1.0 \
#     bash e2e/cluster/run.sh            # use published images, build nothing
#
# Environment:
#   API_IMAGE, OPERATOR_IMAGE  use these images instead of building (both, or neither)
#   IMAGE_REGISTRY  prefix of built images (default plamatio.local); IMAGE_TAG (default e2e-<time>,
#                   a fresh tag per run: the migration Job is keyed by the image tag)
#   PUSH=1          docker push the built images (clusters other than kind/k3d)
#   NAMESPACE       namespace of the release (default plamatio-e2e); RELEASE (default plamatio-e2e)
#   STORE           name of the sample store (default shop)
#   TIMEOUT         seconds to wait for the install and for Ready (default 600)
#   LOCAL_PORT      local end of the port-forward (default 18080)
#   SCENARIOS=0     only the install and the storefront flow, not the operator scenarios
#   KEEP=1          leave everything installed afterwards
# Needs: kubectl, helm (bash charts/ci.sh installs one under /var/tmp/plamatio-tools/bin), curl,
# python3, and docker (plus kind or k3d for those clusters) unless both images are given.
set -euo pipefail

cd "$(dirname "$0")/../.."
export PATH="${PLAMATIO_TOOLS_DIR:-/var/tmp/plamatio-tools}/bin:$PATH"
NAMESPACE="${NAMESPACE:-plamatio-e2e}"
RELEASE="${RELEASE:-plamatio-e2e}"
STORE="${STORE:-shop}"
TIMEOUT="${TIMEOUT:-600}"
LOCAL_PORT="${LOCAL_PORT:-18080}"
IMAGE_REGISTRY="${IMAGE_REGISTRY:-plamatio.local}"
IMAGE_TAG="${IMAGE_TAG:-e2e-$(date +%s)}"

log() { printf '\n==> %s\n' "$*"; }
die() { echo "e2e/cluster/run.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required"; }
need kubectl
need helm
need curl
need python3
kubectl version >/dev/null 2>&1 || die "no reachable cluster (KUBECONFIG=${KUBECONFIG:-~/.kube/config})"

# ---------------------------------------------------------------------------------------- images
if [ -n "${API_IMAGE:-}" ] && [ -n "${OPERATOR_IMAGE:-}" ]; then
  log "images: $API_IMAGE, $OPERATOR_IMAGE (not built)"
elif [ -n "${API_IMAGE:-}${OPERATOR_IMAGE:-}" ]; then
  die "set both API_IMAGE and OPERATOR_IMAGE, or neither (then both are built)"
else
  need docker
  API_IMAGE="$IMAGE_REGISTRY/plamatio-api:$IMAGE_TAG"
  OPERATOR_IMAGE="$IMAGE_REGISTRY/plamatio-operator:$IMAGE_TAG"
  log "building $API_IMAGE and $OPERATOR_IMAGE"
  DOCKER_BUILDKIT=1 docker build --build-arg BINARY=plamatio-api -t "$API_IMAGE" .
  DOCKER_BUILDKIT=1 docker build --build-arg BINARY=plamatio-operator -t "$OPERATOR_IMAGE" .
  context=$(kubectl config current-context)
  case "$context" in
    kind-*)
      need kind
      log "loading the images into kind cluster ${context#kind-}"
      kind load docker-image --name "${context#kind-}" "$API_IMAGE" "$OPERATOR_IMAGE"
      ;;
    k3d-*)
      need k3d
      log "importing the images into k3d cluster ${context#k3d-}"
      k3d image import --cluster "${context#k3d-}" "$API_IMAGE" "$OPERATOR_IMAGE"
      ;;
    *)
      if [ "${PUSH:-0}" = "1" ]; then
        log "pushing the images"
        docker push "$API_IMAGE"
        docker push "$OPERATOR_IMAGE"
      else
        die "context $context is neither kind nor k3d: set IMAGE_REGISTRY to a registry the cluster pulls from and PUSH=1, or give API_IMAGE and OPERATOR_IMAGE"
      fi
      ;;
  esac
fi

# "registry/name:tag" -> "registry/name" and "tag" (a port in the registry part is not a tag).
image_repository() { local ref="$1"; if [[ "${ref##*/}" == *:* ]]; then echo "${ref%:*}"; else echo "$ref"; fi; }
image_tag() { local ref="$1"; if [[ "${ref##*/}" == *:* ]]; then echo "${ref##*:}"; else echo latest; fi; }

# ----------------------------------------------------------------------------------------- install
port_forward_pid=""
cleanup() {
  status=$?
  if [ -n "$port_forward_pid" ]; then kill "$port_forward_pid" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ]; then
    echo "--- diagnostics (exit $status)" >&2
    kubectl -n "$NAMESPACE" get pstore,deployment,statefulset,job,pod,service -o wide >&2 || true
    kubectl -n "$NAMESPACE" describe pstore "$STORE" >&2 || true
    kubectl -n "$NAMESPACE" logs deployment/"$RELEASE"-operator --tail=50 >&2 || true
    kubectl -n "$NAMESPACE" logs deployment/"$STORE"-api --tail=50 >&2 || true
  fi
  if [ "${KEEP:-0}" != "1" ]; then
    log "uninstalling"
    # The store goes first, while the operator still runs (no finalizer with deletionPolicy Retain).
    kubectl -n "$NAMESPACE" delete pstore --all --ignore-not-found --timeout=120s || true
    helm uninstall "$RELEASE" --namespace "$NAMESPACE" --wait --timeout 300s || true
    kubectl delete namespace "$NAMESPACE" "$NAMESPACE-scn" --ignore-not-found --wait=false || true
  else
    log "KEEP=1: release $RELEASE left in namespace $NAMESPACE"
  fi
  exit "$status"
}
trap cleanup EXIT

log "helm install $RELEASE (evaluation mode) into $NAMESPACE"
started=$(date +%s)
helm upgrade --install "$RELEASE" charts/plamatio \
  --namespace "$NAMESPACE" --create-namespace \
  --set fullnameOverride="$RELEASE" \
  --set image.repository="$(image_repository "$OPERATOR_IMAGE")" \
  --set image.tag="$(image_tag "$OPERATOR_IMAGE")" \
  --set apiImage.repository="$(image_repository "$API_IMAGE")" \
  --set apiImage.tag="$(image_tag "$API_IMAGE")" \
  --set evaluation.enabled=true \
  --set evaluation.store.name="$STORE" \
  --wait --timeout "${TIMEOUT}s"
kubectl -n "$NAMESPACE" rollout status deployment/"$RELEASE"-operator --timeout="${TIMEOUT}s"

log "waiting for pstore/$STORE to be Ready"
kubectl -n "$NAMESPACE" wait --for=condition=Ready pstore/"$STORE" --timeout="${TIMEOUT}s"
echo "store Ready $(( $(date +%s) - started )) s after helm install"
kubectl -n "$NAMESPACE" get pstore "$STORE"
kubectl -n "$NAMESPACE" get pstore "$STORE" \
  -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}){"\n"}{end}'
kubectl -n "$NAMESPACE" rollout status deployment/"$STORE"-api --timeout="${TIMEOUT}s"

# -------------------------------------------------------------------------------- storefront flow
storefront_key=$(kubectl -n "$NAMESPACE" get secret "$RELEASE"-eval-api-keys -o jsonpath='{.data.storefront}' | base64 -d)
[ -n "$storefront_key" ] || die "no storefront key in Secret $RELEASE-eval-api-keys"

log "port-forward service/$STORE-api to 127.0.0.1:$LOCAL_PORT"
kubectl -n "$NAMESPACE" port-forward service/"$STORE"-api "$LOCAL_PORT":80 >/dev/null &
port_forward_pid=$!
base="http://127.0.0.1:$LOCAL_PORT"
for _ in $(seq 1 30); do
  curl -fsS -o /dev/null "$base/healthz" 2>/dev/null && break
  sleep 1
done

body_file=$(mktemp)
# call METHOD PATH EXPECTED_STATUS [JSON_BODY]: prints the response body, fails on another status.
call() {
  local method="$1" path="$2" expected="$3" data="${4:-}" status
  local args=(-sS -o "$body_file" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $storefront_key")
  if [ -n "$data" ]; then args+=(-H 'Content-Type: application/json' --data "$data"); fi
  status=$(curl "${args[@]}" "$base$path")
  if [ "$status" != "$expected" ]; then
    echo "$method $path: HTTP $status, expected $expected: $(cat "$body_file")" >&2
    return 1
  fi
  printf '%-4s %-40s %s\n' "$method" "$path" "$status" >&2
  cat "$body_file"
}
# json EXPRESSION: evaluates a Python expression over the JSON on stdin (bound to `d`).
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

log "storefront flow"
call GET /core/info 200 | json 'd["data"]' >/dev/null
products=$(call GET /products/all 200)
product_id=$(json 'd["data"][0]["id"]' <<<"$products")
price=$(json 'd["data"][0]["price"]' <<<"$products")
echo "$(json 'len(d["data"])' <<<"$products") products; ordering product $product_id at $price"

user_id="e2e_$(date +%s)_$$"
call GET "/users/get/$user_id" 404 >/dev/null
call POST /users/add 200 \
  "{\"id\":\"$user_id\",\"firstName\":\"Lama\",\"lastName\":\"Glama\",\"email\":\"$user_id@example.com\"}" \
  | json 'd["id"]' >/dev/null
[ "$(call GET "/users/get/$user_id" 200 | json 'd["email"]')" = "$user_id@example.com" ] || die "user not stored"

address_id=$(call POST /users/addresses/add 200 \
  "{\"street\":\"1 Alpaca Way\",\"city\":\"Cusco\",\"state\":\"Cusco\",\"country\":\"Peru\",\"zipCode\":\"08000\",\"userId\":\"$user_id\"}" \
  | json 'd["id"]')

call POST /cart/add 200 "{\"product_id\":$product_id,\"quantity\":2,\"user_id\":\"$user_id\"}" | json 'd["id"]' >/dev/null
[ "$(call GET "/cart/all/$user_id" 200 | json 'len(d["data"])')" = "1" ] || die "cart item not stored"

order=$(call POST /orders/detailed/add 200 \
  "{\"order\":{\"user_id\":\"$user_id\",\"address_id\":$address_id,\"total_price\":$(( price * 2 )),\"status\":\"pending\"},\"items\":[{\"product_id\":$product_id,\"quantity\":2}]}")
order_id=$(json 'd["order"]["id"]' <<<"$order")
orders=$(call GET "/orders/detailed/all/$user_id" 200)
[ "$(json '[o["order"]["id"] for o in d["data"]]' <<<"$orders")" = "[$order_id]" ] || die "order $order_id not listed: $orders"
[ "$(json 'd["data"][0]["items"][0]["quantity"]' <<<"$orders")" = "2" ] || die "order items wrong: $orders"
rm -f "$body_file"

log "e2e passed: order $order_id of user $user_id through store $STORE"

if [ "${SCENARIOS:-1}" = "1" ]; then
  # shellcheck source=e2e/cluster/scenarios.sh
  source e2e/cluster/scenarios.sh
fi
