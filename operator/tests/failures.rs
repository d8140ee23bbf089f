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
