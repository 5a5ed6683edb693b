//! Reading back what our rules do for each Service frontend: the programmed side of
//! `kube-proxy-rs show` (see [`kpr_model::view`]).
//!
//! From an `iptables-save` dump of the nat and filter tables: every rule of
//! `KUBE-SERVICES` and `KUBE-NODEPORTS` (nat) that jumps to a Service chain is a
//! frontend, and its backends are found by following `KUBE-FW-*` → `KUBE-EXT-*` →
//! `KUBE-SVC-*`/`KUBE-SVL-*` → `KUBE-SEP-*` to the DNAT target, with each
//! endpoint's share of new connections computed from the `statistic` probabilities.
//! The filter table's "has no endpoints" REJECT and "has no local endpoints" DROP
//! rules give the frontends that do not forward.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kpr_model::view::{Backend, Frontend, FrontendKey, FrontendKind, Verdict, set_not_forwarding};
use kpr_model::{IpFamily, Protocol};

use crate::dump::{Dump, Rule, split_words};

/// Service chains are at most this deep (FW → EXT → SVC → SEP).
const MAX_DEPTH: usize = 5;

/// The frontends a dump (nat and filter tables of one family) programs, sorted by key.
pub fn frontends(family: IpFamily, dump: &Dump) -> Vec<Frontend> {
    let mut out: BTreeMap<FrontendKey, Frontend> = BTreeMap::new();
    let nat_rules = |chain: &str| {
        dump.chain("nat", chain)
            .map(|c| c.rules.as_slice())
            .unwrap_or_default()
    };
    for rule in nat_rules("KUBE-SERVICES") {
        let (Some(target), Some(address)) = (service_target(rule), destination(rule)) else {
            continue;
        };
        let Some(key) = key(family, rule, Some(address)) else {
            continue;
        };
        let (service, kind) = split_kind(rule.comment.as_deref().unwrap_or_default());
        out.entry(key)
            .or_insert_with(|| forwarding(dump, key, kind, service, target));
    }
    for rule in nat_rules("KUBE-NODEPORTS") {
        let Some(target) = service_target(rule) else {
            continue;
        };
        let Some(key) = key(family, rule, None) else {
            continue;
        };
        let service = rule.comment.clone().unwrap_or_default();
        out.entry(key)
            .or_insert_with(|| forwarding(dump, key, FrontendKind::NodePort, service, target));
    }
    for chain in ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"] {
        let rules = dump
            .chain("filter", chain)
            .map(|c| c.rules.as_slice())
            .unwrap_or_default();
        for rule in rules {
            add_filter_verdict(family, chain, rule, &mut out);
        }
    }
    out.into_values().collect()
}

/// A frontend whose nat rule jumps to `target`.
fn forwarding(
    dump: &Dump,
    key: FrontendKey,
    kind: FrontendKind,
    service: String,
    target: &str,
) -> Frontend {
    let mut affinity_seconds = None;
    let mut backends = Vec::new();
    resolve(dump, target, 1.0, 0, &mut backends, &mut affinity_seconds);
    let mut f = Frontend {
        key,
        kind,
        service,
        verdict: Verdict::Forward,
        affinity_seconds,
        backends,
    };
    f.sort_backends();
    f
}

/// A "has no endpoints" REJECT or "has no local endpoints" DROP rule of the filter
/// table: the frontend does not forward, whatever the nat table says.
fn add_filter_verdict(
    family: IpFamily,
    chain: &str,
    rule: &Rule,
    out: &mut BTreeMap<FrontendKey, Frontend>,
) {
    let Some(comment) = rule.comment.as_deref() else {
        return;
    };
    let (service, verdict) = match (rule.jump.as_deref(), comment) {
        (Some("REJECT"), c) if c.ends_with(" has no endpoints") => {
            (c.trim_end_matches(" has no endpoints"), Verdict::Reject)
        }
        (Some("DROP"), c) if c.ends_with(" has no local endpoints") => {
            (c.trim_end_matches(" has no local endpoints"), Verdict::Drop)
        }
        _ => return,
    };
    let address = destination(rule);
    let local_destination = rule
        .destination_type
        .as_ref()
        .is_some_and(|v| !v.negated && v.value == "LOCAL");
    let (address, kind) = match (address, chain) {
        (Some(a), "KUBE-SERVICES") => (Some(a), FrontendKind::ClusterIp),
        (Some(a), _) => (Some(a), FrontendKind::External),
        (None, _) if local_destination => (None, FrontendKind::NodePort),
        _ => return,
    };
    let Some(key) = key(family, rule, address) else {
        return;
    };
    set_not_forwarding(out, key, kind, service, verdict);
}

/// Follows `chain` down to DNAT targets, giving each backend `weight` times its
/// share within the chain.
fn resolve(
    dump: &Dump,
    chain: &str,
    weight: f64,
    depth: usize,
    backends: &mut Vec<Backend>,
    affinity: &mut Option<u32>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(rules) = dump.chain("nat", chain).map(|c| c.rules.as_slice()) else {
        return;
    };
    if chain.starts_with("KUBE-SEP-") {
        if let Some((address, port)) = rules
            .iter()
            .find_map(|r| r.dnat_destination.as_deref().and_then(parse_host_port))
        {
            backends.push(Backend::new(address, port, weight));
        }
    } else if chain.starts_with("KUBE-SVC-") || chain.starts_with("KUBE-SVL-") {
        // Rules are tried in order: each takes its probability of what is left.
        let mut remaining = 1.0;
        for rule in rules {
            let Some(sep) = rule.jump.as_deref().filter(|j| j.starts_with("KUBE-SEP-")) else {
                continue;
            };
            if rule.affinity_check {
                *affinity = seconds(rule).or(*affinity);
                continue;
            }
            let p = rule
                .probability
                .as_deref()
                .and_then(|p| p.parse::<f64>().ok())
                .unwrap_or(1.0);
            let share = remaining * p;
            remaining -= share;
            resolve(dump, sep, weight * share, depth + 1, backends, affinity);
        }
    } else if chain.starts_with("KUBE-FW-") {
        // Allowed sources go on to the external chain; the rest is dropped.
        if let Some(next) = rules.iter().find_map(service_target) {
            resolve(dump, next, weight, depth + 1, backends, affinity);
        }
    } else if chain.starts_with("KUBE-EXT-") {
        // Pods and the node itself may be short-circuited to the Cluster chain; what
        // everyone else gets is the last unconditional jump.
        let last = rules
            .iter()
            .filter(|r| unconditional(r))
            .filter_map(service_target)
            .next_back();
        if let Some(next) = last {
            resolve(dump, next, weight, depth + 1, backends, affinity);
        }
    }
}

