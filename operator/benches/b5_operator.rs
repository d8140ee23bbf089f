//! B5: 500 `PlamatioStore`s created at once, reconciled against the in-memory API server
//! (kube-fake-client). Reports the time until every store's children are applied, the process RSS,
//! and the writes and list calls of a resync of the unchanged stores (target: 0); then 50 stores with
//! Kafka topics on one tansu broker, and the Kafka admin clients and connections they cost.
//!
//! Run: `cargo bench -p plamatio-operator --bench b5_operator` (optionally
//! `-- --stores N --kafka-stores M`; `--kafka-stores 0` skips the Kafka half).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use kube_fake_client::{ClientBuilder, interceptor};
use plamatio_operator::build::ChildKind;
use plamatio_operator::controller::{Context, Settings, reconcile};
use plamatio_operator::crd::{
    DatabaseSpec, KafkaSpec, MigrationMode, PlamatioStore, PlamatioStoreSpec, SecretKeyRef,
    TopicsSpec,
};
use plamatio_operator::metrics::Metrics;

const NAMESPACE: &str = "bench";
const CONCURRENCY: usize = 16;

fn resident_mebibytes() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn store(index: usize) -> PlamatioStore {
    let name = format!("store-{index:04}");
    let mut store = PlamatioStore::new(
        &name,
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
        },
    );
    store.metadata.namespace = Some(NAMESPACE.to_owned());
    store.metadata.uid = Some(format!("uid-{index}"));
    store.metadata.generation = Some(1);
    store
}

/// Established TCP connections of this process to `port` (from /proc/net/tcp and tcp6: the
/// remote port, state 01).
fn connections_to(port: u16) -> usize {
    let wanted = format!(":{port:04X}");
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields
                        .get(2)
                        .is_some_and(|remote| remote.ends_with(&wanted))
                        && fields.get(3) == Some(&"01")
                })
                .count()
        })
        .sum()
}

/// Store `index` with Kafka topics on `bootstrap` (prefix per store: 5 topics each).
fn kafka_store(index: usize, bootstrap: &str) -> PlamatioStore {
    let mut store = store(index);
    store.spec.kafka = Some(KafkaSpec {
        bootstrap_servers: bootstrap.to_owned(),
        topic_prefix: Some(format!("store{index:04}.")),
        topics: Some(TopicsSpec {
            partitions: Some(1),
            ..TopicsSpec::default()
        }),
        ..KafkaSpec::default()
    });
    store
}

/// The Kafka half of B5: `count` stores on one broker, created then resynced with the topic
/// resync interval at 0 (so every reconcile asks Kafka); reports admin clients created and the
/// process's connections to the broker.
async fn kafka_stores(count: usize) -> bool {
    let broker = plamatio_testkit::TansuBroker::start();
    let mut builder = ClientBuilder::new()
        .with_resource::<PlamatioStore>()
        .with_status_subresource::<PlamatioStore>()
        .with_status_subresource::<Deployment>()
        .with_status_subresource::<Job>()
        .with_return_managed_fields();
    for index in 0..count {
        builder = builder
            .with_object(kafka_store(index, &broker.bootstrap()))
            .with_object(secret(index));
    }
    let client = builder.build().await.expect("fake API server");
    let settings = Settings {
        topic_resync_interval: Duration::ZERO,
        ..Settings::default()
    };
    let context = Arc::new(Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::new()),
        Some("bench".to_owned()),
    ));
    let stores: Api<PlamatioStore> = Api::namespaced(client.clone(), NAMESPACE);
    deliver_watches(&client, &context).await;
    let (create_time, create_failures) = reconcile_all(&stores, &context).await;
    let created_after_create = context.kafka_admins.created();
    deliver_watches(&client, &context).await;
    let (resync_time, resync_failures) = reconcile_all(&stores, &context).await;
    let connections = connections_to(broker.port());
    let created = context.kafka_admins.created();
    println!(
        "B5 Kafka: {count} stores with topics on one broker (topic resync interval 0: every reconcile asks Kafka)"
    );
    println!(
        "  create {:.2} s (failures {create_failures}), resync {:.2} s (failures {resync_failures})",
        create_time.as_secs_f64(),
        resync_time.as_secs_f64()
    );
    println!(
        "  admin clients created: {created_after_create} after create, {created} after resync; held {}; established connections to the broker now: {connections}",
        context.kafka_admins.held()
    );
    create_failures == 0 && resync_failures == 0 && created == 1
}

fn secret(index: usize) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("store-{index:04}-database")),
            namespace: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "url".to_owned(),
            ByteString(format!("postgres://plamatio@db:5432/store{index}").into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// What the controller's watches deliver (the in-memory API server has none): every child cache
/// relisted, as a watch's initial list fills it. Not timed, and its lists are not counted.
async fn deliver_watches(client: &kube::Client, context: &Context) {
    for kind in ChildKind::ALL {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), NAMESPACE, &kind.api_resource());
        let objects = api
            .list(&ListParams::default())
            .await
            .expect("list children")
            .items;
        context.children.relist(NAMESPACE, kind, objects);
    }
}

