//! Typed views of a loaded configuration: what the rest of the program reads.
//!
//! The wire struct keeps upstream's per-mode sections (`iptables.syncPeriod`,
//! `nftables.masqueradeAll`, ...). Upstream converts them to one internal
//! value by mode (`Convert_v1alpha1_KubeProxyConfiguration_To_config_...`):
//! the IPVS mode reads `ipvs.*Period`, nftables reads `nftables.*`, every
//! other mode reads `iptables.*`; IPVS also uses `iptables.masqueradeBit` and
//! `iptables.masqueradeAll`. The accessors here apply that rule once.
//!
//! They expect a configuration that went through [`crate::load()`] (defaulted
//! and validated) and never panic otherwise: unparsable entries are skipped
//! and missing values fall back to the upstream default.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use crate::address::{parse_cidr_sloppy, parse_host_port, parse_ip_sloppy};
use crate::defaults;
use crate::duration::GoDuration;
use crate::types::KubeProxyConfiguration;

/// The data plane in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyMode {
    /// iptables (the default on Linux).
    Iptables,
    /// IPVS.
    Ipvs,
    /// nftables.
    Nftables,
}

impl ProxyMode {
    /// Every mode, in the order upstream lists them.
    pub const ALL: [ProxyMode; 3] = [ProxyMode::Iptables, ProxyMode::Ipvs, ProxyMode::Nftables];

    /// The name served by `/proxyMode` and accepted by `--proxy-mode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Nftables => "nftables",
        }
    }

    /// Parses a `mode` value; the empty string means iptables, as on upstream Linux.
    pub fn parse(s: &str) -> Option<ProxyMode> {
        match s {
            "" | "iptables" => Some(ProxyMode::Iptables),
            "ipvs" => Some(ProxyMode::Ipvs),
            "nftables" => Some(ProxyMode::Nftables),
            _ => None,
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IPVS scheduler the kernel ships (`ipvs.scheduler`; empty means round robin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvsScheduler {
    /// `rr`: round robin.
    RoundRobin,
    /// `wrr`: weighted round robin.
    WeightedRoundRobin,
    /// `lc`: least connections.
    LeastConnection,
    /// `wlc`: weighted least connections.
    WeightedLeastConnection,
    /// `lblc`: locality-based least connections.
    LocalityBasedLeastConnection,
    /// `lblcr`: locality-based least connections with replication.
    LocalityBasedLeastConnectionWithReplication,
    /// `dh`: destination hashing.
    DestinationHashing,
    /// `sh`: source hashing.
    SourceHashing,
    /// `sed`: shortest expected delay.
    ShortestExpectedDelay,
    /// `nq`: never queue.
    NeverQueue,
    /// `mh`: Maglev hashing.
    MaglevHashing,
}

impl IpvsScheduler {
    /// Every scheduler, by kernel name.
    pub const ALL: [IpvsScheduler; 11] = [
        IpvsScheduler::RoundRobin,
        IpvsScheduler::WeightedRoundRobin,
        IpvsScheduler::LeastConnection,
        IpvsScheduler::WeightedLeastConnection,
        IpvsScheduler::LocalityBasedLeastConnection,
        IpvsScheduler::LocalityBasedLeastConnectionWithReplication,
        IpvsScheduler::DestinationHashing,
        IpvsScheduler::SourceHashing,
        IpvsScheduler::ShortestExpectedDelay,
        IpvsScheduler::NeverQueue,
        IpvsScheduler::MaglevHashing,
    ];

    /// The kernel's name (`ip_vs_<name>` module, `ipvsadm -s <name>`).
    pub const fn as_str(self) -> &'static str {
        match self {
            IpvsScheduler::RoundRobin => "rr",
            IpvsScheduler::WeightedRoundRobin => "wrr",
            IpvsScheduler::LeastConnection => "lc",
            IpvsScheduler::WeightedLeastConnection => "wlc",
            IpvsScheduler::LocalityBasedLeastConnection => "lblc",
            IpvsScheduler::LocalityBasedLeastConnectionWithReplication => "lblcr",
            IpvsScheduler::DestinationHashing => "dh",
            IpvsScheduler::SourceHashing => "sh",
            IpvsScheduler::ShortestExpectedDelay => "sed",
            IpvsScheduler::NeverQueue => "nq",
            IpvsScheduler::MaglevHashing => "mh",
        }
    }

    /// Parses a scheduler name; the empty string means `rr`.
    pub fn parse(s: &str) -> Option<IpvsScheduler> {
        if s.is_empty() {
            return Some(IpvsScheduler::RoundRobin);
        }
        IpvsScheduler::ALL
            .into_iter()
            .find(|sched| sched.as_str() == s)
    }
}

/// How traffic from local pods is recognised (`detectLocalMode` + parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectLocal {
    /// Source IP within these cluster CIDRs (networks, at most one per family).
    ClusterCidr(Vec<IpNet>),
    /// Source IP within the Node's `spec.podCIDRs`.
    NodeCidr,
    /// Arriving on this bridge.
    BridgeInterface(String),
    /// Arriving on an interface whose name starts with this prefix.
    InterfaceNamePrefix(String),
    /// Nothing is known to be local: `ClusterCIDR` mode without a cluster CIDR.
    None,
}

/// Which node IPs accept NodePort connections (`nodePortAddresses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local IP (the list is empty).
    All,
    /// The Node object's primary IPv4 and/or IPv6 address (`primary`).
    Primary,
    /// Local IPs within these networks.
    Cidrs(Vec<IpNet>),
}

