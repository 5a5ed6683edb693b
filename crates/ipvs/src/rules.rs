//! The iptables side of IPVS mode: eleven chains in nat and filter, rewritten as a
//! whole by one `iptables-restore --noflush` per sync, and the jump rules into them
//! from the built-in chains (upstream `writeIptablesRules`, `iptablesJumpChain`).

use std::fmt::Write as _;

use kpr_iptables::apply::{JumpRule, jump};
use kpr_iptables::config::IptablesMatch;
use kpr_model::IpFamily;

use crate::plan::PlanConfig;
use crate::sets::{Set, SetEntries};
use crate::types::ServiceKey;

/// The nat chains, in upstream's order.
pub const NAT_CHAINS: [&str; 5] = [
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
];

/// The filter chains, in upstream's order.
pub const FILTER_CHAINS: [&str; 6] = [
    "KUBE-FORWARD",
    "KUBE-NODE-PORT",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
];

/// The jump rules from the built-in chains, in upstream's order (each missing one
/// is inserted first in its chain).
pub const JUMPS: [JumpRule; 9] = [
    jump(
        "nat",
        "KUBE-SERVICES",
        "OUTPUT",
        "kubernetes service portals",
        false,
    ),
    jump(
        "nat",
        "KUBE-SERVICES",
        "PREROUTING",
        "kubernetes service portals",
        false,
    ),
    jump(
        "nat",
        "KUBE-POSTROUTING",
        "POSTROUTING",
        "kubernetes postrouting rules",
        false,
    ),
    jump(
        "filter",
        "KUBE-FORWARD",
        "FORWARD",
        "kubernetes forwarding rules",
        false,
    ),
    jump(
        "filter",
        "KUBE-NODE-PORT",
        "INPUT",
        "kubernetes health check rules",
        false,
    ),
    jump(
        "filter",
        "KUBE-PROXY-FIREWALL",
        "INPUT",
        "kube-proxy firewall rules",
        false,
    ),
    jump(
        "filter",
        "KUBE-PROXY-FIREWALL",
        "FORWARD",
        "kube-proxy firewall rules",
        false,
    ),
    jump(
        "filter",
        "KUBE-IPVS-FILTER",
        "INPUT",
        "kubernetes ipvs access filter",
        false,
    ),
    jump(
        "filter",
        "KUBE-IPVS-OUT-FILTER",
        "OUTPUT",
        "kubernetes ipvs access filter",
        false,
    ),
];

struct Writer<'a> {
    nat: String,
    filter: String,
    sets: &'a SetEntries,
    family: IpFamily,
}

impl Writer<'_> {
    fn name(&self, set: Set) -> String {
        set.name(self.family)
    }

    fn has(&self, set: Set) -> bool {
        self.sets.get(&set).is_some_and(|e| !e.is_empty())
    }

    /// `-m comment --comment "<set comment>" -m set --match-set <set>`.
    fn matching(&self, set: Set) -> String {
        format!(
            "-m comment --comment \"{}\" -m set --match-set {}",
            set.comment(),
            self.name(set)
        )
    }
}