async fn reconcile_all(stores: &Api<PlamatioStore>, context: &Arc<Context>) -> (Duration, usize) {
    let started = Instant::now();
    let all = stores
        .list(&ListParams::default())
        .await
        .expect("list stores");
    let failures = futures::stream::iter(all.items)
        .map(|store| {
            let context = Arc::clone(context);
            async move { reconcile(Arc::new(store), context).await.is_err() }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    (started.elapsed(), failures)
}

#[tokio::main]
async fn main() {
    let count = std::env::args()
        .skip_while(|arg| arg != "--stores")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let rss_start = resident_mebibytes();

    let writes = Arc::new(AtomicUsize::new(0));
    let lists = Arc::new(AtomicUsize::new(0));
    let on_list = lists.clone();
    let (on_create, on_patch, on_status, on_delete) = (
        writes.clone(),
        writes.clone(),
        writes.clone(),
        writes.clone(),
    );
    let funcs = interceptor::Funcs::new()
        .list(move |_| {
            on_list.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        })
        .create(move |_| {
            on_create.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        })
        .patch(move |_| {
            on_patch.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        })
        .patch_status(move |_| {
            on_status.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        })
        .delete(move |_| {
            on_delete.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        });
    let mut builder = ClientBuilder::new()
        .with_resource::<PlamatioStore>()
        .with_status_subresource::<PlamatioStore>()
        .with_status_subresource::<Deployment>()
        .with_status_subresource::<Job>()
        .with_return_managed_fields()
        .with_interceptor_funcs(funcs);
    for index in 0..count {
        builder = builder.with_object(store(index)).with_object(secret(index));
    }
    let client = builder.build().await.expect("fake API server");
    let rss_loaded = resident_mebibytes();

    let context = Arc::new(Context::new(
        client.clone(),
        Settings::default(),
        Arc::new(Metrics::new()),
        Some("bench".to_owned()),
    ));
    let stores: Api<PlamatioStore> = Api::namespaced(client.clone(), NAMESPACE);

    deliver_watches(&client, &context).await;
    lists.store(0, Ordering::Relaxed);
    let (create_time, create_failures) = reconcile_all(&stores, &context).await;
    let create_writes = writes.swap(0, Ordering::Relaxed);
    // reconcile_all lists the stores once to know them (the controller's store watch).
    let create_lists = lists.swap(0, Ordering::Relaxed).saturating_sub(1);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let applied_deployments = deployments
        .list(&ListParams::default())
        .await
        .expect("list deployments")
        .items
        .len();
    let rss_after_create = resident_mebibytes();

    deliver_watches(&client, &context).await;
    lists.store(0, Ordering::Relaxed);
    let (resync_time, resync_failures) = reconcile_all(&stores, &context).await;
    let resync_writes = writes.swap(0, Ordering::Relaxed);
    let resync_lists = lists.swap(0, Ordering::Relaxed).saturating_sub(1);
    let rss_end = resident_mebibytes();

    // Peer in the same run: the RSS a second in-memory API server holding the same objects costs, so
    // the operator's share can be told apart from the fake API's storage.
    let mut objects = Vec::new();
    for kind in ChildKind::ALL {
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), NAMESPACE, &kind.api_resource());
        for object in api
            .list(&ListParams::default())
            .await
            .expect("list children")
            .items
        {
            objects.push(serde_json::to_value(object).expect("serialize child"));
        }
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), NAMESPACE);
    for event in events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
    {
        objects.push(serde_json::to_value(event).expect("serialize event"));
    }
    for store in stores
        .list(&ListParams::default())
        .await
        .expect("list stores")
        .items
    {
        objects.push(serde_json::to_value(store).expect("serialize store"));
    }
    let object_count = objects.len();
    let rss_before_peer = resident_mebibytes();
    let peer = ClientBuilder::new()
        .with_resource::<PlamatioStore>()
        .with_return_managed_fields()
        .with_runtime_objects(objects)
        .build()
        .await
        .expect("peer fake API server");
    let fake_api_share = resident_mebibytes() - rss_before_peer;
    drop(peer);
    let operator_estimate = rss_end - rss_loaded - fake_api_share;

    println!(
        "B5 operator: {count} PlamatioStores against the in-memory API server (concurrency {CONCURRENCY})"
    );
    println!(
        "  create:  {:>8.2} s  writes {create_writes:>6}  lists {create_lists}  failures {create_failures}  API Deployments {applied_deployments}",
        create_time.as_secs_f64()
    );
    println!(
        "  resync:  {:>8.2} s  writes {resync_writes:>6}  lists {resync_lists}  failures {resync_failures}",
        resync_time.as_secs_f64()
    );
    println!(
        "  RSS MiB: start {rss_start:.1}, fake API loaded {rss_loaded:.1}, after create {rss_after_create:.1}, end {rss_end:.1}"
    );
    println!(
        "  peer: a second in-memory API server holding the same {object_count} objects costs {fake_api_share:.1} MiB"
    );
    println!(
        "  operator estimate (end - fake API loaded - peer): {operator_estimate:.1} MiB; whole process {rss_end:.1} MiB"
    );
    let ok = create_failures == 0
        && resync_failures == 0
        && applied_deployments == count
        && resync_writes == 0
        && resync_lists == 0
        && create_time < Duration::from_secs(60);
    println!(
        "  targets (all applied < 60 s, 0 resync writes, 0 resync lists): {}; RSS < 100 MiB: {} (the in-memory API shares the process, so only a cluster run measures the operator alone)",
        if ok { "met" } else { "NOT met" },
        if operator_estimate < 100.0 {
            "estimate met"
        } else {
            "estimate NOT met"
        }
    );
    let kafka_count = std::env::args()
        .skip_while(|arg| arg != "--kafka-stores")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let kafka_ok = kafka_count == 0 || kafka_stores(kafka_count).await;
    if !(ok && kafka_ok) {
        std::process::exit(1);
    }
}
