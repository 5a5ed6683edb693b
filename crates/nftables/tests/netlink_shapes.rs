//! Every rule shape, set and operation the nftables mode writes, sent once with
//! `nft -f` and once over netlink into two namespaces made by the test: the kernel
//! must hold the same objects and the same bytecode. Covers what the golden scenarios
//! do not (interface-name and unaligned pod-CIDR detectors, several and overlapping
//! source ranges, deletions), and the fallback to `nft -f` for what has no netlink form.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ipnet::IpNet;
use kpr_model::{IpFamily, LocalDetector, Protocol};
use kpr_netns_lab::Netns;
use kpr_nftables::Transaction;
use kpr_nftables::netlink::batch::{AnonNames, encode};
use kpr_nftables::objects::{Chain, Element, Family, Hook, Key, KeyType, Rule, Set, Verdict};
use kpr_nftables::sync::DIFFED_SETS;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

struct Addrs {
    cluster_ip: &'static str,
    endpoint: &'static str,
    pods_aligned: &'static str,
    pods_unaligned: &'static str,
    ranges: [&'static str; 3],
    single: &'static str,
    cidrs: [&'static str; 2],
}

fn addrs(f: IpFamily) -> Addrs {
    match f {
        IpFamily::V4 => Addrs {
            cluster_ip: "172.30.0.41",
            endpoint: "10.180.0.1",
            pods_aligned: "10.0.0.0/8",
            pods_unaligned: "10.96.0.0/12",
            ranges: ["203.0.113.0/25", "192.168.0.0/24", "192.168.0.128/25"],
            single: "203.0.113.7",
            cidrs: ["172.30.0.0/16", "10.96.0.0/12"],
        },
        IpFamily::V6 => Addrs {
            cluster_ip: "fd00::41",
            endpoint: "fd00::a1",
            pods_aligned: "fd00:10::/64",
            pods_unaligned: "fd00:1:2:3::/60",
            ranges: ["2001:db8::/64", "2001:db8:2::/64", "2001:db8:2::/80"],
            single: "2001:db8:1::7",
            cidrs: ["fd00:10:96::/112", "fd01::/108"],
        },
    }
}

fn rules(f: IpFamily) -> Vec<Rule> {
    let a = addrs(f);
    let ip = |s: &str| s.parse().unwrap();
    let detectors = [
        LocalDetector::Cidr(net(a.pods_aligned)),
        LocalDetector::Cidr(net(a.pods_unaligned)),
        LocalDetector::BridgeInterface("cbr0".into()),
        LocalDetector::InterfaceNamePrefix("veth".into()),
    ];
    let mut rules = vec![
        Rule::CtNewJump("b"),
        Rule::Jump("b".into()),
        Rule::Goto("b".into()),
        Rule::RejectClusterIpPorts,
        Rule::DropUnallocated(vec![net(a.cidrs[0])]),
        Rule::DropUnallocated(a.cidrs.iter().map(|c| net(c)).collect()),
        Rule::DestVmap("service-ips"),
        Rule::MasqueradeLocal,
        Rule::ShortCircuitLocal("b".into()),
        Rule::FirewallDrop(a.ranges.iter().map(|s| s.to_string()).collect()),
        Rule::FirewallDrop(vec![a.single.into(), a.ranges[0].into()]),
        Rule::FirewallDrop(vec![a.single.into()]),
        Rule::AffinityGoto {
            set: "affinity-X".into(),
            chain: "b".into(),
        },
        Rule::NumgenVmap(vec!["a".into(), "b".into(), "c".into()]),
        Rule::MasqueradeHairpin(ip(a.endpoint)),
        Rule::AffinityUpdate("affinity-X".into()),
        Rule::MasqueradeClusterIp {
            ip: ip(a.cluster_ip),
            not_local: None,
        },
    ];
    for via_set in [false, true] {
        for fib_local in [false, true] {
            rules.push(Rule::NodePortVmap {
                map: "service-nodeports",
                via_set,
                fib_local,
            });
        }
    }
    for d in detectors {
        rules.push(Rule::MasqueradeClusterIp {
            ip: ip(a.cluster_ip),
            not_local: Some(d.clone()),
        });
        rules.push(Rule::ShortCircuitPods(d, "b".into()));
    }
    for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        rules.push(Rule::Dnat(p, ip(a.endpoint), 8080));
    }
    rules
}

/// Chains `a` (every rule shape), `b`, `c` and `mark-for-masquerade`, the maps and
/// sets the rules use, elements of every key type and value.
fn everything(f: IpFamily) -> Transaction {
    let a = addrs(f);
    let mut tx = Transaction::new(Family(f));
    tx.add_table();
    tx.add_chain(&Chain {
        comment: Some("helper for @no-endpoint-services / @no-endpoint-nodeports"),
        ..Chain::new("b", Vec::new())
    });
    tx.add_chain_name("c");
    tx.add_chain(&Chain::new("a", Vec::new()));
    let mut mark = Chain::new("mark-for-masquerade", Vec::new());
    for r in [
        Rule::ReturnUnmarked("0x4000".into()),
        Rule::MarkXor("0x4000".into()),
        Rule::MarkOr("0x4000".into()),
        Rule::MasqueradeFullyRandom,
        Rule::Reject,
    ] {
        mark.rules.push(r);
    }
    tx.add_chain(&mark);
    let set = |name: &str, key, map, comment| Set {
        name: name.into(),
        key,
        verdict_map: map,
        timeout: None,
        comment,
    };
    tx.add_set(&set(
        "cluster-ips",
        KeyType::Addr,
        false,
        Some("Active ClusterIPs"),
    ));
    tx.add_set(&set("nodeport-ips", KeyType::Addr, false, None));
    tx.add_set(&set(
        "service-ips",
        KeyType::AddrProtoPort,
        true,
        Some("ClusterIP, ExternalIP and LoadBalancer IP traffic"),
    ));
    tx.add_set(&set(
        "service-nodeports",
        KeyType::ProtoPort,
        true,
        Some("NodePort traffic"),
    ));
    tx.add_set(&Set {
        timeout: Some(10800),
        ..set("affinity-X", KeyType::Addr, false, None)
    });
    for r in &mark.rules {
        tx.add_rule("mark-for-masquerade", r);
    }
    for r in rules(f) {
        tx.add_rule("a", &r);
    }
    let cip = a.cluster_ip.parse().unwrap();
    tx.add_element(&Element {
        set: "cluster-ips",
        key: Key::Addr(cip),
        value: None,
        comment: None,
    });
    tx.add_element(&Element {
        set: "service-ips",
        key: Key::AddrProtoPort(cip, Protocol::Tcp, 80),
        value: Some(Verdict::Goto("c".into())),
        comment: None,
    });
    tx.add_element(&Element {
        set: "service-ips",
        key: Key::AddrProtoPort(cip, Protocol::Udp, 53),
        value: Some(Verdict::Drop),
        comment: Some("ns/svc:dns".into()),
    });
    tx.add_element(&Element {
        set: "service-nodeports",
        key: Key::ProtoPort(Protocol::Sctp, 30001),
        value: Some(Verdict::Goto("c".into())),
        comment: None,
    });
    tx
}

/// A second transaction on top: deletions and flushes.
fn changes(f: IpFamily) -> Transaction {
    let a = addrs(f);
    let mut tx = Transaction::new(Family(f));
    tx.delete_element("service-ips", &format!("{} . udp . 53", a.cluster_ip));
    tx.flush_set("service-nodeports", true);
    tx.flush_chain("a");
    tx.add_rule("a", &Rule::Goto("c".into()));
    tx.delete_set("affinity-X", false);
    tx
}

fn listing(ns: &Netns, f: IpFamily) -> String {
    let word = Family(f).word();
    comparable(&nft(
        ns,
        &["--debug=netlink", "list", "table", word, "kube-proxy"],
        None,
    ))
}

#[test]
fn every_shape_lists_the_same_over_netlink() {
    for f in [IpFamily::V4, IpFamily::V6] {
        let by_nft = Netns::new("nls-nft").unwrap();
        let by_netlink = Netns::new("nls-nl").unwrap();
        let plain = nft_in(&by_nft, f);
        let socket = nft_netlink_in(&by_netlink, f);
        for tx in [everything(f), changes(f)] {
            assert!(
                encode(&tx, 1, &mut AnonNames::new(1)).is_ok(),
                "{f:?}: {}",
                tx.text()
            );
            plain.apply(&tx).unwrap();
            socket.apply(&tx).unwrap();
            let (want, got) = (listing(&by_nft, f), listing(&by_netlink, f));
            if want != got {
                let diff: Vec<String> = want
                    .lines()
                    .zip(got.lines())
                    .filter(|(w, g)| w != g)
                    .take(12)
                    .map(|(w, g)| format!("nft -f : {w}\nnetlink: {g}"))
                    .collect();
                panic!("{f:?}: tables differ:\n{}", diff.join("\n"));
            }
            // Read back over netlink as `nft --json list` reads it.
            let (json, dumped) = (plain.list().unwrap(), socket.list().unwrap());
            assert!(json.table && dumped.table);
            assert_eq!(json.chains, dumped.chains, "{f:?}");
            assert_eq!(json.sets, dumped.sets, "{f:?}");
            assert_eq!(json.maps, dumped.maps, "{f:?}");
            for set in DIFFED_SETS {
                assert_eq!(
                    json.elements.get(set),
                    dumped.elements.get(set),
                    "{f:?} {set}"
                );
            }
            let compared: usize = DIFFED_SETS
                .iter()
                .filter_map(|s| dumped.elements.get(*s))
                .map(|e| e.len())
                .sum();
            assert!(compared >= 2, "{f:?}: elements compared: {dumped:#?}");
        }
    }
}

/// A base chain with its hook, and a range reaching the top address (no netlink form
/// here: the transaction goes through `nft -f` and still applies).
#[test]
fn hooks_and_the_nft_fallback() {
    let ns = Netns::new("nls-hook").unwrap();
    let tool = nft_netlink_in(&ns, IpFamily::V4);
    let mut tx = Transaction::new(Family(IpFamily::V4));
    tx.add_table();
    tx.add_chain(&Chain {
        hook: Some(Hook {
            kind: "filter",
            hook: "forward",
            priority: -110,
        }),
        ..Chain::new("filter-forward", Vec::new())
    });
    tx.add_chain_name("fw");
    assert!(encode(&tx, 1, &mut AnonNames::new(1)).is_ok());
    tool.apply(&tx).unwrap();
    let listed = nft(&ns, &["list", "table", "ip", "kube-proxy"], None);
    assert!(
        listed.contains("type filter hook forward priority -110; policy accept;")
            || listed.contains("type filter hook forward priority dstnat - 10; policy accept;"),
        "{listed}"
    );
    let mut top = Transaction::new(Family(IpFamily::V4));
    top.add_rule(
        "fw",
        &Rule::FirewallDrop(vec!["255.255.255.0/24".into(), "10.0.0.0/8".into()]),
    );
    assert!(encode(&top, 1, &mut AnonNames::new(1)).is_err());
    tool.apply(&top).unwrap();
    let listed = nft(&ns, &["list", "chain", "ip", "kube-proxy", "fw"], None);
    assert!(listed.contains("255.255.255.0/24"), "{listed}");
}

/// A refused batch changes nothing, and the error names the refused operation.
#[test]
fn a_refused_batch_changes_nothing() {
    let ns = Netns::new("nls-refuse").unwrap();
    let tool = nft_netlink_in(&ns, IpFamily::V4);
    tool.apply(&everything(IpFamily::V4)).unwrap();
    let before = listing(&ns, IpFamily::V4);
    let mut tx = Transaction::new(Family(IpFamily::V4));
    tx.add_chain_name("d");
    tx.add_rule("d", &Rule::Jump("b".into()));
    tx.delete_element("cluster-ips", "192.0.2.99");
    tx.add_rule("d", &Rule::Goto("c".into()));
    let err = tool.apply(&tx).unwrap_err().to_string();
    assert!(
        err.contains("at `delete element ip kube-proxy cluster-ips { 192.0.2.99 }`")
            && err.contains("No such file or directory"),
        "{err}"
    );
    assert_eq!(listing(&ns, IpFamily::V4), before);
}
