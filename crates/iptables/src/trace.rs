//! A virtual packet tracer over a rendered ruleset, like upstream's test tracer
//! (`iptablesTracer` in `pkg/proxy/iptables/proxier_test.go`): it follows a new
//! connection's first packet through nat `KUBE-SERVICES` and the filter chains, and
//! reports where it ends (endpoints, `ACCEPT`, `DROP`, `REJECT`) and whether it was
//! marked for masquerade. Probabilistic jumps are followed as "may go there", so a
//! load-balanced Service reports all its endpoints.
//!
//! It answers "what does this ruleset do to that packet" without a kernel: golden tests
//! use it to check behaviour as well as text.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::dump::{Dump, Rule, Value};
use crate::names::*;

/// The packet to trace.
#[derive(Clone, Debug)]
pub struct Packet<'a> {
    /// Source address.
    pub source: &'a str,
    /// Lower-case protocol (`tcp`, `udp`, `sctp`).
    pub protocol: &'a str,
    /// Destination address.
    pub destination: &'a str,
    /// Destination port.
    pub port: u16,
}

/// Where the packet ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Endpoints (`ip:port`) and/or verdicts, joined by `", "` as upstream prints them;
    /// empty if no Service rule matched.
    pub output: String,
    /// Marked for masquerade.
    pub masquerade: bool,
    /// The rules that matched, for debugging.
    pub matched: Vec<String>,
}

struct Tracer<'a> {
    dump: &'a Dump,
    local_ips: HashSet<IpAddr>,
    matched: Vec<String>,
    outputs: Vec<String>,
    masquerade: bool,
    depth: usize,
}

fn address_matches(v: &Value, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let matches = if v.value.contains('/') {
        v.value.parse::<IpNet>().is_ok_and(|n| n.contains(&ip))
    } else {
        v.value.parse::<IpAddr>().is_ok_and(|a| a == ip)
    };
    matches != v.negated
}

fn value_matches(v: &Value, actual: &str) -> bool {
    (v.value == actual) != v.negated
}

impl Tracer<'_> {
    fn rule_matches(&self, rule: &Rule, p: &Packet<'_>) -> bool {
        let addrtype = |ip: &str| {
            if ip
                .parse()
                .is_ok_and(|ip: IpAddr| self.local_ips.contains(&ip))
            {
                "LOCAL"
            } else {
                "not-matched"
            }
        };
        if rule
            .source
            .as_ref()
            .is_some_and(|v| !address_matches(v, p.source))
        {
            return false;
        }
        if rule
            .source_type
            .as_ref()
            .is_some_and(|v| !value_matches(v, addrtype(p.source)))
        {
            return false;
        }
        if rule
            .protocol
            .as_ref()
            .is_some_and(|v| !value_matches(v, p.protocol))
        {
            return false;
        }
        if rule
            .destination
            .as_ref()
            .is_some_and(|v| !address_matches(v, p.destination))
        {
            return false;
        }
        if rule
            .destination_type
            .as_ref()
            .is_some_and(|v| !value_matches(v, addrtype(p.destination)))
        {
            return false;
        }
        if rule
            .destination_port
            .as_ref()
            .is_some_and(|v| !value_matches(v, &p.port.to_string()))
        {
            return false;
        }
        // Rules checking history (affinity, marks, conntrack state) don't match a new
        // connection's first packet.
        !(rule.affinity_check || rule.mark_check || rule.ctstate_check)
    }

    fn run_chain(&mut self, table: &str, chain: &str, p: &Packet<'_>) -> bool {
        self.depth += 1;
        if self.depth > 64 {
            self.outputs.push("LOOP".into());
            return true;
        }
        let Some(c) = self.dump.chain(table, chain) else {
            self.depth -= 1;
            return false;
        };
        for rule in &c.rules {
            let Some(jump) = rule.jump.as_deref() else {
                continue;
            };
            if !self.rule_matches(rule, p) {
                continue;
            }
            self.matched.push(rule.raw.clone());
            match jump {
                KUBE_MARK_MASQ => {
                    self.masquerade = true;
                }
                "ACCEPT" | "REJECT" | "DROP" => {
                    self.outputs.push(jump.to_string());
                    self.depth -= 1;
                    return true;
                }
                "DNAT" => {
                    self.outputs
                        .push(rule.dnat_destination.clone().unwrap_or_default());
                    self.depth -= 1;
                    return true;
                }
                other => {
                    let terminated = self.run_chain(table, other, p);
                    if terminated && rule.probability.is_none() {
                        self.depth -= 1;
                        return true;
                    }
                }
            }
        }
        self.depth -= 1;
        false
    }
}

/// Traces `packet` through `dump`. `node_ips` are the node's addresses (matched by
/// `--src-type/--dst-type LOCAL`, together with 127.0.0.1 and ::1).
pub fn trace(dump: &Dump, node_ips: &[IpAddr], packet: &Packet<'_>) -> Outcome {
    let mut local_ips: HashSet<IpAddr> = node_ips.iter().copied().collect();
    local_ips.insert(IpAddr::from([127, 0, 0, 1]));
    local_ips.insert("::1".parse().unwrap_or(IpAddr::from([0u8; 16])));
    let mut t = Tracer {
        dump,
        local_ips,
        matched: Vec::new(),
        outputs: Vec::new(),
        masquerade: false,
        depth: 0,
    };
    // nat first (in the kernel PREROUTING/OUTPUT jump to KUBE-SERVICES).
    t.run_chain("nat", KUBE_SERVICES, packet);
    // A DNAT changes the destination later chains see.
    let destination = match t.outputs.first() {
        Some(first) => first
            .rsplit_once(':')
            .map(|(ip, _)| ip.trim_start_matches('[').trim_end_matches(']').to_string())
            .unwrap_or_else(|| packet.destination.to_string()),
        None => packet.destination.to_string(),
    };
    let filtered = Packet {
        destination: &destination,
        ..packet.clone()
    };
    for chain in [
        KUBE_SERVICES,
        KUBE_EXTERNAL_SERVICES,
        KUBE_NODEPORTS,
        KUBE_PROXY_FIREWALL,
    ] {
        t.run_chain("filter", chain, &filtered);
    }
    Outcome {
        output: t.outputs.join(", "),
        masquerade: t.masquerade,
        matched: t.matched,
    }
}
