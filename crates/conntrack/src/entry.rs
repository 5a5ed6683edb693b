//! Conntrack entries as this crate sees them: the two tuples of a flow and what is
//! needed to delete exactly that entry again (zone and kernel id).

use std::fmt;
use std::net::IpAddr;

use kpr_model::{IpFamily, Protocol, join_host_port};

/// One direction of a flow: addresses and ports as the kernel recorded them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}",
            join_host_port(&self.src, self.src_port),
            join_host_port(&self.dst, self.dst_port)
        )
    }
}

/// A conntrack entry of a TCP, UDP or SCTP flow.
///
/// For a flow that kube-proxy's rules DNATed, `original.dst` is the Service address
/// the client sent to and `reply.src` is the endpoint the kernel translated it to
/// (`--orig-dst` and `--reply-src` in `conntrack` terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Transport protocol.
    pub protocol: Protocol,
    /// The tuple of the original direction (client to Service).
    pub original: Tuple,
    /// The tuple of the reply direction (endpoint to client, after NAT).
    pub reply: Tuple,
    /// Conntrack zone (0 unless some other software uses zones).
    pub zone: u16,
    /// The kernel's id of the entry, when known: a delete carrying it removes only
    /// this entry, never a newer flow that reuses the same tuple.
    pub id: Option<u32>,
    /// Seconds until the entry expires, as dumped (not used by deletes).
    pub timeout: Option<u32>,
    /// The TCP connection state as dumped (`CTA_PROTOINFO_TCP_STATE`); `None` for
    /// UDP/SCTP and for entries built here.
    pub tcp_state: Option<TcpState>,
}

/// A TCP flow's state in the kernel's conntrack (`enum tcp_conntrack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpState(pub u8);

impl TcpState {
    /// `TCP_CONNTRACK_ESTABLISHED`.
    pub const ESTABLISHED: TcpState = TcpState(3);

    /// True for an established connection: what IPVS counts as "active".
    pub fn is_established(self) -> bool {
        self == Self::ESTABLISHED
    }

    /// The state's name as `conntrack -L` prints it.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NONE",
            1 => "SYN_SENT",
            2 => "SYN_RECV",
            3 => "ESTABLISHED",
            4 => "FIN_WAIT",
            5 => "CLOSE_WAIT",
            6 => "LAST_ACK",
            7 => "TIME_WAIT",
            8 => "CLOSE",
            9 => "SYN_SENT2",
            _ => "UNKNOWN",
        }
    }
}

impl Entry {
    /// A UDP/SCTP/TCP entry from the original tuple and the address:port the flow
    /// was translated to (its reply source). Without NAT pass the original
    /// destination. The reply destination is the client (no SNAT).
    pub fn new(protocol: Protocol, original: Tuple, translated: (IpAddr, u16)) -> Self {
        Self {
            protocol,
            original,
            reply: Tuple {
                src: translated.0,
                dst: original.src,
                src_port: translated.1,
                dst_port: original.src_port,
            },
            zone: 0,
            id: None,
            timeout: None,
            tcp_state: None,
        }
    }

    /// The address family of the flow.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.original.src)
    }

    /// True if the flow's destination was translated (DNAT): the reply does not
    /// come from the address:port the client sent to.
    pub fn is_dnat(&self) -> bool {
        self.reply.src != self.original.dst || self.reply.src_port != self.original.dst_port
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} reply {}",
            self.protocol.as_lower(),
            self.original,
            self.reply
        )?;
        if self.zone != 0 {
            write!(f, " zone {}", self.zone)?;
        }
        Ok(())
    }
}
