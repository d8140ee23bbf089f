//! Status of a store computed from what a reconcile observed: the conditions (with observedGeneration
//! and transition times that move only when a condition's status does), replicas, endpoint, topics and
//! migration version.

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
        DeploymentObservation {
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            rolled_out: current_generation && updated >= desired && available >= desired,
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

/// Status of a store after a full reconcile.
pub fn observed_status(
    previous: Option<&PlamatioStoreStatus>,
    observation: &Observation,
    now: &Time,
) -> PlamatioStoreStatus {
    let generation = observation.generation;
    let make = |type_: &str, status: &str, reason: &str, message: String| {
        condition(type_, status, reason, message, generation, now)
    };
    let mut conditions = Vec::new();
    let mut degraded: Option<(&str, String)> = None;

    let database = match &observation.migration {
        MigrationObservation::Manual => make(
            DATABASE_READY,
            "Unknown",
            "MigrationsManual",
            "migrations: manual; the operator does not run them".to_owned(),
        ),
        MigrationObservation::Complete { version } => make(
            DATABASE_READY,
            "True",
            "MigrationsApplied",
            format!("migrations of schema version {version} applied"),
        ),
        MigrationObservation::Running { job } => make(
            DATABASE_READY,
            "False",
            "MigrationRunning",
            format!("migration Job {job} is running"),
        ),
        MigrationObservation::Failed { job } => {
            degraded = Some(("MigrationFailed", format!("migration Job {job} failed")));
            make(
                DATABASE_READY,
                "False",
                "MigrationFailed",
                format!("migration Job {job} failed"),
            )
        }
    };
    conditions.push(database);

    let (ready, progressing) = match (&observation.migration, &observation.deployment) {
        (MigrationObservation::Failed { job }, _) => (
            make(
                READY,
                "False",
                "MigrationFailed",
                format!("migration Job {job} failed"),
            ),
            make(
                PROGRESSING,
                "False",
                "MigrationFailed",
                format!("migration Job {job} failed"),
            ),
        ),
        (MigrationObservation::Running { job }, _) => (
            make(
                READY,
                "False",
                "MigrationRunning",
                format!("waiting for migration Job {job}"),
            ),
            make(
                PROGRESSING,
                "True",
                "MigrationRunning",
                format!("migration Job {job} is running"),
            ),
        ),
        (_, None) => (
            make(
                READY,
                "False",
                "DeploymentPending",
                "the API Deployment does not exist yet".to_owned(),
            ),
            make(
                PROGRESSING,
                "True",
                "DeploymentPending",
                "the API Deployment is being created".to_owned(),
            ),
        ),
        (_, Some(deployment)) if deployment.rolled_out => (
            make(
                READY,
                "True",
                "StoreReady",
                format!(
                    "{}/{} API replicas ready at {}",
                    deployment.ready, deployment.desired, observation.endpoint
                ),
            ),
            make(
                PROGRESSING,
                "False",
                "RolloutComplete",
                "the API Deployment is rolled out".to_owned(),
            ),
        ),
        (_, Some(deployment)) => (
            make(
                READY,
                "False",
                "RolloutInProgress",
                format!(
                    "{}/{} API replicas ready",
                    deployment.ready, deployment.desired
                ),
            ),
            make(
                PROGRESSING,
                "True",
                "RolloutInProgress",
                "the API Deployment is rolling out".to_owned(),
            ),
        ),
    };
    conditions.push(ready);
    conditions.push(progressing);

    conditions.push(if observation.redis_configured {
        make(
            CACHE_READY,
            "True",
            "RedisConfigured",
            "the API caches in Redis".to_owned(),
        )
    } else {
        make(
            CACHE_READY,
            "True",
            "InProcessCache",
            "the API caches in process".to_owned(),
        )
    });

    let mut topics = Vec::new();
    let kafka = match &observation.kafka {
        KafkaObservation::NotConfigured => make(
            KAFKA_TOPICS_READY,
            "True",
            "KafkaNotConfigured",
            "no Kafka configured; events stay in the outbox".to_owned(),
        ),
        KafkaObservation::Checked(report) => {
            topics = report.topics.clone();
            if report.all_ready() {
                make(
                    KAFKA_TOPICS_READY,
                    "True",
                    "TopicsReady",
                    format!("{} topics ready", report.topics.len()),
                )
            } else {
                let message = report.first_error().unwrap_or_default();
                degraded.get_or_insert(("KafkaTopicsNotReady", message.clone()));
                make(KAFKA_TOPICS_READY, "False", "TopicsNotReady", message)
            }
        }
        KafkaObservation::Unreachable {
            message,
            topics: names,
        } => {
            topics = names
                .iter()
                .map(|name| TopicStatus {
                    name: name.clone(),
                    partitions: None,
                    state: TopicState::Error,
                    message: Some("Kafka unreachable".to_owned()),
                })
                .collect();
            degraded.get_or_insert(("KafkaUnavailable", message.clone()));
            make(
                KAFKA_TOPICS_READY,
                "False",
                "KafkaUnavailable",
                message.clone(),
            )
        }
    };
    conditions.push(kafka);

    conditions.push(match &observation.agent {
        None => make(
            OBSERVABILITY_READY,
            "True",
            "NotConfigured",
            "no observability sink configured".to_owned(),
        ),
        Some(agent) if agent.rolled_out => make(
            OBSERVABILITY_READY,
            "True",
            "AgentReady",
            "the Alloy agent is running".to_owned(),
        ),
        Some(_) => make(
            OBSERVABILITY_READY,
            "False",
            "AgentNotReady",
            "the Alloy agent is not available yet".to_owned(),
        ),
    });

    conditions.push(match degraded {
        Some((reason, message)) => make(DEGRADED, "True", reason, message),
        None => make(DEGRADED, "False", "AsExpected", String::new()),
    });
    conditions.push(make(PAUSED, "False", "Reconciling", String::new()));

    let previous_conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let migration_version = match &observation.migration {
        MigrationObservation::Complete { version } => Some(version.clone()),
        _ => previous.and_then(|p| p.migration_version.clone()),
    };
    PlamatioStoreStatus {
        observed_generation: generation,
        conditions: merge_conditions(&previous_conditions, conditions),
        replicas: observation.deployment.as_ref().map(|d| d.replicas),
        ready_replicas: observation.deployment.as_ref().map(|d| d.ready),
        endpoint: Some(observation.endpoint.clone()),
        topics,
        migration_version,
    }
}

/// The condition of a type, if present.
pub fn find_condition<'a>(status: &'a PlamatioStoreStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}
