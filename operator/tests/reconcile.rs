//! `reconcile()` against an in-memory API server (kube-fake-client: server-side apply with
//! managedFields, status subresource, CRDs, error injection): what a store's reconcile writes, prunes
//! and reports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::broker::{Broker, free_port};
use common::{
    DATABASE_URL, FakeApi, NAMESPACE, Refusal, context, database_secret, deliver_watches, fake_api,
    minimal_spec, secret, settings, store,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use plamatio_operator::build::CONFIG_HASH_ANNOTATION;
use plamatio_operator::build::ChildKind;
use plamatio_operator::build::names::migration_job_name;
use plamatio_operator::controller::{TOPICS_FINALIZER, error_policy, reconcile};
use plamatio_operator::crd::{
    ApiSpec, AutoscalingSpec, DeletionPolicy, KafkaSpec, MetricsSinkSpec, MigrationMode,
    ObservabilitySpec, PlamatioStore, PlamatioStoreSpec, TopicsSpec,
};
use plamatio_operator::kafka::{KafkaAdmins, KafkaConnection, reconcile_topics};
use plamatio_operator::status::{self, find_condition};
use serde_json::json;

async fn fetch_store(client: &Client, name: &str) -> PlamatioStore {
    Api::<PlamatioStore>::namespaced(client.clone(), NAMESPACE)
        .get(name)
        .await
        .expect("store exists")
}

/// Reconciles the stored store with a context that lives across reconciles (as the controller's
/// does), for the rules that depend on what this operator saw before.
async fn reconcile_in(
    api: &FakeApi,
    name: &str,
    ctx: &Arc<plamatio_operator::controller::Context>,
) -> plamatio_operator::Result<kube::runtime::controller::Action> {
    let latest = fetch_store(&api.client, name).await;
    deliver_watches(api, ctx).await;
    reconcile(Arc::new(latest), Arc::clone(ctx)).await
}

async fn reconcile_latest(
    api: &FakeApi,
    name: &str,
    settings: plamatio_operator::controller::Settings,
) -> plamatio_operator::Result<kube::runtime::controller::Action> {
    let latest = fetch_store(&api.client, name).await;
    let ctx = context(&api.client, settings);
    deliver_watches(api, &ctx).await;
    reconcile(Arc::new(latest), ctx).await
}

fn condition(store: &PlamatioStore, type_: &str) -> (String, String) {
    let status = store.status.clone().expect("status written");
    let condition = find_condition(&status, type_).unwrap_or_else(|| panic!("condition {type_}"));
    (condition.status.clone(), condition.reason.clone())
}

async fn exists<K>(client: &Client, name: &str) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), NAMESPACE)
        .get_opt(name)
        .await
        .expect("get")
        .is_some()
}

fn child_writes(writes: &[String]) -> Vec<&String> {
    writes
        .iter()
        .filter(|w| !w.starts_with("patch_status") && !w.contains("Event"))
        .collect()
}

/// Marks the Deployment rolled out and available, as the Deployment controller would.
async fn make_available(client: &Client, name: &str) {
    let api = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    let deployment = api.get(name).await.expect("deployment");
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = json!({"status": {
        "observedGeneration": deployment.metadata.generation.unwrap_or(1),
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("deployment status");
}

#[tokio::test]
async fn a_new_store_gets_every_child_applied_and_reports_progressing() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");

    assert!(exists::<ServiceAccount>(&api.client, "shop-api").await);
    assert!(exists::<ConfigMap>(&api.client, "shop-api").await);
    assert!(exists::<Deployment>(&api.client, "shop-api").await);
    assert!(exists::<Service>(&api.client, "shop-api").await);
    assert!(exists::<PodDisruptionBudget>(&api.client, "shop-api").await);
    assert!(exists::<NetworkPolicy>(&api.client, "shop-api").await);
    assert!(!exists::<HorizontalPodAutoscaler>(&api.client, "shop-api").await);

    let applied: Vec<String> = api
        .writes
        .take()
        .into_iter()
        .filter(|w| w.starts_with("patch shops/"))
        .collect();
    assert_eq!(
        applied,
        vec![
            "patch shops/shop-api ServiceAccount",
            "patch shops/shop-api ConfigMap",
            "patch shops/shop-api Deployment",
            "patch shops/shop-api Service",
            "patch shops/shop-api PodDisruptionBudget",
            "patch shops/shop-api NetworkPolicy",
        ],
        "config first, then the Deployment, then the rest"
    );

    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::PROGRESSING),
        ("True".into(), "RolloutInProgress".into())
    );
    assert_eq!(condition(&store, status::READY).0, "False");
    let status = store.status.expect("status");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://shop-api.shops.svc:80")
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
}

#[tokio::test]
async fn every_child_carries_an_owner_reference_to_the_store() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    let deployment = Api::<Deployment>::namespaced(api.client.clone(), NAMESPACE)
        .get("shop-api")
        .await
        .expect("deployment");
    let owners = deployment
        .metadata
        .owner_references
        .expect("owner references");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, "uid-shop");
    assert_eq!(owners[0].kind, "PlamatioStore");
    assert_eq!(owners[0].controller, Some(true));
}

#[tokio::test]
async fn an_available_deployment_makes_the_store_ready() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("first reconcile");
    make_available(&api.client, "shop-api").await;
    api.writes.take();

    reconcile_latest(&api, "shop", settings())
        .await
        .expect("second reconcile");
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::READY),
        ("True".into(), "StoreReady".into())
    );
    assert_eq!(
        condition(&store, status::PROGRESSING),
        ("False".into(), "RolloutComplete".into())
    );
    assert_eq!(condition(&store, status::DEGRADED).0, "False");
    let status = store.status.expect("status");
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.replicas, Some(2));
    assert_eq!(
        status.image.as_deref(),
        Some(plamatio_operator::build::DEFAULT_API_IMAGE),
        "the resolved image: the operator's default, as the spec names none"
    );
    let writes = api.writes.take();
    assert_eq!(
        writes,
        vec!["patch_status shops/shop"],
        "only the status changed"
    );
}

#[tokio::test]
async fn a_missing_secret_degrades_the_store_and_applies_nothing() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .build()
        .await;
    let error = reconcile_latest(&api, "shop", settings())
        .await
        .expect_err("secret is missing");
    assert_eq!(error.metric_label(), "SecretNotFound");

    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::DEGRADED),
        ("True".into(), "SecretNotFound".into())
    );
    assert_eq!(
        condition(&store, status::READY),
        ("False".into(), "SecretNotFound".into())
    );
    let writes = api.writes.take();
    assert!(
        child_writes(&writes).is_empty(),
        "no child written: {writes:?}"
    );
    assert!(!exists::<Deployment>(&api.client, "shop-api").await);
    assert!(!exists::<ConfigMap>(&api.client, "shop-api").await);
}

#[tokio::test]
async fn a_missing_secret_key_is_reported_as_secret_not_found() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(secret("shop-database", &[("other", "x")]))
        .build()
        .await;
    let error = reconcile_latest(&api, "shop", settings())
        .await
        .expect_err("key is missing");
    assert_eq!(error.metric_label(), "SecretNotFound");
    assert!(error.to_string().contains("\"url\""), "{error}");
    assert!(!exists::<Deployment>(&api.client, "shop-api").await);
}

