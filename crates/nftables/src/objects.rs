//! Typed nftables objects: the chains, sets, maps, elements and rule shapes kube-proxy
//! uses, with their `nft` syntax produced at the end (as knftables writes it). Each
//! rule shape is an enum variant, so renderers, the packet tracer and appliers work on
//! structure, not on strings.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use ipnet::IpNet;
use kpr_model::{IpFamily, LocalDetector, Protocol};

/// The nft family word and the address words of one IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Family(pub IpFamily);

impl Family {
    /// `ip` / `ip6` (table family and address match keyword).
    pub fn word(self) -> &'static str {
        match self.0 {
            IpFamily::V4 => "ip",
            IpFamily::V6 => "ip6",
        }
    }

    /// `ipv4_addr` / `ipv6_addr`.
    pub fn addr_type(self) -> &'static str {
        match self.0 {
            IpFamily::V4 => "ipv4_addr",
            IpFamily::V6 => "ipv6_addr",
        }
    }

    /// The loopback range excluded from NodePorts (`127.0.0.0/8` / `::1`).
    pub fn loopback(self) -> &'static str {
        match self.0 {
            IpFamily::V4 => "127.0.0.0/8",
            IpFamily::V6 => "::1",
        }
    }
}

/// A base chain's hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `filter` or `nat`.
    pub kind: &'static str,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: &'static str,
    /// Numeric priority.
    pub priority: i32,
}

/// A chain and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Name.
    pub name: String,
    /// Hook, for base chains.
    pub hook: Option<Hook>,
    /// Comment.
    pub comment: Option<&'static str>,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

impl Chain {
    /// A regular chain.
    pub fn new(name: impl Into<String>, rules: Vec<Rule>) -> Self {
        Self {
            name: name.into(),
            hook: None,
            comment: None,
            rules,
        }
    }
}

/// A set or map key type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// An address.
    Addr,
    /// `inet_proto . inet_service`.
    ProtoPort,
    /// `<addr> . inet_proto . inet_service`.
    AddrProtoPort,
}

/// A set, or a verdict map when `verdict_map` is true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// Name.
    pub name: String,
    /// Key type.
    pub key: KeyType,
    /// `: verdict` values (a map).
    pub verdict_map: bool,
    /// `flags dynamic,timeout` with this timeout in seconds (affinity sets).
    pub timeout: Option<u32>,
    /// Comment.
    pub comment: Option<&'static str>,
}

/// A set or map element key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// An address.
    Addr(IpAddr),
    /// Protocol and port.
    ProtoPort(Protocol, u16),
    /// Address, protocol and port.
    AddrProtoPort(IpAddr, Protocol, u16),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Addr(ip) => write!(f, "{ip}"),
            Key::ProtoPort(p, port) => write!(f, "{} . {port}", p.as_lower()),
            Key::AddrProtoPort(ip, p, port) => write!(f, "{ip} . {} . {port}", p.as_lower()),
        }
    }
}

/// A verdict-map value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `goto <chain>`.
    Goto(String),
    /// `drop`.
    Drop,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Drop => f.write_str("drop"),
        }
    }
}

/// An element of a set or map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// The set or map.
    pub set: &'static str,
    /// Key.
    pub key: Key,
    /// Value (maps only).
    pub value: Option<Verdict>,
    /// Comment (upstream sets one on no-endpoint elements: the Service port name).
    pub comment: Option<String>,
}

