//! Topic management against a real Kafka-protocol broker (tansu): creation with partitions and
//! configuration, raising partitions, never lowering them, and unreachable brokers.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::broker::{Broker, free_port};
use plamatio_operator::crd::{DesiredTopic, TopicState};
use plamatio_operator::kafka::{KafkaAdmins, KafkaConnection, delete_topics, reconcile_topics};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

fn connection(bootstrap: &str) -> KafkaConnection {
    KafkaConnection {
        bootstrap_servers: bootstrap.to_owned(),
        security_protocol: "plaintext".to_owned(),
        sasl_mechanism: "PLAIN".to_owned(),
        credentials: None,
        timeout: Duration::from_secs(5),
    }
}

fn topics(prefix: &str, partitions: i32, config: &[(&str, &str)]) -> Vec<DesiredTopic> {
    plamatio_operator::crd::TOPIC_NAMES
        .iter()
        .map(|name| DesiredTopic {
            name: format!("{prefix}{name}"),
            partitions,
            replication_factor: None,
            config: config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        })
        .collect()
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

fn partitions_on_broker(bootstrap: &str, topic: &str) -> Option<usize> {
    let admin = admin(bootstrap);
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

fn topic_names_on_broker(bootstrap: &str) -> Vec<String> {
    let admin = admin(bootstrap);
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_owned())
        .collect()
}

#[tokio::test]
async fn missing_topics_are_created_with_their_partitions_and_config() {
    let broker = Broker::start();
    let desired = topics("store-a.", 3, &[("retention.ms", "86400000")]);
    let report = reconcile_topics(
        &KafkaAdmins::default(),
        &connection(&broker.bootstrap()),
        &desired,
    )
    .await
    .expect("reconcile topics");
    assert_eq!(report.created.len(), 5, "{report:?}");
    assert!(report.all_ready(), "{report:?}");
    for topic in &desired {
        assert_eq!(
            partitions_on_broker(&broker.bootstrap(), &topic.name),
            Some(3)
        );
        let status = report
            .topics
            .iter()
            .find(|t| t.name == topic.name)
            .expect("status");
        assert_eq!(status.state, TopicState::Ready);
        assert_eq!(status.partitions, Some(3));
    }
    let admin = admin(&broker.bootstrap());
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic("store-a.cart_updates")],
            &AdminOptions::new(),
        )
        .await
        .expect("describe configs");
    let resource = described
        .into_iter()
        .next()
        .expect("one resource")
        .expect("described");
    assert_eq!(
        resource
            .get("retention.ms")
            .and_then(|e| e.value.as_deref()),
        Some("86400000")
    );
}

#[tokio::test]
async fn a_second_pass_over_ready_topics_changes_nothing() {
    let broker = Broker::start();
    let desired = topics("", 2, &[]);
    let connection = connection(&broker.bootstrap());
    reconcile_topics(&KafkaAdmins::default(), &connection, &desired)
        .await
        .expect("first pass");
    let report = reconcile_topics(&KafkaAdmins::default(), &connection, &desired)
        .await
        .expect("second pass");
    assert!(!report.changed_anything(), "{report:?}");
    assert!(report.all_ready());
}

// tansu 0.6 implements neither CreatePartitions (API key 37) nor AlterConfigs (33), so against it a
// raise or a reconfiguration must surface as that topic's error — the other topics stay Ready and the
// partitions are untouched. (Against Apache Kafka both succeed; see operator/README.md.)
#[tokio::test]
async fn raising_partitions_is_attempted_and_a_refusal_is_reported_per_topic() {
    let broker = Broker::start();
    let connection = connection(&broker.bootstrap());
    reconcile_topics(
        &KafkaAdmins::default(),
        &connection,
        &topics("grow.", 2, &[]),
    )
    .await
    .expect("create");

    let mut desired = topics("grow.", 2, &[]);
    let user_events = desired
        .iter_mut()
        .find(|t| t.name == "grow.user_events")
        .expect("topic");
    user_events.partitions = 4;
    let report = reconcile_topics(&KafkaAdmins::default(), &connection, &desired)
        .await
        .expect("grow");
    let status = report
        .topics
        .iter()
        .find(|t| t.name == "grow.user_events")
        .expect("status");
    assert_eq!(status.state, TopicState::Error, "{report:?}");
    assert_eq!(status.partitions, Some(2));
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains("raising partitions"), "{message}");
    assert!(message.contains("UnsupportedFeature"), "{message}");
    let others_ready = report
        .topics
        .iter()
        .filter(|t| t.name != "grow.user_events")
        .all(|t| t.state == TopicState::Ready);
    assert!(others_ready, "{report:?}");
    assert!(!report.all_ready());
    assert_eq!(
        partitions_on_broker(&broker.bootstrap(), "grow.user_events"),
        Some(2)
    );
}

