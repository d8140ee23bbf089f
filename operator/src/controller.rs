//! The `PlamatioStore` controller: the [`Context`] shared by reconciles, the reconcile itself as a
//! pipeline of named stages (deletion or pause → finalizer → name → Secrets → observe → build →
//! apply → prune → topics → status → events → next action), deletion with a bounded finalizer,
//! exponential backoff, Events, and the watches that trigger it all.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::apply::{
    ObservedChildren, apply_changed, apply_child, changes_pod_template, is_up_to_date,
    prune_children,
};
use crate::build::deployment::LiveReplicas;
use crate::build::migration_job::{failed_at, migration_retry_wait};
use crate::build::names::check_store_name;
use crate::build::{
    BuildSettings, Child, ChildKind, LiveState, MANAGED_BY_LABEL, MANAGER, ResolvedSecrets,
    StoreIdentity, build_children, hex_sha256,
};
use crate::cache::{ChildCache, cached_form};
use crate::crd::{DeletionPolicy, PlamatioStore, PlamatioStoreSpec, PlamatioStoreStatus};
use crate::error::{Error, Result};
use crate::kafka::{
    KafkaAdmins, KafkaConnection, delete_topics, reconcile_topics, topics_to_delete,
};
use crate::metrics::Metrics;
use crate::secrets::{referenced_secret_names, resolve_kafka_credentials, resolve_secrets};
use crate::status::{
    DeploymentObservation, KAFKA_TOPICS_READY, KafkaObservation, MigrationObservation, Observation,
    apply_failed_status, blocked_status, cut_to, find_condition, observed_status, paused_status,
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
    /// Periodic re-check of a healthy store.
    pub resync_interval: Duration,
    /// How often every child is re-applied even when its applied-hash matches (drift repair); the
    /// API server answers an unchanged apply without a write.
    pub drift_repair_interval: Duration,
    /// How long topics found ready stay trusted: Kafka is checked again only after it, or when the
    /// Kafka spec or credentials change, or after a failed check (not on every Deployment status
    /// change).
    pub topic_resync_interval: Duration,
    /// Reconciles running at once.
    pub reconcile_concurrency: u16,
    /// Namespaces whose stores this operator reconciles; empty: every namespace.
    pub watch_namespaces: Vec<String>,
    /// Stores whose API Deployment may roll to a new pod template at once (an operator upgrade
    /// that changes the default image must not roll the whole fleet together); at least 1.
    pub max_concurrent_rollouts: usize,
    /// How soon a store waiting for a rollout slot is looked at again.
    pub rollout_queue_recheck: Duration,
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
            drift_repair_interval: Duration::from_secs(300),
            topic_resync_interval: Duration::from_secs(300),
            reconcile_concurrency: 4,
            watch_namespaces: Vec::new(),
            max_concurrent_rollouts: 5,
            rollout_queue_recheck: Duration::from_secs(15),
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
    /// When each store last had every child re-applied (drift repair).
    last_drift_repair: Mutex<HashMap<String, Instant>>,
    /// Each store's last Kafka check that found every topic ready: what it was made for (a digest of
    /// the Kafka spec and credentials) and when.
    last_ready_topics: Mutex<HashMap<String, (String, Instant)>>,
    /// Each store's last resolved SASL credentials, for deleting its topics when the Secret is
    /// deleted first (a namespace deletion removes both at once). In memory only: lost on restart.
    deletion_credentials: Mutex<HashMap<String, (String, String)>>,
    /// Each store's failed migration Jobs in a row: the uid of the last one counted and the count.
    migration_failures: Mutex<HashMap<String, (String, u32)>>,
    /// Stores whose API Deployment is rolling to a new pod template (each holds one of
    /// `max_concurrent_rollouts` slots until it is rolled out, paused or deleted).
    rollouts: Mutex<BTreeSet<String>>,
    /// Every store's children, as the watches last reported them.
    pub children: ChildCache,
    /// One Kafka admin client per cluster and identity, shared by stores and reconciles.
    pub kafka_admins: KafkaAdmins,
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
            failures: Mutex::new(HashMap::new()),
            last_drift_repair: Mutex::new(HashMap::new()),
            last_ready_topics: Mutex::new(HashMap::new()),
            deletion_credentials: Mutex::new(HashMap::new()),
            migration_failures: Mutex::new(HashMap::new()),
            rollouts: Mutex::new(BTreeSet::new()),
            children: ChildCache::new(&settings.watch_namespaces),
            kafka_admins: KafkaAdmins::default(),
            settings,
        }
    }

    /// Forgets everything kept in memory for the store `key` (`namespace/name`): it was deleted.
    pub fn forget_store(&self, key: &str) {
        self.retain_stores(|kept| kept != key);
    }

    /// Keeps what is remembered only for the stores `keep` says yes to (the periodic sweep passes
    /// the stores that still exist, so a store deleted without a reconcile leaves nothing behind).
    pub fn retain_stores(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut map) = self.failures.lock() {
            map.retain(|key, _| keep(key));
        }
        if let Ok(mut map) = self.last_drift_repair.lock() {
            map.retain(|key, _| keep(key));
        }
        if let Ok(mut map) = self.last_ready_topics.lock() {
            map.retain(|key, _| keep(key));
        }
        if let Ok(mut map) = self.deletion_credentials.lock() {
            map.retain(|key, _| keep(key));
        }
        if let Ok(mut map) = self.migration_failures.lock() {
            map.retain(|key, _| keep(key));
        }
        if let Ok(mut rolling) = self.rollouts.lock() {
            rolling.retain(|key| keep(key));
        }
    }

    /// A rollout slot for the store: the one it holds, else a free one. `Err` carries how many
    /// stores are rolling when none is free.
    pub fn take_rollout_slot(&self, key: &str) -> std::result::Result<(), usize> {
        let Ok(mut rolling) = self.rollouts.lock() else {
            return Ok(());
        };
        if rolling.contains(key) {
            return Ok(());
        }
        if rolling.len() >= self.settings.max_concurrent_rollouts.max(1) {
            return Err(rolling.len());
        }
        rolling.insert(key.to_owned());
        Ok(())
    }

    /// The store's rollout is over (rolled out, paused or gone): its slot is free.
    pub fn release_rollout_slot(&self, key: &str) {
        if let Ok(mut rolling) = self.rollouts.lock() {
            rolling.remove(key);
        }
    }

    /// Stores rolling now.
    pub fn rolling_stores(&self) -> usize {
        self.rollouts.lock().map_or(0, |rolling| rolling.len())
    }

    /// How many stores something is remembered for (bounded by the live stores).
    pub fn remembered_stores(&self) -> usize {
        let mut keys = BTreeSet::new();
        if let Ok(map) = self.failures.lock() {
            keys.extend(map.keys().cloned());
        }
        if let Ok(map) = self.last_drift_repair.lock() {
            keys.extend(map.keys().cloned());
        }
        if let Ok(map) = self.last_ready_topics.lock() {
            keys.extend(map.keys().cloned());
        }
        if let Ok(map) = self.deletion_credentials.lock() {
            keys.extend(map.keys().cloned());
        }
        if let Ok(map) = self.migration_failures.lock() {
            keys.extend(map.keys().cloned());
        }
        if let Ok(rolling) = self.rollouts.lock() {
            keys.extend(rolling.iter().cloned());
        }
        keys.len()
    }

    /// Counts a failed migration Job once (by uid) and returns the failures in a row.
    fn count_migration_failure(&self, key: &str, job_uid: &str) -> u32 {
        match self.migration_failures.lock() {
            Ok(mut failures) => {
                let entry = failures
                    .entry(key.to_owned())
                    .or_insert_with(|| (String::new(), 0));
                if entry.0 != job_uid {
                    *entry = (job_uid.to_owned(), entry.1.saturating_add(1));
                }
                entry.1
            }
            Err(_) => 1,
        }
    }

    fn forget_migration_failures(&self, key: &str) {
        if let Ok(mut failures) = self.migration_failures.lock() {
            failures.remove(key);
        }
    }

    /// Keeps what deleting the store's topics needs, while the store lives.
    fn keep_deletion_credentials(&self, key: &str, credentials: Option<&(String, String)>) {
        if let Ok(mut kept) = self.deletion_credentials.lock() {
            match credentials {
                Some(credentials) => kept.insert(key.to_owned(), credentials.clone()),
                None => kept.remove(key),
            };
        }
    }

    /// The SASL credentials to delete a store's topics with: from its Secret, else (the Secret is
    /// gone, as in a namespace deletion) the ones kept from its last reconcile.
    async fn deletion_credentials(
        &self,
        key: &str,
        namespace: &str,
        spec: &PlamatioStoreSpec,
    ) -> Result<Option<(String, String)>> {
        match resolve_kafka_credentials(&self.client, namespace, spec).await {
            Err(error @ Error::SecretNotFound { .. }) => {
                let kept = self
                    .deletion_credentials
                    .lock()
                    .ok()
                    .and_then(|kept| kept.get(key).cloned());
                match kept {
                    Some(credentials) => {
                        info!(%error, "Kafka credentials Secret gone; using the ones kept");
                        Ok(Some(credentials))
                    }
                    None => Err(error),
                }
            }
            other => other,
        }
    }

    /// Whether topics found ready for `fingerprint` are recent enough to trust without Kafka.
    fn topics_recently_ready(&self, key: &str, fingerprint: &str) -> bool {
        self.last_ready_topics.lock().is_ok_and(|checks| {
            checks.get(key).is_some_and(|(checked, at)| {
                checked == fingerprint && at.elapsed() < self.settings.topic_resync_interval
            })
        })
    }

    fn record_topic_check(&self, key: &str, fingerprint: String, all_ready: bool) {
        if let Ok(mut checks) = self.last_ready_topics.lock() {
            if all_ready {
                checks.insert(key.to_owned(), (fingerprint, Instant::now()));
            } else {
                checks.remove(key);
            }
        }
    }

    /// Whether this reconcile re-applies every child, changed or not: once per
    /// `drift_repair_interval` per store, so an edit by hand or a mutating webhook is undone by the
    /// next resync while reconciles triggered by status changes stay read-only.
    /// The clock of a store starts when this operator first sees it, so a restart does not re-apply
    /// every child of every store at once.
    pub fn drift_repair_due(&self, key: &str) -> bool {
        match self.last_drift_repair.lock() {
            Ok(mut repairs) => match repairs.get(key) {
                Some(last) => last.elapsed() >= self.settings.drift_repair_interval,
                None => {
                    repairs.insert(key.to_owned(), Instant::now());
                    false
                }
            },
            Err(_) => true,
        }
    }

    fn drift_repaired(&self, key: &str) {
        if let Ok(mut repairs) = self.last_drift_repair.lock() {
            repairs.insert(key.to_owned(), Instant::now());
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
            note: Some(event_note(note)),
            action: action.to_owned(),
            secondary: None,
        };
        match self.recorder.publish(&event, &store.object_ref(&())).await {
            Ok(()) => self.metrics.wrote("event"),
            Err(error) => warn!(%error, reason, "could not record event"),
        }
    }
}

