//! `apply-crd`, the chart's pre-upgrade hook: Helm installs `crds/` once and never upgrades it, so
//! the operator server-side applies its own CRD before an upgrade and waits until it is served.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionCondition, CustomResourceDefinitionStatus,
};
use kube::api::Api;
use kube::{CustomResourceExt, ResourceExt};
use kube_fake_client::{ClientBuilder, interceptor};
use plamatio_operator::crd::PlamatioStore;
use plamatio_operator::crdgen::apply_crd;
use std::sync::{Arc, Mutex};

/// The CRD of an older release, as `crds/` installed it, served by the API server.
fn installed_older_crd() -> CustomResourceDefinition {
    let mut crd = PlamatioStore::crd();
    crd.spec.versions[0].additional_printer_columns = None;
    crd.status = Some(CustomResourceDefinitionStatus {
        conditions: Some(vec![CustomResourceDefinitionCondition {
            type_: "Established".to_owned(),
            status: "True".to_owned(),
            ..CustomResourceDefinitionCondition::default()
        }]),
        ..CustomResourceDefinitionStatus::default()
    });
    crd
}

/// The field manager and `force` of each patch the API server received.
type PatchLog = Arc<Mutex<Vec<(Option<String>, Option<bool>)>>>;

#[tokio::test]
async fn apply_crd_server_side_applies_the_built_in_crd_as_the_operator_with_force() {
    let applies: PatchLog = Arc::default();
    let seen = Arc::clone(&applies);
    let funcs = interceptor::Funcs::new().patch(move |ctx| {
        seen.lock().expect("applies").push((
            ctx.params.field_manager.clone(),
            ctx.params.force.then_some(true),
        ));
        Ok(None)
    });
    let client = ClientBuilder::new()
        .with_object(installed_older_crd())
        .with_interceptor_funcs(funcs)
        .build()
        .await
        .expect("fake API server");

    apply_crd(&client, Duration::from_secs(5))
        .await
        .expect("applied and established");

    let stored = Api::<CustomResourceDefinition>::all(client)
        .get(PlamatioStore::crd_name())
        .await
        .expect("CRD");
    assert_eq!(
        stored.spec,
        PlamatioStore::crd().spec,
        "the new schema is served"
    );
    assert_eq!(
        *applies.lock().expect("applies"),
        [(Some("plamatio-operator".to_owned()), Some(true))],
        "one forced apply by the operator's field manager (it takes over fields kubectl or Helm set)"
    );
    assert_eq!(stored.name_any(), "plamatiostores.plamatio.io");
}

#[tokio::test]
async fn apply_crd_fails_when_the_crd_is_never_established() {
    let client = ClientBuilder::new().build().await.expect("fake API server");
    let error = apply_crd(&client, Duration::from_millis(600))
        .await
        .expect_err("never established");
    assert!(error.to_string().contains("not Established"), "{error}");
}
