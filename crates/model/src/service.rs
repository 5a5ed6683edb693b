//! Services: what the model keeps of a `v1/Service`, per address family.
//!
//! Conversion follows upstream `pkg/proxy/serviceport.go` (`newBaseServiceInfo`) and
//! `pkg/proxy/util` (`ShouldSkipService`, `GetClusterIPByFamily`): headless and
//! ExternalName Services are not proxied, each family gets only its own addresses,
//! load-balancer ingress in `ipMode: Proxy` is left to the load balancer, and
//! `loadBalancerSourceRanges` are trimmed of whitespace. Where upstream would program a
//! broken rule from an invalid value, we skip the value and report a [`Problem`].

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;

use crate::ip::{parse_cidr_sloppy, parse_ip_sloppy};
use crate::name::{IpFamily, NamespacedName, Protocol, ServicePortName};
use crate::problem::{ObjectKind, Problem};

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours), which the API
/// server fills in when ClientIP affinity is requested without a timeout.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// Session affinity of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAffinity {
    /// Every new connection picks an endpoint independently.
    None,
    /// Connections from one client IP stick to one endpoint for the timeout.
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds`.
        timeout_seconds: u32,
    },
}

/// Everything a data plane needs to know about one port of one Service in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// `namespace/name:port` + protocol.
    pub name: ServicePortName,
    /// The ClusterIP of this family.
    pub cluster_ip: IpAddr,
    /// `spec.ports[].port`.
    pub port: u16,
    /// `spec.ports[].nodePort`, when set.
    pub node_port: Option<u16>,
    /// `spec.externalIPs` of this family, in spec order.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` of this family (ipMode `Proxy` excluded).
    pub load_balancer_vips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges` of this family, whitespace trimmed.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.healthCheckNodePort`, only for LoadBalancer Services with
    /// `externalTrafficPolicy: Local` (upstream `NeedsHealthCheck`).
    pub health_check_node_port: Option<u16>,
    /// Session affinity.
    pub session_affinity: SessionAffinity,
    /// `externalTrafficPolicy: Local` on an externally accessible Service.
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
}

impl ServicePortInfo {
    /// True if the port can be reached from outside: it has a NodePort, a
    /// load-balancer VIP or an external IP (upstream `ExternallyAccessible`).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.load_balancer_vips.is_empty()
            || !self.external_ips.is_empty()
    }

    /// True if some traffic to this port uses "Cluster" policy endpoints: internal
    /// traffic under Cluster policy, or any external traffic (even with Local
    /// external policy, locally-originated traffic is short-circuited to the
    /// cluster-wide endpoints).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// True if some traffic to this port uses "Local" policy endpoints.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

/// What the model keeps of a Service: its ports for each family it is proxied in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The Service's name.
    pub name: NamespacedName,
    /// True if `spec.selector` is set (v1 Endpoints of selector Services are not mirrored).
    pub has_selector: bool,
    /// Ports per family (index [`IpFamily::index`]); empty when the Service has no
    /// ClusterIP of that family.
    pub ports: [Vec<Arc<ServicePortInfo>>; 2],
}

/// Why a Service is not proxied at all (not an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotProxied {
    /// `spec.clusterIP: None`.
    Headless,
    /// `spec.type: ExternalName`.
    ExternalName,
    /// No ClusterIP assigned.
    NoClusterIp,
}

/// Result of converting a Service.
#[derive(Debug)]
pub enum ServiceConversion {
    /// The Service is proxied.
    Proxied(ServiceInfo),
    /// The Service is deliberately not proxied.
    NotProxied(NamespacedName, NotProxied),
}

