#!/usr/bin/env bash
# Checks of the Helm chart (charts/plamatio), run by .ci/run as `bash charts/ci.sh`:
#   1. tools: helm, kubernetes-validate and shellcheck, installed when missing by scripts/test-tools.sh;
#   2. the chart's CRD is an identical copy of crds/plamatio.io_plamatiostores.yaml;
#   3. the chart's RBAC grants exactly what e2e/cluster/operator.yaml (the operator's audited
#      permission set) grants;
#   4. `helm lint --strict` and `helm template` for the default values, evaluation mode and
#      ci/maximal-values.yaml; values.schema.json refuses bad values;
#   5. every rendered object (and the CRD) through `kubernetes-validate --strict` for Kubernetes 1.31.0
#      and 1.30.0 (custom kinds only warn);
#      the rendered PlamatioStores against the CRD's own schema (charts/validate_stores.py);
#   6. charts/security_check.py on every rendered workload;
#   7. with the operator binary ($CARGO_TARGET_DIR/debug/plamatio-operator, built when missing), the
#      children the operator makes of the evaluation stores: validated and security-checked;
#   8. shellcheck of every shell script under charts/, e2e/cluster/, e2e/fresh/, scripts/, test.sh, .ci/run.
# Works on a fresh Debian 12 machine (root; registries: Debian, PyPI, npm) and is fast on a warm one.
set -euo pipefail

cd "$(dirname "$0")/.."
chart=charts/plamatio
KUBERNETES_VERSIONS=(1.31.0 1.30.0)

step() { printf '\n--- charts: %s (%ss)\n' "$1" "$SECONDS"; }
die() { echo "charts/ci.sh: $*" >&2; exit 1; }

step "tools"
# shellcheck source=scripts/test-tools.sh
source scripts/test-tools.sh
ensure_helm
ensure_python_module yaml PyYAML
ensure_python_module jsonschema jsonschema
ensure_python_module kubernetes_validate kubernetes-validate
ensure_command_from_apt shellcheck shellcheck
helm version --short
kubernetes_validate() { python3 -m kubernetes_validate "$@"; }
shellcheck --version | sed -n 2p

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "CRD copy is fresh"
if ! diff -u crds/plamatio.io_plamatiostores.yaml "$chart/crds/plamatio.io_plamatiostores.yaml"; then
  die "$chart/crds/ differs from crds/; run: cp crds/plamatio.io_plamatiostores.yaml $chart/crds/"
fi
echo "identical"

# name -> helm arguments of each rendering.
declare -A value_sets=(
  [default]=""
  [evaluation]="--set evaluation.enabled=true"
  [maximal]="--values $chart/ci/maximal-values.yaml"
  [namespaced]="--set operator.watchNamespaces={shops,outlets}"
)
names=(default evaluation maximal namespaced)

step "helm lint --strict"
for name in "${names[@]}"; do
  # shellcheck disable=SC2086 # the value sets are word lists on purpose
  helm lint --strict --quiet "$chart" ${value_sets[$name]} >"$work/lint-$name.txt" 2>&1 ||
    { cat "$work/lint-$name.txt"; die "helm lint failed for $name values"; }
  echo "$name: ok"
done

step "helm template"
for name in "${names[@]}"; do
  # shellcheck disable=SC2086
  helm template plamatio "$chart" --namespace plamatio-system ${value_sets[$name]} >"$work/$name.yaml"
  echo "$name: $(grep -c '^kind:' "$work/$name.yaml") objects"
done
# One replica: no leader election, and the Recreate strategy.
helm template plamatio "$chart" --namespace plamatio-system --set operator.replicas=1 >"$work/single.yaml"
names+=(single)
# Without the CRD upgrade hook.
helm template plamatio "$chart" --namespace plamatio-system --set operator.crdUpgrade.enabled=false >"$work/no-crd-hook.yaml"
names+=(no-crd-hook)

# NOTES.txt is rendered only by install/upgrade (which need a cluster): render it through tpl in a copy.
cp -r "$chart" "$work/notes-chart"
cp "$chart/templates/NOTES.txt" "$work/notes-chart/notes.txt"
cat >"$work/notes-chart/templates/notes-check.yaml" <<'EOF_NOTES'
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: |
    {{- tpl (.Files.Get "notes.txt") . | nindent 4 }}
