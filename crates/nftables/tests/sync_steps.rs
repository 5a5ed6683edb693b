//! Upstream's TestSyncProxyRulesRepeated and TestSyncProxyRulesStartup against a real
//! kernel: after each sync, the namespace's table must be what the kernel makes of
//! upstream's expected text (`tests/golden-nftables-steps/`), and each transaction
//! must have upstream's operation count (one step deliberately fewer, see below).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use kpr_model::{Change, IpFamily, LocalDetector, NamespacedName, NodePortAddresses, Store};
use kpr_netns_lab::Netns;
use kpr_nftables::{FamilyProxier, RenderConfig, SyncReport};

/// Upstream's fake nftables proxier settings.
pub fn upstream_config() -> RenderConfig {
    RenderConfig {
        masquerade_mark: "0x4000".into(),
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
        node_port_addresses: NodePortAddresses::Ips(vec!["192.168.0.2".parse().unwrap()]),
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
        node_ip: "192.168.0.2".parse().ok(),
        ..RenderConfig::new(IpFamily::V4)
    }
}

fn check(ns: &Netns, what: &str, expected_block: &str) {
    let want = expected_state(
        &(data("golden-nftables-steps/base.v4") + expected_block),
        IpFamily::V4,
    );
    assert_same(what, &normalized(ns, IpFamily::V4), &want);
}

fn step(n: u32) -> String {
    data(&format!("golden-nftables-steps/sync-repeated/step{n}.v4"))
}

fn ops(r: &SyncReport) -> usize {
    r.operations
}

fn sync_at(p: &mut FamilyProxier, store: &mut Store, now: Instant) -> SyncReport {
    p.sync_at(store.snapshot().family(IpFamily::V4), false, now)
        .unwrap()
}

fn stale(p: &FamilyProxier) -> Vec<String> {
    let mut v: Vec<String> = p.stale_chains().keys().cloned().collect();
    v.sort();
    v
}

