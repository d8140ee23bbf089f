//! The CRD and `render`: the committed CRD is the generated one, the CRD says what operator.md says,
//! and `render` prints every child of the sample stores.

use std::path::PathBuf;

use kube::CustomResourceExt;
use plamatio_operator::build::BuildSettings;
use plamatio_operator::crd::PlamatioStore;
use plamatio_operator::crdgen::{CRD_PATH, crd_yaml};
use plamatio_operator::render::{parse_stores, render_stores};

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let committed = std::fs::read_to_string(repository_root().join(CRD_PATH))
        .expect("crds/plamatio.io_plamatiostores.yaml exists (run: cargo run -p plamatio-operator --bin crdgen)");
    let generated = crd_yaml().expect("CRD renders");
    assert!(
        committed == generated,
        "{CRD_PATH} is stale: run `cargo run -p plamatio-operator --bin crdgen` and commit the result"
    );
}

#[test]
fn the_crd_has_the_names_subresource_and_printer_columns_of_the_spec() {
    let crd = PlamatioStore::crd();
    assert_eq!(crd.spec.group, "plamatio.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["pstore".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<String> = version
        .additional_printer_columns
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(columns, vec!["Ready", "Replicas", "Endpoint", "Age"]);
}

#[test]
fn the_crd_schema_refuses_bad_specs() {
    let schema = serde_json::to_value(PlamatioStore::crd()).expect("CRD serializes");
    let spec = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["database"]));
    let api = &spec["properties"]["api"]["properties"];
    assert_eq!(api["replicas"]["minimum"], 0.0);
    let topics = &spec["properties"]["kafka"]["properties"]["topics"]["properties"];
    assert_eq!(topics["partitions"]["minimum"], 1.0);
    // Optional enums also admit null (the field may be omitted).
    let values = |enumeration: &serde_json::Value| -> Vec<String> {
        enumeration
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        values(&topics["deletionPolicy"]["enum"]),
        vec!["Retain", "Delete"]
    );
    assert_eq!(
        values(&spec["properties"]["kafka"]["properties"]["securityProtocol"]["enum"]),
        plamatio_contract::security_protocol::ALL
    );
    assert_eq!(
        values(&spec["properties"]["kafka"]["properties"]["saslMechanism"]["enum"]),
        plamatio_contract::sasl_mechanism::ALL
    );
    assert_eq!(
        values(&api["userAuth"]["properties"]["mode"]["enum"]),
        plamatio_contract::user_auth::ALL
    );
    let rules = serde_json::to_string(&schema).expect("json");
    for rule in [
        "self.maxReplicas >= self.minReplicas",
        "self.mode == 'off' || (has(self.jwksUrl) && has(self.issuer))",
        "has(self.api) && has(self.api.userAuth)",
        "has(self.credentialsSecretRef)",
        "size(self.metadata.name) <= 44",
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    ] {
        assert!(rules.contains(rule), "CEL rule {rule:?} missing");
    }
}

#[test]
fn render_prints_every_child_of_the_sample_stores_as_a_yaml_stream() {
    let minimal = include_str!("../samples/minimal.yaml");
    let maximal = include_str!("../samples/maximal.yaml");
    let stores = parse_stores(&format!("{minimal}\n---\n{maximal}")).expect("samples parse");
    assert_eq!(stores.len(), 2);
    let output = render_stores(&stores, &BuildSettings::default()).expect("render");
    assert_eq!(output.matches("\n---\n").count() + 1, 7 + 15);
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&output).expect("valid YAML stream");
    assert_eq!(documents.len(), 22);
    assert!(
        documents
            .iter()
            .all(|d| d["apiVersion"].is_string() && d["kind"].is_string())
    );
}

