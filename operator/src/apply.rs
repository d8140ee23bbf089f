//! Writing children to the cluster: what a store already owns (as the child caches have it, see
//! [`crate::cache`]), server-side applying the children whose applied-hash changed (so an unchanged
//! store costs no write), and pruning children the spec no longer asks for.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, instrument};

use crate::build::{APPLIED_HASH_ANNOTATION, Child, ChildKind, MANAGER};
use crate::error::{Error, Result};

/// The children of one store as the API server last reported them, keyed by kind and name.
#[derive(Clone, Debug, Default)]
pub struct ObservedChildren {
    objects: BTreeMap<(ChildKind, String), DynamicObject>,
}

fn dynamic_api(client: &Client, namespace: &str, kind: ChildKind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
}

impl ObservedChildren {
    pub fn get(&self, kind: ChildKind, name: &str) -> Option<&DynamicObject> {
        self.objects.get(&(kind, name.to_owned()))
    }

    /// The observed object as its typed form (e.g. a `Deployment` with its status).
    pub fn typed<K: DeserializeOwned>(&self, kind: ChildKind, name: &str) -> Option<K> {
        self.get(kind, name).and_then(|object| {
            let value = serde_json::to_value(object).ok()?;
            serde_json::from_value(value).ok()
        })
    }

    pub fn insert(&mut self, kind: ChildKind, object: DynamicObject) {
        self.objects.insert((kind, object.name_any()), object);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(ChildKind, String), &DynamicObject)> {
        self.objects.iter()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// True when the observed child carries the digest of the desired one: applying it would change
/// nothing the operator manages.
pub fn is_up_to_date(desired: &Child, observed: Option<&DynamicObject>) -> bool {
    let observed_hash = observed.and_then(|object| {
        object
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(APPLIED_HASH_ANNOTATION))
    });
    match (desired.applied_hash(), observed_hash) {
        (Some(desired_hash), Some(observed_hash)) => desired_hash == observed_hash,
        _ => false,
    }
}

/// Whether applying `desired` (a Deployment) would change the pod template the cluster runs, i.e.
/// start a rollout. The live template carries the API server's defaults, so the desired one is
/// compared as a subset of it; a difference in notation only (e.g. `0.5` for `500m`) counts as a
/// change, which costs a rollout slot but no rollout.
pub fn changes_pod_template(desired: &Child, existing: &DynamicObject) -> bool {
    let template = |value: &serde_json::Value| value.pointer("/spec/template").cloned();
    match (template(&desired.object), template(&existing.data)) {
        (Some(desired), Some(live)) => !is_subset(&desired, &live),
        _ => true,
    }
}

/// Every field of `part` is in `whole` with the same value (lists element by element).
fn is_subset(part: &serde_json::Value, whole: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (part, whole) {
        (Value::Object(part), Value::Object(whole)) => part.iter().all(|(key, value)| {
            whole.get(key).is_some_and(|live| is_subset(value, live))
                || (value.is_null() && !whole.contains_key(key))
        }),
        (Value::Array(part), Value::Array(whole)) => {
            part.len() == whole.len() && part.iter().zip(whole).all(|(p, w)| is_subset(p, w))
        }
        (part, whole) => part == whole,
    }
}

/// Server-side applies one child with the operator's field manager, taking over conflicting fields.
/// A refusal becomes [`Error::ApplyFailed`] with the server's reason and message.
#[instrument(skip(client, child), fields(kind = child.kind.as_str(), name = %child.name))]
pub async fn apply_child(client: &Client, namespace: &str, child: &Child) -> Result<DynamicObject> {
    let params = PatchParams::apply(MANAGER).force();
    let applied = dynamic_api(client, namespace, child.kind)
        .patch(&child.name, &params, &Patch::Apply(&child.object))
        .await
        .map_err(|error| {
            Error::apply_failed(format!("{}/{}", child.kind.as_str(), child.name), error)
        })?;
    debug!("applied");
    Ok(applied)
}

/// Whether an apply changed the object: a server-side apply that changes nothing keeps the
/// resourceVersion (no write happened), so only a new one — or a new object — counts as a write.
pub fn apply_changed(before: Option<&DynamicObject>, after: &DynamicObject) -> bool {
    match before.and_then(|object| object.metadata.resource_version.as_ref()) {
        Some(version) => after.metadata.resource_version.as_ref() != Some(version),
        None => true,
    }
}

/// Deletes observed children that are not in `keep` and that this store owns.
#[instrument(skip(client, observed, keep))]
pub async fn prune_children(
    client: &Client,
    namespace: &str,
    observed: &ObservedChildren,
    keep: &BTreeSet<(ChildKind, String)>,
    owner_uid: Option<&str>,
) -> Result<Vec<(ChildKind, String)>> {
    let mut pruned = Vec::new();
    for ((kind, name), object) in observed.iter() {
        if keep.contains(&(*kind, name.clone())) {
            continue;
        }
        let owned = match owner_uid {
            Some(uid) => object
                .owner_references()
                .iter()
                .any(|owner| owner.uid == uid),
            None => true,
        };
        if !owned {
            continue;
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match dynamic_api(client, namespace, *kind)
            .delete(name, &params)
            .await
        {
            Ok(_) => {}
            // Already gone (garbage collection or someone else): nothing left to prune.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        info!(kind = kind.as_str(), %name, "pruned child the spec no longer asks for");
        pruned.push((*kind, name.clone()));
    }
    Ok(pruned)
}
