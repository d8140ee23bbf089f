//! Every CEL rule of the CRD, evaluated by a real CEL engine against specs the API server must accept
//! and specs it must refuse (with the message a user sees), and the bounds that keep each rule's cost
//! estimate finite.

mod common;

use common::cel::{Refusal, crd_schema, minimal_spec_json, refusals, store_object};
use plamatio_operator::build::names::MAX_STORE_NAME_LENGTH;
use plamatio_operator::crd::USER_AUTH_CHOSEN_MESSAGE;
use serde_json::{Value, json};

/// One spec judged by the rules: `refused` is `None` when the API server must accept it.
struct Case {
    /// The rule the case exercises (its full CEL text contains this).
    rule: &'static str,
    name: String,
    spec: Value,
    /// For an update: the stored spec before it.
    old_spec: Option<Value>,
    refused: Option<(&'static str, String)>,
}

/// The minimal spec with `patch` merged into it (objects merge key by key, anything else replaces).
fn with(patch: Value) -> Value {
    fn merge(target: &mut Value, patch: Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
            (target, patch) => *target = patch,
        }
    }
    let mut spec = minimal_spec_json();
    merge(&mut spec, patch);
    spec
}

fn accepted(rule: &'static str, spec: Value) -> Case {
    Case {
        rule,
        name: "shop".to_owned(),
        spec,
        old_spec: None,
        refused: None,
    }
}

fn refused(rule: &'static str, spec: Value, field_path: &'static str, message: &str) -> Case {
    Case {
        rule,
        name: "shop".to_owned(),
        spec,
        old_spec: None,
        refused: Some((field_path, message.to_owned())),
    }
}

/// An update from `old` to `new`: transition rules (those reading `oldSelf`) judge it.
fn updated(mut case: Case, old: Value) -> Case {
    case.old_spec = Some(old);
    case
}

fn named(mut case: Case, name: &str) -> Case {
    case.name = name.to_owned();
    case
}

