//! The `kube-ipvs0` dummy device and its addresses over rtnetlink
//! (`NETLINK_ROUTE`), synchronously: every call sends one request and reads its
//! whole answer before returning, in the calling thread, without a runtime.
//!
//! Why a dummy device: IPVS only sees packets the kernel takes as local, so
//! every virtual IP is bound (as a /32 or /128) to a device that is never up
//! and routes nothing; upstream's `pkg/proxy/ipvs/util/netlink_linux.go` does
//! the same with vishvananda/netlink. Requests are built and answers decoded
//! with netlink-packet-route's types; the socket belongs to the network
//! namespace of the thread that opened it, whichever thread uses it later.
//!
//! Address lists follow upstream's `isValidForSet`: loopback addresses and
//! IPv6 link-local ones (fe80::/10) are left out, IPv4 link-local ones are not.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use kpr_model::IpFamily;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST, NLMSG_ALIGNTO, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkExtentMask, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// How long one receive may wait for the kernel before the operation fails.
const RECV_TIMEOUT_SECONDS: i64 = 10;
/// Room for one datagram: dumps come in skbs of at most 32 KiB.
const DATAGRAM: usize = 64 << 10;
/// Dumps restarted because the table changed under them, before giving up.
const DUMP_ATTEMPTS: usize = 3;
/// `IFNAMSIZ`, the terminating NUL included.
const IFNAMSIZ: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the kernel's error text in an extended ACK.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_HEADER_LEN: usize = 16;

/// Errors of link/address operations.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The rtnetlink socket could not be opened or configured, or sending or
    /// receiving failed.
    #[error("rtnetlink socket: {operation}: {source}")]
    Socket {
        /// What was being done (`open`, `send: add address ...`, ...).
        operation: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer in time.
    #[error("{operation}: no answer from the kernel within {seconds} s")]
    Timeout {
        /// The request waiting for an answer.
        operation: String,
        /// The receive timeout.
        seconds: u64,
    },
    /// The kernel refused a request, with its errno and, when it sent one, its
    /// extended-ACK message.
    #[error("{operation}: {source}{}", kernel_text(message))]
    Kernel {
        /// The request, naming its device and address.
        operation: String,
        /// The kernel's extended-ACK message, if any.
        message: Option<String>,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A link of that name exists and is not a dummy device: it is left alone.
    #[error("link {name} exists and is not a dummy device (its kind: {kind})")]
    NotDummy {
        /// The link's name.
        name: String,
        /// Its `IFLA_INFO_KIND` (`veth`, ...), or `none` (a physical device, `lo`).
        kind: String,
    },
    /// The link an address was to be added to does not exist.
    #[error("link {name} does not exist")]
    NoSuchLink {
        /// The link's name.
        name: String,
    },
    /// The name cannot be an interface name (not sent to the kernel).
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// Why the kernel would refuse it.
        reason: &'static str,
    },
    /// The kernel's answer could not be decoded.
    #[error("{operation}: malformed answer from the kernel: {detail}")]
    Decode {
        /// The request being answered.
        operation: String,
        /// What was wrong.
        detail: String,
    },
}

