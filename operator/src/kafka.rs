//! A store's Kafka topics: connecting with the store's credentials (rdkafka AdminClient), creating
//! missing topics, raising partitions (never lowering them), applying topic configuration, reporting
//! each topic's state, and deleting topics for the `Delete` deletion policy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use tracing::{info, instrument, warn};

use crate::build::hex_sha256;
use crate::crd::{DesiredTopic, PlamatioStore, PlamatioStoreSpec, TopicState, TopicStatus};
use crate::error::{Error, Result};

/// How to reach a store's brokers.
#[derive(Clone)]
pub struct KafkaConnection {
    pub bootstrap_servers: String,
    pub security_protocol: String,
    pub sasl_mechanism: String,
    pub credentials: Option<(String, String)>,
    /// Bound of every admin request (and of the metadata fetch that detects an unreachable cluster).
    pub timeout: Duration,
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaConnection")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("security_protocol", &self.security_protocol)
            .finish_non_exhaustive()
    }
}

impl KafkaConnection {
    /// The connection a spec describes, or `None` without Kafka.
    pub fn for_spec(
        spec: &PlamatioStoreSpec,
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Option<KafkaConnection> {
        let kafka = spec.kafka.as_ref()?;
        Some(KafkaConnection {
            bootstrap_servers: kafka.bootstrap_servers.clone(),
            security_protocol: kafka
                .security_protocol
                .unwrap_or_default()
                .as_str()
                .to_owned(),
            sasl_mechanism: kafka.sasl_mechanism.unwrap_or_default().as_str().to_owned(),
            credentials,
            timeout,
        })
    }

    fn admin_client(&self) -> Result<AdminClient<DefaultClientContext>> {
        let timeout_ms = self.timeout.as_millis().to_string();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("security.protocol", &self.security_protocol)
            .set("socket.timeout.ms", &timeout_ms)
            .set("socket.connection.setup.timeout.ms", &timeout_ms)
            .set("client.id", "plamatio-operator")
            // The admin client is a producer to librdkafka, whose default lets a metadata request
            // for a missing topic create it; asking for a store's topics must not create them.
            .set("allow.auto.create.topics", "false")
            .set("log_level", "3");
        if self.security_protocol.starts_with("sasl") {
            config.set("sasl.mechanism", &self.sasl_mechanism);
            if let Some((username, password)) = &self.credentials {
                config
                    .set("sasl.username", username)
                    .set("sasl.password", password);
            }
        }
        config
            .create()
            .map_err(|error| Error::kafka("cannot create admin client", error))
    }

    /// What tells two clusters or identities apart; credentials only as part of a digest.
    fn identity_digest(&self) -> String {
        let identity = serde_json::json!([
            self.bootstrap_servers,
            self.security_protocol,
            self.sasl_mechanism,
            self.credentials,
            self.timeout.as_millis().to_string(),
        ]);
        hex_sha256(identity.to_string().as_bytes())
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }
}

/// An admin client shared by reconciles.
pub type SharedAdmin = Arc<AdminClient<DefaultClientContext>>;

/// One admin client per Kafka cluster and identity (bootstrap servers, security protocol, SASL
/// mechanism and credentials), shared by every store that uses it and kept across reconciles: each
/// librdkafka client holds a connection to every broker and a thread per broker, so one per store per
/// reconcile cost 500 connections a resync at B5. A client unused for `idle` is dropped.
pub struct KafkaAdmins {
    /// By [`KafkaConnection::identity_digest`]: the client and when it was last handed out.
    clients: Mutex<HashMap<String, (SharedAdmin, Instant)>>,
    idle: Duration,
    created: AtomicU64,
}

impl Default for KafkaAdmins {
    fn default() -> Self {
        KafkaAdmins::new(Duration::from_secs(900))
    }
}

impl KafkaAdmins {
    pub fn new(idle: Duration) -> KafkaAdmins {
        KafkaAdmins {
            clients: Mutex::new(HashMap::new()),
            idle,
            created: AtomicU64::new(0),
        }
    }

    /// The shared admin client for this connection, created on first use.
    pub fn admin_for(&self, connection: &KafkaConnection) -> Result<SharedAdmin> {
        let key = connection.identity_digest();
        let now = Instant::now();
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| Error::kafka("admin clients", "lock poisoned"))?;
        clients.retain(|kept, (_, used)| *kept == key || now.duration_since(*used) < self.idle);
        if let Some((client, used)) = clients.get_mut(&key) {
            *used = now;
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(connection.admin_client()?);
        self.created.fetch_add(1, Ordering::Relaxed);
        clients.insert(key, (Arc::clone(&client), now));
        Ok(client)
    }

