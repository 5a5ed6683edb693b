//! The conntrack table of one network namespace over a `NETLINK_NETFILTER` socket:
//! dump entries, delete them in batches, create them (for tests and benchmarks).
//!
//! The socket belongs to the network namespace of the thread that opened it; a
//! [`Conntrack`] keeps working on that namespace whichever thread uses it later.

use std::io;

use kpr_model::{IpFamily, Protocol};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::entry::Entry;
use crate::error::ConntrackError;
use crate::message::{self, Reply};

/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: i32 = 4 << 20;
/// Receive-buffer bytes each ACK is charged (its skb's true size). Measured on
/// 6.18 with the default 208 KiB buffer: 256 ACKs fit, 384 do not (600-800
/// bytes each); 1 KiB leaves a margin.
const ACK_COST: usize = 1024;
/// Bounds of the number of requests sent in one `sendmsg`.
const BATCH_MIN: usize = 16;
const BATCH_MAX: usize = 1024;
/// Bytes of requests per `sendmsg`, well under the default socket send buffer
/// (208 KiB; a bigger message fails with EMSGSIZE).
const BATCH_BYTES: usize = 64 << 10;
const ENOBUFS: i32 = 105;
const MSG_DONTWAIT: i32 = 0x40;
/// How long one receive may wait for the kernel before the operation fails
/// (the kernel answers at once; this only keeps a sync loop from hanging).
const RECV_TIMEOUT_SECONDS: i64 = 10;
/// Room for one datagram: dumps come in skbs of at most 32 KiB.
const DATAGRAM: usize = 64 << 10;
/// `NLM_F_DUMP_INTR`: the table changed while it was being dumped.
const NLM_F_DUMP_INTR: u16 = 0x10;
const ENOENT: i32 = 2;

/// The result of a dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// The entries, in the kernel's order.
    pub entries: Vec<Entry>,
    /// Messages that were not usable entries (malformed attributes, or other
    /// protocols on kernels that ignore the dump filter).
    pub skipped: usize,
    /// The kernel flagged the dump as interrupted by concurrent changes: some
    /// entries may be missing or repeated (a later reconcile catches up).
    pub interrupted: bool,
}

/// Kernel access the cleanup needs; [`Conntrack`] is the real one, `fake::FakeConntrack`
/// (feature `fake`) the in-memory one.
pub trait ConntrackTable {
    /// Every entry of `family` and `protocol`.
    fn dump(&mut self, family: IpFamily, protocol: Protocol) -> Result<Dump, ConntrackError>;
    /// Deletes the entries (matched by original tuple, zone and id); returns how
    /// many the kernel deleted. Entries already gone are not an error.
    fn delete(&mut self, entries: &[Entry]) -> Result<usize, ConntrackError>;
}

/// A netlink handle on the conntrack table of the calling thread's network namespace.
#[derive(Debug)]
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
    /// Requests per `sendmsg`: as many as the receive buffer has room for ACKs.
    batch: usize,
}

fn io_error(operation: &'static str) -> impl FnOnce(io::Error) -> ConntrackError {
    move |source| ConntrackError::Socket { operation, source }
}

fn receive_error(source: io::Error) -> ConntrackError {
    if source.kind() == io::ErrorKind::WouldBlock {
        ConntrackError::Timeout {
            seconds: RECV_TIMEOUT_SECONDS as u64,
        }
    } else {
        ConntrackError::Socket {
            operation: "receive",
            source,
        }
    }
}

