//! The pure child builders: snapshots of every child of a minimal and a maximal store, the exact diff
//! a spec change produces, the hardened pods, and the wiring rules each builder owns.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use plamatio_operator::build::alloy::agent_configuration;
use plamatio_operator::build::dashboard::DASHBOARD_JSON;
use plamatio_operator::build::deployment::{LiveReplicas, applied_replicas};
use plamatio_operator::build::migration_job::schema_version;
use plamatio_operator::build::names::migration_job_name;
use plamatio_operator::build::network_policy::ports_of;
use plamatio_operator::build::{
    APPLIED_HASH_ANNOTATION, BuildSettings, Child, ChildKind, LiveState, ResolvedSecrets,
    StoreIdentity, build_children,
};
use plamatio_operator::crd::{PlamatioStore, PodDisruptionBudgetSpec};
use plamatio_operator::render::parse_stores;
use plamatio_operator::secrets::resolve_from;
use serde_json::Value;

const MINIMAL: &str = include_str!("../samples/minimal.yaml");
const MAXIMAL: &str = include_str!("../samples/maximal.yaml");

fn sample(yaml: &str) -> PlamatioStore {
    let mut store = parse_stores(yaml).expect("sample parses").remove(0);
    store.metadata.uid = Some("0b7c4a4e-5f0e-4c39-9a55-3f2a8f7d1c10".to_owned());
    store
}

fn children(store: &PlamatioStore) -> Vec<Child> {
    build_children(
        store,
        &ResolvedSecrets::assumed(store),
        &BuildSettings::default(),
        &LiveState::default(),
    )
    .expect("children build")
}

fn find<'a>(children: &'a [Child], kind: ChildKind, name: &str) -> &'a Value {
    &children
        .iter()
        .find(|c| c.kind == kind && c.name == name)
        .unwrap_or_else(|| panic!("{kind:?} {name}"))
        .object
}

/// The object without the digest annotation, and with the dashboard JSON (owned by the chart) elided.
fn snapshot_form(child: &Child) -> Value {
    let mut object = child.object.clone();
    if let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(APPLIED_HASH_ANNOTATION);
    }
    if child.kind == ChildKind::ConfigMap
        && child.name.ends_with("-dashboard")
        && let Some(data) = object.pointer_mut("/data").and_then(Value::as_object_mut)
    {
        for dashboard in data.values_mut() {
            *dashboard = Value::String(
                "<charts/plamatio/dashboards/plamatio-api.json with the store's uid and title>"
                    .to_owned(),
            );
        }
    }
    object
}

fn snapshot_all(sample_name: &str, store: &PlamatioStore) {
    for child in children(store) {
        let name = format!("{sample_name}__{}_{}", child.kind.as_str(), child.name);
        insta::assert_yaml_snapshot!(name, snapshot_form(&child));
    }
}

#[test]
fn minimal_store_children_match_their_snapshots() {
    snapshot_all("minimal", &sample(MINIMAL));
}

#[test]
fn maximal_store_children_match_their_snapshots() {
    snapshot_all("maximal", &sample(MAXIMAL));
}

