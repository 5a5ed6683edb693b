//! Golden tests: manifests in `tests/golden/<scenario>/objects.yaml` rendered to
//! iptables-restore input and compared with the checked-in expectations.
//!
//! Per scenario and family (`v4`, `v6`):
//! - `iptables.<family>`: our exact output (rewritten with `UPDATE_GOLDEN=1`, the diff
//!   reviewed like code);
//! - `upstream.<family>` (optional): upstream kube-proxy's expected rules for the same
//!   objects, from its proxier tests; our output, ordered as upstream's tests order
//!   rules, must be identical;
//! - `upstream-<table>-<CHAIN>.<family>` (optional): the exact, ordered rules upstream
//!   expects in one chain (upstream `assertIPTablesChainEqual`);
//! - `flows.<family>` (optional): packets traced through our rules
//!   (`name | source | protocol | destination | port | output | masq`), as upstream's
//!   packet-flow tests;
//! - `problems.txt` (optional): the expected problem lines; without it there must be none;
//! - `view-drift.<family>` (optional): what `show` reads back from the rules must agree
//!   with the model's wanted view except for the differences listed here.
//!
//! `scenario.yaml` (optional) changes the settings; the defaults are those of
//! upstream's fake proxier (`NewFakeProxier`).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kpr_iptables::dump::Dump;
use kpr_iptables::trace::{Packet, trace};
use kpr_iptables::{
    LocalDetector, NfacctCounters, NodePortAddresses, RenderConfig, SyncMode, render,
};
use kpr_model::{IpFamily, Objects, Store};
use kpr_source::{Object, parse_manifest};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Scenario {
    node_name: String,
    /// Addresses of the host (matched as LOCAL, and used to resolve nodePortAddresses).
    host_ips: Vec<IpAddr>,
    node_ip_v4: Option<IpAddr>,
    node_ip_v6: Option<IpAddr>,
    local_cidr_v4: Option<IpNet>,
    local_cidr_v6: Option<IpNet>,
    masquerade_mark: String,
    masquerade_all: bool,
    localhost_node_ports: bool,
    node_port_addresses: Option<Vec<IpNet>>,
    random_fully: bool,
    nfacct_localhost_nodeports: bool,
    nfacct_ct_invalid_dropped: bool,
    conntrack_tcp_liberal: bool,
    families: Vec<String>,
}

