//! Shared test helpers: the tansu broker harness, store fixtures, and an in-memory API server
//! (kube-fake-client) that logs every write.
#![allow(dead_code)]

pub mod broker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube_fake_client::{ClientBuilder, interceptor};
use plamatio_operator::controller::{Context, Settings};
use plamatio_operator::crd::{
    DatabaseSpec, MigrationMode, PlamatioStore, PlamatioStoreSpec, SecretKeyRef,
};
use plamatio_operator::metrics::Metrics;

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

/// Every write the in-memory API server received, as `operation namespace/name [kind]`.
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

fn kind_of(value: &serde_json::Value) -> String {
    value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("?")
        .to_owned()
}

/// Builds the in-memory API server with the given objects, logging every write; `fail_patch_of`
/// makes patches of objects with that name fail (error injection).
pub struct FakeApi {
    pub client: Client,
    pub writes: WriteLog,
}

pub struct FakeApiBuilder {
    stores: Vec<PlamatioStore>,
    secrets: Vec<Secret>,
    fail_patch_of: Option<String>,
}

pub fn fake_api() -> FakeApiBuilder {
    FakeApiBuilder {
        stores: Vec::new(),
        secrets: Vec::new(),
        fail_patch_of: None,
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

    pub fn fail_patch_of(mut self, name: &str) -> Self {
        self.fail_patch_of = Some(name.to_owned());
        self
    }

    pub async fn build(self) -> FakeApi {
        let writes = WriteLog::default();
        let (create_log, patch_log, delete_log, status_log, update_log, replace_log) = (
            writes.clone(),
            writes.clone(),
            writes.clone(),
            writes.clone(),
            writes.clone(),
            writes.clone(),
        );
        let fail_patch_of = self.fail_patch_of.clone();
        let funcs = interceptor::Funcs::new()
            .create(move |ctx| {
                create_log.record(format!("create {}", kind_of(ctx.object)));
                Ok(None)
            })
            .patch(move |ctx| {
                if fail_patch_of.as_deref() == Some(ctx.name) {
                    return Err(kube_fake_client::Error::Internal("injected failure".into()));
                }
                patch_log.record(format!(
                    "patch {}/{} {}",
                    ctx.namespace,
                    ctx.name,
                    kind_of(ctx.patch)
                ));
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
                status_log.record(format!("patch_status {}/{}", ctx.namespace, ctx.name));
                Ok(None)
            });
        let mut builder = ClientBuilder::new()
            .with_resource::<PlamatioStore>()
            .with_status_subresource::<PlamatioStore>()
            .with_status_subresource::<Deployment>()
            .with_status_subresource::<Job>()
            .with_interceptor_funcs(funcs);
        for store in self.stores {
            builder = builder.with_object(store);
        }
        for secret in self.secrets {
            builder = builder.with_object(secret);
        }
        let client = builder.build().await.expect("fake API server");
        FakeApi { client, writes }
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

pub fn context(client: &Client, settings: Settings) -> Arc<Context> {
    Arc::new(Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::new()),
        Some("test".to_owned()),
    ))
}
