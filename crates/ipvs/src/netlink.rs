//! The IPVS table of one network namespace over a `NETLINK_GENERIC` socket.
//!
//! The socket belongs to the network namespace of the thread that opened it (IPVS
//! state is per namespace); an [`Ipvs`] keeps working on that namespace whichever
//! thread uses it later. Every request is acknowledged and every answer read
//! before a call returns; changes go many per `sendmsg` ([`Ipvs::apply`]).

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::error::{Command, IpvsError, Target};
use crate::message::{self, Reply};
use crate::types::{Operation, RealServer, RealServerStats, ServiceKey, Timeouts, VirtualServer};

/// Receive buffer asked for (as root beyond `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;
/// Receive-buffer bytes each ACK is charged (its skb's true size, 600-800 bytes
/// on 6.x; see the conntrack crate); 1 KiB leaves a margin.
const ACK_COST: usize = 1024;
/// Bounds of the number of requests sent in one `sendmsg`.
const BATCH_MIN: usize = 16;
const BATCH_MAX: usize = 1024;
/// Bytes of requests per `sendmsg`, well under the default socket send buffer.
const BATCH_BYTES: usize = 64 << 10;
/// How long one receive may wait for the kernel before the operation fails.
const RECV_TIMEOUT_SECONDS: i64 = 10;
/// Room for one datagram: dumps come in skbs of at most 32 KiB.
const DATAGRAM: usize = 64 << 10;

/// The outcome of a batch of changes ([`Ipvs::apply`]).
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Operations the kernel acknowledged as done.
    pub done: usize,
    /// The operations that failed, by index into the batch, each with its error.
    pub failures: Vec<(usize, IpvsError)>,
}

/// A netlink handle on the IPVS table of the calling thread's network namespace.
#[derive(Debug)]
pub struct Ipvs {
    socket: Socket,
    /// The dynamic id of the "IPVS" generic netlink family.
    family: u16,
    seq: u32,
    buffer: Vec<u8>,
    /// Requests per `sendmsg`: as many as the receive buffer has room for ACKs.
    batch: usize,
}

fn io_error(operation: &'static str) -> impl FnOnce(io::Error) -> IpvsError {
    move |source| IpvsError::Socket { operation, source }
}

fn receive_error(command: Command) -> impl FnOnce(io::Error) -> IpvsError {
    move |source| {
        if source.kind() == io::ErrorKind::WouldBlock {
            IpvsError::Timeout {
                command,
                seconds: RECV_TIMEOUT_SECONDS as u64,
            }
        } else {
            IpvsError::Socket {
                operation: "receive",
                source,
            }
        }
    }
}

fn decode_error(command: Command) -> impl FnOnce(message::DecodeError) -> IpvsError {
    move |e| IpvsError::Decode {
        command,
        detail: e.to_string(),
    }
}