#[tokio::test]
async fn failures_back_off_exponentially_per_store() {
    let api = fake_api().build().await;
    let ctx = context(&api.client, settings());
    let sequence: Vec<u64> = (0..8)
        .map(|_| ctx.next_backoff("shops/shop").as_secs())
        .collect();
    assert_eq!(sequence, vec![5, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(
        ctx.next_backoff("shops/other").as_secs(),
        5,
        "each store has its own count"
    );
}

#[tokio::test]
async fn a_failed_reconcile_is_counted_by_reason_and_requeued_with_backoff() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    let latest = Arc::new(fetch_store(&api.client, "shop").await);
    let error = reconcile(Arc::clone(&latest), Arc::clone(&ctx))
        .await
        .expect_err("secret missing");
    let first = error_policy(Arc::clone(&latest), &error, Arc::clone(&ctx));
    let second = error_policy(Arc::clone(&latest), &error, Arc::clone(&ctx));
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("plamatio_operator_reconcile_failures_total{reason=\"SecretNotFound\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_paused_store_is_not_reconciled() {
    let mut spec = minimal_spec("shop");
    spec.paused = true;
    let api = fake_api()
        .store(store("shop", spec))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    let writes = api.writes.take();
    assert!(child_writes(&writes).is_empty(), "{writes:?}");
    assert!(!exists::<Deployment>(&api.client, "shop-api").await);
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::PAUSED),
        ("True".into(), "Paused".into())
    );

    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile again");
    assert_eq!(
        api.writes.take(),
        Vec::<String>::new(),
        "a paused store makes no writes"
    );
}

#[tokio::test]
async fn an_unchanged_store_makes_zero_writes() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("first reconcile");
    make_available(&api.client, "shop-api").await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("second reconcile");
    api.writes.take();

    reconcile_latest(&api, "shop", settings())
        .await
        .expect("resync");
    assert_eq!(api.writes.take(), Vec::<String>::new());
}

#[tokio::test]
async fn a_spec_change_reapplies_only_the_children_it_changes() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("first reconcile");
    api.writes.take();

    let stores = Api::<PlamatioStore>::namespaced(api.client.clone(), NAMESPACE);
    let change = json!({"spec": {"api": {"rateLimitPerMinute": 100}}});
    stores
        .patch("shop", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("spec change");
    api.writes.take();

    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile the change");
    let applied: Vec<String> = api
        .writes
        .take()
        .into_iter()
        .filter(|w| w.starts_with("patch shops/"))
        .collect();
    assert_eq!(
        applied,
        vec![
            "patch shops/shop-api ConfigMap",
            "patch shops/shop-api Deployment"
        ],
        "the ConfigMap changes and the config hash rolls the Deployment; nothing else"
    );
}

#[tokio::test]
async fn a_rotated_secret_rolls_the_pods() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("first reconcile");
    let deployments = Api::<Deployment>::namespaced(api.client.clone(), NAMESPACE);
    let hash = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
    };
    let before = hash(&deployments.get("shop-api").await.expect("deployment"));

    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(api.client.clone(), NAMESPACE);
    let rotated = format!("{DATABASE_URL}?rotated=1");
    let patch = json!({"data": {"url": k8s_openapi::ByteString(rotated.into_bytes())}});
    secrets
        .patch(
            "shop-database",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("rotate");

    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile after rotation");
    let after = hash(&deployments.get("shop-api").await.expect("deployment"));
    assert!(before.is_some());
    assert_ne!(before, after, "the config hash follows the Secret's value");
}

#[tokio::test]
async fn turning_an_optional_feature_off_prunes_its_children() {
    let mut spec = minimal_spec("shop");
    spec.api = Some(ApiSpec {
        autoscaling: Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 5,
            target_cpu_utilization_percentage: None,
        }),
        ..ApiSpec::default()
    });
    spec.observability = Some(ObservabilitySpec {
        metrics: Some(MetricsSinkSpec {
            remote_write_url: "https://prometheus.example.com/api/prom/push".to_owned(),
            credentials_secret_ref: None,
        }),
        ..ObservabilitySpec::default()
    });
    let api = fake_api()
        .store(store("shop", spec))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("first reconcile");
    assert!(exists::<HorizontalPodAutoscaler>(&api.client, "shop-api").await);
    assert!(exists::<Deployment>(&api.client, "shop-alloy").await);
    assert!(exists::<ConfigMap>(&api.client, "shop-dashboard").await);

    let stores = Api::<PlamatioStore>::namespaced(api.client.clone(), NAMESPACE);
    let change = json!({"spec": {"api": null, "observability": null}});
    stores
        .patch("shop", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("turn off");
    api.writes.take();

    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    assert!(!exists::<HorizontalPodAutoscaler>(&api.client, "shop-api").await);
    assert!(!exists::<Deployment>(&api.client, "shop-alloy").await);
    assert!(!exists::<ConfigMap>(&api.client, "shop-alloy").await);
    assert!(!exists::<ConfigMap>(&api.client, "shop-dashboard").await);
    assert!(
        exists::<Deployment>(&api.client, "shop-api").await,
        "the API stays"
    );
    let deletes: Vec<String> = api
        .writes
        .take()
        .into_iter()
        .filter(|w| w.starts_with("delete"))
        .collect();
    assert!(
        deletes.contains(&"delete shops/shop-api".to_owned()),
        "{deletes:?}"
    );
    assert!(
        deletes.contains(&"delete shops/shop-alloy".to_owned()),
        "{deletes:?}"
    );
}

#[tokio::test]
async fn auto_migrations_run_the_job_before_the_deployment() {
    let mut spec = minimal_spec("shop");
    spec.database.migrations = Some(MigrationMode::Auto);
    let api = fake_api()
        .store(store("shop", spec))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("first reconcile");
    let job_name = &migration_job_name("shop", "0.1.0");
    assert!(exists::<Job>(&api.client, job_name).await);
    assert!(
        !exists::<Deployment>(&api.client, "shop-api").await,
        "held until migrated"
    );
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::PROGRESSING),
        ("True".into(), "MigrationRunning".into())
    );
    assert_eq!(
        condition(&store, status::DATABASE_READY),
        ("False".into(), "MigrationRunning".into())
    );

    let jobs = Api::<Job>::namespaced(api.client.clone(), NAMESPACE);
    let done =
        json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
    jobs.patch_status(job_name, &PatchParams::default(), &Patch::Merge(&done))
        .await
        .expect("job done");

    reconcile_latest(&api, "shop", settings())
        .await
        .expect("second reconcile");
    assert!(exists::<Deployment>(&api.client, "shop-api").await);
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::DATABASE_READY),
        ("True".into(), "MigrationsApplied".into())
    );
    assert_eq!(
        store.status.and_then(|s| s.migration_version).as_deref(),
        Some("0.1.0")
    );
}

