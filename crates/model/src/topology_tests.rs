use super::*;
use crate::endpoint::Hints;
use crate::name::{NamespacedName, Protocol, ServicePortName};
use crate::service::SessionAffinity;
use std::collections::BTreeSet;

fn port(internal_local: bool, external_local: bool, node_port: bool) -> ServicePortInfo {
    ServicePortInfo {
        name: ServicePortName {
            service: NamespacedName::new("ns", "svc"),
            port: "p".into(),
            protocol: Protocol::Tcp,
        },
        cluster_ip: "10.0.0.1".parse().unwrap(),
        port: 80,
        node_port: node_port.then_some(30000),
        external_ips: vec![],
        load_balancer_vips: vec![],
        load_balancer_source_ranges: vec![],
        health_check_node_port: None,
        session_affinity: SessionAffinity::None,
        external_policy_local: external_local,
        internal_policy_local: internal_local,
    }
}

fn ep(
    last: u8,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    zones: &[&str],
) -> Endpoint {
    Endpoint {
        ip: format!("10.1.0.{last}").parse().unwrap(),
        port: 80,
        ready,
        serving,
        terminating,
        is_local: local,
        hints: Hints::new(
            zones.iter().map(|z| z.to_string()).collect(),
            BTreeSet::new(),
        ),
    }
}

const NODE: NodeTopology<'static> = NodeTopology {
    node_name: "node-a",
    zone: Some("zone-a"),
};

fn picked(c: &Categorized, f: impl Fn(Selection) -> bool) -> Vec<usize> {
    c.selection
        .iter()
        .enumerate()
        .filter(|(_, s)| f(**s))
        .map(|(i, _)| i)
        .collect()
}

/// Cluster policy uses the ready endpoints; not-ready ones are left out.
#[test]
fn cluster_uses_ready() {
    let eps = [
        ep(1, true, true, false, false, &[]),
        ep(2, false, false, false, false, &[]),
    ];
    let c = categorize(&port(false, false, false), &eps, NODE);
    assert_eq!(picked(&c, |s| s.cluster), vec![0]);
    assert!(c.has_any_endpoints);
}

/// With no ready endpoint anywhere, serving terminating endpoints are used.
#[test]
fn terminating_fallback() {
    let eps = [
        ep(1, false, true, true, false, &[]),
        ep(2, false, false, true, false, &[]),
    ];
    let c = categorize(&port(false, false, false), &eps, NODE);
    assert_eq!(picked(&c, |s| s.cluster), vec![0]);
    assert!(c.has_any_endpoints);
    let eps = [
        ep(1, true, true, false, false, &[]),
        ep(2, false, true, true, false, &[]),
    ];
    let c = categorize(&port(false, false, false), &eps, NODE);
    assert_eq!(
        picked(&c, |s| s.cluster),
        vec![0],
        "terminating only when nothing is ready"
    );
}

/// Zone hints narrow the cluster endpoints when every ready endpoint has hints and
/// one names this zone; otherwise they are ignored.
#[test]
fn zone_hints() {
    let eps = [
        ep(1, true, true, false, false, &["zone-a"]),
        ep(2, true, true, false, false, &["zone-b"]),
    ];
    let c = categorize(&port(false, false, false), &eps, NODE);
    assert_eq!(picked(&c, |s| s.cluster), vec![0]);
    let eps = [
        ep(1, true, true, false, false, &["zone-a"]),
        ep(2, true, true, false, false, &[]),
    ];
    let c = categorize(&port(false, false, false), &eps, NODE);
    assert_eq!(
        picked(&c, |s| s.cluster),
        vec![0, 1],
        "one endpoint without hints: hints ignored"
    );
    let eps = [
        ep(1, true, true, false, false, &["zone-c"]),
        ep(2, true, true, false, false, &["zone-b"]),
    ];
    let c = categorize(&port(false, false, false), &eps, NODE);
    assert_eq!(
        picked(&c, |s| s.cluster),
        vec![0, 1],
        "no hint for this zone: hints ignored"
    );
}

/// Local policy takes local ready endpoints, else local serving terminating ones;
/// remote endpoints still make `has_any_endpoints` true (traffic is dropped, not rejected).
#[test]
fn local_policy() {
    let eps = [
        ep(1, true, true, false, false, &[]),
        ep(2, false, true, true, true, &[]),
    ];
    let c = categorize(&port(true, false, false), &eps, NODE);
    assert_eq!(picked(&c, |s| s.local), vec![1]);
    assert!(c.has_any_endpoints);
    assert_eq!(
        picked(&c, |s| s.cluster),
        Vec::<usize>::new(),
        "internal Local, not externally accessible: no cluster set"
    );
    let eps = [ep(1, true, true, false, false, &[])];
    let c = categorize(&port(true, false, false), &eps, NODE);
    assert!(picked(&c, |s| s.local).is_empty());
    assert!(c.has_any_endpoints);
}

/// External Local policy still computes cluster endpoints (for short-circuiting).
#[test]
fn external_local_keeps_cluster_set() {
    let eps = [
        ep(1, true, true, false, true, &[]),
        ep(2, true, true, false, false, &[]),
    ];
    let c = categorize(&port(false, true, true), &eps, NODE);
    assert_eq!(picked(&c, |s| s.cluster), vec![0, 1]);
    assert_eq!(picked(&c, |s| s.local), vec![0]);
}