impl Ipvs {
    /// Opens a generic netlink socket in the calling thread's network namespace
    /// and resolves the "IPVS" family; [`IpvsError::NotAvailable`] when the
    /// kernel has none (ip_vs not loaded).
    pub fn new() -> Result<Self, IpvsError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(io_error("open"))?;
        socket.bind_auto().map_err(io_error("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io_error("connect"))?;
        // Errors echo only the request's header; the kernel's text comes along.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        // Room for more ACKs per batch (beyond rmem_max when we may); the batch
        // follows what we got.
        if setsockopt(&socket, sockopt::RcvBufForce, &RECV_BUFFER).is_err() {
            let _ = socket.set_rx_buf_sz(RECV_BUFFER);
        }
        let room = socket.get_rx_buf_sz().unwrap_or(0);
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &TimeVal::new(RECV_TIMEOUT_SECONDS, 0),
        )
        .map_err(|e| IpvsError::Socket {
            operation: "set receive timeout",
            source: e.into(),
        })?;
        let mut ipvs = Self {
            socket,
            family: 0,
            seq: 0,
            buffer: Vec::with_capacity(DATAGRAM),
            batch: (room / ACK_COST).clamp(BATCH_MIN, BATCH_MAX),
        };
        ipvs.family = ipvs.resolve_family()?;
        tracing::debug!(
            family = ipvs.family,
            batch = ipvs.batch,
            "IPVS netlink socket open"
        );
        Ok(ipvs)
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        const COMMAND: Command = Command::ResolveFamily;
        let seq = self.next_seq();
        self.send(&message::family_request(seq))?;
        let mut outcome = None;
        self.read_answers(COMMAND, seq, |reply| {
            match reply {
                Reply::Genl { attributes, .. } => {
                    outcome =
                        Some(message::decode_family_id(attributes).map_err(decode_error(COMMAND)));
                }
                Reply::Ack {
                    errno: libc::ENOENT,
                    ..
                } => outcome = Some(Err(IpvsError::NotAvailable)),
                Reply::Ack { errno, message } if errno != 0 => {
                    outcome = Some(Err(IpvsError::Kernel {
                        command: COMMAND,
                        target: Target::Table,
                        message,
                        source: io::Error::from_raw_os_error(errno),
                    }));
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        outcome.unwrap_or(Err(IpvsError::NotAvailable))
    }

    /// Sets the socket's receive buffer to `bytes` (as `SO_RCVBUF`: capped by
    /// `net.core.rmem_max`, doubled by the kernel) and sizes batches to it. The
    /// handle starts with 4 MiB when it may (root), else the system default.
    pub fn set_receive_buffer(&mut self, bytes: usize) -> Result<(), IpvsError> {
        self.socket
            .set_rx_buf_sz(bytes)
            .map_err(io_error("set receive buffer"))?;
        let room = self
            .socket
            .get_rx_buf_sz()
            .map_err(io_error("get receive buffer"))?;
        self.batch = (room / ACK_COST).clamp(BATCH_MIN, BATCH_MAX);
        Ok(())
    }

    /// Requests sent per `sendmsg` at most (follows the receive buffer, halves
    /// when ACKs were dropped).
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv_flags(&mut self, flags: i32) -> io::Result<()> {
        self.buffer.clear();
        let n = self.socket.recv(&mut self.buffer, flags)?;
        if n > self.buffer.len() {
            return Err(io::Error::other(format!(
                "datagram of {n} bytes truncated to {}",
                self.buffer.len()
            )));
        }
        Ok(())
    }

    fn send(&mut self, request: &[u8]) -> Result<(), IpvsError> {
        let sent = self.socket.send(request, 0).map_err(io_error("send"))?;
        if sent != request.len() {
            return Err(IpvsError::Socket {
                operation: "send",
                source: io::Error::other(format!("sent {sent} of {} bytes", request.len())),
            });
        }
        Ok(())
    }

    /// Reads the answers to request `seq` and gives each to `handle` until it
    /// says the answer is complete (`Ok(true)`). Messages of other requests
    /// (answers to an abandoned earlier request) are skipped. A malformed
    /// datagram is an error (after which the socket should not be trusted to be
    /// in step: open a new handle).
    fn read_answers(
        &mut self,
        command: Command,
        seq: u32,
        mut handle: impl FnMut(Reply<'_>) -> Result<bool, IpvsError>,
    ) -> Result<(), IpvsError> {
        loop {
            self.recv_flags(0).map_err(receive_error(command))?;
            for message in message::messages(&self.buffer) {
                let message = message.map_err(decode_error(command))?;
                if message.seq != seq {
                    continue;
                }
                let reply = message::parse_reply(&message).map_err(decode_error(command))?;
                if handle(reply)? {
                    return Ok(());
                }
            }
        }
    }

    /// Runs a dump request and gives each message's attributes to `each`. The
    /// whole dump is read even when a message cannot be decoded; the first error
    /// is returned then.
    fn dump(
        &mut self,
        command: Command,
        request: &[u8],
        seq: u32,
        mut each: impl FnMut(&[u8]) -> Result<(), IpvsError>,
    ) -> Result<(), IpvsError> {
        self.send(request)?;
        let mut first_error = None;
        self.read_answers(command, seq, |reply| match reply {
            Reply::Genl { attributes, .. } => {
                if let Err(e) = each(attributes) {
                    first_error.get_or_insert(e);
                }
                Ok(false)
            }
            Reply::Done { errno: 0 } => Ok(true),
            Reply::Done { errno } | Reply::Ack { errno, .. } if errno != 0 => {
                Err(IpvsError::Kernel {
                    command,
                    target: Target::Table,
                    message: None,
                    source: io::Error::from_raw_os_error(errno),
                })
            }
            _ => Ok(false),
        })?;
        first_error.map_or(Ok(()), Err)
    }

    /// Sends one acknowledged request and waits for its ACK.
    fn acknowledged(
        &mut self,
        command: Command,
        request: &[u8],
        seq: u32,
    ) -> Result<(), IpvsError> {
        self.send(request)?;
        let mut result = Ok(());
        self.read_answers(command, seq, |reply| match reply {
            Reply::Ack { errno: 0, .. } => Ok(true),
            Reply::Ack { errno, message } => {
                result = Err(IpvsError::Kernel {
                    command,
                    target: Target::Table,
                    message,
                    source: io::Error::from_raw_os_error(errno),
                });
                Ok(true)
            }
            _ => Ok(false),
        })?;
        result
    }

    /// Every TCP, UDP and SCTP virtual server of the namespace, in the kernel's
    /// order. Firewall-mark services (and other protocols) are left out.
    pub fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        const COMMAND: Command = Command::ListServices;
        let seq = self.next_seq();
        let request = message::services_dump_request(self.family, seq);
        let mut services = Vec::new();
        let mut skipped = 0usize;
        self.dump(COMMAND, &request, seq, |attributes| {
            match message::decode_service(attributes).map_err(decode_error(COMMAND))? {
                Some(vs) => services.push(vs),
                None => skipped += 1,
            }
            Ok(())
        })?;
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "IPVS dump: firewall-mark or non-TCP/UDP/SCTP services left out"
            );
        }
        Ok(services)
    }

    /// The real servers of a service with their connection counters. A service
    /// that does not exist has none (the kernel answers an empty dump).
    pub fn real_servers(
        &mut self,
        service: impl Into<ServiceKey>,
    ) -> Result<Vec<(RealServer, RealServerStats)>, IpvsError> {
        const COMMAND: Command = Command::ListRealServers;
        let key = service.into();
        let seq = self.next_seq();
        let request = message::real_servers_dump_request(self.family, &key, seq);
        let mut servers = Vec::new();
        self.dump(COMMAND, &request, seq, |attributes| {
            servers.push(
                message::decode_real_server(attributes, key.address).map_err(|e| {
                    IpvsError::Decode {
                        command: COMMAND,
                        detail: format!("{key}: {e}"),
                    }
                })?,
            );
            Ok(())
        })
        .map_err(|e| match e {
            IpvsError::Kernel {
                command,
                message,
                source,
                ..
            } => IpvsError::Kernel {
                command,
                target: Target::Service(key),
                message,
                source,
            },
            e => e,
        })?;
        Ok(servers)
    }

    /// Creates a virtual server; [`IpvsError::ServiceExists`] if it exists.
    pub fn add_service(&mut self, service: &VirtualServer) -> Result<(), IpvsError> {
        self.apply_one(Operation::AddService(service.clone()))
    }

    /// Changes the scheduler, flags, persistence timeout and netmask of an
    /// existing virtual server; [`IpvsError::ServiceNotFound`] if it is missing.
    pub fn update_service(&mut self, service: &VirtualServer) -> Result<(), IpvsError> {
        self.apply_one(Operation::UpdateService(service.clone()))
    }

    /// Deletes a virtual server with its real servers;
    /// [`IpvsError::ServiceNotFound`] if it is missing.
    pub fn delete_service(&mut self, service: impl Into<ServiceKey>) -> Result<(), IpvsError> {
        self.apply_one(Operation::DeleteService(service.into()))
    }

    /// Adds a masqueraded real server to a service.
    pub fn add_real_server(
        &mut self,
        service: impl Into<ServiceKey>,
        server: &RealServer,
    ) -> Result<(), IpvsError> {
        self.apply_one(Operation::AddRealServer(service.into(), server.clone()))
    }

    /// Changes a real server's weight and thresholds.
    pub fn update_real_server(
        &mut self,
        service: impl Into<ServiceKey>,
        server: &RealServer,
    ) -> Result<(), IpvsError> {
        self.apply_one(Operation::UpdateRealServer(service.into(), server.clone()))
    }

    /// Removes a real server (found by address and port) from a service.
    pub fn delete_real_server(
        &mut self,
        service: impl Into<ServiceKey>,
        server: &RealServer,
    ) -> Result<(), IpvsError> {
        self.apply_one(Operation::DeleteRealServer(service.into(), server.clone()))
    }

    /// Deletes every virtual server of the namespace.
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        let seq = self.next_seq();
        let request = message::flush_request(self.family, seq);
        self.acknowledged(Command::Flush, &request, seq)
    }

    /// The connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        const COMMAND: Command = Command::GetTimeouts;
        let seq = self.next_seq();
        self.send(&message::get_timeouts_request(self.family, seq))?;
        let mut result = None;
        self.read_answers(COMMAND, seq, |reply| {
            result = Some(match reply {
                Reply::Genl { attributes, .. } => {
                    message::decode_timeouts(attributes).map_err(decode_error(COMMAND))
                }
                Reply::Ack { errno, message } if errno != 0 => Err(IpvsError::Kernel {
                    command: COMMAND,
                    target: Target::Table,
                    message,
                    source: io::Error::from_raw_os_error(errno),
                }),
                _ => return Ok(false),
            });
            Ok(true)
        })?;
        result.unwrap_or_else(|| Ok(Timeouts::default()))
    }

