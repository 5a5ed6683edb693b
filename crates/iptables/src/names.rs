//! Upstream's kernel object names for iptables mode, verbatim, and the hash scheme that
//! names per-service and per-endpoint chains (`pkg/proxy/iptables/proxier.go`:
//! `portProtoHash`, `servicePortEndpointChainName`).
//!
//! A chain name is a prefix plus the first 16 characters of the base32 (RFC 4648, with
//! padding alphabet) encoding of the SHA-256 of `ns/name:port` + lower-case protocol
//! (+ `ip:port` for endpoint chains). Sharing the scheme is what lets an operator swap
//! upstream kube-proxy and kube-proxy-rs on a live node.

use sha2::{Digest, Sha256};

/// Entry chain for Service traffic (nat and filter tables).
pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
/// filter: drops/rejects external traffic with no (local) endpoints.
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// NodePort dispatch (nat) and health-check node port accept rules (filter).
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
/// nat: masquerades marked traffic.
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
/// nat: sets the masquerade mark.
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// filter: accepts forwarded Service traffic.
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
/// filter: drops load-balancer traffic not allowed by `loadBalancerSourceRanges`.
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
/// Canary chain upstream watches to detect an external flush of its rules.
pub const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";
/// filter: kubelet's anti-martian chain, duplicated when localhost NodePorts are on.
pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";

/// Prefix of Cluster-policy service chains.
pub const SVC_PREFIX: &str = "KUBE-SVC-";
/// Prefix of Local-policy service chains.
pub const SVL_PREFIX: &str = "KUBE-SVL-";
/// Prefix of load-balancer firewall chains.
pub const FW_PREFIX: &str = "KUBE-FW-";
/// Prefix of external-destination chains.
pub const EXT_PREFIX: &str = "KUBE-EXT-";
/// Prefix of endpoint chains.
pub const SEP_PREFIX: &str = "KUBE-SEP-";

/// nfacct counter counting localhost NodePort packets accepted.
pub const NFACCT_LOCALHOST_NODEPORTS: &str = "localhost_nps_accepted_pkts";
/// nfacct counter counting packets dropped as conntrack-INVALID.
pub const NFACCT_CT_INVALID_DROPPED: &str = "ct_state_invalid_dropped_pkts";

/// True if `chain` is a per-service or per-endpoint chain (ours or upstream's).
pub fn is_service_chain(chain: &str) -> bool {
    [SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX]
        .iter()
        .any(|p| chain.starts_with(p))
}

fn hash16(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut encoded = data_encoding::BASE32.encode(&digest);
    encoded.truncate(16);
    encoded
}

/// The five per-service chain names of one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChains {
    /// `KUBE-SVC-<hash>`.
    pub cluster: String,
    /// `KUBE-SVL-<hash>`.
    pub local: String,
    /// `KUBE-FW-<hash>`.
    pub firewall: String,
    /// `KUBE-EXT-<hash>`.
    pub external: String,
}

impl ServiceChains {
    /// Chain names for the port whose `ServicePortName` string is `port_name`.
    pub fn new(port_name: &str, protocol_lower: &str) -> Self {
        let hash = hash16(&[port_name, protocol_lower]);
        Self {
            cluster: format!("{SVC_PREFIX}{hash}"),
            local: format!("{SVL_PREFIX}{hash}"),
            firewall: format!("{FW_PREFIX}{hash}"),
            external: format!("{EXT_PREFIX}{hash}"),
        }
    }
}

/// `KUBE-SEP-<hash>` for endpoint `endpoint` (`ip:port`) of a Service port.
pub fn endpoint_chain(port_name: &str, protocol_lower: &str, endpoint: &str) -> String {
    format!(
        "{SEP_PREFIX}{}",
        hash16(&[port_name, protocol_lower, endpoint])
    )
}

/// The masquerade mark for a mark bit, formatted as upstream does (Go `%#08x`, which
/// zero-pads the digits to 8: bit 14 gives `0x00004000`).
pub fn masquerade_mark(bit: u8) -> String {
    format!("{:#010x}", 1u32 << (bit.min(31)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash scheme reproduces chain names from upstream's test fixtures.
    #[test]
    fn upstream_fixture_names() {
        let c = ServiceChains::new("ns1/svc1:p80", "tcp");
        assert_eq!(c.cluster, "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        let c = ServiceChains::new("ns2/svc2:p80", "tcp");
        assert_eq!(c.external, "KUBE-EXT-GNZBNJ2PO5MGZ6GT");
        assert_eq!(c.local, "KUBE-SVL-GNZBNJ2PO5MGZ6GT");
        assert_eq!(
            ServiceChains::new("ns5/svc5:p80", "tcp").firewall,
            "KUBE-FW-NUKIZ6OKUXPJNT4C"
        );
    }

    /// The mark is formatted like Go's %#08x.
    #[test]
    fn mark_format() {
        assert_eq!(masquerade_mark(14), "0x00004000");
        assert_eq!(masquerade_mark(0), "0x00000001");
        assert_eq!(masquerade_mark(31), "0x80000000");
    }
}
