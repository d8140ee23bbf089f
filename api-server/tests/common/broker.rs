//! A real Kafka-protocol broker per test: tansu with in-memory storage on a free port, started,
//! stopped and restarted on the same port (a restarted broker is empty), killed on drop; optionally
//! behind a TCP gate that simulates a network outage while the broker keeps its state; and a
//! consumer that reads every message of a topic (all partitions, from the beginning, without a
//! consumer group) until an expected count or a timeout.
//!
//! The tansu binary is `$TANSU_BIN`, else `/var/tmp/plamatio-tools/bin/tansu`, else `tansu` on
//! `PATH`. Without it the tests fail: the event tests never pass silently without a broker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plamatio_api::events::kafka::KafkaConfig;
use plamatio_api::events::outbox::Topic;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::task::{AbortHandle, JoinHandle};

use plamatio_testkit::{free_port, spawn_tansu};

/// One tansu broker process with in-memory storage.
pub struct Broker {
    /// The port tansu listens on.
    port: u16,
    /// The port tansu advertises (the gate's, when there is one).
    advertised: u16,
    log: PathBuf,
    child: Option<Child>,
    gate: Option<Gate>,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub async fn start() -> Broker {
        let port = free_port();
        Broker::launch(port, port).await
    }

    /// Starts a broker reachable only through a [`Gate`] (it advertises the gate's port, so every
    /// client connects through it). `close_gate` cuts the network; the broker keeps its state.
    pub async fn start_behind_gate() -> Broker {
        let port = free_port();
        let advertised = free_port();
        let mut broker = Broker::launch(port, advertised).await;
        let mut gate = Gate {
            port: advertised,
            target: port,
            accept: None,
            connections: Arc::default(),
        };
        gate.open().await;
        broker.gate = Some(gate);
        broker
    }

    async fn launch(port: u16, advertised: u16) -> Broker {
        let log = std::env::temp_dir().join(format!(
            "plamatio-tansu-{port}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let mut broker = Broker {
            port,
            advertised,
            log,
            child: None,
            gate: None,
        };
        broker.spawn().await;
        broker
    }

    /// Cuts every connection to the broker and refuses new ones (the broker keeps running).
    pub async fn close_gate(&mut self) {
        self.gate
            .as_mut()
            .expect("broker has no gate")
            .close()
            .await;
    }

    /// Lets clients reach the broker again.
    pub async fn open_gate(&mut self) {
        self.gate.as_mut().expect("broker has no gate").open().await;
    }

    /// Starts a broker with every Plamatio topic created.
    pub async fn with_topics() -> Broker {
        let broker = Broker::start().await;
        broker.ensure_topics().await;
        broker
    }

    /// `127.0.0.1:PORT` (the advertised port: the gate's, when there is one).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// Kafka settings for this broker (defaults otherwise, no topic prefix).
    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig::for_bootstrap(&self.bootstrap())
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        // The port may still be held for a moment after a stop: retry a few times.
        for attempt in 0..5 {
            let (port, advertised, log) = (self.port, self.advertised, self.log.clone());
            let child = tokio::task::spawn_blocking(move || {
                spawn_tansu(port, advertised, &log, Duration::from_secs(10))
            })
            .await
            .expect("tansu start task");
            if let Some(child) = child {
                self.child = Some(child);
                return;
            }
            backoff_sleep(attempt).await;
        }
        panic!(
            "tansu did not start on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// Kills the broker (everything it stored is lost: memory storage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new, empty broker on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Creates every Plamatio topic (3 partitions) and waits until their metadata shows them.
    pub async fn ensure_topics(&self) {
        ensure_topics(&self.kafka()).await;
    }
}

async fn backoff_sleep(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.as_mut() {
            if let Some(accept) = gate.accept.take() {
                accept.abort();
            }
            gate.cut_connections();
        }
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("tansu log kept at {}", self.log.display());
        }
    }
}

/// A TCP forwarder from `port` to the broker's `target` port, which can cut the network.
struct Gate {
    port: u16,
    target: u16,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Gate {
    async fn open(&mut self) {
        if self.accept.is_some() {
            return;
        }
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(bound) => {
                    listener = Some(bound);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("cannot bind gate port {}", self.port));
        let target = self.target;
        let connections = self.connections.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections
                    .lock()
                    .expect("gate connections")
                    .push(task.abort_handle());
            }
        }));
    }

    /// Stops accepting (the port refuses connections once the listener is dropped) and cuts
    /// every forwarded connection.
    async fn close(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        self.cut_connections();
    }

    fn cut_connections(&mut self) {
        for connection in self.connections.lock().expect("gate connections").drain(..) {
            connection.abort();
        }
    }
}

