//! Every name a store's children carry, and the rule on store names that keeps all of them valid.
//!
//! A child name is the store name plus a fixed suffix, so the longest suffix decides how long a store
//! name may be: every child name stays a DNS-1035 label of at most 63 characters, the strictest rule
//! any of them meets (a Service name must be a DNS-1035 label; a Job name is copied into the
//! `job-name` label of its pods, whose values have at most 63 characters). The CRD refuses other
//! store names with CEL rules generated from the constants here, and [`check_store_name`] refuses
//! them again before anything is built, for stores created while an older CRD was installed.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Longest DNS label, and longest label value.
pub const MAX_LABEL_LENGTH: usize = 63;
/// Suffix of the API's ServiceAccount, ConfigMap, Deployment, Service, PDB, HPA and NetworkPolicy.
pub const API_SUFFIX: &str = "-api";
/// Suffix of the Alloy agent's children.
pub const AGENT_SUFFIX: &str = "-alloy";
/// Suffix of the dashboard ConfigMap.
pub const DASHBOARD_SUFFIX: &str = "-dashboard";
/// Between the store name and the schema version of a migration Job.
pub const MIGRATION_JOB_INFIX: &str = "-migrate-";
/// Hex characters of the version digest that end every migration Job name (40 bits: two versions
/// of one store collide with probability 2^-40).
pub const VERSION_DIGEST_LENGTH: usize = 10;

/// The shortest migration Job suffix: infix and digest, without the readable version part.
const MIGRATION_JOB_SUFFIX_LENGTH: usize = MIGRATION_JOB_INFIX.len() + VERSION_DIGEST_LENGTH;

const fn longest(lengths: &[usize]) -> usize {
    let mut longest = 0;
    let mut index = 0;
    while index < lengths.len() {
        if lengths[index] > longest {
            longest = lengths[index];
        }
        index += 1;
    }
    longest
}

/// The longest suffix any child appends to the store name.
pub const LONGEST_SUFFIX_LENGTH: usize = longest(&[
    API_SUFFIX.len(),
    AGENT_SUFFIX.len(),
    DASHBOARD_SUFFIX.len(),
    MIGRATION_JOB_SUFFIX_LENGTH,
]);

/// The longest store name whose every child name fits in 63 characters.
pub const MAX_STORE_NAME_LENGTH: usize = MAX_LABEL_LENGTH - LONGEST_SUFFIX_LENGTH;

/// A DNS-1035 label (RFC 1035): what a Service name must be, so what a store name must be.
pub const STORE_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// The CEL rule of the CRD refusing store names that are not DNS-1035 labels.
pub fn store_name_pattern_rule() -> String {
    format!("self.metadata.name.matches('{STORE_NAME_PATTERN}')")
}

pub const STORE_NAME_PATTERN_MESSAGE: &str = "a store name must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (it names the store's Services)";

/// The CEL rule of the CRD refusing store names too long for their children's names.
pub fn store_name_length_rule() -> String {
    format!("size(self.metadata.name) <= {MAX_STORE_NAME_LENGTH}")
}

pub fn store_name_length_message() -> String {
    format!(
        "a store name has at most {MAX_STORE_NAME_LENGTH} characters, so that its longest child name \
         (<store>{MIGRATION_JOB_INFIX}<version digest>) fits in {MAX_LABEL_LENGTH}"
    )
}

/// True for a DNS-1035 label: `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1035_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LENGTH
                && first.is_ascii_lowercase()
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// Refuses a store name the CRD's rules refuse (the same rules, checked again before any child is
/// built so that nothing is half-applied under an older CRD).
pub fn check_store_name(name: &str) -> Result<()> {
    if !is_dns1035_label(name) {
        return Err(Error::InvalidStoreName {
            name: name.to_owned(),
            reason: STORE_NAME_PATTERN_MESSAGE.to_owned(),
        });
    }
    if name.len() > MAX_STORE_NAME_LENGTH {
        return Err(Error::InvalidStoreName {
            name: name.to_owned(),
            reason: store_name_length_message(),
        });
    }
    Ok(())
}

/// A version lowered into DNS label characters; readable only, never unique (`1.2.3` and `1-2-3`
/// give the same label), so names never rely on it alone.
pub fn readable_version(version: &str) -> String {
    let lowered: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    lowered.trim_matches('-').to_owned()
}

/// First [`VERSION_DIGEST_LENGTH`] hex characters of the SHA-256 of the full version.
pub fn version_digest(version: &str) -> String {
    let digest = hex::encode(Sha256::digest(version.as_bytes()));
    digest[..VERSION_DIGEST_LENGTH].to_owned()
}

/// `<store>-migrate-[<readable version>-]<digest of the full version>`, at most 63 characters: the
/// digest makes distinct versions distinct Jobs, the readable part (shortened to what fits) helps
/// a person reading `kubectl get jobs`.
pub fn migration_job_name(store_name: &str, version: &str) -> String {
    let prefix = format!("{store_name}{MIGRATION_JOB_INFIX}");
    let digest = version_digest(version);
    let room = MAX_LABEL_LENGTH
        .saturating_sub(prefix.len())
        .saturating_sub(digest.len() + 1);
    let readable: String = readable_version(version).chars().take(room).collect();
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() {
        format!("{prefix}{digest}")
    } else {
        format!("{prefix}{readable}-{digest}")
    }
}