#[tokio::test]
async fn a_failed_migration_degrades_the_store() {
    let mut spec = minimal_spec("shop");
    spec.database.migrations = Some(MigrationMode::Auto);
    let api = fake_api()
        .store(store("shop", spec))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("first reconcile");
    let jobs = Api::<Job>::namespaced(api.client.clone(), NAMESPACE);
    let failed =
        json!({"status": {"failed": 4, "conditions": [{"type": "Failed", "status": "True"}]}});
    jobs.patch_status(
        &migration_job_name("shop", "0.1.0"),
        &PatchParams::default(),
        &Patch::Merge(&failed),
    )
    .await
    .expect("job failed");
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("second reconcile");
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::DEGRADED),
        ("True".into(), "MigrationFailed".into())
    );
    assert_eq!(
        condition(&store, status::READY),
        ("False".into(), "MigrationFailed".into())
    );
    assert!(!exists::<Deployment>(&api.client, "shop-api").await);
}

#[tokio::test]
async fn an_api_error_fails_the_reconcile() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .fail_patch_of("shop-api")
        .build()
        .await;
    let error = reconcile_latest(&api, "shop", settings())
        .await
        .expect_err("injected failure");
    assert_eq!(error.metric_label(), "ApplyFailed");
}

fn kafka_spec(name: &str, bootstrap: &str, policy: DeletionPolicy) -> PlamatioStoreSpec {
    let mut spec = minimal_spec(name);
    spec.kafka = Some(KafkaSpec {
        bootstrap_servers: bootstrap.to_owned(),
        topic_prefix: Some(format!("{name}.")),
        topics: Some(TopicsSpec {
            partitions: Some(2),
            deletion_policy: Some(policy),
            ..TopicsSpec::default()
        }),
        ..KafkaSpec::default()
    });
    spec
}

#[tokio::test]
async fn an_unreachable_kafka_is_reported_and_the_api_still_deployed() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &bootstrap, DeletionPolicy::Retain),
        ))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    assert!(exists::<Deployment>(&api.client, "shop-api").await);
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::KAFKA_TOPICS_READY),
        ("False".into(), "KafkaUnavailable".into())
    );
    let status = store.status.clone().expect("status");
    let kafka = find_condition(&status, status::KAFKA_TOPICS_READY).expect("condition");
    assert!(
        kafka.message.contains("cannot reach the brokers"),
        "{}",
        kafka.message
    );
    assert_eq!(
        condition(&store, status::DEGRADED),
        ("True".into(), "KafkaUnavailable".into())
    );
    assert_eq!(status.topics.len(), 5);
}

#[tokio::test]
async fn a_reachable_kafka_gets_the_store_topics() {
    let broker = Broker::start();
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &broker.bootstrap(), DeletionPolicy::Retain),
        ))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::KAFKA_TOPICS_READY),
        ("True".into(), "TopicsReady".into())
    );
    let topics = store.status.expect("status").topics;
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "shop.cart_updates",
            "shop.orders_updates",
            "shop.users_updates",
            "shop.products_updates",
            "shop.user_events"
        ]
    );
    assert!(topics.iter().all(|t| t.partitions == Some(2)));
    let config_map = Api::<ConfigMap>::namespaced(api.client.clone(), NAMESPACE)
        .get("shop-api")
        .await
        .expect("config map");
    let data = config_map.data.expect("data");
    assert_eq!(
        data.get("KAFKA_CREATE_TOPICS").map(String::as_str),
        Some("false")
    );
    assert_eq!(
        data.get("KAFKA_TOPIC_PREFIX").map(String::as_str),
        Some("shop.")
    );
}

#[tokio::test]
async fn the_delete_policy_adds_the_topics_finalizer() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &bootstrap, DeletionPolicy::Delete),
        ))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        store.metadata.finalizers,
        Some(vec![TOPICS_FINALIZER.to_owned()])
    );
}

#[tokio::test]
async fn the_retain_policy_needs_no_finalizer() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &bootstrap, DeletionPolicy::Retain),
        ))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    let store = fetch_store(&api.client, "shop").await;
    assert!(store.metadata.finalizers.unwrap_or_default().is_empty());
}

fn deleted_store(name: &str, spec: PlamatioStoreSpec, deleted_seconds_ago: i64) -> PlamatioStore {
    let mut store = store(name, spec);
    store.metadata.finalizers = Some(vec![TOPICS_FINALIZER.to_owned()]);
    let deleted_at = Timestamp::now() - SignedDuration::from_secs(deleted_seconds_ago);
    store.metadata.deletion_timestamp = Some(Time(deleted_at));
    store
}

async fn finalizers_of(client: &Client, name: &str) -> Option<Vec<String>> {
    Api::<PlamatioStore>::namespaced(client.clone(), NAMESPACE)
        .get_opt(name)
        .await
        .expect("get")
        .map(|s| s.metadata.finalizers.unwrap_or_default())
}

#[tokio::test]
async fn deleting_a_store_with_the_delete_policy_deletes_its_topics_then_the_finalizer() {
    let broker = Broker::start();
    let spec = kafka_spec("shop", &broker.bootstrap(), DeletionPolicy::Delete);
    let connection = KafkaConnection::for_spec(&spec, None, Duration::from_secs(5)).expect("kafka");
    reconcile_topics(&KafkaAdmins::default(), &connection, &spec.desired_topics())
        .await
        .expect("topics exist");

    let api = fake_api()
        .store(deleted_store("shop", spec, 1))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile deletion");

    let remaining = finalizers_of(&api.client, "shop").await;
    assert!(
        remaining.as_ref().is_none_or(|f| f.is_empty()),
        "finalizer removed: {remaining:?}"
    );
    let report = reconcile_topics(&KafkaAdmins::default(), &connection, &[])
        .await
        .expect("broker reachable");
    assert!(report.topics.is_empty());
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .create()
            .expect("admin");
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("metadata");
    let left: Vec<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    assert!(
        left.iter().all(|name| !name.starts_with("shop.")),
        "topics deleted: {left:?}"
    );
}

#[tokio::test]
async fn a_deletion_keeps_the_finalizer_while_kafka_is_unreachable_within_the_bound() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let spec = kafka_spec("shop", &bootstrap, DeletionPolicy::Delete);
    let api = fake_api()
        .store(deleted_store("shop", spec, 1))
        .build()
        .await;
    let error = reconcile_latest(&api, "shop", settings())
        .await
        .expect_err("Kafka is gone");
    assert_eq!(error.metric_label(), "KafkaUnavailable");
    assert_eq!(
        finalizers_of(&api.client, "shop").await,
        Some(vec![TOPICS_FINALIZER.to_owned()])
    );
}

#[tokio::test]
async fn a_deletion_removes_the_finalizer_after_the_bound_when_kafka_is_gone() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let spec = kafka_spec("shop", &bootstrap, DeletionPolicy::Delete);
    let api = fake_api()
        .store(deleted_store("shop", spec, 600))
        .build()
        .await;
    let mut settings = settings();
    settings.finalizer_timeout = Duration::from_secs(300);
    reconcile_latest(&api, "shop", settings)
        .await
        .expect("gives up and lets go");
    let remaining = finalizers_of(&api.client, "shop").await;
    assert!(
        remaining.as_ref().is_none_or(|f| f.is_empty()),
        "finalizer removed: {remaining:?}"
    );
    let writes = api.writes.take();
    assert!(
        writes.iter().any(|w| w.contains("Event")),
        "an event records it: {writes:?}"
    );
}

