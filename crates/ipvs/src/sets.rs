//! The seventeen ipsets of IPVS mode: names, types and the comments the iptables
//! rules carry, the entry spellings (`10.96.0.10,udp:53`), and the `ipset save` /
//! `ipset restore` text forms. Plain values, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use kpr_model::{IpFamily, Protocol};

/// The kind of an ipset (`hash:ip,port` ...), which fixes its entry spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetType {
    /// `hash:ip`: `IP`.
    HashIp,
    /// `hash:ip,port`: `IP,proto:port`.
    HashIpPort,
    /// `hash:ip,port,ip`: `IP,proto:port,IP`.
    HashIpPortIp,
    /// `hash:ip,port,net`: `IP,proto:port,CIDR`.
    HashIpPortNet,
    /// `bitmap:port`: `port`.
    BitmapPort,
}

impl SetType {
    /// The ipset type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HashIp => "hash:ip",
            Self::HashIpPort => "hash:ip,port",
            Self::HashIpPortIp => "hash:ip,port,ip",
            Self::HashIpPortNet => "hash:ip,port,net",
            Self::BitmapPort => "bitmap:port",
        }
    }
}

/// One of the ipsets IPVS mode keeps (upstream `ipsetInfo`, in its order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Set {
    /// Local endpoints `ip,proto:port,ip`, for hairpin masquerade.
    LoopBack,
    /// ClusterIP `ip,proto:port`.
    ClusterIp,
    /// External IPs of Cluster-policy services.
    ExternalIp,
    /// External IPs of Local-policy services.
    ExternalIpLocal,
    /// Load-balancer VIPs.
    LoadBalancer,
    /// Load-balancer VIPs with source ranges.
    LoadBalancerFw,
    /// Load-balancer VIPs of Local-policy services.
    LoadBalancerLocal,
    /// `lbIP,proto:port,lbIP` when a source range admits the node itself.
    LoadBalancerSourceIp,
    /// `lbIP,proto:port,cidr` per source range.
    LoadBalancerSourceCidr,
    /// TCP NodePorts.
    NodePortTcp,
    /// TCP NodePorts of Local-policy services.
    NodePortLocalTcp,
    /// UDP NodePorts.
    NodePortUdp,
    /// UDP NodePorts of Local-policy services.
    NodePortLocalUdp,
    /// SCTP NodePorts, `nodeIP,sctp:port`.
    NodePortSctp,
    /// SCTP NodePorts of Local-policy services.
    NodePortLocalSctp,
    /// Health-check node ports.
    HealthCheckNodePort,
    /// Addresses bound to `kube-ipvs0`.
    IpvsIps,
}

impl Set {
    /// Every set, in upstream's creation order.
    pub const ALL: [Set; 17] = [
        Set::LoopBack,
        Set::ClusterIp,
        Set::ExternalIp,
        Set::ExternalIpLocal,
        Set::LoadBalancer,
        Set::LoadBalancerFw,
        Set::LoadBalancerLocal,
        Set::LoadBalancerSourceIp,
        Set::LoadBalancerSourceCidr,
        Set::NodePortTcp,
        Set::NodePortLocalTcp,
        Set::NodePortUdp,
        Set::NodePortLocalUdp,
        Set::NodePortSctp,
        Set::NodePortLocalSctp,
        Set::HealthCheckNodePort,
        Set::IpvsIps,
    ];

