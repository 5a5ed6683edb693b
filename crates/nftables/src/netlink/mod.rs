//! Sending transactions to nf_tables over netlink, without the `nft` program.
//!
//! Why: before applying even a one-element transaction, `nft` fetches every chain and
//! set of the table into its cache (30 ms at 1,000 Services, about a second at
//! 10,000: see BENCHMARKS.md), so exec'ing it cannot apply one endpoint change in the
//! 20 ms issue 4 asks for. A batch built here goes to the kernel in one `sendmsg` and
//! costs only what it changes. The kernel applies a batch atomically, as it does an
//! `nft -f` file: a rejected batch leaves the previous ruleset in place.
//!
//! The messages are the ones nft 1.0.6 sends for the same text (see [`expr`]); an
//! operation with no form here (a raw line, an interval reaching the top address)
//! makes the whole transaction [`Unsupported`], and the caller sends it with `nft -f`.
//! Reading the table back (full syncs) is a few dumps ([`NfTables::list`]).

pub mod anon;
pub mod attrs;
pub mod batch;
mod dump;
pub mod expr;

use std::io;

use kpr_model::IpFamily;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};

use crate::transaction::Transaction;

/// An operation with no netlink form here; the transaction goes through `nft -f`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no netlink encoding for {0}")]
pub struct Unsupported(pub String);

/// A failure sending a transaction over netlink.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket failed.
    #[error("nf_tables netlink socket: {operation}: {source}")]
    Socket {
        /// What was being done.
        operation: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The kernel refused the batch; nothing of it was applied.
    #[error("the kernel rejected the nftables transaction at `{operation}`: {source}")]
    Rejected {
        /// The first refused operation, in nft syntax.
        operation: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// No answer to the batch's last message.
    #[error("no answer from the kernel to an nftables transaction of {0} operations")]
    NoAnswer(usize),
}

/// How a transaction went.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not sent: it has an operation with no netlink form here.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// Sent and failed.
    #[error(transparent)]
    Failed(#[from] NetlinkError),
}

const NLMSG_ERROR: u16 = 2;
const MSG_DONTWAIT: i32 = 0x40;
const DATAGRAM: usize = 64 << 10;
/// The default send buffer (wmem_default) takes batches up to about 200 KiB; bigger
/// ones (full syncs) raise it to their size.
const SEND_HEADROOM: usize = 64 << 10;

/// An nf_tables netlink socket in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct NfTables {
    socket: Socket,
    seq: u32,
    send_buffer: usize,
    names: batch::AnonNames,
}

fn socket_error(operation: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Socket { operation, source }
}

impl NfTables {
    /// Opens the socket in the calling thread's network namespace; it stays there
    /// whichever thread uses it later.
    pub fn new() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(socket_error("open"))?;
        socket.bind_auto().map_err(socket_error("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(socket_error("connect"))?;
        // Errors echo only the request's header, not the whole request.
        let _ = socket.set_cap_ack(true);
        Ok(Self {
            socket,
            seq: 0,
            send_buffer: 0,
            names: batch::AnonNames::new(salt()),
        })
    }

    /// Applies `tx` atomically. An empty transaction is not sent.
    pub fn apply(&mut self, tx: &Transaction) -> Result<(), ApplyError> {
        if tx.is_empty() {
            return Ok(());
        }
        let batch = batch::encode(tx, self.seq.wrapping_add(1), &mut self.names)?;
        self.seq = batch.last_seq.wrapping_add(1);
        self.ensure_send_buffer(batch.bytes.len())?;
        let sent = self
            .socket
            .send(&batch.bytes, 0)
            .map_err(socket_error("send"))?;
        if sent != batch.bytes.len() {
            return Err(NetlinkError::Socket {
                operation: "send",
                source: io::Error::other(format!("sent {sent} of {} bytes", batch.bytes.len())),
            }
            .into());
        }
        self.answers(tx, &batch).map_err(ApplyError::Failed)
    }

    fn ensure_send_buffer(&mut self, len: usize) -> Result<(), NetlinkError> {
        let want = len + SEND_HEADROOM;
        if len < 128 << 10 || want <= self.send_buffer {
            return Ok(());
        }
        // SO_SNDBUFFORCE (CAP_NET_ADMIN, which the proxy has) passes wmem_max, as nft
        // does for big batches.
        setsockopt(&self.socket, sockopt::SndBufForce, &want).map_err(|e| {
            NetlinkError::Socket {
                operation: "raise the send buffer",
                source: e.into(),
            }
        })?;
        self.send_buffer = want;
        Ok(())
    }

    /// Reads the answers to `batch`. The kernel handles a netlink `sendmsg`
    /// synchronously, so every answer is queued by now: an error per refused message
    /// (and one for a failed commit), then the ACK of the last message.
    fn answers(&mut self, tx: &Transaction, batch: &batch::Batch) -> Result<(), NetlinkError> {
        let mut first_error: Option<(u32, i32)> = None;
        let mut acked = false;
        let mut buf: Vec<u8> = Vec::with_capacity(DATAGRAM);
        while !acked {
            buf.clear();
            match self.socket.recv(&mut buf, MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(socket_error("receive")(e)),
            }
            for reply in replies(&buf) {
                let Some(code) = reply.error() else {
                    continue;
                };
                if code != 0 && first_error.is_none() {
                    first_error = Some((reply.seq, code));
                }
                if reply.seq == batch.last_seq {
                    acked = true;
                }
            }
        }
        match first_error {
            Some((seq, code)) => Err(NetlinkError::Rejected {
                operation: describe(tx, batch, seq),
                source: io::Error::from_raw_os_error(-code),
            }),
            None if acked => Ok(()),
            None => Err(NetlinkError::NoAnswer(tx.len())),
        }
    }
}

/// One netlink message of a received datagram.
struct Reply<'a> {
    /// `nlmsg_type`.
    kind: u16,
    /// `nlmsg_seq`.
    seq: u32,
    /// What follows the `nlmsghdr`.
    body: &'a [u8],
}

impl Reply<'_> {
    /// For an `NLMSG_ERROR`, its code (0: an ACK, else a negative errno).
    fn error(&self) -> Option<i32> {
        let code = self.body.get(..4)?;
        (self.kind == NLMSG_ERROR).then(|| i32::from_ne_bytes([code[0], code[1], code[2], code[3]]))
    }
}

/// The messages of a received datagram, in order; a truncated one ends the walk.
fn replies(mut bytes: &[u8]) -> impl Iterator<Item = Reply<'_>> {
    std::iter::from_fn(move || {
        let head = bytes.get(..16)?;
        let len = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len < 16 || len > bytes.len() {
            return None;
        }
        let reply = Reply {
            kind: u16::from_ne_bytes([head[4], head[5]]),
            seq: u32::from_ne_bytes([head[8], head[9], head[10], head[11]]),
            body: &bytes[16..len],
        };
        bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
        Some(reply)
    })
}

/// The `NFPROTO_*` number of `family`.
pub(crate) fn nfproto(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => 2,
        IpFamily::V6 => 10,
    }
}

/// Something different in each process run, for anonymous set names: the clock and
/// the process id, hashed.
fn salt() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((nanos, std::process::id())) as u32
}

/// The operation a message belonged to, in nft syntax.
fn describe(tx: &Transaction, batch: &batch::Batch, seq: u32) -> String {
    if seq == batch.first_seq {
        return "commit".into();
    }
    batch
        .seqs
        .iter()
        .find(|(s, _)| *s == seq)
        .and_then(|(_, op)| tx.op_text(*op))
        .unwrap_or_else(|| format!("message {seq}"))
}
