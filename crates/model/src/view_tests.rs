use super::*;
use crate::store::{Change, Store};
use serde_json::json;

fn apply(store: &mut Store, v: serde_json::Value) {
    let kind = v["kind"].as_str().unwrap().to_string();
    let change = match kind.as_str() {
        "Service" => Change::ServiceUpsert(Box::new(serde_json::from_value(v).unwrap())),
        _ => Change::SliceUpsert(Box::new(serde_json::from_value(v).unwrap())),
    };
    assert!(store.apply(change).is_empty());
}

fn slice(svc: &str, eps: &[(&str, Option<&str>)]) -> serde_json::Value {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node}))
        .collect();
    json!({
        "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": format!("{svc}-1"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}]
    })
}

/// A LoadBalancer Service with ETP Local yields its ClusterIP (all endpoints), its
/// external IP, load-balancer IP and NodePort (local endpoints only); a Service
/// without endpoints rejects.
fn store() -> Store {
    let mut store = Store::new("node-a");
    apply(
        &mut store,
        json!({"kind": "Service", "metadata": {"namespace": "ns", "name": "lb"},
          "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "externalIPs": ["192.0.2.7"],
                   "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                   "sessionAffinity": "ClientIP",
                   "ports": [{"name": "p", "port": 80, "nodePort": 30080}]},
          "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}}),
    );
    apply(
        &mut store,
        slice(
            "lb",
            &[
                ("10.244.1.2", Some("node-a")),
                ("10.244.2.2", Some("node-b")),
            ],
        ),
    );
    apply(
        &mut store,
        json!({"kind": "Service", "metadata": {"namespace": "ns", "name": "empty"},
          "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "p", "port": 53, "protocol": "UDP"}]}}),
    );
    store
}

#[test]
fn wanted_lists_every_frontend_with_its_policy() {
    let state = store().snapshot();
    let view = wanted(&state);
    let lines: Vec<String> = view
        .iter()
        .map(|f| {
            let backends: Vec<String> = f
                .backends
                .iter()
                .map(|b| format!("{}:{}@{}", b.address, b.port, b.share))
                .collect();
            format!(
                "{} {} {} {} {:?} [{}]",
                f.key,
                f.kind.word(),
                f.service,
                f.verdict.word(),
                f.affinity_seconds,
                backends.join(" ")
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            "TCP 10.96.0.10:80 ClusterIP ns/lb:p forward Some(10800) [10.244.1.2:8080@0.5 10.244.2.2:8080@0.5]",
            "UDP 10.96.0.11:53 ClusterIP ns/empty:p reject None []",
            "TCP 192.0.2.7:80 ExternalIP ns/lb:p forward Some(10800) [10.244.1.2:8080@1]",
            "TCP 203.0.113.5:80 LoadBalancer ns/lb:p forward Some(10800) [10.244.1.2:8080@1]",
            "TCP *:30080 NodePort ns/lb:p forward Some(10800) [10.244.1.2:8080@1]",
        ]
    );
}

#[test]
fn drift_names_what_differs() {
    let state = store().snapshot();
    let want = wanted(&state);
    assert!(drift(&want, &want).is_empty());

    let mut have = want.clone();
    let of = |have: &mut Vec<Frontend>, kind: FrontendKind, service: &str| -> usize {
        have.iter()
            .position(|f| f.kind == kind && f.service == service)
            .unwrap()
    };
    // The NodePort is gone, the ClusterIP lost a backend, the external IP rejects,
    // the load-balancer IP's backend gets the wrong share, and a leftover remains.
    have.retain(|f| f.kind != FrontendKind::NodePort);
    let i = of(&mut have, FrontendKind::ClusterIp, "ns/lb:p");
    have[i].backends.pop();
    let i = of(&mut have, FrontendKind::ExternalIp, "ns/lb:p");
    have[i].verdict = Verdict::Reject;
    have[i].backends.clear();
    let i = of(&mut have, FrontendKind::LoadBalancer, "ns/lb:p");
    have[i].backends[0].share = 0.5;
    let i = of(&mut have, FrontendKind::ClusterIp, "ns/empty:p");
    let mut leftover = have[i].clone();
    leftover.key.port = 54;
    have.push(leftover);
    let found: Vec<String> = drift(&want, &have)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        vec![
            "TCP 10.96.0.10:80 (ns/lb:p): missing backends 10.244.2.2:8080",
            "UDP 10.96.0.11:54 (ns/empty:p): programmed but not wanted",
            "TCP 192.0.2.7:80 (ns/lb:p): reject instead of forward",
            "TCP 203.0.113.5:80 (ns/lb:p): backend 10.244.1.2:8080 gets 50.0% instead of 100.0%",
            "TCP *:30080 (ns/lb:p): not programmed",
        ]
    );
}

#[test]
fn frontends_serialize_for_json_output() {
    let state = store().snapshot();
    let view = wanted(&state);
    let v = serde_json::to_value(view.last().unwrap()).unwrap();
    assert_eq!(v["family"], "IPv4");
    assert_eq!(v["protocol"], "TCP");
    assert_eq!(v["address"], serde_json::Value::Null);
    assert_eq!(v["port"], 30080);
    assert_eq!(v["kind"], "nodePort");
    assert_eq!(v["verdict"], "forward");
    assert_eq!(v["affinitySeconds"], 10800);
    assert_eq!(v["backends"][0]["address"], "10.244.1.2");
}

#[test]
fn flows_are_counted_per_backend() {
    let state = store().snapshot();
    let mut view = wanted(&state);
    let flow = |dst: &str, port: u16, to: &str, established: bool| Flow {
        protocol: Protocol::Tcp,
        destination: dst.parse().unwrap(),
        destination_port: port,
        backend: to.parse().unwrap(),
        backend_port: 8080,
        established,
    };
    count_connections(
        &mut view,
        [
            flow("10.96.0.10", 80, "10.244.2.2", true),
            flow("10.96.0.10", 80, "10.244.2.2", false),
            flow("10.96.0.10", 80, "10.244.1.2", true),
            // A NodePort on some node address.
            flow("192.168.0.5", 30080, "10.244.1.2", true),
            // Not a backend of that frontend, and not a frontend at all.
            flow("192.0.2.7", 80, "10.244.2.2", true),
            flow("10.96.0.99", 80, "10.244.1.2", true),
        ],
    );
    let counts: Vec<(String, u64, u64)> = view
        .iter()
        .flat_map(|f| {
            f.backends.iter().map(move |b| {
                (
                    format!("{} -> {}", f.key, b.address),
                    b.active_connections,
                    b.inactive_connections,
                )
            })
        })
        .filter(|(_, a, i)| a + i > 0)
        .collect();
    assert_eq!(
        counts,
        vec![
            ("TCP 10.96.0.10:80 -> 10.244.1.2".to_string(), 1, 0),
            ("TCP 10.96.0.10:80 -> 10.244.2.2".to_string(), 1, 1),
            ("TCP *:30080 -> 10.244.1.2".to_string(), 1, 0),
        ]
    );
}
