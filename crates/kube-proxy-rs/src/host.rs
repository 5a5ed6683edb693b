//! Facts about this host the proxy needs besides Kubernetes objects: its hostname,
//! interface addresses (for `nodePortAddresses` and the local detectors) and sysctls.
//! Behind a trait so dry runs and tests can describe a host that is not this one.

use std::net::IpAddr;

use ipnet::IpNet;

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// Interface name.
    pub interface: String,
    /// Address with its prefix.
    pub address: IpNet,
}

/// What the proxy reads from the host.
pub trait Host: Send + Sync {
    /// The hostname (lower-cased, as upstream uses it for the node name).
    fn hostname(&self) -> String;
    /// Every address of every interface.
    fn interface_addresses(&self) -> Vec<InterfaceAddress>;
    /// A sysctl value (`net/netfilter/nf_conntrack_tcp_be_liberal` style path), if readable.
    fn sysctl(&self, path: &str) -> Option<String>;
}

/// The real host.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealHost;

impl Host for RealHost {
    fn hostname(&self) -> String {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
            .trim()
            .to_lowercase()
    }

    fn interface_addresses(&self) -> Vec<InterfaceAddress> {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for a in addrs {
            let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
                continue;
            };
            let pair = if let (Some(ip), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                let prefix = u32::from(m.ip()).count_ones() as u8;
                IpNet::new(IpAddr::V4(ip.ip()), prefix).ok()
            } else if let (Some(ip), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                let prefix = u128::from(m.ip()).count_ones() as u8;
                IpNet::new(IpAddr::V6(ip.ip()), prefix).ok()
            } else {
                None
            };
            if let Some(address) = pair {
                out.push(InterfaceAddress {
                    interface: a.interface_name,
                    address,
                });
            }
        }
        out
    }

    fn sysctl(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(format!("/proc/sys/{path}"))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// A host described by values, for dry runs of another node and for tests.
#[derive(Clone, Debug, Default)]
pub struct StaticHost {
    /// The hostname.
    pub hostname: String,
    /// Interface addresses.
    pub addresses: Vec<InterfaceAddress>,
    /// Sysctl values by path.
    pub sysctls: Vec<(String, String)>,
}

impl Host for StaticHost {
    fn hostname(&self) -> String {
        self.hostname.clone()
    }

    fn interface_addresses(&self) -> Vec<InterfaceAddress> {
        self.addresses.clone()
    }

    fn sysctl(&self, path: &str) -> Option<String> {
        self.sysctls
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
    }
}
