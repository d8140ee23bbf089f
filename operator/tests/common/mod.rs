//! Shared test helpers: the tansu broker harness, store fixtures, and an in-memory API server
//! (kube-fake-client) that logs every write.
#![allow(dead_code)]

pub mod broker;
pub mod cel;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use kube_fake_client::{ClientBuilder, PatchType, interceptor};
use plamatio_operator::build::ChildKind;
use plamatio_operator::controller::{Context, Settings};
use plamatio_operator::crd::{
    DatabaseSpec, MigrationMode, PlamatioStore, PlamatioStoreSpec, SecretKeyRef,
};
use plamatio_operator::metrics::Metrics;
use serde_json::Value;

pub const NAMESPACE: &str = "shops";
pub const DATABASE_URL: &str = "postgres://plamatio:secret@db.shops.svc:5432/plamatio";

/// A store as the API server would hand it to the controller (uid and generation set).
pub fn store(name: &str, spec: PlamatioStoreSpec) -> PlamatioStore {
    let mut store = PlamatioStore::new(name, spec);
    store.metadata.namespace = Some(NAMESPACE.to_owned());
    store.metadata.uid = Some(format!("uid-{name}"));
    store.metadata.generation = Some(1);
    store
}

/// The smallest valid spec: a database Secret and manual migrations (so the Deployment is applied
/// at once).
pub fn minimal_spec(name: &str) -> PlamatioStoreSpec {
    PlamatioStoreSpec {
        database: DatabaseSpec {
            url_secret_ref: SecretKeyRef {
                name: format!("{name}-database"),
                key: "url".to_owned(),
            },
            migrations: Some(MigrationMode::Manual),
            ..DatabaseSpec::default()
        },
        ..PlamatioStoreSpec::default()
    }
}

pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

pub fn database_secret(store_name: &str) -> Secret {
    secret(&format!("{store_name}-database"), &[("url", DATABASE_URL)])
}

/// Every write the in-memory API server received, as `operation namespace/name [kind]`. A
/// server-side apply that would change nothing is answered as the real API server answers it —
/// the object unchanged, no new resourceVersion — and logged as `apply-unchanged …`, not as a write.
#[derive(Clone, Default)]
pub struct WriteLog(Arc<Mutex<Vec<String>>>);

impl WriteLog {
    fn record(&self, entry: String) {
        self.0.lock().expect("write log").push(entry);
    }

    /// The writes so far, clearing the log.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("write log"))
    }
}

/// Bodies the in-memory API server received: every server-side apply (the applied configuration
/// the real API server would diff against the field owners) and every Event created.
#[derive(Clone, Default)]
pub struct BodyLog {
    applied: Arc<Mutex<Vec<(String, String, Value)>>>,
    events: Arc<Mutex<Vec<Value>>>,
    field_managers: Arc<Mutex<Vec<FieldManagerOfWrite>>>,
    gets: Arc<Mutex<Vec<String>>>,
    lists: Arc<Mutex<Vec<Option<String>>>>,
}

/// A write (`patch name` / `patch_status name`) and the field manager it named.
pub type FieldManagerOfWrite = (String, Option<String>);

impl BodyLog {
    /// The last configuration applied to the child of that kind and name.
    pub fn last_applied(&self, kind: &str, name: &str) -> Option<Value> {
        self.applied
            .lock()
            .expect("body log")
            .iter()
            .rev()
            .find(|(k, n, _)| k == kind && n == name)
            .map(|(_, _, body)| body.clone())
    }

    /// The field manager of every patch so far, by `patch name` / `patch_status name`.
    pub fn field_managers(&self) -> Vec<FieldManagerOfWrite> {
        self.field_managers.lock().expect("body log").clone()
    }

    /// Every single-object read so far, as `namespace/name` (the RBAC tests: which kinds need `get`).
    pub fn gets(&self) -> Vec<String> {
        self.gets.lock().expect("body log").clone()
    }

    /// The namespace of every list so far (`None`: across all namespaces).
    pub fn lists(&self) -> Vec<Option<String>> {
        self.lists.lock().expect("body log").clone()
    }

