//! Reading the kernel's answers: splitting datagrams into messages, ACKs and
//! dump ends, and decoding services, real servers and timeouts. Part of
//! [`crate::message`]; every inconsistency is a [`DecodeError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

/// One message of a datagram from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`: the sequence number of the request it answers.
    pub seq: u32,
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

/// What one message of the kernel's answer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An acknowledgement (`errno == 0`) or an error (`errno > 0`).
    Ack {
        /// 0 for success, else the positive errno.
        errno: i32,
        /// The kernel's extended-ACK text, if it sent one.
        message: Option<String>,
    },
    /// The end of a dump; a non-zero errno means the dump failed.
    Done {
        /// 0, or the positive errno the dump ended with.
        errno: i32,
    },
    /// A generic netlink message (of the IPVS family or the controller).
    Genl {
        /// The generic netlink command.
        command: u8,
        /// The attributes after the generic netlink header.
        attributes: &'a [u8],
    },
    /// Anything else (noop, overrun).
    Other,
}

fn word(data: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn half(data: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([data[at], data[at + 1]])
}

/// Splits a datagram from the kernel into its messages. Yields an error (and
/// stops) when a message header is inconsistent (length beyond the datagram or
/// shorter than a header); the messages before it are still yielded.
pub fn messages(data: &[u8]) -> impl Iterator<Item = Result<Message<'_>, DecodeError>> + '_ {
    let mut at = 0usize;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || at >= data.len() {
            return None;
        }
        if data.len() - at < NETLINK_HEADER {
            broken = true;
            return Some(Err(DecodeError::new(format!(
                "{} stray bytes after the last message",
                data.len() - at
            ))));
        }
        let len = word(data, at) as usize;
        if len < NETLINK_HEADER || len > data.len() - at {
            broken = true;
            return Some(Err(DecodeError::new(format!(
                "message length {len} at offset {at} of a {}-byte datagram",
                data.len()
            ))));
        }
        let message = Message {
            kind: half(data, at + 4),
            flags: half(data, at + 6),
            seq: word(data, at + 8),
            bytes: &data[at..at + len],
        };
        at = at.saturating_add((len + 3) & !3);
        Some(Ok(message))
    })
}

/// Classifies one message of the kernel's answer.
pub fn parse_reply<'a>(message: &Message<'a>) -> Result<Reply<'a>, DecodeError> {
    let payload = &message.bytes[NETLINK_HEADER..];
    match message.kind {
        NLMSG_ERROR => {
            let code = payload
                .get(..4)
                .map(|b| word(b, 0) as i32)
                .ok_or_else(|| DecodeError::new("error message without an error code"))?;
            let errno = code.saturating_abs();
            let mut text = None;
            if errno != 0 && message.flags & NLM_F_ACK_TLVS != 0 {
                // After the code: the request's header (capped) or the whole request.
                let echoed = if message.flags & NLM_F_CAPPED != 0 {
                    NETLINK_HEADER
                } else {
                    payload
                        .get(4..8)
                        .map_or(0, |b| (word(b, 0) as usize + 3) & !3)
                };
                if let Some(tlvs) = payload.get(4 + echoed..) {
                    for nla in attributes(tlvs) {
                        if let (NLMSGERR_ATTR_MSG, value) = nla? {
                            text = Some(string(value)?);
                        }
                    }
                }
            }
            Ok(Reply::Ack {
                errno,
                message: text,
            })
        }
        NLMSG_DONE => Ok(Reply::Done {
            errno: payload
                .get(..4)
                .map_or(0, |b| (word(b, 0) as i32).saturating_abs()),
        }),
        kind if kind >= NLMSG_MIN_TYPE => {
            if payload.len() < GENL_HEADER {
                return Err(DecodeError::new(
                    "generic netlink message without its header",
                ));
            }
            Ok(Reply::Genl {
                command: payload[0],
                attributes: &payload[GENL_HEADER..],
            })
        }
        _ => Ok(Reply::Other),
    }
}

/// The netlink attributes in `data` as `(type, value)`, flags masked off. An
/// attribute whose length is inconsistent ends the walk with an error; fewer than
/// 4 trailing bytes are ignored (padding).
pub fn attributes(data: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> + '_ {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(half(rest, 0));
        let kind = half(rest, 2) & !(NLA_F_NESTED | 1 << 14);
        if len < 4 || len > rest.len() {
            let detail = format!("attribute {kind} claims {len} bytes, {} left", rest.len());
            rest = &[];
            return Some(Err(DecodeError::new(detail)));
        }
        let value = &rest[4..len];
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
        Some(Ok((kind, value)))
    })
}

