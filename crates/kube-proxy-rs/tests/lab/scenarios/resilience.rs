//! Churn, restarts, and the matrix checking itself (a broken rule is noticed).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::super::Lab;
use super::super::manifests::{Ep, Port, Svc, nodes, slice};
use super::{LoadLoop, ip, until_all};

/// Churn under load: endpoints added while a client keeps connecting lose no
/// connection; after an endpoint is removed and the proxy synced, no new
/// connection reaches it.
pub fn churn(mode: &str) {
    let mut lab = Lab::new(mode);
    let names = [(1u8, "e1"), (2, "e2"), (1, "e3"), (2, "e4")];
    let pods: Vec<usize> = names
        .iter()
        .map(|(n, name)| lab.pod(*n, name, 8080))
        .collect();
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let ips: Vec<_> = pods.iter().map(|p| lab.cluster.pods[*p].ip4).collect();
    let ep = |i: usize| Ep::ready(ips[i], names[i].0);
    let svc = Svc::new("churn", "10.96.0.100", ports.clone());
    let manifest = |eps: &[Ep]| svc.yaml() + &slice("churn", "churn-1", false, eps, &ports);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest("churn.yaml", &manifest(&[ep(0), ep(1)]));
    lab.start();
    let vip = ip("10.96.0.100");

    let load = LoadLoop::start(&lab, c, vip, 80);
    std::thread::sleep(Duration::from_millis(300));
    lab.apply("churn.yaml", &manifest(&[ep(0), ep(1), ep(2)]));
    std::thread::sleep(Duration::from_millis(300));
    lab.apply("churn.yaml", &manifest(&[ep(0), ep(1), ep(2), ep(3)]));
    std::thread::sleep(Duration::from_millis(300));
    let results = load.finish();
    if mode == "nftables" {
        // These partial syncs went over netlink, not `nft -f`.
        let log = lab.log(1);
        assert!(
            log.contains("nftables transactions go over netlink"),
            "{log}"
        );
    }
    let failures: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(results.len() > 100, "only {} requests", results.len());
    assert!(
        failures.is_empty(),
        "{} of {} connections failed while endpoints were added: {failures:?}",
        failures.len(),
        results.len()
    );
    let seen: BTreeSet<&str> = results
        .iter()
        .filter_map(|(_, r)| r.as_deref().ok())
        .collect();
    assert_eq!(seen.len(), 4, "new endpoints took traffic: {seen:?}");

    let load = LoadLoop::start(&lab, c, vip, 80);
    std::thread::sleep(Duration::from_millis(200));
    lab.apply("churn.yaml", &manifest(&[ep(0), ep(1), ep(3)]));
    let synced = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let results = load.finish();
    let late: Vec<_> = results
        .iter()
        .filter(|(t, r)| *t > synced && r.as_deref() == Ok("e3"))
        .collect();
    assert!(
        late.is_empty(),
        "{} new connections reached the removed endpoint after the sync",
        late.len()
    );
    // Enough requests after the sync to mean something (the emulated VM of the
    // IPVS runs manages far fewer per second).
    let after = results.iter().filter(|(t, _)| *t > synced).count();
    let enough = if super::super::in_vm() { 10 } else { 50 };
    assert!(after > enough, "only {after} requests after the sync");
    assert!(
        results.iter().all(|(_, r)| r.is_ok()),
        "removing an endpoint (still running) failed no connection"
    );
}

/// Restarting the proxy under continuous load loses no connection: the rules stay
/// in place while it is down and the restart rewrites them atomically.
pub fn restart(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "r.yaml",
        &(Svc::new("r", "10.96.0.110", ports.clone()).yaml()
            + &slice(
                "r",
                "r-1",
                false,
                &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
                &ports,
            )),
    );
    lab.start();
    let load = LoadLoop::start(&lab, c, ip("10.96.0.110"), 80);
    std::thread::sleep(Duration::from_millis(300));
    lab.stop_proxy(1);
    std::thread::sleep(Duration::from_millis(500));
    lab.start_proxy(1);
    std::thread::sleep(Duration::from_millis(300));
    let results = load.finish();
    let failures: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(results.len() > 100, "only {} requests", results.len());
    assert!(
        failures.is_empty(),
        "{} of {} connections failed across the restart: {failures:?}",
        failures.len(),
        results.len()
    );
}