#[test]
fn a_minimal_store_gets_the_api_children_in_apply_order() {
    let kinds: Vec<(ChildKind, String)> = children(&sample(MINIMAL))
        .into_iter()
        .map(|c| (c.kind, c.name))
        .collect();
    let job = migration_job_name("shop", "0.1.0");
    let expected = vec![
        (ChildKind::ServiceAccount, "shop-api"),
        (ChildKind::ConfigMap, "shop-api"),
        (ChildKind::Job, job.as_str()),
        (ChildKind::Deployment, "shop-api"),
        (ChildKind::Service, "shop-api"),
        (ChildKind::PodDisruptionBudget, "shop-api"),
        (ChildKind::NetworkPolicy, "shop-api"),
    ];
    let expected: Vec<(ChildKind, String)> = expected
        .into_iter()
        .map(|(k, n)| (k, n.to_owned()))
        .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn a_maximal_store_adds_the_autoscaler_agent_and_dashboard() {
    let children = children(&sample(MAXIMAL));
    for (kind, name) in [
        (ChildKind::HorizontalPodAutoscaler, "flagship-api"),
        (ChildKind::ServiceAccount, "flagship-alloy"),
        (ChildKind::Role, "flagship-alloy"),
        (ChildKind::RoleBinding, "flagship-alloy"),
        (ChildKind::ConfigMap, "flagship-alloy"),
        (ChildKind::Deployment, "flagship-alloy"),
        (ChildKind::Service, "flagship-alloy"),
        (ChildKind::ConfigMap, "flagship-dashboard"),
    ] {
        find(&children, kind, name);
    }
    assert_eq!(children.len(), 15);
}

#[test]
fn every_child_has_the_store_as_controller_owner_and_the_store_labels() {
    for store in [sample(MINIMAL), sample(MAXIMAL)] {
        for child in children(&store) {
            let owners = child
                .object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .expect("owners");
            assert_eq!(owners.len(), 1, "{}", child.name);
            assert_eq!(owners[0]["kind"], "PlamatioStore");
            assert_eq!(owners[0]["controller"], true);
            assert_eq!(owners[0]["uid"], "0b7c4a4e-5f0e-4c39-9a55-3f2a8f7d1c10");
            let labels = child.object.pointer("/metadata/labels").expect("labels");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "plamatio-operator");
            assert_eq!(
                labels["plamatio.io/store"],
                store.metadata.name.clone().expect("name")
            );
            assert!(child.applied_hash().is_some());
        }
    }
}

fn pod_specs(children: &[Child]) -> Vec<(String, Value)> {
    children
        .iter()
        .filter(|c| matches!(c.kind, ChildKind::Deployment | ChildKind::Job))
        .map(|c| {
            (
                c.name.clone(),
                c.object
                    .pointer("/spec/template/spec")
                    .cloned()
                    .expect("pod spec"),
            )
        })
        .collect()
}

#[test]
fn every_pod_runs_with_the_hardened_security_context() {
    let children = children(&sample(MAXIMAL));
    let pods = pod_specs(&children);
    assert_eq!(pods.len(), 3, "API, migration and agent pods");
    for (name, pod) in pods {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for container in pod["containers"].as_array().expect("containers") {
            let context = &container["securityContext"];
            assert_eq!(context["runAsNonRoot"], true, "{name}");
            assert_eq!(context["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(context["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(
                context["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
            assert_eq!(
                context["seccompProfile"]["type"], "RuntimeDefault",
                "{name}"
            );
            assert!(
                container["resources"]["requests"].is_object(),
                "{name} has requests"
            );
        }
    }
}

#[test]
fn the_api_pods_are_probed_configured_and_spread() {
    let children = children(&sample(MINIMAL));
    let deployment = find(&children, ChildKind::Deployment, "shop-api");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!(["serve", "--no-migrate"])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["envFrom"][0]["configMapRef"]["name"], "shop-api");
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "shop-database"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["topologySpreadConstraints"].as_array().map(Vec::len),
        Some(2)
    );
    let hash = deployment.pointer("/spec/template/metadata/annotations/plamatio.io~1config-hash");
    assert!(hash.and_then(Value::as_str).is_some_and(|h| h.len() == 64));
}

/// Paths whose values differ between two JSON documents.
fn diff(before: &Value, after: &Value, path: String, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                diff(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    format!("{path}/{key}"),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, format!("{path}/{index}"), out);
            }
        }
        _ if before != after => out.push(path),
        _ => {}
    }
}