/// Longest Event note the API server accepts (events.k8s.io/v1 `note`: 1 KiB).
pub const MAX_EVENT_NOTE_BYTES: usize = 1024;

/// The note cut to what the API server accepts, at a character boundary and marked as cut (a
/// server's error message can be longer, and an Event refused for its length says nothing).
pub fn event_note(note: String) -> String {
    cut_to(note, MAX_EVENT_NOTE_BYTES)
}

fn store_key(identity: &StoreIdentity) -> String {
    format!("{}/{}", identity.namespace, identity.name)
}

fn has_finalizer(store: &PlamatioStore) -> bool {
    store.finalizers().iter().any(|f| f == TOPICS_FINALIZER)
}

/// Merge patches (finalizers, status) carry the operator's field manager too, so `managedFields`
/// names it for every field it writes.
fn merge_patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    }
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
        &merge_patch_params(),
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
        &merge_patch_params(),
        &Patch::Merge(&patch),
    )
    .await?;
    ctx.metrics.wrote("status");
    debug!("status updated");
    Ok(true)
}

/// How a failure shows on the store's status (see [`blocked_status`], [`apply_failed_status`]).
type FailureStatus =
    fn(Option<&PlamatioStoreStatus>, Option<i64>, &str, &str, &Time) -> PlamatioStoreStatus;

