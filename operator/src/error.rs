//! The operator's one error type: every failure a reconcile, the CLI or the Kafka step can hit, with a
//! short label for the `failures` metric.

use thiserror::Error;

/// The underlying error a variant keeps as its source, so the whole chain stays inspectable.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `": <source>"`, or nothing: variants with an optional source show it in their message.
fn suffix(source: &Option<Cause>) -> String {
    source
        .as_ref()
        .map(|source| format!(": {source}"))
        .unwrap_or_default()
}

/// Everything that can go wrong while reconciling a store or running the operator's commands.
#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// The API server refused a child: its reason (`Invalid`, `Forbidden`, `AdmissionWebhookDenied`,
    /// `Conflict`, else `ApplyFailed`) and its message, as the store's `Degraded` condition shows them.
    #[error("applying {child} failed: {message}")]
    ApplyFailed {
        child: String,
        reason: &'static str,
        message: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },

    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretKeyNotFound {
        namespace: String,
        name: String,
        key: String,
    },

    #[error("Secret {namespace}/{name} is invalid: {reason}")]
    InvalidSecret {
        namespace: String,
        name: String,
        reason: String,
    },

    #[error("store name {name:?} is refused: {reason}")]
    InvalidStoreName { name: String, reason: String },

    /// The child caches have no complete list yet (operator start) or do not cover the namespace.
    #[error("child caches not ready: {reason}")]
    CacheNotReady { reason: String },

    #[error("the store has no {0} (it was not read from the API server)")]
    MissingObjectKey(&'static str),

    /// A Kafka admin step (`what`) failed; `source` is the client's or the broker's error.
    #[error("Kafka: {what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: Cause,
    },

    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid store manifest: {what}{}", suffix(.source))]
    InvalidManifest {
        what: String,
        #[source]
        source: Option<Cause>,
    },

    #[error("leader election: {what}{}", suffix(.source))]
    LeaderElection {
        what: String,
        #[source]
        source: Option<Cause>,
    },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(Box::new(error))
    }
}

impl Error {
    /// A stable, low-cardinality label for the `plamatio_operator_reconcile_failures_total` metric and
    /// for condition reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApiError",
            Error::ApplyFailed { reason, .. } => reason,
            Error::SecretNotFound { .. } | Error::SecretKeyNotFound { .. } => "SecretNotFound",
            Error::InvalidSecret { .. } => "InvalidSecret",
            Error::InvalidStoreName { .. } => "InvalidName",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::CacheNotReady { .. } => "CacheNotReady",
            Error::Kafka { .. } => "KafkaUnavailable",
            Error::Serialize { .. } => "SerializationFailed",
            Error::InvalidManifest { .. } => "InvalidManifest",
            Error::LeaderElection { .. } => "LeaderElection",
            Error::Io { .. } => "IoError",
        }
    }
}

impl Error {
    /// A failed Kafka admin step.
    pub fn kafka(what: impl Into<String>, source: impl Into<Cause>) -> Error {
        Error::Kafka {
            what: what.into(),
            source: source.into(),
        }
    }

    /// A manifest that cannot be read or written, with the parser's error when there is one.
    pub fn invalid_manifest(what: impl Into<String>, source: Option<Cause>) -> Error {
        Error::InvalidManifest {
            what: what.into(),
            source,
        }
    }

    /// A leader-election failure, with the lease client's error when there is one.
    pub fn leader_election(what: impl Into<String>, source: Option<Cause>) -> Error {
        Error::LeaderElection {
            what: what.into(),
            source,
        }
    }

    /// A refused apply of `child`, classified by what the API server answered.
    pub fn apply_failed(child: String, error: kube::Error) -> Error {
        let (reason, message) = match &error {
            kube::Error::Api(status) => {
                let reason = if status.message.contains("admission webhook") {
                    "AdmissionWebhookDenied"
                } else {
                    match status.code {
                        403 => "Forbidden",
                        422 => "Invalid",
                        409 => "Conflict",
                        _ => "ApplyFailed",
                    }
                };
                (reason, status.message.clone())
            }
            other => ("ApplyFailed", other.to_string()),
        };
        Error::ApplyFailed {
            child,
            reason,
            message,
            source: Box::new(error),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
