//! The API PodDisruptionBudget: keeps all but `maxUnavailable` API pods up during voluntary
//! disruptions (node drains).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::StoreIdentity;
use crate::crd::ApiSpec;

pub fn build_api_pod_disruption_budget(
    identity: &StoreIdentity,
    api: &ApiSpec,
) -> PodDisruptionBudget {
    let max_unavailable = api
        .pod_disruption_budget
        .as_ref()
        .and_then(|p| p.max_unavailable)
        .unwrap_or(1);
    PodDisruptionBudget {
        metadata: identity.metadata(identity.api_name(), "api"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(identity.selector_labels("api")),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