#[test]
fn render_refuses_documents_that_are_not_stores() {
    let error = parse_stores("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
        .expect_err("not a store");
    assert_eq!(error.metric_label(), "InvalidManifest");
}

#[test]
fn the_defaults_the_operator_applies_are_visible_in_the_schema() {
    use plamatio_operator::crd::{DEFAULT_PORT, DEFAULT_REPLICAS, DEFAULT_TOPIC_PARTITIONS};
    let schema = serde_json::to_value(PlamatioStore::crd()).expect("CRD serializes");
    let spec = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let api = &spec["api"]["properties"];
    let kafka = &spec["kafka"]["properties"];
    let table = [
        (&api["replicas"], serde_json::json!(DEFAULT_REPLICAS)),
        (&api["port"], serde_json::json!(DEFAULT_PORT)),
        (&api["logLevel"], serde_json::json!("info")),
        (
            &api["autoscaling"]["properties"]["targetCPUUtilizationPercentage"],
            serde_json::json!(plamatio_operator::build::hpa::DEFAULT_TARGET_CPU),
        ),
        (
            &api["podDisruptionBudget"]["properties"]["maxUnavailable"],
            serde_json::json!(1),
        ),
        (
            &spec["database"]["properties"]["migrations"],
            serde_json::json!("auto"),
        ),
        (
            &kafka["topics"]["properties"]["partitions"],
            serde_json::json!(DEFAULT_TOPIC_PARTITIONS),
        ),
        (
            &kafka["topics"]["properties"]["deletionPolicy"],
            serde_json::json!("Retain"),
        ),
        (
            &kafka["credentialsSecretRef"]["properties"]["usernameKey"],
            serde_json::json!("username"),
        ),
        (
            &kafka["credentialsSecretRef"]["properties"]["passwordKey"],
            serde_json::json!("password"),
        ),
    ];
    for (field, default) in table {
        assert_eq!(field["default"], default, "{field}");
    }
}

/// The verbs the reference RBAC (`e2e/cluster/operator.yaml`, which charts/ci.sh ties the chart's
/// ClusterRole and Roles to) grants on `group`/`resource`.
fn granted_verbs(group: &str, resource: &str) -> Vec<String> {
    let yaml = std::fs::read_to_string(repository_root().join("e2e/cluster/operator.yaml"))
        .expect("e2e/cluster/operator.yaml");
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&yaml).expect("operator.yaml parses");
    let role = documents
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let mut verbs: Vec<String> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|rule| {
            rule["apiGroups"]
                .as_array()
                .is_some_and(|groups| groups.iter().any(|g| g == group))
                && rule["resources"]
                    .as_array()
                    .is_some_and(|resources| resources.iter().any(|r| r == resource))
        })
        .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
        .filter_map(|verb| verb.as_str().map(str::to_owned))
        .collect();
    verbs.sort();
    verbs
}

#[test]
fn rbac_grants_every_watched_child_kind_list_watch_patch_delete_and_no_get() {
    // Every child kind is watched into a cache (list/watch), server-side applied (patch) and pruned
    // (delete); none is read by name.
    for kind in plamatio_operator::build::ChildKind::ALL {
        let resource = kind.api_resource();
        assert_eq!(
            granted_verbs(&resource.group, &resource.plural),
            ["delete", "list", "patch", "watch"],
            "{}",
            kind.as_str()
        );
    }
}

#[test]
fn rbac_lets_the_secret_watch_list_and_watch_and_never_write() {
    assert_eq!(granted_verbs("", "secrets"), ["get", "list", "watch"]);
}

#[test]
fn the_readme_names_every_reason_in_the_code() {
    // Every condition type, reason, Event reason and action, and failure label is a quoted
    // CamelCase string in these files; the operator README must list each one a user can meet.
    let readme = std::fs::read_to_string(repository_root().join("operator/README.md"))
        .expect("operator/README.md");
    let quoted = regex::Regex::new(r#""([A-Z][A-Za-z]+)""#).expect("regex");
    // Condition statuses, and the Job condition types the operator reads but never shows.
    let not_reasons = ["True", "False", "Unknown", "Complete", "Failed"];
    let mut missing = std::collections::BTreeSet::new();
    for file in ["status.rs", "error.rs", "controller.rs"] {
        let source = std::fs::read_to_string(repository_root().join("operator/src").join(file))
            .expect("source file");
        for captures in quoted.captures_iter(&source) {
            let reason = &captures[1];
            if !not_reasons.contains(&reason)
                && !readme.contains(&format!("{reason}`"))
                && !readme.contains(&format!("{reason})"))
                && !readme.contains(&format!("{reason},"))
            {
                missing.insert(reason.to_owned());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operator/README.md does not name {missing:?}"
    );
}