    /// The IPv4 name (`KUBE-CLUSTER-IP`).
    pub fn base_name(self) -> &'static str {
        match self {
            Self::LoopBack => "KUBE-LOOP-BACK",
            Self::ClusterIp => "KUBE-CLUSTER-IP",
            Self::ExternalIp => "KUBE-EXTERNAL-IP",
            Self::ExternalIpLocal => "KUBE-EXTERNAL-IP-LOCAL",
            Self::LoadBalancer => "KUBE-LOAD-BALANCER",
            Self::LoadBalancerFw => "KUBE-LOAD-BALANCER-FW",
            Self::LoadBalancerLocal => "KUBE-LOAD-BALANCER-LOCAL",
            Self::LoadBalancerSourceIp => "KUBE-LOAD-BALANCER-SOURCE-IP",
            Self::LoadBalancerSourceCidr => "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            Self::NodePortTcp => "KUBE-NODE-PORT-TCP",
            Self::NodePortLocalTcp => "KUBE-NODE-PORT-LOCAL-TCP",
            Self::NodePortUdp => "KUBE-NODE-PORT-UDP",
            Self::NodePortLocalUdp => "KUBE-NODE-PORT-LOCAL-UDP",
            Self::NodePortSctp => "KUBE-NODE-PORT-SCTP-HASH",
            Self::NodePortLocalSctp => "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
            Self::HealthCheckNodePort => "KUBE-HEALTH-CHECK-NODE-PORT",
            Self::IpvsIps => "KUBE-IPVS-IPS",
        }
    }

    /// The set's name in `family`: IPv6 sets are `KUBE-6-...`, cut to ipset's 31
    /// characters as upstream does (`KUBE-6-LOAD-BALANCER-SOURCE-CID`).
    pub fn name(self, family: IpFamily) -> String {
        let base = self.base_name();
        match family {
            IpFamily::V4 => base.to_string(),
            IpFamily::V6 => {
                let mut name = format!("KUBE-6-{}", &base["KUBE-".len()..]);
                name.truncate(31);
                name
            }
        }
    }

    /// The set's type.
    pub fn set_type(self) -> SetType {
        match self {
            Self::LoopBack | Self::LoadBalancerSourceIp => SetType::HashIpPortIp,
            Self::LoadBalancerSourceCidr => SetType::HashIpPortNet,
            Self::NodePortTcp
            | Self::NodePortLocalTcp
            | Self::NodePortUdp
            | Self::NodePortLocalUdp
            | Self::HealthCheckNodePort => SetType::BitmapPort,
            Self::IpvsIps => SetType::HashIp,
            _ => SetType::HashIpPort,
        }
    }

    /// The comment of the iptables rules matching the set.
    pub fn comment(self) -> &'static str {
        match self {
            Self::LoopBack => {
                "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
            }
            Self::ClusterIp => "Kubernetes service cluster ip + port for masquerade purpose",
            Self::ExternalIp => {
                "Kubernetes service external ip + port for masquerade and filter purpose"
            }
            Self::ExternalIpLocal => {
                "Kubernetes service external ip + port with externalTrafficPolicy=local"
            }
            Self::LoadBalancer => "Kubernetes service lb portal",
            Self::LoadBalancerFw => {
                "Kubernetes service load balancer ip + port for load balancer with sourceRange"
            }
            Self::LoadBalancerLocal => {
                "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
            }
            Self::LoadBalancerSourceIp => {
                "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
            }
            Self::LoadBalancerSourceCidr => {
                "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
            }
            Self::NodePortTcp => "Kubernetes nodeport TCP port for masquerade purpose",
            Self::NodePortLocalTcp => {
                "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
            }
            Self::NodePortUdp => "Kubernetes nodeport UDP port for masquerade purpose",
            Self::NodePortLocalUdp => {
                "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
            }
            Self::NodePortSctp => {
                "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
            }
            Self::NodePortLocalSctp => {
                "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
            }
            Self::HealthCheckNodePort => "Kubernetes health check node port",
            Self::IpvsIps => "Addresses on the ipvs interface",
        }
    }

    /// The `ipset create` arguments after the name (`-exist` makes it idempotent).
    pub fn create_args(self, family: IpFamily) -> String {
        match self.set_type() {
            SetType::BitmapPort => "bitmap:port range 0-65535 -exist".to_string(),
            t => format!(
                "{} family {} hashsize 1024 maxelem 65536 -exist",
                t.as_str(),
                match family {
                    IpFamily::V4 => "inet",
                    IpFamily::V6 => "inet6",
                }
            ),
        }
    }
}

/// `ip,proto:port`, the entry of a `hash:ip,port` set.
pub fn ip_port(ip: IpAddr, protocol: Protocol, port: u16) -> String {
    format!("{ip},{}:{port}", protocol.as_lower())
}

/// `ip,proto:port,ip2`, the entry of a `hash:ip,port,ip` set.
pub fn ip_port_ip(ip: IpAddr, protocol: Protocol, port: u16, ip2: IpAddr) -> String {
    format!("{ip},{}:{port},{ip2}", protocol.as_lower())
}

/// `ip,proto:port,net`, the entry of a `hash:ip,port,net` set. A host-length prefix
/// is written without its length, as `ipset save` prints it, so that the kernel's
/// listing compares equal (upstream re-adds such entries on every sync).
pub fn ip_port_net(ip: IpAddr, protocol: Protocol, port: u16, net: IpNet) -> String {
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        format!("{ip},{}:{port},{}", protocol.as_lower(), net.addr())
    } else {
        format!("{ip},{}:{port},{net}", protocol.as_lower())
    }
}