/// The Service's namespace/name, defaulting the namespace to `default` as the API does.
pub fn service_name(svc: &core::Service) -> NamespacedName {
    NamespacedName::new(
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// Converts a Service. Invalid parts are skipped and reported in `problems`; if the
/// Service cannot be proxied at all, a problem explains why and `None` is returned.
pub fn convert_service(
    svc: &core::Service,
    problems: &mut Vec<Problem>,
) -> Option<ServiceConversion> {
    let name = service_name(svc);
    let obj = name.to_string();
    let problem = |field: &str, msg: String| Problem::new(ObjectKind::Service, &obj, field, msg);
    if name.name.is_empty() {
        problems.push(problem(
            "metadata.name",
            "missing name; Service skipped".into(),
        ));
        return None;
    }
    let Some(spec) = svc.spec.as_ref() else {
        return Some(ServiceConversion::NotProxied(name, NotProxied::NoClusterIp));
    };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return Some(ServiceConversion::NotProxied(
            name,
            NotProxied::ExternalName,
        ));
    }
    if !matches!(svc_type, "ClusterIP" | "NodePort" | "LoadBalancer") {
        problems.push(problem(
            "spec.type",
            format!(
                "unsupported value {svc_type:?}: must be ClusterIP, NodePort, LoadBalancer or ExternalName; Service skipped"
            ),
        ));
        return None;
    }

    // ClusterIPs: `clusterIPs` when present (dual-stack), else `clusterIP`.
    let raw_cluster_ips: Vec<&str> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if raw_cluster_ips.first().is_some_and(|ip| *ip == "None") {
        return Some(ServiceConversion::NotProxied(name, NotProxied::Headless));
    }
    let mut cluster_ips: [Option<IpAddr>; 2] = [None, None];
    for (i, raw) in raw_cluster_ips.iter().enumerate() {
        if raw.is_empty() {
            continue;
        }
        let field = if spec.cluster_ips.as_ref().is_some_and(|v| !v.is_empty()) {
            format!("spec.clusterIPs[{i}]")
        } else {
            "spec.clusterIP".to_string()
        };
        match parse_ip_sloppy(raw) {
            Some(ip) => {
                let slot = &mut cluster_ips[IpFamily::of(&ip).index()];
                if slot.is_none() {
                    *slot = Some(ip);
                }
            }
            None => {
                problems.push(problem(
                    &field,
                    format!("invalid IP address {raw:?}; Service skipped"),
                ));
                return None;
            }
        }
    }
    if cluster_ips.iter().all(Option::is_none) {
        return Some(ServiceConversion::NotProxied(name, NotProxied::NoClusterIp));
    }

    let externally_accessible_type = matches!(svc_type, "NodePort" | "LoadBalancer")
        || spec.external_ips.as_ref().is_some_and(|v| !v.is_empty());
    let etp = spec.external_traffic_policy.as_deref().unwrap_or("Cluster");
    if !matches!(etp, "Cluster" | "Local") {
        problems.push(problem(
            "spec.externalTrafficPolicy",
            format!("unsupported value {etp:?}: must be Cluster or Local; using Cluster"),
        ));
    }
    let external_policy_local = externally_accessible_type && etp == "Local";
    let itp = spec.internal_traffic_policy.as_deref().unwrap_or("Cluster");
    if !matches!(itp, "Cluster" | "Local") {
        problems.push(problem(
            "spec.internalTrafficPolicy",
            format!("unsupported value {itp:?}: must be Cluster or Local; using Cluster"),
        ));
    }
    let internal_policy_local = itp == "Local";

    let session_affinity = match spec.session_affinity.as_deref().unwrap_or("None") {
        "ClientIP" => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match timeout {
                None => SessionAffinity::ClientIp {
                    timeout_seconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                },
                Some(t) if (1..=86400).contains(&t) => SessionAffinity::ClientIp {
                    timeout_seconds: t as u32,
                },
                Some(t) => {
                    problems.push(problem(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("invalid value {t}: must be in 1..=86400; using {DEFAULT_AFFINITY_TIMEOUT_SECONDS}"),
                    ));
                    SessionAffinity::ClientIp {
                        timeout_seconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                    }
                }
            }
        }
        "None" => SessionAffinity::None,
        other => {
            problems.push(problem(
                "spec.sessionAffinity",
                format!("unsupported value {other:?}: must be None or ClientIP; using None"),
            ));
            SessionAffinity::None
        }
    };

    let external_ips = parse_ip_list(
        spec.external_ips.as_deref().unwrap_or_default(),
        "spec.externalIPs",
        &obj,
        problems,
    );
    let lb_vips = load_balancer_vips(svc, &obj, problems);
    let source_ranges = source_ranges(
        spec.load_balancer_source_ranges
            .as_deref()
            .unwrap_or_default(),
        &obj,
        problems,
    );
    let health_check_node_port = if svc_type == "LoadBalancer" && external_policy_local {
        match spec.health_check_node_port {
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            Some(0) | None => {
                problems.push(problem(
                    "spec.healthCheckNodePort",
                    "LoadBalancer Service with externalTrafficPolicy Local has no healthCheckNodePort; no health check served".into(),
                ));
                None
            }
            Some(p) => {
                problems.push(problem(
                    "spec.healthCheckNodePort",
                    format!("invalid port {p}; no health check served"),
                ));
                None
            }
        }
    } else {
        None
    };

    let mut info = ServiceInfo {
        name: name.clone(),
        has_selector: spec.selector.as_ref().is_some_and(|s| !s.is_empty()),
        ports: [Vec::new(), Vec::new()],
    };
    for (i, port) in spec.ports.as_deref().unwrap_or_default().iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let protocol = match port.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(p) => match Protocol::from_kubernetes(p) {
                Some(p) => p,
                None => {
                    problems.push(problem(
                        &format!("{field}.protocol"),
                        format!(
                            "unsupported protocol {p:?}: must be TCP, UDP or SCTP; port skipped"
                        ),
                    ));
                    continue;
                }
            },
        };
        let Ok(svc_port) = u16::try_from(port.port) else {
            problems.push(problem(
                &format!("{field}.port"),
                format!(
                    "invalid port {}: must be in 1..=65535; port skipped",
                    port.port
                ),
            ));
            continue;
        };
        if svc_port == 0 {
            problems.push(problem(
                &format!("{field}.port"),
                "invalid port 0: must be in 1..=65535; port skipped".into(),
            ));
            continue;
        }
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(p) => match u16::try_from(p) {
                Ok(p) => Some(p),
                Err(_) => {
                    problems.push(problem(
                        &format!("{field}.nodePort"),
                        format!("invalid port {p}: must be in 1..=65535; port skipped"),
                    ));
                    continue;
                }
            },
        };
        let port_name = ServicePortName {
            service: name.clone(),
            port: port.name.clone().unwrap_or_default(),
            protocol,
        };
        for family in IpFamily::ALL {
            let Some(cluster_ip) = cluster_ips[family.index()] else {
                continue;
            };
            let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
                ips.iter()
                    .filter(|ip| IpFamily::of(ip) == family)
                    .copied()
                    .collect()
            };
            info.ports[family.index()].push(Arc::new(ServicePortInfo {
                name: port_name.clone(),
                cluster_ip,
                port: svc_port,
                node_port,
                external_ips: of_family(&external_ips),
                load_balancer_vips: of_family(&lb_vips),
                load_balancer_source_ranges: source_ranges
                    .iter()
                    .filter(|n| IpFamily::of(&n.addr()) == family)
                    .copied()
                    .collect(),
                health_check_node_port,
                session_affinity,
                external_policy_local,
                internal_policy_local,
            }));
        }
    }
    // Kept for the Service's lifetime: no spare capacity (a Vec grown by one push
    // holds four ports).
    for ports in &mut info.ports {
        ports.shrink_to_fit();
    }
    Some(ServiceConversion::Proxied(info))
}

