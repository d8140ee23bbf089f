//! Resolution of the Secrets a store references: which Secrets and keys the spec names, reading them,
//! and turning them into [`ResolvedSecrets`] (key names, URLs, credentials and a digest of every value).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tracing::{debug, instrument};

use crate::build::secret_env::api_key_scope;
use crate::build::{ResolvedSecrets, hex_sha256};
use crate::crd::{CredentialsSecretRef, PlamatioStoreSpec};
use crate::error::{Error, Result};

const API_KEY_SCOPES: [&str; 2] = ["storefront", "admin"];

/// Names of every Secret the spec references, sorted.
pub fn referenced_secret_names(spec: &PlamatioStoreSpec) -> BTreeSet<String> {
    let mut names = BTreeSet::from([spec.database.url_secret_ref.name.clone()]);
    if let Some(url) = spec.cache.as_ref().and_then(|c| c.url_secret_ref.as_ref()) {
        names.insert(url.name.clone());
    }
    if let Some(credentials) = spec
        .kafka
        .as_ref()
        .and_then(|k| k.credentials_secret_ref.as_ref())
    {
        names.insert(credentials.name.clone());
    }
    if let Some(keys) = spec.api().api_keys_secret_ref {
        names.insert(keys.name);
    }
    if let Some(observability) = &spec.observability {
        if let Some(credentials) = observability
            .metrics
            .as_ref()
            .and_then(|m| m.credentials_secret_ref.as_ref())
        {
            names.insert(credentials.name.clone());
        }
        if let Some(credentials) = observability
            .logs
            .as_ref()
            .and_then(|l| l.credentials_secret_ref.as_ref())
        {
            names.insert(credentials.name.clone());
        }
    }
    names
}

/// Reads every referenced Secret; the first one missing fails the whole resolution.
#[instrument(skip(client, spec))]
pub async fn fetch_referenced_secrets(
    client: &Client,
    namespace: &str,
    spec: &PlamatioStoreSpec,
) -> Result<BTreeMap<String, Secret>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secrets = BTreeMap::new();
    for name in referenced_secret_names(spec) {
        match api.get_opt(&name).await? {
            Some(secret) => {
                secrets.insert(name, secret);
            }
            None => {
                debug!(secret = %name, "referenced Secret is missing");
                return Err(Error::SecretNotFound {
                    namespace: namespace.to_owned(),
                    name,
                });
            }
        }
    }
    Ok(secrets)
}

/// What resolution reads from the fetched Secrets, and the values it folds into the digest.
struct SecretReader<'a> {
    namespace: &'a str,
    secrets: &'a BTreeMap<String, Secret>,
    digest_input: BTreeMap<String, Vec<u8>>,
}

impl SecretReader<'_> {
    fn secret(&self, name: &str) -> Result<&Secret> {
        self.secrets.get(name).ok_or_else(|| Error::SecretNotFound {
            namespace: self.namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    fn value(&mut self, name: &str, key: &str) -> Result<String> {
        let secret = self.secret(name)?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|value| value.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|data| data.get(key))
                    .map(|value| value.clone().into_bytes())
            })
            .ok_or_else(|| Error::SecretKeyNotFound {
                namespace: self.namespace.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
            })?;
        let text = String::from_utf8(bytes.clone()).map_err(|_| Error::InvalidSecret {
            namespace: self.namespace.to_owned(),
            name: name.to_owned(),
            reason: format!("key {key:?} is not UTF-8"),
        })?;
        self.digest_input.insert(format!("{name}/{key}"), bytes);
        Ok(text)
    }

    fn credentials(&mut self, credentials: &CredentialsSecretRef) -> Result<(String, String)> {
        Ok((
            self.value(&credentials.name, credentials.username_key())?,
            self.value(&credentials.name, credentials.password_key())?,
        ))
    }

    fn keys(&self, name: &str) -> Result<Vec<String>> {
        let secret = self.secret(name)?;
        let mut keys: BTreeSet<String> = secret
            .data
            .as_ref()
            .map(|data| data.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(string_data) = &secret.string_data {
            keys.extend(string_data.keys().cloned());
        }
        Ok(keys.into_iter().collect())
    }
}

