//! What the iptables renderer needs besides the model state: node-level settings
//! from the configuration and facts about this host, resolved by the shell.

use kpr_model::IpFamily;
use std::net::IpAddr;

use crate::names::masquerade_mark;

pub use kpr_model::{LocalDetector, NodePortAddresses};

/// The iptables spelling of a [`LocalDetector`].
pub trait IptablesMatch {
    /// Match arguments for "traffic from a local pod".
    fn if_local(&self) -> Option<String>;
    /// Match arguments for "traffic not from a local pod".
    fn if_not_local(&self) -> Option<String>;
}

impl IptablesMatch for LocalDetector {
    fn if_local(&self) -> Option<String> {
        match self {
            Self::None => None,
            Self::Cidr(net) => Some(format!("-s {net}")),
            Self::BridgeInterface(name) => Some(format!("-i {name}")),
            Self::InterfaceNamePrefix(prefix) => Some(format!("-i {prefix}+")),
        }
    }

    fn if_not_local(&self) -> Option<String> {
        self.if_local().map(|m| format!("! {m}"))
    }
}

/// nfacct counters that exist on this host (upstream only uses a counter in a rule
/// if it could create it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NfacctCounters {
    /// `localhost_nps_accepted_pkts`.
    pub localhost_nodeports: bool,
    /// `ct_state_invalid_dropped_pkts`.
    pub ct_invalid_dropped: bool,
}

impl NfacctCounters {
    /// No counters (a namespace where none were created): rules use none.
    pub const NONE: NfacctCounters = NfacctCounters {
        localhost_nodeports: false,
        ct_invalid_dropped: false,
    };
}

/// Settings for rendering one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderConfig {
    /// The family rendered.
    pub family: IpFamily,
    /// Masquerade mark as written in rules (e.g. `0x00004000`).
    pub masquerade_mark: String,
    /// `masqueradeAll`: masquerade all traffic to ClusterIPs.
    pub masquerade_all: bool,
    /// Local traffic detector for this family.
    pub local_detector: LocalDetector,
    /// NodePorts answer on 127.0.0.0/8 (IPv4 only; needs `route_localnet`).
    pub localhost_node_ports: bool,
    /// Addresses that accept NodePorts.
    pub node_port_addresses: NodePortAddresses,
    /// This node's primary IP of the family (load-balancer source ranges that contain
    /// it also admit traffic sourced from the VIPs).
    pub node_ip: Option<IpAddr>,
    /// `MASQUERADE --random-fully` is supported.
    pub random_fully: bool,
    /// nfacct counters available.
    pub nfacct: NfacctCounters,
    /// `nf_conntrack_tcp_be_liberal` is set: no DROP rule for INVALID packets.
    pub conntrack_tcp_liberal: bool,
    /// Above this many endpoints, endpoint comments are omitted (upstream 1000).
    pub large_cluster_endpoints: usize,
}

impl RenderConfig {
    /// Upstream's defaults for a family: mark bit 14, localhost NodePorts on for IPv4,
    /// every optional kernel feature assumed present (what `--dry-run` prints).
    pub fn new(family: IpFamily) -> Self {
        Self {
            family,
            masquerade_mark: masquerade_mark(14),
            masquerade_all: false,
            local_detector: LocalDetector::None,
            localhost_node_ports: family == IpFamily::V4,
            node_port_addresses: NodePortAddresses::All,
            node_ip: None,
            random_fully: true,
            nfacct: NfacctCounters {
                localhost_nodeports: true,
                ct_invalid_dropped: true,
            },
            conntrack_tcp_liberal: false,
            large_cluster_endpoints: 1000,
        }
    }
}
