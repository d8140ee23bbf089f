//! `plamatio-api events tail --topic cart_updates`: prints every message of a topic (all partitions,
//! from the beginning or from now), for debugging a store's event flow.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};

use super::kafka::KafkaConfig;

/// Consumes `topic` (without the prefix) and prints one line per message until interrupted or,
/// with `limit`, until that many were printed.
pub async fn run(
    kafka: &KafkaConfig,
    topic: &str,
    from_beginning: bool,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let name = kafka.topic_name(topic);
    let consumer: StreamConsumer = kafka
        .consumer_config(&format!("plamatio-tail-{}", uuid::Uuid::new_v4()))
        .create()?;
    let metadata = consumer.fetch_metadata(Some(&name), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    anyhow::ensure!(
        partitions > 0,
        "topic {name} has no partitions (does it exist?)"
    );
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let offset = if from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        assignment.add_partition_offset(&name, i32::try_from(partition)?, offset)?;
    }
    consumer.assign(&assignment)?;
    eprintln!("tailing {name} ({partitions} partitions); Ctrl-C to stop");
    let mut printed = 0;
    while limit.is_none_or(|limit| printed < limit) {
        let message = consumer.recv().await?;
        let event_type = message
            .headers()
            .and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == "event_type")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .unwrap_or_default();
        println!(
            "{}/{}@{} key={} type={} {}",
            message.topic(),
            message.partition(),
            message.offset(),
            String::from_utf8_lossy(message.key().unwrap_or_default()),
            event_type,
            String::from_utf8_lossy(message.payload().unwrap_or_default()),
        );
        printed += 1;
    }
    Ok(())
}
