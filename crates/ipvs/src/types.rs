//! The IPVS objects this crate reads and writes: virtual servers (services), real
//! servers (destinations), their flags and counters, and the connection timeouts.
//! Plain values, no I/O.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::{BitAnd, BitOr, BitOrAssign, Not};

pub use kpr_model::Protocol;

/// Flags of a virtual server (`IP_VS_SVC_F_*` in `linux/ip_vs.h`).
///
/// [`ServiceFlags::HASHED`] is the kernel's own bookkeeping: it is never sent and is
/// removed from what the kernel reports, so a service reads back with the flags it
/// was created with.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ServiceFlags(u32);

impl ServiceFlags {
    /// Persistent service: a client keeps its real server for `timeout` seconds.
    pub const PERSISTENT: Self = Self(0x1);
    /// The service is in the kernel's hash table (set by the kernel only).
    pub const HASHED: Self = Self(0x2);
    /// One-packet scheduling (UDP: schedule every datagram anew).
    pub const ONEPACKET: Self = Self(0x4);
    /// Scheduler-specific flag 1 (`sh-fallback` for sh, `mh-fallback` for mh).
    pub const SCHED1: Self = Self(0x8);
    /// Scheduler-specific flag 2 (`sh-port` for sh, `mh-port` for mh).
    pub const SCHED2: Self = Self(0x10);
    /// Scheduler-specific flag 3 (unused by the schedulers of Linux 6.x).
    pub const SCHED3: Self = Self(0x20);
    /// The sh scheduler falls back to another real server when the hashed one is
    /// unavailable (`IP_VS_SVC_F_SCHED_SH_FALLBACK`); mh uses the same bit.
    pub const SH_FALLBACK: Self = Self::SCHED1;
    /// The sh scheduler hashes the source port too (`IP_VS_SVC_F_SCHED_SH_PORT`);
    /// mh uses the same bit.
    pub const SH_PORT: Self = Self::SCHED2;

    const NAMES: [(Self, &'static str); 6] = [
        (Self::PERSISTENT, "PERSISTENT"),
        (Self::HASHED, "HASHED"),
        (Self::ONEPACKET, "ONEPACKET"),
        (Self::SCHED1, "SCHED1"),
        (Self::SCHED2, "SCHED2"),
        (Self::SCHED3, "SCHED3"),
    ];

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The flags of a raw value, unknown bits kept.
    pub const fn from_bits_retain(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Clears the flags of `other`.
    pub fn remove(&mut self, other: Self) {
        self.0 &= !other.0;
    }
}

impl BitOr for ServiceFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for ServiceFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for ServiceFlags {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl Not for ServiceFlags {
    type Output = Self;
    fn not(self) -> Self {
        Self(!self.0)
    }
}

impl fmt::Debug for ServiceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        f.write_str("ServiceFlags(")?;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !flag.0;
            }
        }
        if rest != 0 || first {
            if !first {
                f.write_str(" | ")?;
            }
            write!(f, "{rest:#x}")?;
        }
        f.write_str(")")
    }
}

/// What identifies a virtual server in the kernel: address, protocol and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The virtual IP address (its family is the service's family).
    pub address: IpAddr,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The virtual port.
    pub port: u16,
}

impl ServiceKey {
    /// The key of `protocol` `address`:`port`.
    pub fn new(address: IpAddr, protocol: Protocol, port: u16) -> Self {
        Self {
            address,
            protocol,
            port,
        }
    }
}

/// As `ipvsadm -Ln` writes it: `TCP 10.96.0.1:443`, `UDP [fd00::a]:53`.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.protocol,
            SocketAddr::new(self.address, self.port)
        )
    }
}

impl From<&VirtualServer> for ServiceKey {
    fn from(vs: &VirtualServer) -> Self {
        vs.key()
    }
}

impl From<&ServiceKey> for ServiceKey {
    fn from(key: &ServiceKey) -> Self {
        *key
    }
}

