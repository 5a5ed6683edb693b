//! IPVS generic netlink messages, built and parsed apart from the socket (no I/O).
//!
//! The layout is the kernel's (`include/uapi/linux/ip_vs.h`, policies in
//! `net/netfilter/ipvs/ip_vs_ctl.c`): a generic netlink header (command and
//! version 1) followed by attributes; a service is nested in `IPVS_CMD_ATTR_SERVICE`, a
//! real server in `IPVS_CMD_ATTR_DEST`. Integers are in host order except ports
//! (big endian) and the IPv4 netmask (a `__be32` mask); addresses always take the
//! 16 bytes of `union nf_inet_addr`, an IPv4 address in the first 4. Requests are
//! emitted through netlink-packet-core's [`Nla`] and netlink-packet-generic's
//! [`GenlMessage`]; answers are read by the small zero-copy walker here, which
//! turns every inconsistency into a [`DecodeError`] (never a panic).

use std::net::IpAddr;

use netlink_packet_core::{
    Emitable, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, Nla,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};

use crate::types::{
    ForwardMethod, Operation, Protocol, RealServer, RealServerStats, ServiceFlags, ServiceKey,
    Timeouts, VirtualServer,
};

/// The generic netlink family name (`IPVS_GENL_NAME`).
pub const FAMILY_NAME: &str = "IPVS";
const FAMILY_VERSION: u8 = 1;

const CMD_NEW_SERVICE: u8 = 1;
const CMD_SET_SERVICE: u8 = 2;
const CMD_DEL_SERVICE: u8 = 3;
const CMD_GET_SERVICE: u8 = 4;
const CMD_NEW_DEST: u8 = 5;
const CMD_SET_DEST: u8 = 6;
const CMD_DEL_DEST: u8 = 7;
const CMD_GET_DEST: u8 = 8;
const CMD_SET_CONFIG: u8 = 12;
const CMD_GET_CONFIG: u8 = 13;
const CMD_FLUSH: u8 = 17;

const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;

const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_FWMARK: u16 = 5;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;

const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_PERSIST_CONNS: u16 = 9;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;

/// `CTRL_ATTR_FAMILY_ID` in the controller's answer.
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// `IP_VS_SCHEDNAME_MAXLEN`, the terminating NUL included.
const SCHED_NAME_MAX: usize = 16;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_MIN_TYPE: u16 = 0x10;
const NETLINK_HEADER: usize = 16;
const GENL_HEADER: usize = 4;
/// `NLM_F_CAPPED`: an error echoes only the request's header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended-ACK attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// A kernel answer that does not have the shape the kernel's own code gives it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl DecodeError {
    fn new(detail: impl Into<String>) -> Self {
        Self(detail.into())
    }
}

// === Requests ===

/// Attributes of a service (nested in `IPVS_CMD_ATTR_SERVICE`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum ServiceNla {
    Family(u16),
    Protocol(u16),
    Address([u8; 16]),
    Port(u16),
    Scheduler(String),
    Flags { flags: u32, mask: u32 },
    Timeout(u32),
    Netmask([u8; 4]),
}

