//! The `PlamatioStore` custom resource (`plamatio.io/v1alpha1`): its spec, its status, the defaults the
//! operator applies to omitted fields, and the schema rules that make the API server refuse bad specs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the custom resource.
pub const GROUP: &str = "plamatio.io";
/// The five topics of events.md, without the store's prefix.
pub const TOPIC_NAMES: [&str; 5] = plamatio_contract::topics::ALL;

/// A store must say how shoppers' data is protected: there is no silent default of `off`.
pub const USER_AUTH_CHOSEN_RULE: &str = "has(self.api) && has(self.api.userAuth)";
pub const USER_AUTH_CHOSEN_MESSAGE: &str = "spec.api.userAuth is required: choose mode: required (with \
     jwksUrl and issuer), which binds every cart, order and user record to the signed-in shopper, or \
     mode: off, only for the unmodified legacy frontend, which lets anyone holding the public \
     storefront key read every shopper's data";

pub const DEFAULT_REPLICAS: i32 = 2;
/// Share of requests traced when traces are exported (`spec.observability.traceSampleRatio`).
pub const DEFAULT_TRACE_SAMPLE_RATIO: f64 = 0.1;
pub const DEFAULT_PORT: i32 = 8080;
pub const DEFAULT_TOPIC_PARTITIONS: i32 = 3;

/// One store: a Plamatio API with its database, cache, Kafka topics and observability agent.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "plamatio.io",
    version = "v1alpha1",
    kind = "PlamatioStore",
    namespaced,
    shortname = "pstore",
    category = "plamatio",
    status = "PlamatioStoreStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Plamatio store: the operator runs its API, migrations, Kafka topics and observability agent.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(crate::build::names::store_name_pattern_rule()).message(crate::build::names::STORE_NAME_PATTERN_MESSAGE),
    validation = Rule::new(crate::build::names::store_name_length_rule()).message(Message::Message(crate::build::names::store_name_length_message()))
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(USER_AUTH_CHOSEN_RULE).message(USER_AUTH_CHOSEN_MESSAGE))]
pub struct PlamatioStoreSpec {
    /// The store API Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,
    /// The PostgreSQL database (required).
    pub database: DatabaseSpec,
    /// Redis for the shared cache; without it each API pod uses its in-process cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// Kafka for the store's events; without it events stay in the outbox and live streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSpec>,
    /// Metrics, traces and logs forwarding through a Grafana Alloy agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observability: Option<ObservabilitySpec>,
    /// Reconcile nothing while true; the store reports the `Paused` condition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// Container image of the API (default: the operator's matching API release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Number of API pods (default 2; ignored while `autoscaling` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000), extend("default" = DEFAULT_REPLICAS))]
    pub replicas: Option<i32>,
    /// CPU and memory of each API container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Port the API listens on (default 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535), extend("default" = DEFAULT_PORT))]
    pub port: Option<i32>,
    /// Log level of the API (default info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "info"))]
    pub log_level: Option<LogLevel>,
    /// Allowed CORS origins (default: the API's built-in list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Vec<String>>,
    /// Proxies in front of the API whose `X-Forwarded-For` is believed (IPs or CIDRs, e.g. the
    /// ingress controller's pod range). Without them the client is the connection's peer, so behind
    /// an ingress every shopper shares one rate-limit bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64)))]
    pub trusted_proxies: Option<Vec<String>>,
    /// Requests per minute per API key; 0 disables the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rate_limit_per_minute: Option<i32>,
    /// Secret whose keys are scopes (`storefront`, `admin`, or `scope.anything` for several keys of one
    /// scope) and whose values are SHA-256 digests of API keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret_ref: Option<SecretRef>,
    /// End-user JWT authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_auth: Option<UserAuthSpec>,
    /// PodDisruptionBudget of the API pods (on by default when more than one replica runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,
    /// HorizontalPodAutoscaler on CPU; when set it owns the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// A whole Secret in the store's namespace.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One key of a Secret in the store's namespace.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A Secret holding a username and a password.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the username (default `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("default" = "username"))]
    pub username_key: Option<String>,
    /// Key of the password (default `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("default" = "password"))]
    pub password_key: Option<String>,
}