    /// The Events created so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("body log").clone()
    }
}

fn kind_of(value: &Value) -> String {
    value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("?")
        .to_owned()
}

/// RFC 7386 merge of `patch` into `target` (what kube-fake-client does for an apply).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The stored object of a child kind, as JSON.
macro_rules! stored_child {
    ($client:expr, $kind:expr, $namespace:expr, $name:expr, [$($type:ty),* $(,)?]) => {{
        let mut found: Option<Value> = None;
        $(
            if $kind == <$type as kube::Resource>::kind(&()) {
                found = $client
                    .get::<$type>($namespace, $name)
                    .ok()
                    .and_then(|object| serde_json::to_value(object).ok());
            }
        )*
        found
    }};
}

/// How a patch of a named object is refused (error injection).
#[derive(Clone, Debug)]
pub enum Refusal {
    /// 500, as from a broken API server.
    Internal,
    /// 422 with this message, as from validation.
    Invalid(String),
}

/// Builds the in-memory API server with the given objects, logging every write.
pub struct FakeApi {
    pub client: Client,
    pub writes: WriteLog,
    pub bodies: BodyLog,
}

pub struct FakeApiBuilder {
    stores: Vec<PlamatioStore>,
    secrets: Vec<Secret>,
    refuse_patch_of: Option<(Option<String>, String, Refusal)>,
}

pub fn fake_api() -> FakeApiBuilder {
    FakeApiBuilder {
        stores: Vec::new(),
        secrets: Vec::new(),
        refuse_patch_of: None,
    }
}

impl FakeApiBuilder {
    pub fn store(mut self, store: PlamatioStore) -> Self {
        self.stores.push(store);
        self
    }

    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Patches of objects with this name fail with a 500.
    pub fn fail_patch_of(mut self, name: &str) -> Self {
        self.refuse_patch_of = Some((None, name.to_owned(), Refusal::Internal));
        self
    }

    /// Applies of the object of this kind and name are refused.
    pub fn refuse_patch_of(mut self, kind: &str, name: &str, refusal: Refusal) -> Self {
        self.refuse_patch_of = Some((Some(kind.to_owned()), name.to_owned(), refusal));
        self
    }

