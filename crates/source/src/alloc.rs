//! The allocations the API server would make, for Services written by hand.
//!
//! In a cluster the API server assigns `spec.clusterIP` (from a ServiceCIDR) and
//! `nodePort`s (from 30000-32767) when a Service is created without them. A manifest
//! directory has no API server, so the manifest source fills them in the same way,
//! deterministically (a hash of `namespace/name`, then the next free value) so that a
//! restart programs the same addresses. Each allocation is reported so the operator
//! sees which address a Service got.

use std::collections::HashSet;
use std::net::IpAddr;

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1 as core;

/// The default NodePort range.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// FNV-1a, a stable hash for deterministic allocation (not std's randomised hasher).
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn nth_address(net: &IpNet, offset: u128) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            IpAddr::V4((base.wrapping_add(offset as u32)).into())
        }
        IpNet::V6(n) => {
            let base = u128::from(n.network());
            IpAddr::V6((base.wrapping_add(offset)).into())
        }
    }
}

fn usable_hosts(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let size = if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    };
    // Skip the network address and the first host (reserved for the `kubernetes`
    // Service by the API server), and the broadcast address for IPv4.
    size.saturating_sub(3)
}

/// What Services already hold: the addresses and ports allocation must avoid (lists:
/// one is kept per Service while a directory is read).
#[derive(Clone, Debug, Default)]
pub struct Taken {
    ips: Vec<IpAddr>,
    ports: Vec<u16>,
}

impl Taken {
    /// Adds what `svc` holds.
    pub fn add(&mut self, svc: &core::Service) {
        let Some(spec) = &svc.spec else { return };
        for ip in spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
        {
            if let Ok(ip) = ip.parse() {
                self.ips.push(ip);
            }
        }
        for p in spec.ports.iter().flatten() {
            if let Some(np) = p.node_port.and_then(|p| u16::try_from(p).ok()) {
                self.ports.push(np);
            }
        }
        if let Some(hc) = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
        {
            self.ports.push(hc);
        }
    }

    /// Adds everything `other` holds.
    pub fn extend(&mut self, other: Taken) {
        self.ips.extend(other.ips);
        self.ports.extend(other.ports);
    }
}