/// An IPVS virtual server (service) addressed by protocol, address and port.
///
/// Firewall-mark services are not supported: they are never created, and dumps
/// leave them out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualServer {
    /// The virtual IP address; IPv4 or IPv6.
    pub address: IpAddr,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The virtual port.
    pub port: u16,
    /// The scheduler's name (`rr`, `wrr`, `lc`, `sh`, ...; at most 15 bytes). The
    /// kernel loads `ip_vs_<name>` on demand when it can.
    pub scheduler: String,
    /// Service flags (persistence, one-packet, scheduler flags).
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (used with [`ServiceFlags::PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity: for IPv4 a mask as a number (`0xffff_ff00` groups
    /// clients by /24), for IPv6 a prefix length (1 to 128).
    pub netmask: u32,
}

impl VirtualServer {
    /// A service with no flags, no persistence and the full netmask of its family
    /// (`0xffff_ffff`, or 128 for IPv6), as upstream kube-proxy creates them.
    pub fn new(
        address: IpAddr,
        protocol: Protocol,
        port: u16,
        scheduler: impl Into<String>,
    ) -> Self {
        Self {
            address,
            protocol,
            port,
            scheduler: scheduler.into(),
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask: full_netmask(address),
        }
    }

    /// The service's identity.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.address, self.protocol, self.port)
    }
}

/// The netmask meaning "one client address": all ones for IPv4, 128 for IPv6.
pub fn full_netmask(address: IpAddr) -> u32 {
    match address {
        IpAddr::V4(_) => u32::MAX,
        IpAddr::V6(_) => 128,
    }
}

/// How IPVS forwards to a real server (`IP_VS_CONN_F_*` forwarding methods).
/// This crate creates only [`ForwardMethod::Masquerade`] (NAT, as kube-proxy
/// does); the others are decoded so that a dump can show them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ForwardMethod {
    /// NAT (`Masq` in `ipvsadm`).
    #[default]
    Masquerade,
    /// Local node (`Local`).
    Local,
    /// IP-in-IP tunnelling (`Tunnel`).
    Tunnel,
    /// Direct routing (`Route`).
    DirectRoute,
    /// Cache bypass.
    Bypass,
}

impl ForwardMethod {
    /// The kernel's value (`IP_VS_CONN_F_MASQ` ...).
    pub fn to_kernel(self) -> u32 {
        match self {
            Self::Masquerade => 0,
            Self::Local => 1,
            Self::Tunnel => 2,
            Self::DirectRoute => 3,
            Self::Bypass => 4,
        }
    }

    /// The method of a kernel value (masked with `IP_VS_CONN_F_FWD_MASK`); `None`
    /// for values no kernel defines.
    pub fn from_kernel(value: u32) -> Option<Self> {
        Some(match value & 0x7 {
            0 => Self::Masquerade,
            1 => Self::Local,
            2 => Self::Tunnel,
            3 => Self::DirectRoute,
            4 => Self::Bypass,
            _ => return None,
        })
    }
}

/// A real server (destination) of a virtual server, identified within its service
/// by address and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RealServer {
    /// The real server's address; same family as its service.
    pub address: IpAddr,
    /// The real server's port.
    pub port: u16,
    /// Scheduling weight; 0 stops new connections (kube-proxy's graceful removal).
    pub weight: i32,
    /// How packets reach it; only [`ForwardMethod::Masquerade`] can be created.
    pub forward: ForwardMethod,
    /// No new connections above this many active ones (0: no limit).
    pub upper_threshold: u32,
    /// New connections again below this many (0: no limit).
    pub lower_threshold: u32,
}

impl RealServer {
    /// A masqueraded real server without connection thresholds.
    pub fn new(address: IpAddr, port: u16, weight: i32) -> Self {
        Self {
            address,
            port,
            weight,
            forward: ForwardMethod::Masquerade,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    /// Address and port, the real server's identity within its service.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// Connection counters of a real server, as dumps report them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RealServerStats {
    /// Established connections (`ActiveConn`).
    pub active_conns: u32,
    /// Other connections, e.g. closing ones (`InActConn`).
    pub inactive_conns: u32,
    /// Persistence templates pointing at it.
    pub persist_conns: u32,
}

/// IPVS connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`). When
/// setting, 0 leaves a value unchanged (as the kernel does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after the FIN.
    pub tcp_fin: u32,
    /// UDP "connections".
    pub udp: u32,
}

