//! Service kinds: ClusterIP, no endpoints, NodePort, external and LB IPs, dual-stack,
//! host-network endpoints.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kpr_netns_lab::client::{self, RequestError};

use super::super::Lab;
use super::super::manifests::{Ep, Port, Svc, nodes, slice};
use super::{ip, route_via_node, until_all};

/// ClusterIP, TCP and UDP: from a pod, from the node, from a pod on the other node;
/// a pod reaching itself through its Service is masqueraded (hairpin).
pub fn cluster_ip(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c1 = lab.cluster.add_pod(1, "client1").unwrap();
    let c2 = lab.cluster.add_pod(2, "client2").unwrap();
    let ports = vec![Port::tcp(80, 8080), Port::udp(53, 8080)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "web.yaml",
        &(Svc::new("web", "10.96.0.10", ports.clone()).yaml()
            + &slice(
                "web",
                "web-1",
                false,
                &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
                &ports,
            )),
    );
    lab.start();
    let vip = ip("10.96.0.10");
    let pods = &lab.cluster.pods;
    for (who, from) in [("pod on node1", &pods[c1]), ("pod on node2", &pods[c2])] {
        let seen = until_all(&lab, from, vip, 80, false, &["a", "b"], 40);
        assert_eq!(
            seen,
            BTreeSet::from(["a".into(), "b".into()]),
            "TCP from {who}"
        );
        let seen = until_all(&lab, from, vip, 53, true, &["a", "b"], 40);
        assert_eq!(
            seen,
            BTreeSet::from(["a".into(), "b".into()]),
            "UDP from {who}"
        );
        let ans = lab
            .tcp(from, vip, 80)
            .unwrap_or_else(|e| panic!("TCP from {who}: {e}"));
        assert_eq!(
            ans.seen_source.ip(),
            from.ip(false),
            "pod traffic is not masqueraded ({who})"
        );
    }
    let node1 = &lab.cluster.node(1).host;
    let seen = until_all(&lab, node1, vip, 80, false, &["a", "b"], 40);
    assert_eq!(seen.len(), 2, "TCP from the node itself");
    let seen = until_all(&lab, node1, vip, 53, true, &["a", "b"], 40);
    assert_eq!(seen.len(), 2, "UDP from the node itself");
    // Hairpin: pod a reaches itself through the Service and sees a masqueraded source.
    let pa = &lab.cluster.pods[a];
    for _ in 0..40 {
        let ans = lab.tcp(pa, vip, 80).unwrap();
        if ans.backend == "a" {
            assert_ne!(
                ans.seen_source.ip(),
                pa.ip(false),
                "hairpin traffic must be masqueraded"
            );
            return;
        }
    }
    panic!("pod a never reached itself through the Service");
}

/// A Service without endpoints is refused at once (REJECT), not timed out.
pub fn no_endpoints(mode: &str) {
    let mut lab = Lab::new(mode);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080), Port::udp(53, 8080)];
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "empty.yaml",
        &(Svc::new("empty", "10.96.0.20", ports.clone()).yaml()
            + &slice("empty", "empty-1", false, &[], &ports)),
    );
    lab.start();
    let started = Instant::now();
    let err = lab
        .tcp(&lab.cluster.pods[c], ip("10.96.0.20"), 80)
        .unwrap_err();
    assert_eq!(err, RequestError::Refused);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, took {:?}",
        started.elapsed()
    );
    let err = lab
        .udp(&lab.cluster.pods[c], 0, ip("10.96.0.20"), 53)
        .unwrap_err();
    assert_eq!(err, RequestError::Refused, "UDP gets an ICMP unreachable");
    let node = &lab.cluster.node(1).host;
    assert_eq!(
        lab.tcp(node, ip("10.96.0.20"), 80).unwrap_err(),
        RequestError::Refused,
        "from the node too"
    );
}

