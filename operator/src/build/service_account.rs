//! The API's ServiceAccount: an identity for the API and migration pods that mounts no token, since
//! neither talks to the Kubernetes API.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::StoreIdentity;

pub fn build_api_service_account(identity: &StoreIdentity) -> ServiceAccount {
    ServiceAccount {
        metadata: identity.metadata(identity.api_name(), "api"),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
