//! Stale-entry cleanup against a real kernel with real UDP traffic: a client
//! namespace talks to a "node" namespace where `iptables -t nat` DNAT rules stand
//! in for a Service (ClusterIP and NodePort) whose endpoint moves. Stale flows
//! keep reaching the old endpoint until the cleanup deletes them; then the same
//! client socket reaches the new one. `conntrack -L` checks what is left.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Port, ip, state};
use kpr_conntrack::{Conntrack, StaleReason, cleanup};
use kpr_model::{IpFamily, Protocol};
use kpr_netns_lab::backend::{Backend, serve_on};
use kpr_netns_lab::{Netns, client};

const CLUSTER_IP: &str = "10.96.0.10";
const NODE_IP: &str = "10.0.0.2";
const NODE_PORT: u16 = 30053;
/// A second Service address that is local on the node and has no DNAT rule:
/// traffic to it is accepted untranslated, like traffic that arrived before the
/// rules were written.
const UNTRANSLATED_IP: &str = "10.96.0.20";

/// The client and node namespaces with their servers.
struct Bed {
    client: Netns,
    node: Netns,
    _servers: Vec<Backend>,
}

fn bed() -> Bed {
    let client = Netns::new("ctc").unwrap();
    let node = Netns::new("ctn").unwrap();
    node.ip(&[
        "link",
        "add",
        "n0",
        "type",
        "veth",
        "peer",
        "name",
        "c0",
        "netns",
        client.name(),
    ])
    .unwrap();
    for (ns, dev, addrs) in [
        (&node, "n0", &["10.0.0.2/24", "10.0.0.3/24"][..]),
        (&client, "c0", &["10.0.0.1/24"][..]),
    ] {
        for a in addrs {
            ns.ip(&["addr", "add", a, "dev", dev]).unwrap();
        }
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    node.ip(&["addr", "add", &format!("{UNTRANSLATED_IP}/32"), "dev", "lo"])
        .unwrap();
    client
        .ip(&["route", "add", "10.96.0.0/16", "via", NODE_IP])
        .unwrap();
    let servers = vec![
        serve_on(&node, "a", &[ip("10.0.0.2")], 5353).unwrap(),
        serve_on(&node, "b", &[ip("10.0.0.3")], 5354).unwrap(),
        serve_on(&node, "other", &[ip(NODE_IP)], 9999).unwrap(),
        serve_on(&node, "untranslated", &[ip(UNTRANSLATED_IP)], 53).unwrap(),
    ];
    Bed {
        client,
        node,
        _servers: servers,
    }
}

impl Bed {
    /// Points the ClusterIP and the NodePort at `endpoint` (new flows only, as
    /// a kube-proxy sync would).
    fn dnat_to(&self, endpoint: &str) {
        self.node
            .exec("iptables", &["-t", "nat", "-F", "PREROUTING"])
            .unwrap();
        for (dst, port) in [(CLUSTER_IP, "53"), (NODE_IP, "30053")] {
            self.node
                .exec(
                    "iptables",
                    &[
                        "-t",
                        "nat",
                        "-A",
                        "PREROUTING",
                        "-d",
                        dst,
                        "-p",
                        "udp",
                        "--dport",
                        port,
                        "-j",
                        "DNAT",
                        "--to-destination",
                        endpoint,
                    ],
                )
                .unwrap();
        }
    }

    /// Which server answers one datagram from client port `sport` to `dst:port`.
    fn ask(&self, sport: u16, dst: &str, port: u16) -> String {
        client::udp(&self.client, sport, ip(dst), port, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{dst}:{port} from {sport}: {e}"))
            .backend
    }

    /// Client source ports of the node's UDP entries, sorted.
    fn listed_sports(&self) -> Vec<u16> {
        let out = self.node.exec("conntrack", &["-L", "-p", "udp"]).unwrap();
        let mut ports: Vec<u16> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("sport="))
                    .and_then(|p| p.parse().ok())
            })
            .collect();
        ports.sort();
        ports
    }

    fn cleanup(
        &self,
        previous: Option<kpr_model::FamilyState>,
        current: kpr_model::FamilyState,
    ) -> kpr_conntrack::CleanupReport {
        let node_ips: Vec<IpAddr> = vec![ip(NODE_IP), ip("10.0.0.3")];
        self.node
            .enter(move || {
                let mut ct = Conntrack::new().unwrap();
                cleanup(&mut ct, previous.as_ref(), &current, &node_ips).unwrap()
            })
            .unwrap()
    }
}

