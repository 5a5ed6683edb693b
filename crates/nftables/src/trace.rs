//! A virtual packet tracer over a [`Ruleset`], with the semantics of upstream's nftables
//! test tracer (`pkg/proxy/nftables/helpers_test.go`): the first packet of a new
//! connection goes through `filter-prerouting-pre-dnat`, `nat-prerouting` (a DNAT
//! changes the destination), then `filter-forward` and `filter-input`; a
//! `numgen` dispatch follows every branch, so a load-balanced Service reports all its
//! endpoints; `jump mark-for-masquerade` marks the packet for masquerade.
//!
//! Rules are typed, so matching needs no parsing.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use kpr_model::LocalDetector;

use crate::names::*;
use crate::objects::{Key, Rule, Verdict};
use crate::ruleset::Ruleset;

/// The packet to trace.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    /// Source address.
    pub source: IpAddr,
    /// Protocol.
    pub protocol: kpr_model::Protocol,
    /// Destination address.
    pub destination: IpAddr,
    /// Destination port.
    pub port: u16,
}

/// Where the packet ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Endpoints and/or verdicts joined by `", "` (empty: nothing terminal matched).
    pub output: String,
    /// Marked for masquerade.
    pub masquerade: bool,
    /// Rules that matched, for debugging.
    pub matched: Vec<String>,
}

struct Tracer<'a> {
    rs: &'a Ruleset,
    local: HashSet<IpAddr>,
    outputs: Vec<String>,
    masq: bool,
    matched: Vec<String>,
    depth: usize,
}

enum Flow {
    Continue,
    /// A terminal verdict or DNAT happened.
    Terminal,
    /// A goto finished: the calling chain stops too.
    Returned(bool),
}

