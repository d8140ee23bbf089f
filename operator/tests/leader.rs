//! The renew deadline of leader election: a replica that cannot show a renewal of its Lease within
//! the deadline stops leading, whatever kube-lease-manager still reports (it keeps `true` while its
//! renewals fail). Time is tokio's paused clock, so the test measures no wall time.

use std::time::Duration;

use plamatio_operator::leader::{LeaseReading, RenewalWatch, watch_renewals};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);
const PERIOD: Duration = Duration::from_secs(1);

fn held(renew_time: &str) -> LeaseReading {
    LeaseReading::Held {
        renew_time: Some(renew_time.to_owned()),
    }
}

fn unreadable() -> LeaseReading {
    LeaseReading::Unreadable {
        reason: "connection refused".to_owned(),
    }
}

#[tokio::test(start_paused = true)]
async fn leadership_ends_when_no_renewal_lands_within_the_deadline() {
    let started = Instant::now();
    let lost = watch_renewals(
        || async { unreadable() },
        RenewalWatch::new(DEADLINE, started),
        PERIOD,
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited > DEADLINE && waited <= DEADLINE + 2 * PERIOD,
        "stopped after {waited:?}"
    );
    assert!(
        lost.0.contains("renew deadline") && lost.0.contains("connection refused"),
        "{lost}"
    );
}

#[tokio::test(start_paused = true)]
async fn leadership_lasts_while_renewals_land() {
    let started = Instant::now();
    // kube-lease-manager renews every 7 s: the Lease shows a new renewTime each 7 s.
    let watch = watch_renewals(
        move || async move {
            let renewal = started.elapsed().as_secs() / 7;
            held(&format!("renewal-{renewal}"))
        },
        RenewalWatch::new(DEADLINE, started),
        PERIOD,
    );
    let outcome = tokio::time::timeout(Duration::from_secs(600), watch).await;
    assert!(outcome.is_err(), "lost leadership: {outcome:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stale_renew_time_counts_as_no_renewal() {
    let started = Instant::now();
    // The API server answers, but the renewTime never moves: renewals are failing.
    let lost = watch_renewals(
        || async { held("2026-12-02T18:00:00Z") },
        RenewalWatch::new(DEADLINE, started),
        PERIOD,
    )
    .await;
    assert!(started.elapsed() > DEADLINE, "{lost}");
}

#[tokio::test(start_paused = true)]
async fn another_holder_ends_leadership_at_once() {
    let started = Instant::now();
    let lost = watch_renewals(
        || async {
            LeaseReading::HeldByOther {
                holder: "plamatio-operator-7d9f-b".to_owned(),
            }
        },
        RenewalWatch::new(DEADLINE, started),
        PERIOD,
    )
    .await;
    assert_eq!(started.elapsed(), PERIOD);
    assert_eq!(lost.0, "the Lease is held by plamatio-operator-7d9f-b");
}

#[test]
fn a_renewal_after_failed_reads_resets_the_deadline() {
    let start = Instant::now();
    let mut watch = RenewalWatch::new(DEADLINE, start);
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    assert!(watch.observe(held("t0"), at(1)).is_ok());
    assert!(watch.observe(unreadable(), at(9)).is_ok());
    assert!(watch.observe(held("t1"), at(10)).is_ok(), "renewed in time");
    assert!(watch.observe(unreadable(), at(19)).is_ok());
    assert!(
        watch.observe(unreadable(), at(21)).is_err(),
        "11 s since t1"
    );
}
