//! The store's Grafana dashboard ConfigMap, labelled `grafana_dashboard: "1"` so Grafana's dashboard
//! sidecar loads it; its content is the API dashboard the chart ships.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::StoreIdentity;

/// The API dashboard the lead maintains with the chart, compiled in so every store gets the same one.
pub const DASHBOARD_JSON: &str =
    include_str!("../../../charts/plamatio/dashboards/plamatio-api.json");
pub const DASHBOARD_FILE: &str = "plamatio-api.json";

pub fn build_dashboard_config_map(identity: &StoreIdentity) -> ConfigMap {
    let mut metadata = identity.metadata(identity.dashboard_name(), "dashboard");
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert("grafana_dashboard".to_owned(), "1".to_owned());
    }
    metadata.annotations = Some(BTreeMap::from([(
        "grafana_folder".to_owned(),
        "Plamatio".to_owned(),
    )]));
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            DASHBOARD_FILE.to_owned(),
            DASHBOARD_JSON.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}
