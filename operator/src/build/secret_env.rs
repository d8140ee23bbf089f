//! Secret-to-environment wiring: the API reads its database URL, Redis URL, Kafka credentials and API
//! key digests from Secrets through `secretKeyRef`, so no secret value is copied into an object the
//! operator writes.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use plamatio_contract::env as api_env;

use super::ResolvedSecrets;
use crate::crd::{CredentialsSecretRef, PlamatioStoreSpec};

/// An environment variable read from one key of a Secret.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The username and password variables of a credentials Secret.
pub fn credentials_env(prefix: &str, credentials: &CredentialsSecretRef) -> Vec<EnvVar> {
    vec![
        secret_env(
            &format!("{prefix}_USERNAME"),
            &credentials.name,
            credentials.username_key(),
        ),
        secret_env(
            &format!("{prefix}_PASSWORD"),
            &credentials.name,
            credentials.password_key(),
        ),
    ]
}

/// The scope of an API keys Secret key: `storefront`, `admin.ci` → `admin`.
pub fn api_key_scope(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// Secret-backed environment of the API container (and the database URL of the migration Job).
pub fn api_secret_environment(spec: &PlamatioStoreSpec, secrets: &ResolvedSecrets) -> Vec<EnvVar> {
    let mut env = vec![database_url_env(spec)];
    if let Some(url) = spec.cache.as_ref().and_then(|c| c.url_secret_ref.as_ref()) {
        env.push(secret_env(api_env::REDIS_URL, &url.name, &url.key));
    }
    if let Some(credentials) = spec
        .kafka
        .as_ref()
        .and_then(|k| k.credentials_secret_ref.as_ref())
    {
        env.extend(credentials_env(
            api_env::KAFKA_SASL_CREDENTIALS_PREFIX,
            credentials,
        ));
    }
    if let Some(keys_secret) = spec.api().api_keys_secret_ref {
        // Each digest lands in its own variable; PLAMATIO_API_KEYS then joins them with Kubernetes'
        // `$(VAR)` expansion into the `scope:sha256hex,…` list the API parses.
        let mut pairs = Vec::new();
        for (index, key) in secrets.api_key_names.iter().enumerate() {
            let variable = format!("PLAMATIO_API_KEY_{index}");
            env.push(secret_env(&variable, &keys_secret.name, key));
            pairs.push(format!("{}:$({variable})", api_key_scope(key)));
        }
        env.push(EnvVar {
            name: api_env::API_KEYS.to_owned(),
            value: Some(pairs.join(",")),
            ..EnvVar::default()
        });
    }
    env
}

pub fn database_url_env(spec: &PlamatioStoreSpec) -> EnvVar {
    secret_env(
        api_env::DATABASE_URL,
        &spec.database.url_secret_ref.name,
        &spec.database.url_secret_ref.key,
    )
}