fn kernel_text(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

impl LinkError {
    /// The kernel's errno when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A link found by name.
#[derive(Debug)]
struct Link {
    index: u32,
    /// `IFLA_INFO_KIND`; `None` for devices without one (physical, `lo`).
    kind: Option<InfoKind>,
}

impl Link {
    fn dummy(&self, name: &str) -> Result<(), LinkError> {
        match &self.kind {
            Some(InfoKind::Dummy) => Ok(()),
            kind => Err(LinkError::NotDummy {
                name: name.to_string(),
                kind: kind.as_ref().map_or("none".to_string(), |k| k.to_string()),
            }),
        }
    }
}

/// What the kernel answered to one request.
#[derive(Debug, Default)]
struct Answer {
    messages: Vec<RouteNetlinkMessage>,
    /// The errno of the closing `NLMSG_ERROR` or `NLMSG_DONE`; 0 for success.
    errno: i32,
    /// The kernel's extended-ACK text.
    message: Option<String>,
    /// A dump message carried `NLM_F_DUMP_INTR`: the table changed meanwhile.
    interrupted: bool,
    /// Why the first undecodable message could not be decoded.
    undecodable: Option<String>,
}

impl Answer {
    fn refused(self, operation: String) -> LinkError {
        LinkError::Kernel {
            operation,
            message: self.message,
            source: io::Error::from_raw_os_error(self.errno),
        }
    }
}

/// A synchronous rtnetlink handle in the calling thread's network namespace.
#[derive(Debug)]
pub struct Links {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
}

fn socket_error(operation: &str) -> impl FnOnce(io::Error) -> LinkError + '_ {
    move |source| LinkError::Socket {
        operation: operation.to_string(),
        source,
    }
}

impl Links {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self, LinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(socket_error("open"))?;
        socket.bind_auto().map_err(socket_error("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(socket_error("connect"))?;
        // Errors echo only the request's header; the kernel's text comes along.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &TimeVal::new(RECV_TIMEOUT_SECONDS, 0),
        )
        .map_err(|e| LinkError::Socket {
            operation: "set receive timeout".into(),
            source: e.into(),
        })?;
        Ok(Self {
            socket,
            seq: 0,
            buffer: Vec::with_capacity(DATAGRAM),
        })
    }

    /// Creates dummy device `name` if there is no link of that name (left DOWN,
    /// as upstream kube-proxy does); `Ok(true)` if it was created, `Ok(false)`
    /// if a dummy of that name existed. [`LinkError::NotDummy`] if a link of
    /// that name exists and is not a dummy.
    pub fn ensure_dummy(&mut self, name: &str) -> Result<bool, LinkError> {
        check_name(name)?;
        if let Some(link) = self.link(name)? {
            return link.dummy(name).map(|()| false);
        }
        let operation = format!("create dummy device {name}");
        let answer = self.exchange(
            &operation,
            new_dummy_request(name),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        match answer.errno {
            0 => {
                tracing::info!(device = name, "created dummy device");
                Ok(true)
            }
            // Created meanwhile by someone else: fine if it is a dummy.
            libc::EEXIST => match self.link(name)? {
                Some(link) => link.dummy(name).map(|()| false),
                None => Err(answer.refused(operation)),
            },
            _ => Err(answer.refused(operation)),
        }
    }

    /// Deletes link `name`; `Ok(false)` if there is none.
    /// [`LinkError::NotDummy`] if it is not a dummy (never deletes other kinds).
    pub fn delete_dummy(&mut self, name: &str) -> Result<bool, LinkError> {
        check_name(name)?;
        let Some(link) = self.link(name)? else {
            return Ok(false);
        };
        link.dummy(name)?;
        let operation = format!("delete dummy device {name}");
        // By index: the link checked above, not one renamed into its place.
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        let answer = self.exchange(
            &operation,
            RouteNetlinkMessage::DelLink(message),
            NLM_F_REQUEST | NLM_F_ACK,
        )?;
        match answer.errno {
            0 => Ok(true),
            libc::ENODEV => Ok(false),
            _ => Err(answer.refused(operation)),
        }
    }

    /// Addresses of `family` on link `name` (empty if the link does not exist),
    /// leaving out loopback addresses and IPv6 link-local (fe80::/10).
    pub fn addresses(
        &mut self,
        name: &str,
        family: IpFamily,
    ) -> Result<BTreeSet<IpAddr>, LinkError> {
        check_name(name)?;
        let Some(link) = self.link(name)? else {
            return Ok(BTreeSet::new());
        };
        let operation = format!("list {family} addresses of {name}");
        self.addresses_where(&operation, family, |index| index == link.index)
    }

    /// Addresses of `family` on every link except `name`, from one
    /// `RTM_GETADDR` dump (upstream did one dump per interface,
    /// kubernetes#138927), leaving out loopback addresses and IPv6 link-local
    /// (fe80::/10).
    pub fn addresses_except(
        &mut self,
        name: &str,
        family: IpFamily,
    ) -> Result<BTreeSet<IpAddr>, LinkError> {
        check_name(name)?;
        let except = self.link(name)?.map(|link| link.index);
        let operation = format!("list {family} addresses of links other than {name}");
        self.addresses_where(&operation, family, |index| Some(index) != except)
    }

    /// Adds `ip`/32 (IPv4) or `ip`/128 (IPv6), scope global, to link `name`;
    /// already present is success. IPv6 addresses skip duplicate address
    /// detection (`IFA_F_NODAD`), so they are usable at once.
    pub fn add_address(&mut self, name: &str, ip: IpAddr) -> Result<(), LinkError> {
        check_name(name)?;
        let Some(link) = self.link(name)? else {
            return Err(LinkError::NoSuchLink {
                name: name.to_string(),
            });
        };
        let operation = format!("add address {ip}/{} to {name}", prefix_len(ip));
        let answer = self.exchange(
            &operation,
            RouteNetlinkMessage::NewAddress(address_message(link.index, ip, true)),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        match answer.errno {
            0 | libc::EEXIST => Ok(()),
            _ => Err(answer.refused(operation)),
        }
    }

    /// Removes `ip`/32 or `ip`/128 from link `name`; an absent address
    /// (EADDRNOTAVAIL) or absent link is success.
    pub fn delete_address(&mut self, name: &str, ip: IpAddr) -> Result<(), LinkError> {
        check_name(name)?;
        let Some(link) = self.link(name)? else {
            return Ok(());
        };
        let operation = format!("delete address {ip}/{} from {name}", prefix_len(ip));
        let answer = self.exchange(
            &operation,
            RouteNetlinkMessage::DelAddress(address_message(link.index, ip, false)),
            NLM_F_REQUEST | NLM_F_ACK,
        )?;
        match answer.errno {
            0 | libc::EADDRNOTAVAIL | libc::ENODEV => Ok(()),
            _ => Err(answer.refused(operation)),
        }
    }

    /// The link called `name`, `None` when there is none (ENODEV).
    fn link(&mut self, name: &str) -> Result<Option<Link>, LinkError> {
        let operation = format!("look up link {name}");
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            // Counters are of no use here and make the answer several times larger.
            LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]),
        ];
        let answer = self.exchange(
            &operation,
            RouteNetlinkMessage::GetLink(message),
            NLM_F_REQUEST | NLM_F_ACK,
        )?;
        match answer.errno {
            0 => {}
            libc::ENODEV => return Ok(None),
            _ => return Err(answer.refused(operation)),
        }
        let found = answer.messages.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(Link {
                index: link.header.index,
                kind: link_kind(&link),
            }),
            _ => None,
        });
        match (found, answer.undecodable) {
            (Some(link), _) => Ok(Some(link)),
            (None, detail) => Err(LinkError::Decode {
                operation,
                detail: detail.unwrap_or_else(|| "acknowledged without the link".into()),
            }),
        }
    }

    /// The addresses of `family` on the links whose index `keep` accepts, from
    /// one dump (restarted when the kernel says it was interrupted), filtered
    /// as upstream's `isValidForSet`.
    fn addresses_where(
        &mut self,
        operation: &str,
        family: IpFamily,
        keep: impl Fn(u32) -> bool,
    ) -> Result<BTreeSet<IpAddr>, LinkError> {
        let mut request = AddressMessage::default();
        request.header.family = address_family(family);
        for _ in 0..DUMP_ATTEMPTS {
            let answer = self.exchange(
                operation,
                RouteNetlinkMessage::GetAddress(request.clone()),
                NLM_F_REQUEST | NLM_F_DUMP,
            )?;
            if answer.errno != 0 {
                return Err(answer.refused(operation.to_string()));
            }
            if let Some(detail) = answer.undecodable {
                return Err(LinkError::Decode {
                    operation: operation.to_string(),
                    detail,
                });
            }
            if answer.interrupted {
                continue;
            }
            return Ok(answer
                .messages
                .iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewAddress(a) if keep(a.header.index) => address_of(a),
                    _ => None,
                })
                .filter(|ip| listed(*ip, family))
                .collect());
        }
        Err(LinkError::Kernel {
            operation: operation.to_string(),
            message: Some(format!(
                "the dump was interrupted by changes {DUMP_ATTEMPTS} times"
            )),
            source: io::Error::from_raw_os_error(libc::EINTR),
        })
    }

    /// Sends one request and reads its whole answer (up to its ACK, error or
    /// `NLMSG_DONE`). Answers to other (abandoned) requests are skipped.
    fn exchange(
        &mut self,
        operation: &str,
        payload: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Answer, LinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let request = encode(payload, flags, seq);
        let sent = self
            .socket
            .send(&request, 0)
            .map_err(|source| LinkError::Socket {
                operation: format!("send: {operation}"),
                source,
            })?;
        if sent != request.len() {
            return Err(LinkError::Socket {
                operation: format!("send: {operation}"),
                source: io::Error::other(format!("sent {sent} of {} bytes", request.len())),
            });
        }
        let mut answer = Answer::default();
        loop {
            self.buffer.clear();
            let n = self
                .socket
                .recv(&mut self.buffer, libc::MSG_TRUNC)
                .map_err(|source| {
                    if source.kind() == io::ErrorKind::WouldBlock {
                        LinkError::Timeout {
                            operation: operation.to_string(),
                            seconds: RECV_TIMEOUT_SECONDS as u64,
                        }
                    } else {
                        LinkError::Socket {
                            operation: format!("receive: {operation}"),
                            source,
                        }
                    }
                })?;
            if n > self.buffer.len() {
                return Err(LinkError::Decode {
                    operation: operation.to_string(),
                    detail: format!("datagram of {n} bytes truncated to {}", self.buffer.len()),
                });
            }
            let complete =
                absorb(&self.buffer, seq, &mut answer).map_err(|detail| LinkError::Decode {
                    operation: operation.to_string(),
                    detail,
                })?;
            if complete {
                return Ok(answer);
            }
        }
    }
}

