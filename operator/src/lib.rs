//! Plamatio operator: turns each `PlamatioStore` into a running, observable store API — CRD types,
//! pure child builders, the controller, Kafka topic management, metrics and the `render` command.

pub mod apply;
pub mod build;
pub mod cache;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod kafka;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod secrets;
pub mod status;

pub use error::{Error, Result};

use std::sync::Arc;

use tracing::{error, info};

use crate::cli::{Cli, Command, LogFormat, RunConfig};

/// Installs the global tracing subscriber; `RUST_LOG` overrides the default `info` filter.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = terminate => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the operator: metrics server, leader election and the controller.
pub async fn run_operator(config: RunConfig) -> anyhow::Result<()> {
    init_tracing(config.log_format);
    // kube's rustls uses ring; make it the process default before any TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(metrics::Metrics::new());
    let context = Arc::new(controller::Context::new(
        client,
        config.settings(),
        Arc::clone(&metrics),
        Some(config.identity.clone()),
    ));
    let metrics_server = tokio::spawn(metrics::serve(config.metrics_address, Arc::clone(&metrics)));
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "plamatio-operator starting"
    );
    let result = if config.disable_leader_election {
        metrics.leader.set(1);
        controller::run(context, shutdown_signal()).await;
        Ok(())
    } else {
        leader::run_while_leader(context, config.lease(), shutdown_signal()).await
    };
    metrics_server.abort();
    if let Err(error) = &result {
        error!(%error, "operator stopped with an error");
    }
    Ok(result?)
}

/// Entry point of the binary: parses the command line and runs the chosen command.
pub async fn main_entry() -> anyhow::Result<()> {
    use clap::Parser;
    let cli = Cli::parse();
    match cli.command {
        None => run_operator(RunConfig::from_defaults()).await,
        Some(Command::Run(config)) => run_operator(config).await,
        Some(Command::Render { file, images }) => {
            let output = render::render_file(&file, &images.build_settings())?;
            print!("{output}");
            Ok(())
        }
        Some(Command::Crd) => {
            print!("{}", crdgen::crd_yaml()?);
            Ok(())
        }
        Some(Command::ApplyCrd) => {
            init_tracing(LogFormat::Json);
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_default().await?;
            crdgen::apply_crd(&client, crdgen::CRD_ESTABLISHED_TIMEOUT).await?;
            info!("CustomResourceDefinition applied and established");
            Ok(())
        }
        Some(Command::Topics {
            file,
            sasl_username,
            sasl_password,
            timeout_seconds,
        }) => {
            let yaml = std::fs::read_to_string(&file)?;
            let credentials = sasl_username.zip(sasl_password);
            let timeout = std::time::Duration::from_secs(timeout_seconds.max(1));
            let mut all_ready = true;
            let admins = kafka::KafkaAdmins::default();
            for store in render::parse_stores(&yaml)? {
                let name = store.metadata.name.clone().unwrap_or_default();
                let Some(connection) =
                    kafka::KafkaConnection::for_spec(&store.spec, credentials.clone(), timeout)
                else {
                    println!("{name}: no kafka configured");
                    continue;
                };
                let report =
                    kafka::reconcile_topics(&admins, &connection, &store.spec.desired_topics())
                        .await?;
                for topic in &report.topics {
                    println!(
                        "{name}: {} partitions={} state={:?}{}",
                        topic.name,
                        topic.partitions.unwrap_or_default(),
                        topic.state,
                        topic
                            .message
                            .as_deref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    );
                }
                all_ready &= report.all_ready();
            }
            anyhow::ensure!(all_ready, "some topics are not ready");
            Ok(())
        }
    }
}
