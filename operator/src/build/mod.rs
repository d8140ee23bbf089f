//! Pure builders of every child object of a store: names, labels, owner references and the ordered list
//! of children a spec asks for. No I/O happens here; the controller and `render` both call
//! [`build_children`].

pub mod alloy;
pub mod config_map;
pub mod dashboard;
pub mod deployment;
pub mod hpa;
pub mod migration_job;
pub mod names;
pub mod network_policy;
pub mod pdb;
pub mod secret_env;
pub mod service;
pub mod service_account;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, PodSecurityContext, SeccompProfile, SecurityContext, Service,
    ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::core::ApiResource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::PlamatioStore;
use crate::error::{Error, Result};

/// The field manager of every server-side apply and the `managed-by` label value.
pub const MANAGER: &str = "plamatio-operator";
/// Label carrying the owning store's name on every child (used to list and prune them).
pub const STORE_LABEL: &str = "plamatio.io/store";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Pod template annotation whose change rolls the pods when configuration or Secrets change.
pub const CONFIG_HASH_ANNOTATION: &str = "plamatio.io/config-hash";
/// Annotation with the digest of the applied object, so an unchanged child is not applied again.
pub const APPLIED_HASH_ANNOTATION: &str = "plamatio.io/applied-hash";

pub const DEFAULT_API_IMAGE: &str = "ghcr.io/plamatio/plamatio-api:0.1.0";
pub const DEFAULT_AGENT_IMAGE: &str = "grafana/alloy:v1.8.3";

/// Operator-wide settings the builders need besides the spec.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    pub default_api_image: String,
    pub default_agent_image: String,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            default_api_image: DEFAULT_API_IMAGE.to_owned(),
            default_agent_image: DEFAULT_AGENT_IMAGE.to_owned(),
        }
    }
}

/// What the operator learned from the Secrets a store references. Only what the builders need leaves
/// this struct: key names, ports, and a digest of every value (to roll pods on rotation).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedSecrets {
    /// SHA-256 over every referenced value, hex.
    pub digest: String,
    /// Keys of the API keys Secret, sorted (each `scope` or `scope.suffix`).
    pub api_key_names: Vec<String>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    /// Kafka SASL username and password, for the operator's own admin client.
    pub kafka_credentials: Option<(String, String)>,
}

impl fmt::Debug for ResolvedSecrets {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ResolvedSecrets")
            .field("digest", &self.digest)
            .field("api_key_names", &self.api_key_names)
            .finish_non_exhaustive()
    }
}

impl ResolvedSecrets {
    /// What `render` assumes without cluster access: the API keys Secret holds `storefront` and
    /// `admin`, and URLs use their default ports.
    pub fn assumed(store: &PlamatioStore) -> ResolvedSecrets {
        let api_key_names = match store.spec.api().api_keys_secret_ref {
            Some(_) => vec!["admin".to_owned(), "storefront".to_owned()],
            None => Vec::new(),
        };
        ResolvedSecrets {
            digest: "unresolved".to_owned(),
            api_key_names,
            ..ResolvedSecrets::default()
        }
    }
}

/// What the builders need to know of the cluster as it is; empty for a store not applied yet (and
/// for `render`, which has no cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveState {
    /// The API Deployment's replica count and its owners, when the Deployment exists.
    pub api_replicas: Option<deployment::LiveReplicas>,
}

/// The store's identity as children need it.
#[derive(Clone, Debug)]
pub struct StoreIdentity {
    pub name: String,
    pub namespace: String,
    pub owner_reference: Option<OwnerReference>,
}