/// The checks of [`cluster_ip`] fail when a rule is broken: deleting the rule that
/// sends the Service's traffic to its endpoints (with the proxy stopped so it
/// cannot repair it) makes the same assertion fail.
pub fn broken_rule_is_detected(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let a4 = lab.cluster.pods[a].ip4;
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "web.yaml",
        &(Svc::new("web", "10.96.0.10", ports.clone()).yaml()
            + &slice("web", "web-1", false, &[Ep::ready(a4, 1)], &ports)),
    );
    lab.start();
    let vip = ip("10.96.0.10");
    let check = |lab: &Lab| until_all(lab, &lab.cluster.pods[c], vip, 80, false, &["a"], 5);
    assert!(check(&lab).contains("a"), "works before the rule is broken");
    lab.stop_proxy(1);
    let node = &lab.cluster.node(1).host.ns;
    match mode {
        "iptables" => {
            let rules = node.sh("iptables-save -t nat").unwrap();
            let rule = rules
                .lines()
                .find(|l| l.starts_with("-A KUBE-SERVICES") && l.contains("10.96.0.10/32"))
                .expect("the ClusterIP rule");
            let mut args: Vec<String> = vec!["-t".into(), "nat".into(), "-D".into()];
            args.extend(kpr_iptables::dump::split_words(rule).into_iter().skip(1));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            node.exec("iptables", &args).unwrap();
        }
        "nftables" => {
            node.exec(
                "nft",
                &[
                    "delete",
                    "element",
                    "ip",
                    "kube-proxy",
                    "service-ips",
                    "{ 10.96.0.10 . tcp . 80 }",
                ],
            )
            .unwrap();
        }
        "ipvs" => {
            node.exec("ipvsadm", &["-D", "-t", "10.96.0.10:80"])
                .unwrap();
        }
        other => panic!("no rule breaker for mode {other}"),
    }
    let broken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&lab)));
    assert!(
        broken.is_err(),
        "the scenario check passed with the Service's rule deleted"
    );
}

/// True if node `i` holds objects of proxy mode `mode`.
fn has_objects(lab: &Lab, i: u8, mode: &str) -> bool {
    let node = &lab.cluster.node(i).host.ns;
    match mode {
        // IPVS mode has a nat KUBE-SERVICES too; only iptables mode has canaries.
        "iptables" => node
            .sh("iptables-save -t nat")
            .unwrap()
            .contains(":KUBE-PROXY-CANARY"),
        "ipvs" => node.ip(&["link", "show", "kube-ipvs0"]).is_ok(),
        "nftables" => node.sh("nft list tables").unwrap().contains("kube-proxy"),
        other => panic!("no object check for mode {other}"),
    }
}

/// Switching a node's proxy mode (stop, start with the other `--proxy-mode`, and
/// back): each start removes the other mode's objects, as upstream does, and the
/// Service keeps working through the new ones.
pub fn mode_switch(first: &str, second: &str) {
    let mut lab = Lab::new(first);
    let a = lab.pod(1, "a", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080)];
    let a4 = lab.cluster.pods[a].ip4;
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "web.yaml",
        &(Svc::new("web", "10.96.0.10", ports.clone()).yaml()
            + &slice("web", "web-1", false, &[Ep::ready(a4, 1)], &ports)),
    );
    lab.start_proxy(1);
    let vip = ip("10.96.0.10");
    for mode in [first, second, first] {
        if lab.mode != mode {
            lab.stop_proxy(1);
            lab.mode = mode.to_string();
            lab.start_proxy(1);
        }
        let other = if mode == first { second } else { first };
        assert!(
            has_objects(&lab, 1, mode),
            "{mode} objects after starting in {mode} mode"
        );
        assert!(
            !has_objects(&lab, 1, other),
            "{other} leftovers after starting in {mode} mode"
        );
        let seen = until_all(&lab, &lab.cluster.pods[c], vip, 80, false, &["a"], 5);
        assert!(seen.contains("a"), "Service works in {mode} mode");
    }
}