#[test]
fn sync_proxy_rules_repeated() {
    let ns = Netns::new("nft-steps").unwrap();
    let mut proxier = FamilyProxier::new(nft_in(&ns, IpFamily::V4), upstream_config());
    let mut store = Store::new("test-node");
    let mut now = Instant::now();
    let p = &mut proxier;

    store.apply(service("ns1", "svc1", "172.30.0.41", "p80", 80));
    store.apply(service("ns2", "svc2", "172.30.0.42", "p8080", 8080));
    store.apply(slice("ns1", "svc1", "p80", 80, &["10.0.1.1"]));
    store.apply(slice("ns2", "svc2", "p8080", 8080, &["10.0.2.1"]));
    let r = sync_at(p, &mut store, now);
    assert!(r.full);
    check(&ns, "step 1", &step(1));
    // The comparison sees rules and elements: step 1's table is not step 2's.
    let base = data("golden-nftables-steps/base.v4");
    assert_ne!(
        normalized(&ns, IpFamily::V4),
        expected_state(&(base + &step(2)), IpFamily::V4)
    );

    store.apply(service("ns3", "svc3", "172.30.0.43", "p80", 80));
    store.apply(slice("ns3", "svc3", "p80", 80, &["10.0.3.1"]));
    let r = sync_at(p, &mut store, now);
    assert!(!r.full);
    check(&ns, "step 2", &step(2));
    assert_eq!(ops(&r), 10, "step 2 operations");

    // Deleting a Service flushes its chains; they are deleted later.
    store.apply(Change::ServiceDelete(NamespacedName::new("ns2", "svc2")));
    let r = sync_at(p, &mut store, now);
    check(&ns, "step 3", &step(3));
    assert_eq!(ops(&r), 4, "step 3 operations");

    // A second later they are deleted, in their own transaction.
    now += Duration::from_secs(2);
    let r = sync_at(p, &mut store, now);
    check(&ns, "step 4", &step(4));
    assert_eq!(ops(&r), 0, "step 4 operations");
    assert_eq!(r.stale_deleted, 2);

    store.apply(service("ns4", "svc4", "172.30.0.44", "p80", 80));
    let r = sync_at(p, &mut store, now);
    check(&ns, "step 5", &step(5));
    assert_eq!(ops(&r), 2, "step 5 operations");

    store.apply(slice("ns4", "svc4", "p80", 80, &["10.0.4.1"]));
    let r = sync_at(p, &mut store, now);
    check(&ns, "step 6", &step(6));
    assert_eq!(ops(&r), 10, "step 6 operations");

    store.apply(slice("ns3", "svc3", "p80", 80, &["10.0.3.2"]));
    let r = sync_at(p, &mut store, now);
    check(&ns, "step 7", &step(7));
    assert_eq!(ops(&r), 9, "step 7 operations");

    // Upstream rewrites all three chains of svc3 (12 operations); the unchanged
    // endpoint chain of 10.0.3.2 is left alone here.
    now += Duration::from_secs(2);
    store.apply(slice("ns3", "svc3", "p80", 80, &["10.0.3.2", "10.0.3.3"]));
    let r = sync_at(p, &mut store, now);
    check(&ns, "step 8", &step(8));
    assert_eq!(ops(&r), 8, "step 8 operations");
    assert_eq!(r.stale_deleted, 1);

    store.apply(slice("ns3", "svc3", "p80", 80, &[]));
    let r = sync_at(p, &mut store, now);
    check(&ns, "step 9", &step(9));
    assert_eq!(ops(&r), 5, "step 9 operations");
    assert_eq!(
        stale(p),
        [
            "endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80",
            "endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80",
            "service-4AT6LBPK-ns3/svc3/tcp/p80",
        ]
    );

    store.apply(slice("ns3", "svc3", "p80", 80, &["10.0.3.2", "10.0.3.3"]));
    let r = sync_at(p, &mut store, now);
    check(&ns, "step 10", &step(10));
    assert_eq!(ops(&r), 14, "step 10 operations");
    assert!(stale(p).is_empty());

    // Emptied, aged, restored: deleted first, then recreated.
    store.apply(slice("ns3", "svc3", "p80", 80, &[]));
    sync_at(p, &mut store, now);
    now += Duration::from_secs(2);
    store.apply(slice("ns3", "svc3", "p80", 80, &["10.0.3.2", "10.0.3.3"]));
    let r = sync_at(p, &mut store, now);
    assert_eq!(r.stale_deleted, 3);
    check(&ns, "step 11", &step(10));

    let r = sync_at(p, &mut store, now);
    assert!(r.skipped);
    check(&ns, "step 12", &step(10));
}

/// A proxier starting over a table from an earlier run keeps the set elements and
/// endpoint chains that are still right: upstream's count is the setup plus 14.
#[test]
fn sync_proxy_rules_startup() {
    let empty = Netns::new("nft-setup").unwrap();
    let mut first = FamilyProxier::new(nft_in(&empty, IpFamily::V4), upstream_config());
    let setup_ops = first
        .sync(
            Store::new("test-node").snapshot().family(IpFamily::V4),
            false,
        )
        .unwrap()
        .operations;

    let ns = Netns::new("nft-startup").unwrap();
    load(
        &ns,
        &(data("golden-nftables-steps/base.v4")
            + &data("golden-nftables-steps/startup/existing.v4")),
    );
    let mut proxier = FamilyProxier::new(nft_in(&ns, IpFamily::V4), upstream_config());
    let mut store = Store::new("test-node");
    store.apply(service("ns1", "svc1", "172.30.0.41", "p80", 80));
    store.apply(service("ns2", "svc2", "172.30.0.42", "p8080", 8080));
    store.apply(service("ns3", "svc3", "172.30.0.43", "p80", 80));
    store.apply(slice("ns1", "svc1", "p80", 80, &["10.0.1.1", "10.0.1.2"]));
    store.apply(slice("ns2", "svc2", "p8080", 8080, &["10.0.2.1"]));
    let r = proxier
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    assert!(r.full);
    check(
        &ns,
        "startup",
        &data("golden-nftables-steps/startup/expected.v4"),
    );
    assert_eq!(r.operations, setup_ops + 14, "operations beyond the setup");
}
