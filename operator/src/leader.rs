//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): the controller runs only
//! while this replica holds the Lease, and stops as soon as it loses it — or as soon as it cannot
//! show that it still holds it. kube-lease-manager keeps reporting leadership while its renewals
//! fail (it retries with backoff), so a replica cut off from the API server would act on after
//! another replica took the expired Lease. A watchdog therefore reads the Lease and requires a new
//! `renewTime` by this replica within the renew deadline (shorter than the Lease duration, as in
//! controller-runtime); without one the controller stops, in-flight reconciles are abandoned, and
//! the process exits with an error for the kubelet to restart it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::controller::{self, Context};
use crate::error::{Error, Result};

/// Where the Lease lives, who this replica is, and the timing of renewals.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_seconds: u64,
    /// kube-lease-manager renews `grace_seconds` before the Lease would expire.
    pub grace_seconds: u64,
    /// Longest time without a confirmed renewal before this replica stops acting; shorter than the
    /// Lease duration so it stops before another replica may take the Lease.
    pub renew_deadline: Duration,
    /// How often the watchdog reads the Lease.
    pub renew_check_period: Duration,
    /// How long in-flight reconciles may take to finish once leadership is lost.
    pub stop_grace: Duration,
}

/// What one read of the Lease showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseReading {
    /// This replica holds it, renewed at `renew_time` (as the API server stores it).
    Held { renew_time: Option<String> },
    /// Another replica holds it (or nobody does).
    HeldByOther { holder: String },
    /// The API server did not answer in time or refused the read.
    Unreadable { reason: String },
}

/// Why this replica stopped leading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeadershipLost(pub String);

impl fmt::Display for LeadershipLost {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The watchdog's memory: the last renewal it saw land, and when.
#[derive(Clone, Debug)]
pub struct RenewalWatch {
    deadline: Duration,
    last_renew_time: Option<String>,
    last_confirmed: Instant,
    last_failure: Option<String>,
}

impl RenewalWatch {
    /// Starts at acquisition: acquiring is a renewal.
    pub fn new(deadline: Duration, acquired_at: Instant) -> RenewalWatch {
        RenewalWatch {
            deadline,
            last_renew_time: None,
            last_confirmed: acquired_at,
            last_failure: None,
        }
    }