fn in_any(nets: &[IpNet], ip: &IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

impl Tracer<'_> {
    fn is_local(&self, ip: &IpAddr) -> bool {
        self.local.contains(ip)
    }

    fn from_pod(d: &LocalDetector, src: &IpAddr) -> bool {
        match d {
            LocalDetector::Cidr(c) => c.contains(src),
            _ => false,
        }
    }

    fn lookup(&self, map: &str, key: &Key) -> Option<Verdict> {
        self.rs
            .elements
            .get(&(static_name(map), key.clone()))
            .and_then(|e| e.value.clone())
    }

    fn in_set(&self, set: &str, ip: &IpAddr) -> bool {
        self.rs
            .elements
            .contains_key(&(static_name(set), Key::Addr(*ip)))
    }

    fn verdict(&mut self, v: Verdict, p: &Packet) -> Flow {
        match v {
            Verdict::Drop => {
                self.outputs.push("DROP".into());
                Flow::Terminal
            }
            Verdict::Goto(c) => {
                let terminal = self.run(&c, p);
                Flow::Returned(terminal)
            }
        }
    }

    fn rule(&mut self, rule: &Rule, p: &Packet) -> Flow {
        use kpr_model::Protocol;
        let _ = Protocol::Tcp;
        match rule {
            Rule::CtNewJump(c) => {
                if self.run(c, p) {
                    return Flow::Terminal;
                }
                Flow::Continue
            }
            Rule::Jump(c) if c == MARK_FOR_MASQUERADE => {
                self.masq = true;
                Flow::Continue
            }
            Rule::Jump(c) => {
                if self.run(c, p) {
                    Flow::Terminal
                } else {
                    Flow::Continue
                }
            }
            Rule::Goto(c) => Flow::Returned(self.run(c, p)),
            Rule::RejectClusterIpPorts => {
                if self.in_set(CLUSTER_IPS, &p.destination) {
                    self.outputs.push("REJECT".into());
                    Flow::Terminal
                } else {
                    Flow::Continue
                }
            }
            Rule::DropUnallocated(cidrs) => {
                if in_any(cidrs, &p.destination) {
                    self.outputs.push("DROP".into());
                    Flow::Terminal
                } else {
                    Flow::Continue
                }
            }
            Rule::DestVmap(map) => {
                match self.lookup(map, &Key::AddrProtoPort(p.destination, p.protocol, p.port)) {
                    Some(v) => self.verdict(v, p),
                    None => Flow::Continue,
                }
            }
            Rule::NodePortVmap {
                map,
                via_set,
                fib_local,
            } => {
                let dst = p.destination;
                let ok = (!fib_local || self.is_local(&dst))
                    && if *via_set {
                        self.in_set(NODEPORT_IPS, &dst)
                    } else {
                        !dst.is_loopback()
                    };
                if !ok {
                    return Flow::Continue;
                }
                match self.lookup(map, &Key::ProtoPort(p.protocol, p.port)) {
                    Some(v) => self.verdict(v, p),
                    None => Flow::Continue,
                }
            }
            Rule::Reject => {
                self.outputs.push("REJECT".into());
                Flow::Terminal
            }
            Rule::MasqueradeClusterIp { ip, not_local } => {
                let applies = p.destination == *ip
                    && not_local
                        .as_ref()
                        .is_none_or(|d| !Self::from_pod(d, &p.source));
                if applies {
                    self.masq = true;
                }
                Flow::Continue
            }
            Rule::ShortCircuitPods(d, c) => {
                if Self::from_pod(d, &p.source) {
                    Flow::Returned(self.run(c, p))
                } else {
                    Flow::Continue
                }
            }
            Rule::MasqueradeLocal => {
                if self.is_local(&p.source) {
                    self.masq = true;
                }
                Flow::Continue
            }
            Rule::ShortCircuitLocal(c) => {
                if self.is_local(&p.source) {
                    Flow::Returned(self.run(c, p))
                } else {
                    Flow::Continue
                }
            }
            Rule::FirewallDrop(sources) => {
                let allowed = sources.iter().any(|s| {
                    s.parse::<IpNet>()
                        .map(|n| n.contains(&p.source))
                        .unwrap_or(false)
                        || s.parse::<IpAddr>().is_ok_and(|a| a == p.source)
                });
                if allowed {
                    Flow::Continue
                } else {
                    self.outputs.push("DROP".into());
                    Flow::Terminal
                }
            }
            // A new connection has no affinity yet.
            Rule::AffinityGoto { .. } | Rule::AffinityUpdate(_) => Flow::Continue,
            Rule::NumgenVmap(chains) => {
                for c in chains {
                    self.run(c, p);
                }
                Flow::Terminal
            }
            Rule::MasqueradeHairpin(ip) => {
                if p.source == *ip {
                    self.masq = true;
                }
                Flow::Continue
            }
            Rule::Dnat(_, ip, port) => {
                self.outputs.push(kpr_model::join_host_port(ip, *port));
                Flow::Terminal
            }
            Rule::MarkOr(_)
            | Rule::ReturnUnmarked(_)
            | Rule::MarkXor(_)
            | Rule::MasqueradeFullyRandom => Flow::Continue,
        }
    }

    /// Runs a chain; true if it ended in a terminal verdict.
    fn run(&mut self, chain: &str, p: &Packet) -> bool {
        self.depth += 1;
        if self.depth > 64 {
            self.outputs.push("LOOP".into());
            self.depth -= 1;
            return true;
        }
        let Some(c) = self.rs.chains.get(chain) else {
            self.depth -= 1;
            return false;
        };
        let fam = self.rs.family;
        let mut result = false;
        for rule in &c.rules {
            let before = (self.outputs.len(), self.masq);
            match self.rule(rule, p) {
                Flow::Continue => {
                    if (self.outputs.len(), self.masq) != before {
                        self.matched.push(format!("{chain}: {}", rule.text(fam)));
                    }
                }
                Flow::Terminal => {
                    self.matched.push(format!("{chain}: {}", rule.text(fam)));
                    result = true;
                    break;
                }
                Flow::Returned(t) => {
                    self.matched.push(format!("{chain}: {}", rule.text(fam)));
                    result = t;
                    break;
                }
            }
        }
        self.depth -= 1;
        result
    }
}

fn static_name(name: &str) -> &'static str {
    match name {
        CLUSTER_IPS => CLUSTER_IPS,
        NODEPORT_IPS => NODEPORT_IPS,
        FIREWALL_IPS => FIREWALL_IPS,
        NO_ENDPOINT_NODEPORTS => NO_ENDPOINT_NODEPORTS,
        NO_ENDPOINT_SERVICES => NO_ENDPOINT_SERVICES,
        SERVICE_IPS => SERVICE_IPS,
        SERVICE_NODEPORTS => SERVICE_NODEPORTS,
        _ => "",
    }
}

/// Traces `packet` through `rs`. `node_ips` are the node's addresses (`fib ... type
/// local`, together with loopback).
pub fn trace(rs: &Ruleset, node_ips: &[IpAddr], packet: &Packet) -> Outcome {
    let mut local: HashSet<IpAddr> = node_ips.iter().copied().collect();
    local.insert(IpAddr::from([127, 0, 0, 1]));
    local.insert(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]));
    let mut t = Tracer {
        rs,
        local,
        outputs: Vec::new(),
        masq: false,
        matched: Vec::new(),
        depth: 0,
    };
    if !t.run("filter-prerouting-pre-dnat", packet) {
        t.run("nat-prerouting", packet);
        let mut p = *packet;
        if let Some(first) = t.outputs.first()
            && let Ok(sa) = first.parse::<std::net::SocketAddr>()
        {
            p.destination = sa.ip();
        }
        if !t.run("filter-forward", &p) {
            t.run("filter-input", &p);
        }
    }
    Outcome {
        output: t.outputs.join(", "),
        masquerade: t.masq,
        matched: t.matched,
    }
}