/// Conntrack sysctls to set; `None` timeouts mean "leave the kernel's value".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// Entries per core; 0 leaves `nf_conntrack_max` alone (and ignores `min`).
    pub max_per_core: u32,
    /// Lower bound of `nf_conntrack_max`.
    pub min: u32,
    /// `nf_conntrack_tcp_timeout_established`.
    pub tcp_established_timeout: Option<Duration>,
    /// `nf_conntrack_tcp_timeout_close_wait`.
    pub tcp_close_wait_timeout: Option<Duration>,
    /// Set `nf_conntrack_tcp_be_liberal` to 1.
    pub tcp_be_liberal: bool,
    /// `nf_conntrack_udp_timeout`.
    pub udp_timeout: Option<Duration>,
    /// `nf_conntrack_udp_timeout_stream`.
    pub udp_stream_timeout: Option<Duration>,
}

/// IPVS-specific settings; `None` timeouts mean "leave the kernel's value".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsSettings {
    /// Scheduler for every virtual server.
    pub scheduler: IpvsScheduler,
    /// Virtual servers in these networks are never removed by cleanup.
    pub exclude_cidrs: Vec<IpNet>,
    /// Set arp_ignore=1 and arp_announce=2.
    pub strict_arp: bool,
    /// IPVS TCP idle timeout.
    pub tcp_timeout: Option<Duration>,
    /// IPVS TCP timeout after FIN.
    pub tcp_fin_timeout: Option<Duration>,
    /// IPVS UDP timeout.
    pub udp_timeout: Option<Duration>,
}

/// A positive duration, `None` for zero or negative ("leave as-is").
fn positive(d: GoDuration) -> Option<Duration> {
    d.to_std().filter(|d| !d.is_zero())
}

/// Networks of the comma/list entries that parse; the rest is validation's business.
fn networks<'a>(entries: impl IntoIterator<Item = &'a str>) -> Vec<IpNet> {
    entries
        .into_iter()
        .filter_map(|s| parse_cidr_sloppy(s.trim()))
        .map(|n| n.trunc())
        .collect()
}

impl KubeProxyConfiguration {
    /// The data plane; an unknown `mode` (only possible before validation) reads as iptables.
    pub fn mode(&self) -> ProxyMode {
        ProxyMode::parse(&self.mode).unwrap_or(ProxyMode::Iptables)
    }

    fn sync_periods(&self) -> (GoDuration, GoDuration) {
        match self.mode() {
            ProxyMode::Iptables => (self.iptables.sync_period, self.iptables.min_sync_period),
            ProxyMode::Ipvs => (self.ipvs.sync_period, self.ipvs.min_sync_period),
            ProxyMode::Nftables => (self.nftables.sync_period, self.nftables.min_sync_period),
        }
    }

    /// Full resync interval of the chosen mode's section.
    pub fn sync_period(&self) -> Duration {
        positive(self.sync_periods().0).unwrap_or(defaults::SYNC_PERIOD.to_std_saturating())
    }

    /// Minimum interval between syncs of the chosen mode's section (zero: sync at once).
    pub fn min_sync_period(&self) -> Duration {
        self.sync_periods().1.to_std_saturating()
    }

    /// fwmark bit marking packets for SNAT: `nftables.masqueradeBit` in
    /// nftables mode, `iptables.masqueradeBit` otherwise (IPVS included).
    pub fn masquerade_bit(&self) -> u8 {
        let bit = match self.mode() {
            ProxyMode::Nftables => self.nftables.masquerade_bit,
            ProxyMode::Iptables | ProxyMode::Ipvs => self.iptables.masquerade_bit,
        };
        bit.and_then(|b| u8::try_from(b).ok())
            .filter(|b| *b <= 31)
            .unwrap_or(defaults::MASQUERADE_BIT as u8)
    }

    /// SNAT all Service traffic: `nftables.masqueradeAll` in nftables mode,
    /// `iptables.masqueradeAll` otherwise.
    pub fn masquerade_all(&self) -> bool {
        match self.mode() {
            ProxyMode::Nftables => self.nftables.masquerade_all,
            ProxyMode::Iptables | ProxyMode::Ipvs => self.iptables.masquerade_all,
        }
    }

    /// Whether NodePorts answer on IPv4 localhost: only in iptables mode, and
    /// only when `iptables.localhostNodePorts` is not false.
    pub fn localhost_node_ports(&self) -> bool {
        self.mode() == ProxyMode::Iptables && self.iptables.localhost_node_ports.unwrap_or(true)
    }

