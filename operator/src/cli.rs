//! Command line of the `plamatio-operator` binary: `run` (the default) with its settings from flags or
//! environment, `render -f store.yaml`, `crd`, `apply-crd` and `topics`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::build::{BuildSettings, DEFAULT_AGENT_IMAGE, DEFAULT_API_IMAGE};
use crate::controller::Settings;
use crate::leader::LeaseSettings;

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION_SECONDS: u64 = 15;

#[derive(Debug, Parser)]
#[command(
    name = "plamatio-operator",
    version,
    about = "Kubernetes operator for Plamatio stores"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default).
    Run(RunConfig),
    /// Print every child manifest the stores in a file would get, as a YAML stream.
    Render {
        /// File with one or more PlamatioStore documents.
        #[arg(short = 'f', long = "filename")]
        file: String,
        #[command(flatten)]
        images: ImageConfig,
    },
    /// Print the CustomResourceDefinition.
    Crd,
    /// Server-side apply this operator's CustomResourceDefinition to the cluster and wait until it
    /// is Established (the chart's pre-upgrade hook: Helm installs `crds/` but never upgrades it).
    ApplyCrd,
    /// Bring the Kafka topics of the stores in a file to their spec once (what the controller does
    /// each reconcile), print each topic's state, and fail when one is not ready. For local
    /// end-to-end runs and for checking credentials before applying a store.
    Topics {
        /// File with one or more PlamatioStore documents (other kinds are ignored).
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// SASL user, when the store's brokers need one.
        #[arg(long, env = "KAFKA_SASL_USERNAME")]
        sasl_username: Option<String>,
        /// SASL password.
        #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
        sasl_password: Option<String>,
        /// Bound of every admin request, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout_seconds: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ImageConfig {
    /// API image of stores that name none (the chart sets its app version).
    #[arg(long, env = "PLAMATIO_DEFAULT_API_IMAGE", default_value = DEFAULT_API_IMAGE)]
    pub default_api_image: String,
    /// Grafana Alloy image of stores that name none.
    #[arg(long, env = "PLAMATIO_DEFAULT_AGENT_IMAGE", default_value = DEFAULT_AGENT_IMAGE)]
    pub default_agent_image: String,
}

impl ImageConfig {
    pub fn build_settings(&self) -> BuildSettings {
        BuildSettings {
            default_api_image: self.default_api_image.clone(),
            default_agent_image: self.default_agent_image.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    #[command(flatten)]
    pub images: ImageConfig,
    /// Bound of every Kafka admin request, in seconds.
    #[arg(long, env = "KAFKA_TIMEOUT_SECONDS", default_value_t = 10)]
    pub kafka_timeout_seconds: u64,
    /// How long the topics finalizer retries before it gives up, in seconds.
    #[arg(long, env = "FINALIZER_TIMEOUT_SECONDS", default_value_t = 300)]
    pub finalizer_timeout_seconds: u64,
    /// Periodic re-check of each store, in seconds.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// How often every child of a store is re-applied to undo edits made outside the operator, in
    /// seconds (an unchanged apply writes nothing).
    #[arg(long, env = "DRIFT_REPAIR_SECONDS", default_value_t = 300)]
    pub drift_repair_seconds: u64,
    /// How long topics found ready are trusted before Kafka is asked again, in seconds (a change of
    /// the Kafka spec or credentials, or a failed check, asks at once).
    #[arg(long, env = "TOPIC_RESYNC_SECONDS", default_value_t = 300)]
    pub topic_resync_seconds: u64,
    /// Reconciles running at once (at least 1).
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 4)]
    pub reconcile_concurrency: u16,
    /// Stores whose API Deployment rolls to a new pod template at once (at least 1); the others
    /// wait with `Progressing=True/RolloutQueued`.
    #[arg(long, env = "MAX_CONCURRENT_ROLLOUTS", default_value_t = 5)]
    pub max_concurrent_rollouts: usize,
    /// Comma-separated namespaces to reconcile stores in (the namespace-scoped install, whose RBAC
    /// is a Role per namespace); empty: every namespace.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,
    /// Run without leader election (a single replica, or local development).
    #[arg(long, env = "DISABLE_LEADER_ELECTION")]
    pub disable_leader_election: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "plamatio-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "plamatio-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease and in Events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "plamatio-operator")]
    pub identity: String,
    /// Longest time without a confirmed Lease renewal before this replica stops acting and exits,
    /// in seconds (below the 15 s Lease duration).
    #[arg(long, env = "LEASE_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    pub lease_renew_deadline_seconds: u64,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

impl RunConfig {
    pub fn from_defaults() -> RunConfig {
        let cli = Cli::parse_from(["plamatio-operator", "run"]);
        match cli.command {
            Some(Command::Run(config)) => config,
            _ => unreachable!("the run subcommand always parses to Command::Run"),
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            build: self.images.build_settings(),
            kafka_timeout: Duration::from_secs(self.kafka_timeout_seconds.max(1)),
            finalizer_timeout: Duration::from_secs(self.finalizer_timeout_seconds),
            resync_interval: Duration::from_secs(self.resync_seconds.max(10)),
            drift_repair_interval: Duration::from_secs(self.drift_repair_seconds.max(10)),
            topic_resync_interval: Duration::from_secs(self.topic_resync_seconds),
            reconcile_concurrency: self.reconcile_concurrency.max(1),
            max_concurrent_rollouts: self.max_concurrent_rollouts.max(1),
            watch_namespaces: self
                .watch_namespaces
                .iter()
                .map(|namespace| namespace.trim().to_owned())
                .filter(|namespace| !namespace.is_empty())
                .collect(),
            ..Settings::default()
        }
    }

    pub fn lease(&self) -> LeaseSettings {
        LeaseSettings {
            name: self.lease_name.clone(),
            namespace: self.lease_namespace.clone(),
            identity: self.identity.clone(),
            // Renewals every 7 s (8 s before expiry), read back every second: a replica sees its
            // renewal within ~8 s, stops after 10 s without one, well before the 15 s expiry.
            duration_seconds: LEASE_DURATION_SECONDS,
            grace_seconds: 8,
            renew_deadline: Duration::from_secs(
                self.lease_renew_deadline_seconds
                    .clamp(2, LEASE_DURATION_SECONDS - 2),
            ),
            renew_check_period: Duration::from_secs(1),
            stop_grace: Duration::from_secs(2),
        }
    }
}
