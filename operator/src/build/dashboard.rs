//! The store's Grafana dashboard ConfigMap, labelled `grafana_dashboard: "1"` so Grafana's dashboard
//! sidecar loads it; its content is the API dashboard the chart ships, made the store's own.
//!
//! The sidecar gathers the ConfigMaps of every namespace into one directory and Grafana keys
//! dashboards by uid, so a shared file name or uid would make stores overwrite each other's
//! dashboard and the deletion of one store remove another's. Each store's file name and uid are
//! therefore derived from its namespace and name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{StoreIdentity, hex_sha256};
use crate::error::{Error, Result};

/// The API dashboard the lead maintains with the chart, compiled in so every store gets the same one.
pub const DASHBOARD_JSON: &str =
    include_str!("../../../charts/plamatio/dashboards/plamatio-api.json");
/// Grafana's longest dashboard uid.
pub const MAX_DASHBOARD_UID_LENGTH: usize = 40;

/// `plamatio-<16 hex of SHA-256(namespace/name)>`: unique per store, within Grafana's 40 characters
/// whatever the lengths of the namespace and name.
pub fn dashboard_uid(identity: &StoreIdentity) -> String {
    let digest = hex_sha256(format!("{}/{}", identity.namespace, identity.name).as_bytes());
    format!("plamatio-{}", &digest[..16])
}

/// The file the sidecar writes: namespace and name, which no other store shares (a namespace name
/// has no `_`, so the pair is unambiguous).
pub fn dashboard_file_name(identity: &StoreIdentity) -> String {
    format!("plamatio-{}_{}.json", identity.namespace, identity.name)
}

/// The chart's dashboard with this store's uid and title.
pub fn store_dashboard_json(identity: &StoreIdentity) -> Result<String> {
    let invalid = |source| Error::Serialize {
        what: "the dashboard JSON".to_owned(),
        source,
    };
    let mut dashboard: serde_json::Value = serde_json::from_str(DASHBOARD_JSON).map_err(invalid)?;
    if let Some(fields) = dashboard.as_object_mut() {
        fields.insert("uid".to_owned(), dashboard_uid(identity).into());
        let title = fields
            .get("title")
            .and_then(|t| t.as_str())
            .unwrap_or("Plamatio store API")
            .to_owned();
        fields.insert(
            "title".to_owned(),
            format!("{title} — {}/{}", identity.namespace, identity.name).into(),
        );
    }
    serde_json::to_string_pretty(&dashboard).map_err(invalid)
}

pub fn build_dashboard_config_map(identity: &StoreIdentity) -> Result<ConfigMap> {
    let mut metadata = identity.metadata(identity.dashboard_name(), "dashboard");
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert("grafana_dashboard".to_owned(), "1".to_owned());
    }
    metadata.annotations = Some(BTreeMap::from([(
        "grafana_folder".to_owned(),
        "Plamatio".to_owned(),
    )]));
    Ok(ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            dashboard_file_name(identity),
            store_dashboard_json(identity)?,
        )])),
        ..ConfigMap::default()
    })
}