impl Default for Scenario {
    fn default() -> Self {
        let ips = [
            "192.168.0.2",
            "192.168.1.2",
            "192.168.99.11",
            "2001:db8::1",
            "2001:db8:1::2",
        ];
        Self {
            node_name: "test-node".into(),
            host_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            node_ip_v4: "192.168.0.2".parse().ok(),
            node_ip_v6: "2001:db8::1".parse().ok(),
            local_cidr_v4: "10.0.0.0/8".parse().ok(),
            local_cidr_v6: "fd00:10::/64".parse().ok(),
            masquerade_mark: "0x4000".into(),
            masquerade_all: false,
            localhost_node_ports: true,
            node_port_addresses: None,
            random_fully: false,
            nfacct_localhost_nodeports: true,
            nfacct_ct_invalid_dropped: true,
            conntrack_tcp_liberal: false,
            families: vec!["v4".into()],
        }
    }
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

fn load_objects(dir: &Path, problems: &mut Vec<String>) -> Objects {
    let path = dir.join("objects.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let parsed = parse_manifest(&text, "objects.yaml");
    problems.extend(parsed.problems.iter().map(ToString::to_string));
    let mut objects = Objects::default();
    for o in parsed.objects {
        match o.object {
            Object::Service(s) => objects.services.push(*s),
            Object::EndpointSlice(s) => objects.slices.push(*s),
            Object::Endpoints(e) => objects.endpoints.push(*e),
            Object::Node(n) => objects.nodes.push(*n),
            Object::ServiceCidr(_) => {}
        }
    }
    objects
}

fn render_config(sc: &Scenario, family: IpFamily) -> RenderConfig {
    let v6 = family == IpFamily::V6;
    let cidr = if v6 {
        sc.local_cidr_v6
    } else {
        sc.local_cidr_v4
    };
    let of_family = |ip: &IpAddr| IpFamily::of(ip) == family;
    let node_port_addresses = match &sc.node_port_addresses {
        None => NodePortAddresses::All,
        Some(cidrs) => {
            let mut candidates: Vec<IpAddr> =
                vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
            candidates.extend(sc.host_ips.iter().copied());
            let ips = candidates
                .into_iter()
                .filter(|ip| of_family(ip) && cidrs.iter().any(|c| c.contains(ip)))
                .collect::<Vec<_>>();
            // Upstream treats 0.0.0.0/0 (::/0) as "all".
            if cidrs
                .iter()
                .any(|c| c.prefix_len() == 0 && of_family(&c.addr()))
            {
                NodePortAddresses::All
            } else {
                NodePortAddresses::Ips(ips)
            }
        }
    };
    let loopback_allowed = match &node_port_addresses {
        NodePortAddresses::All => true,
        NodePortAddresses::Ips(ips) => ips.iter().any(IpAddr::is_loopback),
    };
    RenderConfig {
        family,
        masquerade_mark: sc.masquerade_mark.clone(),
        masquerade_all: sc.masquerade_all,
        local_detector: cidr.map_or(LocalDetector::None, LocalDetector::Cidr),
        localhost_node_ports: !v6 && sc.localhost_node_ports && loopback_allowed,
        node_port_addresses,
        node_ip: if v6 { sc.node_ip_v6 } else { sc.node_ip_v4 },
        random_fully: sc.random_fully,
        nfacct: NfacctCounters {
            localhost_nodeports: sc.nfacct_localhost_nodeports,
            ct_invalid_dropped: sc.nfacct_ct_invalid_dropped,
        },
        conntrack_tcp_liberal: sc.conntrack_tcp_liberal,
        large_cluster_endpoints: 1000,
    }
}

/// Every chain jumped to exists and has rules; every created chain is used
/// (upstream `checkIPTablesRuleJumps`).
fn check_consistency(text: &str) -> Result<(), String> {
    let dump = Dump::parse(text).map_err(|e| e.to_string())?;
    let builtin = [
        "ACCEPT",
        "REJECT",
        "DROP",
        "MARK",
        "RETURN",
        "DNAT",
        "SNAT",
        "MASQUERADE",
    ];
    let always = [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-FORWARD",
        "KUBE-MARK-MASQ",
        "KUBE-PROXY-FIREWALL",
        "KUBE-FIREWALL",
    ];
    for t in &dump.tables {
        let created: HashSet<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
        let filled: HashSet<&str> = t
            .chains
            .iter()
            .filter(|c| !c.rules.is_empty())
            .map(|c| c.name.as_str())
            .collect();
        let jumped: HashSet<&str> = t
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .filter_map(|r| r.jump.as_deref())
            .filter(|j| !builtin.contains(j))
            .collect();
        for j in &jumped {
            if !created.contains(j) {
                return Err(format!("{}: jump to missing chain {j}", t.name));
            }
            if !filled.contains(j) && *j != "KUBE-NODEPORTS" {
                return Err(format!("{}: jump to empty chain {j}", t.name));
            }
        }
        for c in &created {
            if !jumped.contains(c) && !always.contains(c) {
                return Err(format!("{}: chain {c} created but not used", t.name));
            }
        }
    }
    Ok(())
}

fn compare(path: &Path, actual: &str, failures: &mut Vec<String>) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(_) | Err(_) if update => std::fs::write(path, actual).unwrap(),
        Ok(expected) => failures.push(format!(
            "{} differs:\n{}",
            path.display(),
            line_diff(&expected, actual)
        )),
        Err(_) => failures.push(format!(
            "{} missing (run with UPDATE_GOLDEN=1)",
            path.display()
        )),
    }
}

fn line_diff(expected: &str, actual: &str) -> String {
    let e: HashSet<&str> = expected.lines().collect();
    let a: HashSet<&str> = actual.lines().collect();
    let mut out = String::new();
    for l in expected.lines().filter(|l| !a.contains(l)) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in actual.lines().filter(|l| !e.contains(l)) {
        out.push_str(&format!("+ {l}\n"));
    }
    if out.is_empty() {
        out.push_str("(same lines, different order)\n");
    }
    out
}

fn check_flows(dir: &Path, fam: &str, sc: &Scenario, text: &str, failures: &mut Vec<String>) {
    let path = dir.join(format!("flows.{fam}"));
    let Ok(flows) = std::fs::read_to_string(&path) else {
        return;
    };
    let dump = Dump::parse(text).unwrap();
    for line in flows
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(f.len(), 7, "{}: bad flow line {line:?}", path.display());
        let port: u16 = f[4].parse().unwrap();
        let outcome = trace(
            &dump,
            &sc.host_ips,
            &Packet {
                source: f[1],
                protocol: f[2],
                destination: f[3],
                port,
            },
        );
        let masq = f[6] == "true";
        if outcome.output != f[5] || outcome.masquerade != masq {
            failures.push(format!(
                "{}: flow {:?}: expected output {:?} masq {masq}, got {:?} masq {}\nmatched:\n  {}",
                path.display(),
                f[0],
                f[5],
                outcome.output,
                outcome.masquerade,
                outcome.matched.join("\n  ")
            ));
        }
    }
}