#[tokio::test]
async fn a_store_name_the_crd_refuses_gets_no_child_and_says_why() {
    let api = fake_api()
        .store(store("shop.eu", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    let action = reconcile_latest(&api, "shop.eu", settings())
        .await
        .expect("reported, not retried");
    assert_eq!(action, Action::await_change());
    let writes = api.writes.take();
    assert!(child_writes(&writes).is_empty(), "{writes:?}");
    assert!(
        writes.iter().any(|w| w.contains("Event")),
        "a Warning Event: {writes:?}"
    );
    let store = fetch_store(&api.client, "shop.eu").await;
    assert_eq!(
        condition(&store, status::DEGRADED),
        ("True".into(), "InvalidName".into())
    );
}

async fn patch_spec(api: &FakeApi, name: &str, change: serde_json::Value) {
    Api::<PlamatioStore>::namespaced(api.client.clone(), NAMESPACE)
        .patch(name, &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("spec change");
}

fn condition_message(store: &PlamatioStore, type_: &str) -> String {
    let status = store.status.clone().expect("status written");
    find_condition(&status, type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// What the HorizontalPodAutoscaler does when it scales: it writes `spec.replicas` under its own
/// field manager (kube-controller-manager, through the scale subresource) and so takes the field's
/// ownership from the operator. kube-fake-client tracks ownership for applies only, so a forced
/// apply stands in for the scale update: the resulting owners are the same.
async fn autoscaler_scales(client: &Client, name: &str, replicas: i32) {
    let scale = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": replicas}
    });
    Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .patch(
            name,
            &PatchParams::apply("kube-controller-manager").force(),
            &Patch::Apply(&scale),
        )
        .await
        .expect("autoscaler scales");
}

fn owns_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(manager))
        .any(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
}

#[tokio::test]
async fn turning_on_autoscaling_keeps_the_live_replica_count_until_the_autoscaler_owns_it() {
    let mut spec = minimal_spec("shop");
    spec.api = Some(ApiSpec {
        replicas: Some(4),
        ..ApiSpec::default()
    });
    let api = fake_api()
        .store(store("shop", spec))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("first reconcile");
    let deployments = Api::<Deployment>::namespaced(api.client.clone(), NAMESPACE);
    let live = deployments.get("shop-api").await.expect("deployment");
    assert!(owns_replicas(&live, "plamatio-operator"));

    patch_spec(
        &api,
        "shop",
        json!({"spec": {"api": {"autoscaling": {"minReplicas": 2, "maxReplicas": 10}}}}),
    )
    .await;
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("autoscaling on");
    assert!(exists::<HorizontalPodAutoscaler>(&api.client, "shop-api").await);
    let applied = api
        .bodies
        .last_applied("Deployment", "shop-api")
        .expect("Deployment applied");
    assert_eq!(
        applied["spec"]["replicas"], 4,
        "while the operator alone owns spec.replicas, dropping it would make the API server remove \
         the field and default it to 1: the live count is applied instead"
    );

    autoscaler_scales(&api.client, "shop-api", 6).await;
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("after the autoscaler scaled");
    let applied = api
        .bodies
        .last_applied("Deployment", "shop-api")
        .expect("Deployment applied");
    assert!(
        applied["spec"].get("replicas").is_none(),
        "once the autoscaler owns spec.replicas the operator leaves it out: {}",
        applied["spec"]
    );
    let live = deployments.get("shop-api").await.expect("deployment");
    assert!(!owns_replicas(&live, "plamatio-operator"));
    assert!(owns_replicas(&live, "kube-controller-manager"));
    assert_eq!(live.spec.and_then(|s| s.replicas), Some(6));

    patch_spec(
        &api,
        "shop",
        json!({"spec": {"api": {"autoscaling": null}}}),
    )
    .await;
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("autoscaling off");
    let applied = api
        .bodies
        .last_applied("Deployment", "shop-api")
        .expect("Deployment applied");
    assert_eq!(applied["spec"]["replicas"], 4, "the spec's count again");
    assert!(!exists::<HorizontalPodAutoscaler>(&api.client, "shop-api").await);
}

#[tokio::test]
async fn a_refused_apply_degrades_the_store_with_the_servers_reason_and_message() {
    let message = "Deployment.apps \"shop-api\" is invalid: spec.template.metadata.labels: Invalid \
                   value: \"x\": must be no more than 63 characters";
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .refuse_patch_of(
            "Deployment",
            "shop-api",
            Refusal::Invalid(message.to_owned()),
        )
        .build()
        .await;
    let error = reconcile_latest(&api, "shop", settings())
        .await
        .expect_err("refused");
    assert_eq!(error.metric_label(), "Invalid");

    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::DEGRADED),
        ("True".into(), "Invalid".into())
    );
    assert_eq!(
        condition(&store, status::PROGRESSING),
        ("False".into(), "Invalid".into())
    );
    assert_eq!(
        condition_message(&store, status::DEGRADED),
        format!("applying Deployment/shop-api failed: {message}")
    );
    let events = api.bodies.events();
    let warning = events
        .iter()
        .find(|e| e["type"] == "Warning")
        .expect("a Warning Event");
    assert_eq!(warning["reason"], "Invalid");
    assert!(
        warning["note"]
            .as_str()
            .is_some_and(|note| note.contains(message)),
        "{warning}"
    );
}

#[tokio::test]
async fn a_long_refusal_keeps_the_event_note_within_one_kib() {
    let message = format!(
        "admission webhook \"policy.example.com\" denied the request: {}",
        "é".repeat(3000)
    );
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .refuse_patch_of("Service", "shop-api", Refusal::Invalid(message.clone()))
        .build()
        .await;
    let error = reconcile_latest(&api, "shop", settings())
        .await
        .expect_err("refused");
    assert_eq!(error.metric_label(), "AdmissionWebhookDenied");
    let events = api.bodies.events();
    let note = events
        .iter()
        .find(|e| e["type"] == "Warning")
        .and_then(|e| e["note"].as_str().map(str::to_owned))
        .expect("a Warning Event with a note");
    assert!(note.len() <= 1024, "{} bytes", note.len());
    assert!(note.ends_with('…'));
    let store = fetch_store(&api.client, "shop").await;
    assert!(condition_message(&store, status::DEGRADED).contains(&message));
}

#[tokio::test]
async fn after_a_refusal_a_successful_reconcile_clears_degraded() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    let status = plamatio_operator::status::apply_failed_status(
        None,
        Some(1),
        "Forbidden",
        "applying Service/shop-api failed: forbidden",
        &Time(Timestamp::now()),
    );
    Api::<PlamatioStore>::namespaced(api.client.clone(), NAMESPACE)
        .patch_status(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .expect("status");
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    let store = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store, status::DEGRADED),
        ("False".into(), "AsExpected".into())
    );
}

