//! Names and labels of the children, checked against the rules the Kubernetes API server enforces
//! (apimachinery's validation patterns), for every store name and image version the CRD accepts —
//! property tests, since a fake API server accepts any name.

mod common;

use std::collections::BTreeSet;
use std::sync::LazyLock;

use plamatio_operator::build::migration_job::schema_version;
use plamatio_operator::build::names::{
    MAX_LABEL_LENGTH, MAX_STORE_NAME_LENGTH, STORE_NAME_PATTERN, check_store_name,
    is_dns1035_label, migration_job_name,
};
use plamatio_operator::build::{
    BuildSettings, Child, ChildKind, LiveState, ResolvedSecrets, build_children,
};
use plamatio_operator::crd::PlamatioStore;
use plamatio_operator::render::parse_stores;
use proptest::prelude::*;
use regex::Regex;
use serde_json::Value;

const MAXIMAL: &str = include_str!("../samples/maximal.yaml");

// apimachinery/pkg/util/validation: the patterns and lengths the API server checks names with.
const DNS1123_LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const LABEL_VALUE: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const QUALIFIED_NAME: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

/// The patterns compiled once (the properties check thousands of values).
struct Patterns {
    dns1123_label: Regex,
    dns1123_subdomain: Regex,
    dns1035_label: Regex,
    label_value: Regex,
    qualified_name: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let anchored = |pattern: &str| {
        Regex::new(&format!("^(?:{pattern})$")).expect("apimachinery patterns compile")
    };
    Patterns {
        dns1123_label: anchored(DNS1123_LABEL),
        dns1123_subdomain: anchored(&format!("{DNS1123_LABEL}(\\.{DNS1123_LABEL})*")),
        dns1035_label: anchored(DNS1035_LABEL),
        label_value: anchored(LABEL_VALUE),
        qualified_name: anchored(QUALIFIED_NAME),
    }
});

fn is_dns1123_label(value: &str) -> bool {
    value.len() <= 63 && PATTERNS.dns1123_label.is_match(value)
}

fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && PATTERNS.dns1123_subdomain.is_match(value)
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63 && PATTERNS.label_value.is_match(value)
}

/// A label or annotation key: an optional DNS-1123 subdomain prefix and a name of at most 63.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns1123_subdomain)
        && name.len() <= 63
        && PATTERNS.qualified_name.is_match(name)
}

/// What the API server requires of a child's name, by kind. A Job's name is also copied into the
/// `job-name` label of its pods, so it must be a label value too.
fn name_is_valid_for(kind: ChildKind, name: &str) -> bool {
    match kind {
        ChildKind::Service => name.len() <= 63 && PATTERNS.dns1035_label.is_match(name),
        ChildKind::Job => is_dns1123_label(name) && is_label_value(name),
        _ => is_dns1123_subdomain(name),
    }
}

/// Every label map in an object (metadata, pod templates, selectors), as (key, value) pairs.
fn label_pairs(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let is_label_map = matches!(key.as_str(), "labels" | "matchLabels" | "selector");
                if let (true, Value::Object(labels)) = (is_label_map, child) {
                    for (label, label_value) in labels {
                        if let Value::String(label_value) = label_value {
                            out.push((label.clone(), label_value.clone()));
                        }
                    }
                }
                label_pairs(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| label_pairs(item, out)),
        _ => {}
    }
}

fn maximal_store(name: &str, image: &str) -> PlamatioStore {
    let mut store = parse_stores(MAXIMAL).expect("sample parses").remove(0);
    store.metadata.name = Some(name.to_owned());
    store.metadata.uid = Some("0b7c4a4e-5f0e-4c39-9a55-3f2a8f7d1c10".to_owned());
    store.spec.api.get_or_insert_default().image = Some(image.to_owned());
    store
}

fn children_of(name: &str, image: &str) -> Vec<Child> {
    let store = maximal_store(name, image);
    build_children(
        &store,
        &ResolvedSecrets::assumed(&store),
        &BuildSettings::default(),
        &LiveState::default(),
    )
    .expect("an accepted store name builds")
}

/// Store names the CRD accepts: DNS-1035 labels of at most [`MAX_STORE_NAME_LENGTH`] characters.
fn accepted_store_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(
        "[a-z]([-a-z0-9]{{0,{}}}[a-z0-9])?",
        MAX_STORE_NAME_LENGTH - 2
    ))
    .expect("valid strategy regex")
}

/// Image references: any tag the OCI distribution grammar allows, or a sha256 digest.
fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
            .prop_map(|tag| format!("registry.example.com/plamatio/plamatio-api:{tag}")),
        "[0-9a-f]{64}"
            .prop_map(|hex| format!("registry.example.com/plamatio/plamatio-api@sha256:{hex}")),
    ]
}

