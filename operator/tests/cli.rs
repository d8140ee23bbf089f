//! The operator's command line: the tunables that bound its load on the cluster and on Kafka.

use clap::Parser;
use plamatio_operator::cli::{Cli, Command};
use std::time::Duration;

fn settings(args: &[&str]) -> plamatio_operator::controller::Settings {
    let mut argv = vec!["plamatio-operator", "run"];
    argv.extend_from_slice(args);
    match Cli::parse_from(argv).command {
        Some(Command::Run(config)) => config.settings(),
        other => panic!("expected run, got {other:?}"),
    }
}

#[test]
fn reconcile_concurrency_is_bounded_and_configurable() {
    assert_eq!(settings(&[]).reconcile_concurrency, 4);
    assert_eq!(
        settings(&["--reconcile-concurrency", "16"]).reconcile_concurrency,
        16
    );
    assert_eq!(
        settings(&["--reconcile-concurrency", "0"]).reconcile_concurrency,
        1,
        "0 would mean unbounded to kube-runtime"
    );
}

#[test]
fn topic_and_drift_intervals_default_to_five_minutes() {
    let defaults = settings(&[]);
    assert_eq!(defaults.topic_resync_interval, Duration::from_secs(300));
    assert_eq!(defaults.drift_repair_interval, Duration::from_secs(300));
    assert_eq!(
        settings(&["--topic-resync-seconds", "60"]).topic_resync_interval,
        Duration::from_secs(60)
    );
}

#[test]
fn watch_namespaces_select_the_namespace_scoped_mode() {
    assert!(
        settings(&[]).watch_namespaces.is_empty(),
        "cluster-wide by default"
    );
    assert_eq!(
        settings(&["--watch-namespaces", "shops, outlets"]).watch_namespaces,
        vec!["shops".to_owned(), "outlets".to_owned()]
    );
}

#[test]
fn at_most_five_stores_roll_at_once_by_default_and_never_none() {
    assert_eq!(settings(&[]).max_concurrent_rollouts, 5);
    assert_eq!(
        settings(&["--max-concurrent-rollouts", "20"]).max_concurrent_rollouts,
        20
    );
    assert_eq!(
        settings(&["--max-concurrent-rollouts", "0"]).max_concurrent_rollouts,
        1,
        "0 would stop every rollout"
    );
}