/// The kernel's rules for a device name (`dev_valid_name`).
fn check_name(name: &str) -> Result<(), LinkError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() >= IFNAMSIZ {
        "longer than 15 bytes"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        "contains '/', ':', a NUL or white space"
    } else {
        return Ok(());
    };
    Err(LinkError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

fn prefix_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn address_family(family: IpFamily) -> AddressFamily {
    match family {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

/// Whether an address belongs in a list of `family`'s node addresses: as
/// upstream's `isValidForSet`, neither loopback nor IPv6 link-local.
pub fn listed(ip: IpAddr, family: IpFamily) -> bool {
    if IpFamily::of(&ip) != family || ip.to_canonical().is_loopback() {
        return false;
    }
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
    }
}

/// `RTM_NEWLINK` for a dummy device called `name`, left down.
fn new_dummy_request(name: &str) -> RouteNetlinkMessage {
    let mut message = LinkMessage::default();
    message.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Dummy)]),
    ];
    RouteNetlinkMessage::NewLink(message)
}

/// The `ifaddrmsg` of `ip` as a host address on link `index`, as `ip addr`
/// sends it (`IFA_LOCAL` and `IFA_ADDRESS` both the address); `new` adds the
/// flags of an address being created.
fn address_message(index: u32, ip: IpAddr, new: bool) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.prefix_len = prefix_len(ip);
    message.header.scope = AddressScope::Universe;
    message.header.index = index;
    message.attributes = vec![AddressAttribute::Local(ip), AddressAttribute::Address(ip)];
    if new && ip.is_ipv6() {
        message.header.flags = AddressHeaderFlags::Nodad;
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    message
}