fn unconditional(rule: &Rule) -> bool {
    rule.source.is_none()
        && rule.source_type.is_none()
        && rule.in_interface.is_none()
        && !rule.mark_check
        && !rule.affinity_check
}

/// The Service chain a rule jumps to, if any.
fn service_target(rule: &Rule) -> Option<&str> {
    rule.jump.as_deref().filter(|j| {
        [
            "KUBE-SVC-",
            "KUBE-SVL-",
            "KUBE-EXT-",
            "KUBE-FW-",
            "KUBE-SEP-",
        ]
        .iter()
        .any(|p| j.starts_with(p))
    })
}

fn key(family: IpFamily, rule: &Rule, address: Option<IpAddr>) -> Option<FrontendKey> {
    let protocol = rule
        .protocol
        .as_ref()
        .filter(|v| !v.negated)
        .and_then(|v| Protocol::from_kubernetes(&v.value.to_ascii_uppercase()))?;
    let port = rule
        .destination_port
        .as_ref()
        .filter(|v| !v.negated)
        .and_then(|v| v.value.parse().ok())?;
    Some(FrontendKey {
        family,
        protocol,
        address,
        port,
    })
}

/// A single-address `-d` (`/32` or `/128`, or bare).
fn destination(rule: &Rule) -> Option<IpAddr> {
    let d = rule.destination.as_ref().filter(|v| !v.negated)?;
    let (addr, prefix) = match d.value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (d.value.as_str(), None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let full = if addr.is_ipv4() { "32" } else { "128" };
    (prefix.is_none() || prefix == Some(full)).then_some(addr)
}

/// `"ns/svc:p80 cluster IP"` → the Service port and the frontend kind.
fn split_kind(comment: &str) -> (String, FrontendKind) {
    for (suffix, kind) in [
        (" cluster IP", FrontendKind::ClusterIp),
        (" external IP", FrontendKind::ExternalIp),
        (" loadbalancer IP", FrontendKind::LoadBalancer),
    ] {
        if let Some(service) = comment.strip_suffix(suffix) {
            return (service.to_string(), kind);
        }
    }
    (comment.to_string(), FrontendKind::External)
}

/// `--seconds N` of an affinity check.
fn seconds(rule: &Rule) -> Option<u32> {
    let words = split_words(&rule.raw);
    let i = words.iter().position(|w| w == "--seconds")?;
    words.get(i + 1)?.parse().ok()
}

/// `10.0.0.1:80` or `[fd00::1]:80`.
fn parse_host_port(s: &str) -> Option<(IpAddr, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.parse().ok()?, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_parse_in_both_families() {
        assert_eq!(
            parse_host_port("10.0.0.1:80"),
            Some(("10.0.0.1".parse().unwrap(), 80))
        );
        assert_eq!(
            parse_host_port("[fd00::1]:8080"),
            Some(("fd00::1".parse().unwrap(), 8080))
        );
        assert_eq!(parse_host_port("fd00::1"), None);
        assert_eq!(parse_host_port("x:80"), None);
    }

    #[test]
    fn probabilities_become_shares() {
        let text = "*nat\n\
            :KUBE-SERVICES - [0:0]\n\
            :KUBE-SVC-A - [0:0]\n\
            :KUBE-SEP-1 - [0:0]\n\
            :KUBE-SEP-2 - [0:0]\n\
            :KUBE-SEP-3 - [0:0]\n\
            -A KUBE-SERVICES -m comment --comment \"ns/a:p cluster IP\" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j KUBE-SVC-A\n\
            -A KUBE-SVC-A -m recent --name KUBE-SEP-1 --rcheck --seconds 60 --reap -j KUBE-SEP-1\n\
            -A KUBE-SVC-A -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-1\n\
            -A KUBE-SVC-A -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-2\n\
            -A KUBE-SVC-A -j KUBE-SEP-3\n\
            -A KUBE-SEP-1 -m tcp -p tcp -j DNAT --to-destination 10.1.0.1:8080\n\
            -A KUBE-SEP-2 -m tcp -p tcp -j DNAT --to-destination 10.1.0.2:8080\n\
            -A KUBE-SEP-3 -m tcp -p tcp -j DNAT --to-destination 10.1.0.3:8080\n\
            COMMIT\n";
        let view = frontends(IpFamily::V4, &Dump::parse(text).unwrap());
        assert_eq!(view.len(), 1);
        let f = &view[0];
        assert_eq!(f.kind, FrontendKind::ClusterIp);
        assert_eq!(f.service, "ns/a:p");
        assert_eq!(f.affinity_seconds, Some(60));
        let shares: Vec<f64> = f.backends.iter().map(|b| b.share).collect();
        for s in shares {
            assert!((s - 1.0 / 3.0).abs() < 1e-6, "{s}");
        }
    }
}
