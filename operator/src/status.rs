//! Status of a store computed from what a reconcile observed: the conditions (with observedGeneration
//! and transition times that move only when a condition's status does), replicas, endpoint, topics and
//! migration version.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::build::migration_job::SCHEMA_VERSION_ANNOTATION;
use crate::crd::{PlamatioStoreStatus, TopicState, TopicStatus};
use crate::kafka::TopicReport;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const DATABASE_READY: &str = "DatabaseReady";
pub const CACHE_READY: &str = "CacheReady";
pub const KAFKA_TOPICS_READY: &str = "KafkaTopicsReady";
pub const OBSERVABILITY_READY: &str = "ObservabilityReady";
pub const PAUSED: &str = "Paused";

/// Every condition type, in the order the status lists them.
pub const CONDITION_TYPES: [&str; 8] = [
    READY,
    PROGRESSING,
    DEGRADED,
    DATABASE_READY,
    CACHE_READY,
    KAFKA_TOPICS_READY,
    OBSERVABILITY_READY,
    PAUSED,
];

/// State of the migration Job for the current schema version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationObservation {
    /// `migrations: manual`: the operator runs none.
    Manual,
    Running {
        job: String,
    },
    Complete {
        version: String,
    },
    Failed {
        job: String,
    },
}

impl MigrationObservation {
    pub fn of_job(name: &str, job: Option<&Job>) -> MigrationObservation {
        let Some(job) = job else {
            return MigrationObservation::Running {
                job: name.to_owned(),
            };
        };
        let status = job.status.clone().unwrap_or_default();
        let condition_true = |kind: &str| {
            status
                .conditions
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
        };
        if condition_true("Complete") || status.succeeded.unwrap_or(0) > 0 {
            let version = job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SCHEMA_VERSION_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            MigrationObservation::Complete { version }
        } else if condition_true("Failed") {
            MigrationObservation::Failed {
                job: name.to_owned(),
            }
        } else {
            MigrationObservation::Running {
                job: name.to_owned(),
            }
        }
    }

    /// Whether the Deployment may roll (its migrations are done or not the operator's business).
    pub fn allows_rollout(&self) -> bool {
        matches!(
            self,
            MigrationObservation::Manual | MigrationObservation::Complete { .. }
        )
    }
}

/// Availability of a Deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentObservation {
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub rolled_out: bool,
    /// The image of its first container.
    pub image: Option<String>,
}

