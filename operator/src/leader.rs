//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): the controller runs only
//! while this replica holds the Lease, and stops as soon as it loses it.

use std::future::Future;
use std::sync::Arc;

use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use crate::controller::{self, Context};
use crate::error::{Error, Result};

/// Where the Lease lives and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

/// Waits for leadership, runs the controller while it lasts, and returns when leadership is lost or
/// `shutdown` resolves (the Lease is released then).
pub async fn run_while_leader(
    context: Arc<Context>,
    lease: LeaseSettings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let manager = LeaseManagerBuilder::new(context.client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.grace_seconds)
        .build()
        .await
        .map_err(|error| Error::LeaderElection(error.to_string()))?;
    let (mut leader, lease_task) = manager.watch().await;
    // The shutdown future is needed in two places; a watch channel fans it out.
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_sender.send(true);
    });
    let mut stop_waiting = stop_receiver.clone();
    info!(lease = %lease.name, identity = %lease.identity, "waiting for leadership");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    return Err(Error::LeaderElection("lease task ended".to_owned()));
                }
            }
            _ = stop_waiting.wait_for(|stopped| *stopped) => return Ok(()),
        }
    }
    info!("acquired leadership; starting the controller");
    context.metrics.leader.set(1);
    let mut stop_running = stop_receiver;
    let stop = async move {
        tokio::select! {
            () = async {
                loop {
                    if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                        break;
                    }
                }
                warn!("lost leadership; stopping the controller");
            } => {},
            _ = stop_running.wait_for(|stopped| *stopped) => {},
        }
    };
    controller::run(Arc::clone(&context), stop).await;
    context.metrics.leader.set(0);
    // The receiver was dropped with `lost`, so the lease task releases the Lease and ends.
    match lease_task.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(Error::LeaderElection(error.to_string())),
        Err(error) => Err(Error::LeaderElection(error.to_string())),
    }
}
