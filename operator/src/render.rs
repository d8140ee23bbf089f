//! `plamatio-operator render`: prints every child manifest a store would get, as a YAML stream,
//! without a cluster (Secrets are assumed to hold the keys the spec names).

use crate::build::{BuildSettings, LiveState, ResolvedSecrets, build_children};
use crate::crd::PlamatioStore;
use crate::error::{Error, Result};

/// Reads one or more `PlamatioStore` documents from YAML.
pub fn parse_stores(yaml: &str) -> Result<Vec<PlamatioStore>> {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml)
        .map_err(|error| Error::invalid_manifest("not YAML documents", Some(error.into())))?;
    documents
        .into_iter()
        .filter(|document| !document.is_null())
        .map(|document| {
            let kind = document
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            if kind != "PlamatioStore" {
                return Err(Error::invalid_manifest(
                    format!("expected kind PlamatioStore, found {kind:?}"),
                    None,
                ));
            }
            let mut store: PlamatioStore = serde_json::from_value(document).map_err(|error| {
                Error::invalid_manifest("not a valid PlamatioStore", Some(error.into()))
            })?;
            if store.metadata.namespace.is_none() {
                store.metadata.namespace = Some("default".to_owned());
            }
            Ok(store)
        })
        .collect()
}

/// The children of every store, as one YAML stream.
pub fn render_stores(stores: &[PlamatioStore], settings: &BuildSettings) -> Result<String> {
    let mut objects = Vec::new();
    for store in stores {
        let secrets = ResolvedSecrets::assumed(store);
        for child in build_children(store, &secrets, settings, &LiveState::default())? {
            objects.push(child.object);
        }
    }
    let mut output = String::new();
    for object in &objects {
        let document = serde_saphyr::to_string(object)
            .map_err(|error| Error::invalid_manifest("cannot write YAML", Some(error.into())))?;
        output.push_str("---\n");
        output.push_str(&document);
        if !document.ends_with('\n') {
            output.push('\n');
        }
    }
    Ok(output)
}

/// Reads a manifest file and renders its stores.
pub fn render_file(path: &str, settings: &BuildSettings) -> Result<String> {
    let yaml = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    render_stores(&parse_stores(&yaml)?, settings)
}