impl StoreIdentity {
    pub fn of(store: &PlamatioStore) -> Result<StoreIdentity> {
        let name = store
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingObjectKey("metadata.name"))?;
        let namespace = store
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        Ok(StoreIdentity {
            name,
            namespace,
            owner_reference: store.controller_owner_ref(&()),
        })
    }

    pub fn api_name(&self) -> String {
        format!("{}{}", self.name, names::API_SUFFIX)
    }

    pub fn agent_name(&self) -> String {
        format!("{}{}", self.name, names::AGENT_SUFFIX)
    }

    pub fn dashboard_name(&self) -> String {
        format!("{}{}", self.name, names::DASHBOARD_SUFFIX)
    }

    /// In-cluster URL of the API Service.
    pub fn endpoint(&self) -> String {
        format!(
            "http://{}.{}.svc:{}",
            self.api_name(),
            self.namespace,
            service::SERVICE_PORT
        )
    }

    /// Labels every child carries.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
        labels.insert(STORE_LABEL.to_owned(), self.name.clone());
        labels.insert(
            "app.kubernetes.io/part-of".to_owned(),
            "plamatio".to_owned(),
        );
        labels
    }

    /// The subset of labels that selects a component's pods.
    pub fn selector_labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                format!("plamatio-{component}"),
            ),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
            (
                "app.kubernetes.io/component".to_owned(),
                component.to_owned(),
            ),
        ])
    }

    /// Metadata of a child: name, namespace, labels and the controller owner reference.
    pub fn metadata(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: self.owner_reference.clone().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }
}

/// The kinds of object the operator creates, in the order they are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    ServiceAccount,
    Role,
    RoleBinding,
    ConfigMap,
    Job,
    Deployment,
    Service,
    PodDisruptionBudget,
    HorizontalPodAutoscaler,
    NetworkPolicy,
}

impl ChildKind {
    pub const ALL: [ChildKind; 10] = [
        ChildKind::ServiceAccount,
        ChildKind::Role,
        ChildKind::RoleBinding,
        ChildKind::ConfigMap,
        ChildKind::Job,
        ChildKind::Deployment,
        ChildKind::Service,
        ChildKind::PodDisruptionBudget,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::NetworkPolicy,
    ];

    pub fn api_resource(self) -> ApiResource {
        match self {
            ChildKind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
            ChildKind::Role => ApiResource::erase::<Role>(&()),
            ChildKind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
            ChildKind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            ChildKind::Job => ApiResource::erase::<Job>(&()),
            ChildKind::Deployment => ApiResource::erase::<Deployment>(&()),
            ChildKind::Service => ApiResource::erase::<Service>(&()),
            ChildKind::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
            ChildKind::HorizontalPodAutoscaler => {
                ApiResource::erase::<HorizontalPodAutoscaler>(&())
            }
            ChildKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::ServiceAccount => "ServiceAccount",
            ChildKind::Role => "Role",
            ChildKind::RoleBinding => "RoleBinding",
            ChildKind::ConfigMap => "ConfigMap",
            ChildKind::Job => "Job",
            ChildKind::Deployment => "Deployment",
            ChildKind::Service => "Service",
            ChildKind::PodDisruptionBudget => "PodDisruptionBudget",
            ChildKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            ChildKind::NetworkPolicy => "NetworkPolicy",
        }
    }
}

/// One desired child: its kind, name and full manifest (with the applied-hash annotation set).
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub kind: ChildKind,
    pub name: String,
    pub object: serde_json::Value,
}

impl Child {
    /// Serializes a typed object and stamps it with the digest of its content.
    pub fn new<K>(kind: ChildKind, object: &K) -> Result<Child>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let name = object
            .meta()
            .name
            .clone()
            .ok_or(Error::MissingObjectKey("child metadata.name"))?;
        let mut value = serde_json::to_value(object).map_err(|source| Error::Serialize {
            what: format!("{} {name}", kind.as_str()),
            source,
        })?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert(
                "apiVersion".to_owned(),
                serde_json::Value::String(K::api_version(&()).into_owned()),
            );
            map.insert(
                "kind".to_owned(),
                serde_json::Value::String(K::kind(&()).into_owned()),
            );
        }
        let digest = digest_json(&value);
        if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(
                    APPLIED_HASH_ANNOTATION.to_owned(),
                    serde_json::Value::String(digest),
                );
            }
        }
        Ok(Child {
            kind,
            name,
            object: value,
        })
    }

    /// The digest stamped by [`Child::new`].
    pub fn applied_hash(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
            .and_then(|h| h.as_str())
    }
}