EOF_NOTES
for name in default evaluation; do
  # shellcheck disable=SC2086
  helm template plamatio "$work/notes-chart" --namespace plamatio-system ${value_sets[$name]} \
    --show-only templates/notes-check.yaml >"$work/notes-$name.yaml"
  grep -q 'plamatio-api:0.1.0 keys generate --scope storefront' "$work/notes-$name.yaml" ||
    die "NOTES.txt ($name) does not explain how to create an API key"
done
grep -q 'pstore/shop' "$work/notes-evaluation.yaml" || die "NOTES.txt (evaluation) does not name the store"
echo "NOTES.txt renders for default and evaluation values"

step "rendered content"
python3 - "$work" <<'PY'
import sys, yaml
work = sys.argv[1]
def load(path):
    return [o for o in yaml.safe_load_all(open(path)) if isinstance(o, dict)]
def is_hook(o):
    return "helm.sh/hook" in (o["metadata"].get("annotations") or {})
def find(objs, kind, suffix=""):
    # The release's objects; the CRD upgrade hook's are checked on their own (find_hooks).
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(suffix) and not is_hook(o)]
def find_hooks(objs, kind):
    return [o for o in objs if o["kind"] == kind and is_hook(o)]
def rules(role):
    return sorted((tuple(r.get("apiGroups", [])), tuple(sorted(r.get("resources", []))),
                   tuple(sorted(r["verbs"]))) for r in role["rules"])
errors = []
def expect(cond, message):
    if not cond:
        errors.append(message)

reference = load("e2e/cluster/operator.yaml")
default = load(f"{work}/default.yaml")
evaluation = load(f"{work}/evaluation.yaml")
maximal = load(f"{work}/maximal.yaml")
single = load(f"{work}/single.yaml")
namespaced = load(f"{work}/namespaced.yaml")
no_crd_hook = load(f"{work}/no-crd-hook.yaml")

# RBAC: exactly the permission set of the reference manifest.
for kind in ("ClusterRole", "Role"):
    want = [rules(r) for r in find(reference, kind)]
    got = [rules(r) for r in find(default, kind)]
    expect(want == got, f"{kind} rules differ from e2e/cluster/operator.yaml:\n  want {want}\n  got  {got}")

def operator_container(objs):
    deployments = find(objs, "Deployment", "-operator")
    expect(len(deployments) == 1, "exactly one operator Deployment")
    return deployments[0]["spec"], deployments[0]["spec"]["template"]["spec"]["containers"][0]

