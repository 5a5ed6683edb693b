//! The test bed itself: pods reach each other across nodes, clients reach nodes, in
//! both families, and nothing is left behind afterwards.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use kpr_netns_lab::Cluster;
use kpr_netns_lab::backend::serve;
use kpr_netns_lab::client::{RequestError, tcp, udp};

const T: Duration = Duration::from_secs(2);

fn namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .filter(|n| n.starts_with(&format!("kpr{}x", std::process::id())))
        .collect()
}

/// Pod-to-pod across nodes, client-to-node, TCP and UDP, IPv4 and IPv6; source
/// addresses are preserved without a proxy; teardown removes every namespace.
#[test]
fn cluster_connectivity_and_teardown() {
    {
        let mut c = Cluster::new(2).unwrap();
        let a = c.add_pod(1, "a").unwrap();
        let b = c.add_pod(2, "b").unwrap();
        let _srv_b = serve(&c.pods[b].ns, "b", 8080).unwrap();
        let _srv_node = serve(&c.node(1).host.ns, "node1-host", 9090).unwrap();
        for v6 in [false, true] {
            let ans = tcp(&c.pods[a].ns, c.pods[b].ip(v6), 8080, T).unwrap();
            assert_eq!(ans.backend, "b");
            assert_eq!(
                ans.seen_source.ip(),
                c.pods[a].ip(v6),
                "no NAT between pods"
            );
            let ans = udp(&c.pods[a].ns, 0, c.pods[b].ip(v6), 8080, T).unwrap();
            assert_eq!(ans.backend, "b");
            let ans = tcp(&c.client.ns, c.node(1).host.ip(v6), 9090, T).unwrap();
            assert_eq!(ans.backend, "node1-host");
            assert_eq!(ans.seen_source.ip(), c.client.ip(v6));
        }
        let closed: IpAddr = c.pods[b].ip4.into();
        assert_eq!(
            tcp(&c.pods[a].ns, closed, 1, T).unwrap_err(),
            RequestError::Refused
        );
        assert!(namespaces().len() >= 6);
    }
    assert_eq!(namespaces(), Vec::<String>::new(), "namespaces left behind");
}
