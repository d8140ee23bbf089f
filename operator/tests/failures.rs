//! How refusals of the API server reach a user: the reason each kind of refusal gets on the store's
//! `Degraded` condition (and in the failures metric), and the bounds of Event notes and condition
//! messages the API server enforces.

use kube::core::Status;
use plamatio_operator::Error;
use plamatio_operator::controller::{MAX_EVENT_NOTE_BYTES, event_note};
use plamatio_operator::status::{MAX_CONDITION_MESSAGE_BYTES, cut_to};

fn refused(code: u16, reason: &str, message: &str) -> Error {
    let status = Status {
        code,
        reason: reason.to_owned(),
        message: message.to_owned(),
        ..Status::default()
    };
    Error::apply_failed(
        "Deployment/shop-api".to_owned(),
        kube::Error::Api(Box::new(status)),
    )
}

#[test]
fn each_refusal_gets_the_reason_a_user_can_act_on() {
    let table = [
        (
            422,
            "Invalid",
            "Deployment.apps \"shop-api\" is invalid: spec.replicas: Invalid value: -1",
            "Invalid",
        ),
        (
            403,
            "Forbidden",
            "deployments.apps \"shop-api\" is forbidden: User \"system:serviceaccount:plamatio-system:plamatio-operator\" cannot patch resource \"deployments\"",
            "Forbidden",
        ),
        (
            400,
            "BadRequest",
            "admission webhook \"validate.kyverno.svc\" denied the request: images must be signed",
            "AdmissionWebhookDenied",
        ),
        (
            403,
            "Forbidden",
            "admission webhook \"gatekeeper\" denied the request: [require-labels] missing team",
            "AdmissionWebhookDenied",
        ),
        (409, "Conflict", "Apply failed with 1 conflict", "Conflict"),
        (
            500,
            "InternalError",
            "etcdserver: request timed out",
            "ApplyFailed",
        ),
    ];
    for (code, status_reason, message, want) in table {
        let error = refused(code, status_reason, message);
        assert_eq!(error.metric_label(), want, "{code} {message}");
        assert_eq!(
            error.to_string(),
            format!("applying Deployment/shop-api failed: {message}")
        );
    }
}

#[test]
fn an_event_note_is_cut_to_one_kib_at_a_character_boundary() {
    let short = "applied ServiceAccount/shop-api".to_owned();
    assert_eq!(event_note(short.clone()), short);
    let long = "ü".repeat(2000);
    let note = event_note(long);
    assert!(note.len() <= MAX_EVENT_NOTE_BYTES, "{}", note.len());
    assert!(note.ends_with(" …"));
    let exact = "a".repeat(MAX_EVENT_NOTE_BYTES);
    assert_eq!(event_note(exact.clone()), exact);
}

#[test]
fn a_condition_message_is_cut_to_what_metav1_condition_accepts() {
    let message = cut_to("x".repeat(40_000), MAX_CONDITION_MESSAGE_BYTES);
    assert!(message.len() <= MAX_CONDITION_MESSAGE_BYTES);
}

#[test]
fn healthz_fails_only_while_watch_errors_keep_coming() {
    use plamatio_operator::metrics::{WATCH_ERROR_WINDOW, WatchHealth};
    use std::time::{Duration, Instant};
    let start = Instant::now();
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    let mut health = WatchHealth::default();
    assert!(
        health.check(at(0)).is_ok(),
        "healthy before any watch error"
    );
    health.watch_failed(at(10), "403 Forbidden: deployments".to_owned());
    assert_eq!(
        health.check(at(11)),
        Err("403 Forbidden: deployments".to_owned())
    );
    health.reconciled(at(12));
    assert!(
        health.check(at(13)).is_ok(),
        "a reconcile after it: watching again"
    );
    health.watch_failed(at(20), "connection refused".to_owned());
    assert!(health.check(at(21)).is_err());
    assert!(
        health
            .check(at(20) + WATCH_ERROR_WINDOW + Duration::from_secs(1))
            .is_ok(),
        "an error that does not come back stops counting"
    );
}

#[tokio::test]
async fn the_healthz_endpoint_answers_503_while_a_watch_fails() {
    use axum::extract::State;
    use axum::response::IntoResponse;
    use plamatio_operator::metrics::{Metrics, healthz};
    use std::sync::Arc;
    let metrics = Arc::new(Metrics::new());
    let ok = healthz(State(Arc::clone(&metrics))).await.into_response();
    assert_eq!(ok.status(), axum::http::StatusCode::OK);
    metrics.watch_failed("connection refused".to_owned());
    let failing = healthz(State(Arc::clone(&metrics))).await.into_response();
    assert_eq!(
        failing.status(),
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        metrics
            .render()
            .contains("plamatio_operator_watch_errors_total 1")
    );
}