/// Checks the referenced keys exist and collects what the builders and the Kafka step need.
pub fn resolve_from(
    namespace: &str,
    spec: &PlamatioStoreSpec,
    secrets: &BTreeMap<String, Secret>,
) -> Result<ResolvedSecrets> {
    let mut reader = SecretReader {
        namespace,
        secrets,
        digest_input: BTreeMap::new(),
    };
    let database = &spec.database.url_secret_ref;
    let database_url = reader.value(&database.name, &database.key)?;
    let redis_url = match spec.cache.as_ref().and_then(|c| c.url_secret_ref.as_ref()) {
        Some(url) => Some(reader.value(&url.name, &url.key)?),
        None => None,
    };
    let kafka_credentials = match spec
        .kafka
        .as_ref()
        .and_then(|k| k.credentials_secret_ref.as_ref())
    {
        Some(credentials) => Some(reader.credentials(credentials)?),
        None => None,
    };
    let mut api_key_names = Vec::new();
    if let Some(keys_secret) = spec.api().api_keys_secret_ref {
        for key in reader.keys(&keys_secret.name)? {
            let scope = api_key_scope(&key);
            if !API_KEY_SCOPES.contains(&scope) {
                return Err(Error::InvalidSecret {
                    namespace: namespace.to_owned(),
                    name: keys_secret.name.clone(),
                    reason: format!(
                        "key {key:?} is not a scope (storefront or admin, optionally followed by .suffix)"
                    ),
                });
            }
            let digest = reader.value(&keys_secret.name, &key)?;
            let digest = digest.trim();
            if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::InvalidSecret {
                    namespace: namespace.to_owned(),
                    name: keys_secret.name.clone(),
                    reason: format!("key {key:?} does not hold a 64-character hex SHA-256 digest"),
                });
            }
            api_key_names.push(key);
        }
    }
    if let Some(observability) = &spec.observability {
        if let Some(credentials) = observability
            .metrics
            .as_ref()
            .and_then(|m| m.credentials_secret_ref.as_ref())
        {
            reader.credentials(credentials)?;
        }
        if let Some(credentials) = observability
            .logs
            .as_ref()
            .and_then(|l| l.credentials_secret_ref.as_ref())
        {
            reader.credentials(credentials)?;
        }
    }
    let mut digest_input = Vec::new();
    for (location, value) in &reader.digest_input {
        digest_input.extend_from_slice(location.as_bytes());
        digest_input.push(0);
        digest_input.extend_from_slice(value);
        digest_input.push(0);
    }
    Ok(ResolvedSecrets {
        digest: hex_sha256(&digest_input),
        api_key_names,
        database_url: Some(database_url),
        redis_url,
        kafka_credentials,
    })
}

/// Fetches and resolves every Secret the store references.
pub async fn resolve_secrets(
    client: &Client,
    namespace: &str,
    spec: &PlamatioStoreSpec,
) -> Result<ResolvedSecrets> {
    let secrets = fetch_referenced_secrets(client, namespace, spec).await?;
    resolve_from(namespace, spec, &secrets)
}

/// Only the Kafka credentials, and only for SASL (deletion needs no other Secret, and the others may
/// be gone already).
pub async fn resolve_kafka_credentials(
    client: &Client,
    namespace: &str,
    spec: &PlamatioStoreSpec,
) -> Result<Option<(String, String)>> {
    let Some(kafka) = spec.kafka.as_ref() else {
        return Ok(None);
    };
    // Only SASL uses them: without it a Secret deleted with the namespace must not block deletion.
    let Some(credentials) = kafka
        .credentials_secret_ref
        .as_ref()
        .filter(|_| kafka.security_protocol.unwrap_or_default().uses_sasl())
    else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&credentials.name)
        .await?
        .ok_or_else(|| Error::SecretNotFound {
            namespace: namespace.to_owned(),
            name: credentials.name.clone(),
        })?;
    let secrets = BTreeMap::from([(credentials.name.clone(), secret)]);
    let mut reader = SecretReader {
        namespace,
        secrets: &secrets,
        digest_input: BTreeMap::new(),
    };
    reader.credentials(credentials).map(Some)
}
