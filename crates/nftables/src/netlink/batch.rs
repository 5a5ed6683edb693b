//! A [`Transaction`] as one nfnetlink batch: `BATCH_BEGIN`, one nf_tables message per
//! operation (two or three for a rule with an anonymous set), `BATCH_END`. The kernel
//! applies a batch atomically, as it does `nft -f`. Pure: no socket here.

use std::net::IpAddr;

use kpr_model::{IpFamily, Protocol};

use super::Unsupported;
use super::anon::{self, AnonRef, AnonSet};
use super::attrs::{Buf, comment, udata};
use super::expr;
use crate::names::TABLE;
use crate::objects::{Chain, Element, Family, Key, KeyType, Set, Verdict};
use crate::transaction::{Op, Transaction};

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;

const NEWTABLE: u16 = 0;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const DELCHAIN: u16 = 5;
const NEWRULE: u16 = 6;
const DELRULE: u16 = 8;
const NEWSET: u16 = 9;
const DELSET: u16 = 11;
const NEWSETELEM: u16 = 12;
const DELSETELEM: u16 = 14;

pub(super) const F_REQUEST: u16 = 0x1;
pub(super) const F_ACK: u16 = 0x4;
const F_CREATE: u16 = 0x400;
const F_APPEND: u16 = 0x800;

// Set flags.
pub(super) const SET_ANONYMOUS: u32 = 0x1;
const SET_CONSTANT: u32 = 0x2;
const SET_INTERVAL: u32 = 0x4;
pub(super) const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;

// nft's data type ids.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_VERDICT: u32 = 0xffff_ff00;

// Set user data that nft 1.0.6 writes (libnftnl's NFTNL_UDATA_SET_*): the key's byte
// order and, for concatenations, anonymous interval sets and numgen maps, the
// expressions the key and data came from, which nft reads back to print them.
const UDATA_SET_COMMENT: u8 = 7;
const KEY_BIG_ENDIAN: [u8; 6] = [0, 4, 2, 0, 0, 0];
const CONCAT_MAP: [u8; 28] = [
    0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
];
const NUMGEN_MAP: [u8; 28] = [
    0, 4, 1, 0, 0, 0, 1, 4, 0, 0, 0, 0, 4, 8, 0, 4, 1, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
];

/// Names for anonymous sets. nft sends `__set%d` and the kernel picks the number by
/// parsing the name of every set in the table, for each new set: quadratic in the
/// number of Services (one anonymous map per service chain), the main cost of a full
/// load at 10,000 Services. We name them ourselves, unique within a process run (a
/// random salt and a counter); the kernel then only checks the name is free. The
/// kernel tells anonymous sets by their flag, not their name: `nft list` prints them
/// inline as before.
#[derive(Clone, Debug)]
pub struct AnonNames {
    salt: u32,
    next: u64,
}

impl AnonNames {
    /// Names starting from `salt` (pass something random: names must not collide
    /// with those of an earlier run still in the kernel).
    pub fn new(salt: u32) -> Self {
        Self { salt, next: 0 }
    }

    fn next(&mut self, map: bool) -> String {
        self.next += 1;
        let kind = if map { "map" } else { "set" };
        format!("__{kind}{:08x}{}", self.salt, self.next)
    }
}

/// One encoded transaction.
#[derive(Debug)]
pub struct Batch {
    /// The bytes to send in one `sendmsg`.
    pub bytes: Vec<u8>,
    /// The sequence number of each message and the operation (index into
    /// [`Transaction::ops`]) it belongs to, for error reports.
    pub seqs: Vec<(u32, usize)>,
    /// The sequence number of the last message, which asks for an ACK.
    pub last_seq: u32,
    /// The first sequence number (the batch header's).
    pub first_seq: u32,
}

struct Encoder<'a> {
    names: &'a mut AnonNames,
    buf: Buf,
    fam: Family,
    seq: u32,
    set_id: u32,
    seqs: Vec<(u32, usize)>,
    op: usize,
    /// Where the last operation's message starts.
    last_msg: Option<usize>,
}