fn cases() -> Vec<Case> {
    let name_pattern = "self.metadata.name.matches(";
    let name_length = "size(self.metadata.name) <=";
    let autoscaling = "self.maxReplicas >= self.minReplicas";
    let user_auth = "self.mode == 'off' || (has(self.jwksUrl) && has(self.issuer))";
    let user_auth_chosen = "has(self.api) && has(self.api.userAuth)";
    let sasl = "has(self.credentialsSecretRef)";
    let overrides = "self.all(name, name in [";
    let brokers = "self.bootstrapServers == oldSelf.bootstrapServers";
    let prefix = "== (has(oldSelf.topicPrefix) ? oldSelf.topicPrefix : '')";
    let kafka = |bootstrap: &str, prefix: &str, policy: &str| {
        with(
            json!({"kafka": {"bootstrapServers": bootstrap, "topicPrefix": prefix,
            "topics": {"deletionPolicy": policy}}}),
        )
    };
    let pattern_message = "a store name must be a DNS-1035 label: lowercase letters, digits and '-', \
                           starting with a letter and ending with a letter or digit (it names the \
                           store's Services)";
    let length_message = format!(
        "a store name has at most {MAX_STORE_NAME_LENGTH} characters, so that its longest child \
         name (<store>-migrate-<version digest>) fits in 63"
    );
    let longest = format!("s{}", "x".repeat(MAX_STORE_NAME_LENGTH - 1));
    let too_long = format!("s{}", "x".repeat(MAX_STORE_NAME_LENGTH));
    vec![
        named(accepted(name_pattern, minimal_spec_json()), "shop-2"),
        named(
            refused(name_pattern, minimal_spec_json(), "", pattern_message),
            "shop.eu",
        ),
        named(
            refused(name_pattern, minimal_spec_json(), "", pattern_message),
            "1shop",
        ),
        named(accepted(name_length, minimal_spec_json()), &longest),
        named(
            refused(name_length, minimal_spec_json(), "", &length_message),
            &too_long,
        ),
        accepted(
            autoscaling,
            with(json!({"api": {"autoscaling": {"minReplicas": 2, "maxReplicas": 2}}})),
        ),
        refused(
            autoscaling,
            with(json!({"api": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}})),
            "spec.api.autoscaling",
            "maxReplicas must be at least minReplicas",
        ),
        accepted(
            user_auth,
            with(json!({"api": {"userAuth": {"mode": "off"}}})),
        ),
        accepted(
            user_auth,
            with(json!({"api": {"userAuth": {"mode": "required",
                "jwksUrl": "https://auth.example.com/.well-known/jwks.json",
                "issuer": "https://auth.example.com/"}}})),
        ),
        refused(
            user_auth,
            with(json!({"api": {"userAuth": {"mode": "optional"}}})),
            "spec.api.userAuth",
            "jwksUrl and issuer are required unless mode is off",
        ),
        refused(
            user_auth,
            with(json!({"api": {"userAuth": {"mode": "required",
                "jwksUrl": "https://auth.example.com/.well-known/jwks.json"}}})),
            "spec.api.userAuth",
            "jwksUrl and issuer are required unless mode is off",
        ),
        accepted(user_auth_chosen, minimal_spec_json()),
        refused(
            user_auth_chosen,
            json!({"database": {"urlSecretRef": {"name": "shop-database", "key": "url"}}}),
            "spec",
            USER_AUTH_CHOSEN_MESSAGE,
        ),
        refused(
            user_auth_chosen,
            json!({"api": {"replicas": 2},
                "database": {"urlSecretRef": {"name": "shop-database", "key": "url"}}}),
            "spec",
            USER_AUTH_CHOSEN_MESSAGE,
        ),
        accepted(
            sasl,
            with(
                json!({"kafka": {"bootstrapServers": "kafka:9092", "securityProtocol": "sasl_ssl",
                "credentialsSecretRef": {"name": "shop-kafka"}}}),
            ),
        ),
        accepted(
            sasl,
            with(json!({"kafka": {"bootstrapServers": "kafka:9092", "securityProtocol": "ssl"}})),
        ),
        refused(
            sasl,
            with(json!({"kafka": {"bootstrapServers": "kafka:9092",
                "securityProtocol": "sasl_plaintext"}})),
            "spec.kafka",
            "SASL needs credentialsSecretRef",
        ),
        accepted(
            overrides,
            with(json!({"kafka": {"bootstrapServers": "kafka:9092",
                "topics": {"overrides": {"user_events": {"partitions": 12}}}}})),
        ),
        refused(
            overrides,
            with(json!({"kafka": {"bootstrapServers": "kafka:9092",
                "topics": {"overrides": {"user-events": {"partitions": 12}}}}})),
            "spec.kafka.topics.overrides",
            "overrides are keyed by one of the five topic names",
        ),
        updated(
            accepted(brokers, kafka("kafka-a:9092", "shop.", "Retain")),
            kafka("kafka-b:9092", "shop.", "Retain"),
        ),
        updated(
            accepted(brokers, kafka("kafka-a:9092", "shop.", "Delete")),
            kafka("kafka-a:9092", "shop.", "Delete"),
        ),
        updated(
            refused(
                brokers,
                kafka("kafka-b:9092", "shop.", "Delete"),
                "spec.kafka",
                "bootstrapServers cannot change while topics.deletionPolicy is Delete: the topics \
                 on the old brokers would never be deleted (set deletionPolicy: Retain first)",
            ),
            kafka("kafka-a:9092", "shop.", "Delete"),
        ),
        updated(
            accepted(prefix, kafka("kafka-a:9092", "outlet.", "Retain")),
            kafka("kafka-a:9092", "shop.", "Retain"),
        ),
        updated(
            refused(
                prefix,
                kafka("kafka-a:9092", "outlet.", "Delete"),
                "spec.kafka",
                "topicPrefix cannot change while topics.deletionPolicy is Delete: the topics of \
                 the old prefix would be left unused (set deletionPolicy: Retain first)",
            ),
            kafka("kafka-a:9092", "shop.", "Delete"),
        ),
    ]
}

/// Every `x-kubernetes-validations` rule in the schema, with the path of its node.
fn rules(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if let Some(validations) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for validation in validations {
            let rule = validation["rule"].as_str().unwrap_or_default().to_owned();
            out.push((path.to_owned(), rule));
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            rules(property, &child, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
            rules(child, &format!("{path}[*]"), out);
        }
    }
}

fn all_rules() -> Vec<(String, String)> {
    let mut out = Vec::new();
    rules(&crd_schema(), "", &mut out);
    out
}

#[test]
fn every_rule_of_the_crd_has_an_accepted_and_a_refused_case() {
    let cases = cases();
    let rules = all_rules();
    assert!(rules.len() >= 6, "{rules:?}");
    for (path, rule) in rules {
        let of_rule: Vec<&Case> = cases.iter().filter(|c| rule.contains(c.rule)).collect();
        assert!(
            of_rule.iter().any(|c| c.refused.is_none()),
            "no accepted case for the rule at {path:?}: {rule}"
        );
        assert!(
            of_rule.iter().any(|c| c.refused.is_some()),
            "no refused case for the rule at {path:?}: {rule}"
        );
    }
}