impl Nla for ServiceNla {
    fn value_len(&self) -> usize {
        match self {
            Self::Family(_) | Self::Protocol(_) | Self::Port(_) => 2,
            Self::Address(_) => 16,
            Self::Scheduler(s) => s.len() + 1,
            Self::Flags { .. } => 8,
            Self::Timeout(_) | Self::Netmask(_) => 4,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Family(_) => SVC_ATTR_AF,
            Self::Protocol(_) => SVC_ATTR_PROTOCOL,
            Self::Address(_) => SVC_ATTR_ADDR,
            Self::Port(_) => SVC_ATTR_PORT,
            Self::Scheduler(_) => SVC_ATTR_SCHED_NAME,
            Self::Flags { .. } => SVC_ATTR_FLAGS,
            Self::Timeout(_) => SVC_ATTR_TIMEOUT,
            Self::Netmask(_) => SVC_ATTR_NETMASK,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Family(v) | Self::Protocol(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            Self::Port(v) => buffer[..2].copy_from_slice(&v.to_be_bytes()),
            Self::Address(a) => buffer[..16].copy_from_slice(a),
            Self::Scheduler(s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            Self::Flags { flags, mask } => {
                buffer[..4].copy_from_slice(&flags.to_ne_bytes());
                buffer[4..8].copy_from_slice(&mask.to_ne_bytes());
            }
            Self::Timeout(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::Netmask(b) => buffer[..4].copy_from_slice(b),
        }
    }
}

/// Attributes of a real server (nested in `IPVS_CMD_ATTR_DEST`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum DestNla {
    Family(u16),
    Address([u8; 16]),
    Port(u16),
    Forward(u32),
    Weight(i32),
    UpperThreshold(u32),
    LowerThreshold(u32),
}

impl Nla for DestNla {
    fn value_len(&self) -> usize {
        match self {
            Self::Family(_) | Self::Port(_) => 2,
            Self::Address(_) => 16,
            _ => 4,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Family(_) => DEST_ATTR_ADDR_FAMILY,
            Self::Address(_) => DEST_ATTR_ADDR,
            Self::Port(_) => DEST_ATTR_PORT,
            Self::Forward(_) => DEST_ATTR_FWD_METHOD,
            Self::Weight(_) => DEST_ATTR_WEIGHT,
            Self::UpperThreshold(_) => DEST_ATTR_U_THRESH,
            Self::LowerThreshold(_) => DEST_ATTR_L_THRESH,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Family(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            Self::Port(v) => buffer[..2].copy_from_slice(&v.to_be_bytes()),
            Self::Address(a) => buffer[..16].copy_from_slice(a),
            Self::Weight(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::Forward(v) | Self::UpperThreshold(v) | Self::LowerThreshold(v) => {
                buffer[..4].copy_from_slice(&v.to_ne_bytes())
            }
        }
    }
}

/// First-level attributes of an IPVS command.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CommandNla {
    Service(Vec<ServiceNla>),
    Dest(Vec<DestNla>),
    TimeoutTcp(u32),
    TimeoutTcpFin(u32),
    TimeoutUdp(u32),
}

impl Nla for CommandNla {
    fn value_len(&self) -> usize {
        match self {
            Self::Service(a) => a.as_slice().buffer_len(),
            Self::Dest(a) => a.as_slice().buffer_len(),
            _ => 4,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            // Nests carry NLA_F_NESTED, as the kernel's own answers (and ipvsadm's
            // requests) do.
            Self::Service(_) => CMD_ATTR_SERVICE | NLA_F_NESTED,
            Self::Dest(_) => CMD_ATTR_DEST | NLA_F_NESTED,
            Self::TimeoutTcp(_) => CMD_ATTR_TIMEOUT_TCP,
            Self::TimeoutTcpFin(_) => CMD_ATTR_TIMEOUT_TCP_FIN,
            Self::TimeoutUdp(_) => CMD_ATTR_TIMEOUT_UDP,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Service(a) => a.as_slice().emit(buffer),
            Self::Dest(a) => a.as_slice().emit(buffer),
            Self::TimeoutTcp(v) | Self::TimeoutTcpFin(v) | Self::TimeoutUdp(v) => {
                buffer[..4].copy_from_slice(&v.to_ne_bytes())
            }
        }
    }
}

/// The generic netlink payload of one IPVS request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IpvsPayload {
    command: u8,
    attributes: Vec<CommandNla>,
}

impl GenlFamily for IpvsPayload {
    fn family_name() -> &'static str {
        FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.command
    }

    fn version(&self) -> u8 {
        FAMILY_VERSION
    }
}

impl Emitable for IpvsPayload {
    fn buffer_len(&self) -> usize {
        self.attributes.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attributes.as_slice().emit(buffer)
    }
}

/// Appends one netlink message carrying `payload` to `out`.
fn push<F>(out: &mut Vec<u8>, mut message: GenlMessage<F>, family: u16, flags: u16, seq: u32)
where
    F: GenlFamily + Emitable + std::fmt::Debug,
{
    message.finalize();
    message.set_resolved_family_id(family);
    let mut packet = NetlinkMessage::from(message);
    packet.header.flags = flags;
    packet.header.sequence_number = seq;
    packet.finalize();
    let start = out.len();
    out.resize(start + packet.buffer_len(), 0);
    packet.serialize(&mut out[start..]);
}

fn push_ipvs(
    out: &mut Vec<u8>,
    family: u16,
    command: u8,
    attributes: Vec<CommandNla>,
    flags: u16,
    seq: u32,
) {
    let payload = IpvsPayload {
        command,
        attributes,
    };
    push(out, GenlMessage::from_payload(payload), family, flags, seq);
}

fn address_family(address: IpAddr) -> u16 {
    match address {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// `union nf_inet_addr`: an IPv4 address in the first 4 bytes, the rest zero.
fn address_bytes(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// The IANA protocol number of a Service protocol.
pub fn protocol_number(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn netmask_bytes(address: IpAddr, netmask: u32) -> [u8; 4] {
    match address {
        // A `__be32` mask.
        IpAddr::V4(_) => netmask.to_be_bytes(),
        // A prefix length the kernel reads as a host-order number.
        IpAddr::V6(_) => netmask.to_ne_bytes(),
    }
}

/// The attributes identifying a service (enough for everything but add/update).
fn service_key_nlas(key: &ServiceKey) -> Vec<ServiceNla> {
    vec![
        ServiceNla::Family(address_family(key.address)),
        ServiceNla::Protocol(protocol_number(key.protocol)),
        ServiceNla::Address(address_bytes(key.address)),
        ServiceNla::Port(key.port),
    ]
}

/// Every attribute of a service, as add and update need them.
fn service_nlas(vs: &VirtualServer) -> Vec<ServiceNla> {
    let mut nlas = service_key_nlas(&vs.key());
    let mut flags = vs.flags;
    flags.remove(ServiceFlags::HASHED);
    nlas.extend([
        ServiceNla::Scheduler(vs.scheduler.clone()),
        // Mask all ones: the flags replace the service's (the kernel keeps its own
        // HASHED bit on update).
        ServiceNla::Flags {
            flags: flags.bits(),
            mask: u32::MAX,
        },
        ServiceNla::Timeout(vs.timeout),
        ServiceNla::Netmask(netmask_bytes(vs.address, vs.netmask)),
    ]);
    nlas
}

fn dest_key_nlas(rs: &RealServer) -> Vec<DestNla> {
    vec![
        DestNla::Family(address_family(rs.address)),
        DestNla::Address(address_bytes(rs.address)),
        DestNla::Port(rs.port),
    ]
}

fn dest_nlas(rs: &RealServer) -> Vec<DestNla> {
    let mut nlas = dest_key_nlas(rs);
    nlas.extend([
        DestNla::Forward(rs.forward.to_kernel()),
        DestNla::Weight(rs.weight),
        DestNla::UpperThreshold(rs.upper_threshold),
        DestNla::LowerThreshold(rs.lower_threshold),
    ]);
    nlas
}

/// Why `operation` cannot be valid, checked before it is sent: scheduler names
/// the kernel would refuse or cut, a real server of the other family, or a
/// forwarding method other than masquerade.
pub fn check(operation: &Operation) -> Result<(), String> {
    match operation {
        Operation::AddService(vs) | Operation::UpdateService(vs) => {
            if vs.scheduler.is_empty()
                || vs.scheduler.len() >= SCHED_NAME_MAX
                || vs.scheduler.contains('\0')
            {
                return Err(format!(
                    "invalid scheduler name {:?} (1 to {} bytes, no NUL)",
                    vs.scheduler,
                    SCHED_NAME_MAX - 1
                ));
            }
        }
        Operation::AddRealServer(key, rs) | Operation::UpdateRealServer(key, rs) => {
            if rs.forward != ForwardMethod::Masquerade {
                return Err(format!(
                    "forwarding method {:?} is not supported (only masquerade)",
                    rs.forward
                ));
            }
            check_family(key, rs)?;
        }
        Operation::DeleteRealServer(key, rs) => check_family(key, rs)?,
        Operation::DeleteService(_) => {}
    }
    Ok(())
}

fn check_family(key: &ServiceKey, rs: &RealServer) -> Result<(), String> {
    if key.address.is_ipv4() != rs.address.is_ipv4() {
        return Err("real server and service are of different address families".into());
    }
    Ok(())
}

/// Appends the request for `operation` to `out`, asking for an acknowledgement.
pub fn push_operation(out: &mut Vec<u8>, family: u16, operation: &Operation, seq: u32) {
    let (command, attributes) = match operation {
        Operation::AddService(vs) => (CMD_NEW_SERVICE, vec![CommandNla::Service(service_nlas(vs))]),
        Operation::UpdateService(vs) => {
            (CMD_SET_SERVICE, vec![CommandNla::Service(service_nlas(vs))])
        }
        Operation::DeleteService(key) => (
            CMD_DEL_SERVICE,
            vec![CommandNla::Service(service_key_nlas(key))],
        ),
        Operation::AddRealServer(key, rs) => (
            CMD_NEW_DEST,
            vec![
                CommandNla::Service(service_key_nlas(key)),
                CommandNla::Dest(dest_nlas(rs)),
            ],
        ),
        Operation::UpdateRealServer(key, rs) => (
            CMD_SET_DEST,
            vec![
                CommandNla::Service(service_key_nlas(key)),
                CommandNla::Dest(dest_nlas(rs)),
            ],
        ),
        Operation::DeleteRealServer(key, rs) => (
            CMD_DEL_DEST,
            vec![
                CommandNla::Service(service_key_nlas(key)),
                CommandNla::Dest(dest_key_nlas(rs)),
            ],
        ),
    };
    push_ipvs(
        out,
        family,
        command,
        attributes,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    );
}

/// Asks the generic netlink controller for the "IPVS" family (answered by a
/// `CTRL_CMD_NEWFAMILY` message, or an error when the family is missing).
pub fn family_request(seq: u32) -> Vec<u8> {
    let message = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(FAMILY_NAME.to_owned())],
    });
    let mut out = Vec::new();
    // The controller's family id is static (GENL_ID_CTRL); `family` is ignored.
    push(&mut out, message, 0, NLM_F_REQUEST, seq);
    out
}

/// A dump of every service.
pub fn services_dump_request(family: u16, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    push_ipvs(
        &mut out,
        family,
        CMD_GET_SERVICE,
        vec![],
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    );
    out
}

/// A dump of the real servers of one service.
pub fn real_servers_dump_request(family: u16, service: &ServiceKey, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    push_ipvs(
        &mut out,
        family,
        CMD_GET_DEST,
        vec![CommandNla::Service(service_key_nlas(service))],
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    );
    out
}

/// Deletes every service of the namespace (acknowledged).
pub fn flush_request(family: u16, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    push_ipvs(
        &mut out,
        family,
        CMD_FLUSH,
        vec![],
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    );
    out
}

/// Reads the timeouts (answered by one message, or an error).
pub fn get_timeouts_request(family: u16, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    push_ipvs(&mut out, family, CMD_GET_CONFIG, vec![], NLM_F_REQUEST, seq);
    out
}

/// Sets the non-zero timeouts of `timeouts` (acknowledged).
pub fn set_timeouts_request(family: u16, timeouts: &Timeouts, seq: u32) -> Vec<u8> {
    let attributes = [
        (
            timeouts.tcp,
            CommandNla::TimeoutTcp as fn(u32) -> CommandNla,
        ),
        (timeouts.tcp_fin, CommandNla::TimeoutTcpFin),
        (timeouts.udp, CommandNla::TimeoutUdp),
    ]
    .into_iter()
    .filter(|(v, _)| *v != 0)
    .map(|(v, make)| make(v))
    .collect();
    let mut out = Vec::new();
    push_ipvs(
        &mut out,
        family,
        CMD_SET_CONFIG,
        attributes,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    );
    out
}

#[path = "decode.rs"]
mod decode;
pub use decode::*;

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