/// One change to the IPVS table; a batch of them is sent with
/// [`crate::Ipvs::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create a virtual server (fails if it exists).
    AddService(VirtualServer),
    /// Change the scheduler, flags, timeout and netmask of a virtual server.
    UpdateService(VirtualServer),
    /// Delete a virtual server and its real servers.
    DeleteService(ServiceKey),
    /// Add a real server to a virtual server (fails if it exists).
    AddRealServer(ServiceKey, RealServer),
    /// Change a real server's weight and thresholds.
    UpdateRealServer(ServiceKey, RealServer),
    /// Remove a real server (found by address and port) from a virtual server.
    DeleteRealServer(ServiceKey, RealServer),
}

impl Operation {
    /// The service the operation is about.
    pub fn service(&self) -> ServiceKey {
        match self {
            Self::AddService(vs) | Self::UpdateService(vs) => vs.key(),
            Self::DeleteService(key)
            | Self::AddRealServer(key, _)
            | Self::UpdateRealServer(key, _)
            | Self::DeleteRealServer(key, _) => *key,
        }
    }

    /// The real server the operation is about, if any.
    pub fn real_server(&self) -> Option<&RealServer> {
        match self {
            Self::AddRealServer(_, rs)
            | Self::UpdateRealServer(_, rs)
            | Self::DeleteRealServer(_, rs) => Some(rs),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags print by name, unknown bits in hex, and HASHED is just a bit.
    #[test]
    fn flags_debug() {
        assert_eq!(
            format!("{:?}", ServiceFlags::PERSISTENT | ServiceFlags::SH_PORT),
            "ServiceFlags(PERSISTENT | SCHED2)"
        );
        assert_eq!(format!("{:?}", ServiceFlags::empty()), "ServiceFlags(0x0)");
        assert_eq!(
            format!("{:?}", ServiceFlags::from_bits_retain(0x41)),
            "ServiceFlags(PERSISTENT | 0x40)"
        );
        let mut f = ServiceFlags::SCHED1 | ServiceFlags::HASHED;
        f.remove(ServiceFlags::HASHED);
        assert_eq!(f, ServiceFlags::SH_FALLBACK);
        assert!(f.contains(ServiceFlags::SCHED1) && !f.is_empty());
    }

    /// Keys print as ipvsadm does, with brackets around IPv6 addresses.
    #[test]
    fn key_display() {
        let v4 = ServiceKey::new([10, 96, 0, 1].into(), Protocol::Tcp, 443);
        assert_eq!(v4.to_string(), "TCP 10.96.0.1:443");
        let v6 = ServiceKey::new(
            "fd00::a"
                .parse::<IpAddr>()
                .unwrap_or(IpAddr::from([0u8; 16])),
            Protocol::Udp,
            53,
        );
        assert_eq!(v6.to_string(), "UDP [fd00::a]:53");
    }

    /// New services get their family's full netmask.
    #[test]
    fn default_netmask() {
        let v4 = VirtualServer::new([10, 0, 0, 1].into(), Protocol::Tcp, 80, "rr");
        assert_eq!(v4.netmask, 0xffff_ffff);
        let v6 = VirtualServer::new(
            IpAddr::from([0xfd00u16, 0, 0, 0, 0, 0, 0, 1]),
            Protocol::Tcp,
            80,
            "rr",
        );
        assert_eq!(v6.netmask, 128);
    }
}