#[test]
fn each_spec_is_accepted_or_refused_with_the_message_a_user_sees() {
    for case in cases() {
        let object = store_object(&case.name, case.spec.clone());
        let old = case
            .old_spec
            .clone()
            .map(|spec| store_object(&case.name, spec));
        let got = refusals(&object, old.as_ref());
        let want: Vec<Refusal> = case
            .refused
            .iter()
            .map(|(field_path, message)| Refusal {
                field_path: (*field_path).to_owned(),
                message: message.clone(),
            })
            .collect();
        assert_eq!(
            got, want,
            "store {:?} with spec {} (rule {:?})",
            case.name, case.spec, case.rule
        );
    }
}

#[test]
fn the_sample_stores_pass_every_rule() {
    for sample in [
        include_str!("../samples/minimal.yaml"),
        include_str!("../samples/maximal.yaml"),
    ] {
        let object: Value = serde_saphyr::from_str(sample).expect("sample parses");
        assert_eq!(refusals(&object, None), Vec::new());
    }
}

/// Strings without `maxLength`, lists without `maxItems` and maps without `maxProperties` under a
/// node, by path.
fn unbounded(schema: &Value, path: &str, out: &mut Vec<String>) {
    let bounded_string = schema.get("maxLength").is_some() || schema.get("enum").is_some();
    match schema.get("type").and_then(Value::as_str) {
        Some("string") if !bounded_string => out.push(format!("{path}: maxLength")),
        Some("array") if schema.get("maxItems").is_none() => out.push(format!("{path}: maxItems")),
        Some("object")
            if schema
                .get("additionalProperties")
                .is_some_and(Value::is_object)
                && schema.get("maxProperties").is_none() =>
        {
            out.push(format!("{path}: maxProperties"))
        }
        _ => {}
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            unbounded(property, &format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
            unbounded(child, &format!("{path}[*]"), out);
        }
    }
}

fn rule_nodes<'a>(schema: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    if schema.get("x-kubernetes-validations").is_some() {
        out.push((path.to_owned(), schema));
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            rule_nodes(property, &format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
            rule_nodes(child, &format!("{path}[*]"), out);
        }
    }
}

#[test]
fn everything_a_rule_can_reach_is_bounded() {
    let schema = crd_schema();
    let mut nodes = Vec::new();
    rule_nodes(&schema, "", &mut nodes);
    let mut violations = Vec::new();
    for (path, node) in nodes {
        if path.is_empty() {
            // The root's rules read only metadata.name, which the API server bounds (253).
            for (_, rule) in all_rules().into_iter().filter(|(p, _)| p.is_empty()) {
                let without_name = rule.replace("self.metadata.name", "");
                assert!(
                    !without_name.contains("self"),
                    "a root rule reads more than the name: {rule}"
                );
            }
            continue;
        }
        if node_rules_only_test_presence(node) {
            // `has(...)` costs the same however large the fields are: nothing to bound.
            continue;
        }
        unbounded(node, &path, &mut violations);
    }
    assert_eq!(violations, Vec::<String>::new());
}

/// Whether every rule of a schema node is made only of `has(self.field…)` tests joined by `&&`/`||`.
fn node_rules_only_test_presence(node: &Value) -> bool {
    let rules = node["x-kubernetes-validations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rules.iter().all(|rule| {
        let mut rest = rule["rule"].as_str().unwrap_or("self").to_owned();
        while let Some(start) = rest.find("has(self.") {
            let Some(length) = rest[start..].find(')') else {
                return false;
            };
            let field = &rest[start + "has(self.".len()..start + length];
            if !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                return false;
            }
            rest.replace_range(start..start + length + 1, "");
        }
        rest.chars()
            .all(|c| c.is_whitespace() || "&|()".contains(c))
    })
}

#[test]
fn a_presence_only_rule_is_recognised_and_a_reading_rule_is_not() {
    let presence =
        json!({"x-kubernetes-validations": [{"rule": "has(self.api) && has(self.api.userAuth)"}]});
    let reading =
        json!({"x-kubernetes-validations": [{"rule": "has(self.api) && self.api.replicas > 1"}]});
    assert!(node_rules_only_test_presence(&presence));
    assert!(!node_rules_only_test_presence(&reading));
}
