//! The migration Job: runs `plamatio-api migrate` from the API image once per schema version. The
//! version is the API image's tag (or digest), which names the Job, so a new image migrates once and an
//! unchanged one never again.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::deployment::{API_USER_ID, api_image};
use super::{
    BuildSettings, StoreIdentity, container_security_context, pod_security_context, secret_env,
};
use crate::crd::PlamatioStoreSpec;

/// Annotation on the Job with the full, unshortened schema version.
pub const SCHEMA_VERSION_ANNOTATION: &str = "plamatio.io/schema-version";
const MAX_VERSION_LENGTH: usize = 20;

/// The schema version an image carries: its tag, else the start of its digest, else `latest`.
pub fn schema_version(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
        return hex.chars().take(12).collect();
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag.to_owned(),
        _ => "latest".to_owned(),
    }
}

/// A schema version shortened and lowered into something a DNS label accepts.
pub fn version_label(version: &str) -> String {
    let sanitized: String = version
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed: String = sanitized
        .trim_matches('-')
        .chars()
        .take(MAX_VERSION_LENGTH)
        .collect();
    let trimmed = trimmed.trim_end_matches('-').to_owned();
    if trimmed.is_empty() {
        "unknown".to_owned()
    } else {
        trimmed
    }
}

pub fn migration_job_name(identity: &StoreIdentity, version: &str) -> String {
    format!("{}-migrate-{}", identity.name, version_label(version))
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
