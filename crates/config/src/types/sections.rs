//! The nested sections of `KubeProxyConfiguration`, one struct per upstream type.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::{nullable, serialize_go_float};
use crate::duration::GoDuration;

/// `iptables`: settings of the iptables data plane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxyIptablesConfiguration {
    /// fwmark bit used to mark packets for SNAT, in [0, 31] (default 14). Also used by IPVS mode.
    #[serde(default)]
    pub masquerade_bit: Option<i32>,
    /// SNAT all traffic sent to Service cluster IPs.
    #[serde(default, deserialize_with = "nullable")]
    pub masquerade_all: bool,
    /// Allow NodePorts on IPv4 localhost (default true).
    #[serde(default)]
    pub localhost_node_ports: Option<bool>,
    /// Full resync interval (default 30s).
    #[serde(default, deserialize_with = "nullable")]
    pub sync_period: GoDuration,
    /// Minimum interval between syncs (default 1s; "0s" in the file also means 1s).
    #[serde(default, deserialize_with = "nullable")]
    pub min_sync_period: GoDuration,
}

/// `ipvs`: settings of the IPVS data plane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxyIpvsConfiguration {
    /// Full resync interval (default 30s).
    #[serde(default, deserialize_with = "nullable")]
    pub sync_period: GoDuration,
    /// Minimum interval between syncs (default 0s: sync at once).
    #[serde(default, deserialize_with = "nullable")]
    pub min_sync_period: GoDuration,
    /// IPVS scheduler name; empty means `rr`.
    #[serde(default, deserialize_with = "nullable")]
    pub scheduler: String,
    /// CIDRs whose IPVS virtual servers cleanup must leave alone.
    #[serde(rename = "excludeCIDRs", default, deserialize_with = "nullable")]
    pub exclude_cidrs: Vec<String>,
    /// Set arp_ignore=1 / arp_announce=2 so kube-ipvs0 addresses are not announced.
    #[serde(rename = "strictARP", default, deserialize_with = "nullable")]
    pub strict_arp: bool,
    /// Idle TCP session timeout; 0 leaves the kernel's value.
    #[serde(default, deserialize_with = "nullable")]
    pub tcp_timeout: GoDuration,
    /// TCP timeout after FIN; 0 leaves the kernel's value.
    #[serde(default, deserialize_with = "nullable")]
    pub tcp_fin_timeout: GoDuration,
    /// UDP timeout; 0 leaves the kernel's value.
    #[serde(default, deserialize_with = "nullable")]
    pub udp_timeout: GoDuration,
}

/// `nftables`: settings of the nftables data plane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxyNftablesConfiguration {
    /// fwmark bit used to mark packets for SNAT, in [0, 31] (default 14).
    #[serde(default)]
    pub masquerade_bit: Option<i32>,
    /// SNAT all traffic sent to Service cluster IPs.
    #[serde(default, deserialize_with = "nullable")]
    pub masquerade_all: bool,
    /// Full resync interval (default 30s).
    #[serde(default, deserialize_with = "nullable")]
    pub sync_period: GoDuration,
    /// Minimum interval between syncs (default 1s; "0s" in the file also means 1s).
    #[serde(default, deserialize_with = "nullable")]
    pub min_sync_period: GoDuration,
}

/// `conntrack`: netfilter connection-tracking sysctls kube-proxy sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxyConntrackConfiguration {
    /// Entries per CPU core (default 32768); 0 leaves the limit and ignores `min`.
    #[serde(default)]
    pub max_per_core: Option<i32>,
    /// Lower bound of the table size (default 131072).
    #[serde(default)]
    pub min: Option<i32>,
    /// Idle timeout of established TCP entries (default 24h; 0 leaves as-is).
    #[serde(default)]
    pub tcp_established_timeout: Option<GoDuration>,
    /// Timeout of CLOSE_WAIT entries (default 1h; 0 leaves as-is).
    #[serde(default)]
    pub tcp_close_wait_timeout: Option<GoDuration>,
    /// Set nf_conntrack_tcp_be_liberal=1.
    #[serde(default, deserialize_with = "nullable")]
    pub tcp_be_liberal: bool,
    /// Timeout of UNREPLIED UDP entries; 0 leaves as-is.
    #[serde(default, deserialize_with = "nullable")]
    pub udp_timeout: GoDuration,
    /// Timeout of ASSURED UDP entries; 0 leaves as-is.
    #[serde(default, deserialize_with = "nullable")]
    pub udp_stream_timeout: GoDuration,

    /// `conntrack.max`: removed upstream in v1.16.
    #[serde(default, skip_serializing)]
    pub(crate) max: Option<IgnoredAny>,
}

/// `winkernel`: Windows HNS settings, kept for compatibility and never used on Linux.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxyWinkernelConfiguration {
    /// HNS network name.
    #[serde(default, deserialize_with = "nullable")]
    pub network_name: String,
    /// Source VIP for non-DSR load balancing.
    #[serde(default, deserialize_with = "nullable")]
    pub source_vip: String,
    /// Create HNS policies with direct server return.
    #[serde(rename = "enableDSR", default, deserialize_with = "nullable")]
    pub enable_dsr: bool,
    /// HNS endpoint attached to the l2bridge for the root namespace.
    #[serde(default, deserialize_with = "nullable")]
    pub root_hns_endpoint_name: String,
    /// Forward the service VIP for the health check port.
    #[serde(default, deserialize_with = "nullable")]
    pub forward_health_check_vip: bool,
}

/// `detectLocal`: parameters of the interface-based local traffic modes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DetectLocalConfiguration {
    /// Bridge whose traffic is local (mode `BridgeInterface`).
    #[serde(default, deserialize_with = "nullable")]
    pub bridge_interface: String,
    /// Interface name prefix whose traffic is local (mode `InterfaceNamePrefix`).
    #[serde(default, deserialize_with = "nullable")]
    pub interface_name_prefix: String,
}

/// `clientConnection`: API client settings (component-base `ClientConnectionConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConnectionConfiguration {
    /// Path to a kubeconfig file; empty means in-cluster or `--master`.
    #[serde(default, deserialize_with = "nullable")]
    pub kubeconfig: String,
    /// Accept header sent to the API server.
    #[serde(default, deserialize_with = "nullable")]
    pub accept_content_types: String,
    /// Content type of requests (default `application/vnd.kubernetes.protobuf`).
    #[serde(default, deserialize_with = "nullable")]
    pub content_type: String,
    /// Client queries per second (default 5).
    #[serde(
        default,
        deserialize_with = "nullable",
        serialize_with = "serialize_go_float"
    )]
    pub qps: f32,
    /// Client burst (default 10).
    #[serde(default, deserialize_with = "nullable")]
    pub burst: i32,
}