fn parse_ip_list(
    raw: &[String],
    field: &str,
    obj: &str,
    problems: &mut Vec<Problem>,
) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        match parse_ip_sloppy(s.trim()) {
            Some(ip) => out.push(ip),
            None => problems.push(Problem::new(
                ObjectKind::Service,
                obj,
                format!("{field}[{i}]"),
                format!("invalid IP address {s:?}; address skipped"),
            )),
        }
    }
    out
}

fn load_balancer_vips(svc: &core::Service, obj: &str, problems: &mut Vec<Problem>) -> Vec<IpAddr> {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, ing) in ingress.iter().enumerate() {
        let Some(ip) = ing.ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        // A "Proxy" mode load balancer sends traffic to the nodes itself; the VIP is
        // not captured locally (KEP-1860).
        if ing.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        match parse_ip_sloppy(ip) {
            Some(ip) => out.push(ip),
            None => problems.push(Problem::new(
                ObjectKind::Service,
                obj,
                format!("status.loadBalancer.ingress[{i}].ip"),
                format!("invalid IP address {ip:?}; address skipped"),
            )),
        }
    }
    out
}

fn source_ranges(raw: &[String], obj: &str, problems: &mut Vec<Problem>) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        match parse_cidr_sloppy(s.trim()) {
            Some(net) => out.push(net),
            None => problems.push(Problem::new(
                ObjectKind::Service,
                obj,
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("invalid CIDR {s:?}; range skipped"),
            )),
        }
    }
    out
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