#[tokio::test]
async fn drift_is_repaired_on_resync_and_an_unchanged_resync_writes_nothing() {
    let mut settings = settings();
    settings.drift_repair_interval = Duration::ZERO;
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings);
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("first reconcile");
    make_available(&api.client, "shop-api").await;
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("second reconcile");
    api.writes.take();
    let applies_before = ctx.metrics.writes.with_label_values(&["apply"]).get();
    let unchanged_before = ctx.metrics.unchanged_applies.get();

    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("resync, nothing drifted");
    let writes = api.writes.take();
    assert!(
        writes.iter().all(|w| w.starts_with("apply-unchanged")),
        "every child re-applied, none changed: {writes:?}"
    );
    assert_eq!(writes.len(), 6, "{writes:?}");
    assert_eq!(ctx.metrics.unchanged_applies.get() - unchanged_before, 6);
    assert_eq!(
        ctx.metrics.writes.with_label_values(&["apply"]).get(),
        applies_before,
        "an unchanged apply is not a write"
    );

    // `kubectl scale` and `kubectl edit` of fields the operator owns:
    let deployments = Api::<Deployment>::namespaced(api.client.clone(), NAMESPACE);
    deployments
        .patch(
            "shop-api",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 7, "revisionHistoryLimit": 50}})),
        )
        .await
        .expect("scaled by hand");
    api.writes.take();
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("resync after drift");
    let writes = api.writes.take();
    assert!(
        writes.contains(&"patch shops/shop-api Deployment".to_owned()),
        "{writes:?}"
    );
    let deployment = deployments.get("shop-api").await.expect("deployment");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.revision_history_limit, Some(5));
    assert!(
        api.bodies
            .events()
            .iter()
            .any(|e| e["reason"] == "DriftRepaired"),
        "an Event says what was repaired"
    );
}

#[tokio::test]
async fn between_resyncs_an_unchanged_child_is_not_reapplied() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("first reconcile");
    make_available(&api.client, "shop-api").await;
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("status change");
    api.writes.take();
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("another status change");
    assert_eq!(api.writes.take(), Vec::<String>::new());
    assert_eq!(ctx.metrics.unchanged_applies.get(), 0);
}

fn topics_on(bootstrap: &str) -> Vec<String> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("admin");
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("metadata");
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_owned())
        .collect();
    names.sort();
    names
}

fn shared_prefix_spec(name: &str, bootstrap: &str) -> PlamatioStoreSpec {
    let mut spec = kafka_spec(name, bootstrap, DeletionPolicy::Delete);
    if let Some(kafka) = spec.kafka.as_mut() {
        kafka.topic_prefix = Some("shared.".to_owned());
    }
    spec
}

/// The store as the controller sees it once `kubectl delete` (or the namespace's deletion) set its
/// deletion timestamp; its finalizer keeps it until the reconcile lets go.
async fn being_deleted(client: &Client, name: &str) -> PlamatioStore {
    let mut store = fetch_store(client, name).await;
    store.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    store
}

#[tokio::test]
async fn stores_sharing_a_prefix_never_delete_each_others_topics() {
    let broker = Broker::start();
    let api = fake_api()
        .store(store(
            "shop",
            shared_prefix_spec("shop", &broker.bootstrap()),
        ))
        .store(store(
            "outlet",
            shared_prefix_spec("outlet", &broker.bootstrap()),
        ))
        .secret(database_secret("shop"))
        .secret(database_secret("outlet"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("shop creates the topics");
    reconcile_in(&api, "outlet", &ctx)
        .await
        .expect("outlet finds them");
    let owned = |store: &PlamatioStore| store.status.clone().and_then(|s| s.owned_topics);
    let shop = fetch_store(&api.client, "shop").await;
    assert_eq!(owned(&shop).map(|t| t.len()), Some(5), "shop created them");
    let outlet = fetch_store(&api.client, "outlet").await;
    assert_eq!(owned(&outlet), Some(Vec::new()), "outlet created none");
    let shared = topics_on(&broker.bootstrap());
    assert_eq!(
        shared.iter().filter(|t| t.starts_with("shared.")).count(),
        5
    );

    // The store that created the topics goes while the other still asks for them: they stay.
    let deleted = being_deleted(&api.client, "shop").await;
    reconcile(Arc::new(deleted), Arc::clone(&ctx))
        .await
        .expect("shop's deletion");
    assert_eq!(topics_on(&broker.bootstrap()), shared);
    assert!(
        finalizers_of(&api.client, "shop")
            .await
            .is_none_or(|f| f.is_empty()),
        "shop's finalizer is removed"
    );

    // The store that created none goes: it deletes nothing.
    let deleted = being_deleted(&api.client, "outlet").await;
    reconcile(Arc::new(deleted), Arc::clone(&ctx))
        .await
        .expect("outlet's deletion");
    assert_eq!(topics_on(&broker.bootstrap()), shared);
}

/// Store `shop` with `spec`, its Kafka credentials in the Secret `shop-kafka`, and its database Secret.
async fn store_with_kafka_credentials(mut spec: PlamatioStoreSpec) -> FakeApi {
    if let Some(kafka) = spec.kafka.as_mut() {
        kafka.credentials_secret_ref = Some(plamatio_operator::crd::CredentialsSecretRef {
            name: "shop-kafka".to_owned(),
            ..Default::default()
        });
    }
    fake_api()
        .store(store("shop", spec))
        .secret(database_secret("shop"))
        .secret(secret(
            "shop-kafka",
            &[("username", "shop"), ("password", "secret")],
        ))
        .build()
        .await
}

#[tokio::test]
async fn namespace_deletion_removes_the_topics_though_the_credentials_secret_went_first() {
    let broker = Broker::start();
    let spec = kafka_spec("shop", &broker.bootstrap(), DeletionPolicy::Delete);
    let api = store_with_kafka_credentials(spec).await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("topics created");
    assert_eq!(
        topics_on(&broker.bootstrap())
            .iter()
            .filter(|t| t.starts_with("shop."))
            .count(),
        5
    );

    // The namespace controller deletes the Secret and the store at once.
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(api.client.clone(), NAMESPACE)
        .delete("shop-kafka", &Default::default())
        .await
        .expect("Secret deleted");
    let deleted = being_deleted(&api.client, "shop").await;
    reconcile(Arc::new(deleted), Arc::clone(&ctx))
        .await
        .expect("deletion does not need the plaintext connection's Secret");
    assert!(
        topics_on(&broker.bootstrap())
            .iter()
            .all(|t| !t.starts_with("shop.")),
        "the store's topics are deleted"
    );
    assert!(
        finalizers_of(&api.client, "shop")
            .await
            .is_none_or(|f| f.is_empty())
    );
}

#[tokio::test]
async fn every_patch_names_the_operator_as_its_field_manager() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &bootstrap, DeletionPolicy::Delete),
        ))
        .secret(database_secret("shop"))
        .build()
        .await;
    reconcile_latest(&api, "shop", settings())
        .await
        .expect("reconcile");
    let managers = api.bodies.field_managers();
    assert!(
        managers.iter().any(|(write, _)| write == "patch shop"),
        "the finalizer patch is among them: {managers:?}"
    );
    assert!(
        managers
            .iter()
            .any(|(write, _)| write == "patch_status shop"),
        "{managers:?}"
    );
    for (write, manager) in managers {
        assert_eq!(manager.as_deref(), Some("plamatio-operator"), "{write}");
    }
}