/// The Service of the test: ClusterIP and NodePort to `endpoint`, plus the
/// untranslated address, both with `endpoint` as their endpoint.
fn service_state(endpoint: (&str, u16), with_dns: bool) -> kpr_model::FamilyState {
    let eps = [endpoint];
    let mut ports = vec![Port {
        protocol: Protocol::Udp,
        cluster_ip: UNTRANSLATED_IP,
        port: 53,
        node_port: None,
        endpoints: &eps,
    }];
    if with_dns {
        ports.push(Port {
            protocol: Protocol::Udp,
            cluster_ip: CLUSTER_IP,
            port: 53,
            node_port: Some(NODE_PORT),
            endpoints: &eps,
        });
    }
    state(IpFamily::V4, &ports)
}

/// Flows DNATed to an endpoint that went away keep reaching it until the
/// cleanup deletes them (ClusterIP and NodePort), and an untranslated flow to a
/// Service address is deleted too; live flows and unrelated flows stay. After
/// the cleanup the same client sockets reach the new endpoint, and a second
/// cleanup (as after a restart, no previous state) deletes nothing.
#[test]
fn stale_flows_move_to_the_new_endpoint() {
    let bed = bed();
    bed.dnat_to("10.0.0.2:5353");
    assert_eq!(bed.ask(41001, CLUSTER_IP, 53), "a");
    assert_eq!(bed.ask(41002, CLUSTER_IP, 53), "a");
    assert_eq!(bed.ask(41005, NODE_IP, NODE_PORT), "a");
    assert_eq!(bed.ask(41008, UNTRANSLATED_IP, 53), "untranslated");

    // The endpoint moves: new flows go to b, existing ones stick to a.
    bed.dnat_to("10.0.0.3:5354");
    assert_eq!(bed.ask(41003, CLUSTER_IP, 53), "b");
    assert_eq!(bed.ask(41006, NODE_IP, NODE_PORT), "b");
    assert_eq!(bed.ask(41007, NODE_IP, 9999), "other");
    assert_eq!(
        bed.ask(41001, CLUSTER_IP, 53),
        "a",
        "precondition: the stale flow sticks"
    );
    assert_eq!(
        bed.listed_sports(),
        [41001, 41002, 41003, 41005, 41006, 41007, 41008]
    );

    let current = service_state(("10.0.0.3", 5354), true);
    let report = bed.cleanup(None, current.clone());
    assert_eq!(report.deleted, 4, "{report:?}");
    assert_eq!(
        report.stale,
        [
            (StaleReason::NotAnEndpoint, 3),
            (StaleReason::NotTranslated, 1)
        ]
    );
    assert_eq!(bed.listed_sports(), [41003, 41006, 41007]);
    assert_eq!(
        bed.ask(41001, CLUSTER_IP, 53),
        "b",
        "the old socket reaches b now"
    );
    assert_eq!(bed.ask(41005, NODE_IP, NODE_PORT), "b");

    // A restarted proxy reconciles against the same state: nothing to delete.
    let again = bed.cleanup(None, current);
    assert_eq!((again.stale_total(), again.deleted), (0, 0), "{again:?}");
    assert_eq!(bed.listed_sports(), [41001, 41003, 41005, 41006, 41007]);
}

/// When the Service is deleted, its DNATed flows (ClusterIP and NodePort) are
/// deleted with it; flows of other Services and unrelated flows stay.
#[test]
fn deleted_service_flows_are_deleted() {
    let bed = bed();
    bed.dnat_to("10.0.0.3:5354");
    assert_eq!(bed.ask(42001, CLUSTER_IP, 53), "b");
    assert_eq!(bed.ask(42002, NODE_IP, NODE_PORT), "b");
    assert_eq!(bed.ask(42003, NODE_IP, 9999), "other");
    let before = service_state(("10.0.0.3", 5354), true);
    let after = service_state(("10.0.0.3", 5354), false);
    bed.node
        .exec("iptables", &["-t", "nat", "-F", "PREROUTING"])
        .unwrap();

    let report = bed.cleanup(Some(before), after);
    assert_eq!(
        report.stale,
        [(StaleReason::ServiceRemoved, 2)],
        "{report:?}"
    );
    assert_eq!(report.deleted, 2);
    assert_eq!(bed.listed_sports(), [42003]);
}
