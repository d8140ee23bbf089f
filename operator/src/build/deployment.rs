//! The API Deployment: hardened pods running `plamatio-api serve --no-migrate`, configured from the
//! ConfigMap and Secrets, probed on `/healthz` and `/readyz`, spread over nodes and zones, and rolled
//! whenever the config hash changes; its replica count handed over to the autoscaler without a
//! scale-down.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource,
    HTTPGetAction, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, TopologySpreadConstraint,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    BuildSettings, CONFIG_HASH_ANNOTATION, MANAGER, ResolvedSecrets, StoreIdentity,
    container_security_context, pod_security_context, secret_env,
};
use crate::crd::{ApiSpec, PlamatioStoreSpec};

/// The API image's non-root user (distroless `nonroot`).
pub const API_USER_ID: i64 = 65532;
pub const CONTAINER_NAME: &str = "api";

/// Requests and limits used when the spec sets none.
pub fn default_api_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("128Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("256Mi".to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn spread(topology_key: &str, selector: &BTreeMap<String, String>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: topology_key.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }
}

/// The API Deployment's replica count on the server, and whether a field manager other than the
/// operator's apply owns `spec.replicas` (the HorizontalPodAutoscaler once it has scaled, through
/// the `scale` subresource, or a person's `kubectl scale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveReplicas {
    pub count: i32,
    pub owned_by_another_manager: bool,
}

impl LiveReplicas {
    /// Reads the count and the owners of `spec.replicas` from the Deployment's `managedFields`.
    pub fn of(deployment: &Deployment) -> Option<LiveReplicas> {
        let count = deployment.spec.as_ref()?.replicas?;
        let owned_by_another_manager = deployment
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|entry| {
                let operators_apply = entry.manager.as_deref() == Some(MANAGER)
                    && entry.operation.as_deref() == Some("Apply")
                    && entry.subresource.as_deref().unwrap_or_default().is_empty();
                !operators_apply
            })
            .any(|entry| {
                entry
                    .fields_v1
                    .as_ref()
                    .is_some_and(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
            });
        Some(LiveReplicas {
            count,
            owned_by_another_manager,
        })
    }
}

/// The replica count the operator applies. Without an autoscaler: the spec's. With one: none once
/// another field manager owns `spec.replicas`, so the autoscaler keeps the field. Until then the
/// live count (the autoscaler's minimum for a new Deployment): an applied configuration that drops
/// a field its only owner held makes the API server remove it, and defaulting then sets 1 replica —
/// turning autoscaling on would scale a live store down to one pod.
pub fn applied_replicas(api: &ApiSpec, live: Option<LiveReplicas>) -> Option<i32> {
    let Some(autoscaling) = &api.autoscaling else {
        return Some(api.replicas());
    };
    match live {
        None => Some(autoscaling.min_replicas),
        Some(live) if live.owned_by_another_manager => None,
        Some(live) => Some(live.count),
    }
}

/// The image of the API, from the spec or the operator's default.
pub fn api_image(spec: &PlamatioStoreSpec, settings: &BuildSettings) -> String {
    spec.api()
        .image
        .unwrap_or_else(|| settings.default_api_image.clone())
}

pub fn build_api_deployment(
    identity: &StoreIdentity,
    spec: &PlamatioStoreSpec,
    secrets: &ResolvedSecrets,
    settings: &BuildSettings,
    config_hash: &str,
    live_replicas: Option<LiveReplicas>,
) -> Deployment {
    let api = spec.api();
    let selector = identity.selector_labels("api");
    let container = Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(api_image(spec, settings)),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec!["plamatio-api".to_owned()]),
        args: Some(vec!["serve".to_owned(), "--no-migrate".to_owned()]),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: api.port(),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: identity.api_name(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(secret_env::api_secret_environment(spec, secrets)),
        resources: Some(api.resources.clone().unwrap_or_else(default_api_resources)),
        startup_probe: Some(http_probe("/healthz", 2, 30)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(identity.labels("api")),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_owned(),
                config_hash.to_owned(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(identity.api_name()),
            automount_service_account_token: Some(false),
            security_context: Some(pod_security_context(API_USER_ID)),
            containers: vec![container],
            volumes: Some(vec![Volume {
                name: "tmp".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("64Mi".to_owned())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            }]),
            termination_grace_period_seconds: Some(30),
            topology_spread_constraints: Some(vec![
                spread("kubernetes.io/hostname", &selector),
                spread("topology.kubernetes.io/zone", &selector),
            ]),
            ..PodSpec::default()
        }),
    };
    Deployment {
        metadata: identity.metadata(identity.api_name(), "api"),
        spec: Some(DeploymentSpec {
            replicas: applied_replicas(&api, live_replicas),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
