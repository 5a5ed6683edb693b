use super::super::IpvsFacts;
use super::*;

/// A healthy iptables-mode node.
fn healthy() -> Facts {
    Facts {
        mode: Some(ProxyMode::Iptables),
        ip_forward: Some("1".into()),
        ipv6_forwarding: Some("1".into()),
        ipv6_cluster: true,
        bridges: vec!["cni0".into()],
        bridge_nf_call_iptables: Some("1".into()),
        bridge_nf_call_ip6tables: Some("1".into()),
        conntrack_count: Some(1000),
        conntrack_max: Some(262_144),
        conntrack_max_wanted: Some(65_536),
        iptables_version: Some("iptables v1.8.9 (nf_tables)".into()),
        legacy_rules: Some((0, 0)),
        nft_backend_rules: Some((40, 30)),
        iptables_usable: Some(Ok(())),
        nftables_usable: None,
        kernel: Some("6.1.0-28-amd64".into()),
        route_localnet: Some("1".into()),
        localhost_node_ports: true,
        other_proxies: Vec::new(),
        ipvs: None,
    }
}

fn find(findings: &[Finding], check: &str, severity: Severity) -> String {
    findings
        .iter()
        .find(|f| f.check == check && f.severity == severity)
        .map(|f| f.message.clone())
        .unwrap_or_else(|| panic!("no {severity:?} {check} in {findings:#?}"))
}

#[test]
fn a_healthy_node_passes_everything() {
    let findings = evaluate(&healthy());
    let bad: Vec<_> = findings
        .iter()
        .filter(|f| f.severity != Severity::Pass)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(super::super::exit_status(&findings), 0);
}

#[test]
fn ip_forward_off_fails_with_the_fix() {
    let facts = Facts {
        ip_forward: Some("0".into()),
        ..healthy()
    };
    let findings = evaluate(&facts);
    assert!(
        find(&findings, "ip_forward", Severity::Fail).contains("sysctl -w net.ipv4.ip_forward=1")
    );
    assert_eq!(super::super::exit_status(&findings), 1);
}

/// The seeds' DNS failure: a bridge without br_netfilter.
#[test]
fn bridge_without_br_netfilter_fails() {
    let facts = Facts {
        bridge_nf_call_iptables: None,
        bridge_nf_call_ip6tables: None,
        ..healthy()
    };
    let m = find(&evaluate(&facts), "br_netfilter", Severity::Fail);
    assert!(
        m.contains("cni0") && m.contains("modprobe br_netfilter"),
        "{m}"
    );
    // Without a bridge it is not needed.
    let facts = Facts {
        bridges: Vec::new(),
        ..facts
    };
    find(&evaluate(&facts), "br_netfilter", Severity::Pass);
    let facts = Facts {
        bridge_nf_call_iptables: Some("0".into()),
        ..healthy()
    };
    find(&evaluate(&facts), "br_netfilter", Severity::Fail);
}

/// The seeds' "nf_conntrack: table full" failure, seen coming.
#[test]
fn conntrack_usage_warns_then_fails() {
    let at = |count| Facts {
        conntrack_count: Some(count),
        conntrack_max: Some(1000),
        conntrack_max_wanted: None,
        ..healthy()
    };
    find(&evaluate(&at(700)), "conntrack", Severity::Pass);
    assert!(find(&evaluate(&at(800)), "conntrack", Severity::Warn).contains("80%"));
    assert!(find(&evaluate(&at(950)), "conntrack", Severity::Fail).contains("table full"));
    let low = Facts {
        conntrack_max_wanted: Some(131_072),
        conntrack_max: Some(65_536),
        ..healthy()
    };
    assert!(find(&evaluate(&low), "conntrack", Severity::Warn).contains("asks for 131072"));
}