/// Encodes `tx`, numbering messages from `seq`. Fails, sending nothing, if an
/// operation has no netlink form here (the caller then uses `nft -f`).
pub fn encode(tx: &Transaction, seq: u32, names: &mut AnonNames) -> Result<Batch, Unsupported> {
    let mut e = Encoder {
        names,
        buf: Buf::default(),
        fam: tx.family(),
        seq,
        set_id: 0,
        seqs: Vec::with_capacity(tx.len()),
        op: 0,
        last_msg: None,
    };
    let first_seq = seq;
    e.buf
        .begin_msg(BATCH_BEGIN, F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES);
    e.buf.end_msg();
    for (i, op) in tx.ops().iter().enumerate() {
        e.op = i;
        e.op(op)?;
    }
    // The last message asks for an ACK: its arrival says the batch was processed.
    let last_seq = e.seq;
    let last = e
        .last_msg
        .ok_or_else(|| Unsupported("an empty transaction".into()))?;
    e.buf.add_flags(last, F_ACK);
    e.buf.begin_msg(
        BATCH_END,
        F_REQUEST,
        last_seq.wrapping_add(1),
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    e.buf.end_msg();
    let bytes = e.buf.into_bytes();
    Ok(Batch {
        bytes,
        seqs: e.seqs,
        last_seq,
        first_seq,
    })
}

impl Encoder<'_> {
    fn begin(&mut self, kind: u16, flags: u16) {
        self.seq = self.seq.wrapping_add(1);
        self.seqs.push((self.seq, self.op));
        self.last_msg = Some(self.buf.bytes().len());
        self.buf.begin_msg(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            flags,
            self.seq,
            super::nfproto(self.fam.0),
            0,
        );
    }

    fn table(&mut self) {
        self.buf.str_attr(1, TABLE);
    }

    /// A message of type `msg` naming one object of the table: its name in
    /// attribute `attr` (the chain or set attribute of that message type).
    fn named(&mut self, msg: u16, attr: u16, name: &str) {
        self.begin(msg, F_REQUEST);
        self.table();
        self.buf.str_attr(attr, name);
        self.buf.end_msg();
    }

    fn op(&mut self, op: &Op) -> Result<(), Unsupported> {
        match op {
            Op::AddTable => {
                self.begin(NEWTABLE, F_REQUEST);
                self.buf.str_attr(1, TABLE);
                self.buf.u32_attr(2, 0);
                self.buf.bytes_attr(6, &comment(0, "rules for kube-proxy"));
                self.buf.end_msg();
            }
            Op::DeleteTable => {
                self.begin(DELTABLE, F_REQUEST);
                self.buf.str_attr(1, TABLE);
                self.buf.end_msg();
            }
            Op::AddChain(c) => self.chain(c)?,
            Op::AddChainName(name) => self.chain(&Chain::new(name.clone(), Vec::new()))?,
            Op::FlushChain(name) => self.named(DELRULE, 2, name),
            Op::DeleteChain(name) => self.named(DELCHAIN, 3, name),
            Op::AddRule(chain, rule) => {
                let anon = anon::anonymous_set(self.fam, rule)?;
                let anon = anon.as_ref().map(|set| self.anonymous_set(set));
                self.begin(NEWRULE, F_REQUEST | F_CREATE | F_APPEND);
                self.table();
                self.buf.str_attr(2, chain);
                self.buf.begin_nest(4);
                expr::expressions(&mut self.buf, self.fam, rule, anon.as_ref())?;
                self.buf.end_nest();
                if let Some(text) = expr::comment(rule) {
                    self.buf.bytes_attr(7, &comment(0, text));
                }
                self.buf.end_msg();
            }
            Op::AddSet(set) => self.set(set)?,
            Op::FlushSet(name, _) => self.named(DELSETELEM, 2, name),
            Op::DeleteSet(name, _) => self.named(DELSET, 2, name),
            Op::AddElement(e) => self.element(e)?,
            Op::DeleteElement(set, key) => {
                let key = parse_key(key)?;
                self.begin(DELSETELEM, F_REQUEST);
                self.table();
                self.buf.str_attr(2, set);
                self.buf.begin_nest(3);
                self.buf.begin_nest(1);
                self.buf.data_attr(1, 1, &key_bytes(&key));
                self.buf.end_nest();
                self.buf.end_nest();
                self.buf.end_msg();
            }
            Op::Raw(line) => return Err(Unsupported(format!("raw nft text {line:?}"))),
        }
        Ok(())
    }

    fn chain(&mut self, c: &Chain) -> Result<(), Unsupported> {
        self.begin(NEWCHAIN, F_REQUEST | F_CREATE);
        self.table();
        self.buf.str_attr(3, &c.name);
        if let Some(h) = &c.hook {
            let hooknum: u32 = match h.hook {
                "prerouting" => 0,
                "input" => 1,
                "forward" => 2,
                "output" => 3,
                "postrouting" => 4,
                other => return Err(Unsupported(format!("hook {other}"))),
            };
            self.buf.str_attr(7, h.kind);
            self.buf.begin_nest(4);
            self.buf.u32_attr(1, hooknum);
            self.buf.u32_attr(2, h.priority as u32);
            self.buf.end_nest();
        } else if let Some(text) = c.comment {
            self.buf.bytes_attr(12, &comment(0, text));
        }
        self.buf.end_msg();
        Ok(())
    }

    fn next_set_id(&mut self) -> u32 {
        self.set_id += 1;
        self.set_id
    }

    fn set(&mut self, set: &Set) -> Result<(), Unsupported> {
        let (addr_type, addr_len) = match self.fam.0 {
            IpFamily::V4 => (TYPE_IPADDR, 4),
            IpFamily::V6 => (TYPE_IP6ADDR, 16),
        };
        let (key_type, key_len) = match set.key {
            KeyType::Addr => (addr_type, addr_len),
            KeyType::ProtoPort => ((TYPE_INET_PROTOCOL << 6) | TYPE_INET_SERVICE, 8),
            KeyType::AddrProtoPort => (
                (((addr_type << 6) | TYPE_INET_PROTOCOL) << 6) | TYPE_INET_SERVICE,
                addr_len + 8,
            ),
        };
        let concat = set.key != KeyType::Addr;
        if concat != set.verdict_map {
            return Err(Unsupported(format!("set {} of this key type", set.name)));
        }
        let mut flags = 0;
        if set.verdict_map {
            flags |= SET_MAP;
        }
        if set.timeout.is_some() {
            flags |= SET_TIMEOUT | SET_EVAL;
        }
        let id = self.next_set_id();
        self.begin(NEWSET, F_REQUEST | F_CREATE);
        self.table();
        self.buf.str_attr(2, &set.name);
        self.buf.u32_attr(3, flags);
        self.buf.u32_attr(4, key_type);
        self.buf.u32_attr(5, key_len);
        if set.verdict_map {
            self.buf.u32_attr(6, TYPE_VERDICT);
            self.buf.u32_attr(7, 0);
        }
        self.buf.u32_attr(10, id);
        if let Some(t) = set.timeout {
            self.buf.u64_attr(11, u64::from(t) * 1000);
        }
        let mut ud = if concat {
            CONCAT_MAP.to_vec()
        } else {
            KEY_BIG_ENDIAN.to_vec()
        };
        if let Some(c) = set.comment {
            ud.extend_from_slice(&comment(UDATA_SET_COMMENT, c));
        }
        self.buf.bytes_attr(13, &ud);
        self.buf.end_msg();
        Ok(())
    }

    /// Sends an anonymous set and its elements; returns how to refer to it.
    fn anonymous_set(&mut self, set: &AnonSet) -> AnonRef {
        let id = self.next_set_id();
        let name = self.names.next(matches!(set, AnonSet::Verdicts(_)));
        match set {
            AnonSet::Intervals {
                family,
                source,
                elements,
            } => {
                let (key_type, key_len, desc, field) = match (family, source) {
                    (IpFamily::V4, true) => (TYPE_IPADDR, 4, 12, 11),
                    (IpFamily::V4, false) => (TYPE_IPADDR, 4, 12, 12),
                    (IpFamily::V6, true) => (TYPE_IP6ADDR, 16, 13, 8),
                    (IpFamily::V6, false) => (TYPE_IP6ADDR, 16, 13, 9),
                };
                self.begin(NEWSET, F_REQUEST | F_CREATE);
                self.table();
                self.buf.str_attr(2, &name);
                self.buf
                    .u32_attr(3, SET_ANONYMOUS | SET_CONSTANT | SET_INTERVAL);
                self.buf.u32_attr(4, key_type);
                self.buf.u32_attr(5, key_len);
                self.buf.u32_attr(10, id);
                self.buf.begin_nest(9);
                self.buf.u32_attr(1, elements.len() as u32);
                self.buf.end_nest();
                // Byte order, "merge elements", and typeof `ip saddr` / `ip daddr`.
                let mut ud = KEY_BIG_ENDIAN.to_vec();
                ud.extend_from_slice(&udata(2, &1u32.to_ne_bytes()));
                let mut payload = udata(0, &desc_u32(desc));
                payload.extend_from_slice(&udata(1, &desc_u32(field)));
                let mut typeof_key = udata(0, &7u32.to_ne_bytes());
                typeof_key.extend_from_slice(&udata(1, &payload));
                ud.extend_from_slice(&udata(3, &typeof_key));
                self.buf.bytes_attr(13, &ud);
                self.buf.end_msg();

                self.anon_elements(id, elements.len(), |buf, i| {
                    let (key, end) = &elements[i];
                    if *end {
                        buf.u32_attr(3, 1); // NFT_SET_ELEM_INTERVAL_END
                    }
                    buf.data_attr(1, 1, key);
                });
            }
            AnonSet::Verdicts(chains) => {
                self.begin(NEWSET, F_REQUEST | F_CREATE);
                self.table();
                self.buf.str_attr(2, &name);
                self.buf.u32_attr(3, SET_ANONYMOUS | SET_CONSTANT | SET_MAP);
                self.buf.u32_attr(4, TYPE_INTEGER);
                self.buf.u32_attr(5, 4);
                self.buf.u32_attr(6, TYPE_VERDICT);
                self.buf.u32_attr(7, 0);
                self.buf.u32_attr(10, id);
                self.buf.begin_nest(9);
                self.buf.u32_attr(1, chains.len() as u32);
                self.buf.end_nest();
                self.buf.bytes_attr(13, &NUMGEN_MAP);
                self.buf.end_msg();

                self.anon_elements(id, chains.len(), |buf, i| {
                    buf.data_attr(1, 1, &(i as u32).to_ne_bytes());
                    buf.begin_nest(2);
                    expr::goto_data(buf, &chains[i]);
                    buf.end_nest();
                });
            }
        }
        AnonRef { id, name }
    }

    /// The elements of the anonymous set `id` of this batch, one message:
    /// `element(buf, i)` writes element `i` inside its nest.
    fn anon_elements(&mut self, id: u32, count: usize, mut element: impl FnMut(&mut Buf, usize)) {
        self.begin(NEWSETELEM, F_REQUEST | F_CREATE);
        self.table();
        // By batch id only: given a name, the kernel first looks the set up by it,
        // walking the table's whole list of sets (the new set is last), once per
        // anonymous set (8% of a full load at 4,000 and 10,000 Services).
        self.buf.u32_attr(4, id);
        self.buf.begin_nest(3);
        for i in 0..count {
            self.buf.begin_nest(i as u16 + 1);
            element(&mut self.buf, i);
            self.buf.end_nest();
        }
        self.buf.end_nest();
        self.buf.end_msg();
    }

    fn element(&mut self, e: &Element) -> Result<(), Unsupported> {
        self.begin(NEWSETELEM, F_REQUEST | F_CREATE);
        self.table();
        self.buf.str_attr(2, e.set);
        self.buf.begin_nest(3);
        self.buf.begin_nest(1);
        self.buf.data_attr(1, 1, &key_bytes(&e.key));
        if let Some(v) = &e.value {
            self.buf.begin_nest(2);
            match v {
                Verdict::Goto(c) => expr::goto_data(&mut self.buf, c),
                Verdict::Drop => expr::drop_data(&mut self.buf),
            }
            self.buf.end_nest();
        }
        if let Some(c) = &e.comment {
            self.buf.bytes_attr(6, &comment(0, c));
        }
        self.buf.end_nest();
        self.buf.end_nest();
        self.buf.end_msg();
        Ok(())
    }
}