fn fixed<const N: usize>(value: &[u8], what: &str) -> Result<[u8; N], DecodeError> {
    value
        .try_into()
        .map_err(|_| DecodeError::new(format!("{what}: {} bytes instead of {N}", value.len())))
}

fn u16_ne(value: &[u8], what: &str) -> Result<u16, DecodeError> {
    fixed(value, what).map(u16::from_ne_bytes)
}

fn u32_ne(value: &[u8], what: &str) -> Result<u32, DecodeError> {
    fixed(value, what).map(u32::from_ne_bytes)
}

fn string(value: &[u8]) -> Result<String, DecodeError> {
    let text = value.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8(text.to_vec()).map_err(|_| DecodeError::new("string is not UTF-8"))
}

fn address(family: u16, value: &[u8], what: &str) -> Result<IpAddr, DecodeError> {
    match family {
        AF_INET => {
            let b: [u8; 4] = value
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| DecodeError::new(format!("{what}: {} bytes", value.len())))?;
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(fixed::<16>(value, what)?))),
        other => Err(DecodeError::new(format!("{what}: address family {other}"))),
    }
}

fn protocol_from_number(n: u16) -> Option<Protocol> {
    match n {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

fn missing(what: &str) -> DecodeError {
    DecodeError::new(format!("{what} missing"))
}

/// The value of the first attribute of `kind` in `data` (nested or not).
fn find(data: &[u8], kind: u16) -> Result<Option<&[u8]>, DecodeError> {
    for nla in attributes(data) {
        let (k, v) = nla?;
        if k == kind {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The family id in the controller's `CTRL_CMD_NEWFAMILY` answer.
pub fn decode_family_id(payload: &[u8]) -> Result<u16, DecodeError> {
    let value =
        find(payload, CTRL_ATTR_FAMILY_ID)?.ok_or_else(|| missing("CTRL_ATTR_FAMILY_ID"))?;
    u16_ne(value, "CTRL_ATTR_FAMILY_ID")
}

/// A service of an `IPVS_CMD_NEW_SERVICE` message (the attributes after the
/// generic netlink header). `None` for services this crate does not handle:
/// firewall-mark services and protocols other than TCP, UDP and SCTP.
pub fn decode_service(payload: &[u8]) -> Result<Option<VirtualServer>, DecodeError> {
    let nest = find(payload, CMD_ATTR_SERVICE)?.ok_or_else(|| missing("IPVS_CMD_ATTR_SERVICE"))?;
    let (mut family, mut protocol, mut addr, mut port) = (None, None, None, None);
    let (mut scheduler, mut flags, mut timeout, mut netmask) = (None, None, None, None);
    let mut fwmark = false;
    for nla in attributes(nest) {
        let (kind, v) = nla?;
        match kind {
            SVC_ATTR_AF => family = Some(u16_ne(v, "IPVS_SVC_ATTR_AF")?),
            SVC_ATTR_PROTOCOL => protocol = Some(u16_ne(v, "IPVS_SVC_ATTR_PROTOCOL")?),
            SVC_ATTR_ADDR => addr = Some(v),
            SVC_ATTR_PORT => port = Some(u16::from_be_bytes(fixed(v, "IPVS_SVC_ATTR_PORT")?)),
            SVC_ATTR_FWMARK => fwmark = true,
            SVC_ATTR_SCHED_NAME => scheduler = Some(string(v)?),
            SVC_ATTR_FLAGS => {
                let b: [u8; 8] = fixed(v, "IPVS_SVC_ATTR_FLAGS")?;
                flags = Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            }
            SVC_ATTR_TIMEOUT => timeout = Some(u32_ne(v, "IPVS_SVC_ATTR_TIMEOUT")?),
            SVC_ATTR_NETMASK => netmask = Some(fixed::<4>(v, "IPVS_SVC_ATTR_NETMASK")?),
            _ => {}
        }
    }
    let family = family.ok_or_else(|| missing("IPVS_SVC_ATTR_AF"))?;
    if fwmark {
        return Ok(None);
    }
    let number = protocol.ok_or_else(|| missing("IPVS_SVC_ATTR_PROTOCOL"))?;
    let address = address(
        family,
        addr.ok_or_else(|| missing("IPVS_SVC_ATTR_ADDR"))?,
        "IPVS_SVC_ATTR_ADDR",
    )?;
    let port = port.ok_or_else(|| missing("IPVS_SVC_ATTR_PORT"))?;
    let netmask = netmask.ok_or_else(|| missing("IPVS_SVC_ATTR_NETMASK"))?;
    let Some(protocol) = protocol_from_number(number) else {
        return Ok(None);
    };
    let mut flags =
        ServiceFlags::from_bits_retain(flags.ok_or_else(|| missing("IPVS_SVC_ATTR_FLAGS"))?);
    flags.remove(ServiceFlags::HASHED);
    Ok(Some(VirtualServer {
        address,
        protocol,
        port,
        scheduler: scheduler.ok_or_else(|| missing("IPVS_SVC_ATTR_SCHED_NAME"))?,
        flags,
        timeout: timeout.ok_or_else(|| missing("IPVS_SVC_ATTR_TIMEOUT"))?,
        netmask: match address {
            IpAddr::V4(_) => u32::from_be_bytes(netmask),
            IpAddr::V6(_) => u32::from_ne_bytes(netmask),
        },
    }))
}

/// A real server of an `IPVS_CMD_NEW_DEST` message, with its counters.
/// `service_family` is used when the kernel does not say the real server's
/// family (kernels before 4.x).
pub fn decode_real_server(
    payload: &[u8],
    service_family: IpAddr,
) -> Result<(RealServer, RealServerStats), DecodeError> {
    let nest = find(payload, CMD_ATTR_DEST)?.ok_or_else(|| missing("IPVS_CMD_ATTR_DEST"))?;
    let (mut family, mut addr, mut port, mut forward, mut weight) = (None, None, None, None, None);
    let (mut upper, mut lower) = (0, 0);
    let mut stats = RealServerStats::default();
    for nla in attributes(nest) {
        let (kind, v) = nla?;
        match kind {
            DEST_ATTR_ADDR_FAMILY => family = Some(u16_ne(v, "IPVS_DEST_ATTR_ADDR_FAMILY")?),
            DEST_ATTR_ADDR => addr = Some(v),
            DEST_ATTR_PORT => port = Some(u16::from_be_bytes(fixed(v, "IPVS_DEST_ATTR_PORT")?)),
            DEST_ATTR_FWD_METHOD => {
                let raw = u32_ne(v, "IPVS_DEST_ATTR_FWD_METHOD")?;
                forward =
                    Some(ForwardMethod::from_kernel(raw).ok_or_else(|| {
                        DecodeError::new(format!("unknown forwarding method {raw}"))
                    })?);
            }
            DEST_ATTR_WEIGHT => weight = Some(u32_ne(v, "IPVS_DEST_ATTR_WEIGHT")? as i32),
            DEST_ATTR_U_THRESH => upper = u32_ne(v, "IPVS_DEST_ATTR_U_THRESH")?,
            DEST_ATTR_L_THRESH => lower = u32_ne(v, "IPVS_DEST_ATTR_L_THRESH")?,
            DEST_ATTR_ACTIVE_CONNS => {
                stats.active_conns = u32_ne(v, "IPVS_DEST_ATTR_ACTIVE_CONNS")?
            }
            DEST_ATTR_INACT_CONNS => {
                stats.inactive_conns = u32_ne(v, "IPVS_DEST_ATTR_INACT_CONNS")?
            }
            DEST_ATTR_PERSIST_CONNS => {
                stats.persist_conns = u32_ne(v, "IPVS_DEST_ATTR_PERSIST_CONNS")?
            }
            _ => {}
        }
    }
    let family = family.unwrap_or_else(|| address_family(service_family));
    let address = address(
        family,
        addr.ok_or_else(|| missing("IPVS_DEST_ATTR_ADDR"))?,
        "IPVS_DEST_ATTR_ADDR",
    )?;
    let server = RealServer {
        address,
        port: port.ok_or_else(|| missing("IPVS_DEST_ATTR_PORT"))?,
        weight: weight.ok_or_else(|| missing("IPVS_DEST_ATTR_WEIGHT"))?,
        forward: forward.ok_or_else(|| missing("IPVS_DEST_ATTR_FWD_METHOD"))?,
        upper_threshold: upper,
        lower_threshold: lower,
    };
    Ok((server, stats))
}

/// The timeouts of an `IPVS_CMD_SET_CONFIG` answer to `IPVS_CMD_GET_CONFIG` (a
/// protocol compiled out of the kernel reads as 0).
pub fn decode_timeouts(payload: &[u8]) -> Result<Timeouts, DecodeError> {
    let mut timeouts = Timeouts::default();
    for nla in attributes(payload) {
        match nla? {
            (CMD_ATTR_TIMEOUT_TCP, v) => timeouts.tcp = u32_ne(v, "IPVS_CMD_ATTR_TIMEOUT_TCP")?,
            (CMD_ATTR_TIMEOUT_TCP_FIN, v) => {
                timeouts.tcp_fin = u32_ne(v, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?
            }
            (CMD_ATTR_TIMEOUT_UDP, v) => timeouts.udp = u32_ne(v, "IPVS_CMD_ATTR_TIMEOUT_UDP")?,
            _ => {}
        }
    }
    Ok(timeouts)
}
