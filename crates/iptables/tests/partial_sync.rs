//! Multi-step syncs through a recording fake of the iptables tools: what each partial
//! or full sync writes (upstream TestSyncProxyRulesLargeClusterMode), and stale-chain
//! deletion from our own record.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::exec::{Output, Runner};
use kpr_iptables::proxier::FamilyProxier;
use kpr_iptables::{LocalDetector, NfacctCounters, RenderConfig};
use kpr_model::{Change, IpFamily, NamespacedName, Store};
use serde_json::json;

/// Answers iptables-save with empty tables and records every restore input.
#[derive(Default)]
struct Recorder {
    restores: Mutex<Vec<String>>,
}

impl Runner for Recorder {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        let mut out = Output::default();
        if program.ends_with("-save") {
            let table = args
                .iter()
                .skip_while(|a| **a != "-t")
                .nth(1)
                .copied()
                .unwrap_or("nat");
            out.stdout = format!("*{table}\nCOMMIT\n");
        } else if program.ends_with("-restore") {
            self.restores
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(stdin.unwrap_or_default()).into_owned());
        }
        Ok(out)
    }
}

fn service(ns: &str, name: &str, ip: &str, port_name: &str, port: u16) -> Change {
    Change::ServiceUpsert(Box::new(serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}
    })).unwrap()))
}

fn slice(ns: &str, svc: &str, port_name: &str, port: u16, ips: &[String]) -> Change {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    Change::SliceUpsert(Box::new(serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-1"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]
    })).unwrap()))
}

/// (matched DNAT line, DNAT lines, DNAT lines with comments), as upstream's
/// `countEndpointsAndComments`.
fn count(text: &str, needle: &str) -> (String, usize, usize) {
    let mut matched = String::new();
    let (mut eps, mut comments) = (0, 0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SEP-") && l.contains("-j DNAT"))
    {
        eps += 1;
        if line.contains("--comment") {
            comments += 1;
        }
        if line.contains(needle) {
            matched = line.to_string();
        }
    }
    (matched, eps, comments)
}

/// Large-cluster mode drops endpoint comments; partial syncs write only what
/// changed; a deleted Service's chains are deleted at once (upstream waits up to a
/// sync period in large clusters, because it must run iptables-save to find them).
#[test]
fn large_cluster_mode_and_partial_syncs() {
    let recorder = Arc::new(Recorder::default());
    let ipt = Iptables::new(IpFamily::V4, Backend::Default, recorder.clone());
    let config = RenderConfig {
        masquerade_mark: "0x4000".into(),
        masquerade_all: true,
        random_fully: false,
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
        nfacct: NfacctCounters {
            localhost_nodeports: true,
            ct_invalid_dropped: true,
        },
        ..RenderConfig::new(IpFamily::V4)
    };
    let mut proxier = FamilyProxier::new(ipt, config);
    let last = || recorder.restores.lock().unwrap().last().cloned().unwrap();
    let mut store = Store::new("test-node");
    let half = 1000 / 2 - 1;
    store.apply(service("ns1", "svc1", "172.30.0.41", "p80", 80));
    store.apply(service("ns2", "svc2", "172.30.0.42", "p8080", 8080));
    store.apply(service("ns3", "svc3", "172.30.0.43", "p8081", 8081));
    store.apply(slice(
        "ns1",
        "svc1",
        "p80",
        80,
        &(0..half)
            .map(|i| format!("10.0.{}.{}", i % 256, i / 256))
            .collect::<Vec<_>>(),
    ));
    store.apply(slice(
        "ns2",
        "svc2",
        "p8080",
        8080,
        &(0..half)
            .map(|i| format!("10.1.{}.{}", i % 256, i / 256))
            .collect::<Vec<_>>(),
    ));

    // Step 1: below the threshold, every DNAT rule has a comment.
    proxier
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    let (m, n, c) = count(&last(), "10.0.0.0");
    assert_eq!(
        m,
        "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80"
    );
    assert_eq!((n, c), (998, 998));

    // Step 2: svc3's endpoints cross the threshold; only svc3 is written.
    let ips: Vec<String> = ["203.0.113.4", "203.0.113.8", "203.0.113.12"]
        .map(String::from)
        .to_vec();
    store.apply(slice("ns3", "svc3", "p8081", 8081, &ips));
    proxier
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    let (m, n, c) = count(&last(), "203.0.113.4");
    assert_eq!(
        m,
        "-A KUBE-SEP-RUVVH7YV3PHQBDOS -m tcp -p tcp -j DNAT --to-destination 203.0.113.4:8081"
    );
    assert_eq!((n, c), (3, 0));

    // Step 3: a full sync rewrites everything without comments.
    proxier
        .sync(store.snapshot().family(IpFamily::V4), true)
        .unwrap();
    let (m, n, c) = count(&last(), "10.0.0.0");
    assert_eq!(
        m,
        "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80"
    );
    assert_eq!((n, c), (1001, 0));

    // Step 4: a new Service is written alone.
    store.apply(service("ns4", "svc4", "172.30.0.44", "p8082", 8082));
    store.apply(slice(
        "ns4",
        "svc4",
        "p8082",
        8082,
        &["10.4.0.1".to_string()],
    ));
    proxier
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    let (m, n, _) = count(&last(), "10.4.0.1");
    assert_eq!(
        m,
        "-A KUBE-SEP-SU5STNODRYEWJAUF -m tcp -p tcp -j DNAT --to-destination 10.4.0.1:8082"
    );
    assert_eq!(n, 1);

    // Step 5: deleting it removes its rules and deletes its chains in the same sync.
    store.apply(Change::ServiceDelete(NamespacedName::new("ns4", "svc4")));
    proxier
        .sync(store.snapshot().family(IpFamily::V4), false)
        .unwrap();
    let text = last();
    assert_eq!(count(&text, "10.4.0.1").1, 0);
    assert!(text.contains("-X KUBE-SVC-EBDQOQU5SJFXRIL3\n"), "{text}");
    assert!(text.contains("-X KUBE-SEP-SU5STNODRYEWJAUF\n"), "{text}");

    // Step 7: a full sync writes every endpoint again.
    proxier
        .sync(store.snapshot().family(IpFamily::V4), true)
        .unwrap();
    assert_eq!(count(&last(), "").1, 1001);
}
