//! The plan kept up to date Service by Service equals the plan built from nothing,
//! over random changes to Services that share addresses, ports and endpoints.

use std::collections::BTreeMap;

use kpr_model::{IpFamily, LocalDetector, Objects, Store};

use super::*;

/// A small deterministic generator (xorshift), so that a failure repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn config() -> PlanConfig {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    PlanConfig {
        local_detector: LocalDetector::Cidr("10.128.0.0/9".parse().unwrap_or_default()),
        node_port_ips: vec![ip("192.168.0.2"), ip("192.168.0.3")],
        node_addresses: [ip("192.168.0.2"), ip("192.168.0.3"), ip("203.0.113.9")]
            .into_iter()
            .collect(),
        node_ip: Some(ip("192.168.0.2")),
        ..PlanConfig::new(IpFamily::V4)
    }
}

/// One generated Service and its slice, as YAML. Addresses and ports come from
/// small pools so that Services collide: two ClusterIPs alike, external IPs shared,
/// a load-balancer IP that is also an external IP or a node address.
fn service_yaml(i: usize, rng: &mut Rng) -> String {
    let cluster_ip = format!("172.30.0.{}", 1 + rng.below(6));
    let port = 80 + rng.below(2);
    let external = match rng.below(4) {
        0 => "\n  externalIPs: [203.0.113.9]".to_string(),
        1 => format!("\n  externalIPs: [198.51.100.{}]", rng.below(3)),
        _ => String::new(),
    };
    let kind = match rng.below(3) {
        0 => "ClusterIP",
        1 => "NodePort",
        _ => "LoadBalancer",
    };
    let node_port = if kind == "ClusterIP" {
        String::new()
    } else {
        format!("\n    nodePort: {}", 30000 + rng.below(3))
    };
    let policy = if kind != "ClusterIP" && rng.below(2) == 0 {
        "\n  externalTrafficPolicy: Local"
    } else {
        ""
    };
    let ranges = if kind == "LoadBalancer" && rng.below(2) == 0 {
        "\n  loadBalancerSourceRanges: [10.0.0.0/8]"
    } else {
        ""
    };
    let affinity = if rng.below(4) == 0 {
        "\n  sessionAffinity: ClientIP"
    } else {
        ""
    };
    let status = if kind == "LoadBalancer" {
        let lb = match rng.below(3) {
            0 => "198.51.100.1".to_string(),
            1 => "192.168.0.3".to_string(),
            _ => format!("198.51.100.{}", 10 + rng.below(3)),
        };
        format!("\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: {lb}")
    } else {
        String::new()
    };
    let mut endpoints = String::new();
    for _ in 0..rng.below(4) {
        let node = if rng.below(2) == 0 { "node-a" } else { "other" };
        endpoints.push_str(&format!(
            "\n- addresses: [10.128.0.{}]\n  nodeName: {node}",
            rng.below(5)
        ));
    }
    let endpoints = if endpoints.is_empty() {
        " []".to_string()
    } else {
        endpoints
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: ns\n\
         spec:\n  type: {kind}\n  clusterIP: {cluster_ip}{external}{policy}{ranges}{affinity}\n\
         \x20 ports:\n  - name: p\n    port: {port}\n    protocol: TCP\n    targetPort: 8080{node_port}{status}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s{i}-x\n\
         \x20 namespace: ns\n  labels:\n    kubernetes.io/service-name: s{i}\naddressType: IPv4\n\
         ports:\n- name: p\n  port: 8080\n  protocol: TCP\nendpoints:{endpoints}\n"
    )
}

/// The Services as objects for the store.
fn objects_of(services: &BTreeMap<usize, String>) -> Objects {
    let text = services.values().cloned().collect::<Vec<_>>().join("---\n");
    crate::test_objects::from_yaml(&text)
}

#[test]
fn kept_plan_equals_a_fresh_plan() {
    let config = config();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut services = BTreeMap::new();
    // One store across rounds, as the proxy has: unchanged Services keep their
    // snapshot entries, which the update skips by pointer.
    let mut store = Store::new("node-a");
    let mut desired = Desired::new(config.clone());
    let mut nonempty_deltas = 0;
    for round in 0..200 {
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(12) as usize;
            if rng.below(4) == 0 {
                services.remove(&i);
            } else {
                let yaml = service_yaml(i, &mut rng);
                services.insert(i, yaml);
            }
        }
        store.replace_all(&objects_of(&services));
        let state = store.snapshot();
        let family = state.family(IpFamily::V4);
        let before = desired.plan().clone();
        let delta = desired.update(family);
        let fresh = crate::plan::plan(family, &config);
        assert_eq!(desired.plan(), &fresh, "round {round}");
        if delta.first {
            // The first update records no delta (everything is new).
            continue;
        }
        // The delta is exactly the difference between the two plans.
        for (key, change) in &delta.services {
            assert_eq!(
                change.old.as_ref(),
                before.services.get(key),
                "round {round}"
            );
            assert_eq!(
                change.new.as_ref(),
                fresh.services.get(key),
                "round {round}"
            );
        }
        let differing = fresh
            .services
            .keys()
            .chain(before.services.keys())
            .filter(|k| fresh.services.get(k) != before.services.get(k))
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(differing.len(), delta.services.len(), "round {round}");
        let mut sets = before.sets.clone();
        for (set, e) in &delta.entries_removed {
            assert!(sets.entry(*set).or_default().remove(e), "round {round}");
        }
        for (set, e) in &delta.entries_added {
            assert!(
                sets.entry(*set).or_default().insert(e.clone()),
                "round {round}"
            );
        }
        assert_eq!(sets, fresh.sets, "round {round}");
        let mut bind = before.bind.clone();
        for ip in &delta.bind_removed {
            assert!(bind.remove(ip), "round {round}");
        }
        bind.extend(delta.bind_added.iter().copied());
        assert_eq!(bind, fresh.bind, "round {round}");
        assert_eq!(delta.iptables_changed, before.iptables != fresh.iptables);
        if !delta.is_empty() {
            nonempty_deltas += 1;
        }
    }
    // The generator does change plans (a test that cannot fail is a defect).
    assert!(nonempty_deltas > 100, "{nonempty_deltas}");
}

/// The same state twice: nothing re-planned, nothing changed.
#[test]
fn unchanged_state_is_no_delta() {
    let mut rng = Rng(7);
    let services: BTreeMap<usize, String> =
        (0..5).map(|i| (i, service_yaml(i, &mut rng))).collect();
    let mut store = Store::new("node-a");
    store.replace_all(&objects_of(&services));
    let state = store.snapshot();
    let mut desired = Desired::new(config());
    let first = desired.update(state.family(IpFamily::V4));
    assert_eq!(first.services_replanned, 5);
    assert!(first.first && !first.is_empty());
    let again = desired.update(state.family(IpFamily::V4));
    assert_eq!(again.services_replanned, 0);
    assert!(again.is_empty());
}
