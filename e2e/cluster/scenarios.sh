# shellcheck shell=bash
# Operator scenarios on a real API server (issue 15), sourced by e2e/cluster/run.sh after the storefront
# flow, with its variables (NAMESPACE, RELEASE, STORE, TIMEOUT) and helpers (log, die). Each scenario
# checks what only a real API server shows: validation, quota admission, server-side-apply ownership,
# garbage collection and leases. In order (the last two change the installation):
#   1. drift repair: `kubectl scale` of the store's API Deployment is undone by the operator;
#   2. apply failure visible: a ResourceQuota refuses the store's HorizontalPodAutoscaler, so the store
#      shows Degraded=True, reason Forbidden, with a Warning Event; the live replicas are untouched;
#   3. autoscaling handover: once the quota goes, the HPA is applied and takes over spec.replicas
#      without the Deployment ever dropping below its replicas (sampled every second);
#   4. lost leadership: another holder written into the operator's Lease makes the leader stop and
#      exit (its container restarts); an operator pod leads again and the store stays Ready;
#   5. namespace deletion with topic cleanup: a store with topics.deletionPolicy Delete in a namespace
#      of its own; deleting the whole namespace (its Secrets go in parallel) completes and removes
#      exactly that store's topics from the evaluation Kafka;
#   6. namespace-scoped install: `helm upgrade` with operator.watchNamespaces (runs the pre-upgrade
#      CRD hook); the operator's service account can no longer list Secrets outside its namespace,
#      the store stays Ready, and a store in another namespace is left alone.
# SCENARIOS=0 skips them all.

SCENARIO_NS="${NAMESPACE}-scn"
operator_sa="system:serviceaccount:$NAMESPACE:$RELEASE-operator"
kafka_pod="$RELEASE-eval-kafka-0"

# condition_of STORE TYPE [NAMESPACE]: prints "status/reason" of a condition of a store.
condition_of() {
  kubectl -n "${3:-$NAMESPACE}" get pstore "$1" \
    -o jsonpath="{range .status.conditions[?(@.type==\"$2\")]}{.status}/{.reason}{end}" 2>/dev/null
}
# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND every 2 s until it succeeds.
wait_for() {
  local seconds="$1" what="$2" deadline
  shift 2
  deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "scenario: $what not seen within ${seconds}s"
    sleep 2
  done
  echo "ok: $what"
}
api_replicas() { kubectl -n "$NAMESPACE" get deployment "$STORE-api" -o jsonpath='{.spec.replicas}'; }
replicas_are() { [ "$(api_replicas)" = "$1" ]; }
condition_is() { [ "$(condition_of "$STORE" "$1")" = "$2" ]; }
condition_status_is() { [ "$(condition_of "$STORE" "$1" | cut -d/ -f1)" = "$2" ]; }
kafka_topics() {
  kubectl -n "$NAMESPACE" exec "$kafka_pod" -- /opt/kafka/bin/kafka-topics.sh \
    --bootstrap-server localhost:9092 --list
}
topics_with_prefix_count_is() { [ "$(kafka_topics | grep -c "^$1" || true)" = "$2" ]; }
topics_with_prefix_exist() { [ "$(kafka_topics | grep -c "^$1" || true)" -gt 0 ]; }
namespace_gone() { ! kubectl get namespace "$1" >/dev/null 2>&1; }
resync_wait=$(( $(kubectl -n "$NAMESPACE" get deployment "$RELEASE-operator" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="RESYNC_SECONDS")].value}' 2>/dev/null || echo 300) + 60 ))
[ "$resync_wait" -gt 60 ] || resync_wait=360

# ------------------------------------------------------------------------------ 1. drift repair
log "scenario 1: drift repair"
replicas_before=$(api_replicas)
kubectl -n "$NAMESPACE" scale deployment "$STORE-api" --replicas=$(( replicas_before + 3 ))
wait_for "$resync_wait" "the operator restored replicas=$replicas_before after kubectl scale" \
  replicas_are "$replicas_before"