fn check_chain_files(dir: &Path, fam: &str, text: &str, failures: &mut Vec<String>) {
    let dump = Dump::parse(text).unwrap();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("upstream-")
            .and_then(|r| r.strip_suffix(&format!(".{fam}")))
        else {
            continue;
        };
        let Some((table, chain)) = rest.split_once('-') else {
            continue;
        };
        let expected = std::fs::read_to_string(&path).unwrap();
        let actual: String = dump
            .chain(table, chain)
            .map(|c| c.rules.iter().map(|r| format!("{}\n", r.raw)).collect())
            .unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}: chain {table}/{chain} differs:\n{}",
                path.display(),
                line_diff(&expected, &actual)
            ));
        }
    }
}

fn run_scenario(dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let sc: Scenario = match std::fs::read_to_string(dir.join("scenario.yaml")) {
        Ok(text) => {
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        }
        Err(_) => Scenario::default(),
    };
    let mut problems = Vec::new();
    let objects = load_objects(dir, &mut problems);
    let mut store = Store::new(sc.node_name.clone());
    problems.extend(store.replace_all(&objects).iter().map(ToString::to_string));
    let state = store.snapshot();
    let problems_text: String = problems.iter().map(|p| format!("{p}\n")).collect();
    let problems_path = dir.join("problems.txt");
    if problems_path.exists() || !problems.is_empty() {
        compare(&problems_path, &problems_text, &mut failures);
    }
    for fam in &sc.families {
        let family = match fam.as_str() {
            "v4" => IpFamily::V4,
            "v6" => IpFamily::V6,
            other => panic!("{}: unknown family {other}", dir.display()),
        };
        let config = render_config(&sc, family);
        let rendered = render(state.family(family), &config, SyncMode::Full, None);
        compare(
            &dir.join(format!("iptables.{fam}")),
            &rendered.text,
            &mut failures,
        );
        if let Err(e) = check_consistency(&rendered.text) {
            failures.push(format!("{}: {fam}: inconsistent rules: {e}", dir.display()));
        }
        if let Ok(upstream) = std::fs::read_to_string(dir.join(format!("upstream.{fam}"))) {
            let mut dump = Dump::parse(&rendered.text).unwrap();
            dump.sort_like_upstream();
            let ours = dump.to_text();
            if ours != upstream {
                failures.push(format!(
                    "{}: {fam}: differs from upstream's expected rules:\n{}",
                    dir.display(),
                    line_diff(&upstream, &ours)
                ));
            }
        }
        check_chain_files(dir, fam, &rendered.text, &mut failures);
        check_flows(dir, fam, &sc, &rendered.text, &mut failures);
        check_view(dir, fam, family, &state, &rendered.text, &mut failures);
    }
    failures
}

/// What `show` reads back from the rules agrees with what the model wants, except
/// for the differences `view-drift.<family>` lists (frontends the rules leave out
/// on purpose, e.g. NodePorts when no node address matches nodePortAddresses).
fn check_view(
    dir: &Path,
    fam: &str,
    family: IpFamily,
    state: &kpr_model::ProxyState,
    text: &str,
    failures: &mut Vec<String>,
) {
    let wanted: Vec<_> = kpr_model::view::wanted(state)
        .into_iter()
        .filter(|f| f.key.family == family)
        .collect();
    let programmed = kpr_iptables::view::frontends(family, &Dump::parse(text).unwrap());
    let drift: String = kpr_model::view::drift(&wanted, &programmed)
        .iter()
        .map(|d| format!("{d}\n"))
        .collect();
    let path = dir.join(format!("view-drift.{fam}"));
    if path.exists() || !drift.is_empty() {
        compare(&path, &drift, failures);
    }
}

/// Every golden scenario renders exactly its checked-in rules, agrees with upstream
/// where upstream's expectation is recorded, and passes its packet flows.
#[test]
fn golden_scenarios() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("objects.yaml").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no golden scenarios found");
    let mut failures = Vec::new();
    for dir in &dirs {
        failures.extend(run_scenario(dir));
    }
    assert!(
        failures.is_empty(),
        "{} golden failure(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{} golden scenarios passed", dirs.len());
}