impl Conntrack {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io_error("open"))?;
        socket.bind_auto().map_err(io_error("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io_error("connect"))?;
        // Errors echo only the request's header, not the whole request.
        let _ = socket.set_cap_ack(true);
        // Room for more ACKs per batch; the batch follows what we got.
        let _ = socket.set_rx_buf_sz(RECV_BUFFER);
        let room = socket.get_rx_buf_sz().unwrap_or(0);
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &TimeVal::new(RECV_TIMEOUT_SECONDS, 0),
        )
        .map_err(|e| ConntrackError::Socket {
            operation: "set receive timeout",
            source: e.into(),
        })?;
        Ok(Self {
            socket,
            seq: 0,
            buffer: Vec::with_capacity(DATAGRAM),
            batch: (room / ACK_COST).clamp(BATCH_MIN, BATCH_MAX),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv(&mut self) -> Result<(), ConntrackError> {
        self.recv_flags(0).map_err(receive_error)
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

    fn send(&mut self, request: &[u8]) -> Result<(), ConntrackError> {
        let sent = self.socket.send(request, 0).map_err(io_error("send"))?;
        if sent != request.len() {
            return Err(ConntrackError::Socket {
                operation: "send",
                source: io::Error::other(format!("sent {sent} of {} bytes", request.len())),
            });
        }
        Ok(())
    }

    /// Creates `entries` (both tuples as given, like `conntrack -I`) with
    /// `timeout_seconds` to live; returns how many were created. Used to seed a
    /// table in tests and benchmarks; the proxy never creates entries.
    pub fn create(
        &mut self,
        entries: &[Entry],
        timeout_seconds: u32,
    ) -> Result<usize, ConntrackError> {
        self.batched("create", entries, |out, entry, seq| {
            message::push_create_request(out, entry, timeout_seconds, seq)
        })
    }

    /// Sends one request per entry, many per `sendmsg`, and reads every ACK.
    /// Returns how many succeeded; ENOENT counts as "nothing to do", any other
    /// error is returned after the batch (with the count so far).
    ///
    /// The kernel handles a `sendmsg` to netlink synchronously: when `send`
    /// returns, every ACK of the batch is queued on our socket, or was dropped
    /// because the buffer was full (ENOBUFS). After a drop the queued ACKs are
    /// drained without blocking, the batch size is halved, and the count is a
    /// lower bound (a dropped ACK cannot be counted).
    fn batched(
        &mut self,
        operation: &'static str,
        entries: &[Entry],
        push: impl Fn(&mut Vec<u8>, &Entry, u32),
    ) -> Result<usize, ConntrackError> {
        let mut done = 0usize;
        let mut request = Vec::new();
        let mut rest = entries;
        while !rest.is_empty() {
            request.clear();
            let first = self.seq.wrapping_add(1);
            let mut n = 0;
            while n < rest.len() && n < self.batch && request.len() < BATCH_BYTES {
                let seq = self.next_seq();
                push(&mut request, &rest[n], seq);
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            self.send(&request)?;
            let mut pending = chunk.len();
            let mut failure: Option<(i32, usize)> = None;
            let mut dropped = false;
            while pending > 0 {
                let flags = if dropped { MSG_DONTWAIT } else { 0 };
                match self.recv_flags(flags) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(ENOBUFS) && !dropped => {
                        dropped = true;
                        self.batch = (self.batch / 2).max(BATCH_MIN);
                        continue;
                    }
                    Err(e) if dropped && e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(receive_error(e)),
                }
                for message in message::messages(&self.buffer) {
                    // A broken datagram may have held ACKs: count no further
                    // and collect what is queued without blocking.
                    let Some(message) = message else {
                        dropped = true;
                        break;
                    };
                    let Reply::Ack { seq, errno } = message::parse_reply(message.bytes) else {
                        continue;
                    };
                    // Acks of an earlier, abandoned batch are not ours to count.
                    if seq.wrapping_sub(first) as usize >= chunk.len() {
                        continue;
                    }
                    pending = pending.saturating_sub(1);
                    match errno {
                        0 => done += 1,
                        ENOENT => {}
                        e => match &mut failure {
                            Some((_, n)) => *n += 1,
                            None => failure = Some((e, 1)),
                        },
                    }
                }
            }
            if let Some((errno, failed)) = failure {
                return Err(ConntrackError::Kernel {
                    operation,
                    done,
                    failed,
                    source: io::Error::from_raw_os_error(errno),
                });
            }
        }
        Ok(done)
    }
}

impl ConntrackTable for Conntrack {
    fn dump(&mut self, family: IpFamily, protocol: Protocol) -> Result<Dump, ConntrackError> {
        let seq = self.next_seq();
        self.send(&message::dump_request(family, protocol, seq))?;
        let mut dump = Dump::default();
        loop {
            self.recv()?;
            for message in message::messages(&self.buffer) {
                // The rest of a broken datagram is lost; the dump goes on.
                let Some(message) = message else {
                    dump.skipped += 1;
                    break;
                };
                // Answers to an earlier, abandoned request are not ours.
                if message.seq != seq {
                    continue;
                }
                if message.flags & NLM_F_DUMP_INTR != 0 {
                    dump.interrupted = true;
                }
                match message::parse_reply(message.bytes) {
                    Reply::Entry(e) if e.protocol == protocol && e.family() == family => {
                        dump.entries.push(e);
                    }
                    Reply::Entry(_) | Reply::Skipped => dump.skipped += 1,
                    Reply::Done { errno: 0 } => return Ok(dump),
                    Reply::Done { errno } | Reply::Ack { errno, .. } if errno != 0 => {
                        return Err(ConntrackError::Kernel {
                            operation: "dump",
                            done: dump.entries.len(),
                            failed: 0,
                            source: io::Error::from_raw_os_error(errno),
                        });
                    }
                    Reply::Done { .. } | Reply::Ack { .. } | Reply::Other => {}
                }
            }
        }
    }

    fn delete(&mut self, entries: &[Entry]) -> Result<usize, ConntrackError> {
        self.batched("delete", entries, message::push_delete_request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::entry::Tuple;

    /// When the kernel drops ACKs because the receive buffer is full, every
    /// request still takes effect, the count is a lower bound, the batch shrinks,
    /// and the socket stays usable.
    #[test]
    fn dropped_acks_shrink_the_batch() {
        let ns = kpr_netns_lab::Netns::new("ctn").unwrap();
        let (created, batch, dumped, deleted, left) = ns
            .enter(|| {
                let mut ct = Conntrack::new().unwrap();
                ct.socket.set_rx_buf_sz(4096i32).unwrap();
                ct.batch = 2048;
                let entries: Vec<Entry> = (0..3000u16)
                    .map(|i| {
                        Entry::new(
                            Protocol::Udp,
                            Tuple {
                                src: "10.0.0.1".parse().unwrap(),
                                dst: "10.96.0.1".parse().unwrap(),
                                src_port: 1000 + i,
                                dst_port: 53,
                            },
                            ("10.244.0.1".parse().unwrap(), 53),
                        )
                    })
                    .collect();
                let created = ct.create(&entries, 600).unwrap();
                let batch = ct.batch;
                let dump = ct.dump(IpFamily::V4, Protocol::Udp).unwrap();
                let deleted = ct.delete(&dump.entries).unwrap();
                let left = ct.dump(IpFamily::V4, Protocol::Udp).unwrap().entries.len();
                (created, batch, dump.entries.len(), deleted, left)
            })
            .unwrap();
        assert!(created < 3000, "some ACKs were dropped: {created}");
        assert!(batch < 2048, "{batch}");
        assert_eq!(dumped, 3000, "every create took effect");
        assert!(deleted <= 3000);
        assert_eq!(left, 0, "every delete took effect");
    }

    /// A kernel that never answers gives a timeout error, not a hang.
    #[test]
    fn silence_times_out() {
        let ns = kpr_netns_lab::Netns::new("ctt").unwrap();
        let err = ns
            .enter(|| {
                let mut ct = Conntrack::new().unwrap();
                setsockopt(
                    &ct.socket,
                    sockopt::ReceiveTimeout,
                    &TimeVal::new(0, 100_000),
                )
                .unwrap();
                ct.recv().unwrap_err()
            })
            .unwrap();
        assert!(
            matches!(err, ConntrackError::Timeout { seconds: 10 }),
            "{err:?}"
        );
    }
}
