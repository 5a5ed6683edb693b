//! Netlink messages and attributes as bytes: a `nlmsghdr`, the netfilter `nfgenmsg`
//! and nested type-length-value attributes, padded to four bytes.
//!
//! Written by hand: netlink-packet-netfilter (the crate we use for conntrack) carries
//! the nfnetlink header and batch messages but none of nf_tables' objects or
//! expressions, and its `Nla` traits would need one type per attribute set for about
//! fifteen sets. The wire format is a few lines; the meaning lives in `batch` and
//! `expr`.

/// `NLA_F_NESTED`.
const NESTED: u16 = 0x8000;

/// Bytes of one batch: messages appended one after the other.
#[derive(Debug, Default)]
pub struct Buf {
    bytes: Vec<u8>,
    /// Offsets of the length fields of the open message and nests.
    open: Vec<usize>,
}

fn pad(n: usize) -> usize {
    (n + 3) & !3
}

impl Buf {
    /// The bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, taken.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Starts a message: `nlmsghdr` (its length filled by [`Buf::end_msg`]) and
    /// `nfgenmsg` with `family` and `res_id` (big-endian, as the kernel reads it).
    pub fn begin_msg(&mut self, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.open.push(self.bytes.len());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(&flags.to_ne_bytes());
        self.bytes.extend_from_slice(&seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.push(family);
        self.bytes.push(0); // NFNETLINK_V0
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Ends the message begun last.
    pub fn end_msg(&mut self) {
        if let Some(start) = self.open.pop() {
            let len = (self.bytes.len() - start) as u32;
            self.bytes[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// Sets `flags` on the (ended) message starting at byte `msg`.
    pub fn add_flags(&mut self, msg: usize, flags: u16) {
        let at = msg + 6;
        let old = u16::from_ne_bytes([self.bytes[at], self.bytes[at + 1]]);
        self.bytes[at..at + 2].copy_from_slice(&(old | flags).to_ne_bytes());
    }

    /// An attribute holding `value`.
    pub fn bytes_attr(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.resize(self.bytes.len() + pad(len) - len, 0);
    }

    /// A NUL-terminated string attribute.
    pub fn str_attr(&mut self, kind: u16, value: &str) {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.bytes_attr(kind, &v);
    }

    /// A big-endian u32 attribute (nf_tables sends its numbers in network order).
    pub fn u32_attr(&mut self, kind: u16, value: u32) {
        self.bytes_attr(kind, &value.to_be_bytes());
    }

    /// A big-endian u64 attribute.
    pub fn u64_attr(&mut self, kind: u16, value: u64) {
        self.bytes_attr(kind, &value.to_be_bytes());
    }

    /// Opens a nested attribute; close it with [`Buf::end_nest`].
    pub fn begin_nest(&mut self, kind: u16) {
        self.open.push(self.bytes.len());
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes.extend_from_slice(&(kind | NESTED).to_ne_bytes());
    }

    /// Closes the nest opened last.
    pub fn end_nest(&mut self) {
        if let Some(start) = self.open.pop() {
            let len = (self.bytes.len() - start) as u16;
            self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// `kind` nesting one attribute `inner` holding `value` (nf_tables' data attributes:
    /// `NFTA_DATA_VALUE` inside a key, a mask, a comparison operand).
    pub fn data_attr(&mut self, kind: u16, inner: u16, value: &[u8]) {
        self.begin_nest(kind);
        self.bytes_attr(inner, value);
        self.end_nest();
    }
}

/// User data as nft writes it (libnftnl's udata): one TLV of a one-byte type, a
/// one-byte length and the bytes; used for comments and set descriptions.
pub fn udata(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 2);
    v.push(kind);
    v.push(value.len() as u8);
    v.extend_from_slice(value);
    v
}

/// A comment as user data: type 0, the text with its NUL. nft limits comments to
/// 128 bytes; longer text is cut, as nft would refuse it.
pub fn comment(kind: u8, text: &str) -> Vec<u8> {
    let mut v: Vec<u8> = text.as_bytes().iter().copied().take(127).collect();
    v.push(0);
    udata(kind, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_nests_are_sized_and_padded() {
        let mut b = Buf::default();
        b.begin_msg(0x0a00, 1, 7, 2, 0);
        b.str_attr(1, "kube-proxy");
        b.begin_nest(4);
        b.u32_attr(1, 0);
        b.end_nest();
        b.end_msg();
        let bytes = b.bytes();
        // 16 header + 4 nfgenmsg + 16 ("kube-proxy\0" padded) + 4 nest + 8 u32.
        assert_eq!(bytes.len(), 48);
        assert_eq!(&bytes[0..4], &48u32.to_ne_bytes());
        assert_eq!(&bytes[20..22], &15u16.to_ne_bytes());
        assert_eq!(&bytes[36..38], &12u16.to_ne_bytes());
        assert_eq!(&bytes[38..40], &(4u16 | NESTED).to_ne_bytes());
        assert_eq!(comment(0, "ab"), vec![0, 3, b'a', b'b', 0]);
    }
}
