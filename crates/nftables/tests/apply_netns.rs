//! The nftables applier against a real kernel, in namespaces made by the test: a full
//! sync equals upstream's ruleset, hundreds of random partial syncs each leave exactly
//! what a fresh load of the whole state would, a vanished table is recovered by the
//! next (full) sync, and cleanup removes the table.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use kpr_model::{
    Change, IpFamily, LocalDetector, NamespacedName, NodePortAddresses, Objects, Store,
};
use kpr_netns_lab::Netns;
use kpr_nftables::nft::Nft;
use kpr_nftables::{FamilyProxier, RenderConfig, render_ruleset};
use kpr_source::{Object, parse_manifest};
use serde_json::json;

fn config() -> RenderConfig {
    RenderConfig {
        masquerade_mark: "0x4000".into(),
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
        node_port_addresses: NodePortAddresses::Ips(vec!["192.168.0.2".parse().unwrap()]),
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
        node_ip: "192.168.0.2".parse().ok(),
        ..RenderConfig::new(IpFamily::V4)
    }
}

fn objects(path: &str) -> Objects {
    let parsed = parse_manifest(&data(path), path);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    let mut o = Objects::default();
    for obj in parsed.objects {
        match obj.object {
            Object::Service(s) => o.services.push(*s),
            Object::EndpointSlice(s) => o.slices.push(*s),
            _ => {}
        }
    }
    o
}

/// The kernel's view of `ns`, without the flushed chains waiting for deletion.
fn live_state(ns: &Netns, stale: &BTreeSet<String>) -> String {
    normalized(ns, IpFamily::V4)
        .lines()
        .filter(|l| {
            !(l.starts_with("chain ")
                && stale
                    .iter()
                    .any(|s| l.contains(&format!("\"name\":\"{s}\""))))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn full_sync_matches_upstream_overall() {
    let ns = Netns::new("nft-overall").unwrap();
    let mut store = Store::new("test-node");
    store.replace_all(&objects("golden-nftables/overall/objects.yaml"));
    let mut p = FamilyProxier::new(nft_in(&ns, IpFamily::V4), config());
    let r = p
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    assert!(r.full && r.operations > 100);
    assert_eq!(
        normalized(&ns, IpFamily::V4),
        expected_state(&data("golden-nftables/overall/upstream.v4"), IpFamily::V4)
    );
    // Nothing changed: nothing is sent.
    assert!(
        p.sync(store.snapshot().family(IpFamily::V4), false)
            .unwrap()
            .skipped
    );
    // A forced full sync over a correct table changes nothing in it.
    let before = normalized(&ns, IpFamily::V4);
    assert!(
        p.sync(store.snapshot().family(IpFamily::V4), true)
            .unwrap()
            .full
    );
    assert_eq!(normalized(&ns, IpFamily::V4), before);
}

/// A small deterministic generator (no dependency needed for a test's dice).
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next(100) < percent
    }
}

fn random_service(d: &mut Dice, i: u64) -> Change {
    let ty = ["ClusterIP", "NodePort", "LoadBalancer"][d.next(3) as usize];
    let mut ports = vec![json!({"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080})];
    if d.chance(40) {
        ports.push(json!({"name": "dns", "port": 53, "protocol": "UDP"}));
    }
    if ty != "ClusterIP" {
        for (k, p) in ports.iter_mut().enumerate() {
            p["nodePort"] = json!(30000 + i * 2 + k as u64);
        }
    }
    let mut spec = json!({"type": ty, "clusterIP": format!("172.30.0.{}", 10 + i), "ports": ports});
    if d.chance(30) {
        // A small pool, so that Services sometimes claim the same external IP.
        spec["externalIPs"] = json!([format!("192.168.99.{}", 1 + d.next(3))]);
    }
    if d.chance(30) {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] =
            json!({"clientIP": {"timeoutSeconds": 60 + d.next(3) * 60}});
    }
    if d.chance(30) {
        spec["internalTrafficPolicy"] = json!("Local");
    }
    let mut svc = json!({"metadata": {"namespace": "ns", "name": format!("svc{i}")}, "spec": spec});
    if ty == "LoadBalancer" {
        if d.chance(50) {
            svc["spec"]["externalTrafficPolicy"] = json!("Local");
            svc["spec"]["healthCheckNodePort"] = json!(31000 + i);
        }
        if d.chance(40) {
            svc["spec"]["loadBalancerSourceRanges"] = json!(["203.0.113.0/25", "192.168.0.0/24"]);
        }
        svc["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": format!("5.6.7.{}", 1 + d.next(4))}]}});
    }
    Change::ServiceUpsert(Box::new(serde_json::from_value(svc).unwrap()))
}