spec, container = operator_container(default)
env = {e["name"]: e.get("value") for e in container["env"]}
expect(spec["replicas"] == 2, "two operator replicas by default")
expect("--disable-leader-election" not in container["args"], "leader election on with 2 replicas")
expect(env.get("PLAMATIO_DEFAULT_API_IMAGE") == "ghcr.io/plamatio/plamatio-api:0.1.0", "default API image is the appVersion")
expect(env.get("MAX_CONCURRENT_ROLLOUTS") == "5", "at most 5 stores roll at once by default")
expect(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe on /healthz")
expect(container["readinessProbe"]["httpGet"]["path"] == "/healthz", "readiness probe on /healthz")
expect(find(default, "PodDisruptionBudget"), "a PodDisruptionBudget with 2 replicas")
expect(not find(default, "PlamatioStore"), "no store without evaluation mode")
expect(not find(default, "CustomResourceDefinition"), "the CRD comes from crds/, not templates/")

# Namespace-scoped install: the ClusterRole's rules as a Role (and RoleBinding) in each watched
# namespace, nothing cluster-wide, and the operator told which namespaces to watch.
expect(not find(namespaced, "ClusterRole") and not find(namespaced, "ClusterRoleBinding"),
       "namespace-scoped install: no ClusterRole or ClusterRoleBinding")
cluster_rules = [rules(r) for r in find(reference, "ClusterRole")]
for ns in ("shops", "outlets"):
    roles = [r for r in find(namespaced, "Role") if r["metadata"].get("namespace") == ns]
    expect([rules(r) for r in roles] == cluster_rules, f"namespace-scoped install: the Role in {ns} has the ClusterRole's rules")
    bindings = [b for b in find(namespaced, "RoleBinding") if b["metadata"].get("namespace") == ns]
    expect(len(bindings) == 1 and bindings[0]["roleRef"]["kind"] == "Role", f"namespace-scoped install: a RoleBinding in {ns}")
_, container = operator_container(namespaced)
expect({e["name"]: e.get("value") for e in container["env"]}.get("WATCH_NAMESPACES") == "shops,outlets",
       "namespace-scoped install: WATCH_NAMESPACES names the namespaces")

# CRD upgrades: Helm never upgrades crds/, so a pre-upgrade hook Job runs the operator image's
# `apply-crd`, with a ClusterRole that reaches the one CRD only (in both install modes).
for name, objs in (("default", default), ("namespaced", namespaced)):
    jobs = find_hooks(objs, "Job")
    expect(len(jobs) == 1, f"{name}: one CRD upgrade hook Job")
    job = jobs[0]
    annotations = job["metadata"]["annotations"]
    expect(annotations.get("helm.sh/hook") == "pre-upgrade", f"{name}: the CRD hook runs before an upgrade")
    expect("hook-succeeded" in annotations.get("helm.sh/hook-delete-policy", ""), f"{name}: the hook is cleaned up")
    hook = job["spec"]["template"]["spec"]["containers"][0]
    expect(hook["args"] == ["apply-crd"], f"{name}: the hook runs apply-crd")
    expect(hook["image"] == operator_container(objs)[1]["image"], f"{name}: the hook runs the new operator image")
    roles = find_hooks(objs, "ClusterRole")
    expect(len(roles) == 1 and roles[0]["rules"] == [{
        "apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
        "resourceNames": ["plamatiostores.plamatio.io"], "verbs": ["get", "patch"]}],
        f"{name}: the hook's ClusterRole reaches the PlamatioStore CRD only, get/patch")
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in objs if is_hook(o)}
    expect(weights.get("ServiceAccount", 0) < weights.get("Job", 0) and weights.get("ClusterRoleBinding", 0) < weights.get("Job", 0),
           f"{name}: the hook's RBAC exists before its Job")
expect(not [o for o in no_crd_hook if is_hook(o)], "operator.crdUpgrade.enabled=false renders no hook")

spec, container = operator_container(single)
expect("--disable-leader-election" in container["args"], "leader election off with 1 replica")
expect(spec["strategy"]["type"] == "Recreate", "Recreate strategy without leader election")
expect(not find(single, "Role"), "no Lease Role without leader election")
expect(not find(single, "PodDisruptionBudget"), "no PodDisruptionBudget with 1 replica")

stores = find(evaluation, "PlamatioStore")
expect(len(stores) == 1, "evaluation mode renders one PlamatioStore")
store = stores[0]["spec"]
secrets = {s["metadata"]["name"]: s["stringData"] for s in find(evaluation, "Secret")}
db = store["database"]["urlSecretRef"]
expect(secrets.get(db["name"], {}).get(db["key"], "").startswith("postgres://"), "database URL Secret holds a postgres:// URL")
cache = store["cache"]["urlSecretRef"]
expect(secrets.get(cache["name"], {}).get(cache["key"], "").startswith("redis://"), "cache URL Secret holds a redis:// URL")
expect(store["kafka"]["bootstrapServers"].endswith(".plamatio-system.svc:9092"), "Kafka bootstrap is the in-cluster Service")
expect("observability" not in store, "no observability unless given")
keys = store["api"]["apiKeysSecretRef"]["name"]
expect(set(secrets.get(keys, {})) == {"storefront", "admin"}, "API key digests for storefront and admin")
import hashlib
plain = next(v for k, v in secrets.items() if k.endswith("-eval-api-keys"))
expect(all(hashlib.sha256(plain[s].encode()).hexdigest() == secrets[keys][s] for s in ("storefront", "admin")),
       "digest Secret holds the SHA-256 of the plain keys")