#[tokio::test]
async fn children_are_read_from_the_caches_never_listed_nor_read_one_by_one() {
    // The RBAC grants `list`/`watch` (for the watches) but no `get` on child kinds; only Secrets and
    // stores are read by name, and a reconcile lists nothing.
    let mut spec = minimal_spec("shop");
    spec.api = Some(ApiSpec {
        autoscaling: Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 5,
            target_cpu_utilization_percentage: None,
        }),
        ..ApiSpec::default()
    });
    spec.observability = Some(ObservabilitySpec {
        metrics: Some(MetricsSinkSpec {
            remote_write_url: "https://prometheus.example.com/api/prom/push".to_owned(),
            credentials_secret_ref: None,
        }),
        ..ObservabilitySpec::default()
    });
    let mut settings = settings();
    settings.drift_repair_interval = Duration::ZERO;
    let api = fake_api()
        .store(store("shop", spec))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings);
    for _ in 0..3 {
        reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    }
    let reads = api.bodies.gets();
    assert!(
        reads.contains(&"shops/shop-database".to_owned()),
        "reads by name are recorded: {reads:?}"
    );
    let by_name: Vec<&String> = reads
        .iter()
        .filter(|read| *read != "shops/shop" && *read != "shops/shop-database")
        .collect();
    assert_eq!(by_name, Vec::<&String>::new());
    assert_eq!(api.bodies.lists(), Vec::<Option<String>>::new());
}

#[tokio::test]
async fn ready_topics_are_not_asked_again_until_the_kafka_spec_changes() {
    let broker = Broker::start();
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &broker.bootstrap(), DeletionPolicy::Retain),
        ))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("topics created");
    let ready = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&ready, status::KAFKA_TOPICS_READY),
        ("True".into(), "TopicsReady".into())
    );

    // Kafka goes away; a reconcile for another reason (a Deployment status change) does not ask it.
    drop(broker);
    api.writes.take();
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("no Kafka needed");
    let store_now = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store_now, status::KAFKA_TOPICS_READY),
        ("True".into(), "TopicsReady".into())
    );
    assert_eq!(store_now.status, ready.status, "the status carries over");
    assert_eq!(
        api.writes.take(),
        Vec::<String>::new(),
        "and nothing is written"
    );

    // A change of the Kafka spec asks Kafka at once.
    patch_spec(
        &api,
        "shop",
        json!({"spec": {"kafka": {"topics": {"partitions": 4}}}}),
    )
    .await;
    reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    let changed = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&changed, status::KAFKA_TOPICS_READY),
        ("False".into(), "KafkaUnavailable".into())
    );
}

#[tokio::test]
async fn ready_topics_are_asked_again_after_the_topic_resync_interval() {
    let broker = Broker::start();
    let mut settings = settings();
    settings.topic_resync_interval = Duration::ZERO;
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &broker.bootstrap(), DeletionPolicy::Retain),
        ))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings);
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("topics created");
    drop(broker);
    reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    let store_now = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store_now, status::KAFKA_TOPICS_READY),
        ("False".into(), "KafkaUnavailable".into())
    );
}

#[tokio::test]
async fn a_sasl_store_deletion_uses_the_kept_credentials_when_its_secret_went_first() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let mut spec = kafka_spec("shop", &bootstrap, DeletionPolicy::Delete);
    if let Some(kafka) = spec.kafka.as_mut() {
        kafka.security_protocol = Some(plamatio_operator::crd::SecurityProtocol::SaslPlaintext);
    }
    let api = store_with_kafka_credentials(spec).await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("reconciled (Kafka unreachable, reported)");
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(api.client.clone(), NAMESPACE)
        .delete("shop-kafka", &Default::default())
        .await
        .expect("Secret deleted with the namespace");

    let deleted = being_deleted(&api.client, "shop").await;
    let error = reconcile(Arc::new(deleted.clone()), Arc::clone(&ctx))
        .await
        .expect_err("the brokers are unreachable here");
    assert_eq!(
        error.metric_label(),
        "KafkaUnavailable",
        "the kept credentials were used: deletion went on to Kafka instead of stopping at the \
         missing Secret ({error})"
    );

    // An operator that never saw the store (restarted) has nothing kept: the Secret is needed.
    let restarted = context(&api.client, settings());
    let error = reconcile(Arc::new(deleted), restarted)
        .await
        .expect_err("no credentials");
    assert_eq!(error.metric_label(), "SecretNotFound");
}

async fn fail_job(client: &Client, name: &str, failed_seconds_ago: i64) {
    let failed_at = Timestamp::now() - SignedDuration::from_secs(failed_seconds_ago);
    let failed = json!({"status": {"failed": 4, "conditions": [{
        "type": "Failed", "status": "True", "lastTransitionTime": failed_at.to_string()
    }]}});
    Api::<Job>::namespaced(client.clone(), NAMESPACE)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&failed))
        .await
        .expect("job failed");
}

#[tokio::test]
async fn a_failed_migration_runs_again_after_its_backoff_without_anyone_deleting_the_job() {
    let mut spec = minimal_spec("shop");
    spec.database.migrations = Some(MigrationMode::Auto);
    let api = fake_api()
        .store(store("shop", spec))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    let job_name = migration_job_name("shop", "0.1.0");
    reconcile_in(&api, "shop", &ctx).await.expect("Job created");

    // Just failed: left alone for the first backoff (30 s), the store degraded.
    fail_job(&api.client, &job_name, 1).await;
    api.writes.take();
    let action = reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    assert!(exists::<Job>(&api.client, &job_name).await);
    assert!(
        (28..=30).any(|seconds| action == Action::requeue(Duration::from_secs(seconds))),
        "back when the 30 s backoff ends: {action:?}"
    );
    let store_now = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store_now, status::DEGRADED),
        ("True".into(), "MigrationFailed".into())
    );

    // Failed long enough ago: deleted, and the next reconcile runs it again.
    fail_job(&api.client, &job_name, 120).await;
    reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    assert!(!exists::<Job>(&api.client, &job_name).await, "deleted");
    assert!(
        api.bodies
            .events()
            .iter()
            .any(|e| e["reason"] == "MigrationRetry")
    );
    reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    assert!(exists::<Job>(&api.client, &job_name).await, "created again");
    let store_now = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&store_now, status::DATABASE_READY),
        ("False".into(), "MigrationRunning".into())
    );
}

#[tokio::test]
async fn namespace_scoped_mode_never_lists_across_namespaces() {
    // With WATCH_NAMESPACES the RBAC is a Role per namespace: a list across namespaces would be
    // refused, so neither a reconcile nor a deletion may make one.
    let broker = Broker::start();
    let mut settings = settings();
    settings.watch_namespaces = vec![NAMESPACE.to_owned()];
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &broker.bootstrap(), DeletionPolicy::Delete),
        ))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings);
    reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    let deleted = being_deleted(&api.client, "shop").await;
    reconcile(Arc::new(deleted), Arc::clone(&ctx))
        .await
        .expect("deletion");
    let lists = api.bodies.lists();
    assert!(!lists.is_empty(), "lists are recorded");
    assert!(
        lists
            .iter()
            .all(|namespace| namespace.as_deref() == Some(NAMESPACE)),
        "{lists:?}"
    );
    assert!(
        topics_on(&broker.bootstrap())
            .iter()
            .all(|t| !t.starts_with("shop.")),
        "the store's topics are deleted"
    );
}