fn random_slice(d: &mut Dice, i: u64) -> Change {
    let n = d.next(5);
    let endpoints: Vec<_> = (0..n)
        .map(|k| {
            let (ready, serving, terminating) = match d.next(4) {
                0 => (false, true, true),
                1 => (false, false, true),
                _ => (true, true, false),
            };
            json!({
                "addresses": [format!("10.0.{i}.{}", 1 + k + d.next(2))],
                "nodeName": if d.chance(50) { "test-node" } else { "other-node" },
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating}
            })
        })
        .collect();
    Change::SliceUpsert(Box::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": format!("svc{i}-1"), "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]
        }))
        .unwrap(),
    ))
}

/// After every partial sync the kernel holds exactly what loading the whole state
/// from scratch gives, apart from flushed chains not yet deleted.
#[test]
fn partial_syncs_equal_fresh_loads() {
    let ns = Netns::new("nft-random").unwrap();
    random_partial_syncs(&ns, nft_in(&ns, IpFamily::V4));
}

/// The same, with transactions sent over netlink instead of `nft -f`.
#[test]
fn partial_syncs_over_netlink_equal_fresh_loads() {
    let ns = Netns::new("nft-random-nl").unwrap();
    let nft = nft_netlink_in(&ns, IpFamily::V4);
    random_partial_syncs(&ns, nft);
}

fn random_partial_syncs(ns: &Netns, tool: Nft) {
    let mut p = FamilyProxier::new(tool, config());
    let mut store = Store::new("test-node");
    let mut d = Dice(7);
    let mut now = Instant::now();
    for i in 0..8 {
        store.apply(random_service(&mut d, i));
        store.apply(random_slice(&mut d, i));
    }
    assert!(
        p.sync_at(store.snapshot().family(IpFamily::V4), false, now)
            .unwrap()
            .full
    );
    let mut partial = 0;
    for step in 0..60 {
        for _ in 0..1 + d.next(3) {
            let i = d.next(8);
            let change = match d.next(10) {
                0 => Change::ServiceDelete(NamespacedName::new("ns", format!("svc{i}"))),
                1 => Change::SliceDelete(NamespacedName::new("ns", format!("svc{i}-1"))),
                2..=4 => random_service(&mut d, i),
                _ => random_slice(&mut d, i),
            };
            store.apply(change);
        }
        if d.chance(30) {
            now += Duration::from_secs(2);
        }
        let state = store.snapshot();
        let r = p.sync_at(state.family(IpFamily::V4), false, now).unwrap();
        assert!(!r.full, "step {step}: unexpected full sync");
        partial += usize::from(!r.skipped);
        let stale: BTreeSet<String> = p.stale_chains().keys().cloned().collect();
        let fresh = render_ruleset(state.family(IpFamily::V4), p.config()).creation_script();
        assert_same(
            &format!("step {step}"),
            &live_state(ns, &stale),
            &expected_state(&fresh, IpFamily::V4),
        );
    }
    assert!(partial > 40, "only {partial} partial syncs wrote anything");
}

/// A full sync split into many small transactions (a tiny batch size forces it)
/// leaves what one transaction would: first into an empty table, then, after many
/// changes, as a forced full sync over the old table. In between, every map element
/// waits for the last transaction, and each chain is written whole in one.
#[test]
fn full_syncs_in_batches_equal_fresh_loads() {
    let ns = Netns::new("nft-batches").unwrap();
    let mut p = FamilyProxier::new(nft_netlink_in(&ns, IpFamily::V4), config()).with_batch_ops(40);
    let mut store = Store::new("test-node");
    let mut d = Dice(11);
    for i in 0..12 {
        store.apply(random_service(&mut d, i));
        store.apply(random_slice(&mut d, i));
    }
    let check = |p: &FamilyProxier, store: &mut Store, what: &str| {
        let stale: BTreeSet<String> = p.stale_chains().keys().cloned().collect();
        let fresh =
            render_ruleset(store.snapshot().family(IpFamily::V4), p.config()).creation_script();
        assert_same(
            what,
            &live_state(&ns, &stale),
            &expected_state(&fresh, IpFamily::V4),
        );
    };
    let r = p
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    assert!(r.full && r.transactions > 3, "{r:?}");
    check(&p, &mut store, "first full sync");

    for i in 0..12 {
        let change = match d.next(3) {
            0 => Change::ServiceDelete(NamespacedName::new("ns", format!("svc{i}"))),
            1 => random_service(&mut d, i),
            _ => random_slice(&mut d, i),
        };
        store.apply(change);
    }
    let r = p.sync(store.snapshot().family(IpFamily::V4), true).unwrap();
    assert!(r.full && r.transactions > 3, "{r:?}");
    check(&p, &mut store, "forced full sync");
}

