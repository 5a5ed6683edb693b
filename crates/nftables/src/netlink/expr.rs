//! kube-proxy's rule shapes as nf_tables expressions: the same registers, loads,
//! comparisons and anonymous sets that nft 1.0.6 generates for the same rule text (read
//! from `strace` of `nft -f` and `nft --debug=netlink`), so a rule sent from here lists
//! exactly as one sent by `nft -f`. The kernel tests compare both listings.

use ipnet::IpNet;
use kpr_model::{IpFamily, LocalDetector, Protocol};

use super::Unsupported;
use super::anon::{AnonRef, addr_bytes, family_len, nets};
use super::attrs::Buf;
use crate::names::MARK_FOR_MASQUERADE;
use crate::objects::{Family, Rule};

// Expression list and expression attributes.
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;

// Verdict codes (negative values, sent as big-endian u32).
const NF_DROP: i32 = 0;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

// Registers: NFT_REG_1 is 16 bytes wide; NFT_REG32_00 is its first 4-byte part.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG32_00: u32 = 8;

const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;

const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_L4PROTO: u32 = 16;

const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;

/// `RTN_LOCAL`, the address type `fib ... type local` compares with (host order).
const RTN_LOCAL: u32 = 2;
const IFNAMSIZ: usize = 16;

/// A verdict: its code and target chain.
pub fn verdict(b: &mut Buf, code: i32, chain: Option<&str>) {
    b.begin_nest(DATA_VERDICT);
    b.u32_attr(VERDICT_CODE, code as u32);
    if let Some(c) = chain {
        b.str_attr(VERDICT_CHAIN, c);
    }
    b.end_nest();
}

/// `goto <chain>` as map data.
pub fn goto_data(b: &mut Buf, chain: &str) {
    verdict(b, NFT_GOTO, Some(chain));
}

/// `drop` as map data.
pub fn drop_data(b: &mut Buf) {
    verdict(b, NF_DROP, None);
}

/// The rule's comment, if it has one.
pub fn comment(rule: &Rule) -> Option<&'static str> {
    match rule {
        Rule::RejectClusterIpPorts => Some("Reject traffic to invalid ports of ClusterIPs"),
        Rule::DropUnallocated(_) => Some("Drop traffic to unallocated ClusterIPs"),
        Rule::ShortCircuitPods(..) => Some("short-circuit pod traffic"),
        Rule::MasqueradeLocal => Some("masquerade local traffic"),
        Rule::ShortCircuitLocal(_) => Some("short-circuit local traffic"),
        _ => None,
    }
}

