//! Names of the things the proxy programs: services, service ports, protocols and
//! address families, formatted exactly as upstream kube-proxy formats them (chain
//! names and rule comments are derived from these strings).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// A namespaced object name, displayed as `namespace/name`.
///
/// Both parts are shared strings: a clone (the store, every snapshot, the data
/// planes' records hold several per Service) copies two pointers instead of
/// allocating, and a namespace is one allocation for all its objects
/// ([`crate::intern`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// The namespace (never empty for namespaced objects; manifests default it to `default`).
    pub namespace: Arc<str>,
    /// The object name.
    pub name: Arc<str>,
}

impl NamespacedName {
    /// Builds a name from its two parts.
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        Self {
            namespace: crate::intern::intern(namespace.as_ref()),
            name: Arc::from(name.as_ref()),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A transport protocol a Service port can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (the Kubernetes default when `protocol` is omitted).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); `None` for anything else.
    pub fn from_kubernetes(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The Kubernetes spelling: `TCP`, `UDP` or `SCTP`.
    pub fn as_kubernetes(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }

    /// The lower-case spelling used by iptables, nftables and in chain-name hashes.
    pub fn as_lower(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_kubernetes())
    }
}

/// An IP address family. Each family is proxied separately, as upstream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum IpFamily {
    /// IPv4.
    #[serde(rename = "IPv4")]
    V4,
    /// IPv6.
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// The Kubernetes spelling (`IPv4` / `IPv6`), as used in `ipFamilies`,
    /// EndpointSlice `addressType` and metric labels.
    pub fn as_kubernetes(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    /// Index 0 for IPv4, 1 for IPv6, for per-family arrays.
    pub fn index(self) -> usize {
        match self {
            Self::V4 => 0,
            Self::V6 => 1,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_kubernetes())
    }
}

/// One port of one Service: the unit that gets its own chains in every data plane.
///
/// Displayed as upstream's `ServicePortName.String()`: `ns/name:port` for a named port
/// and `ns/name` for an unnamed one. The protocol is part of the identity but not of
/// the display string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service.
    pub service: NamespacedName,
    /// The port's `name` (empty for a Service with a single unnamed port).
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

/// Formats `ip:port` the way Go's `net.JoinHostPort` does (`[ip]:port` for IPv6).
pub fn join_host_port(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Named ports show as `ns/name:port`, unnamed ones as `ns/name`, like upstream.
    #[test]
    fn service_port_name_display() {
        let named = ServicePortName {
            service: NamespacedName::new("ns1", "svc1"),
            port: "p80".into(),
            protocol: Protocol::Tcp,
        };
        assert_eq!(named.to_string(), "ns1/svc1:p80");
        let unnamed = ServicePortName {
            port: String::new(),
            ..named
        };
        assert_eq!(unnamed.to_string(), "ns1/svc1");
    }

    /// IPv6 endpoints are bracketed as by Go's net.JoinHostPort.
    #[test]
    fn host_port_formatting() {
        assert_eq!(
            join_host_port(&"10.0.0.1".parse().unwrap(), 80),
            "10.0.0.1:80"
        );
        assert_eq!(
            join_host_port(&"fd00::1".parse().unwrap(), 8080),
            "[fd00::1]:8080"
        );
    }
}
