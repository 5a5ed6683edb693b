//! Golden tests of the nftables renderer: `tests/golden-nftables/<scenario>/objects.yaml`
//! rendered per family and compared with
//! - `nftables.<family>`: our creation script (rewritten with `UPDATE_GOLDEN=1`);
//! - `upstream.<family>` (optional): upstream kube-proxy's expected ruleset for the
//!   same objects (from its nftables proxier tests), compared after upstream's
//!   normalisation;
//! - `flows.<family>` (optional): packets traced through the ruleset
//!   (`name | source | protocol | destination | port | output | masq`);
//! - `problems.txt` (optional): expected problem lines, else there must be none;
//! - `view-drift.<family>` (optional): the script is loaded into a network namespace
//!   and read back as `show` reads it; what it sees must agree with the model's
//!   wanted view except for the differences listed here.
//!
//! Every ruleset is also created once with `nft -f` and once over netlink
//! ([`kpr_nftables::netlink`]), in two namespaces: the kernel must report the same
//! objects and the same rule bytecode for both (`nft --debug=netlink list table`).
//!
//! `scenario.yaml` (optional) changes settings; the defaults are those of upstream's
//! nftables fake proxier (`NewFakeProxier` in `pkg/proxy/nftables/proxier_test.go`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::IpNet;
use kpr_model::{IpFamily, LocalDetector, NodePortAddresses, Objects, Store};
use kpr_netns_lab::Netns;
use kpr_nftables::netlink::NfTables;
use kpr_nftables::objects::Family;
use kpr_nftables::trace::{Packet, trace};
use kpr_nftables::{RenderConfig, Ruleset, base, service_port, sort_like_upstream};
use kpr_source::{Object, parse_manifest};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Scenario {
    node_name: String,
    host_ips: Vec<IpAddr>,
    node_ip_v4: Option<IpAddr>,
    node_ip_v6: Option<IpAddr>,
    local_cidr_v4: Option<IpNet>,
    local_cidr_v6: Option<IpNet>,
    masquerade_mark: String,
    masquerade_all: bool,
    /// CIDRs; null means all local addresses.
    node_port_addresses: Option<Vec<IpNet>>,
    service_cidrs: Vec<IpNet>,
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
            node_port_addresses: Some(vec![
                "192.168.0.2/32".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap(),
            ]),
            service_cidrs: vec![
                "172.30.0.0/16".parse().unwrap(),
                "fd00:10:96::/112".parse().unwrap(),
            ],
            families: vec!["v4".into()],
        }
    }
}

fn config(sc: &Scenario, family: IpFamily) -> RenderConfig {
    let v6 = family == IpFamily::V6;
    let of = |ip: &IpAddr| IpFamily::of(ip) == family;
    let cidr = if v6 {
        sc.local_cidr_v6
    } else {
        sc.local_cidr_v4
    };
    let node_port_addresses = match &sc.node_port_addresses {
        None => NodePortAddresses::All,
        Some(cidrs) => {
            let mine: Vec<&IpNet> = cidrs.iter().filter(|c| of(&c.addr())).collect();
            if mine.is_empty() || mine.iter().any(|c| c.prefix_len() == 0) {
                NodePortAddresses::All
            } else {
                let mut cands: Vec<IpAddr> =
                    vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
                cands.extend(sc.host_ips.iter().copied());
                NodePortAddresses::Ips(
                    cands
                        .into_iter()
                        .filter(|ip| of(ip) && mine.iter().any(|c| c.contains(ip)))
                        .collect(),
                )
            }
        }
    };
    RenderConfig {
        family,
        masquerade_mark: sc.masquerade_mark.clone(),
        masquerade_all: sc.masquerade_all,
        local_detector: cidr.map_or(LocalDetector::None, LocalDetector::Cidr),
        node_port_addresses,
        service_cidrs: sc
            .service_cidrs
            .iter()
            .filter(|c| of(&c.addr()))
            .copied()
            .collect(),
        node_ip: if v6 { sc.node_ip_v6 } else { sc.node_ip_v4 },
    }
}

fn compare(path: &Path, actual: &str, failures: &mut Vec<String>) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        _ if update => std::fs::write(path, actual).unwrap(),
        Ok(expected) => failures.push(format!(
            "{} differs:\n{}",
            path.display(),
            diff(&expected, actual)
        )),
        Err(_) => failures.push(format!(
            "{} missing (run with UPDATE_GOLDEN=1)",
            path.display()
        )),
    }
}