impl CredentialsSecretRef {
    pub fn username_key(&self) -> &str {
        self.username_key.as_deref().unwrap_or("username")
    }

    pub fn password_key(&self) -> &str {
        self.password_key.as_deref().unwrap_or("password")
    }
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'off' || (has(self.jwksUrl) && has(self.issuer))").message("jwksUrl and issuer are required unless mode is off"))]
pub struct UserAuthSpec {
    /// `required`: every user-scoped request carries a verified end-user token and is bound to it.
    /// `optional`: a migration aid — a request with a token is bound to it, one without is not bound
    /// to any user. `off`: only for the unmodified legacy frontend; the storefront key alone reads
    /// every shopper's data.
    pub mode: UserAuthMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url, length(max = 2048))]
    pub jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub audience: Option<String>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UserAuthMode {
    #[default]
    Off,
    Optional,
    Required,
}

impl UserAuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            UserAuthMode::Off => plamatio_contract::user_auth::OFF,
            UserAuthMode::Optional => plamatio_contract::user_auth::OPTIONAL,
            UserAuthMode::Required => plamatio_contract::user_auth::REQUIRED,
        }
    }
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Force the budget on or off (default: on when more than one replica runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Pods that may be down at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 1))]
    pub max_unavailable: Option<i32>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas").message("maxReplicas must be at least minReplicas"))]
pub struct AutoscalingSpec {
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilization (percent of requests) to keep (default 70).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100), extend("default" = 70))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: Option<i32>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Secret key holding the PostgreSQL URL.
    pub url_secret_ref: SecretKeyRef,
    /// Pooled connections per API pod (default: the API's 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub pool_size: Option<i32>,
    /// `auto` runs a migration Job before rolling the Deployment (default); `manual` does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "auto"))]
    pub migrations: Option<MigrationMode>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    #[default]
    Auto,
    Manual,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Secret key holding the Redis URL; absent means the in-process cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Overrides the cache entries' time to live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl_seconds: Option<i32>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.securityProtocol) || !(self.securityProtocol in ['sasl_ssl', 'sasl_plaintext']) || has(self.credentialsSecretRef)").message("SASL needs credentialsSecretRef"),
    validation = Rule::new("!has(self.topics) || !has(self.topics.deletionPolicy) || self.topics.deletionPolicy != 'Delete' || self.bootstrapServers == oldSelf.bootstrapServers").message("bootstrapServers cannot change while topics.deletionPolicy is Delete: the topics on the old brokers would never be deleted (set deletionPolicy: Retain first)"),
    validation = Rule::new("!has(self.topics) || !has(self.topics.deletionPolicy) || self.topics.deletionPolicy != 'Delete' || (has(self.topicPrefix) ? self.topicPrefix : '') == (has(oldSelf.topicPrefix) ? oldSelf.topicPrefix : '')").message("topicPrefix cannot change while topics.deletionPolicy is Delete: the topics of the old prefix would be left unused (set deletionPolicy: Retain first)")
)]
pub struct KafkaSpec {
    /// Comma-separated `host:port` list of brokers.
    #[schemars(length(min = 1, max = 4096))]
    pub bootstrap_servers: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_protocol: Option<SecurityProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL username and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
    /// Prefix of every topic name, e.g. `store-a.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9._-]*$"), length(max = 100))]
    pub topic_prefix: Option<String>,
    /// Settings of the five topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<TopicsSpec>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    #[serde(rename = "plaintext")]
    Plaintext,
    #[serde(rename = "ssl")]
    Ssl,
    #[serde(rename = "sasl_ssl")]
    SaslSsl,
    #[serde(rename = "sasl_plaintext")]
    SaslPlaintext,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => plamatio_contract::security_protocol::PLAINTEXT,
            SecurityProtocol::Ssl => plamatio_contract::security_protocol::SSL,
            SecurityProtocol::SaslSsl => plamatio_contract::security_protocol::SASL_SSL,
            SecurityProtocol::SaslPlaintext => plamatio_contract::security_protocol::SASL_PLAINTEXT,
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslSsl | SecurityProtocol::SaslPlaintext
        )
    }
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => plamatio_contract::sasl_mechanism::PLAIN,
            SaslMechanism::ScramSha256 => plamatio_contract::sasl_mechanism::SCRAM_SHA_256,
            SaslMechanism::ScramSha512 => plamatio_contract::sasl_mechanism::SCRAM_SHA_512,
        }
    }
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TopicsSpec {
    /// Partitions of each topic (default 3). Raised when increased, never lowered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000), extend("default" = DEFAULT_TOPIC_PARTITIONS))]
    pub partitions: Option<i32>,
    /// Replication factor of new topics (default: the broker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub replication_factor: Option<i32>,
    /// Topic configuration, e.g. `retention.ms`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "topic_config_schema")]
    pub config: BTreeMap<String, String>,
    /// Per-topic settings that override the ones above, keyed by topic name without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 5))]
    #[x_kube(validation = Rule::new("self.all(name, name in ['cart_updates', 'orders_updates', 'users_updates', 'products_updates', 'user_events'])").message("overrides are keyed by one of the five topic names"))]
    pub overrides: BTreeMap<String, TopicOverride>,
    /// What happens to the topics when the store is deleted (default Retain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Retain"))]
    pub deletion_policy: Option<DeletionPolicy>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TopicOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: Option<i32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "topic_config_schema")]
    pub config: BTreeMap<String, String>,
}

