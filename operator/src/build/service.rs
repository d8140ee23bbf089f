//! The API Service: a ClusterIP in front of the API pods on port 80; its URL is the store's endpoint.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::StoreIdentity;
use crate::crd::ApiSpec;

pub const SERVICE_PORT: i32 = 80;

pub fn build_api_service(identity: &StoreIdentity, _api: &ApiSpec) -> Service {
    Service {
        metadata: identity.metadata(identity.api_name(), "api"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(identity.selector_labels("api")),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