    /// Records one reading; `Err` when this replica must stop leading. A renewal counts only when the
    /// API server shows a `renewTime` it has not shown before (no comparison of clocks across
    /// machines).
    pub fn observe(
        &mut self,
        reading: LeaseReading,
        now: Instant,
    ) -> std::result::Result<(), LeadershipLost> {
        match reading {
            LeaseReading::HeldByOther { holder } => {
                return Err(LeadershipLost(format!("the Lease is held by {holder}")));
            }
            LeaseReading::Held { renew_time } => {
                if renew_time.is_some() && renew_time != self.last_renew_time {
                    self.last_renew_time = renew_time;
                    self.last_confirmed = now;
                    self.last_failure = None;
                }
            }
            LeaseReading::Unreadable { reason } => self.last_failure = Some(reason),
        }
        let silent = now.saturating_duration_since(self.last_confirmed);
        if silent > self.deadline {
            let cause = self
                .last_failure
                .as_deref()
                .map(|reason| format!(" (last read: {reason})"))
                .unwrap_or_default();
            return Err(LeadershipLost(format!(
                "no Lease renewal confirmed for {}s, over the {}s renew deadline{cause}",
                silent.as_secs(),
                self.deadline.as_secs()
            )));
        }
        Ok(())
    }
}

/// Reads the Lease every `period` until `watch` says leadership is lost; each read is bounded by
/// `period`.
pub async fn watch_renewals<Read, Reading>(
    mut read: Read,
    mut watch: RenewalWatch,
    period: Duration,
) -> LeadershipLost
where
    Read: FnMut() -> Reading,
    Reading: Future<Output = LeaseReading>,
{
    loop {
        tokio::time::sleep(period).await;
        let reading = match tokio::time::timeout(period, read()).await {
            Ok(reading) => reading,
            Err(_) => LeaseReading::Unreadable {
                reason: format!("no answer within {}ms", period.as_millis()),
            },
        };
        if let Err(lost) = watch.observe(reading, Instant::now()) {
            return lost;
        }
    }
}

/// One read of the Lease, from this replica's point of view.
async fn read_lease(api: &Api<Lease>, name: &str, identity: &str) -> LeaseReading {
    match api.get_opt(name).await {
        Ok(Some(lease)) => {
            let spec = lease.spec.unwrap_or_default();
            match spec.holder_identity {
                Some(holder) if holder == identity => LeaseReading::Held {
                    renew_time: spec.renew_time.map(|time| time.0.to_string()),
                },
                Some(holder) => LeaseReading::HeldByOther { holder },
                None => LeaseReading::HeldByOther {
                    holder: "nobody".to_owned(),
                },
            }
        }
        Ok(None) => LeaseReading::HeldByOther {
            holder: "nobody (the Lease is gone)".to_owned(),
        },
        Err(error) => LeaseReading::Unreadable {
            reason: error.to_string(),
        },
    }
}

fn lease_watchdog(
    client: Client,
    lease: &LeaseSettings,
) -> impl Future<Output = LeadershipLost> + Send + 'static {
    let api: Api<Lease> = Api::namespaced(client, &lease.namespace);
    let name = lease.name.clone();
    let identity = lease.identity.clone();
    let watch = RenewalWatch::new(lease.renew_deadline, Instant::now());
    let period = lease.renew_check_period;
    watch_renewals(
        move || {
            let (api, name, identity) = (api.clone(), name.clone(), identity.clone());
            async move { read_lease(&api, &name, &identity).await }
        },
        watch,
        period,
    )
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
        .map_err(|error| {
            Error::leader_election("cannot build the lease manager", Some(error.into()))
        })?;
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
                    return Err(Error::leader_election("lease task ended", None));
                }
            }
            _ = stop_waiting.wait_for(|stopped| *stopped) => return Ok(()),
        }
    }
    info!("acquired leadership; starting the controller");
    context.metrics.leader.set(1);
    let mut stop_running = stop_receiver;
    // A task, so the stop future stays `Sync` (the Lease reads' futures are not).
    let watchdog = tokio::spawn(lease_watchdog(context.client.clone(), &lease));
    let watchdog_task = watchdog.abort_handle();
    let (lost_sender, mut lost_receiver) = tokio::sync::watch::channel(None::<LeadershipLost>);
    let lost_renewal = lost_sender.subscribe();
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
            lost = watchdog => {
                let lost = lost.unwrap_or_else(|error| {
                    LeadershipLost(format!("the renewal watchdog ended: {error}"))
                });
                error!(%lost, "leadership can no longer be shown; stopping the controller");
                let _ = lost_sender.send(Some(lost));
            },
            _ = stop_running.wait_for(|stopped| *stopped) => {},
        }
    };
    let stop_grace = lease.stop_grace;
    // After a lost renewal nothing may keep writing: reconciles still running after the grace are
    // dropped mid-flight (their next step would act without the Lease).
    let abandon = async move {
        // A stop for any other reason (shutdown, a released Lease) drops the sender: then the
        // controller's graceful shutdown is left to finish.
        if lost_receiver.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(stop_grace).await;
    };
    tokio::select! {
        () = controller::run(Arc::clone(&context), stop) => {},
        () = abandon => warn!("reconciles still running after the stop grace were abandoned"),
    }
    watchdog_task.abort();
    context.metrics.leader.set(0);
    let lost = lost_renewal.borrow().clone();
    // The leadership receiver was dropped with `stop`, so the lease task releases the Lease and
    // ends; bounded, since the API server may be out of reach.
    let released = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    if let Some(lost) = lost {
        // Exit with an error (as controller-runtime does) so the kubelet restarts this replica as
        // a follower.
        return Err(Error::leader_election(lost.to_string(), None));
    }
    match released {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(error))) => Err(Error::leader_election(
            "releasing the Lease",
            Some(error.into()),
        )),
        Ok(Err(error)) => Err(Error::leader_election(
            "the lease task failed",
            Some(error.into()),
        )),
        Err(_) => Err(Error::leader_election(
            "the Lease was not released within 5s",
            None,
        )),
    }
}