/// The plan of a batched full sync, without a kernel: the first transaction declares
/// every chain and set, map elements come only in the last one, and every chain's
/// flush and rules share a transaction.
#[test]
fn batched_full_sync_plan_keeps_chains_whole_and_elements_last() {
    use kpr_nftables::listing::Listing;
    use kpr_nftables::objects::Family;
    use kpr_nftables::sync::Synced;
    use kpr_nftables::transaction::Op;
    use kpr_nftables::{base, render_service};

    let mut store = Store::new("test-node");
    let mut d = Dice(5);
    for i in 0..12 {
        store.apply(random_service(&mut d, i));
        store.apply(random_slice(&mut d, i));
    }
    let snap = store.snapshot();
    let family = snap.family(IpFamily::V4);
    let services = || {
        family
            .services
            .iter()
            .map(|(n, s)| (n, render_service(s, &config())))
    };
    let (_, report, txs) = Synced::full_plan(
        Family(IpFamily::V4),
        &base(&config()),
        services,
        &Listing::default(),
        true,
        40,
    );
    assert!(txs.len() > 3, "{} transactions", txs.len());
    assert_eq!(report.transactions, txs.len());
    assert_eq!(
        report.operations,
        txs.iter().map(|t| t.len()).sum::<usize>()
    );
    let last = txs.len() - 1;
    // The base chains: declared and written in the first transaction.
    let base_chains: Vec<String> = base(&config())
        .chains
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut flushed_in = std::collections::HashMap::new();
    let mut first_service_rules = None;
    let mut last_declaration = 0;
    for (i, tx) in txs.iter().enumerate() {
        for op in tx.ops() {
            match op {
                Op::AddChain(_) | Op::AddSet(_) => last_declaration = i,
                Op::AddElement(_) => assert_eq!(i, last, "{op:?} before the last"),
                Op::FlushChain(c) => {
                    flushed_in.insert(c.clone(), i);
                }
                Op::AddRule(c, _) => {
                    assert_eq!(flushed_in.get(c), Some(&i), "{op:?}");
                    if base_chains.contains(c) {
                        assert_eq!(i, 0, "{op:?}");
                    } else {
                        first_service_rules.get_or_insert(i);
                    }
                }
                _ => {}
            }
        }
    }
    let first_service_rules = first_service_rules.unwrap();
    assert!(
        last_declaration < first_service_rules,
        "declarations (up to transaction {last_declaration}) before any Service's rules \
         (from {first_service_rules})"
    );
}

/// Someone deletes the table: the next partial sync fails, the one after is full and
/// puts everything back.
#[test]
fn recovers_when_the_table_vanishes() {
    let ns = Netns::new("nft-vanish").unwrap();
    recovers_from_a_vanished_table(&ns, nft_in(&ns, IpFamily::V4), "nft -f -");
}

/// The same over netlink: the kernel's refusal names the operation it refused.
#[test]
fn recovers_when_the_table_vanishes_over_netlink() {
    let ns = Netns::new("nft-vanish-nl").unwrap();
    let nft = nft_netlink_in(&ns, IpFamily::V4);
    recovers_from_a_vanished_table(
        &ns,
        nft,
        "the kernel rejected the nftables transaction at `add element ip kube-proxy cluster-ips",
    );
}

fn recovers_from_a_vanished_table(ns: &Netns, tool: Nft, error: &str) {
    let mut p = FamilyProxier::new(tool, config());
    let mut store = Store::new("test-node");
    store.replace_all(&objects("golden-nftables/overall/objects.yaml"));
    p.sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    assert!(p.nft().table_present().unwrap());

    nft(ns, &["delete", "table", "ip", "kube-proxy"], None);
    assert!(!p.nft().table_present().unwrap());
    store.apply(service("ns9", "svc9", "172.30.0.99", "p80", 80));
    let err = p
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap_err();
    assert!(err.to_string().contains(error), "{err}");
    let r = p
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    assert!(r.full);
    let fresh = render_ruleset(store.snapshot().family(IpFamily::V4), p.config()).creation_script();
    assert_eq!(
        normalized(ns, IpFamily::V4),
        expected_state(&fresh, IpFamily::V4)
    );
}

/// The table check over netlink asks for our table by name, per family.
#[test]
fn table_presence_over_netlink_per_family() {
    let ns = Netns::new("nft-present").unwrap();
    let (v4, v6) = (
        nft_netlink_in(&ns, IpFamily::V4),
        nft_netlink_in(&ns, IpFamily::V6),
    );
    assert!(!v4.table_present().unwrap() && !v6.table_present().unwrap());
    nft(&ns, &["add", "table", "ip6", "kube-proxy"], None);
    nft(&ns, &["add", "table", "ip", "kube-proxy-not"], None);
    assert!(!v4.table_present().unwrap() && v6.table_present().unwrap());
    nft(&ns, &["add", "table", "ip", "kube-proxy"], None);
    assert!(v4.table_present().unwrap() && v6.table_present().unwrap());
}

#[test]
fn cleanup_deletes_the_table() {
    let ns = Netns::new("nft-cleanup").unwrap();
    let mut p = FamilyProxier::new(nft_in(&ns, IpFamily::V4), config());
    let mut store = Store::new("test-node");
    store.replace_all(&objects("golden-nftables/overall/objects.yaml"));
    p.sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    assert!(p.nft().delete_table().unwrap());
    assert!(!p.nft().table_present().unwrap());
    assert!(
        !p.nft().delete_table().unwrap(),
        "a second cleanup finds nothing"
    );
}