    /// Sets the connection timeouts; zero fields are left unchanged.
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), IpvsError> {
        let seq = self.next_seq();
        let request = message::set_timeouts_request(self.family, timeouts, seq);
        self.acknowledged(Command::SetTimeouts, &request, seq)
    }

    fn apply_one(&mut self, operation: Operation) -> Result<(), IpvsError> {
        let mut report = self.apply(std::slice::from_ref(&operation))?;
        report.failures.pop().map_or(Ok(()), |(_, e)| Err(e))
    }

    /// Sends `operations` in order, many per `sendmsg`, and reads every
    /// acknowledgement. A refused operation does not stop the others: each
    /// failure is reported with its index and an error naming the command and
    /// the service (and real server). `Err` only when the socket itself fails
    /// (then some operations may have taken effect).
    ///
    /// The kernel handles a `sendmsg` to netlink synchronously, so when `send`
    /// returns every ACK of the batch is queued, or was dropped because the
    /// receive buffer was full (ENOBUFS; the batch is sized to avoid it). After a
    /// drop the queued ACKs are drained, the batch size is halved, and the
    /// operations whose ACK is missing are reported as [`IpvsError::AckLost`].
    pub fn apply(&mut self, operations: &[Operation]) -> Result<BatchReport, IpvsError> {
        let mut report = BatchReport::default();
        let mut request = Vec::new();
        let mut start = 0usize;
        while start < operations.len() {
            request.clear();
            // Index into `operations` of each request of this batch.
            let mut sent: Vec<usize> = Vec::new();
            let first = self.seq.wrapping_add(1);
            let mut i = start;
            while i < operations.len() && sent.len() < self.batch && request.len() < BATCH_BYTES {
                let operation = &operations[i];
                match message::check(operation) {
                    Ok(()) => {
                        let seq = first.wrapping_add(sent.len() as u32);
                        message::push_operation(&mut request, self.family, operation, seq);
                        sent.push(i);
                    }
                    Err(reason) => report.failures.push((
                        i,
                        IpvsError::Invalid {
                            command: operation.command(),
                            target: operation.target(),
                            reason,
                        },
                    )),
                }
                i += 1;
            }
            start = i;
            if sent.is_empty() {
                continue;
            }
            self.seq = first.wrapping_add(sent.len() as u32 - 1);
            self.send(&request)?;
            self.collect_acks(operations, &sent, first, &mut report)?;
        }
        report.failures.sort_by_key(|(i, _)| *i);
        Ok(report)
    }

    /// Reads the ACKs of one batch (request `k` has sequence `first + k` and is
    /// `operations[sent[k]]`).
    fn collect_acks(
        &mut self,
        operations: &[Operation],
        sent: &[usize],
        first: u32,
        report: &mut BatchReport,
    ) -> Result<(), IpvsError> {
        let command = operations[sent[0]].command();
        let mut acked = vec![false; sent.len()];
        let mut pending = sent.len();
        let mut dropped = false;
        while pending > 0 {
            let flags = if dropped { libc::MSG_DONTWAIT } else { 0 };
            match self.recv_flags(flags) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && !dropped => {
                    dropped = true;
                    self.batch = (self.batch / 2).max(BATCH_MIN);
                    tracing::warn!(
                        batch = self.batch,
                        "IPVS: ACKs dropped, smaller batches from now on"
                    );
                    continue;
                }
                Err(e) if dropped && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(receive_error(command)(e)),
            }
            for message in message::messages(&self.buffer) {
                let message = message.map_err(decode_error(command))?;
                let k = message.seq.wrapping_sub(first) as usize;
                // Answers of an earlier, abandoned request are not ours.
                if k >= sent.len() || acked[k] {
                    continue;
                }
                let Reply::Ack { errno, message } =
                    message::parse_reply(&message).map_err(decode_error(command))?
                else {
                    continue;
                };
                acked[k] = true;
                pending -= 1;
                let operation = &operations[sent[k]];
                if errno == 0 {
                    report.done += 1;
                } else {
                    report
                        .failures
                        .push((sent[k], IpvsError::refused(operation, errno, message)));
                }
            }
        }
        for (k, &i) in sent.iter().enumerate() {
            if !acked[k] {
                let operation = &operations[i];
                report.failures.push((
                    i,
                    IpvsError::AckLost {
                        command: operation.command(),
                        target: operation.target(),
                    },
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without ip_vs (this host's kernel has none) the handle says so with its
    /// own variant; with it, the handle opens.
    #[test]
    fn missing_family_is_not_available() {
        let result = Ipvs::new();
        if std::path::Path::new("/proc/net/ip_vs").exists() {
            assert!(result.is_ok(), "{result:?}");
        } else {
            let err = result.err();
            assert!(matches!(err, Some(IpvsError::NotAvailable)), "{err:?}");
            let text = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains("ip_vs module is not loaded"), "{text}");
        }
    }
}