impl DeploymentObservation {
    pub fn of(deployment: &Deployment) -> DeploymentObservation {
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        let current_generation = match (deployment.metadata.generation, status.observed_generation)
        {
            (Some(generation), Some(observed)) => observed >= generation,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let updated = status.updated_replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        let image = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|pod| pod.containers.first())
            .and_then(|container| container.image.clone());
        DeploymentObservation {
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            rolled_out: current_generation && updated >= desired && available >= desired,
            image,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum KafkaObservation {
    NotConfigured,
    Checked(TopicReport),
    Unreachable {
        message: String,
        topics: Vec<String>,
    },
    /// Not checked this time: every topic was ready at the last check, which is recent and was made
    /// for the same Kafka spec and credentials. Carries what that check reported.
    RecentlyReady {
        message: String,
        topics: Vec<TopicStatus>,
    },
}

/// Everything a full reconcile learned, as input of [`observed_status`].
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub generation: Option<i64>,
    pub endpoint: String,
    pub migration: MigrationObservation,
    /// `None` while the Deployment does not exist yet (e.g. waiting for the migration).
    pub deployment: Option<DeploymentObservation>,
    /// `None` when no agent is configured.
    pub agent: Option<DeploymentObservation>,
    pub redis_configured: bool,
    pub kafka: KafkaObservation,
    /// Why a new API pod template waits for a rollout slot, when it does.
    pub rollout_queued: Option<String>,
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Merges new conditions into the previous ones: a condition whose status did not change keeps its
/// transition time; types not in `updates` keep their previous value.
fn merge_conditions(previous: &[Condition], updates: Vec<Condition>) -> Vec<Condition> {
    let mut merged = Vec::new();
    for type_ in CONDITION_TYPES {
        let old = previous.iter().find(|c| c.type_ == type_);
        match updates.iter().find(|c| c.type_ == type_) {
            Some(new) => {
                let mut new = new.clone();
                if let Some(old) = old
                    && old.status == new.status
                {
                    new.last_transition_time = old.last_transition_time.clone();
                }
                merged.push(new);
            }
            None => {
                if let Some(old) = old {
                    merged.push(old.clone());
                }
            }
        }
    }
    merged
}

/// Status of a paused store: only the `Paused` condition and the observed generation move.
pub fn paused_status(
    previous: Option<&PlamatioStoreStatus>,
    generation: Option<i64>,
    now: &Time,
) -> PlamatioStoreStatus {
    with_conditions(
        previous,
        generation,
        vec![condition(
            PAUSED,
            "True",
            "Paused",
            "spec.paused is true; nothing is reconciled",
            generation,
            now,
        )],
    )
}

/// Status of a store whose reconcile stopped before applying anything (e.g. a missing Secret).
pub fn blocked_status(
    previous: Option<&PlamatioStoreStatus>,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &Time,
) -> PlamatioStoreStatus {
    with_conditions(
        previous,
        generation,
        vec![
            condition(READY, "False", reason, message, generation, now),
            condition(PROGRESSING, "False", reason, message, generation, now),
            condition(DEGRADED, "True", reason, message, generation, now),
            condition(PAUSED, "False", "Reconciling", "", generation, now),
        ],
    )
}

/// Status of a store whose children the API server refused (validation, RBAC, an admission
/// webhook): `Degraded` and not progressing, with the server's reason and message. `Ready` keeps
/// what it was, since the pods already running still serve.
pub fn apply_failed_status(
    previous: Option<&PlamatioStoreStatus>,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &Time,
) -> PlamatioStoreStatus {
    let message = cut_to(message.to_owned(), MAX_CONDITION_MESSAGE_BYTES);
    let mut updates = vec![
        condition(
            PROGRESSING,
            "False",
            reason,
            message.clone(),
            generation,
            now,
        ),
        condition(DEGRADED, "True", reason, message.clone(), generation, now),
        condition(PAUSED, "False", "Reconciling", "", generation, now),
    ];
    let had_ready = previous.is_some_and(|p| p.conditions.iter().any(|c| c.type_ == READY));
    if !had_ready {
        updates.push(condition(READY, "False", reason, message, generation, now));
    }
    with_conditions(previous, generation, updates)
}

/// Longest condition message the API server accepts (metav1.Condition).
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 32768;

/// `message` cut to at most `max_bytes`, at a character boundary and marked as cut.
pub fn cut_to(message: String, max_bytes: usize) -> String {
    if message.len() <= max_bytes {
        return message;
    }
    const MARK: &str = " …";
    let mut end = max_bytes.saturating_sub(MARK.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &message[..end])
}

/// The previous status (or an empty one) at `generation`, with `updates` merged into its conditions.
fn with_conditions(
    previous: Option<&PlamatioStoreStatus>,
    generation: Option<i64>,
    updates: Vec<Condition>,
) -> PlamatioStoreStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.conditions = merge_conditions(&status.conditions, updates);
    status
}

/// A condition without its generation and time, as the per-condition functions compute it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

fn verdict(status: &'static str, reason: &'static str, message: impl Into<String>) -> Verdict {
    Verdict {
        status,
        reason,
        message: message.into(),
    }
}

/// `DatabaseReady`: whether the migrations of the current schema version are applied.
pub fn database_ready(migration: &MigrationObservation) -> Verdict {
    match migration {
        MigrationObservation::Manual => verdict(
            "Unknown",
            "MigrationsManual",
            "migrations: manual; the operator does not run them",
        ),
        MigrationObservation::Complete { version } => verdict(
            "True",
            "MigrationsApplied",
            format!("migrations of schema version {version} applied"),
        ),
        MigrationObservation::Running { job } => verdict(
            "False",
            "MigrationRunning",
            format!("migration Job {job} is running"),
        ),
        MigrationObservation::Failed { job } => verdict(
            "False",
            "MigrationFailed",
            format!("migration Job {job} failed"),
        ),
    }
}

/// `Ready` and `Progressing`: the API's availability, behind its migration.
pub fn ready_and_progressing(
    migration: &MigrationObservation,
    deployment: Option<&DeploymentObservation>,
    endpoint: &str,
) -> (Verdict, Verdict) {
    match (migration, deployment) {
        (MigrationObservation::Failed { job }, _) => (
            verdict(
                "False",
                "MigrationFailed",
                format!("migration Job {job} failed"),
            ),
            verdict(
                "False",
                "MigrationFailed",
                format!("migration Job {job} failed"),
            ),
        ),
        (MigrationObservation::Running { job }, _) => (
            verdict(
                "False",
                "MigrationRunning",
                format!("waiting for migration Job {job}"),
            ),
            verdict(
                "True",
                "MigrationRunning",
                format!("migration Job {job} is running"),
            ),
        ),
        (_, None) => (
            verdict(
                "False",
                "DeploymentPending",
                "the API Deployment does not exist yet",
            ),
            verdict(
                "True",
                "DeploymentPending",
                "the API Deployment is being created",
            ),
        ),
        (_, Some(deployment)) if deployment.rolled_out => (
            verdict(
                "True",
                "StoreReady",
                format!(
                    "{}/{} API replicas ready at {endpoint}",
                    deployment.ready, deployment.desired
                ),
            ),
            verdict(
                "False",
                "RolloutComplete",
                "the API Deployment is rolled out",
            ),
        ),
        (_, Some(deployment)) => (
            verdict(
                "False",
                "RolloutInProgress",
                format!(
                    "{}/{} API replicas ready",
                    deployment.ready, deployment.desired
                ),
            ),
            verdict(
                "True",
                "RolloutInProgress",
                "the API Deployment is rolling out",
            ),
        ),
    }
}

/// `Progressing` of a store whose new pod template waits for a rollout slot: `RolloutQueued` (the
/// running pods keep serving, so `Ready` is left as it is).
pub fn rollout_queued(progressing: Verdict, queued: Option<&str>) -> Verdict {
    match queued {
        Some(message) => verdict("True", "RolloutQueued", message),
        None => progressing,
    }
}

/// `CacheReady`: which cache the API uses.
pub fn cache_ready(redis_configured: bool) -> Verdict {
    if redis_configured {
        verdict("True", "RedisConfigured", "the API caches in Redis")
    } else {
        verdict("True", "InProcessCache", "the API caches in process")
    }
}

/// `KafkaTopicsReady`, with the topics to report in the status.
pub fn kafka_topics_ready(kafka: &KafkaObservation) -> (Verdict, Vec<TopicStatus>) {
    match kafka {
        KafkaObservation::NotConfigured => (
            verdict(
                "True",
                "KafkaNotConfigured",
                "no Kafka configured; events stay in the outbox",
            ),
            Vec::new(),
        ),
        KafkaObservation::Checked(report) if report.all_ready() => (
            verdict(
                "True",
                "TopicsReady",
                format!("{} topics ready", report.topics.len()),
            ),
            report.topics.clone(),
        ),
        KafkaObservation::Checked(report) => (
            verdict(
                "False",
                "TopicsNotReady",
                report.first_error().unwrap_or_default(),
            ),
            report.topics.clone(),
        ),
        KafkaObservation::RecentlyReady { message, topics } => (
            verdict("True", "TopicsReady", message.clone()),
            topics.clone(),
        ),
        KafkaObservation::Unreachable { message, topics } => (
            verdict("False", "KafkaUnavailable", message.clone()),
            topics
                .iter()
                .map(|name| TopicStatus {
                    name: name.clone(),
                    partitions: None,
                    state: TopicState::Error,
                    message: Some("Kafka unreachable".to_owned()),
                })
                .collect(),
        ),
    }
}

/// `ObservabilityReady`: the Alloy agent's availability, when one is configured.
pub fn observability_ready(agent: Option<&DeploymentObservation>) -> Verdict {
    match agent {
        None => verdict("True", "NotConfigured", "no observability sink configured"),
        Some(agent) if agent.rolled_out => {
            verdict("True", "AgentReady", "the Alloy agent is running")
        }
        Some(_) => verdict(
            "False",
            "AgentNotReady",
            "the Alloy agent is not available yet",
        ),
    }
}

/// `Degraded`: the first failure among the migration and the topics (a failed migration first).
pub fn degraded(database: &Verdict, kafka: &Verdict) -> Verdict {
    if database.reason == "MigrationFailed" {
        return verdict("True", "MigrationFailed", database.message.clone());
    }
    match kafka.reason {
        "TopicsNotReady" => verdict("True", "KafkaTopicsNotReady", kafka.message.clone()),
        "KafkaUnavailable" => verdict("True", "KafkaUnavailable", kafka.message.clone()),
        _ => verdict("False", "AsExpected", ""),
    }
}

/// Status of a store after a full reconcile: one function per condition, merged into the previous
/// conditions.
pub fn observed_status(
    previous: Option<&PlamatioStoreStatus>,
    observation: &Observation,
    now: &Time,
) -> PlamatioStoreStatus {
    let generation = observation.generation;
    let make = |type_: &str, verdict: Verdict| {
        condition(
            type_,
            verdict.status,
            verdict.reason,
            verdict.message,
            generation,
            now,
        )
    };
    let database = database_ready(&observation.migration);
    let (ready, progressing) = ready_and_progressing(
        &observation.migration,
        observation.deployment.as_ref(),
        &observation.endpoint,
    );
    let progressing = rollout_queued(progressing, observation.rollout_queued.as_deref());
    let (kafka, topics) = kafka_topics_ready(&observation.kafka);
    let degraded = degraded(&database, &kafka);
    let conditions = vec![
        make(DATABASE_READY, database),
        make(READY, ready),
        make(PROGRESSING, progressing),
        make(CACHE_READY, cache_ready(observation.redis_configured)),
        make(KAFKA_TOPICS_READY, kafka),
        make(
            OBSERVABILITY_READY,
            observability_ready(observation.agent.as_ref()),
        ),
        make(DEGRADED, degraded),
        make(PAUSED, verdict("False", "Reconciling", "")),
    ];

    let previous_conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let migration_version = match &observation.migration {
        MigrationObservation::Complete { version } => Some(version.clone()),
        _ => previous.and_then(|p| p.migration_version.clone()),
    };
    let owned_topics = match &observation.kafka {
        KafkaObservation::Checked(report) => {
            let mut owned: BTreeSet<String> = previous
                .and_then(|p| p.owned_topics.clone())
                .into_iter()
                .flatten()
                .collect();
            owned.extend(report.created.iter().cloned());
            Some(owned.into_iter().collect())
        }
        _ => previous.and_then(|p| p.owned_topics.clone()),
    };
    PlamatioStoreStatus {
        observed_generation: generation,
        conditions: merge_conditions(&previous_conditions, conditions),
        replicas: observation.deployment.as_ref().map(|d| d.replicas),
        ready_replicas: observation.deployment.as_ref().map(|d| d.ready),
        endpoint: Some(observation.endpoint.clone()),
        topics,
        migration_version,
        owned_topics,
        image: observation
            .deployment
            .as_ref()
            .and_then(|d| d.image.clone())
            .or_else(|| previous.and_then(|p| p.image.clone())),
    }
}

/// The condition of a type, if present.
pub fn find_condition<'a>(status: &'a PlamatioStoreStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}