/// Records a failure on the store: the status `to_status` makes of the error's reason and message,
/// and a Warning Event (`action`) when that status is new.
async fn report_failure(
    api: &Api<PlamatioStore>,
    store: &PlamatioStore,
    ctx: &Context,
    error: &Error,
    action: &str,
    now: &Time,
    to_status: FailureStatus,
) -> Result<()> {
    let message = error.to_string();
    let status = to_status(
        store.status.as_ref(),
        store.metadata.generation,
        error.metric_label(),
        &message,
        now,
    );
    if patch_status_if_changed(api, store, status, ctx).await? {
        ctx.publish(
            store,
            EventType::Warning,
            error.metric_label(),
            action,
            message,
        )
        .await;
    }
    Ok(())
}

/// Records a reconcile that stopped before writing any child: `Degraded` with the error's reason and
/// message, and a Warning Event when that status is new.
async fn report_blocked(
    api: &Api<PlamatioStore>,
    store: &PlamatioStore,
    ctx: &Context,
    error: &Error,
    action: &str,
    now: &Time,
) -> Result<()> {
    report_failure(api, store, ctx, error, action, now, blocked_status).await
}

/// Records a child the API server refused: `Degraded` with the server's reason and message, and a
/// Warning Event when that status is new (the error itself goes to the backoff).
async fn report_apply_failure(
    api: &Api<PlamatioStore>,
    store: &PlamatioStore,
    ctx: &Context,
    error: &Error,
    now: &Time,
) -> Result<()> {
    report_failure(api, store, ctx, error, "Apply", now, apply_failed_status).await
}