/// Writes one rule's expressions (the contents of `NFTA_RULE_EXPRESSIONS`); `anon` is
/// the set [`anonymous_set`] asked for.
pub fn expressions(
    b: &mut Buf,
    fam: Family,
    rule: &Rule,
    anon: Option<&AnonRef>,
) -> Result<(), Unsupported> {
    let mut e = Exprs { b, fam: fam.0 };
    match rule {
        Rule::CtNewJump(c) => {
            e.ct_state(REG_1);
            e.bitwise_bool(REG_1, &8u32.to_ne_bytes(), &[0; 4], false);
            e.cmp(CMP_NEQ, &[0; 4]);
            e.verdict(NFT_JUMP, Some(c));
        }
        Rule::Jump(c) => e.verdict(NFT_JUMP, Some(c)),
        Rule::Goto(c) => e.verdict(NFT_GOTO, Some(c)),
        Rule::RejectClusterIpPorts => {
            e.addr(false, REG_1);
            e.lookup(crate::names::CLUSTER_IPS, None, false, false);
            e.reject();
        }
        Rule::DropUnallocated(cidrs) => {
            e.net_match(false, cidrs, false, anon)?;
            e.verdict(NF_DROP, None);
        }
        Rule::DestVmap(map) => {
            e.addr(false, REG_1);
            let (proto_reg, port_reg) = match e.fam {
                IpFamily::V4 => (REG32_00 + 1, REG32_00 + 2),
                IpFamily::V6 => (REG_2, REG32_00 + 5),
            };
            e.meta_load(META_L4PROTO, proto_reg);
            e.dport(port_reg);
            e.lookup(map, None, true, false);
        }
        Rule::NodePortVmap {
            map,
            via_set,
            fib_local,
        } => {
            if *fib_local {
                e.fib_local(false);
            }
            if *via_set {
                e.addr(false, REG_1);
                e.lookup(crate::names::NODEPORT_IPS, None, false, false);
            } else {
                // The same spelling the nft text uses.
                for loopback in nets(&[fam.loopback().to_string()])? {
                    e.prefix(false, &loopback, CMP_NEQ);
                }
            }
            e.meta_load(META_L4PROTO, REG_1);
            e.dport(REG32_00 + 1);
            e.lookup(map, None, true, false);
        }
        Rule::MarkOr(m) => {
            let m = mark(m)?;
            e.meta_load(META_MARK, REG_1);
            e.bitwise_bool(REG_1, &(!m).to_ne_bytes(), &m.to_ne_bytes(), true);
            e.meta_set(META_MARK, REG_1);
        }
        Rule::ReturnUnmarked(m) => {
            let m = mark(m)?;
            e.meta_load(META_MARK, REG_1);
            e.bitwise_bool(REG_1, &m.to_ne_bytes(), &[0; 4], true);
            e.cmp(CMP_EQ, &[0; 4]);
            e.verdict(NFT_RETURN, None);
        }
        Rule::MarkXor(m) => {
            let m = mark(m)?;
            e.meta_load(META_MARK, REG_1);
            e.bitwise_bool(REG_1, &u32::MAX.to_ne_bytes(), &m.to_ne_bytes(), true);
            e.meta_set(META_MARK, REG_1);
        }
        Rule::MasqueradeFullyRandom => e.masquerade_fully_random(),
        Rule::Reject => e.reject(),
        Rule::MasqueradeClusterIp { ip, not_local } => {
            e.addr(false, REG_1);
            e.cmp(CMP_EQ, &addr_bytes(ip));
            if let Some(d) = not_local {
                e.local(d, CMP_NEQ)?;
            }
            e.verdict(NFT_JUMP, Some(MARK_FOR_MASQUERADE));
        }
        Rule::ShortCircuitPods(d, c) => {
            e.local(d, CMP_EQ)?;
            e.verdict(NFT_GOTO, Some(c));
        }
        Rule::MasqueradeLocal => {
            e.fib_local(true);
            e.verdict(NFT_JUMP, Some(MARK_FOR_MASQUERADE));
        }
        Rule::ShortCircuitLocal(c) => {
            e.fib_local(true);
            e.verdict(NFT_GOTO, Some(c));
        }
        Rule::FirewallDrop(sources) => {
            e.net_match(true, &nets(sources)?, true, anon)?;
            e.verdict(NF_DROP, None);
        }
        Rule::AffinityGoto { set, chain } => {
            e.addr(true, REG_1);
            e.lookup(set, None, false, false);
            e.verdict(NFT_GOTO, Some(chain));
        }
        Rule::NumgenVmap(chains) => {
            let set = anon.ok_or_else(|| Unsupported("numgen map without its set".into()))?;
            e.numgen(chains.len() as u32);
            e.lookup(&set.name, Some(set.id), true, false);
        }
        Rule::MasqueradeHairpin(ep) => {
            e.addr(true, REG_1);
            e.cmp(CMP_EQ, &addr_bytes(ep));
            e.verdict(NFT_JUMP, Some(MARK_FOR_MASQUERADE));
        }
        Rule::AffinityUpdate(set) => {
            e.addr(true, REG_1);
            e.dynset_update(set);
        }
        Rule::Dnat(p, addr, port) => {
            e.meta_load(META_L4PROTO, REG_1);
            e.cmp(CMP_EQ, &[protocol_number(*p)]);
            e.immediate(REG_1, &addr_bytes(addr));
            e.immediate(REG_2, &port.to_be_bytes());
            e.dnat();
        }
    }
    Ok(())
}

/// The IANA protocol number nft's `inet_proto` keys and `meta l4proto` use.
pub fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn mark(m: &str) -> Result<u32, Unsupported> {
    let parsed = match m.strip_prefix("0x").or_else(|| m.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => m.parse(),
    };
    parsed.map_err(|_| Unsupported(format!("mark {m:?}")))
}

struct Exprs<'a> {
    b: &'a mut Buf,
    fam: IpFamily,
}