#[tokio::test]
async fn partitions_are_never_lowered() {
    let broker = Broker::start();
    let connection = connection(&broker.bootstrap());
    reconcile_topics(
        &KafkaAdmins::default(),
        &connection,
        &topics("shrink.", 4, &[]),
    )
    .await
    .expect("create");

    let report = reconcile_topics(
        &KafkaAdmins::default(),
        &connection,
        &topics("shrink.", 1, &[]),
    )
    .await
    .expect("shrink");
    assert!(report.grown.is_empty());
    assert!(report.all_ready(), "{report:?}");
    let status = report
        .topics
        .iter()
        .find(|t| t.name == "shrink.user_events")
        .expect("status");
    assert_eq!(status.state, TopicState::MorePartitionsThanRequested);
    assert_eq!(status.partitions, Some(4));
    assert_eq!(
        partitions_on_broker(&broker.bootstrap(), "shrink.user_events"),
        Some(4)
    );
}

#[tokio::test]
async fn unchanged_topic_config_is_not_rewritten() {
    let broker = Broker::start();
    let connection = connection(&broker.bootstrap());
    let desired = topics("same.", 1, &[("retention.ms", "1000")]);
    reconcile_topics(&KafkaAdmins::default(), &connection, &desired)
        .await
        .expect("create");
    let report = reconcile_topics(&KafkaAdmins::default(), &connection, &desired)
        .await
        .expect("second pass");
    assert!(report.reconfigured.is_empty(), "{report:?}");
    assert!(report.all_ready(), "{report:?}");
}

#[tokio::test]
async fn changed_topic_config_is_applied_or_its_refusal_reported() {
    let broker = Broker::start();
    let connection = connection(&broker.bootstrap());
    reconcile_topics(
        &KafkaAdmins::default(),
        &connection,
        &topics("cfg.", 1, &[("retention.ms", "1000")]),
    )
    .await
    .expect("create");
    let report = reconcile_topics(
        &KafkaAdmins::default(),
        &connection,
        &topics("cfg.", 1, &[("retention.ms", "2000")]),
    )
    .await
    .expect("reconfigure");
    let status = report
        .topics
        .iter()
        .find(|t| t.name == "cfg.orders_updates")
        .expect("status");
    assert_eq!(status.state, TopicState::Error, "{report:?}");
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains("alter config failed"), "{message}");
}

#[tokio::test]
async fn deleting_topics_removes_them_from_the_broker() {
    let broker = Broker::start();
    let connection = connection(&broker.bootstrap());
    let desired = topics("gone.", 1, &[]);
    reconcile_topics(&KafkaAdmins::default(), &connection, &desired)
        .await
        .expect("create");
    let names: Vec<String> = desired.iter().map(|t| t.name.clone()).collect();
    delete_topics(&KafkaAdmins::default(), &connection, &names)
        .await
        .expect("delete");
    let remaining = topic_names_on_broker(&broker.bootstrap());
    assert!(
        names.iter().all(|n| !remaining.contains(n)),
        "{remaining:?}"
    );
}

#[tokio::test]
async fn an_unreachable_broker_fails_with_the_error() {
    let mut connection = connection(&format!("127.0.0.1:{}", free_port()));
    connection.timeout = Duration::from_secs(2);
    let error = reconcile_topics(&KafkaAdmins::default(), &connection, &topics("", 1, &[]))
        .await
        .expect_err("nothing listens there");
    assert_eq!(error.metric_label(), "KafkaUnavailable");
    assert!(
        error.to_string().contains("cannot reach the brokers"),
        "{error}"
    );
}
