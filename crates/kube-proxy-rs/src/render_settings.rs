//! From configuration, node and host facts to the iptables renderer's per-family
//! settings: the masquerade mark, the local traffic detector, which addresses take
//! NodePorts, and the optional kernel features.

use std::net::IpAddr;

use kpr_config::KubeProxyConfiguration;
use kpr_config::settings::{DetectLocal, NodePortAddresses};
use kpr_iptables::names::masquerade_mark;
use kpr_iptables::{LocalDetector, NfacctCounters, NodePortAddresses as Npa, RenderConfig};
use kpr_model::{IpFamily, NodeInfo, ProxyState};

use crate::host::Host;

/// Kernel features found by probing (or assumed, for `--dry-run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `MASQUERADE --random-fully`.
    pub random_fully: bool,
    /// nfacct counters created.
    pub nfacct: NfacctCounters,
    /// `nf_conntrack_tcp_be_liberal` is 1.
    pub tcp_liberal: bool,
}

impl Features {
    /// Everything present, as `--dry-run` assumes (like upstream's unit-test fakes).
    pub fn all() -> Self {
        Self {
            random_fully: true,
            nfacct: NfacctCounters {
                localhost_nodeports: true,
                ct_invalid_dropped: true,
            },
            tcp_liberal: false,
        }
    }
}

/// The node's primary address of `family`: `bindAddress` if it is of that family, else
/// the Node object's first address of the family.
pub fn node_ip(
    config: &KubeProxyConfiguration,
    node: &NodeInfo,
    family: IpFamily,
) -> Option<IpAddr> {
    config
        .node_ip_override()
        .filter(|ip| IpFamily::of(ip) == family)
        .or_else(|| node.primary_ip(family))
}

/// The local detector of `family`.
pub fn local_detector(
    config: &KubeProxyConfiguration,
    node: &NodeInfo,
    family: IpFamily,
) -> LocalDetector {
    match config.detect_local() {
        DetectLocal::ClusterCidr(cidrs) => cidrs
            .into_iter()
            .find(|c| IpFamily::of(&c.addr()) == family)
            .map_or(LocalDetector::None, LocalDetector::Cidr),
        DetectLocal::NodeCidr => node
            .pod_cidr(family)
            .map_or(LocalDetector::None, |c| LocalDetector::Cidr(c.trunc())),
        DetectLocal::BridgeInterface(name) => LocalDetector::BridgeInterface(name),
        DetectLocal::InterfaceNamePrefix(prefix) => LocalDetector::InterfaceNamePrefix(prefix),
        DetectLocal::None => LocalDetector::None,
    }
}

/// Which addresses of `family` take NodePorts, resolved against the host's interfaces
/// (upstream `NodePortAddresses` + `GetNodeIPs`), and whether IPv4 loopback is among
/// them.
pub fn node_port_addresses(
    config: &KubeProxyConfiguration,
    node: &NodeInfo,
    host: &dyn Host,
    family: IpFamily,
) -> (Npa, bool) {
    let of_family = |ip: &IpAddr| IpFamily::of(ip) == family;
    let cidrs: Vec<ipnet::IpNet> = match config.node_port_addresses() {
        NodePortAddresses::All => return (Npa::All, true),
        NodePortAddresses::Primary => {
            // The node's primary IPs; none (or only loopback) means "all".
            match node_ip(config, node, family).filter(|ip| !ip.is_loopback()) {
                Some(ip) => vec![ipnet::IpNet::from(ip)],
                None => return (Npa::All, true),
            }
        }
        NodePortAddresses::Cidrs(all) => all.into_iter().filter(|c| of_family(&c.addr())).collect(),
    };
    if cidrs.is_empty() || cidrs.iter().any(|c| c.prefix_len() == 0) {
        return (Npa::All, true);
    }
    let loopback = cidrs
        .iter()
        .any(|c| c.contains(&IpAddr::from([127, 0, 0, 1])));
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in host.interface_addresses() {
        let ip = a.address.addr();
        if of_family(&ip) && cidrs.iter().any(|c| c.contains(&ip)) && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    (Npa::Ips(ips), loopback)
}

/// The iptables render settings of `family`.
pub fn iptables_render_config(
    config: &KubeProxyConfiguration,
    node: &NodeInfo,
    host: &dyn Host,
    features: &Features,
    family: IpFamily,
) -> RenderConfig {
    let (npa, loopback_allowed) = node_port_addresses(config, node, host, family);
    RenderConfig {
        family,
        masquerade_mark: masquerade_mark(config.masquerade_bit()),
        masquerade_all: config.masquerade_all(),
        local_detector: local_detector(config, node, family),
        localhost_node_ports: family == IpFamily::V4
            && config.localhost_node_ports()
            && loopback_allowed,
        node_port_addresses: npa,
        node_ip: node_ip(config, node, family),
        random_fully: features.random_fully,
        nfacct: features.nfacct,
        conntrack_tcp_liberal: features.tcp_liberal || config.conntrack().tcp_be_liberal,
        large_cluster_endpoints: 1000,
    }
}

/// The nftables render settings of `family` (localhost never takes NodePorts in this
/// mode; the ServiceCIDRs come from the state).
pub fn nftables_render_config(
    config: &KubeProxyConfiguration,
    state: &ProxyState,
    host: &dyn Host,
    family: IpFamily,
) -> kpr_nftables::RenderConfig {
    let (npa, _) = node_port_addresses(config, &state.node, host, family);
    kpr_nftables::RenderConfig {
        family,
        masquerade_mark: masquerade_mark(config.masquerade_bit()),
        masquerade_all: config.masquerade_all(),
        local_detector: local_detector(config, &state.node, family),
        node_port_addresses: npa,
        service_cidrs: state.service_cidrs(family),
        node_ip: node_ip(config, &state.node, family),
    }
}

/// The IPVS plan settings of `family`. Node addresses are those of every interface
/// but `kube-ipvs0` (which holds the Service addresses); NodePorts take all of
/// them unless `nodePortAddresses` narrows the set.
pub fn ipvs_plan_config(
    config: &KubeProxyConfiguration,
    node: &NodeInfo,
    host: &dyn Host,
    random_fully: bool,
    family: IpFamily,
) -> kpr_ipvs::PlanConfig {
    let node_addresses: std::collections::BTreeSet<IpAddr> = host
        .interface_addresses()
        .into_iter()
        .filter(|a| a.interface != kpr_ipvs::proxier::DUMMY_DEVICE)
        .map(|a| a.address.addr())
        .filter(|ip| kpr_ipvs::links::listed(*ip, family))
        .collect();
    let node_port_ips = match node_port_addresses(config, node, host, family).0 {
        Npa::All => node_addresses.iter().copied().collect(),
        Npa::Ips(ips) => ips
            .into_iter()
            .filter(|ip| node_addresses.contains(ip))
            .collect(),
    };
    kpr_ipvs::PlanConfig {
        family,
        scheduler: config.ipvs().scheduler.as_str().to_string(),
        masquerade_mark: masquerade_mark(config.masquerade_bit()),
        masquerade_all: config.masquerade_all(),
        local_detector: local_detector(config, node, family),
        node_port_ips,
        node_addresses,
        node_ip: node_ip(config, node, family),
        random_fully,
    }
}
