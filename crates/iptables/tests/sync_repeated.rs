//! Upstream's TestSyncProxyRulesRepeated, step by step: what each full or partial sync
//! writes, rule counts, and recovery from a failed partial restore. Expected texts are
//! upstream's, in `tests/golden-steps/sync-repeated/stepN.v4` (compared in upstream's
//! test order).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::dump::Dump;
use kpr_iptables::fake::FakeIptables;
use kpr_iptables::proxier::{FamilyProxier, SyncReport};
use kpr_iptables::{LocalDetector, RenderConfig, SyncMode, render};
use kpr_model::{Change, IpFamily, NamespacedName, Store};
use serde_json::json;

fn service(ns: &str, name: &str, ip: &str, port_name: &str, port: u16) -> Change {
    Change::ServiceUpsert(Box::new(serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}
    })).unwrap()))
}

fn slice(ns: &str, svc: &str, port_name: &str, port: u16, ips: &[&str]) -> Change {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    Change::SliceUpsert(Box::new(serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-1"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]
    })).unwrap()))
}

fn expected(step: u32) -> String {
    std::fs::read_to_string(format!(
        "{}/../../tests/golden-steps/sync-repeated/step{step}.v4",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn sorted(text: &str) -> String {
    let mut d = Dump::parse(text).unwrap();
    d.sort_like_upstream();
    d.to_text()
}

fn nat_rules(text: &str) -> usize {
    Dump::parse(text)
        .unwrap()
        .table("nat")
        .map_or(0, |t| t.chains.iter().map(|c| c.rules.len()).sum())
}

fn check(step: u32, fake: &FakeIptables, report: &SyncReport, total: usize) {
    let written = fake.last_restore().unwrap();
    let want = expected(step);
    assert_eq!(
        sorted(&written),
        want,
        "step {step}: restore input differs from upstream's"
    );
    assert_eq!(
        report.stats.nat_rules_written,
        nat_rules(&want),
        "step {step}: nat rules written (IPTablesRulesLastSync)"
    );
    assert_eq!(
        report.stats.nat_rules_total, total,
        "step {step}: nat rules in total (IPTablesRulesTotal)"
    );
}

/// Each step writes exactly what upstream writes; a failed partial restore leaves the
/// kernel as it was and the retry is a full resync that deletes the stale chains.
#[test]
fn sync_proxy_rules_repeated() {
    let fake = Arc::new(FakeIptables::new());
    let config = RenderConfig {
        masquerade_mark: "0x4000".into(),
        random_fully: false,
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
        ..RenderConfig::new(IpFamily::V4)
    };
    let mut proxier = FamilyProxier::new(
        Iptables::new(IpFamily::V4, Backend::Default, fake.clone()),
        config.clone(),
    );
    let mut store = Store::new("test-node");
    let mut sync =
        |store: &mut Store, full: bool| proxier.sync(store.snapshot().family(IpFamily::V4), full);

    store.apply(service("ns1", "svc1", "172.30.0.41", "p80", 80));
    store.apply(service("ns2", "svc2", "172.30.0.42", "p8080", 8080));
    store.apply(slice("ns1", "svc1", "p80", 80, &["10.0.1.1"]));
    store.apply(slice("ns2", "svc2", "p8080", 8080, &["10.0.2.1"]));
    let r = sync(&mut store, false).unwrap();
    assert!(r.full);
    check(1, &fake, &r, 15);

    store.apply(service("ns3", "svc3", "172.30.0.43", "p80", 80));
    store.apply(slice("ns3", "svc3", "p80", 80, &["10.0.3.1"]));
    check(2, &fake, &sync(&mut store, false).unwrap(), 20);

    store.apply(Change::ServiceDelete(NamespacedName::new("ns2", "svc2")));
    check(3, &fake, &sync(&mut store, false).unwrap(), 15);

    store.apply(service("ns4", "svc4", "172.30.0.44", "p80", 80));
    check(4, &fake, &sync(&mut store, false).unwrap(), 15);

    store.apply(slice("ns4", "svc4", "p80", 80, &["10.0.4.1"]));
    check(5, &fake, &sync(&mut store, false).unwrap(), 20);

    store.apply(slice("ns3", "svc3", "p80", 80, &["10.0.3.2"]));
    check(6, &fake, &sync(&mut store, false).unwrap(), 20);

    store.apply(slice("ns3", "svc3", "p80", 80, &["10.0.3.2", "10.0.3.3"]));
    check(7, &fake, &sync(&mut store, false).unwrap(), 23);

    // Step 8: nothing changed. We write nothing at all; upstream rewrites the fixed
    // chains, which is what rendering a partial sync of no Services produces.
    let state = store.snapshot();
    let r = sync(&mut store, false).unwrap();
    assert!(r.skipped);
    let no_changes = render(
        state.family(IpFamily::V4),
        &config,
        SyncMode::Partial(&HashSet::new()),
        Some(&Default::default()),
    );
    assert_eq!(sorted(&no_changes.text), expected(8));
    assert_eq!(no_changes.stats.nat_rules_total, 23);

    // Step 9: a rule of someone else's makes the partial restore impossible (svc3's
    // chain now jumps to svc4's endpoint chain, which the sync deletes).
    assert!(fake.append_rule(
        "nat",
        "-A KUBE-SVC-X27LE4BHSL4DOUIK -j KUBE-SEP-AYCN5HPXMIRJNJXU"
    ));
    store.apply(Change::ServiceDelete(NamespacedName::new("ns4", "svc4")));
    let err = sync(&mut store, false).unwrap_err();
    assert!(
        err.to_string().contains("KUBE-SEP-AYCN5HPXMIRJNJXU"),
        "{err}"
    );
    assert!(
        fake.dump()
            .chain("nat", "KUBE-SEP-AYCN5HPXMIRJNJXU")
            .is_some(),
        "failed restore changed nothing"
    );

    // Step 10: the retry is a full resync, which rewrites svc3's chain and deletes svc4's.
    let r = sync(&mut store, false).unwrap();
    assert!(r.full);
    check(10, &fake, &r, 18);
}