fn diff(expected: &str, actual: &str) -> String {
    let e: std::collections::HashSet<&str> = expected.lines().collect();
    let a: std::collections::HashSet<&str> = actual.lines().collect();
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

/// Loads `script` into `ns` (where it stays, for [`check_netlink`]), reads the table
/// back with `nft --json` and checks that what `show` sees agrees with what the model
/// wants, except for the differences `view-drift.<family>` lists.
fn check_view(
    ns: &Netns,
    dir: &Path,
    fam: &str,
    family: IpFamily,
    state: &kpr_model::ProxyState,
    script: &str,
    failures: &mut Vec<String>,
) {
    let word = Family(family).word();
    common::nft(ns, &["-f", "-"], Some(script));
    let out = ns
        .exec("nft", &["--json", "list", "table", word, "kube-proxy"])
        .unwrap();
    let json = String::from_utf8(out.stdout).unwrap();
    let wanted: Vec<_> = kpr_model::view::wanted(state)
        .into_iter()
        .filter(|f| f.key.family == family)
        .collect();
    let programmed = kpr_nftables::view::frontends(family, &json).unwrap();
    let drift: String = kpr_model::view::drift(&wanted, &programmed)
        .iter()
        .map(|d| format!("{d}\n"))
        .collect();
    let path = dir.join(format!("view-drift.{fam}"));
    if path.exists() || !drift.is_empty() {
        compare(&path, &drift, failures);
    }
}

/// Creates `rs` over netlink in `lab.1` and compares what the kernel holds, bytecode
/// included, with `lab.0`, where [`check_view`] loaded it with `nft -f`; then deletes
/// both tables.
fn check_netlink(lab: &Lab, dir: &Path, rs: &Ruleset, failures: &mut Vec<String>) {
    let word = rs.family.word();
    let sent = lab.2.lock().unwrap().apply(&rs.creation());
    if let Err(e) = sent {
        failures.push(format!("{}: {word}: netlink: {e}", dir.display()));
    }
    let list = |ns: &Netns| {
        let out = ns
            .exec(
                "nft",
                &["--debug=netlink", "list", "table", word, "kube-proxy"],
            )
            .unwrap();
        let _ = ns.exec("nft", &["delete", "table", word, "kube-proxy"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        common::comparable(&text)
    };
    let (by_nft, by_netlink) = (list(&lab.0), list(&lab.1));
    if by_nft != by_netlink {
        failures.push(format!(
            "{}: {word}: netlink and nft -f created different tables:\n{}",
            dir.display(),
            diff(&by_nft, &by_netlink)
        ));
    }
}

/// The namespaces of the run: views and `nft -f`, netlink, and its socket.
struct Lab(Netns, Netns, Mutex<NfTables>);

fn run_scenario(lab: &Lab, dir: &Path) -> Vec<String> {
    let ns = &lab.0;
    let mut failures = Vec::new();
    let sc: Scenario = match std::fs::read_to_string(dir.join("scenario.yaml")) {
        Ok(t) => serde_saphyr::from_str(&t).unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
        Err(_) => Scenario::default(),
    };
    let text = std::fs::read_to_string(dir.join("objects.yaml")).unwrap();
    let parsed = parse_manifest(&text, "objects.yaml");
    let mut problems: Vec<String> = parsed.problems.iter().map(ToString::to_string).collect();
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
    let mut store = Store::new(sc.node_name.clone());
    problems.extend(store.replace_all(&objects).iter().map(ToString::to_string));
    let state = store.snapshot();
    let problems_text: String = problems.iter().map(|p| format!("{p}\n")).collect();
    if dir.join("problems.txt").exists() || !problems.is_empty() {
        compare(&dir.join("problems.txt"), &problems_text, &mut failures);
    }
    for fam in &sc.families {
        let family = if fam == "v6" {
            IpFamily::V6
        } else {
            IpFamily::V4
        };
        let cfg = config(&sc, family);
        let mut rs = Ruleset::new(Family(family));
        rs.add(&base(&cfg));
        for svc in state.family(family).services.values() {
            for port in &svc.ports {
                rs.add(&service_port(port, &cfg));
            }
        }
        let script = rs.creation_script();
        compare(&dir.join(format!("nftables.{fam}")), &script, &mut failures);
        check_view(ns, dir, fam, family, &state, &script, &mut failures);
        check_netlink(lab, dir, &rs, &mut failures);
        if let Ok(upstream) = std::fs::read_to_string(dir.join(format!("upstream.{fam}"))) {
            let ours = rs.dump_upstream();
            let theirs = sort_like_upstream(&upstream);
            if ours != theirs {
                failures.push(format!(
                    "{}: {fam}: differs from upstream's expected ruleset:\n{}",
                    dir.display(),
                    diff(&theirs, &ours)
                ));
            }
        }
        if let Ok(flows) = std::fs::read_to_string(dir.join(format!("flows.{fam}"))) {
            for line in flows
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                let f: Vec<&str> = line.split('|').map(str::trim).collect();
                assert_eq!(f.len(), 7, "bad flow line {line:?}");
                let protocol = kpr_model::Protocol::from_kubernetes(&f[2].to_uppercase()).unwrap();
                let out = trace(
                    &rs,
                    &sc.host_ips,
                    &Packet {
                        source: f[1].parse().unwrap(),
                        protocol,
                        destination: f[3].parse().unwrap(),
                        port: f[4].parse().unwrap(),
                    },
                );
                let masq = f[6] == "true";
                if out.output != f[5] || out.masquerade != masq {
                    failures.push(format!(
                        "{}: flow {:?}: expected {:?} masq {masq}, got {:?} masq {}\n  {}",
                        dir.display(),
                        f[0],
                        f[5],
                        out.output,
                        out.masquerade,
                        out.matched.join("\n  ")
                    ));
                }
            }
        }
    }
    failures
}

/// Every nftables golden scenario renders its checked-in ruleset, agrees with
/// upstream where recorded, and passes its packet flows.
#[test]
fn golden_nftables_scenarios() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden-nftables");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("objects.yaml").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    let netlink = Netns::new("ngn").unwrap();
    let socket = netlink.enter(NfTables::new).unwrap().unwrap();
    let lab = Lab(Netns::new("ngv").unwrap(), netlink, Mutex::new(socket));
    let failures: Vec<String> = dirs.iter().flat_map(|d| run_scenario(&lab, d)).collect();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{} nftables golden scenarios passed", dirs.len());
}