fn service_type(spec: &core::ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

fn missing_cluster_ip(spec: &core::ServiceSpec) -> bool {
    !(spec.cluster_ip.as_deref().is_some_and(|s| !s.is_empty())
        || spec.cluster_ips.as_ref().is_some_and(|v| !v.is_empty()))
}

fn wants_node_ports(spec: &core::ServiceSpec) -> bool {
    match service_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

fn missing_health_check_port(spec: &core::ServiceSpec) -> bool {
    service_type(spec) == "LoadBalancer"
        && spec.external_traffic_policy.as_deref() == Some("Local")
        && spec.health_check_node_port.unwrap_or(0) == 0
}

/// True if [`allocate`] would fill something in for `svc` (given free addresses).
pub fn needs_allocation(svc: &core::Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    service_type(spec) != "ExternalName"
        && (missing_cluster_ip(spec)
            || (wants_node_ports(spec)
                && spec
                    .ports
                    .iter()
                    .flatten()
                    .any(|p| p.node_port.unwrap_or(0) == 0))
            || missing_health_check_port(spec))
}

/// Fills in missing ClusterIPs and NodePorts of `services` in place. `cidrs` are the
/// ServiceCIDRs (first of each family is used; without one, kubeadm's default
/// 10.96.0.0/12). Returns one line per allocation.
pub fn allocate(services: &mut [core::Service], cidrs: &[IpNet]) -> Vec<String> {
    let mut taken = Taken::default();
    for svc in services.iter() {
        taken.add(svc);
    }
    allocate_avoiding(services, taken, cidrs)
}

/// [`allocate`], avoiding what `taken` holds besides what `services` hold (the
/// Services that needed nothing and were not kept).
pub fn allocate_avoiding(
    services: &mut [core::Service],
    mut taken: Taken,
    cidrs: &[IpNet],
) -> Vec<String> {
    for svc in services.iter() {
        taken.add(svc);
    }
    let mut notes = Vec::new();
    let mut used_ips: HashSet<IpAddr> = taken.ips.into_iter().collect();
    let mut used_ports: HashSet<u16> = taken.ports.into_iter().collect();
    let default_cidr = IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12));
    let v4 = cidrs
        .iter()
        .find(|c| matches!(c, IpNet::V4(_)))
        .copied()
        .unwrap_or(default_cidr);
    let v6 = cidrs.iter().find(|c| matches!(c, IpNet::V6(_))).copied();

    for svc in services.iter_mut() {
        let name = format!(
            "{}/{}",
            svc.metadata.namespace.as_deref().unwrap_or("default"),
            svc.metadata.name.as_deref().unwrap_or_default()
        );
        let Some(spec) = svc.spec.as_mut() else {
            continue;
        };
        if service_type(spec) == "ExternalName" {
            continue;
        }
        if missing_cluster_ip(spec) {
            let wants_v6_only = spec
                .ip_families
                .as_ref()
                .and_then(|f| f.first())
                .is_some_and(|f| f == "IPv6");
            let cidr = if wants_v6_only { v6.unwrap_or(v4) } else { v4 };
            let span = usable_hosts(&cidr).max(1);
            let start = u128::from(stable_hash(&name)) % span;
            let mut chosen = None;
            for step in 0..span.min(1 << 20) {
                let ip = nth_address(&cidr, 2 + (start + step) % span);
                if used_ips.insert(ip) {
                    chosen = Some(ip);
                    break;
                }
            }
            if let Some(ip) = chosen {
                spec.cluster_ip = Some(ip.to_string());
                spec.cluster_ips = Some(vec![ip.to_string()]);
                notes.push(format!(
                    "Service {name}: no spec.clusterIP; allocated {ip} from {cidr}, as the API server would"
                ));
            }
        }
        let needs_node_ports = wants_node_ports(spec);
        let next_port = |seed: &str, used: &mut HashSet<u16>| -> Option<u16> {
            let span = u64::from(NODE_PORT_RANGE.end() - NODE_PORT_RANGE.start()) + 1;
            let start = stable_hash(seed) % span;
            (0..span)
                .map(|step| NODE_PORT_RANGE.start() + ((start + step) % span) as u16)
                .find(|p| used.insert(*p))
        };
        if needs_node_ports {
            for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
                if port.node_port.unwrap_or(0) == 0
                    && let Some(p) = next_port(&format!("{name}#{i}"), &mut used_ports)
                {
                    port.node_port = Some(i32::from(p));
                    notes.push(format!(
                            "Service {name}: spec.ports[{i}] has no nodePort; allocated {p}, as the API server would"
                        ));
                }
            }
        }
        if missing_health_check_port(spec)
            && let Some(p) = next_port(&format!("{name}#healthcheck"), &mut used_ports)
        {
            spec.health_check_node_port = Some(i32::from(p));
            notes.push(format!(
                    "Service {name}: no spec.healthCheckNodePort; allocated {p}, as the API server would"
                ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ty: &str, ip: Option<&str>) -> core::Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"type": ty, "clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    /// A Service without clusterIP gets a stable address inside the ServiceCIDR, and
    /// a NodePort Service gets a port in the NodePort range.
    #[test]
    fn allocates_deterministically() {
        let cidr: IpNet = "10.96.0.0/16".parse().unwrap();
        let mut a = vec![svc("prod", "my-service", "NodePort", None)];
        let notes = allocate(&mut a, &[cidr]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        let spec = a[0].spec.as_ref().unwrap();
        let ip: IpAddr = spec.cluster_ip.as_ref().unwrap().parse().unwrap();
        assert!(cidr.contains(&ip));
        let np = spec.ports.as_ref().unwrap()[0].node_port.unwrap();
        assert!((30000..=32767).contains(&np));
        let mut b = vec![svc("prod", "my-service", "NodePort", None)];
        allocate(&mut b, &[cidr]);
        assert_eq!(b[0].spec, a[0].spec, "same input, same allocation");
    }

    /// Exactly the Services allocation changes need it.
    #[test]
    fn needs_allocation_matches_allocate() {
        let cidr: IpNet = "10.96.0.0/16".parse().unwrap();
        let cases = [
            svc("ns", "a", "ClusterIP", None),
            svc("ns", "b", "ClusterIP", Some("10.96.0.9")),
            svc("ns", "c", "NodePort", Some("10.96.0.10")),
            svc("ns", "d", "ExternalName", None),
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "ns", "name": "e"},
                "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11",
                         "externalTrafficPolicy": "Local",
                         "ports": [{"port": 80, "nodePort": 30001}]}
            }))
            .unwrap(),
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "ns", "name": "f"},
                "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.12",
                         "ports": [{"port": 80, "nodePort": 30002}]}
            }))
            .unwrap(),
        ];
        for case in cases {
            let mut copy = vec![case.clone()];
            let changed = !allocate(&mut copy, &[cidr]).is_empty();
            assert_eq!(needs_allocation(&case), changed, "{:?}", case.metadata.name);
        }
    }

    /// What `taken` holds is avoided as if its Services were in the list.
    #[test]
    fn taken_addresses_are_avoided() {
        let cidr: IpNet = "10.96.0.0/29".parse().unwrap();
        let mut all: Vec<_> = (0..5)
            .map(|i| svc("ns", &format!("s{i}"), "ClusterIP", None))
            .collect();
        allocate(&mut all, &[cidr]);
        let mut taken = Taken::default();
        for s in &all[..3] {
            taken.add(s);
        }
        let mut rest: Vec<_> = (3..5)
            .map(|i| svc("ns", &format!("s{i}"), "ClusterIP", None))
            .collect();
        allocate_avoiding(&mut rest, taken, &[cidr]);
        assert_eq!(rest[..], all[3..], "same as allocating all together");
    }

    /// Allocation never reuses an address that a Service already holds.
    #[test]
    fn avoids_taken_addresses() {
        let cidr: IpNet = "10.96.0.0/29".parse().unwrap();
        let mut svcs: Vec<_> = (0..5)
            .map(|i| svc("ns", &format!("s{i}"), "ClusterIP", None))
            .collect();
        allocate(&mut svcs, &[cidr]);
        let ips: HashSet<_> = svcs
            .iter()
            .map(|s| s.spec.as_ref().unwrap().cluster_ip.clone().unwrap())
            .collect();
        assert_eq!(ips.len(), 5, "{ips:?}");
    }
}