/// The address of an `RTM_NEWADDR`: `IFA_LOCAL`, else `IFA_ADDRESS` (on a
/// point-to-point link `IFA_ADDRESS` is the peer), as vishvananda/netlink.
fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    address
}

fn link_kind(message: &LinkMessage) -> Option<InfoKind> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
                LinkInfo::Kind(kind) => Some(kind.clone()),
                _ => None,
            }),
            _ => None,
        })
}

/// One request as bytes.
fn encode(payload: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Adds the messages of one datagram that answer request `seq` to `answer`;
/// `Ok(true)` when the answer is complete (its `NLMSG_ERROR` or `NLMSG_DONE`
/// came). A message that cannot be decoded is noted and skipped, so the rest
/// of the answer is still read; a datagram whose framing is broken is an error.
fn absorb(datagram: &[u8], seq: u32, answer: &mut Answer) -> Result<bool, String> {
    let mut offset = 0;
    while offset < datagram.len() {
        let rest = &datagram[offset..];
        let frame = NetlinkBuffer::new_checked(rest).map_err(|e| e.to_string())?;
        let length = frame.length() as usize;
        let (message_type, flags) = (frame.message_type(), frame.flags());
        let belongs = frame.sequence_number() == seq;
        offset += length.next_multiple_of(usize::from(NLMSG_ALIGNTO));
        if !belongs {
            continue;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..length]) {
            Ok(message) => match message.payload {
                NetlinkPayload::InnerMessage(inner) => {
                    answer.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                    answer.messages.push(inner);
                }
                NetlinkPayload::Error(error) => {
                    answer.errno = error.raw_code().saturating_abs();
                    answer.message = error_text(flags, &error.header);
                    return Ok(true);
                }
                NetlinkPayload::Done(done) => {
                    answer.interrupted |= flags & NLM_F_DUMP_INTR != 0;
                    answer.errno = done.code.saturating_abs();
                    answer.message = tlv_text(&done.extended_ack);
                    return Ok(true);
                }
                _ => {}
            },
            Err(e) if message_type == NLMSG_ERROR || message_type == NLMSG_DONE => {
                return Err(e.to_string());
            }
            Err(e) => {
                answer.undecodable.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(false)
}

/// The kernel's text in an `NLMSG_ERROR` whose payload after the error code is
/// `echoed`: the request (only its header when `NLM_F_CAPPED`), then the
/// extended-ACK attributes when `NLM_F_ACK_TLVS`.
fn error_text(flags: u16, echoed: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let request_len = if flags & NLM_F_CAPPED != 0 {
        NETLINK_HEADER_LEN
    } else {
        let length = NetlinkBuffer::new_checked(echoed).ok()?.length() as usize;
        length.next_multiple_of(usize::from(NLMSG_ALIGNTO))
    };
    tlv_text(echoed.get(request_len..)?)
}

/// `NLMSGERR_ATTR_MSG` among extended-ACK attributes.
fn tlv_text(attributes: &[u8]) -> Option<String> {
    NlasIterator::new(attributes)
        .map_while(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            String::from_utf8_lossy(nla.value())
                .trim_end_matches('\0')
                .to_string()
        })
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
#[path = "links_tests.rs"]
mod tests;
