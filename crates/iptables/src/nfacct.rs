//! nfacct counters (`nfnetlink_acct`), which upstream's iptables rules count packets
//! with (`-m nfacct --nfacct-name ...`) to feed two metrics. A rule naming a counter
//! that does not exist fails to load, so counters are created first and a rule uses
//! one only if that worked (as upstream).
//!
//! No crate speaks nfnetlink_acct; the two messages needed (NEW and GET, one name
//! attribute each) are built here by hand on a `netlink-sys` socket.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

const NFNL_SUBSYS_ACCT: u16 = 7;
const NFNL_MSG_ACCT_NEW: u16 = 0;
const NFNL_MSG_ACCT_GET: u16 = 1;
const NFACCT_NAME: u16 = 1;
const NFACCT_PKTS: u16 = 2;
const NFACCT_BYTES: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Packet and byte counts of a counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn request(msg: u16, flags: u16, seq: u32, name: &str) -> Vec<u8> {
    let name_attr_len = 4 + name.len() + 1;
    let total = 16 + 4 + align4(name_attr_len);
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&(total as u32).to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_ACCT << 8) | msg).to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 0.
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&(name_attr_len as u16).to_ne_bytes());
    b.extend_from_slice(&NFACCT_NAME.to_ne_bytes());
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.resize(total, 0);
    b
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn exchange(msg: u16, flags: u16, name: &str) -> io::Result<Option<Counts>> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&request(msg, flags, 1, name), 0)?;
    let mut counts = None;
    loop {
        let mut buf = Vec::with_capacity(8192);
        let n = socket.recv(&mut buf, 0)?;
        let data = &buf[..n];
        let mut at = 0;
        while at + 16 <= data.len() {
            let len = u32_at(data, at).unwrap_or(0) as usize;
            let ty = u16_at(data, at + 4).unwrap_or(0);
            if len < 16 || at + len > data.len() {
                return Err(io::Error::other("truncated netlink message"));
            }
            let body = &data[at + 16..at + len];
            match ty {
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(
                        body.get(..4)
                            .and_then(|s| s.try_into().ok())
                            .unwrap_or([0; 4]),
                    );
                    if code == 0 {
                        return Ok(counts);
                    }
                    return Err(io::Error::from_raw_os_error(-code));
                }
                NLMSG_DONE => return Ok(counts),
                _ => {
                    // nfgenmsg, then attributes.
                    let mut c = Counts::default();
                    let mut a = 4;
                    while a + 4 <= body.len() {
                        let alen = usize::from(u16_at(body, a).unwrap_or(0));
                        let atype = u16_at(body, a + 2).unwrap_or(0) & 0x3fff;
                        if alen < 4 || a + alen > body.len() {
                            break;
                        }
                        let v = &body[a + 4..a + alen];
                        let be = || {
                            v.get(..8)
                                .and_then(|s| s.try_into().ok())
                                .map(u64::from_be_bytes)
                                .unwrap_or(0)
                        };
                        match atype {
                            NFACCT_PKTS => c.packets = be(),
                            NFACCT_BYTES => c.bytes = be(),
                            _ => {}
                        }
                        a += align4(alen);
                    }
                    counts = Some(c);
                }
            }
            at += align4(len);
        }
    }
}

/// Creates the counter `name` in the current network namespace (it may exist).
pub fn ensure(name: &str) -> io::Result<()> {
    match exchange(
        NFNL_MSG_ACCT_NEW,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        name,
    ) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc_eexist) if libc_eexist == 17 || libc_eexist == 16) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Reads the counter `name`.
pub fn read(name: &str) -> io::Result<Counts> {
    exchange(NFNL_MSG_ACCT_GET, NLM_F_REQUEST | NLM_F_ACK, name)?
        .ok_or_else(|| io::Error::other(format!("nfacct counter {name}: no answer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NEW request carries the name attribute, NUL-terminated and padded.
    #[test]
    fn request_layout() {
        let b = request(NFNL_MSG_ACCT_NEW, NLM_F_REQUEST, 7, "abc");
        assert_eq!(b.len(), 28);
        assert_eq!(u32_at(&b, 0), Some(28));
        assert_eq!(u16_at(&b, 4), Some(0x0700));
        assert_eq!(u16_at(&b, 20), Some(8), "attr len = 4 + 3 + NUL");
        assert_eq!(&b[24..28], b"abc\0");
    }
}
