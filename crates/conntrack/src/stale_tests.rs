#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use kpr_model::topology::Selection;
use kpr_model::{
    Endpoint, IpFamily, NamespacedName, ServicePortInfo, ServicePortName, ServicePortState,
    ServiceState, SessionAffinity,
};

use super::*;
use crate::entry::Tuple;

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A Service port for the tables below.
#[derive(Clone)]
pub(crate) struct Svc {
    pub(crate) name: &'static str,
    pub(crate) protocol: Protocol,
    pub(crate) cluster_ip: &'static str,
    pub(crate) port: u16,
    pub(crate) node_port: Option<u16>,
    pub(crate) external_ips: &'static [&'static str],
    pub(crate) lb_ips: &'static [&'static str],
    /// `ip`, target port, ready, serving.
    pub(crate) endpoints: &'static [(&'static str, u16, bool, bool)],
}

pub(crate) const DNS: Svc = Svc {
    name: "dns",
    protocol: Protocol::Udp,
    cluster_ip: "10.96.0.10",
    port: 53,
    node_port: None,
    external_ips: &[],
    lb_ips: &[],
    endpoints: &[
        ("10.244.1.5", 5353, true, true),
        ("10.244.2.6", 5353, true, true),
    ],
};

pub(crate) fn family(services: &[Svc]) -> FamilyState {
    let mut map = BTreeMap::new();
    for s in services {
        let name = NamespacedName::new("ns", s.name);
        let endpoints: Vec<Endpoint> = s
            .endpoints
            .iter()
            .map(|(a, port, ready, serving)| Endpoint {
                ip: ip(a),
                port: *port,
                ready: *ready,
                serving: *serving,
                terminating: !*ready,
                is_local: false,
                hints: None,
            })
            .collect();
        let port = ServicePortState {
            info: std::sync::Arc::new(ServicePortInfo {
                name: ServicePortName {
                    service: name.clone(),
                    port: String::new(),
                    protocol: s.protocol,
                },
                cluster_ip: ip(s.cluster_ip),
                port: s.port,
                node_port: s.node_port,
                external_ips: s.external_ips.iter().map(|a| ip(a)).collect(),
                load_balancer_vips: s.lb_ips.iter().map(|a| ip(a)).collect(),
                load_balancer_source_ranges: Vec::new(),
                health_check_node_port: None,
                session_affinity: SessionAffinity::None,
                external_policy_local: false,
                internal_policy_local: false,
            }),
            selection: vec![Selection::default(); endpoints.len()],
            has_any_endpoints: !endpoints.is_empty(),
            endpoints,
        };
        let entry = map.entry(name.clone()).or_insert_with(|| {
            Arc::new(ServiceState {
                name,
                ports: Vec::new(),
            })
        });
        Arc::make_mut(entry).ports.push(port);
    }
    let family = services
        .first()
        .map_or(IpFamily::V4, |s| IpFamily::of(&ip(s.cluster_ip)));
    FamilyState {
        family,
        services: Arc::new(map),
    }
}

/// A flow from a client to `dst:dport`, translated to `to` (or not, if `to` is
/// the destination itself).
pub(crate) fn flow(protocol: Protocol, dst: &str, dport: u16, to: (&str, u16)) -> Entry {
    let client = if dst.contains(':') {
        "fd00::99"
    } else {
        "10.0.0.99"
    };
    Entry::new(
        protocol,
        Tuple {
            src: ip(client),
            dst: ip(dst),
            src_port: 40000,
            dst_port: dport,
        },
        (ip(to.0), to.1),
    )
}

pub(crate) fn udp(dst: &str, dport: u16, to: (&str, u16)) -> Entry {
    flow(Protocol::Udp, dst, dport, to)
}

struct Case {
    /// What the case proves.
    name: &'static str,
    previous: Option<Vec<Svc>>,
    current: Vec<Svc>,
    node_ips: &'static [&'static str],
    entry: Entry,
    want: Option<StaleReason>,
}

fn check(cases: Vec<Case>) {
    for c in cases {
        let previous = c.previous.as_deref().map(family);
        let current = family(&c.current);
        let node_ips: Vec<IpAddr> = c.node_ips.iter().map(|a| ip(a)).collect();
        let got = Frontends::new(previous.as_ref(), &current, &node_ips).classify(&c.entry);
        assert_eq!(got, c.want, "{}: {}", c.name, c.entry);
        let listed = stale_entries(previous.as_ref(), &current, &node_ips, &[c.entry]);
        assert_eq!(listed.len(), usize::from(c.want.is_some()), "{}", c.name);
    }
}