# ------------------------------------------------- 2. apply failure visible, 3. autoscaling handover
log "scenario 2: a ResourceQuota refuses the store's HPA; the store says so"
kubectl -n "$NAMESPACE" apply -f - <<EOF
apiVersion: v1
kind: ResourceQuota
metadata:
  name: e2e-no-hpa
spec:
  hard:
    count/horizontalpodautoscalers.autoscaling: "0"
EOF
sampler_log=$(mktemp)
( while true; do api_replicas >>"$sampler_log" 2>/dev/null; echo >>"$sampler_log"; sleep 1; done ) &
sampler_pid=$!
kubectl -n "$NAMESPACE" patch pstore "$STORE" --type merge \
  -p "{\"spec\":{\"api\":{\"autoscaling\":{\"minReplicas\":$(( replicas_before + 1 )),\"maxReplicas\":$(( replicas_before + 3 ))}}}}"
wait_for 120 "Degraded=True/Forbidden on pstore/$STORE" condition_is Degraded True/Forbidden
kubectl -n "$NAMESPACE" get events --field-selector "involvedObject.name=$STORE,type=Warning" \
  -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' | grep -q . ||
  die "scenario 2: no Warning Event on pstore/$STORE"
echo "ok: Warning Event on pstore/$STORE"

log "scenario 3: the quota goes; the HPA takes over spec.replicas without a scale-down"
kubectl -n "$NAMESPACE" delete resourcequota e2e-no-hpa
wait_for 120 "HorizontalPodAutoscaler $STORE-api" kubectl -n "$NAMESPACE" get hpa "$STORE-api"
wait_for 180 "Degraded=False after the quota went" condition_status_is Degraded False
hpa_owns_replicas() {
  kubectl -n "$NAMESPACE" get deployment "$STORE-api" --show-managed-fields -o json |
    python3 -c 'import json, sys
d = json.load(sys.stdin)
owners = [m["manager"] for m in d["metadata"].get("managedFields", [])
          if "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {})]
sys.exit(0 if owners and all(o != "plamatio-operator" for o in owners) else 1)'
}
wait_for 300 "spec.replicas no longer owned by the operator (the HPA's)" hpa_owns_replicas
sleep 5
kill "$sampler_pid" 2>/dev/null || true
lowest=$(grep -E '^[0-9]+$' "$sampler_log" | sort -n | head -n1)
[ -n "$lowest" ] || die "scenario 3: no replica samples"
[ "$lowest" -ge "$replicas_before" ] ||
  die "scenario 3: the Deployment dropped to $lowest replicas (had $replicas_before) during the handover"
echo "ok: lowest replicas during the handover $lowest (had $replicas_before)"
rm -f "$sampler_log"

# ------------------------------------------------------------------------ 4. lost leadership
log "scenario 4: another holder takes the operator's Lease"
lease=$(kubectl -n "$NAMESPACE" get lease -o name | grep -m1 "$RELEASE" || true)
if [ -z "$lease" ]; then
  echo "skipped: no Lease (leader election off for this release: operator.replicas 1 and leaderElection auto)"
else
  leader=$(kubectl -n "$NAMESPACE" get "$lease" -o jsonpath='{.spec.holderIdentity}')
  restarts_before=$(kubectl -n "$NAMESPACE" get pod "$leader" \
    -o jsonpath='{.status.containerStatuses[0].restartCount}')
  now=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
  kubectl -n "$NAMESPACE" patch "$lease" --type merge -p \
    "{\"spec\":{\"holderIdentity\":\"e2e-intruder\",\"leaseDurationSeconds\":30,\"acquireTime\":\"$now\",\"renewTime\":\"$now\"}}"
  leader_left() {
    local restarts
    restarts=$(kubectl -n "$NAMESPACE" get pod "$leader" -o jsonpath='{.status.containerStatuses[0].restartCount}' 2>/dev/null) ||
      return 0
    [ -z "$restarts" ] || [ "$restarts" -gt "$restarts_before" ]
  }
  wait_for 90 "the leader $leader stopped and exited after losing its Lease" leader_left
  operator_leads() {
    kubectl -n "$NAMESPACE" get "$lease" -o jsonpath='{.spec.holderIdentity}' | grep -q "^$RELEASE-operator"
  }
  wait_for 180 "an operator pod leads again" operator_leads
  wait_for 180 "pstore/$STORE still Ready" condition_status_is Ready True
fi

# ------------------------------------------------------- 5. namespace deletion with topic cleanup
log "scenario 5: deleting a store's whole namespace removes its topics"
prefix="e2escn$(date +%s)."
kubectl create namespace "$SCENARIO_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$SCENARIO_NS" apply -f - <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: scenario-database
stringData:
  url: postgres://nobody@127.0.0.1:5432/none
---
apiVersion: plamatio.io/v1alpha1
kind: PlamatioStore
metadata:
  name: doomed
spec:
  api:
    userAuth:
      mode: "off"
  database:
    urlSecretRef:
      name: scenario-database
      key: url
    migrations: manual
  kafka:
    bootstrapServers: $RELEASE-eval-kafka.$NAMESPACE.svc:9092
    securityProtocol: plaintext
    topicPrefix: "$prefix"
    topics:
      partitions: 1
      replicationFactor: 1
      deletionPolicy: Delete
EOF
wait_for 180 "topics with prefix $prefix on the evaluation Kafka" topics_with_prefix_exist "$prefix"
others_before=$(kafka_topics | grep -vc "^$prefix" || true)
kubectl delete namespace "$SCENARIO_NS" --wait=false
wait_for 300 "namespace $SCENARIO_NS deleted (the topics finalizer did not hang)" namespace_gone "$SCENARIO_NS"
wait_for 60 "no topic with prefix $prefix left" topics_with_prefix_count_is "$prefix" 0
[ "$(kafka_topics | grep -vc "^$prefix" || true)" = "$others_before" ] ||
  die "scenario 5: topics of other stores changed"
echo "ok: the other $others_before topics are untouched"

# ------------------------------------------------------------------ 6. namespace-scoped install
log "scenario 6: helm upgrade to a namespace-scoped install (watchNamespaces=$NAMESPACE)"
helm upgrade "$RELEASE" charts/plamatio --namespace "$NAMESPACE" --reuse-values \
  --set "operator.watchNamespaces={$NAMESPACE}" --wait --timeout "${TIMEOUT}s"
kubectl -n "$NAMESPACE" rollout status deployment/"$RELEASE"-operator --timeout="${TIMEOUT}s"
[ "$(kubectl auth can-i list secrets -n default --as "$operator_sa")" = "no" ] ||
  die "scenario 6: the operator can still list Secrets in namespace default"
[ "$(kubectl auth can-i list secrets -n "$NAMESPACE" --as "$operator_sa")" = "yes" ] ||
  die "scenario 6: the operator cannot list Secrets in its own namespace"
echo "ok: Secrets RBAC limited to $NAMESPACE"
wait_for 180 "pstore/$STORE Ready under the namespace-scoped operator" condition_status_is Ready True
kubectl create namespace "$SCENARIO_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$SCENARIO_NS" apply -f - <<EOF
apiVersion: plamatio.io/v1alpha1
kind: PlamatioStore
metadata:
  name: ignored
spec:
  api:
    userAuth:
      mode: "off"
  database:
    urlSecretRef:
      name: absent
      key: url
EOF
sleep 30
[ -z "$(kubectl -n "$SCENARIO_NS" get pstore ignored -o jsonpath='{.status}')" ] ||
  die "scenario 6: a store outside watchNamespaces got a status"
[ -z "$(kubectl -n "$SCENARIO_NS" get deployment,service,configmap -l app.kubernetes.io/instance=ignored -o name)" ] ||
  die "scenario 6: a store outside watchNamespaces got children"
echo "ok: the store outside watchNamespaces is left alone"
kubectl -n "$SCENARIO_NS" delete pstore ignored --wait=false
kubectl delete namespace "$SCENARIO_NS" --wait=false

log "operator scenarios passed"