fn version() -> impl Strategy<Value = String> {
    image().prop_map(|image| schema_version(&image))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_child_name_is_valid_for_its_kind(name in accepted_store_name(), image in image()) {
        for child in children_of(&name, &image) {
            prop_assert!(
                name_is_valid_for(child.kind, &child.name),
                "{} name {:?} is refused by the API server", child.kind.as_str(), child.name
            );
            prop_assert!(child.name.len() <= MAX_LABEL_LENGTH, "{:?} is over 63", child.name);
            prop_assert!(is_dns1035_label(&child.name), "{:?}", child.name);
        }
    }

    #[test]
    fn every_label_is_a_valid_key_with_a_value_of_at_most_63_characters(
        name in accepted_store_name(),
        image in image(),
    ) {
        for child in children_of(&name, &image) {
            let mut labels = Vec::new();
            label_pairs(&child.object, &mut labels);
            prop_assert!(!labels.is_empty());
            for (key, value) in labels {
                prop_assert!(is_qualified_name(&key), "label key {key:?} of {}", child.name);
                prop_assert!(is_label_value(&value), "label {key}={value:?} of {}", child.name);
            }
            let annotations = child.object.pointer("/metadata/annotations").and_then(Value::as_object);
            for key in annotations.into_iter().flat_map(|a| a.keys()) {
                prop_assert!(is_qualified_name(key), "annotation key {key:?}");
            }
        }
    }

    #[test]
    fn distinct_versions_get_distinct_migration_jobs(
        name in accepted_store_name(),
        first in version(),
        second in version(),
    ) {
        prop_assume!(first != second);
        prop_assert_ne!(migration_job_name(&name, &first), migration_job_name(&name, &second));
    }

    #[test]
    fn one_version_always_gets_the_same_migration_job(name in accepted_store_name(), image in image()) {
        let jobs = |children: Vec<Child>| -> Vec<String> {
            children.into_iter().filter(|c| c.kind == ChildKind::Job).map(|c| c.name).collect()
        };
        let first = jobs(children_of(&name, &image));
        prop_assert_eq!(first.len(), 1);
        prop_assert_eq!(first, jobs(children_of(&name, &image)));
    }

    #[test]
    fn the_operator_refuses_exactly_the_names_the_crd_rules_refuse(name in "[a-zA-Z0-9.-]{1,70}") {
        let crd_accepts = common::cel::store_name_errors(&name).is_empty();
        prop_assert_eq!(crd_accepts, check_store_name(&name).is_ok(), "{:?}", name);
        // The rule's pattern is apimachinery's DNS-1035 label pattern.
        let rule_pattern = Regex::new(STORE_NAME_PATTERN).expect("the rule's pattern compiles");
        prop_assert_eq!(rule_pattern.is_match(&name), PATTERNS.dns1035_label.is_match(&name));
    }
}

#[test]
fn versions_that_sanitise_alike_get_distinct_jobs() {
    let pairs = [
        ("1.2.3", "1-2-3"),
        ("v1.2.3", "V1.2.3"),
        ("1.2.3_rc.1", "1.2.3-rc.1"),
        (
            "2026.12.02-build.0001-with-a-very-long-suffix-a",
            "2026.12.02-build.0001-with-a-very-long-suffix-b",
        ),
    ];
    for (first, second) in pairs {
        assert_ne!(
            migration_job_name("shop", first),
            migration_job_name("shop", second),
            "{first} and {second}"
        );
    }
}

#[test]
fn the_longest_accepted_name_with_a_digest_version_fits_in_63() {
    let name = format!("s{}", "x".repeat(MAX_STORE_NAME_LENGTH - 1));
    let image = format!(
        "registry.example.com/plamatio-api@sha256:{}",
        "ab".repeat(32)
    );
    let names: BTreeSet<(ChildKind, String)> = children_of(&name, &image)
        .into_iter()
        .map(|c| (c.kind, c.name))
        .collect();
    let longest = names.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
    assert_eq!(longest, MAX_LABEL_LENGTH, "{names:?}");
}

#[test]
fn a_job_name_keeps_the_readable_version_when_it_fits() {
    let name = migration_job_name("shop", "0.2.0");
    assert!(name.starts_with("shop-migrate-0-2-0-"), "{name}");
    assert_eq!(name.len(), "shop-migrate-0-2-0-".len() + 10);
}

#[test]
fn names_the_crd_refuses_build_no_child() {
    for name in ["shop.eu", "1shop", "Shop", "shop-", &"s".repeat(45)] {
        let store = maximal_store(name, "ghcr.io/plamatio/plamatio-api:0.1.0");
        let error = build_children(
            &store,
            &ResolvedSecrets::assumed(&store),
            &BuildSettings::default(),
            &LiveState::default(),
        )
        .expect_err("refused");
        assert_eq!(error.metric_label(), "InvalidName", "{name}");
        assert!(
            !common::cel::store_name_errors(name).is_empty(),
            "the CRD refuses {name:?} too"
        );
    }
}

#[test]
fn the_crd_tells_a_user_why_a_name_is_refused() {
    assert_eq!(
        common::cel::store_name_errors("shop.eu"),
        vec![
            "a store name must be a DNS-1035 label: lowercase letters, digits and '-', starting with \
             a letter and ending with a letter or digit (it names the store's Services)"
                .to_owned()
        ]
    );
    assert_eq!(
        common::cel::store_name_errors(&"s".repeat(45)),
        vec![format!(
            "a store name has at most {MAX_STORE_NAME_LENGTH} characters, so that its longest child \
             name (<store>-migrate-<version digest>) fits in 63"
        )]
    );
    assert!(common::cel::store_name_errors("shop").is_empty());
}
