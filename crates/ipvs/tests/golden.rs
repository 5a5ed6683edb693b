//! Golden tests of IPVS mode's plan (virtual and real servers, ipsets, bound
//! addresses, iptables rules), in `--dry-run` form.
//!
//! Two sources of scenarios:
//! - every iptables golden scenario, `tests/golden/<name>/objects.yaml` (the same
//!   inputs as the other modes), planned into `tests/golden-ipvs/<name>/ipvs.<family>`;
//! - IPVS-only scenarios, `tests/golden-ipvs/<name>/objects.yaml`, rebuilt from
//!   upstream's IPVS proxier tests (`pkg/proxy/ipvs/proxier_test.go`).
//!
//! `ipvs.<family>` is our exact output (rewritten with `UPDATE_GOLDEN=1`, the diff
//! reviewed like code). `upstream.<family>` (optional) holds what upstream's test
//! asserts for the same objects, one fact per line:
//! - `vs PROTO ADDR:PORT -> RS RS ...`: the virtual server exists with exactly these
//!   real servers;
//! - `vs-count N`: the number of virtual servers;
//! - `set NAME ENTRY ENTRY ...`: the set holds exactly these entries;
//! - `chain CHAIN TARGET/SET TARGET/SET ...`: the chain's rules (nat, then filter),
//!   by jump target and matched set (`-` for none), as upstream's `checkIptables`.
//!
//! `scenario.yaml` (optional) changes settings. Defaults are those of the iptables
//! golden tests (so their scenario files apply); the IPVS-only scenarios set what
//! upstream's IPVS fake proxier has (no local detector, node IPs on eth0).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kpr_ipvs::{Plan, PlanConfig, plan};
use kpr_model::{IpFamily, LocalDetector, Objects, Store};
use kpr_source::{Object, parse_manifest};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default)]
struct Scenario {
    node_name: String,
    host_ips: Vec<IpAddr>,
    node_ip_v4: Option<IpAddr>,
    node_ip_v6: Option<IpAddr>,
    local_cidr_v4: Option<IpNet>,
    local_cidr_v6: Option<IpNet>,
    masquerade_all: bool,
    node_port_addresses: Option<Vec<IpNet>>,
    random_fully: bool,
    scheduler: String,
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
            masquerade_all: false,
            node_port_addresses: None,
            random_fully: true,
            scheduler: "rr".into(),
            families: vec!["v4".into()],
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests")
}

fn load_objects(path: &Path, problems: &mut Vec<String>) -> Objects {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

fn config(sc: &Scenario, family: IpFamily) -> PlanConfig {
    let v6 = family == IpFamily::V6;
    let of_family = |ip: &&IpAddr| IpFamily::of(ip) == family && !ip.is_loopback();
    let node_addresses: Vec<IpAddr> = sc.host_ips.iter().filter(of_family).copied().collect();
    let node_port_ips = match &sc.node_port_addresses {
        Some(cidrs)
            if !cidrs
                .iter()
                .any(|c| c.prefix_len() == 0 && IpFamily::of(&c.addr()) == family)
                && cidrs.iter().any(|c| IpFamily::of(&c.addr()) == family) =>
        {
            node_addresses
                .iter()
                .filter(|ip| cidrs.iter().any(|c| c.contains(*ip)))
                .copied()
                .collect()
        }
        _ => node_addresses.clone(),
    };
    let cidr = if v6 {
        sc.local_cidr_v6
    } else {
        sc.local_cidr_v4
    };
    PlanConfig {
        family,
        scheduler: sc.scheduler.clone(),
        masquerade_mark: "0x00004000".into(),
        masquerade_all: sc.masquerade_all,
        local_detector: cidr.map_or(LocalDetector::None, LocalDetector::Cidr),
        node_port_ips,
        node_addresses: node_addresses.into_iter().collect(),
        node_ip: if v6 { sc.node_ip_v6 } else { sc.node_ip_v4 },
        random_fully: sc.random_fully,
    }
}

fn compare(path: &Path, actual: &str, failures: &mut Vec<String>) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        _ if update => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, actual).unwrap();
        }
        Ok(expected) => {
            let e: BTreeSet<&str> = expected.lines().collect();
            let a: BTreeSet<&str> = actual.lines().collect();
            let mut diff: Vec<String> = e.difference(&a).map(|l| format!("- {l}")).collect();
            diff.extend(a.difference(&e).map(|l| format!("+ {l}")));
            failures.push(format!("{} differs:\n{}", path.display(), diff.join("\n")));
        }
        Err(_) => failures.push(format!("{} missing (UPDATE_GOLDEN=1)", path.display())),
    }
}