fn child_diff(before: &PlamatioStore, after: &PlamatioStore) -> BTreeMap<String, Vec<String>> {
    let before = children(before);
    let after = children(after);
    let mut result = BTreeMap::new();
    let keys: std::collections::BTreeSet<(ChildKind, String)> = before
        .iter()
        .chain(&after)
        .map(|c| (c.kind, c.name.clone()))
        .collect();
    for (kind, name) in keys {
        let old = before
            .iter()
            .find(|c| c.kind == kind && c.name == name)
            .map(snapshot_form)
            .unwrap_or(Value::Null);
        let new = after
            .iter()
            .find(|c| c.kind == kind && c.name == name)
            .map(snapshot_form)
            .unwrap_or(Value::Null);
        let mut paths = Vec::new();
        diff(&old, &new, String::new(), &mut paths);
        if !paths.is_empty() {
            result.insert(format!("{}/{name}", kind.as_str()), paths);
        }
    }
    result
}

#[test]
fn changing_replicas_changes_only_the_deployment_replicas() {
    let before = sample(MINIMAL);
    let mut after = before.clone();
    after.spec.api.get_or_insert_default().replicas = Some(3);
    let expected = BTreeMap::from([(
        "Deployment/shop-api".to_owned(),
        vec!["/spec/replicas".to_owned()],
    )]);
    assert_eq!(child_diff(&before, &after), expected);
}

#[test]
fn changing_the_log_level_changes_the_config_map_and_rolls_the_pods() {
    let before = sample(MINIMAL);
    let mut after = before.clone();
    after.spec.api.get_or_insert_default().log_level =
        Some(plamatio_operator::crd::LogLevel::Debug);
    let expected = BTreeMap::from([
        (
            "ConfigMap/shop-api".to_owned(),
            vec!["/data/RUST_LOG".to_owned()],
        ),
        (
            "Deployment/shop-api".to_owned(),
            vec!["/spec/template/metadata/annotations/plamatio.io/config-hash".to_owned()],
        ),
    ]);
    assert_eq!(child_diff(&before, &after), expected);
}

#[test]
fn a_single_replica_gets_no_disruption_budget_unless_forced() {
    let mut store = sample(MINIMAL);
    store.spec.api.get_or_insert_default().replicas = Some(1);
    let diff = child_diff(&sample(MINIMAL), &store);
    assert!(diff.contains_key("PodDisruptionBudget/shop-api"));
    assert!(
        !children(&store)
            .iter()
            .any(|c| c.kind == ChildKind::PodDisruptionBudget)
    );

    store.spec.api.get_or_insert_default().pod_disruption_budget = Some(PodDisruptionBudgetSpec {
        enabled: Some(true),
        max_unavailable: None,
    });
    assert!(
        children(&store)
            .iter()
            .any(|c| c.kind == ChildKind::PodDisruptionBudget)
    );
}

#[test]
fn a_new_autoscaled_deployment_starts_at_the_autoscalers_minimum() {
    let children = children(&sample(MAXIMAL));
    let deployment = find(&children, ChildKind::Deployment, "flagship-api");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let hpa = find(
        &children,
        ChildKind::HorizontalPodAutoscaler,
        "flagship-api",
    );
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 10);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        65
    );
}

fn managed_fields_entry(
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    fields: Value,
) -> Value {
    let mut entry = serde_json::json!({
        "manager": manager, "operation": operation, "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1", "fieldsV1": fields,
    });
    if let Some(subresource) = subresource {
        entry["subresource"] = Value::String(subresource.to_owned());
    }
    entry
}

fn live_deployment(
    replicas: i32,
    managed_fields: Vec<Value>,
) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "shop-api", "managedFields": managed_fields},
        "spec": {"replicas": replicas, "selector": {}, "template": {}},
    }))
    .expect("deployment")
}