/// Reconciles one store, as a pipeline of named stages: deletion or pause → finalizer → name →
/// Secrets → observe → build → apply → prune → topics → status → events → next action. Writes
/// happen only where the observed state differs from the wanted one.
#[instrument(skip(store, ctx), fields(store = %store.name_any(), namespace = store.namespace().unwrap_or_default()))]
pub async fn reconcile(store: Arc<PlamatioStore>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let pass = Pass::new(&store, &ctx)?;
    if store.metadata.deletion_timestamp.is_some() {
        return handle_deletion(&store, &pass.identity, &pass.api, &ctx).await;
    }
    if store.spec.paused {
        return pass.pause().await;
    }
    pass.sync_finalizer().await?;
    if let Some(action) = pass.refuse_invalid_name().await? {
        return Ok(action);
    }
    let secrets = pass.resolve_secrets().await?;
    let mut observed = pass.observe().await?;
    let children = pass.build(&secrets, &observed)?;
    let migration = migration_of(&children, &observed);
    let migration_retry = pass.retry_failed_migration(&migration, &observed).await?;
    let applied = pass.apply(&children, &migration, &mut observed).await?;
    let pruned = pass.prune(&children, &observed).await?;
    let kafka = pass.reconcile_topics(&secrets).await;
    let status_changed = pass
        .write_status(&observed, &migration, &kafka, &applied)
        .await?;
    pass.publish_events(&applied, &pruned, &kafka, &migration, status_changed)
        .await;
    let retry = match (&applied.rollout_queued, migration_retry) {
        (Some(_), retry) => Some(retry.map_or(ctx.settings.rollout_queue_recheck, |retry| {
            retry.min(ctx.settings.rollout_queue_recheck)
        })),
        (None, retry) => retry,
    };
    Ok(pass.next_action(&kafka, retry))
}

/// One reconcile of one store: what every stage reads.
struct Pass<'a> {
    store: &'a PlamatioStore,
    ctx: &'a Context,
    identity: StoreIdentity,
    api: Api<PlamatioStore>,
    now: Time,
    key: String,
}

/// What the apply stage wrote: children applied for a new desired state, and children whose hash
/// matched but that the server changed back (drift).
#[derive(Default)]
struct AppliedChildren {
    applied: Vec<String>,
    repaired: Vec<String>,
    /// Why the API Deployment's new pod template waits (every rollout slot is taken).
    rollout_queued: Option<String>,
}

/// The migration the built children ask for, as observed.
fn migration_of(children: &[Child], observed: &ObservedChildren) -> MigrationObservation {
    match children.iter().find(|c| c.kind == ChildKind::Job) {
        None => MigrationObservation::Manual,
        Some(job) => MigrationObservation::of_job(
            &job.name,
            observed.typed::<Job>(ChildKind::Job, &job.name).as_ref(),
        ),
    }
}