fn with(f: impl FnOnce(&mut Svc)) -> Svc {
    let mut s = DNS;
    f(&mut s);
    s
}

/// Rule 1 (`CleanStaleEntries`): a flow to a ClusterIP is kept only while its
/// DNAT target, address and port, is a ready or serving endpoint of the port.
#[test]
fn cluster_ip_flows() {
    check(vec![
        Case {
            name: "DNATed to a current endpoint: kept",
            previous: None,
            current: vec![DNS],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.2.6", 5353)),
            want: None,
        },
        Case {
            name: "DNATed to an endpoint that is gone",
            previous: None,
            current: vec![DNS],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.9.9", 5353)),
            want: Some(StaleReason::NotAnEndpoint),
        },
        Case {
            name: "right address, old target port (targetPort changed)",
            previous: None,
            current: vec![DNS],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 53)),
            want: Some(StaleReason::NotAnEndpoint),
        },
        Case {
            name: "never DNATed (created before the rules): deleted",
            previous: None,
            current: vec![DNS],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.96.0.10", 53)),
            want: Some(StaleReason::NotTranslated),
        },
        Case {
            name: "terminating but still serving endpoint: kept, as upstream",
            previous: None,
            current: vec![with(|s| s.endpoints = &[("10.244.1.5", 5353, false, true)])],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: None,
        },
        Case {
            name: "endpoint neither ready nor serving",
            previous: None,
            current: vec![with(|s| {
                s.endpoints = &[
                    ("10.244.1.5", 5353, false, false),
                    ("10.244.2.6", 5353, true, true),
                ]
            })],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: Some(StaleReason::NotAnEndpoint),
        },
        Case {
            name: "another port of the ClusterIP is not a frontend: kept",
            previous: None,
            current: vec![DNS],
            node_ips: &[],
            entry: udp("10.96.0.10", 54, ("10.244.9.9", 5353)),
            want: None,
        },
        Case {
            name: "a flow to a non-Service address reaching an endpoint: kept",
            previous: None,
            current: vec![DNS],
            node_ips: &[],
            entry: udp("10.244.1.5", 5353, ("10.244.1.5", 5353)),
            want: None,
        },
    ]);
}

/// Rule 2 (kubernetes issue 139628): a UDP Service scaled to zero loses the
/// flows DNATed to its old endpoints instead of keeping them forever, and a
/// flow that was blackholed meanwhile is deleted too.
#[test]
fn scaled_to_zero() {
    let empty = with(|s| s.endpoints = &[]);
    check(vec![
        Case {
            name: "DNATed to an endpoint of before the scale-down",
            previous: Some(vec![DNS]),
            current: vec![empty.clone()],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: Some(StaleReason::NoEndpoints),
        },
        Case {
            name: "same, after a restart (no previous state)",
            previous: None,
            current: vec![empty.clone()],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: Some(StaleReason::NoEndpoints),
        },
        Case {
            name: "scaled back up: the flow to the old pod goes, the new pod's stays",
            previous: Some(vec![empty.clone()]),
            current: vec![with(|s| s.endpoints = &[("10.244.3.7", 5353, true, true)])],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: Some(StaleReason::NotAnEndpoint),
        },
        Case {
            name: "never DNATed while there were no endpoints",
            previous: Some(vec![empty]),
            current: vec![DNS],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.96.0.10", 53)),
            want: Some(StaleReason::NotTranslated),
        },
    ]);
}

