//! The CRD's CEL rules (`x-kubernetes-validations`) evaluated by a real CEL engine: kube-cel, the
//! Kubernetes CEL libraries on the `cel` crate, walking the generated schema as the API server does
//! (each rule scoped to its node, transition rules given `oldSelf`).

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use plamatio_operator::crd::PlamatioStore;
use serde_json::{Value, json};

/// The openAPIV3Schema of the generated CRD, as the API server gets it.
pub fn crd_schema() -> Value {
    let crd = PlamatioStore::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).expect("the schema serializes")
}

/// One refusal as a user sees it: the field and the rule's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub field_path: String,
    pub message: String,
}

/// Every rule the object breaks (with `old` for an update).
pub fn refusals(object: &Value, old: Option<&Value>) -> Vec<Refusal> {
    let outcome = Validator::new().validate(&crd_schema(), object, old);
    outcome
        .err()
        .map(|errors| {
            errors
                .iter()
                .map(|error| Refusal {
                    field_path: error.field_path.clone(),
                    message: error.message.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A store object as `kubectl apply` sends it, with the smallest valid spec.
pub fn store_object(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "plamatio.io/v1alpha1",
        "kind": "PlamatioStore",
        "metadata": {"name": name, "namespace": "shops"},
        "spec": spec,
    })
}

pub fn minimal_spec_json() -> Value {
    json!({"api": {"userAuth": {"mode": "off"}},
        "database": {"urlSecretRef": {"name": "shop-database", "key": "url"}}})
}

/// The messages of the rules a store named `name` breaks.
pub fn store_name_errors(name: &str) -> Vec<String> {
    refusals(&store_object(name, minimal_spec_json()), None)
        .into_iter()
        .map(|refusal| refusal.message)
        .collect()
}
