//! The migration Job: runs `plamatio-api migrate` from the API image once per schema version. The
//! version is the API image's tag (or digest), whose digest names the Job, so a new image migrates once
//! and an unchanged one never again.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::deployment::{API_USER_ID, api_image};
use super::{
    BuildSettings, StoreIdentity, container_security_context, names, pod_security_context,
    secret_env,
};
use crate::crd::PlamatioStoreSpec;

/// Annotation on the Job with the full, unshortened schema version.
pub const SCHEMA_VERSION_ANNOTATION: &str = "plamatio.io/schema-version";

/// The schema version an image carries: its digest (`sha256:…`, complete) when pinned by one, else
/// its tag, else `latest`. Never shortened: the Job name digests all of it.
pub fn schema_version(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        return digest.to_owned();
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_owned(),
        _ => "latest".to_owned(),
    }
}

/// First wait before a failed migration Job is run again, doubled per failure.
pub const MIGRATION_RETRY_BASE: Duration = Duration::from_secs(30);
/// Longest wait between two runs of a failing migration.
pub const MIGRATION_RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// How long after its failure a migration Job that failed `failures` times in a row is left alone
/// before it is deleted and run again: `None` when that time has passed. The wait doubles per
/// failure (30 s, 1 min, 2 min … 30 min), so a database that comes back is migrated without anyone
/// deleting the Job, and a migration that keeps failing does not run in a loop.
pub fn migration_retry_wait(
    failures: u32,
    failed_at: Timestamp,
    now: Timestamp,
) -> Option<Duration> {
    let exponent = failures.saturating_sub(1).min(16);
    let wait = MIGRATION_RETRY_BASE
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(MIGRATION_RETRY_MAX);
    // Whole seconds: the Job's failure time has no finer precision on the server.
    let waited =
        Duration::from_secs(u64::try_from(now.duration_since(failed_at).as_secs()).unwrap_or(0));
    (waited < wait).then(|| wait - waited)
}

/// When the Job failed: its `Failed` condition's transition time.
pub fn failed_at(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|time| time.0)
}

/// The Job that migrates `identity`'s database to `version` (see [`names::migration_job_name`]).
pub fn migration_job_name(identity: &StoreIdentity, version: &str) -> String {
    names::migration_job_name(&identity.name, version)
}

pub fn build_migration_job(
    identity: &StoreIdentity,
    spec: &PlamatioStoreSpec,
    settings: &BuildSettings,
) -> Job {
    let image = api_image(spec, settings);
    let version = schema_version(&image);
    let mut metadata = identity.metadata(migration_job_name(identity, &version), "migration");
    metadata.annotations = Some(BTreeMap::from([(
        SCHEMA_VERSION_ANNOTATION.to_owned(),
        version.clone(),
    )]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            active_deadline_seconds: Some(900),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(identity.labels("migration")),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    service_account_name: Some(identity.api_name()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context(API_USER_ID)),
                    containers: vec![Container {
                        name: "migrate".to_owned(),
                        image: Some(image),
                        image_pull_policy: Some("IfNotPresent".to_owned()),
                        command: Some(vec!["plamatio-api".to_owned()]),
                        args: Some(vec!["migrate".to_owned()]),
                        env: Some(vec![secret_env::database_url_env(spec)]),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_owned(), Quantity("50m".to_owned())),
                                ("memory".to_owned(), Quantity("64Mi".to_owned())),
                            ])),
                            limits: Some(BTreeMap::from([(
                                "memory".to_owned(),
                                Quantity("256Mi".to_owned()),
                            )])),
                            ..ResourceRequirements::default()
                        }),
                        security_context: Some(container_security_context()),
                        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}