impl<'a> Pass<'a> {
    fn new(store: &'a PlamatioStore, ctx: &'a Context) -> Result<Pass<'a>> {
        let identity = StoreIdentity::of(store)?;
        Ok(Pass {
            store,
            ctx,
            api: Api::namespaced(ctx.client.clone(), &identity.namespace),
            now: Time(Timestamp::now()),
            key: store_key(&identity),
            identity,
        })
    }

    /// A paused store: only the `Paused` condition moves.
    async fn pause(&self) -> Result<Action> {
        self.ctx.release_rollout_slot(&self.key);
        let status = paused_status(
            self.store.status.as_ref(),
            self.store.metadata.generation,
            &self.now,
        );
        if patch_status_if_changed(&self.api, self.store, status, self.ctx).await? {
            self.ctx
                .publish(
                    self.store,
                    EventType::Normal,
                    "Paused",
                    "Pause",
                    "reconciliation paused".to_owned(),
                )
                .await;
        }
        Ok(Action::await_change())
    }

    /// The topics finalizer exactly while `deletionPolicy: Delete` needs it.
    async fn sync_finalizer(&self) -> Result<()> {
        let wants_finalizer = self.store.spec.deletion_policy() == DeletionPolicy::Delete;
        if wants_finalizer == has_finalizer(self.store) {
            return Ok(());
        }
        let mut finalizers: Vec<String> = self
            .store
            .finalizers()
            .iter()
            .filter(|f| *f != TOPICS_FINALIZER)
            .cloned()
            .collect();
        if wants_finalizer {
            finalizers.push(TOPICS_FINALIZER.to_owned());
        }
        set_finalizers(&self.api, self.store, finalizers, self.ctx).await
    }

    /// A name the CRD would refuse (created under an older CRD) can never get valid children, and
    /// names are immutable: report it once and wait for the store to be deleted.
    async fn refuse_invalid_name(&self) -> Result<Option<Action>> {
        match check_store_name(&self.identity.name) {
            Ok(()) => Ok(None),
            Err(error) => {
                report_blocked(
                    &self.api,
                    self.store,
                    self.ctx,
                    &error,
                    "ValidateName",
                    &self.now,
                )
                .await?;
                Ok(Some(Action::await_change()))
            }
        }
    }

    /// Every referenced Secret; a missing one stops everything before any child is written.
    async fn resolve_secrets(&self) -> Result<ResolvedSecrets> {
        match resolve_secrets(&self.ctx.client, &self.identity.namespace, &self.store.spec).await {
            Ok(secrets) => {
                let for_deletion = (self.store.spec.deletion_policy() == DeletionPolicy::Delete)
                    .then_some(secrets.kafka_credentials.as_ref())
                    .flatten();
                self.ctx.keep_deletion_credentials(&self.key, for_deletion);
                Ok(secrets)
            }
            Err(
                error @ (Error::SecretNotFound { .. }
                | Error::SecretKeyNotFound { .. }
                | Error::InvalidSecret { .. }),
            ) => {
                report_blocked(
                    &self.api,
                    self.store,
                    self.ctx,
                    &error,
                    "ResolveSecrets",
                    &self.now,
                )
                .await?;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// The store's children from the watches' caches (no list call).
    async fn observe(&self) -> Result<ObservedChildren> {
        self.ctx
            .children
            .children_of(&self.identity.namespace, &self.identity.name)
            .await
    }

    /// The children the spec asks for, given the live replica count and its owners.
    fn build(&self, secrets: &ResolvedSecrets, observed: &ObservedChildren) -> Result<Vec<Child>> {
        let live = LiveState {
            api_replicas: observed
                .typed::<Deployment>(ChildKind::Deployment, &self.identity.api_name())
                .as_ref()
                .and_then(LiveReplicas::of),
        };
        build_children(self.store, secrets, &self.ctx.settings.build, &live)
    }

    /// Applies, in order, the children whose hash changed — every child when drift repair is due.
    /// The API Deployment waits for its schema: until the migration Job succeeds the running
    /// Deployment (if any) is neither rolled nor pruned. A refusal degrades the store.
    async fn apply(
        &self,
        children: &[Child],
        migration: &MigrationObservation,
        observed: &mut ObservedChildren,
    ) -> Result<AppliedChildren> {
        let hold_deployment = !migration.allows_rollout();
        let api_name = self.identity.api_name();
        let repair_drift = self.ctx.drift_repair_due(&self.key);
        let mut outcome = AppliedChildren::default();
        for child in children {
            if hold_deployment && child.kind == ChildKind::Deployment && child.name == api_name {
                continue;
            }
            let existing = observed.get(child.kind, &child.name);
            // A Job's template is immutable and the Job is named by version: once it exists it
            // has run (or is running) for exactly this version.
            if child.kind == ChildKind::Job && existing.is_some() {
                continue;
            }
            let up_to_date = is_up_to_date(child, existing);
            if up_to_date && !repair_drift {
                continue;
            }
            if child.kind == ChildKind::Deployment
                && child.name == api_name
                && let Some(existing) = existing
                && changes_pod_template(child, existing)
                && let Err(rolling) = self.ctx.take_rollout_slot(&self.key)
            {
                outcome.rollout_queued = Some(format!(
                    "a new API pod template waits for a rollout slot ({rolling} of {} stores \
                     rolling; operator.maxConcurrentRollouts)",
                    self.ctx.settings.max_concurrent_rollouts
                ));
                continue;
            }
            let result = match apply_child(&self.ctx.client, &self.identity.namespace, child).await
            {
                Ok(result) => result,
                Err(error) => {
                    report_apply_failure(&self.api, self.store, self.ctx, &error, &self.now)
                        .await?;
                    return Err(error);
                }
            };
            let name = format!("{}/{}", child.kind.as_str(), child.name);
            match (apply_changed(existing, &result), up_to_date) {
                (false, _) => self.ctx.metrics.unchanged_applies.inc(),
                (true, false) => {
                    self.ctx.metrics.wrote("apply");
                    outcome.applied.push(name);
                }
                // Its hash matched, yet the server changed it: someone had edited a field we own.
                (true, true) => {
                    self.ctx.metrics.wrote("apply");
                    outcome.repaired.push(name);
                }
            }
            observed.insert(child.kind, result);
        }
        if repair_drift {
            self.ctx.drift_repaired(&self.key);
        }
        Ok(outcome)
    }

    /// Deletes the children the spec no longer asks for (never a held API Deployment).
    async fn prune(
        &self,
        children: &[Child],
        observed: &ObservedChildren,
    ) -> Result<Vec<(ChildKind, String)>> {
        let keep: BTreeSet<(ChildKind, String)> = children
            .iter()
            .map(|c| (c.kind, c.name.clone()))
            .chain(std::iter::once((
                ChildKind::Deployment,
                self.identity.api_name(),
            )))
            .collect();
        let pruned = prune_children(
            &self.ctx.client,
            &self.identity.namespace,
            observed,
            &keep,
            self.store.metadata.uid.as_deref(),
        )
        .await?;
        for _ in &pruned {
            self.ctx.metrics.wrote("delete");
        }
        Ok(pruned)
    }

    /// Kafka topics; the API keeps serving without them (its outbox buffers events). Kafka is asked
    /// only when the last check is old, failed, or was made for another Kafka spec or credentials.
    async fn reconcile_topics(&self, secrets: &ResolvedSecrets) -> KafkaObservation {
        let desired_topics = self.store.spec.desired_topics();
        let Some(connection) = KafkaConnection::for_spec(
            &self.store.spec,
            secrets.kafka_credentials.clone(),
            self.ctx.settings.kafka_timeout,
        ) else {
            return KafkaObservation::NotConfigured;
        };
        let fingerprint = hex_sha256(
            serde_json::json!([self.store.spec.kafka, secrets.kafka_credentials])
                .to_string()
                .as_bytes(),
        );
        if self.ctx.topics_recently_ready(&self.key, &fingerprint)
            && let Some(previous) = self.previous_ready_topics()
        {
            return previous;
        }
        match reconcile_topics(&self.ctx.kafka_admins, &connection, &desired_topics).await {
            Ok(report) => {
                self.ctx
                    .record_topic_check(&self.key, fingerprint, report.all_ready());
                KafkaObservation::Checked(report)
            }
            Err(error) => {
                warn!(%error, "Kafka topics not reconciled");
                self.ctx.record_topic_check(&self.key, fingerprint, false);
                KafkaObservation::Unreachable {
                    message: error.to_string(),
                    topics: desired_topics.iter().map(|t| t.name.clone()).collect(),
                }
            }
        }
    }

    /// What the status says of topics found ready, when it says so.
    fn previous_ready_topics(&self) -> Option<KafkaObservation> {
        let status = self.store.status.as_ref()?;
        let condition = find_condition(status, KAFKA_TOPICS_READY)?;
        (condition.status == "True" && condition.reason == "TopicsReady").then(|| {
            KafkaObservation::RecentlyReady {
                message: condition.message.clone(),
                topics: status.topics.clone(),
            }
        })
    }

    /// The status computed from what was observed, written when it changed.
    async fn write_status(
        &self,
        observed: &ObservedChildren,
        migration: &MigrationObservation,
        kafka: &KafkaObservation,
        applied: &AppliedChildren,
    ) -> Result<bool> {
        let spec = &self.store.spec;
        let deployment = observed
            .typed::<Deployment>(ChildKind::Deployment, &self.identity.api_name())
            .map(|d| DeploymentObservation::of(&d));
        if applied.rollout_queued.is_none() && deployment.as_ref().is_some_and(|d| d.rolled_out) {
            self.ctx.release_rollout_slot(&self.key);
        }
        let observation = Observation {
            generation: self.store.metadata.generation,
            endpoint: self.identity.endpoint(),
            migration: migration.clone(),
            rollout_queued: applied.rollout_queued.clone(),
            deployment,
            agent: spec.agent_enabled().then(|| {
                observed
                    .typed::<Deployment>(ChildKind::Deployment, &self.identity.agent_name())
                    .map(|d| DeploymentObservation::of(&d))
                    .unwrap_or_default()
            }),
            redis_configured: spec
                .cache
                .as_ref()
                .is_some_and(|c| c.url_secret_ref.is_some()),
            kafka: kafka.clone(),
        };
        let status = observed_status(self.store.status.as_ref(), &observation, &self.now);
        patch_status_if_changed(&self.api, self.store, status, self.ctx).await
    }

    /// Events for what changed.
    async fn publish_events(
        &self,
        applied: &AppliedChildren,
        pruned: &[(ChildKind, String)],
        kafka: &KafkaObservation,
        migration: &MigrationObservation,
        status_changed: bool,
    ) {
        let publish = |type_, reason, action, note: String| {
            self.ctx.publish(self.store, type_, reason, action, note)
        };
        if !applied.applied.is_empty() {
            info!(children = applied.applied.len(), "applied children");
            let note = format!("applied {}", applied.applied.join(", "));
            publish(EventType::Normal, "Applied", "Apply", note).await;
        }
        if !applied.repaired.is_empty() {
            info!(
                children = applied.repaired.len(),
                "repaired drifted children"
            );
            let note = format!(
                "re-applied {} (changed outside the operator)",
                applied.repaired.join(", ")
            );
            publish(EventType::Normal, "DriftRepaired", "Apply", note).await;
        }
        if let Some(queued) = &applied.rollout_queued
            && status_changed
        {
            publish(
                EventType::Normal,
                "RolloutQueued",
                "Rollout",
                queued.clone(),
            )
            .await;
        }
        if !pruned.is_empty() {
            let names: Vec<String> = pruned
                .iter()
                .map(|(k, n)| format!("{}/{n}", k.as_str()))
                .collect();
            let note = format!("deleted {}", names.join(", "));
            publish(EventType::Normal, "Pruned", "Prune", note).await;
        }
        match kafka {
            KafkaObservation::Checked(report) if report.changed_anything() => {
                let note = format!(
                    "created {:?}, raised partitions of {:?}, reconfigured {:?}",
                    report.created, report.grown, report.reconfigured
                );
                publish(EventType::Normal, "TopicsUpdated", "ReconcileTopics", note).await;
            }
            KafkaObservation::Unreachable { message, .. } if status_changed => {
                let note = message.clone();
                publish(
                    EventType::Warning,
                    "KafkaUnavailable",
                    "ReconcileTopics",
                    note,
                )
                .await;
            }
            _ => {}
        }
        if let MigrationObservation::Failed { job } = migration
            && status_changed
        {
            let note = format!("migration Job {job} failed");
            publish(EventType::Warning, "MigrationFailed", "Migrate", note).await;
        }
    }

    /// A failed migration Job is deleted once its backoff has passed (see
    /// [`migration_retry_wait`]), so the next reconcile runs it again; until then the store stays
    /// Degraded/MigrationFailed. Returns when to come back.
    async fn retry_failed_migration(
        &self,
        migration: &MigrationObservation,
        observed: &ObservedChildren,
    ) -> Result<Option<Duration>> {
        let MigrationObservation::Failed { job: name } = migration else {
            if matches!(migration, MigrationObservation::Complete { .. }) {
                self.ctx.forget_migration_failures(&self.key);
            }
            return Ok(None);
        };
        let Some(job) = observed.typed::<Job>(ChildKind::Job, name) else {
            return Ok(None);
        };
        let failures = self
            .ctx
            .count_migration_failure(&self.key, job.metadata.uid.as_deref().unwrap_or(name));
        let now = Timestamp::now();
        let failed = failed_at(&job).unwrap_or(now);
        if let Some(wait) = migration_retry_wait(failures, failed, now) {
            return Ok(Some(wait));
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match Api::<Job>::namespaced(self.ctx.client.clone(), &self.identity.namespace)
            .delete(name, &params)
            .await
        {
            Ok(_) => self.ctx.metrics.wrote("delete"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        let note = format!(
            "deleted migration Job {name} after {failures} failure(s) in a row; it runs again"
        );
        self.ctx
            .publish(
                self.store,
                EventType::Normal,
                "MigrationRetry",
                "Migrate",
                note,
            )
            .await;
        Ok(Some(Duration::from_secs(1)))
    }

    /// Back off while Kafka is unreachable, else come back at the resync interval (or sooner, for
    /// a migration to retry).
    fn next_action(&self, kafka: &KafkaObservation, migration_retry: Option<Duration>) -> Action {
        if matches!(kafka, KafkaObservation::Unreachable { .. }) {
            let backoff = self.ctx.next_backoff(&self.key);
            return Action::requeue(migration_retry.map_or(backoff, |retry| retry.min(backoff)));
        }
        self.ctx.reset_backoff(&self.key);
        let resync = self.ctx.settings.resync_interval;
        Action::requeue(migration_retry.map_or(resync, |retry| retry.min(resync)))
    }
}

/// Every store this operator watches (what a deletion must not take topics from).
async fn watched_stores(ctx: &Context) -> Result<Vec<PlamatioStore>> {
    let namespaces = &ctx.settings.watch_namespaces;
    if namespaces.is_empty() {
        let stores = Api::<PlamatioStore>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?;
        return Ok(stores.items);
    }
    let mut stores = Vec::new();
    for namespace in namespaces {
        let api = Api::<PlamatioStore>::namespaced(ctx.client.clone(), namespace);
        stores.extend(api.list(&ListParams::default()).await?.items);
    }
    Ok(stores)
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
        ctx.forget_store(&store_key(identity));
        return Ok(Action::await_change());
    }
    let remaining: Vec<String> = store
        .finalizers()
        .iter()
        .filter(|f| *f != TOPICS_FINALIZER)
        .cloned()
        .collect();
    let outcome: Result<Vec<String>> = async {
        let all_stores = watched_stores(ctx).await?;
        let topics = topics_to_delete(store, &all_stores);
        if topics.is_empty() {
            return Ok(topics);
        }
        let credentials = ctx
            .deletion_credentials(&store_key(identity), &identity.namespace, &store.spec)
            .await?;
        match KafkaConnection::for_spec(&store.spec, credentials, ctx.settings.kafka_timeout) {
            Some(connection) if store.spec.deletion_policy() == DeletionPolicy::Delete => {
                delete_topics(&ctx.kafka_admins, &connection, &topics).await?;
                Ok(topics)
            }
            _ => Ok(Vec::new()),
        }
    }
    .await;
    match outcome {
        Ok(topics) => {
            set_finalizers(api, store, remaining, ctx).await?;
            ctx.forget_store(&store_key(identity));
            let note = if topics.is_empty() {
                "no topic deleted: the store created none that no other store asks for".to_owned()
            } else {
                format!("deleted topics {topics:?}")
            };
            ctx.publish(store, EventType::Normal, "TopicsDeleted", "Delete", note)
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
                    format!("topics not deleted after {waited}s: {error}"),
                )
                .await;
                set_finalizers(api, store, remaining, ctx).await?;
                ctx.forget_store(&store_key(identity));
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

/// Stores in the Secret's namespace that reference it by name (the watch sees only the Secret's
/// metadata: its name, namespace and resourceVersion are all a rotation needs).
pub fn stores_referencing(
    reader: &kube::runtime::reflector::Store<PlamatioStore>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<PlamatioStore>> {
    let name = secret.name_any();
    let namespace = secret.namespace();
    reader
        .state_filter(|store| {
            store.namespace() == namespace && referenced_secret_names(&store.spec).contains(&name)
        })
        .iter()
        .map(|store| ObjectRef::from_obj(store.as_ref()))
        .collect()
}

/// How often memory kept per store is swept of stores that no longer exist (a store deleted
/// without a finalizer is never reconciled again).
const FORGET_DELETED_STORES_EVERY: Duration = Duration::from_secs(60);

/// Runs the controller until `shutdown` resolves: watches stores, their children and referenced
/// Secrets — cluster-wide, or in each of `settings.watch_namespaces` (one controller per namespace,
/// sharing the context, for the namespace-scoped install whose RBAC is a Role per namespace).
pub async fn run(
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let namespaces = context.settings.watch_namespaces.clone();
    if namespaces.is_empty() {
        run_in(Arc::clone(&context), None, shutdown).await;
    } else {
        futures::future::join_all(
            namespaces
                .into_iter()
                .map(|namespace| run_in(Arc::clone(&context), Some(namespace), shutdown.clone())),
        )
        .await;
    }
    info!("controller stopped");
}

/// `Api::all` cluster-wide, or `Api::namespaced` in one watched namespace.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn run_in(
    context: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let scope = namespace.as_deref();
    let metrics = Arc::clone(&context.metrics);
    let controller = Controller::new(
        scoped::<PlamatioStore>(&client, scope),
        watcher::Config::default(),
    );
    let reader = controller.store();
    info!(namespace = scope.unwrap_or("(all)"), "watching stores");
    let Some(writers) = context.children.take_writers(scope) else {
        warn!("child caches already fed by another controller; not starting");
        return;
    };
    let mut controller = controller;
    for (kind, writer) in writers {
        controller = controller.owns_stream_with(
            child_watch(&client, scope, kind, writer),
            kind.api_resource(),
        );
    }
    let sweep = forget_deleted_stores(Arc::clone(&context), controller.store(), namespace.clone());
    let sweep = tokio::spawn(sweep);
    controller
        // `PartialObjectMeta`: a metadata-only watch, so Secret values never enter the operator's
        // memory through it (they are read by name, only for the stores that reference them).
        .watches(
            scoped::<PartialObjectMeta<Secret>>(&client, scope),
            watcher::Config::default(),
            move |secret| stores_referencing(&reader, &secret),
        )
        .with_config(Config::default().concurrency(context.settings.reconcile_concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            let metrics = Arc::clone(&metrics);
            async move {
                match result {
                    Ok((store, _)) => {
                        metrics.reconciled();
                        debug!(store = %store.name, "reconciled");
                    }
                    Err(kube::runtime::controller::Error::QueueError(error)) => {
                        warn!(%error, "watch failed; it retries");
                        metrics.watch_failed(error.to_string());
                    }
                    Err(kube::runtime::controller::Error::ReconcilerFailed(error, store)) => {
                        metrics.reconciled();
                        debug!(%error, store = %store.name, "reconcile error");
                    }
                    Err(error) => debug!(%error, "reconcile error"),
                }
            }
        })
        .await;
    sweep.abort();
}

/// The watch of one child kind: children of any store (by the managed-by label), kept in the
/// kind's cache in the form [`cached_form`] gives it.
fn child_watch(
    client: &Client,
    namespace: Option<&str>,
    kind: ChildKind,
    writer: Writer<DynamicObject>,
) -> impl futures::Stream<Item = std::result::Result<DynamicObject, watcher::Error>> + Send + 'static
{
    let resource = kind.api_resource();
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    watcher(api, config)
        .default_backoff()
        .modify(move |object| cached_form(kind, object))
        .reflect(writer)
        .touched_objects()
}

/// Every minute, forgets what is kept in memory for stores the watch no longer has.
async fn forget_deleted_stores(
    context: Arc<Context>,
    stores: kube::runtime::reflector::Store<PlamatioStore>,
    namespace: Option<String>,
) {
    let mut every = tokio::time::interval(FORGET_DELETED_STORES_EVERY);
    loop {
        every.tick().await;
        if stores.wait_until_ready().await.is_err() {
            return;
        }
        let live: BTreeSet<String> = stores
            .state()
            .iter()
            .map(|store| {
                format!(
                    "{}/{}",
                    store.namespace().unwrap_or_default(),
                    store.name_any()
                )
            })
            .collect();
        context.retain_stores(|key| {
            let in_scope = namespace
                .as_ref()
                .is_none_or(|namespace| key.starts_with(&format!("{namespace}/")));
            !in_scope || live.contains(key)
        });
    }
}