#[tokio::test]
async fn cluster_wide_mode_lists_stores_across_namespaces_for_a_deletion() {
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let api = fake_api()
        .store(deleted_store(
            "shop",
            kafka_spec("shop", &bootstrap, DeletionPolicy::Delete),
            1,
        ))
        .build()
        .await;
    let _ = reconcile_latest(&api, "shop", settings()).await;
    assert!(
        api.bodies.lists().contains(&None),
        "{:?}",
        api.bodies.lists()
    );
}

#[tokio::test]
async fn a_noop_reconcile_makes_zero_list_calls_and_zero_writes() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx).await.expect("first");
    make_available(&api.client, "shop-api").await;
    reconcile_in(&api, "shop", &ctx).await.expect("second");
    api.writes.take();
    let lists_before = api.bodies.lists().len();

    reconcile_in(&api, "shop", &ctx).await.expect("resync");
    assert_eq!(api.bodies.lists().len(), lists_before, "no list call");
    assert_eq!(api.writes.take(), Vec::<String>::new());
}

#[tokio::test]
async fn a_reconcile_on_a_stale_cache_writes_nothing_the_server_already_has() {
    // The watches lag behind writes: a reconcile that does not yet see the children it applied
    // applies them again, and the API server answers an unchanged apply without a write.
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    deliver_watches(&api, &ctx).await;
    let latest = Arc::new(fetch_store(&api.client, "shop").await);
    reconcile(Arc::clone(&latest), Arc::clone(&ctx))
        .await
        .expect("first");
    api.writes.take();

    // No watch event delivered: the caches still hold no child.
    reconcile(
        Arc::new(fetch_store(&api.client, "shop").await),
        Arc::clone(&ctx),
    )
    .await
    .expect("stale");
    let writes = api.writes.take();
    assert!(
        writes
            .iter()
            .filter(|w| !w.contains("Event") && !w.starts_with("patch_status"))
            .all(|w| w.starts_with("apply-unchanged")),
        "{writes:?}"
    );
}

#[tokio::test]
async fn the_caches_keep_what_a_reconcile_reads_and_no_more() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    deliver_watches(&api, &ctx).await;

    let config_map = ctx
        .children
        .cached(NAMESPACE, ChildKind::ConfigMap, "shop-api")
        .expect("ConfigMap cached");
    assert_eq!(config_map.data, json!({}), "a ConfigMap's data is not kept");
    assert!(config_map.metadata.managed_fields.is_none());
    assert!(
        config_map
            .annotations()
            .contains_key(plamatio_operator::build::APPLIED_HASH_ANNOTATION),
        "the applied hash is kept"
    );
    assert!(!config_map.owner_references().is_empty(), "owners are kept");

    let deployment = ctx
        .children
        .cached(NAMESPACE, ChildKind::Deployment, "shop-api")
        .expect("Deployment cached");
    let owners = deployment
        .metadata
        .managed_fields
        .clone()
        .expect("the replica handover reads who owns spec.replicas");
    assert!(!owners.is_empty());
    for entry in owners {
        assert_eq!(
            entry.fields_v1.map(|fields| fields.0),
            Some(json!({"f:spec": {"f:replicas": {}}})),
            "only spec.replicas is kept of each owner's fields"
        );
    }
    assert!(deployment.data.get("spec").is_some());
}

#[tokio::test]
async fn a_secret_event_maps_only_to_the_stores_that_reference_that_secret() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;
    use kube::runtime::reflector;
    use kube::runtime::watcher;
    use plamatio_operator::controller::stores_referencing;

    let mut shared = minimal_spec("shop");
    shared.database.url_secret_ref.name = "shared-database".to_owned();
    let mut elsewhere = store("shop", shared.clone());
    elsewhere.metadata.namespace = Some("outlets".to_owned());
    let stores = [
        store("shop", shared.clone()),
        store("outlet", shared),
        store("kiosk", minimal_spec("kiosk")),
        elsewhere,
    ];
    let (reader, mut writer) = reflector::store::<PlamatioStore>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for store in stores {
        writer.apply_watcher_event(&watcher::Event::InitApply(store));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);

    let secret_event = |name: &str| {
        let mut meta = PartialObjectMeta::<Secret>::default();
        meta.metadata.name = Some(name.to_owned());
        meta.metadata.namespace = Some(NAMESPACE.to_owned());
        meta
    };
    let mut triggered: Vec<String> = stores_referencing(&reader, &secret_event("shared-database"))
        .into_iter()
        .map(|store| format!("{}/{}", store.namespace.unwrap_or_default(), store.name))
        .collect();
    triggered.sort();
    assert_eq!(triggered, ["shops/outlet", "shops/shop"]);
    assert!(stores_referencing(&reader, &secret_event("unrelated")).is_empty());
}

#[tokio::test]
async fn a_deleted_store_leaves_nothing_in_the_operators_memory() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .secret(database_secret("shop"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx).await.expect("reconcile");
    assert_eq!(ctx.remembered_stores(), 1, "drift repair clock started");

    let deleted = being_deleted(&api.client, "shop").await;
    reconcile(Arc::new(deleted), Arc::clone(&ctx))
        .await
        .expect("deletion");
    assert_eq!(ctx.remembered_stores(), 0);
}

#[tokio::test]
async fn the_sweep_forgets_stores_deleted_without_a_reconcile() {
    let api = fake_api()
        .store(store("shop", minimal_spec("shop")))
        .store(store("outlet", minimal_spec("outlet")))
        .secret(database_secret("shop"))
        .secret(database_secret("outlet"))
        .build()
        .await;
    let ctx = context(&api.client, settings());
    reconcile_in(&api, "shop", &ctx).await.expect("shop");
    reconcile_in(&api, "outlet", &ctx).await.expect("outlet");
    assert_eq!(ctx.remembered_stores(), 2);

    ctx.retain_stores(|key| key == "shops/outlet");
    assert_eq!(ctx.remembered_stores(), 1);
}

#[tokio::test]
async fn stores_on_one_kafka_cluster_share_one_admin_client_across_reconciles() {
    let broker = Broker::start();
    let api = fake_api()
        .store(store(
            "shop",
            kafka_spec("shop", &broker.bootstrap(), DeletionPolicy::Retain),
        ))
        .store(store(
            "outlet",
            kafka_spec("outlet", &broker.bootstrap(), DeletionPolicy::Retain),
        ))
        .secret(database_secret("shop"))
        .secret(database_secret("outlet"))
        .build()
        .await;
    let mut settings = settings();
    settings.topic_resync_interval = Duration::ZERO;
    let ctx = context(&api.client, settings);
    for _ in 0..2 {
        reconcile_in(&api, "shop", &ctx).await.expect("shop");
        reconcile_in(&api, "outlet", &ctx).await.expect("outlet");
    }
    let shop = fetch_store(&api.client, "shop").await;
    assert_eq!(
        condition(&shop, status::KAFKA_TOPICS_READY),
        ("True".into(), "TopicsReady".into())
    );
    assert_eq!(ctx.kafka_admins.created(), 1, "one client for one cluster");
    assert_eq!(ctx.kafka_admins.held(), 1);
}

