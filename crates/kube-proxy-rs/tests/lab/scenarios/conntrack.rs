//! Conntrack: UDP flows follow endpoint changes at once, for ClusterIPs and NodePorts,
//! and a Service going from no endpoints to one answers a waiting flow at once.

use kpr_netns_lab::client::RequestError;

use super::super::Lab;
use super::super::manifests::{Ep, Port, Svc, nodes, slice};
use super::ip;

/// A UDP client keeps one source port; after the endpoint that served it is removed,
/// the next datagram after one sync reaches the remaining endpoint (without cleanup
/// it would go on reaching the removed one, which still runs, until the conntrack
/// timeout). The same from the external client through a NodePort.
pub fn conntrack_udp_endpoint_removed(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::udp(53, 8080).node_port(30053)];
    let mut svc = Svc::new("dns", "10.96.0.53", ports.clone());
    svc.type_ = "NodePort";
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    let both = svc.yaml()
        + &slice(
            "dns",
            "dns-1",
            false,
            &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
            &ports,
        );
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest("dns.yaml", &both);
    lab.start();

    let node1 = lab.cluster.node(1).host.ip(false);
    let cases = [
        (
            "ClusterIP from a pod",
            &lab.cluster.pods[c],
            ip("10.96.0.53"),
            53,
        ),
        (
            "NodePort from the external client",
            &lab.cluster.client,
            node1,
            30053,
        ),
    ];
    for (i, (what, from, vip, port)) in cases.into_iter().enumerate() {
        let source_port = 40053 + i as u16;
        let first = lab.udp(from, source_port, vip, port).unwrap().backend;
        // The flow is pinned: the same source port keeps reaching the same pod.
        for _ in 0..5 {
            let again = lab.udp(from, source_port, vip, port).unwrap().backend;
            assert_eq!(again, first, "{what}: one flow, one endpoint");
        }
        let (gone, keep, keep_ip, keep_node) = if first == "a" {
            ("a", "b", b4, 2)
        } else {
            ("b", "a", a4, 1)
        };
        lab.apply(
            "dns.yaml",
            &(svc.yaml()
                + &slice(
                    "dns",
                    "dns-1",
                    false,
                    &[Ep::ready(keep_ip, keep_node)],
                    &ports,
                )),
        );
        let next = lab.udp(from, source_port, vip, port).unwrap().backend;
        assert_eq!(
            next, keep,
            "{what}: the flow pinned to removed endpoint {gone} must move on after one sync"
        );
        lab.apply("dns.yaml", &both);
    }
}

/// A UDP Service without endpoints refuses a client; once it gets an endpoint, the
/// same client flow (same source port) is answered at once.
pub fn conntrack_udp_zero_to_one(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let c = lab.cluster.add_pod(2, "client").unwrap();
    let ports = vec![Port::udp(53, 8080)];
    let svc = Svc::new("late", "10.96.0.54", ports.clone());
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "late.yaml",
        &(svc.yaml() + &slice("late", "late-1", false, &[], &ports)),
    );
    lab.start();
    let vip = ip("10.96.0.54");
    let from = &lab.cluster.pods[c];
    assert_eq!(
        lab.udp(from, 40153, vip, 53).unwrap_err(),
        RequestError::Refused,
        "no endpoints: refused"
    );
    let a4 = lab.cluster.pods[a].ip4;
    lab.apply(
        "late.yaml",
        &(svc.yaml() + &slice("late", "late-1", false, &[Ep::ready(a4, 1)], &ports)),
    );
    let ans = lab
        .udp(from, 40153, vip, 53)
        .expect("the same flow is answered right after the sync");
    assert_eq!(ans.backend, "a");
}
