//! The API NetworkPolicy: ingress only to the API port; egress only to DNS and the ports of the
//! database, Redis, Kafka, the JWKS endpoint and the store's Alloy agent. Destinations outside the
//! cluster have no stable selector, so egress is limited by port.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ResolvedSecrets, StoreIdentity, alloy};
use crate::crd::PlamatioStoreSpec;

pub const POSTGRES_PORT: i32 = 5432;
pub const REDIS_PORT: i32 = 6379;
pub const DNS_PORT: i32 = 53;

/// Ports named in a URL or a comma-separated `host:port` list (several hosts are allowed, as in
/// PostgreSQL multi-host URLs); hosts without a port get `default_port`.
pub fn ports_of(address_list: &str, default_port: i32) -> BTreeSet<i32> {
    let without_scheme = address_list
        .split_once("://")
        .map_or(address_list, |(_, rest)| rest);
    let authority = without_scheme
        .split(['/', '?'])
        .next()
        .unwrap_or(without_scheme);
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| {
            let port_part = match host.rfind(']') {
                Some(bracket) => host[bracket..].split_once(':').map(|(_, port)| port),
                None => host.rsplit_once(':').map(|(_, port)| port),
            };
            port_part
                .and_then(|port| port.parse::<i32>().ok())
                .filter(|port| (1..=65535).contains(port))
                .unwrap_or(default_port)
        })
        .collect()
}

fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }
}

fn egress_to_ports(ports: &BTreeSet<i32>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        ports: Some(ports.iter().copied().map(tcp_port).collect()),
        ..NetworkPolicyEgressRule::default()
    }
}

pub fn build_api_network_policy(
    identity: &StoreIdentity,
    spec: &PlamatioStoreSpec,
    secrets: &ResolvedSecrets,
) -> NetworkPolicy {
    let api = spec.api();
    let mut egress = vec![NetworkPolicyEgressRule {
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(DNS_PORT)),
                protocol: Some("UDP".to_owned()),
                ..NetworkPolicyPort::default()
            },
            tcp_port(DNS_PORT),
        ]),
        ..NetworkPolicyEgressRule::default()
    }];

    let mut external_ports = match &secrets.database_url {
        Some(url) => ports_of(url, POSTGRES_PORT),
        None => BTreeSet::from([POSTGRES_PORT]),
    };
    if spec
        .cache
        .as_ref()
        .is_some_and(|c| c.url_secret_ref.is_some())
    {
        match &secrets.redis_url {
            Some(url) => external_ports.extend(ports_of(url, REDIS_PORT)),
            None => {
                external_ports.insert(REDIS_PORT);
            }
        }
    }
    if let Some(kafka) = &spec.kafka {
        external_ports.extend(ports_of(&kafka.bootstrap_servers, 9092));
    }
    if let Some(jwks) = api.user_auth.as_ref().and_then(|u| u.jwks_url.as_ref()) {
        let default_port = if jwks.starts_with("http://") { 80 } else { 443 };
        external_ports.extend(ports_of(jwks, default_port));
    }
    egress.push(egress_to_ports(&external_ports));

    if spec.traces_enabled() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(identity.selector_labels("agent")),
                    ..LabelSelector::default()
                }),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![
                tcp_port(alloy::OTLP_GRPC_PORT),
                tcp_port(alloy::OTLP_HTTP_PORT),
            ]),
        });
    }

    NetworkPolicy {
        metadata: identity.metadata(identity.api_name(), "api"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(identity.selector_labels("api")),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(vec![tcp_port(api.port())]),
                ..NetworkPolicyIngressRule::default()
            }]),
            egress: Some(egress),
        }),
    }
}