/// Rule 3 (kubernetes PR 141371): flows DNATed for a deleted Service, port or
/// NodePort are deleted; untranslated flows to the freed address are not ours.
#[test]
fn deleted_services() {
    let other = Svc {
        name: "other",
        cluster_ip: "10.96.0.20",
        endpoints: &[("10.244.3.1", 53, true, true)],
        ..DNS
    };
    check(vec![
        Case {
            name: "Service deleted: its DNATed flow goes",
            previous: Some(vec![DNS, other.clone()]),
            current: vec![other.clone()],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: Some(StaleReason::ServiceRemoved),
        },
        Case {
            name: "Service deleted: an untranslated flow to the freed address stays",
            previous: Some(vec![DNS, other.clone()]),
            current: vec![other.clone()],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.96.0.10", 53)),
            want: None,
        },
        Case {
            name: "port changed: flows to the old port go",
            previous: Some(vec![DNS]),
            current: vec![with(|s| s.port = 5300)],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: Some(StaleReason::ServiceRemoved),
        },
        Case {
            name: "external IP removed from the Service",
            previous: Some(vec![with(|s| s.external_ips = &["192.0.2.10"])]),
            current: vec![DNS],
            node_ips: &[],
            entry: udp("192.0.2.10", 53, ("10.244.1.5", 5353)),
            want: Some(StaleReason::ServiceRemoved),
        },
        Case {
            name: "NodePort removed",
            previous: Some(vec![with(|s| s.node_port = Some(30053))]),
            current: vec![DNS],
            node_ips: &["192.168.1.2"],
            entry: udp("192.168.1.2", 30053, ("10.244.1.5", 5353)),
            want: Some(StaleReason::ServiceRemoved),
        },
        Case {
            name: "ClusterIP reused by another Service: the current one decides",
            previous: Some(vec![DNS]),
            current: vec![Svc {
                name: "new",
                endpoints: &[("10.244.4.4", 5353, true, true)],
                ..DNS
            }],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.4.4", 5353)),
            want: None,
        },
        Case {
            name: "deleted while the proxy was down: not known after a restart",
            previous: None,
            current: vec![other],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: None,
        },
    ]);
}

/// Rule 4 (kubernetes issue 122740): a restart reconciles instead of flushing,
/// so every flow to a live endpoint survives it and only stale ones go.
#[test]
fn restart_keeps_live_flows() {
    let current = family(&[DNS]);
    let entries: Vec<Entry> = (0..100u16)
        .map(|i| {
            let mut e = udp("10.96.0.10", 53, ("10.244.1.5", 5353));
            e.original.src_port = 20000 + i;
            e.reply.dst_port = 20000 + i;
            if i % 10 == 0 {
                e.reply.src = ip("10.244.9.9");
            }
            e
        })
        .collect();
    let stale = stale_entries(None, &current, &[], &entries);
    assert_eq!(stale.len(), 10);
    assert!(stale.iter().all(|e| e.reply.src == ip("10.244.9.9")));
    assert!(
        stale
            .windows(2)
            .all(|w| w[0].original.src_port < w[1].original.src_port)
    );
}

/// External and load-balancer IPs are frontends like the ClusterIP; NodePorts
/// only on node addresses (or, with unknown node addresses, DNATed flows only).
#[test]
fn external_frontends_and_node_ports() {
    let svc = with(|s| {
        s.node_port = Some(30053);
        s.external_ips = &["192.0.2.10"];
        s.lb_ips = &["203.0.113.7"];
    });
    let case = |name, node_ips, entry, want| Case {
        name,
        previous: None,
        current: vec![svc.clone()],
        node_ips,
        entry,
        want,
    };
    let node: &[&str] = &["192.168.1.2", "127.0.0.1"];
    check(vec![
        case(
            "external IP, gone endpoint",
            node,
            udp("192.0.2.10", 53, ("10.244.9.9", 5353)),
            Some(StaleReason::NotAnEndpoint),
        ),
        case(
            "load-balancer IP, live endpoint",
            node,
            udp("203.0.113.7", 53, ("10.244.1.5", 5353)),
            None,
        ),
        case(
            "load-balancer IP, gone endpoint",
            node,
            udp("203.0.113.7", 53, ("10.244.9.9", 5353)),
            Some(StaleReason::NotAnEndpoint),
        ),
        case(
            "NodePort on a node address, gone endpoint",
            node,
            udp("192.168.1.2", 30053, ("10.244.9.9", 5353)),
            Some(StaleReason::NotAnEndpoint),
        ),
        case(
            "NodePort on localhost (localhost NodePorts)",
            node,
            udp("127.0.0.1", 30053, ("10.244.9.9", 5353)),
            Some(StaleReason::NotAnEndpoint),
        ),
        case(
            "NodePort on a node address, live endpoint",
            node,
            udp("192.168.1.2", 30053, ("10.244.2.6", 5353)),
            None,
        ),
        case(
            "the NodePort's number on another host: not ours (upstream deletes it)",
            node,
            udp("198.51.100.1", 30053, ("198.51.100.1", 30053)),
            None,
        ),
        case(
            "unknown node addresses: a DNATed flow to the NodePort is matched",
            &[],
            udp("192.168.1.2", 30053, ("10.244.9.9", 5353)),
            Some(StaleReason::NotAnEndpoint),
        ),
        case(
            "unknown node addresses: an untranslated flow to that port is not",
            &[],
            udp("198.51.100.1", 30053, ("198.51.100.1", 30053)),
            None,
        ),
    ]);
}

