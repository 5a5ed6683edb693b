//! Builders shared by the real-kernel tests and the benchmark: proxy state for
//! UDP Services, and network namespaces with conntrack entries in them.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use kpr_model::topology::Selection;
use kpr_model::{
    Endpoint, FamilyState, IpFamily, NamespacedName, Protocol, ServicePortInfo, ServicePortName,
    ServicePortState, ServiceState, SessionAffinity,
};

/// An address from text.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One Service port: protocol, ClusterIP, port, NodePort and its endpoints
/// (`ip:port`, all ready).
pub struct Port<'a> {
    pub protocol: Protocol,
    pub cluster_ip: &'a str,
    pub port: u16,
    pub node_port: Option<u16>,
    pub endpoints: &'a [(&'a str, u16)],
}

/// A family state with one Service per port, named `svc<i>`.
pub fn state(family: IpFamily, ports: &[Port<'_>]) -> FamilyState {
    let mut services = BTreeMap::new();
    for (i, p) in ports.iter().enumerate() {
        let name = NamespacedName::new("ns", format!("svc{i}"));
        let endpoints: Vec<Endpoint> = p
            .endpoints
            .iter()
            .map(|(a, port)| Endpoint {
                ip: ip(a),
                port: *port,
                ready: true,
                serving: true,
                terminating: false,
                is_local: true,
                hints: None,
            })
            .collect();
        let info = ServicePortInfo {
            name: ServicePortName {
                service: name.clone(),
                port: "p".into(),
                protocol: p.protocol,
            },
            cluster_ip: ip(p.cluster_ip),
            port: p.port,
            node_port: p.node_port,
            external_ips: Vec::new(),
            load_balancer_vips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            health_check_node_port: None,
            session_affinity: SessionAffinity::None,
            external_policy_local: false,
            internal_policy_local: false,
        };
        let selection = vec![
            Selection {
                cluster: true,
                local: false
            };
            endpoints.len()
        ];
        let port = ServicePortState {
            info: info.into(),
            has_any_endpoints: !endpoints.is_empty(),
            endpoints,
            selection,
        };
        services.insert(
            name.clone(),
            Arc::new(ServiceState {
                name,
                ports: vec![port],
            }),
        );
    }
    FamilyState {
        family,
        services: Arc::new(services),
    }
}
