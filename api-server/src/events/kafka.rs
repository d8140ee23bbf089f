//! Kafka connection settings (the environment events.md lists, set by the operator) and the rdkafka
//! client configurations built from them: the idempotent producer of the relay, consumers for
//! debugging and tests, and topic creation.

use std::time::Duration;

use clap::{Args, ValueEnum};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::outbox::{MAX_EVENT_PAYLOAD_BYTES, Topic};

/// The producer's `message.max.bytes` (librdkafka's default, set explicitly): the largest request
/// it builds, so a message above it is refused before it is sent. Kafka brokers accept
/// 1,048,588 bytes by default; keep the broker's (and the topics' `max.message.bytes`) at least
/// this large. The outbox refuses payloads above 256 KiB (about a quarter of it) at write time,
/// leaving ample room for key, headers and framing.
pub const PRODUCER_MESSAGE_MAX_BYTES: usize = 1_000_000;

const _: () = assert!(MAX_EVENT_PAYLOAD_BYTES * 3 < PRODUCER_MESSAGE_MAX_BYTES);

/// Wire strings from the API↔operator contract: the operator sets exactly these (clap's default
/// kebab-case names, `sasl-ssl`, refused the operator's `sasl_ssl` and stopped the API at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecurityProtocol {
    #[value(name = plamatio_contract::security_protocol::PLAINTEXT)]
    Plaintext,
    #[value(name = plamatio_contract::security_protocol::SSL)]
    Ssl,
    #[value(name = plamatio_contract::security_protocol::SASL_SSL)]
    SaslSsl,
    #[value(name = plamatio_contract::security_protocol::SASL_PLAINTEXT)]
    SaslPlaintext,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => plamatio_contract::security_protocol::PLAINTEXT,
            SecurityProtocol::Ssl => plamatio_contract::security_protocol::SSL,
            SecurityProtocol::SaslSsl => plamatio_contract::security_protocol::SASL_SSL,
            SecurityProtocol::SaslPlaintext => plamatio_contract::security_protocol::SASL_PLAINTEXT,
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslSsl | SecurityProtocol::SaslPlaintext
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaslMechanism {
    #[value(name = plamatio_contract::sasl_mechanism::PLAIN)]
    Plain,
    #[value(name = plamatio_contract::sasl_mechanism::SCRAM_SHA_256)]
    ScramSha256,
    #[value(name = plamatio_contract::sasl_mechanism::SCRAM_SHA_512)]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => plamatio_contract::sasl_mechanism::PLAIN,
            SaslMechanism::ScramSha256 => plamatio_contract::sasl_mechanism::SCRAM_SHA_256,
            SaslMechanism::ScramSha512 => plamatio_contract::sasl_mechanism::SCRAM_SHA_512,
        }
    }
}

/// Where the brokers are and how to talk to them. Without bootstrap servers the relay does not run
/// and events stay in the outbox (and reach live streams).
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers.
    #[arg(long, env = plamatio_contract::env::KAFKA_BOOTSTRAP_SERVERS)]
    pub kafka_bootstrap_servers: Option<String>,

    #[arg(long, env = plamatio_contract::env::KAFKA_SECURITY_PROTOCOL, value_enum, ignore_case = true, default_value_t = SecurityProtocol::Plaintext)]
    pub kafka_security_protocol: SecurityProtocol,

    #[arg(long, env = plamatio_contract::env::KAFKA_SASL_MECHANISM, value_enum, ignore_case = true, default_value_t = SaslMechanism::Plain)]
    pub kafka_sasl_mechanism: SaslMechanism,

    #[arg(long, env = plamatio_contract::env::KAFKA_SASL_USERNAME)]
    pub kafka_sasl_username: Option<String>,

    #[arg(long, env = plamatio_contract::env::KAFKA_SASL_PASSWORD, hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,

    /// Prefix of every topic name, e.g. `store-a.` gives `store-a.cart_updates`.
    #[arg(long, env = plamatio_contract::env::KAFKA_TOPIC_PREFIX, default_value = "")]
    pub kafka_topic_prefix: String,

    /// Compression of produced batches (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
    #[arg(long, env = "KAFKA_COMPRESSION", default_value = "lz4")]
    pub kafka_compression: String,

    /// How long the producer keeps retrying one message before reporting it failed.
    #[arg(long, env = "KAFKA_MESSAGE_TIMEOUT_MS", default_value_t = 10_000)]
    pub kafka_message_timeout_ms: u64,

    /// Create missing topics at start-up (the operator creates them in a cluster).
    #[arg(long, env = plamatio_contract::env::KAFKA_CREATE_TOPICS, default_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub kafka_create_topics: bool,

    /// Partitions of topics created at start-up.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 3)]
    pub kafka_topic_partitions: i32,
}

impl KafkaConfig {
    /// The settings for `bootstrap` with every other value at its default (tests, tools).
    pub fn for_bootstrap(bootstrap: &str) -> KafkaConfig {
        KafkaConfig {
            kafka_bootstrap_servers: Some(bootstrap.to_owned()),
            kafka_security_protocol: SecurityProtocol::Plaintext,
            kafka_sasl_mechanism: SaslMechanism::Plain,
            kafka_sasl_username: None,
            kafka_sasl_password: None,
            kafka_topic_prefix: String::new(),
            kafka_compression: "lz4".into(),
            kafka_message_timeout_ms: 10_000,
            kafka_create_topics: true,
            kafka_topic_partitions: 3,
        }
    }

    pub fn enabled(&self) -> bool {
        self.kafka_bootstrap_servers
            .as_deref()
            .is_some_and(|servers| !servers.trim().is_empty())
    }

    /// The full topic name, with the prefix.
    pub fn topic_name(&self, topic: &str) -> String {
        format!("{}{topic}", self.kafka_topic_prefix)
    }

    /// Connection and security settings shared by every client.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set(
                "bootstrap.servers",
                self.kafka_bootstrap_servers.clone().unwrap_or_default(),
            )
            .set("security.protocol", self.kafka_security_protocol.as_str())
            .set("client.id", "plamatio-api");
        if self.kafka_security_protocol.uses_sasl() {
            config.set("sasl.mechanism", self.kafka_sasl_mechanism.as_str());
            if let Some(username) = &self.kafka_sasl_username {
                config.set("sasl.username", username);
            }
            if let Some(password) = &self.kafka_sasl_password {
                config.set("sasl.password", password);
            }
        }
        config
    }

    /// The relay's producer: idempotent (no duplicates or reordering from its own retries), waits
    /// for all in-sync replicas, compresses, and reports a message failed after the timeout.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("compression.type", &self.kafka_compression)
            .set("linger.ms", "5")
            .set("message.max.bytes", PRODUCER_MESSAGE_MAX_BYTES.to_string())
            .set(
                "message.timeout.ms",
                self.kafka_message_timeout_ms.to_string(),
            );
        config
    }

    /// A consumer that reads assigned partitions without committing offsets.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000");
        config
    }

    /// Creates the topics Plamatio produces to, skipping those that exist.
    pub async fn ensure_topics(&self) -> Result<(), rdkafka::error::KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let names: Vec<String> = Topic::ALL
            .iter()
            .map(|t| self.topic_name(t.as_str()))
            .collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.kafka_topic_partitions.max(1),
                    TopicReplication::Fixed(-1),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created Kafka topic"),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(topic = %name, "Kafka topic exists");
                }
                Err((name, code)) => {
                    tracing::warn!(topic = %name, error = %code, "could not create Kafka topic");
                }
            }
        }
        Ok(())
    }
}