cluster_id = next(v for k, v in secrets.items() if k.endswith("-eval-kafka"))["cluster-id"]
expect(len(cluster_id) == 22, "KRaft cluster id is 22 base64url characters")
images = sorted(c["image"] for o in evaluation if o["kind"] in ("Deployment", "StatefulSet")
                for c in o["spec"]["template"]["spec"]["containers"])
expect(any(i.startswith("docker.io/library/postgres:16") for i in images), "postgres:16")
expect(any(i.startswith("docker.io/library/redis:7") for i in images), "redis:7")
expect(any(i.startswith("docker.io/apache/kafka:3.8") for i in images), "apache/kafka:3.8")
kafka_config = next(o for o in find(evaluation, "ConfigMap", "-eval-kafka"))["data"]["server.properties"]
expect("process.roles=broker,controller" in kafka_config and "zookeeper" not in kafka_config, "Kafka runs in KRaft mode")

kinds = {o["kind"] for o in maximal}
for kind in ("ServiceMonitor", "PrometheusRule", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"):
    expect(kind in kinds, f"maximal values render a {kind}")
dashboards = [o for o in find(maximal, "ConfigMap", "-dashboard") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
expect(dashboards and "plamatio-api.json" in dashboards[0]["data"], "dashboard ConfigMap labelled grafana_dashboard=1")
store = find(maximal, "PlamatioStore")[0]["spec"]
expect(store["observability"]["otlpEndpoint"].startswith("https://"), "observability passed through when given")
rule = find(maximal, "PrometheusRule")[0]
expect(rule["spec"]["groups"][0]["name"] == "plamatio-api", "PrometheusRule holds the alert rules")
expect(max(len(o["metadata"]["name"]) for o in maximal if o["kind"] in ("Service", "StatefulSet")) <= 52, "short names")

if errors:
    for e in errors:
        print("charts/ci.sh: " + e, file=sys.stderr)
    sys.exit(1)
print("RBAC matches e2e/cluster/operator.yaml; leader election, evaluation wiring, keys and options as expected")
PY

step "values.schema.json refuses bad values"
refused=0
for bad in "operator.replicas=0" "operator.leaderElection.enabled=sometimes" "evaluation.store.name=Not_A_Name" \
           "operator.resources.limits=null" "evaluation.redis.password=has space" "unknownKey=1"; do
  if helm template plamatio "$chart" --set "$bad" >/dev/null 2>&1; then
    die "values.schema.json accepted --set $bad"
  fi
  refused=$((refused + 1))
done
echo "$refused bad values refused"

step "kubernetes-validate --strict (${KUBERNETES_VERSIONS[*]})"
files=("$chart/crds/plamatio.io_plamatiostores.yaml")
for name in "${names[@]}"; do files+=("$work/$name.yaml"); done
objects=0
for file in "${files[@]}"; do objects=$((objects + $(grep -c '^kind:' "$file"))); done
for version in "${KUBERNETES_VERSIONS[@]}"; do
  kubernetes_validate --strict --quiet -k "$version" "${files[@]}" >"$work/validate.txt" 2>&1 ||
    { cat "$work/validate.txt"; die "invalid manifests for Kubernetes $version"; }
  # Custom kinds (PlamatioStore, ServiceMonitor, PrometheusRule) have no bundled schema: warnings only.
  warnings=$(grep -ci 'warn' "$work/validate.txt" || true)
  echo "Kubernetes $version: $objects objects valid ($warnings warnings for custom kinds)"
done

step "PlamatioStores against the CRD schema"
python3 charts/validate_stores.py "$chart/crds/plamatio.io_plamatiostores.yaml" "$work/evaluation.yaml" "$work/maximal.yaml"

step "security check of rendered workloads"
for name in "${names[@]}"; do
  printf '%s: ' "$name"
  python3 charts/security_check.py "$work/$name.yaml"
done

step "children of the evaluation stores (plamatio-operator render)"
operator_binary="${CARGO_TARGET_DIR:-target}/debug/plamatio-operator"
if [ ! -x "$operator_binary" ]; then
  echo "$operator_binary missing; building it"
  cargo build -p plamatio-operator --bin plamatio-operator
fi
if [ -x "$operator_binary" ]; then
  for name in evaluation maximal; do
    python3 - "$work/$name.yaml" "$work/$name-store.yaml" <<'PY'
import sys, yaml
stores = [o for o in yaml.safe_load_all(open(sys.argv[1])) if isinstance(o, dict) and o["kind"] == "PlamatioStore"]
yaml.safe_dump_all(stores, open(sys.argv[2], "w"), sort_keys=False)
PY
    "$operator_binary" render -f "$work/$name-store.yaml" >"$work/$name-children.yaml"
    for version in "${KUBERNETES_VERSIONS[@]}"; do
      kubernetes_validate --strict --quiet -k "$version" "$work/$name-children.yaml" ||
        die "the operator's children of the $name store are invalid for Kubernetes $version"
    done
    printf '%s store: %s children valid; ' "$name" "$(grep -c '^kind:' "$work/$name-children.yaml")"
    # The operator's children set memory limits only (no CPU throttling of the API), by design.
    python3 charts/security_check.py --memory-limit-only "$work/$name-children.yaml"
  done
else
  die "$operator_binary still missing after the build"
fi

step "evaluation PostgreSQL: the API's role (init-api-role.sh) is no superuser and can migrate"
# The script the evaluation PostgreSQL runs at its first start, run here against the machine's
# PostgreSQL on a scratch database; then `plamatio-api migrate` as that role (every migration,
# pg_trgm included, must work without superuser rights) and a check of the role's attributes.
api_binary="${CARGO_TARGET_DIR:-target}/debug/plamatio-api"
[ -x "$api_binary" ] || cargo build -p plamatio-api --bin plamatio-api
python3 - "$work/evaluation.yaml" "$work/init-api-role.sh" <<'PY'
import sys, yaml
for document in yaml.safe_load_all(open(sys.argv[1])):
    if document and document.get("kind") == "ConfigMap" and "init-api-role.sh" in document.get("data", {}):
        open(sys.argv[2], "w").write(document["data"]["init-api-role.sh"])
        break
else:
    sys.exit("no ConfigMap with init-api-role.sh in the evaluation rendering")
PY
eval_db="plamatio_evalinit_$$"
eval_role="plamatio_evalapi_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $eval_db" >/dev/null
cleanup_eval_db() {
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $eval_db WITH (FORCE)" >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -qc "DROP ROLE IF EXISTS $eval_role" >/dev/null 2>&1 || true
}
trap 'cleanup_eval_db; rm -rf "$work"' EXIT
PGHOST=127.0.0.1 POSTGRES_USER=postgres POSTGRES_DB="$eval_db" PLAMATIO_API_USER="$eval_role" \
  PLAMATIO_API_PASSWORD="not-checked-by-trust-auth" sh "$work/init-api-role.sh"
attributes=$(psql -h 127.0.0.1 -U postgres -Atc \
  "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = '$eval_role'")
[ "$attributes" = "f|f|f" ] || die "the API role has attributes $attributes (want no superuser, createdb, createrole)"
DATABASE_URL="postgres://$eval_role@127.0.0.1:5432/$eval_db" "$api_binary" migrate >"$work/migrate.log" 2>&1 ||
  { cat "$work/migrate.log"; die "migrations fail as the evaluation API role"; }
owner=$(psql -h 127.0.0.1 -U postgres -d "$eval_db" -Atc "SELECT tableowner FROM pg_tables WHERE tablename = 'products'")
[ "$owner" = "$eval_role" ] || die "products is owned by $owner, not the API role"
echo "role $eval_role: no superuser/createdb/createrole; migrated its database; owns its tables"

step "shellcheck"
mapfile -t scripts < <({ find charts e2e/cluster e2e/fresh scripts -type f -name '*.sh'; echo test.sh; echo .ci/run; } | sort)
shellcheck --severity=style "${scripts[@]}"
echo "${#scripts[@]} scripts clean: ${scripts[*]}"

step "done"