/// nft's proto-description and field numbers in its typeof records are host-order u32.
fn desc_u32(v: u32) -> [u8; 4] {
    v.to_ne_bytes()
}

/// A set key as the kernel stores it: each concatenated field padded to four bytes.
fn key_bytes(key: &Key) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    let proto_port = |v: &mut Vec<u8>, p: &Protocol, port: &u16| {
        v.extend_from_slice(&[expr::protocol_number(*p), 0, 0, 0]);
        let [hi, lo] = port.to_be_bytes();
        v.extend_from_slice(&[hi, lo, 0, 0]);
    };
    let addr = |v: &mut Vec<u8>, ip: &IpAddr| match ip {
        IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
    };
    match key {
        Key::Addr(ip) => addr(&mut v, ip),
        Key::ProtoPort(p, port) => proto_port(&mut v, p, port),
        Key::AddrProtoPort(ip, p, port) => {
            addr(&mut v, ip);
            proto_port(&mut v, p, port);
        }
    }
    v
}

/// Reads back a key as [`Key`]'s `Display` (and nft) spell it.
pub fn parse_key(text: &str) -> Result<Key, Unsupported> {
    let bad = || Unsupported(format!("element key {text:?}"));
    let proto = |s: &str| match s {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    };
    let parts: Vec<&str> = text.split(" . ").map(str::trim).collect();
    match parts.as_slice() {
        [a] => a.parse().map(Key::Addr).map_err(|_| bad()),
        [p, port] => Ok(Key::ProtoPort(
            proto(p).ok_or_else(bad)?,
            port.parse().map_err(|_| bad())?,
        )),
        [a, p, port] => Ok(Key::AddrProtoPort(
            a.parse().map_err(|_| bad())?,
            proto(p).ok_or_else(bad)?,
            port.parse().map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Rule;

    #[test]
    fn keys_round_trip_through_their_text() {
        for k in [
            Key::Addr("10.0.0.1".parse().unwrap()),
            Key::ProtoPort(Protocol::Udp, 53),
            Key::AddrProtoPort("fd00::1".parse().unwrap(), Protocol::Sctp, 3868),
        ] {
            assert_eq!(parse_key(&k.to_string()).unwrap(), k);
        }
        assert!(parse_key("10.0.0.1 . icmp . 1").is_err());
    }

    #[test]
    fn a_batch_is_framed_and_acks_only_its_last_message() {
        let mut tx = Transaction::new(Family(IpFamily::V4));
        tx.add_chain_name("c");
        tx.add_rule("c", &Rule::NumgenVmap(vec!["a".into(), "b".into()]));
        let b = encode(&tx, 100, &mut AnonNames::new(7)).unwrap();
        // begin, chain, anonymous map, its elements, rule, end.
        assert_eq!(
            b.seqs.iter().map(|s| s.1).collect::<Vec<_>>(),
            vec![0, 1, 1, 1]
        );
        assert_eq!(b.first_seq, 100);
        assert_eq!(b.last_seq, 104);
        let mut at = 0;
        let mut acked = Vec::new();
        while at < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[at..at + 4].try_into().unwrap()) as usize;
            let flags = u16::from_ne_bytes(b.bytes[at + 6..at + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(b.bytes[at + 8..at + 12].try_into().unwrap());
            if flags & F_ACK != 0 {
                acked.push(seq);
            }
            at += len;
        }
        assert_eq!(at, b.bytes.len());
        assert_eq!(acked, vec![104]);
        let mut raw = Transaction::new(Family(IpFamily::V4));
        raw.raw("add rule ip kube-proxy c counter");
        assert!(encode(&raw, 1, &mut AnonNames::new(7)).is_err());
    }
}
