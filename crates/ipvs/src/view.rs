//! What `kube-proxy-rs show` reads in IPVS mode: every virtual server as a
//! [`Frontend`], its real servers as backends with their share of new connections
//! (weight over the sum of weights; 0 while draining) and IPVS's own connection
//! counters. The kind of address comes from our ipsets (a ClusterIP is in
//! `KUBE-CLUSTER-IP` ...); IPVS NodePorts are per node address. Pure functions.

use kpr_model::IpFamily;
use kpr_model::view::{Backend, Frontend, FrontendKey, FrontendKind, Verdict};

use crate::plan::Plan;
use crate::sets::{self, Set, SetEntries};
use crate::types::{RealServer, RealServerStats, ServiceFlags, VirtualServer};

/// A virtual server with its real servers, as dumped.
pub type Dumped = (VirtualServer, Vec<(RealServer, RealServerStats)>);

fn kind(vs: &VirtualServer, sets: &SetEntries) -> FrontendKind {
    let entry = sets::ip_port(vs.address, vs.protocol, vs.port);
    let has = |s: Set| sets.get(&s).is_some_and(|e| e.contains(&entry));
    if has(Set::ClusterIp) {
        FrontendKind::ClusterIp
    } else if has(Set::ExternalIp) || has(Set::ExternalIpLocal) {
        FrontendKind::ExternalIp
    } else if has(Set::LoadBalancer) {
        FrontendKind::LoadBalancer
    } else {
        FrontendKind::NodePort
    }
}

/// The frontends of `family` among `dumped` (other families are skipped), sorted.
pub fn frontends(family: IpFamily, dumped: &[Dumped], sets: &SetEntries) -> Vec<Frontend> {
    let mut out: Vec<Frontend> = dumped
        .iter()
        .filter(|(vs, _)| IpFamily::of(&vs.address) == family)
        .map(|(vs, reals)| {
            let total: i64 = reals.iter().map(|(r, _)| i64::from(r.weight.max(0))).sum();
            let mut frontend = Frontend {
                key: FrontendKey {
                    family,
                    protocol: vs.protocol,
                    address: Some(vs.address),
                    port: vs.port,
                },
                kind: kind(vs, sets),
                service: String::new(),
                // IPVS answers a virtual server without usable real servers with
                // an ICMP port unreachable.
                verdict: if total > 0 {
                    Verdict::Forward
                } else {
                    Verdict::Reject
                },
                affinity_seconds: vs
                    .flags
                    .contains(ServiceFlags::PERSISTENT)
                    .then_some(vs.timeout),
                backends: reals
                    .iter()
                    .map(|(r, stats)| {
                        let share = if total > 0 {
                            f64::from(r.weight.max(0)) / total as f64
                        } else {
                            0.0
                        };
                        let mut b = Backend::new(r.address, r.port, share);
                        b.active_connections = u64::from(stats.active_conns);
                        b.inactive_connections = u64::from(stats.inactive_conns);
                        b
                    })
                    .collect(),
            };
            frontend.sort_backends();
            frontend
        })
        .collect();
    out.sort_by_key(|f| f.key);
    out
}

/// The frontends a plan asks for, read the same way (for drift).
pub fn planned(plan: &Plan) -> Vec<Frontend> {
    let dumped: Vec<Dumped> = plan
        .services
        .values()
        .map(|p| {
            (
                p.vs.clone(),
                p.reals
                    .iter()
                    .map(|r| (r.clone(), RealServerStats::default()))
                    .collect(),
            )
        })
        .collect();
    let mut out = frontends(plan.family, &dumped, &plan.sets);
    for f in &mut out {
        if let Some(p) = plan.services.values().find(|p| {
            Some(p.vs.address) == f.key.address
                && p.vs.port == f.key.port
                && p.vs.protocol == f.key.protocol
        }) {
            f.service = p.service.to_string();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpr_model::Protocol;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    /// Shares follow weights, draining real servers get none, kinds come from the
    /// sets, a virtual server without weight rejects.
    #[test]
    fn reads_weights_and_kinds() {
        let mut sets = sets::empty_sets();
        sets.entry(Set::ClusterIp)
            .or_default()
            .insert("10.96.0.1,tcp:80".into());
        let mut vs = VirtualServer::new(ip("10.96.0.1"), Protocol::Tcp, 80, "rr");
        vs.flags |= ServiceFlags::PERSISTENT;
        vs.timeout = 60;
        let stats = RealServerStats {
            active_conns: 3,
            inactive_conns: 1,
            persist_conns: 0,
        };
        let dumped = vec![
            (
                vs,
                vec![
                    (RealServer::new(ip("10.244.1.1"), 80, 1), stats),
                    (
                        RealServer::new(ip("10.244.1.2"), 80, 3),
                        RealServerStats::default(),
                    ),
                    (
                        RealServer::new(ip("10.244.1.3"), 80, 0),
                        RealServerStats::default(),
                    ),
                ],
            ),
            (
                VirtualServer::new(ip("192.168.0.2"), Protocol::Udp, 30053, "rr"),
                vec![(
                    RealServer::new(ip("10.244.1.3"), 53, 0),
                    RealServerStats::default(),
                )],
            ),
        ];
        let f = frontends(IpFamily::V4, &dumped, &sets);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].kind, FrontendKind::ClusterIp);
        assert_eq!(f[0].affinity_seconds, Some(60));
        let shares: Vec<f64> = f[0].backends.iter().map(|b| b.share).collect();
        assert_eq!(shares, vec![0.25, 0.75, 0.0]);
        assert_eq!(f[0].backends[0].active_connections, 3);
        assert_eq!(f[1].kind, FrontendKind::NodePort);
        assert_eq!(f[1].verdict, Verdict::Reject);
    }
}