/// Hex SHA-256 of a JSON value's canonical serialization (object keys sorted by serde_json's map).
pub fn digest_json(value: &serde_json::Value) -> String {
    hex_sha256(value.to_string().as_bytes())
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Pod-level hardening shared by every pod the operator runs.
pub fn pod_security_context(user_id: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user_id),
        run_as_group: Some(user_id),
        fs_group: Some(user_id),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level hardening shared by every container the operator runs.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// Every child the spec asks for, in apply order: configuration first, then the migration Job, the API
/// Deployment and the rest.
pub fn build_children(
    store: &PlamatioStore,
    secrets: &ResolvedSecrets,
    settings: &BuildSettings,
    live: &LiveState,
) -> Result<Vec<Child>> {
    let identity = StoreIdentity::of(store)?;
    names::check_store_name(&identity.name)?;
    let spec = &store.spec;
    let api = spec.api();
    let mut children = Vec::new();

    children.push(Child::new(
        ChildKind::ServiceAccount,
        &service_account::build_api_service_account(&identity),
    )?);
    let config_map = config_map::build_api_config_map(&identity, spec);
    let config_hash = config_map::config_hash(&config_map, secrets);
    children.push(Child::new(ChildKind::ConfigMap, &config_map)?);
    if spec.migrations() == crate::crd::MigrationMode::Auto {
        children.push(Child::new(
            ChildKind::Job,
            &migration_job::build_migration_job(&identity, spec, settings),
        )?);
    }
    children.push(Child::new(
        ChildKind::Deployment,
        &deployment::build_api_deployment(
            &identity,
            spec,
            secrets,
            settings,
            &config_hash,
            live.api_replicas,
        ),
    )?);
    children.push(Child::new(
        ChildKind::Service,
        &service::build_api_service(&identity, &api),
    )?);
    if api.pod_disruption_budget_enabled() {
        children.push(Child::new(
            ChildKind::PodDisruptionBudget,
            &pdb::build_api_pod_disruption_budget(&identity, &api),
        )?);
    }
    if let Some(autoscaling) = &api.autoscaling {
        children.push(Child::new(
            ChildKind::HorizontalPodAutoscaler,
            &hpa::build_api_autoscaler(&identity, autoscaling),
        )?);
    }
    children.push(Child::new(
        ChildKind::NetworkPolicy,
        &network_policy::build_api_network_policy(&identity, spec, secrets),
    )?);
    if spec.agent_enabled() {
        let agent_config = alloy::build_agent_config_map(&identity, spec);
        let agent_hash = hex_sha256(
            serde_json::to_string(&agent_config.data)
                .unwrap_or_default()
                .as_bytes(),
        );
        children.push(Child::new(
            ChildKind::ServiceAccount,
            &alloy::build_agent_service_account(&identity),
        )?);
        children.push(Child::new(
            ChildKind::Role,
            &alloy::build_agent_role(&identity),
        )?);
        children.push(Child::new(
            ChildKind::RoleBinding,
            &alloy::build_agent_role_binding(&identity),
        )?);
        children.push(Child::new(ChildKind::ConfigMap, &agent_config)?);
        children.push(Child::new(
            ChildKind::Deployment,
            &alloy::build_agent_deployment(&identity, spec, secrets, settings, &agent_hash),
        )?);
        children.push(Child::new(
            ChildKind::Service,
            &alloy::build_agent_service(&identity),
        )?);
        children.push(Child::new(
            ChildKind::ConfigMap,
            &dashboard::build_dashboard_config_map(&identity)?,
        )?);
    }
    Ok(children)
}
