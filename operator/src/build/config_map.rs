//! The API's ConfigMap: every non-secret setting of the API as environment variables, and the config
//! hash that rolls the pods when it or a referenced Secret changes.

use plamatio_contract::env as api_env;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{ResolvedSecrets, StoreIdentity, alloy, hex_sha256};
use crate::crd::PlamatioStoreSpec;

/// Service name the API reports its traces under.
pub const OTEL_SERVICE_NAME: &str = "plamatio-api";

/// The environment of the API that holds no secret.
pub fn api_environment(
    identity: &StoreIdentity,
    spec: &PlamatioStoreSpec,
) -> BTreeMap<String, String> {
    let api = spec.api();
    let mut env = BTreeMap::new();
    let mut set = |key: &str, value: String| {
        env.insert(key.to_owned(), value);
    };
    set(api_env::PORT, api.port().to_string());
    set(api_env::LOG_FORMAT, "json".to_owned());
    set(
        api_env::RUST_LOG,
        api.log_level.unwrap_or_default().as_str().to_owned(),
    );
    if let Some(pool_size) = spec.database.pool_size {
        set(api_env::DATABASE_POOL_SIZE, pool_size.to_string());
    }
    if let Some(origins) = &api.cors_origins {
        set(api_env::CORS_ORIGINS, origins.join(","));
    }
    if let Some(proxies) = &api.trusted_proxies {
        set(api_env::TRUSTED_PROXIES, proxies.join(","));
    }
    if let Some(limit) = api.rate_limit_per_minute {
        set(api_env::RATE_LIMIT_PER_MINUTE, limit.to_string());
    }
    if let Some(ttl) = spec.cache.as_ref().and_then(|c| c.ttl_seconds) {
        set(api_env::CACHE_TTL_SECONDS, ttl.to_string());
    }
    if let Some(user_auth) = &api.user_auth {
        set(api_env::USER_AUTH, user_auth.mode.as_str().to_owned());
        if let Some(url) = &user_auth.jwks_url {
            set(api_env::USER_JWKS_URL, url.clone());
        }
        if let Some(issuer) = &user_auth.issuer {
            set(api_env::USER_JWT_ISSUER, issuer.clone());
        }
        if let Some(audience) = &user_auth.audience {
            set(api_env::USER_JWT_AUDIENCE, audience.clone());
        }
    }
    if let Some(kafka) = &spec.kafka {
        set(
            api_env::KAFKA_BOOTSTRAP_SERVERS,
            kafka.bootstrap_servers.clone(),
        );
        set(
            api_env::KAFKA_SECURITY_PROTOCOL,
            kafka
                .security_protocol
                .unwrap_or_default()
                .as_str()
                .to_owned(),
        );
        set(
            api_env::KAFKA_SASL_MECHANISM,
            kafka.sasl_mechanism.unwrap_or_default().as_str().to_owned(),
        );
        set(
            api_env::KAFKA_TOPIC_PREFIX,
            kafka.topic_prefix.clone().unwrap_or_default(),
        );
        // The operator owns the topics; the API must not create them with its own defaults.
        set(api_env::KAFKA_CREATE_TOPICS, "false".to_owned());
    }
    if spec.traces_enabled() {
        set(
            api_env::OTEL_EXPORTER_OTLP_ENDPOINT,
            format!(
                "http://{}.{}.svc:{}",
                identity.agent_name(),
                identity.namespace,
                alloy::OTLP_GRPC_PORT
            ),
        );
        set(api_env::OTEL_SERVICE_NAME, OTEL_SERVICE_NAME.to_owned());
        set(
            api_env::OTEL_TRACES_SAMPLER,
            "parentbased_traceidratio".to_owned(),
        );
        set(
            api_env::OTEL_TRACES_SAMPLER_ARG,
            spec.trace_sample_ratio().to_string(),
        );
        set(
            api_env::OTEL_RESOURCE_ATTRIBUTES,
            format!(
                "plamatio.store={},k8s.namespace.name={}",
                identity.name, identity.namespace
            ),
        );
    }
    env
}

pub fn build_api_config_map(identity: &StoreIdentity, spec: &PlamatioStoreSpec) -> ConfigMap {
    ConfigMap {
        metadata: identity.metadata(identity.api_name(), "api"),
        data: Some(api_environment(identity, spec)),
        ..ConfigMap::default()
    }
}

/// Digest of the API's configuration and of the referenced Secrets' values; stored on the pod
/// template so that any change rolls the pods.
pub fn config_hash(config_map: &ConfigMap, secrets: &ResolvedSecrets) -> String {
    let data = serde_json::to_string(&config_map.data).unwrap_or_default();
    hex_sha256(format!("{data}\n{}", secrets.digest).as_bytes())
}
