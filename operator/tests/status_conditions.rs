//! Each status condition as a function of what a reconcile observed, one table per condition.

use plamatio_operator::crd::{TopicState, TopicStatus};
use plamatio_operator::kafka::TopicReport;
use plamatio_operator::status::{
    DeploymentObservation, KafkaObservation, MigrationObservation, Verdict, cache_ready,
    database_ready, degraded, kafka_topics_ready, observability_ready, ready_and_progressing,
    rollout_queued,
};

fn verdict(status: &'static str, reason: &'static str, message: &str) -> Verdict {
    Verdict {
        status,
        reason,
        message: message.to_owned(),
    }
}

fn job(name: &str) -> String {
    name.to_owned()
}

fn deployment(ready: i32, desired: i32, rolled_out: bool) -> DeploymentObservation {
    DeploymentObservation {
        desired,
        replicas: desired,
        ready,
        rolled_out,
        image: None,
    }
}

#[test]
fn database_ready_follows_the_migration() {
    let table = [
        (
            MigrationObservation::Manual,
            verdict(
                "Unknown",
                "MigrationsManual",
                "migrations: manual; the operator does not run them",
            ),
        ),
        (
            MigrationObservation::Complete {
                version: "0.2.0".into(),
            },
            verdict(
                "True",
                "MigrationsApplied",
                "migrations of schema version 0.2.0 applied",
            ),
        ),
        (
            MigrationObservation::Running { job: job("j") },
            verdict("False", "MigrationRunning", "migration Job j is running"),
        ),
        (
            MigrationObservation::Failed { job: job("j") },
            verdict("False", "MigrationFailed", "migration Job j failed"),
        ),
    ];
    for (migration, want) in table {
        assert_eq!(database_ready(&migration), want, "{migration:?}");
    }
}

#[test]
fn ready_and_progressing_follow_the_migration_then_the_rollout() {
    let applied = MigrationObservation::Manual;
    let endpoint = "http://shop-api.shops.svc:80";
    let table = [
        (
            MigrationObservation::Failed { job: job("j") },
            None,
            ("False", "MigrationFailed"),
            ("False", "MigrationFailed"),
        ),
        (
            MigrationObservation::Running { job: job("j") },
            Some(deployment(2, 2, true)),
            ("False", "MigrationRunning"),
            ("True", "MigrationRunning"),
        ),
        (
            applied.clone(),
            None,
            ("False", "DeploymentPending"),
            ("True", "DeploymentPending"),
        ),
        (
            applied.clone(),
            Some(deployment(1, 2, false)),
            ("False", "RolloutInProgress"),
            ("True", "RolloutInProgress"),
        ),
        (
            applied,
            Some(deployment(2, 2, true)),
            ("True", "StoreReady"),
            ("False", "RolloutComplete"),
        ),
    ];
    for (migration, deployment, ready, progressing) in table {
        let (got_ready, got_progressing) =
            ready_and_progressing(&migration, deployment.as_ref(), endpoint);
        assert_eq!(
            (got_ready.status, got_ready.reason),
            ready,
            "{migration:?} {deployment:?}"
        );
        assert_eq!(
            (got_progressing.status, got_progressing.reason),
            progressing,
            "{migration:?} {deployment:?}"
        );
    }
    let (ready, _) = ready_and_progressing(
        &MigrationObservation::Manual,
        Some(&deployment(2, 2, true)),
        endpoint,
    );
    assert_eq!(
        ready.message,
        "2/2 API replicas ready at http://shop-api.shops.svc:80"
    );
}

#[test]
fn cache_ready_names_the_cache() {
    assert_eq!(cache_ready(true).reason, "RedisConfigured");
    assert_eq!(cache_ready(false).reason, "InProcessCache");
    assert_eq!(cache_ready(false).status, "True");
}

fn topic(name: &str, state: TopicState, message: Option<&str>) -> TopicStatus {
    TopicStatus {
        name: name.to_owned(),
        partitions: Some(3),
        state,
        message: message.map(str::to_owned),
    }
}

#[test]
fn kafka_topics_ready_follows_the_topic_report() {
    let ready = TopicReport {
        topics: vec![topic("a", TopicState::Ready, None)],
        ..TopicReport::default()
    };
    let broken = TopicReport {
        topics: vec![
            topic("a", TopicState::Ready, None),
            topic("b", TopicState::Error, Some("alter config failed")),
        ],
        ..TopicReport::default()
    };
    let table = [
        (
            KafkaObservation::NotConfigured,
            ("True", "KafkaNotConfigured"),
            0,
        ),
        (KafkaObservation::Checked(ready), ("True", "TopicsReady"), 1),
        (
            KafkaObservation::Checked(broken),
            ("False", "TopicsNotReady"),
            2,
        ),
        (
            KafkaObservation::Unreachable {
                message: "cannot reach the brokers".into(),
                topics: vec!["a".into(), "b".into(), "c".into()],
            },
            ("False", "KafkaUnavailable"),
            3,
        ),
    ];
    for (kafka, want, topics) in table {
        let (got, reported) = kafka_topics_ready(&kafka);
        assert_eq!((got.status, got.reason), want, "{kafka:?}");
        assert_eq!(reported.len(), topics, "{kafka:?}");
    }
}

#[test]
fn observability_ready_follows_the_agent() {
    let table = [
        (None, ("True", "NotConfigured")),
        (Some(deployment(1, 1, true)), ("True", "AgentReady")),
        (Some(deployment(0, 1, false)), ("False", "AgentNotReady")),
    ];
    for (agent, want) in table {
        let got = observability_ready(agent.as_ref());
        assert_eq!((got.status, got.reason), want, "{agent:?}");
    }
}

#[test]
fn degraded_reports_a_failed_migration_before_the_topics() {
    let failed = verdict("False", "MigrationFailed", "migration Job j failed");
    let applied = verdict("True", "MigrationsApplied", "");
    let unavailable = verdict("False", "KafkaUnavailable", "cannot reach the brokers");
    let not_ready = verdict("False", "TopicsNotReady", "b: alter config failed");
    let topics_ready = verdict("True", "TopicsReady", "5 topics ready");
    let table = [
        (&failed, &unavailable, ("True", "MigrationFailed")),
        (&applied, &unavailable, ("True", "KafkaUnavailable")),
        (&applied, &not_ready, ("True", "KafkaTopicsNotReady")),
        (&applied, &topics_ready, ("False", "AsExpected")),
    ];
    for (database, kafka, want) in table {
        let got = degraded(database, kafka);
        assert_eq!((got.status, got.reason), want, "{database:?} {kafka:?}");
    }
}

#[test]
fn a_queued_rollout_shows_as_progressing_rollout_queued() {
    let rolled_out = verdict(
        "False",
        "RolloutComplete",
        "the API Deployment is rolled out",
    );
    let cases = [
        (None, rolled_out.clone()),
        (
            Some("waits for a rollout slot"),
            verdict("True", "RolloutQueued", "waits for a rollout slot"),
        ),
    ];
    for (queued, expected) in cases {
        assert_eq!(
            rollout_queued(rolled_out.clone(), queued),
            expected,
            "{queued:?}"
        );
    }
}