impl Exprs<'_> {
    fn begin(&mut self, name: &str) {
        self.b.begin_nest(LIST_ELEM);
        self.b.str_attr(EXPR_NAME, name);
        self.b.begin_nest(EXPR_DATA);
    }

    fn end(&mut self) {
        self.b.end_nest();
        self.b.end_nest();
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32, dreg: u32) {
        self.begin("payload");
        self.b.u32_attr(1, dreg);
        self.b.u32_attr(2, base);
        self.b.u32_attr(3, offset);
        self.b.u32_attr(4, len);
        self.end();
    }

    fn addr_offset(&self, source: bool) -> u32 {
        match (self.fam, source) {
            (IpFamily::V4, true) => 12,
            (IpFamily::V4, false) => 16,
            (IpFamily::V6, true) => 8,
            (IpFamily::V6, false) => 24,
        }
    }

    /// `ip saddr` / `ip daddr` (or ip6) into `reg`.
    fn addr(&mut self, source: bool, reg: u32) {
        let len = family_len(self.fam) as u32;
        let offset = self.addr_offset(source);
        self.payload(BASE_NETWORK, offset, len, reg);
    }

    /// `th dport` into `reg`.
    fn dport(&mut self, reg: u32) {
        self.payload(BASE_TRANSPORT, 2, 2, reg);
    }

    fn cmp(&mut self, op: u32, value: &[u8]) {
        self.begin("cmp");
        self.b.u32_attr(1, REG_1);
        self.b.u32_attr(2, op);
        self.b.data_attr(3, DATA_VALUE, value);
        self.end();
    }

    fn bitwise_bool(&mut self, reg: u32, mask: &[u8], xor: &[u8], with_op: bool) {
        self.begin("bitwise");
        self.b.u32_attr(1, reg);
        self.b.u32_attr(2, reg);
        if with_op {
            self.b.u32_attr(6, 0);
        }
        self.b.u32_attr(3, mask.len() as u32);
        self.b.data_attr(4, DATA_VALUE, mask);
        self.b.data_attr(5, DATA_VALUE, xor);
        self.end();
    }

    /// `<addr> op <net>`: a byte-aligned prefix loads and compares only its bytes;
    /// any other prefix loads the address and masks it first.
    fn prefix(&mut self, source: bool, net: &IpNet, op: u32) {
        let len = family_len(self.fam);
        let bits = usize::from(net.prefix_len());
        let network = addr_bytes(&net.network());
        let offset = self.addr_offset(source);
        if bits % 8 == 0 && bits > 0 {
            self.payload(BASE_NETWORK, offset, (bits / 8) as u32, REG_1);
            self.cmp(op, &network[..bits / 8]);
        } else {
            self.payload(BASE_NETWORK, offset, len as u32, REG_1);
            let mask = addr_bytes(&net.netmask());
            self.bitwise_bool(REG_1, &mask, &vec![0; len], false);
            self.cmp(op, &network);
        }
    }

    /// `<addr> [!=] { nets }`: one element is a plain comparison (as nft optimises it),
    /// more are a lookup in the anonymous interval set `anon`.
    fn net_match(
        &mut self,
        source: bool,
        nets: &[IpNet],
        negate: bool,
        anon: Option<&AnonRef>,
    ) -> Result<(), Unsupported> {
        match nets {
            [] => Err(Unsupported("an empty set of ranges".into())),
            [one] => {
                self.prefix(source, one, if negate { CMP_NEQ } else { CMP_EQ });
                Ok(())
            }
            _ => {
                let set =
                    anon.ok_or_else(|| Unsupported("a set of ranges without its set".into()))?;
                self.addr(source, REG_1);
                self.lookup(&set.name, Some(set.id), false, negate);
                Ok(())
            }
        }
    }

    fn lookup(&mut self, set: &str, id: Option<u32>, verdict_map: bool, invert: bool) {
        self.begin("lookup");
        self.b.u32_attr(2, REG_1);
        if verdict_map {
            self.b.u32_attr(3, REG_VERDICT);
        }
        self.b.str_attr(1, set);
        if let Some(id) = id {
            self.b.u32_attr(4, id);
        }
        if invert {
            self.b.u32_attr(5, 1);
        }
        self.end();
    }

    fn meta_load(&mut self, key: u32, reg: u32) {
        self.begin("meta");
        self.b.u32_attr(2, key);
        self.b.u32_attr(1, reg);
        self.end();
    }

    fn meta_set(&mut self, key: u32, reg: u32) {
        self.begin("meta");
        self.b.u32_attr(2, key);
        self.b.u32_attr(3, reg);
        self.end();
    }

    fn ct_state(&mut self, reg: u32) {
        self.begin("ct");
        self.b.u32_attr(2, 0);
        self.b.u32_attr(1, reg);
        self.end();
    }

    /// `fib saddr|daddr type local`.
    fn fib_local(&mut self, source: bool) {
        self.begin("fib");
        self.b.u32_attr(3, if source { 1 } else { 2 });
        self.b.u32_attr(2, 3); // NFT_FIB_RESULT_ADDRTYPE
        self.b.u32_attr(1, REG_1);
        self.end();
        self.cmp(CMP_EQ, &RTN_LOCAL.to_ne_bytes());
    }

    /// `iifname [!=] <name>` / `<prefix>*`, or the pod CIDR.
    fn local(&mut self, d: &LocalDetector, op: u32) -> Result<(), Unsupported> {
        match d {
            LocalDetector::None => Ok(()),
            LocalDetector::Cidr(c) => {
                self.prefix(true, c, op);
                Ok(())
            }
            LocalDetector::BridgeInterface(name) => {
                if name.len() >= IFNAMSIZ {
                    return Err(Unsupported(format!("interface name {name:?}")));
                }
                let mut v = name.as_bytes().to_vec();
                v.resize(IFNAMSIZ, 0);
                self.meta_load(META_IIFNAME, REG_1);
                self.cmp(op, &v);
                Ok(())
            }
            LocalDetector::InterfaceNamePrefix(prefix) => {
                if prefix.is_empty() || prefix.len() >= IFNAMSIZ {
                    return Err(Unsupported(format!("interface prefix {prefix:?}")));
                }
                self.meta_load(META_IIFNAME, REG_1);
                self.cmp(op, prefix.as_bytes());
                Ok(())
            }
        }
    }

    /// An immediate verdict (`jump`/`goto` name a chain).
    fn verdict(&mut self, code: i32, chain: Option<&str>) {
        self.begin("immediate");
        self.b.u32_attr(1, REG_VERDICT);
        self.b.begin_nest(2);
        verdict(self.b, code, chain);
        self.b.end_nest();
        self.end();
    }

    fn immediate(&mut self, reg: u32, value: &[u8]) {
        self.begin("immediate");
        self.b.u32_attr(1, reg);
        self.b.data_attr(2, DATA_VALUE, value);
        self.end();
    }

    /// `reject` (ICMP port unreachable, or its ICMPv6 form).
    fn reject(&mut self) {
        self.begin("reject");
        self.b.u32_attr(1, 0); // NFT_REJECT_ICMP_UNREACH
        let code: u8 = match self.fam {
            IpFamily::V4 => 3,
            IpFamily::V6 => 4,
        };
        self.b.bytes_attr(2, &[code]);
        self.end();
    }

    fn masquerade_fully_random(&mut self) {
        self.begin("masq");
        self.b.u32_attr(1, 0x10); // NF_NAT_RANGE_PROTO_RANDOM_FULLY
        self.end();
    }

    fn numgen(&mut self, modulus: u32) {
        self.begin("numgen");
        self.b.u32_attr(1, REG_1);
        self.b.u32_attr(2, modulus);
        self.b.u32_attr(3, 1); // NFT_NG_RANDOM
        self.b.u32_attr(4, 0);
        self.end();
    }

    fn dynset_update(&mut self, set: &str) {
        self.begin("dynset");
        self.b.u32_attr(4, REG_1);
        self.b.u32_attr(3, 1); // NFT_DYNSET_OP_UPDATE
        self.b.str_attr(1, set);
        self.end();
    }

    fn dnat(&mut self) {
        self.begin("nat");
        self.b.u32_attr(1, 1); // NFT_NAT_DNAT
        self.b.u32_attr(
            2,
            match self.fam {
                IpFamily::V4 => 2,
                IpFamily::V6 => 10,
            },
        );
        self.b.u32_attr(3, REG_1);
        self.b.u32_attr(5, REG_2);
        self.b.u32_attr(7, 2); // NF_NAT_RANGE_PROTO_SPECIFIED
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_parse_in_hex_and_decimal() {
        assert_eq!(mark("0x4000").unwrap(), 0x4000);
        assert_eq!(mark("16384").unwrap(), 0x4000);
        assert!(mark("0xzz").is_err());
    }
}