#[test]
fn the_replica_count_is_handed_to_the_autoscaler_only_once_it_owns_the_field() {
    let replicas = serde_json::json!({"f:spec": {"f:replicas": {}, "f:template": {}}});
    let template_only = serde_json::json!({"f:spec": {"f:template": {}}});
    let operator_alone = live_deployment(
        4,
        vec![managed_fields_entry(
            "plamatio-operator",
            "Apply",
            None,
            replicas.clone(),
        )],
    );
    // What the API server records when the HPA scales through the scale subresource.
    let after_autoscaler = live_deployment(
        6,
        vec![
            managed_fields_entry("plamatio-operator", "Apply", None, template_only.clone()),
            managed_fields_entry(
                "kube-controller-manager",
                "Update",
                Some("scale"),
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
            ),
        ],
    );
    let kubectl_scaled = live_deployment(
        5,
        vec![
            managed_fields_entry("plamatio-operator", "Apply", None, template_only),
            managed_fields_entry(
                "kubectl",
                "Update",
                Some("scale"),
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
            ),
        ],
    );
    let mut autoscaled = sample(MAXIMAL).spec.api();
    let fixed = plamatio_operator::crd::ApiSpec {
        replicas: Some(4),
        ..Default::default()
    };
    let table: Vec<(
        &str,
        &plamatio_operator::crd::ApiSpec,
        Option<LiveReplicas>,
        Option<i32>,
    )> = vec![
        (
            "no autoscaler: the spec's count",
            &fixed,
            LiveReplicas::of(&after_autoscaler),
            Some(4),
        ),
        (
            "new Deployment: the autoscaler's minimum",
            &autoscaled,
            None,
            Some(3),
        ),
        (
            "the operator alone owns it: the live count",
            &autoscaled,
            LiveReplicas::of(&operator_alone),
            Some(4),
        ),
        (
            "the autoscaler owns it: left out",
            &autoscaled,
            LiveReplicas::of(&after_autoscaler),
            None,
        ),
        (
            "someone else owns it: left out",
            &autoscaled,
            LiveReplicas::of(&kubectl_scaled),
            None,
        ),
    ];
    for (rule, api, live, want) in table {
        assert_eq!(applied_replicas(api, live), want, "{rule}");
    }
    autoscaled.autoscaling = None;
    assert_eq!(
        applied_replicas(&autoscaled, LiveReplicas::of(&after_autoscaler)),
        Some(3),
        "autoscaling turned off: the spec's count again, taken back from the autoscaler"
    );
}

#[test]
fn a_live_deployment_reports_its_count_and_who_else_owns_replicas() {
    let only_operator = live_deployment(
        4,
        vec![managed_fields_entry(
            "plamatio-operator",
            "Apply",
            None,
            serde_json::json!({"f:spec": {"f:replicas": {}}}),
        )],
    );
    assert_eq!(
        LiveReplicas::of(&only_operator),
        Some(LiveReplicas {
            count: 4,
            owned_by_another_manager: false
        })
    );
    let shared = live_deployment(
        4,
        vec![
            managed_fields_entry(
                "plamatio-operator",
                "Apply",
                None,
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
            ),
            managed_fields_entry(
                "handover",
                "Apply",
                None,
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
            ),
        ],
    );
    assert_eq!(
        LiveReplicas::of(&shared).map(|l| l.owned_by_another_manager),
        Some(true)
    );
}