    pub async fn build(self) -> FakeApi {
        let writes = WriteLog::default();
        let bodies = BodyLog::default();
        let (create_log, patch_log, delete_log, status_log, update_log, replace_log) = (
            writes.clone(),
            writes.clone(),
            writes.clone(),
            writes.clone(),
            writes.clone(),
            writes.clone(),
        );
        let (create_bodies, patch_bodies, status_bodies, get_bodies, list_bodies) = (
            bodies.clone(),
            bodies.clone(),
            bodies.clone(),
            bodies.clone(),
            bodies.clone(),
        );
        let refuse_patch_of = self.refuse_patch_of.clone();
        let funcs = interceptor::Funcs::new()
            .list(move |ctx| {
                list_bodies
                    .lists
                    .lock()
                    .expect("body log")
                    .push(ctx.namespace.map(str::to_owned));
                Ok(None)
            })
            .get(move |ctx| {
                get_bodies
                    .gets
                    .lock()
                    .expect("body log")
                    .push(format!("{}/{}", ctx.namespace, ctx.name));
                Ok(None)
            })
            .create(move |ctx| {
                let kind = kind_of(ctx.object);
                if kind == "Event" {
                    create_bodies
                        .events
                        .lock()
                        .expect("body log")
                        .push(ctx.object.clone());
                }
                create_log.record(format!("create {kind}"));
                Ok(None)
            })
            .patch(move |ctx| {
                if let Some((kind, name, refusal)) = &refuse_patch_of
                    && name == ctx.name
                    && kind.as_ref().is_none_or(|kind| *kind == kind_of(ctx.patch))
                {
                    return Err(match refusal {
                        Refusal::Internal => {
                            kube_fake_client::Error::Internal("injected failure".into())
                        }
                        Refusal::Invalid(message) => {
                            kube_fake_client::Error::InvalidRequest(message.clone())
                        }
                    });
                }
                let kind = kind_of(ctx.patch);
                patch_bodies.field_managers.lock().expect("body log").push((
                    format!("patch {}", ctx.name),
                    ctx.params.field_manager.clone(),
                ));
                if ctx.patch_type == PatchType::ApplyPatch {
                    patch_bodies.applied.lock().expect("body log").push((
                        kind.clone(),
                        ctx.name.to_owned(),
                        ctx.patch.clone(),
                    ));
                    let stored = stored_child!(
                        ctx.client,
                        kind.as_str(),
                        ctx.namespace,
                        ctx.name,
                        [
                            ServiceAccount,
                            Role,
                            RoleBinding,
                            ConfigMap,
                            Job,
                            Deployment,
                            Service,
                            PodDisruptionBudget,
                            HorizontalPodAutoscaler,
                            NetworkPolicy,
                        ]
                    );
                    if let Some(stored) = stored {
                        let mut merged = stored.clone();
                        merge_patch(&mut merged, ctx.patch);
                        if merged == stored {
                            patch_log.record(format!(
                                "apply-unchanged {}/{} {kind}",
                                ctx.namespace, ctx.name
                            ));
                            return Ok(Some(stored));
                        }
                    }
                }
                patch_log.record(format!("patch {}/{} {kind}", ctx.namespace, ctx.name));
                Ok(None)
            })
            .update(move |ctx| {
                update_log.record(format!("update {} {}", ctx.namespace, kind_of(ctx.object)));
                Ok(None)
            })
            .replace(move |ctx| {
                replace_log.record(format!("replace {}/{}", ctx.namespace, ctx.name));
                Ok(None)
            })
            .delete(move |ctx| {
                delete_log.record(format!("delete {}/{}", ctx.namespace, ctx.name));
                Ok(None)
            })
            .patch_status(move |ctx| {
                status_bodies
                    .field_managers
                    .lock()
                    .expect("body log")
                    .push((
                        format!("patch_status {}", ctx.name),
                        ctx.params.field_manager.clone(),
                    ));
                status_log.record(format!("patch_status {}/{}", ctx.namespace, ctx.name));
                Ok(None)
            });
        let mut builder = ClientBuilder::new()
            .with_resource::<PlamatioStore>()
            .with_status_subresource::<PlamatioStore>()
            .with_status_subresource::<Deployment>()
            .with_status_subresource::<Job>()
            .with_return_managed_fields()
            .with_interceptor_funcs(funcs);
        for store in self.stores {
            builder = builder.with_object(store);
        }
        for secret in self.secrets {
            builder = builder.with_object(secret);
        }
        let client = builder.build().await.expect("fake API server");
        FakeApi {
            client,
            writes,
            bodies,
        }
    }
}

pub fn settings() -> Settings {
    Settings {
        kafka_timeout: Duration::from_secs(2),
        backoff_base: Duration::from_secs(5),
        backoff_max: Duration::from_secs(300),
        ..Settings::default()
    }
}

/// Delivers what the controller's watches would (the in-memory API server has none): the cache of
/// every child kind relisted from the server, as a watch's initial list fills it. These lists are
/// the watches', not the reconcile's, so they are left out of [`BodyLog::lists`].
pub async fn deliver_watches(api: &FakeApi, ctx: &Context) {
    let lists_before = api.bodies.lists.lock().expect("body log").len();
    for kind in ChildKind::ALL {
        let objects = Api::<DynamicObject>::namespaced_with(
            api.client.clone(),
            NAMESPACE,
            &kind.api_resource(),
        )
        .list(&ListParams::default())
        .await
        .expect("list children")
        .items;
        assert!(
            ctx.children.relist(NAMESPACE, kind, objects),
            "the caches of {NAMESPACE} are fed by the tests"
        );
    }
    api.bodies
        .lists
        .lock()
        .expect("body log")
        .truncate(lists_before);
}

pub fn context(client: &Client, settings: Settings) -> Arc<Context> {
    Arc::new(Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::new()),
        Some("test".to_owned()),
    ))
}