/// Most entries and longest value of a topic configuration: CEL rules above it (and the API server's
/// cost estimate of them) need bounded maps and strings.
pub const MAX_TOPIC_CONFIG_ENTRIES: u32 = 64;
pub const MAX_TOPIC_CONFIG_VALUE_LENGTH: u32 = 4096;

/// Kafka topic configuration: a bounded map of bounded strings.
fn topic_config_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Kafka topic configuration entries, e.g. `retention.ms`.",
        "type": "object",
        "maxProperties": MAX_TOPIC_CONFIG_ENTRIES,
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_TOPIC_CONFIG_VALUE_LENGTH,
        },
    })
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObservabilitySpec {
    /// OTLP/HTTP endpoint the agent forwards the API's traces to (e.g. Grafana Cloud's OTLP gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub otlp_endpoint: Option<String>,
    /// Share of requests traced when `otlpEndpoint` is set (default 0.1): a request whose client
    /// sent a `traceparent` follows its sampled flag, the others are traced with this probability.
    /// Every traced request costs the API far more CPU than an untraced one (1 = all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("default" = DEFAULT_TRACE_SAMPLE_RATIO))]
    pub trace_sample_ratio: Option<f64>,
    /// Prometheus remote-write target of the scraped API metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSinkSpec>,
    /// Loki target of the API pods' logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsSinkSpec>,
    /// The Grafana Alloy agent itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSpec>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSinkSpec {
    #[schemars(url)]
    pub remote_write_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogsSinkSpec {
    #[schemars(url)]
    pub loki_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// What the operator last observed. `None` fields are written as `null` so a merge patch clears them.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlamatioStoreStatus {
    pub observed_generation: Option<i64>,
    /// One condition per type (a list-map keyed by `type`, as the API conventions ask).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    pub replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    /// In-cluster URL of the API Service.
    pub endpoint: Option<String>,
    #[serde(default)]
    pub topics: Vec<TopicStatus>,
    /// Image tag whose migrations the last completed migration Job applied.
    pub migration_version: Option<String>,
    /// The API image the Deployment runs (the spec's, or the operator's default when it names none),
    /// so an operator upgrade that changes the default shows on every store it rolls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Topics this store created: the only ones its deletion may delete (`deletionPolicy: Delete`),
    /// so stores sharing a prefix never delete each other's topics. Absent until the operator first
    /// reached Kafka for the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_topics: Option<Vec<String>>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    pub name: String,
    pub partitions: Option<i32>,
    pub state: TopicState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TopicState {
    /// Exists with the wanted partitions and configuration.
    Ready,
    /// Exists with more partitions than asked (partitions are never lowered).
    MorePartitionsThanRequested,
    /// Could not be checked or changed; see the message.
    #[default]
    Error,
}

/// The settings of one topic after defaults and overrides are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: Option<i32>,
    pub config: BTreeMap<String, String>,
}

impl PlamatioStoreSpec {
    pub fn api(&self) -> ApiSpec {
        self.api.clone().unwrap_or_default()
    }

    pub fn migrations(&self) -> MigrationMode {
        self.database.migrations.unwrap_or_default()
    }

    /// The agent runs when any observability sink is configured.
    pub fn agent_enabled(&self) -> bool {
        self.observability
            .as_ref()
            .is_some_and(|o| o.otlp_endpoint.is_some() || o.metrics.is_some() || o.logs.is_some())
    }

    pub fn traces_enabled(&self) -> bool {
        self.observability
            .as_ref()
            .is_some_and(|o| o.otlp_endpoint.is_some())
    }

    /// The share of requests traced (see `ObservabilitySpec::trace_sample_ratio`).
    pub fn trace_sample_ratio(&self) -> f64 {
        self.observability
            .as_ref()
            .and_then(|o| o.trace_sample_ratio)
            .unwrap_or(DEFAULT_TRACE_SAMPLE_RATIO)
    }

    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.kafka
            .as_ref()
            .and_then(|k| k.topics.as_ref())
            .and_then(|t| t.deletion_policy)
            .unwrap_or_default()
    }

    /// The five topics with their full names and settings; empty without Kafka.
    pub fn desired_topics(&self) -> Vec<DesiredTopic> {
        let Some(kafka) = &self.kafka else {
            return Vec::new();
        };
        let topics = kafka.topics.clone().unwrap_or_default();
        let prefix = kafka.topic_prefix.clone().unwrap_or_default();
        TOPIC_NAMES
            .iter()
            .map(|name| {
                let overrides = topics.overrides.get(*name);
                let mut config = topics.config.clone();
                if let Some(overrides) = overrides {
                    config.extend(overrides.config.clone());
                }
                DesiredTopic {
                    name: format!("{prefix}{name}"),
                    partitions: overrides
                        .and_then(|o| o.partitions)
                        .or(topics.partitions)
                        .unwrap_or(DEFAULT_TOPIC_PARTITIONS),
                    replication_factor: topics.replication_factor,
                    config,
                }
            })
            .collect()
    }
}

impl ApiSpec {
    pub fn port(&self) -> i32 {
        self.port.unwrap_or(DEFAULT_PORT)
    }

    /// Replicas the Deployment asks for when no autoscaler owns the count.
    pub fn replicas(&self) -> i32 {
        self.replicas.unwrap_or(DEFAULT_REPLICAS)
    }

    /// The fewest pods that normally run: the autoscaler's minimum or the fixed count.
    pub fn minimum_replicas(&self) -> i32 {
        match &self.autoscaling {
            Some(autoscaling) => autoscaling.min_replicas,
            None => self.replicas(),
        }
    }

    pub fn pod_disruption_budget_enabled(&self) -> bool {
        self.pod_disruption_budget
            .as_ref()
            .and_then(|p| p.enabled)
            .unwrap_or(self.minimum_replicas() > 1)
    }
}