/// Entries per set.
pub type SetEntries = BTreeMap<Set, BTreeSet<String>>;

/// Every set with no entries.
pub fn empty_sets() -> SetEntries {
    Set::ALL.iter().map(|s| (*s, BTreeSet::new())).collect()
}

/// Parses `ipset save` output: the entries of our sets of `family` (other sets are
/// ignored). Sets that exist but are empty are present with no entries; a set that
/// does not exist is absent.
pub fn parse_save(text: &str, family: IpFamily) -> SetEntries {
    let by_name: BTreeMap<String, Set> = Set::ALL.iter().map(|s| (s.name(family), *s)).collect();
    let mut out = SetEntries::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("create"), Some(name), _) => {
                if let Some(set) = by_name.get(name) {
                    out.entry(*set).or_default();
                }
            }
            (Some("add"), Some(name), Some(entry)) => {
                if let Some(set) = by_name.get(name) {
                    out.entry(*set).or_default().insert(entry.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// The `ipset restore` script taking the kernel from `current` to `wanted`: creates
/// every set (`-exist`), deletes entries no longer wanted, adds new ones. Empty when
/// nothing changes and every set exists.
pub fn restore_script(current: &SetEntries, wanted: &SetEntries, family: IpFamily) -> String {
    let mut out = String::new();
    for set in Set::ALL {
        let name = set.name(family);
        let have = current.get(&set);
        if have.is_none() {
            let _ = writeln!(out, "create {name} {}", set.create_args(family));
        }
        let empty = BTreeSet::new();
        let have = have.unwrap_or(&empty);
        let want = wanted.get(&set).unwrap_or(&empty);
        for gone in have.difference(want) {
            let _ = writeln!(out, "del {name} {gone} -exist");
        }
        for new in want.difference(have) {
            let _ = writeln!(out, "add {name} {new} -exist");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv6 names get the `KUBE-6-` prefix and two are cut to 31 characters.
    #[test]
    fn ipv6_names() {
        assert_eq!(Set::ClusterIp.name(IpFamily::V6), "KUBE-6-CLUSTER-IP");
        assert_eq!(
            Set::LoadBalancerSourceCidr.name(IpFamily::V6),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID"
        );
        assert_eq!(
            Set::NodePortLocalSctp.name(IpFamily::V6),
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
        );
        assert!(Set::ALL.iter().all(|s| s.name(IpFamily::V6).len() <= 31));
    }

    /// Host-length source ranges are spelled as the kernel lists them.
    #[test]
    fn net_entries() {
        let ip: IpAddr = "1.2.3.4".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let net = |s: &str| s.parse::<IpNet>().unwrap_or_default();
        assert_eq!(
            ip_port_net(ip, Protocol::Tcp, 80, net("10.0.0.0/8")),
            "1.2.3.4,tcp:80,10.0.0.0/8"
        );
        assert_eq!(
            ip_port_net(ip, Protocol::Tcp, 80, net("10.1.2.3/32")),
            "1.2.3.4,tcp:80,10.1.2.3"
        );
    }

    /// `ipset save` text back to entries; the diff creates missing sets only and
    /// touches only changed entries.
    #[test]
    fn save_and_restore() {
        let save = "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n\
                    add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n\
                    add KUBE-CLUSTER-IP 10.96.0.9,tcp:80\n\
                    create OTHER hash:ip family inet\nadd OTHER 1.1.1.1\n";
        let mut current = parse_save(save, IpFamily::V4);
        assert_eq!(current.len(), 1);
        let mut wanted = empty_sets();
        wanted
            .get_mut(&Set::ClusterIp)
            .map(|s| s.insert("10.96.0.1,tcp:443".to_string()));
        let script = restore_script(&current, &wanted, IpFamily::V4);
        assert!(script.contains("del KUBE-CLUSTER-IP 10.96.0.9,tcp:80 -exist\n"));
        assert!(!script.contains("create KUBE-CLUSTER-IP"));
        assert!(script.contains("create KUBE-LOOP-BACK hash:ip,port,ip family inet"));
        assert!(script.contains("create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 -exist"));
        current = wanted.clone();
        assert_eq!(restore_script(&current, &wanted, IpFamily::V4), "");
    }
}
