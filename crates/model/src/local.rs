//! Node-level traffic settings every data plane needs, independent of how each spells
//! them: how traffic from local pods is recognised, and which addresses take NodePorts.

use std::net::IpAddr;

use ipnet::IpNet;

/// How to tell traffic from local pods apart from other traffic (upstream
/// `LocalTrafficDetector`), for one family.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LocalDetector {
    /// No detector: off-cluster traffic to ClusterIPs is not masqueraded and
    /// pod-originated external traffic is not short-circuited.
    None,
    /// Pod traffic comes from this CIDR (`ClusterCIDR` or `NodeCIDR` mode).
    Cidr(IpNet),
    /// Pod traffic enters through this bridge (`BridgeInterface` mode).
    BridgeInterface(String),
    /// Pod traffic enters through interfaces with this name prefix
    /// (`InterfaceNamePrefix` mode).
    InterfaceNamePrefix(String),
}

impl LocalDetector {
    /// True if the detector can tell local traffic apart (upstream `IsImplemented`).
    pub fn is_implemented(&self) -> bool {
        !matches!(self, LocalDetector::None)
    }
}

/// Which local addresses accept NodePort traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address.
    All,
    /// Only these addresses (already resolved from `nodePortAddresses` CIDRs against
    /// the host's interfaces, or the node's primary IPs).
    Ips(Vec<IpAddr>),
}
