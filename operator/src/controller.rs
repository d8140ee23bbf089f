//! The `PlamatioStore` controller: the [`Context`] shared by reconciles, the reconcile itself as clear
//! stages (read → resolve Secrets → build → apply → prune → Kafka topics → status), deletion with a
//! bounded finalizer, exponential backoff, Events, and the watches that trigger it all.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::apply::{ObservedChildren, apply_child, is_up_to_date, prune_children};
use crate::build::{
    BuildSettings, ChildKind, MANAGED_BY_LABEL, MANAGER, StoreIdentity, build_children,
};
use crate::crd::{DeletionPolicy, PlamatioStore, PlamatioStoreStatus};
use crate::error::{Error, Result};
use crate::kafka::{KafkaConnection, delete_topics, reconcile_topics};
use crate::metrics::Metrics;
use crate::secrets::{referenced_secret_names, resolve_kafka_credentials, resolve_secrets};
use crate::status::{
    DeploymentObservation, KafkaObservation, MigrationObservation, Observation, blocked_status,
    observed_status, paused_status,
};

/// Finalizer that exists only while `deletionPolicy: Delete` needs the topics removed.
pub const TOPICS_FINALIZER: &str = "plamatio.io/topics";

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    pub build: BuildSettings,
    /// Bound of every Kafka admin request.
    pub kafka_timeout: Duration,
    /// How long the finalizer retries deleting topics before it gives up and lets the store go.
    pub finalizer_timeout: Duration,
    /// Periodic re-check of a healthy store (reads only when nothing changed).
    pub resync_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            build: BuildSettings::default(),
            kafka_timeout: Duration::from_secs(10),
            finalizer_timeout: Duration::from_secs(300),
            resync_interval: Duration::from_secs(300),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// What every reconcile shares: the client, the event recorder, metrics, settings and the failure
/// counts that drive the backoff.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The next delay for a store that failed again: base × 2^failures, capped.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let failures = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(key.to_owned()).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        let exponent = failures.saturating_sub(1).min(16);
        self.settings
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.settings.backoff_max)
    }

    fn reset_backoff(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    async fn publish(
        &self,
        store: &PlamatioStore,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        match self.recorder.publish(&event, &store.object_ref(&())).await {
            Ok(()) => self.metrics.wrote("event"),
            Err(error) => warn!(%error, reason, "could not record event"),
        }
    }
}

fn store_key(identity: &StoreIdentity) -> String {
    format!("{}/{}", identity.namespace, identity.name)
}

fn has_finalizer(store: &PlamatioStore) -> bool {
    store.finalizers().iter().any(|f| f == TOPICS_FINALIZER)
}

async fn set_finalizers(
    api: &Api<PlamatioStore>,
    store: &PlamatioStore,
    finalizers: Vec<String>,
    ctx: &Context,
) -> Result<()> {
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": store.resource_version(),
        }
    });
    api.patch(
        &store.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    ctx.metrics.wrote("finalizer");
    Ok(())
}

