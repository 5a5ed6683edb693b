//! The applier against a real kernel, in a network namespace made by the test:
//! full sync, partial sync with stale-chain deletion, idempotent jump rules, a failed
//! restore leaving the previous rules in place, and cleanup.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::exec::{InputWriter, Output, OutputReader, ProcessRunner, Runner};
use kpr_iptables::proxier::FamilyProxier;
use kpr_iptables::{LocalDetector, NfacctCounters, RenderConfig};
use kpr_model::{Change, IpFamily, NamespacedName, Objects, Store};
use kpr_netns_lab::Netns;
use kpr_source::{Object, parse_manifest};

/// Runs the tools inside one namespace, streaming input and output as the proxy's
/// own runner does.
struct InNetns(String);

impl InNetns {
    fn args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["netns", "exec", self.0.as_str(), program];
        full.extend_from_slice(args);
        full
    }
}

impl Runner for InNetns {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        ProcessRunner.run("ip", &self.args(program, args), stdin)
    }

    fn run_writing(
        &self,
        program: &str,
        args: &[&str],
        input: &mut InputWriter<'_>,
    ) -> std::io::Result<Output> {
        ProcessRunner.run_writing("ip", &self.args(program, args), input)
    }

    fn run_reading(
        &self,
        program: &str,
        args: &[&str],
        output: &mut OutputReader<'_>,
    ) -> std::io::Result<Output> {
        ProcessRunner.run_reading("ip", &self.args(program, args), output)
    }
}

fn overall_objects() -> Objects {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/golden/overall/objects.yaml"
    ))
    .unwrap();
    let parsed = parse_manifest(&text, "objects.yaml");
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

fn config() -> RenderConfig {
    RenderConfig {
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
        // nfacct objects are not created by this test.
        nfacct: NfacctCounters::NONE,
        ..RenderConfig::new(IpFamily::V4)
    }
}

/// `iptables-save` without its `#` lines (they carry the time of day, so two saves
/// a second apart would differ).
fn save(ns: &Netns) -> String {
    String::from_utf8(ns.exec("iptables-save", &[]).unwrap().stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Sync, re-sync, partial sync, failure and cleanup against the kernel.
#[test]
fn apply_lifecycle_in_netns() {
    let ns = Netns::new("ipt").unwrap();
    let ipt = Iptables::new(
        IpFamily::V4,
        Backend::Default,
        Arc::new(InNetns(ns.name().to_string())),
    );
    let mut store = Store::new("test-node");
    assert!(store.replace_all(&overall_objects()).is_empty());
    let state = store.snapshot();
    let mut proxier = FamilyProxier::new(ipt.clone(), config());

    let report = proxier.sync(state.family(IpFamily::V4), false).unwrap();
    assert!(report.full, "first sync is full");
    assert_eq!(report.jumps_repaired, 14);
    let saved = save(&ns);
    for needle in [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A KUBE-SVC-XPGD46QRK7WJZT7O",
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -p tcp -m comment --comment \"ns1/svc1:p80\" -m tcp -j DNAT --to-destination 10.180.0.1:80",
        ":KUBE-PROXY-CANARY - [0:0]",
    ] {
        assert!(saved.contains(needle), "missing {needle:?} in:\n{saved}");
    }
    assert!(ipt.canaries_present());

    // A second full sync repairs nothing and duplicates nothing.
    let report = proxier.sync(state.family(IpFamily::V4), true).unwrap();
    assert_eq!(report.jumps_repaired, 0);
    assert_eq!(save(&ns).matches("-j KUBE-POSTROUTING").count(), 1);

    // Nothing changed: a partial sync writes nothing.
    assert!(
        proxier
            .sync(state.family(IpFamily::V4), false)
            .unwrap()
            .skipped
    );

    // Deleting svc1: a partial sync removes its chains and leaves the others.
    store.apply(Change::ServiceDelete(NamespacedName::new("ns1", "svc1")));
    let state2 = store.snapshot();
    let report = proxier.sync(state2.family(IpFamily::V4), false).unwrap();
    assert!(!report.full);
    assert_eq!(report.services_changed, 1);
    assert_eq!(report.stats.deleted_chains, 2, "SVC and SEP of svc1");
    let saved = save(&ns);
    assert!(!saved.contains("KUBE-SVC-XPGD46QRK7WJZT7O"), "{saved}");
    assert!(
        saved.contains("-A KUBE-SVC-4SW47YFZTEDKD3PK"),
        "other services untouched"
    );

    // A restore the kernel rejects leaves the previous rules in place.
    let mut broken = FamilyProxier::new(
        ipt.clone(),
        RenderConfig {
            masquerade_mark: "0xNOTHEX".into(),
            ..config()
        },
    );
    let err = broken
        .sync(state.family(IpFamily::V4), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("iptables-restore"), "{err}");
    assert!(
        err.contains("input line") && err.contains("0xNOTHEX"),
        "the failing line is named: {err}"
    );
    assert_eq!(save(&ns), saved, "failed restore changed nothing");

    // Cleanup removes everything of ours, keeps others' rules, and is idempotent.
    ns.exec(
        "iptables",
        &["-t", "filter", "-A", "INPUT", "-s", "1.2.3.4", "-j", "DROP"],
    )
    .unwrap();
    assert!(ipt.cleanup().unwrap() > 0);
    let saved = save(&ns);
    assert!(
        !saved.contains("KUBE-SERVICES")
            && !saved.contains("KUBE-SVC")
            && !saved.contains("KUBE-PROXY-CANARY"),
        "{saved}"
    );
    assert!(
        saved.contains("-A INPUT -s 1.2.3.4/32 -j DROP"),
        "foreign rule kept:\n{saved}"
    );
    assert_eq!(ipt.cleanup().unwrap(), 0, "second cleanup finds nothing");
}

/// nfacct counters can be created (twice: idempotent) and read, and a rule using one
/// then loads.
#[test]
fn nfacct_counters_in_netns() {
    let ns = Netns::new("nfa").unwrap();
    let created = ns
        .enter(|| {
            kpr_iptables::nfacct::ensure("ct_state_invalid_dropped_pkts")?;
            kpr_iptables::nfacct::ensure("ct_state_invalid_dropped_pkts")?;
            kpr_iptables::nfacct::read("ct_state_invalid_dropped_pkts")
        })
        .unwrap();
    assert_eq!(created.unwrap(), kpr_iptables::nfacct::Counts::default());
    ns.exec("iptables", &["-N", "X"]).unwrap();
    ns.exec(
        "iptables",
        &[
            "-A",
            "X",
            "-m",
            "nfacct",
            "--nfacct-name",
            "ct_state_invalid_dropped_pkts",
            "-j",
            "DROP",
        ],
    )
    .unwrap();
    let missing = ns
        .enter(|| kpr_iptables::nfacct::read("no_such_counter"))
        .unwrap();
    assert!(missing.is_err());
}