/// NodePort from the external client on each node's IP; with `nodePortAddresses`
/// limited to node1's address, node2's address no longer answers.
pub fn node_port(mode: &str) {
    for limited in [false, true] {
        let mut lab = Lab::new(mode);
        if limited {
            lab = lab.with_args(&["--nodeport-addresses=192.168.56.11/32"]);
        }
        let a = lab.pod(1, "a", 8080);
        let b = lab.pod(2, "b", 8080);
        let ports = vec![
            Port::tcp(80, 8080).node_port(30080),
            Port::udp(53, 8080).node_port(30053),
        ];
        let mut svc = Svc::new("np", "10.96.0.30", ports.clone());
        svc.type_ = "NodePort";
        let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
        lab.write_manifest("nodes.yaml", &nodes());
        lab.write_manifest(
            "np.yaml",
            &(svc.yaml()
                + &slice(
                    "np",
                    "np-1",
                    false,
                    &[Ep::ready(a4, 1), Ep::ready(b4, 2)],
                    &ports,
                )),
        );
        lab.start();
        let client = &lab.cluster.client;
        for node in [1u8, 2] {
            let node_ip = lab.cluster.node(node).host.ip(false);
            if limited && node == 2 {
                let err = lab.tcp(client, node_ip, 30080).unwrap_err();
                assert_eq!(
                    err,
                    RequestError::Refused,
                    "node2 is not in nodePortAddresses"
                );
                continue;
            }
            let seen = until_all(&lab, client, node_ip, 30080, false, &["a", "b"], 40);
            assert_eq!(seen.len(), 2, "TCP NodePort on node{node}");
            let seen = until_all(&lab, client, node_ip, 30053, true, &["a", "b"], 40);
            assert_eq!(seen.len(), 2, "UDP NodePort on node{node}");
            let ans = lab.tcp(client, node_ip, 30080).unwrap();
            assert_ne!(
                ans.seen_source.ip(),
                client.ip(false),
                "externalTrafficPolicy Cluster masquerades"
            );
        }
    }
}