async fn patch_status_if_changed(
    api: &Api<PlamatioStore>,
    store: &PlamatioStore,
    status: PlamatioStoreStatus,
    ctx: &Context,
) -> Result<bool> {
    if store.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let patch = json!({ "status": status });
    api.patch_status(
        &store.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    ctx.metrics.wrote("status");
    debug!("status updated");
    Ok(true)
}

/// Reconciles one store. Writes happen only where the observed state differs from the wanted one.
#[instrument(skip(store, ctx), fields(store = %store.name_any(), namespace = store.namespace().unwrap_or_default()))]
pub async fn reconcile(store: Arc<PlamatioStore>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let identity = StoreIdentity::of(&store)?;
    let api: Api<PlamatioStore> = Api::namespaced(ctx.client.clone(), &identity.namespace);
    let now = Time(Timestamp::now());
    let generation = store.metadata.generation;

    // Stage 1: read — deletion and pause come first.
    if store.metadata.deletion_timestamp.is_some() {
        return handle_deletion(&store, &identity, &api, &ctx).await;
    }
    if store.spec.paused {
        let status = paused_status(store.status.as_ref(), generation, &now);
        if patch_status_if_changed(&api, &store, status, &ctx).await? {
            ctx.publish(
                &store,
                EventType::Normal,
                "Paused",
                "Pause",
                "reconciliation paused".to_owned(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    let wants_finalizer = store.spec.deletion_policy() == DeletionPolicy::Delete;
    if wants_finalizer != has_finalizer(&store) {
        let mut finalizers: Vec<String> = store
            .finalizers()
            .iter()
            .filter(|f| *f != TOPICS_FINALIZER)
            .cloned()
            .collect();
        if wants_finalizer {
            finalizers.push(TOPICS_FINALIZER.to_owned());
        }
        set_finalizers(&api, &store, finalizers, &ctx).await?;
    }

    // Stage 2: resolve Secrets; a missing one stops everything before any child is written.
    let secrets = match resolve_secrets(&ctx.client, &identity.namespace, &store.spec).await {
        Ok(secrets) => secrets,
        Err(
            error @ (Error::SecretNotFound { .. }
            | Error::SecretKeyNotFound { .. }
            | Error::InvalidSecret { .. }),
        ) => {
            let message = error.to_string();
            let status = blocked_status(
                store.status.as_ref(),
                generation,
                error.metric_label(),
                &message,
                &now,
            );
            if patch_status_if_changed(&api, &store, status, &ctx).await? {
                ctx.publish(
                    &store,
                    EventType::Warning,
                    error.metric_label(),
                    "ResolveSecrets",
                    message,
                )
                .await;
            }
            return Err(error);
        }
        Err(error) => return Err(error),
    };

    // Stage 3: build, then apply in order what changed.
    let children = build_children(&store, &secrets, &ctx.settings.build)?;
    let mut observed =
        ObservedChildren::list(&ctx.client, &identity.namespace, &identity.name).await?;
    let migration = match children.iter().find(|c| c.kind == ChildKind::Job) {
        None => MigrationObservation::Manual,
        Some(job) => MigrationObservation::of_job(
            &job.name,
            observed.typed::<Job>(ChildKind::Job, &job.name).as_ref(),
        ),
    };
    // The API Deployment waits for its schema: until the migration Job succeeds the running
    // Deployment (if any) is neither rolled nor pruned.
    let hold_deployment = !migration.allows_rollout();
    let api_name = identity.api_name();
    let mut applied = Vec::new();
    for child in &children {
        if hold_deployment && child.kind == ChildKind::Deployment && child.name == api_name {
            continue;
        }
        let existing = observed.get(child.kind, &child.name);
        // A Job's template is immutable and the Job is named by version: once it exists it has run
        // (or is running) for exactly this version.
        if child.kind == ChildKind::Job && existing.is_some() {
            continue;
        }
        if is_up_to_date(child, existing) {
            continue;
        }
        let result = apply_child(&ctx.client, &identity.namespace, child).await?;
        ctx.metrics.wrote("apply");
        observed.insert(child.kind, result);
        applied.push(format!("{}/{}", child.kind.as_str(), child.name));
    }

    // Stage 4: prune children the spec no longer asks for.
    let keep: BTreeSet<(ChildKind, String)> = children
        .iter()
        .map(|c| (c.kind, c.name.clone()))
        .chain(std::iter::once((ChildKind::Deployment, api_name.clone())))
        .collect();
    let owner_uid = store.metadata.uid.clone();
    let pruned = prune_children(
        &ctx.client,
        &identity.namespace,
        &observed,
        &keep,
        owner_uid.as_deref(),
    )
    .await?;
    for _ in &pruned {
        ctx.metrics.wrote("delete");
    }

    // Stage 5: Kafka topics (the API keeps serving without them: its outbox buffers events).
    let desired_topics = store.spec.desired_topics();
    let kafka = match KafkaConnection::for_spec(
        &store.spec,
        secrets.kafka_credentials.clone(),
        ctx.settings.kafka_timeout,
    ) {
        None => KafkaObservation::NotConfigured,
        Some(connection) => match reconcile_topics(&connection, &desired_topics).await {
            Ok(report) => KafkaObservation::Checked(report),
            Err(error) => {
                warn!(%error, "Kafka topics not reconciled");
                KafkaObservation::Unreachable {
                    message: error.to_string(),
                    topics: desired_topics.iter().map(|t| t.name.clone()).collect(),
                }
            }
        },
    };

    // Stage 6: status from what was observed.
    let observation = Observation {
        generation,
        endpoint: identity.endpoint(),
        migration: migration.clone(),
        deployment: observed
            .typed::<Deployment>(ChildKind::Deployment, &api_name)
            .map(|d| DeploymentObservation::of(&d)),
        agent: store.spec.agent_enabled().then(|| {
            observed
                .typed::<Deployment>(ChildKind::Deployment, &identity.agent_name())
                .map(|d| DeploymentObservation::of(&d))
                .unwrap_or_default()
        }),
        redis_configured: store
            .spec
            .cache
            .as_ref()
            .is_some_and(|c| c.url_secret_ref.is_some()),
        kafka: kafka.clone(),
    };
    let status = observed_status(store.status.as_ref(), &observation, &now);
    let status_changed = patch_status_if_changed(&api, &store, status, &ctx).await?;

    // Events for what changed.
    if !applied.is_empty() {
        info!(children = applied.len(), "applied children");
        ctx.publish(
            &store,
            EventType::Normal,
            "Applied",
            "Apply",
            format!("applied {}", applied.join(", ")),
        )
        .await;
    }
    if !pruned.is_empty() {
        let names: Vec<String> = pruned
            .iter()
            .map(|(k, n)| format!("{}/{n}", k.as_str()))
            .collect();
        ctx.publish(
            &store,
            EventType::Normal,
            "Pruned",
            "Prune",
            format!("deleted {}", names.join(", ")),
        )
        .await;
    }
    match &kafka {
        KafkaObservation::Checked(report) if report.changed_anything() => {
            ctx.publish(
                &store,
                EventType::Normal,
                "TopicsUpdated",
                "ReconcileTopics",
                format!(
                    "created {:?}, raised partitions of {:?}, reconfigured {:?}",
                    report.created, report.grown, report.reconfigured
                ),
            )
            .await;
        }
        KafkaObservation::Unreachable { message, .. } if status_changed => {
            ctx.publish(
                &store,
                EventType::Warning,
                "KafkaUnavailable",
                "ReconcileTopics",
                message.clone(),
            )
            .await;
        }
        _ => {}
    }
    if let MigrationObservation::Failed { job } = &migration
        && status_changed
    {
        ctx.publish(
            &store,
            EventType::Warning,
            "MigrationFailed",
            "Migrate",
            format!("migration Job {job} failed"),
        )
        .await;
    }

    let key = store_key(&identity);
    if matches!(kafka, KafkaObservation::Unreachable { .. }) {
        return Ok(Action::requeue(ctx.next_backoff(&key)));
    }
    ctx.reset_backoff(&key);
    Ok(Action::requeue(ctx.settings.resync_interval))
}

/// Deletion: owned objects go by garbage collection; only the topics of a `Delete` policy need work.
/// The finalizer gives up after `finalizer_timeout` so a lost Kafka never blocks deletion forever.
async fn handle_deletion(
    store: &PlamatioStore,
    identity: &StoreIdentity,
    api: &Api<PlamatioStore>,
    ctx: &Context,
) -> Result<Action> {
    if !has_finalizer(store) {
        return Ok(Action::await_change());
    }
    let remaining: Vec<String> = store
        .finalizers()
        .iter()
        .filter(|f| *f != TOPICS_FINALIZER)
        .cloned()
        .collect();
    let topics: Vec<String> = store
        .spec
        .desired_topics()
        .into_iter()
        .map(|t| t.name)
        .collect();
    let outcome = async {
        let credentials =
            resolve_kafka_credentials(&ctx.client, &identity.namespace, &store.spec).await?;
        match KafkaConnection::for_spec(&store.spec, credentials, ctx.settings.kafka_timeout) {
            Some(connection) if store.spec.deletion_policy() == DeletionPolicy::Delete => {
                delete_topics(&connection, &topics).await
            }
            _ => Ok(()),
        }
    }
    .await;
    match outcome {
        Ok(()) => {
            set_finalizers(api, store, remaining, ctx).await?;
            ctx.publish(
                store,
                EventType::Normal,
                "TopicsDeleted",
                "Delete",
                format!("deleted topics {topics:?}"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(error) => {
            let deleted_at = store
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(Timestamp::now);
            let waited = Timestamp::now()
                .as_second()
                .saturating_sub(deleted_at.as_second());
            let bound = i64::try_from(ctx.settings.finalizer_timeout.as_secs()).unwrap_or(i64::MAX);
            if waited >= bound {
                warn!(%error, waited, "giving up deleting topics; removing the finalizer");
                ctx.publish(
                    store,
                    EventType::Warning,
                    "FinalizerTimedOut",
                    "Delete",
                    format!("topics {topics:?} not deleted after {waited}s: {error}"),
                )
                .await;
                set_finalizers(api, store, remaining, ctx).await?;
                return Ok(Action::await_change());
            }
            Err(error)
        }
    }
}

/// Requeue with exponential backoff and count the failure by reason.
pub fn error_policy(store: Arc<PlamatioStore>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let key = format!(
        "{}/{}",
        store.namespace().unwrap_or_default(),
        store.name_any()
    );
    let delay = ctx.next_backoff(&key);
    warn!(%error, store = %key, delay_seconds = delay.as_secs(), "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Stores in the Secret's namespace that reference it.
fn stores_referencing(
    reader: &kube::runtime::reflector::Store<PlamatioStore>,
    secret: &Secret,
) -> Vec<ObjectRef<PlamatioStore>> {
    let name = secret.name_any();
    let namespace = secret.namespace();
    reader
        .state()
        .iter()
        .filter(|store| {
            store.namespace() == namespace && referenced_secret_names(&store.spec).contains(&name)
        })
        .map(|store| ObjectRef::from_obj(store.as_ref()))
        .collect()
}

/// Runs the controller until `shutdown` resolves: watches stores, their children and referenced
/// Secrets.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let children = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let controller = Controller::new(
        Api::<PlamatioStore>::all(client.clone()),
        watcher::Config::default(),
    );
    let reader = controller.store();
    controller
        .owns(Api::<Deployment>::all(client.clone()), children.clone())
        .owns(Api::<Job>::all(client.clone()), children.clone())
        .owns(Api::<Service>::all(client.clone()), children.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), children)
        .watches(
            Api::<Secret>::all(client),
            watcher::Config::default(),
            move |secret| stores_referencing(&reader, &secret),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((store, _)) => debug!(store = %store.name, "reconciled"),
                Err(error) => debug!(%error, "reconcile error"),
            }
        })
        .await;
    info!("controller stopped");
}
