//! Upstream's nftables object names (`pkg/proxy/nftables/proxier.go`), verbatim, and
//! the scheme that names per-service and per-endpoint chains.
//!
//! A service chain is `<prefix><base>`, base = the first 8 characters of the base32 of
//! the SHA-256 of `ns/name/protocol/port-name`, a `-`, then that string; endpoint
//! chains append `__<ip>/<port>` (IPv6 `:` written `.`). Bases longer than 240
//! characters are cut to 237 and end in `...`.

use sha2::{Digest, Sha256};

/// The table name (in families `ip` and `ip6`).
pub const TABLE: &str = "kube-proxy";

/// Set of active ClusterIPs.
pub const CLUSTER_IPS: &str = "cluster-ips";
/// Set of addresses that take NodePorts.
pub const NODEPORT_IPS: &str = "nodeport-ips";
/// Map of LB destinations subject to source ranges.
pub const FIREWALL_IPS: &str = "firewall-ips";
/// Map dropping/rejecting NodePorts without endpoints.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Map dropping/rejecting Service IPs without endpoints.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Map of ClusterIP, external IP and LB IP traffic.
pub const SERVICE_IPS: &str = "service-ips";
/// Map of NodePort traffic.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";

/// Chain rejecting unknown ports of ClusterIPs.
pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
/// Chain applying source-range firewalls.
pub const FIREWALL_CHECK: &str = "firewall-check";
/// Chain setting the masquerade mark.
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
/// Chain masquerading marked traffic.
pub const MASQUERADING: &str = "masquerading";
/// Chain applying `no-endpoint-nodeports`.
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
/// Chain that rejects (target of no-endpoint verdicts).
pub const REJECT_CHAIN: &str = "reject-chain";
/// Chain dispatching Service traffic.
pub const SERVICES: &str = "services";
/// Chain applying `no-endpoint-services`.
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";

/// Cluster-policy service chain prefix.
pub const SERVICE_PREFIX: &str = "service-";
/// Local-policy service chain prefix.
pub const LOCAL_PREFIX: &str = "local-";
/// External-destinations chain prefix.
pub const EXTERNAL_PREFIX: &str = "external-";
/// Source-range firewall chain prefix.
pub const FIREWALL_PREFIX: &str = "firewall-";
/// Endpoint chain prefix.
pub const ENDPOINT_PREFIX: &str = "endpoint-";
/// Affinity set prefix.
pub const AFFINITY_PREFIX: &str = "affinity-";

const MAX_BASE: usize = 240;

fn hash_and_truncate(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let encoded = data_encoding::BASE32.encode(&digest);
    let mut base = format!("{}-{name}", &encoded[..8]);
    if base.len() > MAX_BASE {
        let mut cut = MAX_BASE - 3;
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        base.truncate(cut);
        base.push_str("...");
    }
    base
}

/// The base shared by the `service-`, `local-`, `external-` and `firewall-` chains of
/// a Service port.
pub fn service_base(namespace: &str, name: &str, protocol_lower: &str, port_name: &str) -> String {
    hash_and_truncate(&format!("{namespace}/{name}/{protocol_lower}/{port_name}"))
}

/// The base shared by the `endpoint-` chain and `affinity-` set of an endpoint.
pub fn endpoint_base(
    namespace: &str,
    name: &str,
    protocol_lower: &str,
    port_name: &str,
    ip: &std::net::IpAddr,
    port: u16,
) -> String {
    let ip = ip.to_string().replace(':', ".");
    hash_and_truncate(&format!(
        "{namespace}/{name}/{protocol_lower}/{port_name}__{ip}/{port}"
    ))
}

/// True for per-service and per-endpoint chains (upstream: names containing `/`).
pub fn is_service_chain(name: &str) -> bool {
    name.contains('/')
}

/// The masquerade mark for a mark bit, formatted as upstream (`0x00004000`).
pub fn masquerade_mark(bit: u8) -> String {
    format!("{:#010x}", 1u32 << bit.min(31))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names from upstream's tests.
    #[test]
    fn upstream_names() {
        assert_eq!(
            service_base("ns1", "svc1", "tcp", "p80"),
            "ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            endpoint_base(
                "ns1",
                "svc1",
                "tcp",
                "p80",
                &"10.180.0.1".parse().unwrap(),
                80
            ),
            "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        assert_eq!(
            endpoint_base(
                "ns5",
                "svc5",
                "tcp",
                "p80",
                &"10.180.0.3".parse().unwrap(),
                80
            ),
            "GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
        );
    }

    /// Upstream's Test_servicePortEndpointChainNameBase cases, including IPv6 and the
    /// 240-character truncation.
    #[test]
    fn endpoint_name_cases() {
        let l = "very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx";
        let s = "very-long-service-name-why-would-you-even-do-this-i-mean-really";
        let p = "port-443-providing-the-hypertext-transmission-protocol-with-tls";
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // Upstream's case feeds the literal "fd80:abcd:12::a1b2:..." straight to the
        // name function; its endpoint cache canonicalises addresses first (RFC 5952:
        // no "::" for a single zero group), which is what reaches us too.
        let v6 = endpoint_base(
            "testing",
            "service",
            "tcp",
            "http",
            &ip("fd80:abcd:12::a1b2:c3d4:e5f6:9999"),
            80,
        );
        assert!(
            v6.ends_with("-testing/service/tcp/http__fd80.abcd.12.0.a1b2.c3d4.e5f6.9999/80"),
            "{v6}"
        );
        assert_eq!(v6.find('-'), Some(8));
        let max = endpoint_base(l, s, "sctp", p, &ip("1234:5678:9abc:def0::abc:1234"), 443);
        assert_eq!(
            max,
            format!("5YS7AFEA-{l}/{s}/sctp/{p}__1234.5678.9abc.def0..abc.1234/443")
        );
        assert_eq!(max.len(), 240);
        // Upstream's truncation case, again with the canonical form of its address.
        let cut = endpoint_base(
            l,
            s,
            "sctp",
            p,
            &ip("1234:5678:9abc:def0::abcd:1234:5678"),
            443,
        );
        assert!(
            cut.ends_with(&format!(
                "-{l}/{s}/sctp/{p}__1234.5678.9abc.def0.0.abcd.123..."
            )),
            "{cut}"
        );
        assert_eq!(cut.len(), 240);
        assert_eq!(
            service_base("testing", "service", "tcp", "http"),
            "P4ZYZVCF-testing/service/tcp/http"
        );
    }
}