#[test]
fn rules_in_the_other_iptables_backend_warn() {
    let facts = Facts {
        legacy_rules: Some((12, 10)),
        ..healthy()
    };
    let m = find(&evaluate(&facts), "iptables-backend", Severity::Warn);
    assert!(
        m.contains("iptables-legacy") && m.contains("10 rules in KUBE- chains"),
        "{m}"
    );
    let facts = Facts {
        legacy_rules: Some((5, 0)),
        ..healthy()
    };
    assert!(
        find(&evaluate(&facts), "iptables-backend", Severity::Warn).contains("another component")
    );
    // nftables mode: iptables-mode leftovers are named.
    let facts = Facts {
        mode: Some(ProxyMode::Nftables),
        nftables_usable: Some(Ok(())),
        localhost_node_ports: false,
        route_localnet: Some("0".into()),
        ..healthy()
    };
    assert!(
        find(&evaluate(&facts), "iptables-backend", Severity::Warn).contains("30 iptables rules")
    );
}

#[test]
fn nftables_needs_kernel_support() {
    let base = Facts {
        mode: Some(ProxyMode::Nftables),
        nft_backend_rules: Some((0, 0)),
        localhost_node_ports: false,
        route_localnet: Some("0".into()),
        ..healthy()
    };
    let facts = Facts {
        nftables_usable: Some(Err(
            "Error: Could not process rule: No such file or directory".into(),
        )),
        ..base.clone()
    };
    find(&evaluate(&facts), "kernel", Severity::Fail);
    let facts = Facts {
        kernel: Some("5.10.0-30-amd64".into()),
        nftables_usable: Some(Ok(())),
        ..base.clone()
    };
    assert!(find(&evaluate(&facts), "kernel", Severity::Fail).contains("5.13"));
    let facts = Facts {
        nftables_usable: Some(Ok(())),
        ..base
    };
    assert_eq!(super::super::exit_status(&evaluate(&facts)), 0);
}

#[test]
fn route_localnet_without_localhost_node_ports_warns() {
    let facts = Facts {
        localhost_node_ports: false,
        ..healthy()
    };
    assert!(find(&evaluate(&facts), "route_localnet", Severity::Warn).contains("CVE-2020-8558"));
}

#[test]
fn a_running_upstream_kube_proxy_fails() {
    let facts = Facts {
        other_proxies: vec![(
            42,
            "/usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.conf".into(),
        )],
        ..healthy()
    };
    assert!(find(&evaluate(&facts), "other-proxy", Severity::Fail).contains("pid 42"));
}

#[test]
fn kernel_versions_compare() {
    assert!(version_below("5.10.0-30-amd64", (5, 13)));
    assert!(!version_below("5.13.0", (5, 13)));
    assert!(!version_below("6.1.0-28-amd64", (5, 13)));
    assert!(version_below("garbage", (5, 13)));
}

#[test]
fn ipv6_forwarding_matters_only_with_ipv6_pods() {
    let facts = Facts {
        ipv6_forwarding: Some("0".into()),
        ..healthy()
    };
    find(&evaluate(&facts), "ipv6_forwarding", Severity::Warn);
    let facts = Facts {
        ipv6_cluster: false,
        ..facts
    };
    find(&evaluate(&facts), "ipv6_forwarding", Severity::Pass);
}

/// IPVS mode: a kernel without ip_vs fails, a scheduler not loaded yet warns, a
/// missing ipset fails.
#[test]
fn ipvs_mode_findings() {
    let mut facts = healthy();
    facts.mode = Some(ProxyMode::Ipvs);
    facts.ipvs = Some(IpvsFacts {
        table: Ok(()),
        ipset: Ok("v7.17".into()),
        scheduler: "sh".into(),
        scheduler_loaded: true,
    });
    let findings = evaluate(&facts);
    assert!(find(&findings, "kernel", Severity::Pass).contains("scheduler sh"));
    find(&findings, "ipset", Severity::Pass);
    facts.ipvs = Some(IpvsFacts {
        table: Err("IPVS is not available".into()),
        ipset: Err("cannot run ipset --version".into()),
        scheduler: "sh".into(),
        scheduler_loaded: false,
    });
    let findings = evaluate(&facts);
    assert!(find(&findings, "kernel", Severity::Fail).contains("refuses to start"));
    assert!(find(&findings, "ipset", Severity::Fail).contains("install the ipset package"));
    if let Some(i) = facts.ipvs.as_mut() {
        i.table = Ok(());
    }
    assert!(find(&evaluate(&facts), "kernel", Severity::Warn).contains("modprobe ip_vs_sh"));
}