    /// Admin clients created so far (each is one set of broker connections).
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Admin clients held now.
    pub fn held(&self) -> usize {
        self.clients.lock().map_or(0, |clients| clients.len())
    }
}

/// What one pass over the topics did and found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicReport {
    pub topics: Vec<TopicStatus>,
    pub created: Vec<String>,
    pub grown: Vec<String>,
    pub reconfigured: Vec<String>,
}

impl TopicReport {
    pub fn all_ready(&self) -> bool {
        self.topics.iter().all(|t| t.state != TopicState::Error)
    }

    pub fn changed_anything(&self) -> bool {
        !(self.created.is_empty() && self.grown.is_empty() && self.reconfigured.is_empty())
    }

    /// The first topic error, for the condition message.
    pub fn first_error(&self) -> Option<String> {
        self.topics.iter().find_map(|t| {
            t.message
                .as_ref()
                .map(|message| format!("{}: {message}", t.name))
        })
    }
}

/// Partition counts of the named topics (missing ones are absent); asks for those topics only, not
/// for the whole cluster's metadata. Fails when no broker answers within the timeout.
async fn partition_counts(
    admin: &SharedAdmin,
    names: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, i32>> {
    let admin = Arc::clone(admin);
    let names = names.to_vec();
    // fetch_metadata blocks its thread until the brokers answer or the timeout passes.
    let counts = tokio::task::spawn_blocking(move || {
        let mut counts = BTreeMap::new();
        for name in &names {
            let metadata = admin.inner().fetch_metadata(Some(name), timeout)?;
            for topic in metadata.topics() {
                if topic.error().is_none() && topic.name() == name {
                    counts.insert(
                        topic.name().to_owned(),
                        i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX),
                    );
                }
            }
        }
        Ok::<_, rdkafka::error::KafkaError>(counts)
    })
    .await
    .map_err(|error| Error::kafka("metadata task failed", error))?;
    counts.map_err(|error| Error::kafka("cannot reach the brokers", error))
}

fn topic_error(name: &str, partitions: Option<i32>, message: String) -> TopicStatus {
    TopicStatus {
        name: name.to_owned(),
        partitions,
        state: TopicState::Error,
        message: Some(message),
    }
}

/// Brings every desired topic to its partitions and configuration. Unreachable brokers fail the whole
/// pass; a single topic's failure is reported in its status and the others go on.
#[instrument(skip(admins, connection, desired), fields(bootstrap = %connection.bootstrap_servers))]
pub async fn reconcile_topics(
    admins: &KafkaAdmins,
    connection: &KafkaConnection,
    desired: &[DesiredTopic],
) -> Result<TopicReport> {
    let admin = admins.admin_for(connection)?;
    let options = connection.options();
    let names: Vec<String> = desired.iter().map(|topic| topic.name.clone()).collect();
    let existing = partition_counts(&admin, &names, connection.timeout).await?;
    let mut report = TopicReport::default();

    let missing: Vec<&DesiredTopic> = desired
        .iter()
        .filter(|topic| !existing.contains_key(&topic.name))
        .collect();
    let mut creation_errors = BTreeMap::new();
    if !missing.is_empty() {
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|topic| {
                let replication = TopicReplication::Fixed(topic.replication_factor.unwrap_or(-1));
                topic.config.iter().fold(
                    NewTopic::new(&topic.name, topic.partitions, replication),
                    |new_topic, (key, value)| new_topic.set(key, value),
                )
            })
            .collect();
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|error| Error::kafka("create topics", error))?;
        for result in results {
            match result {
                Ok(name) => {
                    info!(topic = %name, "created topic");
                    report.created.push(name);
                }
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    report.created.push(name);
                }
                Err((name, code)) => {
                    warn!(topic = %name, error = %code, "topic creation failed");
                    creation_errors.insert(name, format!("create failed: {code}"));
                }
            }
        }
    }

    for topic in desired {
        if let Some(message) = creation_errors.remove(&topic.name) {
            report.topics.push(topic_error(&topic.name, None, message));
            continue;
        }
        let created_now = report.created.contains(&topic.name);
        let current = existing.get(&topic.name).copied();
        let mut partitions = current.unwrap_or(topic.partitions);
        let mut state = TopicState::Ready;
        if let Some(current) = current {
            if current < topic.partitions {
                let usize_partitions = usize::try_from(topic.partitions).unwrap_or(1);
                let grow = [NewPartitions::new(&topic.name, usize_partitions)];
                match admin.create_partitions(&grow, &options).await {
                    Ok(results) => match results.into_iter().next() {
                        Some(Ok(_)) | None => {
                            info!(topic = %topic.name, from = current, to = topic.partitions, "raised partitions");
                            report.grown.push(topic.name.clone());
                            partitions = topic.partitions;
                        }
                        Some(Err((_, code))) => {
                            report.topics.push(topic_error(
                                &topic.name,
                                Some(current),
                                format!(
                                    "raising partitions to {} failed: {code}",
                                    topic.partitions
                                ),
                            ));
                            continue;
                        }
                    },
                    Err(error) => {
                        report.topics.push(topic_error(
                            &topic.name,
                            Some(current),
                            format!("raising partitions failed: {error}"),
                        ));
                        continue;
                    }
                }
            } else if current > topic.partitions {
                // Kafka cannot remove partitions; say so rather than pretend.
                state = TopicState::MorePartitionsThanRequested;
            }
        }
        if !created_now && !topic.config.is_empty() {
            match apply_topic_config(&admin, &options, topic).await {
                Ok(true) => report.reconfigured.push(topic.name.clone()),
                Ok(false) => {}
                Err(message) => {
                    report
                        .topics
                        .push(topic_error(&topic.name, Some(partitions), message));
                    continue;
                }
            }
        }
        report.topics.push(TopicStatus {
            name: topic.name.clone(),
            partitions: Some(partitions),
            state,
            message: None,
        });
    }
    Ok(report)
}