/// Only UDP and SCTP are reconciled, each against Services of its own protocol.
#[test]
fn protocols() {
    let tcp = with(|s| s.protocol = Protocol::Tcp);
    let sctp = with(|s| s.protocol = Protocol::Sctp);
    check(vec![
        Case {
            name: "TCP flow to a gone endpoint: never deleted",
            previous: None,
            current: vec![tcp.clone()],
            node_ips: &[],
            entry: flow(Protocol::Tcp, "10.96.0.10", 53, ("10.244.9.9", 5353)),
            want: None,
        },
        Case {
            name: "UDP flow to the ClusterIP:port of a TCP Service: not a frontend",
            previous: None,
            current: vec![tcp],
            node_ips: &[],
            entry: udp("10.96.0.10", 53, ("10.244.9.9", 5353)),
            want: None,
        },
        Case {
            name: "SCTP flow to a gone endpoint",
            previous: None,
            current: vec![sctp],
            node_ips: &[],
            entry: flow(Protocol::Sctp, "10.96.0.10", 53, ("10.244.9.9", 5353)),
            want: Some(StaleReason::NotAnEndpoint),
        },
        Case {
            name: "IPv6 flow to a gone endpoint",
            previous: None,
            current: vec![Svc {
                cluster_ip: "fd00:96::10",
                endpoints: &[("fd00:244::5", 5353, true, true)],
                ..DNS
            }],
            node_ips: &[],
            entry: udp("fd00:96::10", 53, ("fd00:244::9", 5353)),
            want: Some(StaleReason::NotAnEndpoint),
        },
    ]);
}

/// When two frontends match one flow, it is kept if either has its DNAT
/// target as an endpoint (upstream deletes it if either does not).
#[test]
fn overlapping_frontends_keep_valid_flows() {
    let a = with(|s| s.external_ips = &["192.0.2.10"]);
    let b = Svc {
        name: "b",
        cluster_ip: "10.96.0.20",
        external_ips: &["192.0.2.10"],
        endpoints: &[("10.244.7.7", 5353, true, true)],
        ..DNS
    };
    let node_port = Svc {
        name: "np",
        cluster_ip: "10.96.0.30",
        port: 8053,
        node_port: Some(53),
        endpoints: &[("10.244.8.8", 53, true, true)],
        ..DNS
    };
    check(vec![
        Case {
            name: "two Services claim one external IP:port",
            previous: None,
            current: vec![a.clone(), b.clone()],
            node_ips: &[],
            entry: udp("192.0.2.10", 53, ("10.244.7.7", 5353)),
            want: None,
        },
        Case {
            name: "neither has the target",
            previous: None,
            current: vec![a, b],
            node_ips: &[],
            entry: udp("192.0.2.10", 53, ("10.244.9.9", 5353)),
            want: Some(StaleReason::NotAnEndpoint),
        },
        Case {
            name: "a node address that is also a ClusterIP of that port number",
            previous: None,
            current: vec![DNS, node_port],
            node_ips: &["10.96.0.10"],
            entry: udp("10.96.0.10", 53, ("10.244.1.5", 5353)),
            want: None,
        },
    ]);
}

/// Only protocols with frontends (now or before) need a dump at all.
#[test]
fn protocols_to_dump() {
    let udp_only = Frontends::new(None, &family(&[DNS]), &[]);
    assert!(udp_only.has_protocol(Protocol::Udp));
    assert!(!udp_only.has_protocol(Protocol::Sctp));
    let sctp_gone = Frontends::new(
        Some(&family(&[with(|s| s.protocol = Protocol::Sctp)])),
        &family(&[]),
        &[],
    );
    assert!(sctp_gone.has_protocol(Protocol::Sctp));
    let tcp_only = Frontends::new(None, &family(&[with(|s| s.protocol = Protocol::Tcp)]), &[]);
    assert!(!tcp_only.has_protocol(Protocol::Udp) && !tcp_only.has_protocol(Protocol::Tcp));
}