/// externalIPs and a LoadBalancer ingress IP; loadBalancerSourceRanges admit one
/// client and drop another.
pub fn external_and_load_balancer(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let ports = vec![Port::tcp(80, 8080).node_port(30081)];
    let (a4, b4) = (lab.cluster.pods[a].ip4, lab.cluster.pods[b].ip4);
    let eps = [Ep::ready(a4, 1), Ep::ready(b4, 2)];
    let mut ext = Svc::new("ext", "10.96.0.40", vec![Port::tcp(80, 8080)]);
    ext.external_ips = vec!["192.168.57.20".into()];
    let mut lb = Svc::new("lb", "10.96.0.41", ports.clone());
    lb.type_ = "LoadBalancer";
    lb.lb_ips = vec!["192.168.57.30".into()];
    lb.source_ranges = vec![format!("{}/32", lab.cluster.client.ip4)];
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "svc.yaml",
        &(ext.yaml()
            + &slice("ext", "ext-1", false, &eps, &[Port::tcp(80, 8080)])
            + &lb.yaml()
            + &slice("lb", "lb-1", false, &eps, &ports)),
    );
    lab.start();
    route_via_node(&lab, "192.168.57.0/24", 1);
    let client = &lab.cluster.client;
    let seen = until_all(
        &lab,
        client,
        ip("192.168.57.20"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2, "external IP");
    let seen = until_all(
        &lab,
        client,
        ip("192.168.57.30"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2, "load-balancer IP from an allowed source");
    let started = Instant::now();
    let err = client::tcp(
        &lab.cluster.blocked_client.ns,
        ip("192.168.57.30"),
        80,
        Duration::from_millis(700),
    )
    .unwrap_err();
    assert_eq!(
        err,
        RequestError::TimedOut,
        "a source outside loadBalancerSourceRanges is dropped"
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
    // NodePorts are not subject to source ranges.
    let ans = lab
        .tcp(
            &lab.cluster.blocked_client,
            lab.cluster.node(1).host.ip(false),
            30081,
        )
        .unwrap();
    assert!(["a", "b"].contains(&ans.backend.as_str()));
}

/// Dual-stack: an IPv6 ClusterIP and NodePort work next to the IPv4 ones.
pub fn dual_stack(mode: &str) {
    let mut lab = Lab::new(mode);
    let a = lab.pod(1, "a", 8080);
    let b = lab.pod(2, "b", 8080);
    let c = lab.cluster.add_pod(1, "client").unwrap();
    let ports = vec![Port::tcp(80, 8080).node_port(30100)];
    let mut svc = Svc::new("ds", "10.96.0.120", ports.clone());
    svc.type_ = "NodePort";
    svc.cluster_ips.push("fd96::120".into());
    let (pa, pb) = (&lab.cluster.pods[a], &lab.cluster.pods[b]);
    let v4 = slice(
        "ds",
        "ds-v4",
        false,
        &[Ep::ready(pa.ip4, 1), Ep::ready(pb.ip4, 2)],
        &ports,
    );
    let v6 = slice(
        "ds",
        "ds-v6",
        true,
        &[Ep::ready(pa.ip6, 1), Ep::ready(pb.ip6, 2)],
        &ports,
    );
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest("ds.yaml", &(svc.yaml() + &v4 + &v6));
    lab.start();
    let client_pod = &lab.cluster.pods[c];
    let seen = until_all(
        &lab,
        client_pod,
        ip("fd96::120"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2, "IPv6 ClusterIP");
    let ans = lab.tcp(client_pod, ip("fd96::120"), 80).unwrap();
    assert_eq!(
        ans.seen_source.ip(),
        client_pod.ip(true),
        "IPv6 pod traffic not masqueraded"
    );
    for node in [1u8, 2] {
        let seen = until_all(
            &lab,
            &lab.cluster.client,
            lab.cluster.node(node).host.ip(true),
            30100,
            false,
            &["a", "b"],
            40,
        );
        assert_eq!(seen.len(), 2, "IPv6 NodePort on node{node}");
    }
    let seen = until_all(
        &lab,
        client_pod,
        ip("10.96.0.120"),
        80,
        false,
        &["a", "b"],
        40,
    );
    assert_eq!(seen.len(), 2, "IPv4 ClusterIP of the same Service");
}

/// A Service backed by host-network endpoints (node addresses): reachable from pods
/// on both nodes and from the nodes.
pub fn host_network_backend(mode: &str) {
    let mut lab = Lab::new(mode);
    lab.host_backend(1, "host1", 9100);
    lab.host_backend(2, "host2", 9100);
    let c = lab.cluster.add_pod(2, "client").unwrap();
    let ports = vec![Port::tcp(9100, 9100), Port::udp(9101, 9100)];
    let (n1, n2) = (lab.cluster.node(1).host.ip4, lab.cluster.node(2).host.ip4);
    lab.write_manifest("nodes.yaml", &nodes());
    lab.write_manifest(
        "hostnet.yaml",
        &(Svc::new("hostnet", "10.96.0.96", ports.clone()).yaml()
            + &slice(
                "hostnet",
                "hostnet-1",
                false,
                &[Ep::ready(n1, 1), Ep::ready(n2, 2)],
                &ports,
            )),
    );
    lab.start();
    for from in [&lab.cluster.pods[c], &lab.cluster.node(1).host] {
        let seen = until_all(
            &lab,
            from,
            ip("10.96.0.96"),
            9100,
            false,
            &["host1", "host2"],
            40,
        );
        assert_eq!(
            seen.len(),
            2,
            "TCP to host-network endpoints from {}",
            from.name
        );
        let seen = until_all(
            &lab,
            from,
            ip("10.96.0.96"),
            9101,
            true,
            &["host1", "host2"],
            40,
        );
        assert_eq!(
            seen.len(),
            2,
            "UDP to host-network endpoints from {}",
            from.name
        );
    }
}