#[test]
fn api_key_digests_are_joined_into_plamatio_api_keys_by_env_expansion() {
    let store = sample(MAXIMAL);
    let secrets = ResolvedSecrets {
        api_key_names: vec![
            "admin".to_owned(),
            "storefront".to_owned(),
            "storefront.mobile".to_owned(),
        ],
        ..ResolvedSecrets::assumed(&store)
    };
    let children = build_children(
        &store,
        &secrets,
        &BuildSettings::default(),
        &LiveState::default(),
    )
    .expect("build");
    let env = find(&children, ChildKind::Deployment, "flagship-api")["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .expect("env");
    let keys = env
        .iter()
        .find(|e| e["name"] == "PLAMATIO_API_KEYS")
        .expect("PLAMATIO_API_KEYS");
    assert_eq!(
        keys["value"],
        "admin:$(PLAMATIO_API_KEY_0),storefront:$(PLAMATIO_API_KEY_1),storefront:$(PLAMATIO_API_KEY_2)"
    );
    let position = |name: &str| env.iter().position(|e| e["name"] == name).expect(name);
    assert!(
        position("PLAMATIO_API_KEY_2") < position("PLAMATIO_API_KEYS"),
        "expansion needs the order"
    );
    let third = &env[position("PLAMATIO_API_KEY_2")]["valueFrom"]["secretKeyRef"];
    assert_eq!(third["name"], "flagship-api-keys");
    assert_eq!(third["key"], "storefront.mobile");
}

#[test]
fn the_api_environment_carries_every_setting_of_the_spec() {
    let children = children(&sample(MAXIMAL));
    let data = find(&children, ChildKind::ConfigMap, "flagship-api")["data"].clone();
    for (key, value) in [
        ("PORT", "8080"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
        ("DATABASE_POOL_SIZE", "24"),
        (
            "PLAMATIO_CORS_ORIGINS",
            "https://shop.example.com,https://shop-*-acme.vercel.app",
        ),
        ("PLAMATIO_RATE_LIMIT_PER_MINUTE", "1200"),
        ("PLAMATIO_USER_AUTH", "required"),
        ("PLAMATIO_TRUSTED_PROXIES", "10.244.0.0/16"),
        (
            "PLAMATIO_USER_JWKS_URL",
            "https://auth.example.com/.well-known/jwks.json",
        ),
        ("PLAMATIO_USER_JWT_ISSUER", "https://auth.example.com/"),
        ("PLAMATIO_USER_JWT_AUDIENCE", "plamatio"),
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            "pkc-12345.eu-west-1.aws.confluent.cloud:9092",
        ),
        ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
        ("KAFKA_SASL_MECHANISM", "PLAIN"),
        ("KAFKA_TOPIC_PREFIX", "flagship."),
        ("KAFKA_CREATE_TOPICS", "false"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://flagship-alloy.shops.svc:4317",
        ),
        ("OTEL_SERVICE_NAME", "plamatio-api"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
    ] {
        assert_eq!(data[key], value, "{key}");
    }
    let env = find(&children, ChildKind::Deployment, "flagship-api")["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let names: Vec<&str> = env
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in [
        "DATABASE_URL",
        "REDIS_URL",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
    ] {
        assert!(names.contains(&name), "{name} from a Secret");
    }
}

#[test]
fn the_migration_job_is_named_by_the_schema_version_of_the_image() {
    assert_eq!(
        schema_version("ghcr.io/plamatio/plamatio-api:0.2.0"),
        "0.2.0"
    );
    assert_eq!(schema_version("registry:5000/plamatio-api"), "latest");
    let digest = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        schema_version(&format!("ghcr.io/plamatio/plamatio-api@{digest}")),
        digest,
        "a digest is kept whole"
    );
    let mut store = sample(MINIMAL);
    store.spec.api.get_or_insert_default().image =
        Some("ghcr.io/plamatio/plamatio-api:0.2.0".to_owned());
    let children = children(&store);
    let job = find(
        &children,
        ChildKind::Job,
        &migration_job_name("shop", "0.2.0"),
    );
    assert_eq!(
        job["metadata"]["annotations"]["plamatio.io/schema-version"],
        "0.2.0"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["migrate"])
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
}

#[test]
fn manual_migrations_build_no_job() {
    let mut store = sample(MINIMAL);
    store.spec.database.migrations = Some(plamatio_operator::crd::MigrationMode::Manual);
    assert!(!children(&store).iter().any(|c| c.kind == ChildKind::Job));
}

#[test]
fn the_network_policy_opens_egress_to_the_configured_ports_only() {
    assert_eq!(
        ports_of("postgres://u:p@db:6543/x", 5432)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![6543]
    );
    assert_eq!(
        ports_of("postgres://u:p@h1:5433,h2/x", 5432)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![5432, 5433]
    );
    assert_eq!(
        ports_of("redis://[::1]:6380", 6379)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![6380]
    );
    assert_eq!(
        ports_of("b1:9093,b2:9094", 9092)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![9093, 9094]
    );

    let store = sample(MAXIMAL);
    let secrets = ResolvedSecrets {
        database_url: Some("postgres://u:p@db.example.com:6432/shop".to_owned()),
        redis_url: Some("rediss://cache.example.com:6380".to_owned()),
        ..ResolvedSecrets::assumed(&store)
    };
    let children = build_children(
        &store,
        &secrets,
        &BuildSettings::default(),
        &LiveState::default(),
    )
    .expect("build");
    let policy = find(&children, ChildKind::NetworkPolicy, "flagship-api");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 8080);
    let external: Vec<i64> = policy["spec"]["egress"][1]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(external, vec![443, 6380, 6432, 9092]);
    assert_eq!(
        policy["spec"]["egress"][2]["ports"][0]["port"], 4317,
        "OTLP to the agent"
    );
}

#[test]
fn the_agent_configuration_scrapes_the_api_and_forwards_to_every_sink() {
    let store = sample(MAXIMAL);
    let identity = StoreIdentity::of(&store).expect("identity");
    let config = agent_configuration(&identity, &store.spec);
    for fragment in [
        "discovery.kubernetes \"api_pods\"",
        "label = \"app.kubernetes.io/component=api,app.kubernetes.io/instance=flagship,app.kubernetes.io/name=plamatio-api\"",
        "prometheus.scrape \"api\"",
        "metrics_path    = \"/metrics\"",
        "url = \"https://prometheus-prod-24-prod-eu-west-2.grafana.net/api/prom/push\"",
        "username = sys.env(\"METRICS_USERNAME\")",
        "otelcol.receiver.otlp \"api\"",
        "endpoint = \"0.0.0.0:4317\"",
        "endpoint = \"https://otlp-gateway-prod-eu-west-2.grafana.net/otlp\"",
        "loki.source.kubernetes \"api\"",
        "url = \"https://logs-prod-012.grafana.net/loki/api/v1/push\"",
        "password = sys.env(\"LOGS_PASSWORD\")",
    ] {
        assert!(
            config.contains(fragment),
            "missing {fragment:?} in\n{config}"
        );
    }
    let braces_balance = config.matches('{').count() == config.matches('}').count();
    assert!(braces_balance, "{config}");
}

#[test]
fn the_agent_configuration_has_only_the_configured_sinks() {
    let mut store = sample(MAXIMAL);
    if let Some(observability) = store.spec.observability.as_mut() {
        observability.logs = None;
        observability.otlp_endpoint = None;
    }
    let identity = StoreIdentity::of(&store).expect("identity");
    let config = agent_configuration(&identity, &store.spec);
    assert!(config.contains("prometheus.remote_write"));
    assert!(!config.contains("loki."));
    assert!(!config.contains("otelcol."));
}

#[test]
fn the_dashboard_config_map_carries_the_chart_dashboard_for_grafana() {
    let children = children(&sample(MAXIMAL));
    let dashboard = find(&children, ChildKind::ConfigMap, "flagship-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = dashboard["data"].as_object().expect("data");
    assert_eq!(data.len(), 1);
    let file = data
        .get("plamatio-shops_flagship.json")
        .and_then(Value::as_str)
        .expect("the store's dashboard file");
    let parsed: Value = serde_json::from_str(file).expect("dashboard is JSON");
    let chart: Value = serde_json::from_str(DASHBOARD_JSON).expect("chart dashboard is JSON");
    assert_eq!(parsed["panels"], chart["panels"], "the chart's panels");
    assert_eq!(parsed["templating"], chart["templating"]);
    assert_eq!(parsed["title"], "Plamatio store API — shops/flagship");
}

fn dashboard_of(name: &str, namespace: &str) -> (String, String) {
    let mut store = sample(MAXIMAL);
    store.metadata.name = Some(name.to_owned());
    store.metadata.namespace = Some(namespace.to_owned());
    let children = children(&store);
    let dashboard = find(
        &children,
        ChildKind::ConfigMap,
        &format!("{name}-dashboard"),
    );
    let (file, json) = dashboard["data"]
        .as_object()
        .and_then(|data| data.iter().next())
        .map(|(file, json)| (file.clone(), json.as_str().unwrap_or_default().to_owned()))
        .expect("one dashboard file");
    let parsed: Value = serde_json::from_str(&json).expect("dashboard is JSON");
    (file, parsed["uid"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn every_store_has_its_own_dashboard_file_and_uid() {
    let stores = [
        ("flagship", "shops"),
        ("flagship", "outlet"),
        ("shop", "shops"),
        (&*format!("s{}", "x".repeat(43)), &*"n".repeat(63)),
    ];
    let mut files = std::collections::BTreeSet::new();
    let mut uids = std::collections::BTreeSet::new();
    for (name, namespace) in stores {
        let (file, uid) = dashboard_of(name, namespace);
        assert!(uid.len() <= 40, "Grafana's uid limit: {uid}");
        assert!(file.len() <= 253, "a ConfigMap key: {file}");
        files.insert(file);
        uids.insert(uid);
    }
    assert_eq!(files.len(), 4, "{files:?}");
    assert_eq!(uids.len(), 4, "{uids:?}");
    assert!(
        !uids.contains("plamatio-api"),
        "not the chart's own dashboard uid"
    );
}

fn opaque(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn maximal_secrets(api_keys: &[(&str, &str)]) -> BTreeMap<String, Secret> {
    let credentials = [("username", "u"), ("password", "p")];
    [
        opaque("flagship-database", &[("url", "postgres://u:p@db:5432/x")]),
        opaque("flagship-redis", &[("url", "redis://cache:6379")]),
        opaque("flagship-kafka", &credentials),
        opaque("flagship-api-keys", api_keys),
        opaque("flagship-grafana-metrics", &credentials),
        opaque("flagship-grafana-logs", &credentials),
    ]
    .into_iter()
    .map(|s| (s.metadata.name.clone().expect("name"), s))
    .collect()
}

const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn resolved_secrets_name_the_api_keys_and_digest_every_value() {
    let store = sample(MAXIMAL);
    let secrets = maximal_secrets(&[("storefront", DIGEST), ("admin.ci", DIGEST)]);
    let resolved = resolve_from("shops", &store.spec, &secrets).expect("resolve");
    assert_eq!(resolved.api_key_names, vec!["admin.ci", "storefront"]);
    assert_eq!(
        resolved.kafka_credentials,
        Some(("u".to_owned(), "p".to_owned()))
    );
    let mut rotated = secrets.clone();
    rotated.insert(
        "flagship-kafka".to_owned(),
        opaque("flagship-kafka", &[("username", "u"), ("password", "new")]),
    );
    let rotated = resolve_from("shops", &store.spec, &rotated).expect("resolve");
    assert_ne!(resolved.digest, rotated.digest);
    assert!(
        !format!("{resolved:?}").contains("postgres://"),
        "Debug hides values"
    );
}

#[test]
fn api_keys_with_an_unknown_scope_or_a_bad_digest_are_refused() {
    let store = sample(MAXIMAL);
    let error = resolve_from("shops", &store.spec, &maximal_secrets(&[("root", DIGEST)]))
        .expect_err("scope");
    assert_eq!(error.metric_label(), "InvalidSecret");
    let error = resolve_from(
        "shops",
        &store.spec,
        &maximal_secrets(&[("admin", "short")]),
    )
    .expect_err("digest");
    assert_eq!(error.metric_label(), "InvalidSecret");
}

#[test]
fn a_failing_migration_waits_longer_after_each_failure() {
    use plamatio_operator::build::migration_job::migration_retry_wait;
    use std::time::Duration;
    let failed = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time");
    let after = |seconds: i64| failed + k8s_openapi::jiff::SignedDuration::from_secs(seconds);
    let table = [
        (1, 0, Some(30)),
        (1, 29, Some(1)),
        (1, 30, None),
        (2, 30, Some(30)),
        (2, 60, None),
        (4, 200, Some(40)),
        (20, 1799, Some(1)),
        (20, 1800, None),
    ];
    for (failures, waited, want) in table {
        assert_eq!(
            migration_retry_wait(failures, failed, after(waited)),
            want.map(Duration::from_secs),
            "{failures} failures, {waited}s after"
        );
    }
}