#[tokio::test]
async fn other_credentials_on_one_cluster_get_their_own_admin_client() {
    let broker = Broker::start();
    let admins = KafkaAdmins::default();
    let spec = kafka_spec("shop", &broker.bootstrap(), DeletionPolicy::Retain);
    let timeout = Duration::from_secs(2);
    let plain = KafkaConnection::for_spec(&spec, None, timeout).expect("kafka");
    let alice = KafkaConnection::for_spec(
        &spec,
        Some(("alice".to_owned(), "secret".to_owned())),
        timeout,
    )
    .expect("kafka");
    admins.admin_for(&plain).expect("plain");
    admins.admin_for(&plain).expect("plain again");
    admins.admin_for(&alice).expect("alice");
    assert_eq!(admins.created(), 2);
}

#[tokio::test]
async fn asking_for_a_stores_topics_never_creates_them_by_metadata() {
    // librdkafka's admin client is a producer, whose default lets a metadata request for a missing
    // topic create it with the broker's defaults; the store's own partitions must win.
    let broker = Broker::start();
    let spec = kafka_spec("meta", &broker.bootstrap(), DeletionPolicy::Retain);
    let connection = KafkaConnection::for_spec(&spec, None, Duration::from_secs(5)).expect("kafka");
    let desired = spec.desired_topics();
    let report = reconcile_topics(&KafkaAdmins::default(), &connection, &desired)
        .await
        .expect("topics");
    assert_eq!(report.created.len(), desired.len(), "{report:?}");
    assert!(
        report.topics.iter().all(|t| t.partitions == Some(2)),
        "{report:?}"
    );
}

fn api_image(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|container| container.image.clone())
}

async fn api_image_of(client: &Client, store: &str) -> Option<String> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get(&format!("{store}-api"))
        .await
        .expect("API Deployment");
    api_image(&deployment)
}

/// Three running stores on the default image `old`, and the settings of an operator upgraded to
/// the default image `new` that rolls one store at a time.
async fn fleet_on_the_old_default_image() -> (FakeApi, plamatio_operator::controller::Settings) {
    let names = ["shop", "outlet", "kiosk"];
    let mut builder = fake_api();
    for name in names {
        builder = builder
            .store(store(name, minimal_spec(name)))
            .secret(database_secret(name));
    }
    let api = builder.build().await;
    let mut old = settings();
    old.build.default_api_image = "registry.example/plamatio-api:1.0.0".to_owned();
    let before_upgrade = context(&api.client, old);
    for name in names {
        reconcile_in(&api, name, &before_upgrade)
            .await
            .expect("old");
        make_available(&api.client, &format!("{name}-api")).await;
    }
    let mut upgraded = settings();
    upgraded.build.default_api_image = "registry.example/plamatio-api:1.1.0".to_owned();
    upgraded.max_concurrent_rollouts = 1;
    (api, upgraded)
}

#[tokio::test]
async fn an_upgrade_of_the_default_image_rolls_at_most_the_bound_and_queues_the_rest() {
    let (api, upgraded) = fleet_on_the_old_default_image().await;
    let ctx = context(&api.client, upgraded);
    reconcile_in(&api, "shop", &ctx).await.expect("shop");
    let action = reconcile_in(&api, "outlet", &ctx).await.expect("outlet");

    assert_eq!(
        api_image_of(&api.client, "shop").await.as_deref(),
        Some("registry.example/plamatio-api:1.1.0"),
        "the first store rolls"
    );
    assert_eq!(
        api_image_of(&api.client, "outlet").await.as_deref(),
        Some("registry.example/plamatio-api:1.0.0"),
        "the second waits: one rollout at a time"
    );
    let outlet = fetch_store(&api.client, "outlet").await;
    assert_eq!(
        condition(&outlet, status::PROGRESSING),
        ("True".into(), "RolloutQueued".into())
    );
    assert_eq!(
        condition(&outlet, status::READY),
        ("True".into(), "StoreReady".into()),
        "its running pods keep serving"
    );
    assert!(
        condition_message(&outlet, status::PROGRESSING).contains("maxConcurrentRollouts"),
        "the message says what bounds it"
    );
    assert!(
        api.bodies
            .events()
            .iter()
            .any(|event| event["reason"] == "RolloutQueued"),
        "a RolloutQueued Event"
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert_eq!(ctx.rolling_stores(), 1);
}

#[tokio::test]
async fn a_rolled_out_store_frees_its_slot_for_the_next() {
    let (api, upgraded) = fleet_on_the_old_default_image().await;
    let ctx = context(&api.client, upgraded);
    reconcile_in(&api, "shop", &ctx).await.expect("shop rolls");
    reconcile_in(&api, "outlet", &ctx)
        .await
        .expect("outlet waits");

    make_available(&api.client, "shop-api").await;
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("shop rolled out");
    assert_eq!(ctx.rolling_stores(), 0, "the slot is free");
    reconcile_in(&api, "outlet", &ctx)
        .await
        .expect("outlet rolls");
    assert_eq!(
        api_image_of(&api.client, "outlet").await.as_deref(),
        Some("registry.example/plamatio-api:1.1.0")
    );
    let outlet = fetch_store(&api.client, "outlet").await;
    assert_eq!(
        condition(&outlet, status::PROGRESSING),
        ("True".into(), "RolloutInProgress".into())
    );
}

#[tokio::test]
async fn a_change_that_keeps_the_pod_template_is_not_queued() {
    // Replicas are not a rollout: a store scaling while every slot is taken is applied at once.
    let (api, upgraded) = fleet_on_the_old_default_image().await;
    let ctx = context(&api.client, upgraded.clone());
    reconcile_in(&api, "shop", &ctx)
        .await
        .expect("shop takes the slot");

    let mut pinned = minimal_spec("kiosk");
    pinned.api = Some(ApiSpec {
        image: Some("registry.example/plamatio-api:1.0.0".to_owned()),
        replicas: Some(3),
        ..ApiSpec::default()
    });
    patch_spec(&api, "kiosk", json!({"spec": {"api": pinned.api}})).await;
    reconcile_in(&api, "kiosk", &ctx).await.expect("kiosk");
    let deployment = Api::<Deployment>::namespaced(api.client.clone(), NAMESPACE)
        .get("kiosk-api")
        .await
        .expect("kiosk-api");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(3));
    let kiosk = fetch_store(&api.client, "kiosk").await;
    assert_ne!(condition(&kiosk, status::PROGRESSING).1, "RolloutQueued");
}

#[tokio::test]
async fn a_paused_store_gives_its_rollout_slot_back() {
    let (api, upgraded) = fleet_on_the_old_default_image().await;
    let ctx = context(&api.client, upgraded);
    reconcile_in(&api, "shop", &ctx).await.expect("shop rolls");
    assert_eq!(ctx.rolling_stores(), 1);
    patch_spec(&api, "shop", json!({"spec": {"paused": true}})).await;
    reconcile_in(&api, "shop", &ctx).await.expect("paused");
    assert_eq!(ctx.rolling_stores(), 0);
}