/// Our rules of `chain`, nat first, as `TARGET/SET` words.
fn chain_rules(iptables: &str, chain: &str) -> Vec<String> {
    let prefix = format!("-A {chain} ");
    iptables
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let after = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .copied()
                    .unwrap_or("-")
            };
            format!("{}/{}", after("-j"), after("--match-set"))
        })
        .collect()
}

fn check_upstream(plan: &Plan, text: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let servers: BTreeMap<String, Vec<String>> = plan
        .services
        .iter()
        .map(|(k, p)| {
            (
                k.to_string(),
                p.reals
                    .iter()
                    .map(|r| r.socket_addr().to_string())
                    .collect(),
            )
        })
        .collect();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["vs", proto, addr, "->", reals @ ..] => {
                let key = format!("{proto} {addr}");
                let want: Vec<String> = reals.iter().map(ToString::to_string).collect();
                match servers.get(&key) {
                    Some(got) if *got == want => {}
                    Some(got) => {
                        failures.push(format!("{key}: real servers {got:?}, upstream {want:?}"))
                    }
                    None => failures.push(format!("{key}: no such virtual server")),
                }
            }
            ["vs-count", n] => {
                if servers.len().to_string() != *n {
                    failures.push(format!("{} virtual servers, upstream {n}", servers.len()));
                }
            }
            ["set", name, entries @ ..] => {
                let got: BTreeSet<&str> = plan
                    .sets
                    .iter()
                    .find(|(s, _)| s.name(plan.family) == *name)
                    .map(|(_, e)| e.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                let want: BTreeSet<&str> = entries.iter().copied().collect();
                if got != want {
                    failures.push(format!("set {name}: {got:?}, upstream {want:?}"));
                }
            }
            ["chain", chain, rules @ ..] => {
                let got = chain_rules(&plan.iptables, chain);
                if got != rules {
                    failures.push(format!("chain {chain}: {got:?}, upstream {rules:?}"));
                }
            }
            _ => failures.push(format!("cannot read upstream line: {line}")),
        }
    }
    failures
}

fn run(name: &str, objects: &Path, out_dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let sc_path = [out_dir, objects.parent().unwrap()]
        .iter()
        .map(|d| d.join("scenario.yaml"))
        .find(|p| p.exists());
    let sc: Scenario = sc_path
        .map(|p| serde_saphyr::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .unwrap_or_default();
    let mut problems = Vec::new();
    let objs = load_objects(objects, &mut problems);
    let mut store = Store::new(sc.node_name.clone());
    store.replace_all(&objs);
    let state = store.snapshot();
    for fam in &sc.families {
        let family = if fam == "v6" {
            IpFamily::V6
        } else {
            IpFamily::V4
        };
        let planned = plan(state.family(family), &config(&sc, family));
        compare(
            &out_dir.join(format!("ipvs.{fam}")),
            &planned.dry_run(),
            &mut failures,
        );
        if let Ok(text) = std::fs::read_to_string(out_dir.join(format!("upstream.{fam}"))) {
            failures.extend(
                check_upstream(&planned, &text)
                    .into_iter()
                    .map(|f| format!("{name} ({fam}) vs upstream: {f}")),
            );
        }
    }
    failures
}

/// Every scenario plans exactly its checked-in output and agrees with upstream
/// where upstream's assertions are recorded.
#[test]
fn golden_scenarios() {
    let tests = root();
    let mut runs: BTreeMap<String, (PathBuf, PathBuf)> = BTreeMap::new();
    for entry in std::fs::read_dir(tests.join("golden")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("objects.yaml").exists() {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            let out = tests.join("golden-ipvs").join(&name);
            runs.insert(name, (dir.join("objects.yaml"), out));
        }
    }
    for entry in std::fs::read_dir(tests.join("golden-ipvs")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("objects.yaml").exists() {
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            runs.insert(name, (dir.join("objects.yaml"), dir.clone()));
        }
    }
    assert!(runs.len() > 40, "scenarios missing");
    let mut failures = Vec::new();
    for (name, (objects, out)) in &runs {
        failures.extend(run(name, objects, out));
    }
    assert!(
        failures.is_empty(),
        "{} golden failure(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{} IPVS golden scenarios passed", runs.len());
}