/// The restore input for one family's chains (upstream's write order; only the order
/// within each chain matters to the kernel).
pub fn iptables_rules(sets: &SetEntries, out_filter: &[ServiceKey], config: &PlanConfig) -> String {
    let mut w = Writer {
        nat: String::new(),
        filter: String::new(),
        sets,
        family: config.family,
    };
    let mark = &config.masquerade_mark;
    let loopback = match config.family {
        IpFamily::V4 => "127.0.0.0/8",
        IpFamily::V6 => "::1/128",
    };
    let _ = writeln!(w.nat, "-A KUBE-SERVICES -s {loopback} -j RETURN");
    if w.has(Set::LoopBack) {
        let m = w.matching(Set::LoopBack);
        let _ = writeln!(w.nat, "-A KUBE-POSTROUTING {m} dst,dst,src -j MASQUERADE");
    }
    if w.has(Set::LoadBalancer) {
        let m = w.matching(Set::LoadBalancer);
        let _ = writeln!(w.nat, "-A KUBE-SERVICES {m} dst,dst -j KUBE-LOAD-BALANCER");
    }
    if w.has(Set::LoadBalancerLocal) {
        let m = w.matching(Set::LoadBalancerLocal);
        let _ = writeln!(w.nat, "-A KUBE-LOAD-BALANCER {m} dst,dst -j RETURN");
    }
    for (proto, local, all, dirs) in [
        ("tcp", Set::NodePortLocalTcp, Set::NodePortTcp, "dst"),
        ("udp", Set::NodePortLocalUdp, Set::NodePortUdp, "dst"),
        ("sctp", Set::NodePortLocalSctp, Set::NodePortSctp, "dst,dst"),
    ] {
        if w.has(local) {
            let m = w.matching(local);
            let _ = writeln!(w.nat, "-A KUBE-NODE-PORT -p {proto} {m} {dirs} -j RETURN");
        }
        if w.has(all) {
            let m = w.matching(all);
            let _ = writeln!(
                w.nat,
                "-A KUBE-NODE-PORT -p {proto} {m} {dirs} -j KUBE-MARK-MASQ"
            );
        }
    }
    if w.has(Set::LoadBalancerFw) {
        let m = w.matching(Set::LoadBalancerFw);
        let _ = writeln!(
            w.filter,
            "-A KUBE-PROXY-FIREWALL {m} dst,dst -j KUBE-SOURCE-RANGES-FIREWALL"
        );
    }
    for set in [Set::LoadBalancerSourceCidr, Set::LoadBalancerSourceIp] {
        if w.has(set) {
            let m = w.matching(set);
            let _ = writeln!(
                w.filter,
                "-A KUBE-SOURCE-RANGES-FIREWALL {m} dst,dst,src -j RETURN"
            );
        }
    }
    if w.has(Set::ClusterIp) {
        let m = w.matching(Set::ClusterIp);
        let tail = if config.masquerade_all {
            "dst,dst".to_string()
        } else if let Some(not_local) = config.local_detector.if_not_local() {
            format!("dst,dst {not_local}")
        } else {
            "src,dst".to_string()
        };
        let _ = writeln!(w.nat, "-A KUBE-SERVICES {m} {tail} -j KUBE-MARK-MASQ");
    }
    if w.has(Set::ExternalIp) {
        let m = w.matching(Set::ExternalIp);
        let _ = writeln!(w.nat, "-A KUBE-SERVICES {m} dst,dst -j KUBE-MARK-MASQ");
    }
    for set in [Set::ExternalIp, Set::ExternalIpLocal] {
        if w.has(set) {
            let m = w.matching(set);
            let _ = writeln!(
                w.nat,
                "-A KUBE-SERVICES {m} dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
            );
            let _ = writeln!(
                w.nat,
                "-A KUBE-SERVICES {m} dst,dst -m addrtype --dst-type LOCAL -j ACCEPT"
            );
        }
    }
    let _ = writeln!(
        w.nat,
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT"
    );
    let _ = writeln!(w.nat, "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ");
    let _ = writeln!(w.filter, "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP");
    for key in out_filter {
        let _ = writeln!(
            w.filter,
            "-A KUBE-IPVS-OUT-FILTER -s {ip} -m ipvs --vaddr {ip} --vproto {} --vport {} -j DROP",
            key.protocol.as_lower(),
            key.port,
            ip = key.address,
        );
    }
    for set in [Set::ClusterIp, Set::LoadBalancer] {
        if w.has(set) {
            let name = w.name(set);
            let _ = writeln!(
                w.nat,
                "-A KUBE-SERVICES -m set --match-set {name} dst,dst -j ACCEPT"
            );
        }
    }
    let _ = writeln!(
        w.filter,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    );
    let _ = writeln!(
        w.filter,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let m = w.matching(Set::HealthCheckNodePort);
    let _ = writeln!(w.filter, "-A KUBE-NODE-PORT {m} dst -j ACCEPT");
    for (set, dirs) in [
        (Set::LoadBalancer, "dst,dst"),
        (Set::ClusterIp, "dst,dst"),
        (Set::ExternalIp, "dst,dst"),
        (Set::ExternalIpLocal, "dst,dst"),
        (Set::HealthCheckNodePort, "dst"),
    ] {
        let name = w.name(set);
        let _ = writeln!(
            w.filter,
            "-A KUBE-IPVS-FILTER -m set --match-set {name} {dirs} -j RETURN"
        );
    }
    let ips = w.name(Set::IpvsIps);
    let _ = writeln!(
        w.filter,
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {ips} dst -j REJECT"
    );
    let _ = writeln!(
        w.nat,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    );
    let _ = writeln!(w.nat, "-A KUBE-POSTROUTING -j MARK --xor-mark {mark}");
    let _ = writeln!(
        w.nat,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}",
        if config.random_fully {
            " --random-fully"
        } else {
            ""
        }
    );
    let _ = writeln!(w.nat, "-A KUBE-MARK-MASQ -j MARK --or-mark {mark}");

    let mut out = String::from("*nat\n");
    for c in NAT_CHAINS {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out.push_str(&w.nat);
    out.push_str("COMMIT\n*filter\n");
    for c in FILTER_CHAINS {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out.push_str(&w.filter);
    out.push_str("COMMIT\n");
    out
}