/// The rule shapes kube-proxy's nftables mode writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `ct state new jump <chain>`.
    CtNewJump(&'static str),
    /// `jump <chain>`.
    Jump(String),
    /// `goto <chain>`.
    Goto(String),
    /// `<ip> daddr @cluster-ips reject comment "..."`.
    RejectClusterIpPorts,
    /// `<ip> daddr { cidrs } drop comment "..."`.
    DropUnallocated(Vec<IpNet>),
    /// `<ip> daddr . meta l4proto . th dport vmap @<map>`.
    DestVmap(&'static str),
    /// NodePort dispatch through `<map>`: `<ip> daddr @nodeport-ips ...` when
    /// `fib_local` is false and `via_set`, `<ip> daddr != <loopback> ...` when not
    /// `via_set`; `fib daddr type local` is prepended when `fib_local`.
    NodePortVmap {
        /// The verdict map.
        map: &'static str,
        /// Match `@nodeport-ips` (else: every local address but loopback).
        via_set: bool,
        /// Prefix `fib daddr type local` (match-all NodePort dispatch).
        fib_local: bool,
    },
    /// `mark set mark or <mark>`.
    MarkOr(String),
    /// `mark and <mark> == 0 return`.
    ReturnUnmarked(String),
    /// `mark set mark xor <mark>`.
    MarkXor(String),
    /// `masquerade fully-random`.
    MasqueradeFullyRandom,
    /// `reject`.
    Reject,
    /// `<ip> daddr <cluster ip> [<not local>] jump mark-for-masquerade`.
    MasqueradeClusterIp {
        /// The ClusterIP.
        ip: IpAddr,
        /// Traffic not from local pods only (None: all traffic, `masqueradeAll`).
        not_local: Option<LocalDetector>,
    },
    /// `<local> goto <chain> comment "short-circuit pod traffic"`.
    ShortCircuitPods(LocalDetector, String),
    /// `fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"`.
    MasqueradeLocal,
    /// `fib saddr type local goto <chain> comment "short-circuit local traffic"`.
    ShortCircuitLocal(String),
    /// `<ip> saddr != { a , b } drop` (load-balancer source ranges).
    FirewallDrop(Vec<String>),
    /// `<ip> saddr @<set> goto <chain>` (session affinity).
    AffinityGoto {
        /// Affinity set.
        set: String,
        /// Endpoint chain.
        chain: String,
    },
    /// `numgen random mod N vmap { 0 : goto a , 1 : goto b }`.
    NumgenVmap(Vec<String>),
    /// `<ip> saddr <endpoint> jump mark-for-masquerade` (hairpin).
    MasqueradeHairpin(IpAddr),
    /// `update @<set> { <ip> saddr }`.
    AffinityUpdate(String),
    /// `meta l4proto <proto> dnat to <ip>:<port>`.
    Dnat(Protocol, IpAddr, u16),
}

/// The nft spelling of a local traffic detector, positive or negated.
pub fn local_match(d: &LocalDetector, fam: Family, negate: bool) -> Option<String> {
    let not = if negate { "!= " } else { "" };
    match d {
        LocalDetector::None => None,
        LocalDetector::Cidr(c) => Some(format!("{} saddr {not}{c}", fam.word())),
        LocalDetector::BridgeInterface(b) => Some(format!("iifname {not}{b}")),
        LocalDetector::InterfaceNamePrefix(p) => Some(format!("iifname {not}{p}*")),
    }
}

impl Rule {
    /// The rule in nft syntax (what follows `add rule <family> <table> <chain>`).
    pub fn text(&self, fam: Family) -> String {
        let ip = fam.word();
        match self {
            Rule::CtNewJump(c) => format!("ct state new jump {c}"),
            Rule::Jump(c) => format!("jump {c}"),
            Rule::Goto(c) => format!("goto {c}"),
            Rule::RejectClusterIpPorts => format!(
                "{ip} daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""
            ),
            Rule::DropUnallocated(cidrs) => {
                let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                format!(
                    "{ip} daddr {{ {} }} drop comment \"Drop traffic to unallocated ClusterIPs\"",
                    list.join(",")
                )
            }
            Rule::DestVmap(m) => format!("{ip} daddr . meta l4proto . th dport vmap @{m}"),
            Rule::NodePortVmap {
                map,
                via_set,
                fib_local,
            } => {
                let mut s = String::new();
                if *fib_local {
                    s.push_str("fib daddr type local ");
                }
                if *via_set {
                    let _ = write!(s, "{ip} daddr @nodeport-ips ");
                } else {
                    let _ = write!(s, "{ip} daddr != {} ", fam.loopback());
                }
                let _ = write!(s, "meta l4proto . th dport vmap @{map}");
                s
            }
            Rule::MarkOr(m) => format!("mark set mark or {m}"),
            Rule::ReturnUnmarked(m) => format!("mark and {m} == 0 return"),
            Rule::MarkXor(m) => format!("mark set mark xor {m}"),
            Rule::MasqueradeFullyRandom => "masquerade fully-random".into(),
            Rule::Reject => "reject".into(),
            Rule::MasqueradeClusterIp { ip: cip, not_local } => {
                match not_local.as_ref().and_then(|d| local_match(d, fam, true)) {
                    Some(m) => format!("{ip} daddr {cip} {m} jump mark-for-masquerade"),
                    None => format!("{ip} daddr {cip} jump mark-for-masquerade"),
                }
            }
            Rule::ShortCircuitPods(d, c) => format!(
                "{} goto {c} comment \"short-circuit pod traffic\"",
                local_match(d, fam, false).unwrap_or_default()
            ),
            Rule::MasqueradeLocal => {
                "fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\""
                    .into()
            }
            Rule::ShortCircuitLocal(c) => {
                format!("fib saddr type local goto {c} comment \"short-circuit local traffic\"")
            }
            Rule::FirewallDrop(sources) => {
                format!("{ip} saddr != {{ {} }} drop", sources.join(" , "))
            }
            Rule::AffinityGoto { set, chain } => format!("{ip} saddr @{set} goto {chain}"),
            Rule::NumgenVmap(chains) => {
                let arms: Vec<String> = chains
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{i} : goto {c}"))
                    .collect();
                format!(
                    "numgen random mod {} vmap {{ {} }}",
                    chains.len(),
                    arms.join(" , ")
                )
            }
            Rule::MasqueradeHairpin(ep) => format!("{ip} saddr {ep} jump mark-for-masquerade"),
            Rule::AffinityUpdate(set) => format!("update @{set} {{ {ip} saddr }}"),
            Rule::Dnat(p, addr, port) => {
                let to = kpr_model::join_host_port(addr, *port);
                format!("meta l4proto {} dnat to {to}", p.as_lower())
            }
        }
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// `add chain ...` for a chain (without its rules).
pub fn chain_decl(fam: Family, c: &Chain) -> String {
    let mut s = format!(
        "add chain {} {} {}",
        fam.word(),
        crate::names::TABLE,
        c.name
    );
    match (&c.hook, &c.comment) {
        (Some(h), _) => {
            let _ = write!(
                s,
                " {{ type {} hook {} priority {} ; }}",
                h.kind, h.hook, h.priority
            );
        }
        (None, Some(comment)) => {
            let _ = write!(s, " {{ comment {} ; }}", quoted(comment));
        }
        (None, None) => {}
    }
    s
}

/// `add set ...` / `add map ...` for a set.
pub fn set_decl(fam: Family, set: &Set) -> String {
    let key = match set.key {
        KeyType::Addr => fam.addr_type().to_string(),
        KeyType::ProtoPort => "inet_proto . inet_service".into(),
        KeyType::AddrProtoPort => format!("{} . inet_proto . inet_service", fam.addr_type()),
    };
    let what = if set.verdict_map { "map" } else { "set" };
    let mut s = format!(
        "add {what} {} {} {} {{ type {key}",
        fam.word(),
        crate::names::TABLE,
        set.name
    );
    if set.verdict_map {
        s.push_str(" : verdict");
    }
    s.push_str(" ;");
    if let Some(t) = set.timeout {
        let _ = write!(s, " flags dynamic,timeout ; timeout {t}s ;");
    }
    if let Some(c) = set.comment {
        let _ = write!(s, " comment {} ;", quoted(c));
    }
    s.push_str(" }");
    s
}

/// `add element ...` for an element.
pub fn element_text(fam: Family, verb: &str, e: &Element) -> String {
    let mut s = format!(
        "{verb} element {} {} {} {{ {}",
        fam.word(),
        crate::names::TABLE,
        e.set,
        e.key
    );
    if verb == "add" {
        if let Some(c) = &e.comment {
            let _ = write!(s, " comment {}", quoted(c));
        }
        if let Some(v) = &e.value {
            let _ = write!(s, " : {v}");
        }
    }
    s.push_str(" }");
    s
}