    /// Pod CIDRs from `clusterCIDR` (comma-separated; one per family), as networks.
    pub fn cluster_cidrs(&self) -> Vec<IpNet> {
        if self.cluster_cidr.trim().is_empty() {
            return Vec::new();
        }
        networks(self.cluster_cidr.split(','))
    }

    /// NodePort addresses: all local IPs, the primary node IPs, or a CIDR list (unset:
    /// the primary IPs in nftables mode, all local IPs otherwise).
    pub fn node_port_addresses(&self) -> NodePortAddresses {
        if self.node_port_addresses.is_empty() {
            // Upstream's platform default: nftables mode takes NodePorts on the
            // node's primary IPs only, the other modes on every local address.
            if self.mode() == ProxyMode::Nftables {
                NodePortAddresses::Primary
            } else {
                NodePortAddresses::All
            }
        } else if self.node_port_addresses.iter().any(|a| a == "primary") {
            NodePortAddresses::Primary
        } else {
            NodePortAddresses::Cidrs(networks(
                self.node_port_addresses.iter().map(String::as_str),
            ))
        }
    }

    /// How local traffic is detected; an empty `detectLocalMode` is `ClusterCIDR`.
    pub fn detect_local(&self) -> DetectLocal {
        match self.detect_local_mode.as_str() {
            "NodeCIDR" => DetectLocal::NodeCidr,
            "BridgeInterface" => {
                DetectLocal::BridgeInterface(self.detect_local.bridge_interface.clone())
            }
            "InterfaceNamePrefix" => {
                DetectLocal::InterfaceNamePrefix(self.detect_local.interface_name_prefix.clone())
            }
            _ => {
                let cidrs = self.cluster_cidrs();
                if cidrs.is_empty() {
                    DetectLocal::None
                } else {
                    DetectLocal::ClusterCidr(cidrs)
                }
            }
        }
    }

    /// `bindAddress`: the node IP override; `None` when it is the wildcard
    /// (0.0.0.0 or ::), in which case the Node object's IPs are used.
    pub fn node_ip_override(&self) -> Option<IpAddr> {
        parse_ip_sloppy(&self.bind_address).filter(|ip| !ip.is_unspecified())
    }

    /// Address of the health check server; `None` when disabled (empty).
    pub fn healthz_bind_address(&self) -> Option<SocketAddr> {
        parse_host_port(&self.healthz_bind_address).ok()
    }

    /// Address of the metrics server (`/metrics`, `/proxyMode`, `/configz`);
    /// `None` when disabled (empty, only reachable through `--metrics-port=0`).
    pub fn metrics_bind_address(&self) -> Option<SocketAddr> {
        parse_host_port(&self.metrics_bind_address).ok()
    }

    /// Conntrack sysctls to apply.
    pub fn conntrack(&self) -> ConntrackSettings {
        let ct = &self.conntrack;
        let count = |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default)).unwrap_or(0);
        ConntrackSettings {
            max_per_core: count(ct.max_per_core, defaults::CONNTRACK_MAX_PER_CORE),
            min: count(ct.min, defaults::CONNTRACK_MIN),
            tcp_established_timeout: ct.tcp_established_timeout.and_then(positive),
            tcp_close_wait_timeout: ct.tcp_close_wait_timeout.and_then(positive),
            tcp_be_liberal: ct.tcp_be_liberal,
            udp_timeout: positive(ct.udp_timeout),
            udp_stream_timeout: positive(ct.udp_stream_timeout),
        }
    }

    /// IPVS settings (meaningful in IPVS mode; `ipvs.excludeCIDRs` also guards cleanup).
    pub fn ipvs(&self) -> IpvsSettings {
        let ipvs = &self.ipvs;
        IpvsSettings {
            scheduler: IpvsScheduler::parse(&ipvs.scheduler).unwrap_or(IpvsScheduler::RoundRobin),
            exclude_cidrs: networks(ipvs.exclude_cidrs.iter().map(String::as_str)),
            strict_arp: ipvs.strict_arp,
            tcp_timeout: positive(ipvs.tcp_timeout),
            tcp_fin_timeout: positive(ipvs.tcp_fin_timeout),
            udp_timeout: positive(ipvs.udp_timeout),
        }
    }

    /// Informer resync interval (`configSyncPeriod`).
    pub fn config_sync_period(&self) -> Duration {
        positive(self.config_sync_period)
            .unwrap_or(defaults::CONFIG_SYNC_PERIOD.to_std_saturating())
    }

    /// `hostnameOverride`, trimmed, or `None` when empty.
    pub fn hostname_override(&self) -> Option<&str> {
        Some(self.hostname_override.trim()).filter(|h| !h.is_empty())
    }

    /// The value of a feature gate set in `featureGates` (or `--feature-gates`).
    pub fn feature_gate(&self, name: &str) -> Option<bool> {
        self.feature_gates.get(name).copied()
    }

    /// Log verbosity (`-v`).
    pub fn verbosity(&self) -> u32 {
        self.logging.verbosity
    }
}