/// Creates the topics of `kafka` (with its prefix) and waits, bounded, until every one has its
/// partitions in the metadata.
pub async fn ensure_topics(kafka: &KafkaConfig) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let names: Vec<String> = Topic::ALL
        .iter()
        .map(|topic| kafka.topic_name(topic.as_str()))
        .collect();
    let mut last_problem = String::new();
    while Instant::now() < deadline {
        match kafka.ensure_topics().await {
            Ok(()) => {
                let partitions = partition_counts(kafka, &names).await;
                if names
                    .iter()
                    .all(|name| partitions.get(name).is_some_and(|count| *count > 0))
                {
                    if names.iter().any(|name| {
                        partitions.get(name) != Some(&(kafka.kafka_topic_partitions as usize))
                    }) {
                        eprintln!(
                            "topics exist with other partition counts than {}: {partitions:?}",
                            kafka.kafka_topic_partitions
                        );
                    }
                    return;
                }
                last_problem = format!("partitions after create: {partitions:?}");
            }
            Err(error) => last_problem = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("topics {names:?} were not created within 30 s: {last_problem}");
}

async fn partition_counts(kafka: &KafkaConfig, names: &[String]) -> HashMap<String, usize> {
    let config = kafka.consumer_config("plamatio-test-metadata");
    let names = names.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut counts = HashMap::new();
        let Ok(consumer) = config.create::<BaseConsumer>() else {
            return counts;
        };
        for name in names {
            if let Ok(metadata) = consumer.fetch_metadata(Some(&name), Duration::from_secs(5)) {
                for topic in metadata.topics() {
                    if topic.error().is_none() {
                        counts.insert(topic.name().to_owned(), topic.partitions().len());
                    }
                }
            }
        }
        counts
    })
    .await
    .unwrap_or_default()
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: String,
    pub payload: Value,
    pub headers: HashMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

impl Consumed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The `event_id` header.
    pub fn event_id(&self) -> String {
        self.header("event_id")
            .unwrap_or_else(|| panic!("message without event_id header: {self:?}"))
            .to_owned()
    }
}

/// Reads every message of `topic` (full name, prefix included) from the beginning of all its
/// partitions, until at least `expected` arrived and every partition was read to its high
/// watermark (so extra messages, e.g. duplicates, are included), or until `timeout`. Sorted by
/// (partition, offset).
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let kafka = KafkaConfig::for_bootstrap(bootstrap);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || consume_blocking(&kafka, &topic, expected, timeout))
        .await
        .expect("consumer thread")
}

fn consume_blocking(
    kafka: &KafkaConfig,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let deadline = Instant::now() + timeout;
    let mut config =
        kafka.consumer_config(&format!("plamatio-test-{}", uuid::Uuid::new_v4().simple()));
    config.set("enable.partition.eof", "false");
    let consumer: BaseConsumer = config.create().expect("test consumer");
    let mut partitions = 0;
    while partitions == 0 {
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
        }
        if partitions == 0 {
            assert!(
                Instant::now() < deadline,
                "topic {topic} has no partitions on {:?}",
                kafka.kafka_bootstrap_servers
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&assignment).expect("assign partitions");

    let mut messages = Vec::new();
    // Next offset to read per partition.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut last_watermark_check = Instant::now() - Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            match result {
                Ok(message) => {
                    let key =
                        String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                    let raw = message.payload().unwrap_or_default();
                    let payload = serde_json::from_slice(raw).unwrap_or_else(|error| {
                        panic!(
                            "message {}@{} of {topic} is not JSON ({error}): {}",
                            message.partition(),
                            message.offset(),
                            String::from_utf8_lossy(raw)
                        )
                    });
                    let mut headers = HashMap::new();
                    if let Some(list) = message.headers() {
                        for header in list.iter() {
                            headers.insert(
                                header.key.to_owned(),
                                String::from_utf8_lossy(header.value.unwrap_or_default())
                                    .into_owned(),
                            );
                        }
                    }
                    next.insert(message.partition(), message.offset() + 1);
                    messages.push(Consumed {
                        key,
                        payload,
                        headers,
                        partition: message.partition(),
                        offset: message.offset(),
                    });
                }
                Err(error) => eprintln!("test consumer of {topic}: {error}"),
            }
            continue;
        }
        // Idle poll: done when enough arrived and every partition is read to its end.
        if messages.len() >= expected
            && last_watermark_check.elapsed() >= Duration::from_millis(200)
        {
            last_watermark_check = Instant::now();
            let at_end = (0..partitions as i32).all(|partition| {
                match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
                    Ok((low, high)) => next.get(&partition).copied().unwrap_or(low) >= high,
                    Err(_) => false,
                }
            });
            if at_end {
                break;
            }
        }
    }
    messages.sort_by_key(|m| (m.partition, m.offset));
    messages
}

/// The distinct event ids of `messages`, in first-seen order.
pub fn distinct_event_ids(messages: &[Consumed]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    messages
        .iter()
        .map(Consumed::event_id)
        .filter(|id| seen.insert(id.clone()))
        .collect()
}