/// Sets the topic's configuration when any wanted value differs; true when it changed something.
async fn apply_topic_config(
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    topic: &DesiredTopic,
) -> std::result::Result<bool, String> {
    let specifier = [ResourceSpecifier::Topic(&topic.name)];
    let described = admin
        .describe_configs(&specifier, options)
        .await
        .map_err(|error| format!("describe config failed: {error}"))?;
    let resource = described
        .into_iter()
        .next()
        .ok_or_else(|| "describe config returned nothing".to_owned())?
        .map_err(|code| format!("describe config failed: {code}"))?;
    let differs = topic.config.iter().any(|(key, value)| {
        resource.get(key).and_then(|entry| entry.value.as_deref()) != Some(value.as_str())
    });
    if !differs {
        return Ok(false);
    }
    let alter = topic.config.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(&topic.name)),
        |alter, (key, value)| alter.set(key, value),
    );
    let results = admin
        .alter_configs(&[alter], options)
        .await
        .map_err(|error| format!("alter config failed: {error}"))?;
    match results.into_iter().next() {
        Some(Err((_, code))) => Err(format!("alter config failed: {code}")),
        _ => {
            info!(topic = %topic.name, "applied topic configuration");
            Ok(true)
        }
    }
}

/// The topics deleting `store` deletes: those it created (every topic it asks for when its status
/// predates that record), less every topic another store on the same brokers asks for and that is
/// not being deleted itself — so two stores sharing a prefix never delete each other's topics.
pub fn topics_to_delete(store: &PlamatioStore, all_stores: &[PlamatioStore]) -> Vec<String> {
    let Some(kafka) = &store.spec.kafka else {
        return Vec::new();
    };
    let owned: Vec<String> = match store.status.as_ref().and_then(|s| s.owned_topics.clone()) {
        Some(owned) => owned,
        None => store
            .spec
            .desired_topics()
            .into_iter()
            .map(|topic| topic.name)
            .collect(),
    };
    let used_by_others: BTreeSet<String> = all_stores
        .iter()
        .filter(|other| other.metadata.uid != store.metadata.uid)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .filter(|other| {
            other
                .spec
                .kafka
                .as_ref()
                .is_some_and(|k| k.bootstrap_servers == kafka.bootstrap_servers)
        })
        .flat_map(|other| other.spec.desired_topics())
        .map(|topic| topic.name)
        .collect();
    owned
        .into_iter()
        .filter(|name| !used_by_others.contains(name))
        .collect()
}

/// Deletes the named topics; topics that are already gone count as deleted.
#[instrument(skip(admins, connection), fields(bootstrap = %connection.bootstrap_servers))]
pub async fn delete_topics(
    admins: &KafkaAdmins,
    connection: &KafkaConnection,
    names: &[String],
) -> Result<()> {
    let admin = admins.admin_for(connection)?;
    // Fail fast (and clearly) when the cluster is unreachable.
    partition_counts(&admin, names, connection.timeout).await?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(&names, &connection.options())
        .await
        .map_err(|error| Error::kafka("delete topics", error))?;
    for result in results {
        match result {
            Ok(name) => info!(topic = %name, "deleted topic"),
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => {
                return Err(Error::kafka(format!("delete topic {name}"), code));
            }
        }
    }
    Ok(())
}
