//! What the operator knows of every store's children without asking the API server: one reflector
//! store per child kind (per watched namespace, or one for the whole cluster), fed by the
//! controller's watches of those kinds. A reconcile reads its children here, so a reconcile of an
//! unchanged store makes no list call (B5 at 500 stores: listing 10 kinds per reconcile made the
//! resync slower than the first apply).
//!
//! The caches hold what a reconcile reads and nothing more: Deployments with their spec and status
//! and, of `managedFields`, only who owns `spec.replicas` (the replica handover), Jobs without
//! `managedFields`, every other kind as metadata only (the applied-hash annotation, owner references, resourceVersion) —
//! a dashboard ConfigMap is tens of KiB of JSON that no reconcile reads back.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::api::DynamicObject;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::apply::ObservedChildren;
use crate::build::{ChildKind, MANAGED_BY_LABEL, MANAGER, STORE_LABEL};
use crate::error::{Error, Result};

/// How long a reconcile waits for the caches' first complete list (operator start) before it
/// fails and backs off.
pub const CACHE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The child caches of every watched scope.
pub struct ChildCache {
    /// Keyed by namespace; the key `None` is the cluster-wide scope.
    scopes: BTreeMap<Option<String>, ScopeCache>,
}

struct ScopeCache {
    readers: BTreeMap<ChildKind, Store<DynamicObject>>,
    /// Taken by the watches that feed the readers; while nobody took them (tests, benches) they
    /// are fed by [`ChildCache::relist`].
    writers: Mutex<Option<BTreeMap<ChildKind, Writer<DynamicObject>>>>,
}

impl ScopeCache {
    fn new() -> ScopeCache {
        let writers: BTreeMap<ChildKind, Writer<DynamicObject>> = ChildKind::ALL
            .into_iter()
            .map(|kind| (kind, Writer::new(kind.api_resource())))
            .collect();
        ScopeCache {
            readers: writers
                .iter()
                .map(|(kind, writer)| (*kind, writer.as_reader()))
                .collect(),
            writers: Mutex::new(Some(writers)),
        }
    }
}

impl ChildCache {
    /// Caches for the cluster (no namespaces) or for each watched namespace.
    pub fn new(watch_namespaces: &[String]) -> ChildCache {
        let scopes = if watch_namespaces.is_empty() {
            BTreeMap::from([(None, ScopeCache::new())])
        } else {
            watch_namespaces
                .iter()
                .map(|namespace| (Some(namespace.clone()), ScopeCache::new()))
                .collect()
        };
        ChildCache { scopes }
    }

    fn scope_of(&self, namespace: &str) -> Option<&ScopeCache> {
        self.scopes
            .get(&None)
            .or_else(|| self.scopes.get(&Some(namespace.to_owned())))
    }

    /// The writers of one scope, for the watches that feed them (once; `None` afterwards).
    pub fn take_writers(
        &self,
        scope: Option<&str>,
    ) -> Option<BTreeMap<ChildKind, Writer<DynamicObject>>> {
        let scope = self.scopes.get(&scope.map(str::to_owned))?;
        scope.writers.lock().ok()?.take()
    }

    /// Replaces what the cache of `kind` holds for the scope of `namespace` with `objects`, as a
    /// watch's initial list does. For runs without watches (tests and the B5 bench drive
    /// `reconcile` directly); false once the watches own the writers.
    pub fn relist(&self, namespace: &str, kind: ChildKind, objects: Vec<DynamicObject>) -> bool {
        let Some(scope) = self.scope_of(namespace) else {
            return false;
        };
        let Ok(mut writers) = scope.writers.lock() else {
            return false;
        };
        let Some(writer) = writers.as_mut().and_then(|w| w.get_mut(&kind)) else {
            return false;
        };
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            let mut object = object;
            cached_form(kind, &mut object);
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        true
    }

    /// The children of one store as the caches have them, once every cache of its scope has been
    /// filled by a complete list.
    pub async fn children_of(&self, namespace: &str, store_name: &str) -> Result<ObservedChildren> {
        let scope = self
            .scope_of(namespace)
            .ok_or_else(|| Error::CacheNotReady {
                reason: format!("namespace {namespace} is not watched"),
            })?;
        let mut observed = ObservedChildren::default();
        for (kind, reader) in &scope.readers {
            match tokio::time::timeout(CACHE_READY_TIMEOUT, reader.wait_until_ready()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(Error::CacheNotReady {
                        reason: format!("no complete list of {} yet", kind.as_str()),
                    });
                }
            }
            for object in reader.state_filter(|object| is_child_of(object, namespace, store_name)) {
                observed.insert(*kind, object.as_ref().clone());
            }
        }
        Ok(observed)
    }

    /// Whether the cache of `kind` holds an object of that name (for tests of what is cached).
    pub fn cached(&self, namespace: &str, kind: ChildKind, name: &str) -> Option<DynamicObject> {
        let scope = self.scope_of(namespace)?;
        let reader = scope.readers.get(&kind)?;
        let key = ObjectRef::new_with(name, kind.api_resource()).within(namespace);
        reader.get(&key).map(|object| object.as_ref().clone())
    }
}

/// A Deployment's `managedFields` reduced to what the replica handover reads: the entries that own
/// `spec.replicas`, each with only that field (a full entry lists every field its manager set).
fn keep_replica_owners(object: &mut DynamicObject) {
    let Some(entries) = object.meta_mut().managed_fields.take() else {
        return;
    };
    let owners: Vec<_> = entries
        .into_iter()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
        })
        .map(|mut entry| {
            entry.fields_v1 = Some(FieldsV1(serde_json::json!({"f:spec": {"f:replicas": {}}})));
            entry
        })
        .collect();
    object.meta_mut().managed_fields = Some(owners);
}

fn is_child_of(object: &DynamicObject, namespace: &str, store_name: &str) -> bool {
    let labels = object.labels();
    object.namespace().as_deref() == Some(namespace)
        && labels.get(STORE_LABEL).map(String::as_str) == Some(store_name)
        && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
}

/// What the cache keeps of a child: see the module documentation.
pub fn cached_form(kind: ChildKind, object: &mut DynamicObject) {
    match kind {
        ChildKind::Deployment => keep_replica_owners(object),
        // A Job is read back typed (its status), and a typed Job needs its template.
        ChildKind::Job => object.meta_mut().managed_fields = None,
        _ => {
            object.meta_mut().managed_fields = None;
            object.data = serde_json::Value::Object(serde_json::Map::new());
        }
    }
}
