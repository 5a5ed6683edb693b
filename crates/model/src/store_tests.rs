use super::*;
use serde_json::json;

fn service(ns: &str, name: &str, ip: &str) -> Change {
    Change::ServiceUpsert(Box::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": [{"name": "p", "port": 80}]}
        }))
        .unwrap(),
    ))
}

fn slice(ns: &str, name: &str, svc: &str, ips: &[&str]) -> Change {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    Change::SliceUpsert(Box::new(serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}]
    })).unwrap()))
}

fn addrs(state: &ProxyState, ns: &str, name: &str) -> Vec<String> {
    state.family(IpFamily::V4).services[&NamespacedName::new(ns, name)].ports[0]
        .endpoints
        .iter()
        .map(|e| e.addr())
        .collect()
}

/// Endpoints from several slices are merged, deduplicated and sorted.
#[test]
fn slices_are_merged() {
    let mut store = Store::new("node");
    store.apply(service("ns", "a", "10.0.0.1"));
    store.apply(slice("ns", "a-1", "a", &["10.1.0.2", "10.1.0.1"]));
    store.apply(slice("ns", "a-2", "a", &["10.1.0.3", "10.1.0.1"]));
    let state = store.snapshot();
    assert_eq!(
        addrs(&state, "ns", "a"),
        vec!["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"]
    );
}

/// Only the Services an event touches change between snapshots, and an update that
/// changes nothing keeps the snapshot identical.
#[test]
fn changes_are_tracked_per_service() {
    let mut store = Store::new("node");
    store.apply(service("ns", "a", "10.0.0.1"));
    store.apply(service("ns", "b", "10.0.0.2"));
    store.apply(slice("ns", "a-1", "a", &["10.1.0.1"]));
    let s1 = store.snapshot();
    store.apply(slice("ns", "a-1", "a", &["10.1.0.1"]));
    store.apply(service("ns", "b", "10.0.0.2"));
    assert!(!store.has_pending_changes(), "no-op updates are dropped");
    let s2 = store.snapshot();
    assert!(
        s2.family(IpFamily::V4)
            .changed_since(s1.family(IpFamily::V4))
            .is_empty()
    );
    store.apply(slice("ns", "a-1", "a", &["10.1.0.1", "10.1.0.9"]));
    let s3 = store.snapshot();
    assert_eq!(
        s3.family(IpFamily::V4)
            .changed_since(s2.family(IpFamily::V4)),
        vec![NamespacedName::new("ns", "a")]
    );
    store.apply(Change::ServiceDelete(NamespacedName::new("ns", "b")));
    let s4 = store.snapshot();
    assert_eq!(
        s4.family(IpFamily::V4)
            .changed_since(s3.family(IpFamily::V4)),
        vec![NamespacedName::new("ns", "b")]
    );
}

/// Services and slices labelled for another proxy or headless are ignored.
#[test]
fn other_proxies_objects_are_ignored() {
    let mut store = Store::new("node");
    let Change::ServiceUpsert(mut svc) = service("ns", "a", "10.0.0.1") else {
        unreachable!()
    };
    svc.metadata.labels =
        Some([(SERVICE_PROXY_NAME_LABEL.to_string(), "other".to_string())].into());
    store.apply(Change::ServiceUpsert(svc));
    assert_eq!(store.service_count(), 0);
}

/// v1 Endpoints of a selector-less Service are mirrored; notReadyAddresses are not used.
#[test]
fn endpoints_are_mirrored_for_selectorless_services() {
    let mut store = Store::new("node");
    store.apply(Change::ServiceUpsert(Box::new(serde_json::from_value(json!({
        "metadata": {"namespace": "prod", "name": "my-service"},
        "spec": {"clusterIP": "10.96.0.5", "ports": [{"protocol": "TCP", "port": 8080, "targetPort": 8080}]}
    })).unwrap())));
    store.apply(Change::EndpointsUpsert(Box::new(serde_json::from_value(json!({
        "metadata": {"namespace": "prod", "name": "my-service"},
        "subsets": [{"addresses": [{"ip": "10.10.10.10"}], "notReadyAddresses": [{"ip": "10.10.10.11"}], "ports": [{"port": 8080}]}]
    })).unwrap())));
    let state = store.snapshot();
    let svc = &state.family(IpFamily::V4).services[&NamespacedName::new("prod", "my-service")];
    let ready: Vec<_> = svc.ports[0].cluster_endpoints().map(|e| e.addr()).collect();
    assert_eq!(ready, vec!["10.10.10.10:8080"]);
    assert_eq!(svc.ports[0].endpoints.len(), 2);
}

/// A change of the node's zone label recomputes every Service (topology hints).
#[test]
fn zone_change_marks_all_dirty() {
    let mut store = Store::new("node");
    store.apply(service("ns", "a", "10.0.0.1"));
    store.snapshot();
    store.apply(Change::NodeUpsert(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": "node", "labels": {"topology.kubernetes.io/zone": "z1"}}
        }))
        .unwrap(),
    )));
    assert!(store.has_pending_changes());
    assert_eq!(store.snapshot().node.zone(), Some("z1"));
}

/// Upstream's `/healthz` node eligibility: a Node being deleted (deletionTimestamp
/// or the autoscaler's taint) or deleted is not eligible; a returning one is.
#[test]
fn node_eligibility() {
    let mut store = Store::new("n1");
    assert!(store.snapshot().node.eligible(), "unknown node: eligible");
    let node = |extra: serde_json::Value| {
        let mut v = json!({"metadata": {"name": "n1"}, "spec": {}});
        if let (Some(obj), Some(add)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in add {
                match (obj.get_mut(k), val) {
                    (Some(serde_json::Value::Object(o)), serde_json::Value::Object(a)) => {
                        o.extend(a.clone())
                    }
                    _ => {
                        obj.insert(k.clone(), val.clone());
                    }
                }
            }
        }
        Change::NodeUpsert(Box::new(serde_json::from_value(v).unwrap()))
    };
    store.apply(node(json!({})));
    assert!(store.snapshot().node.eligible());
    store.apply(node(
        json!({"spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}}),
    ));
    assert!(!store.snapshot().node.eligible(), "autoscaler taint");
    store.apply(node(
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
    ));
    assert!(!store.snapshot().node.eligible(), "deletionTimestamp");
    store.apply(node(json!({})));
    assert!(store.snapshot().node.eligible(), "back to normal");
    store.apply(Change::NodeDelete("n1".into()));
    assert!(!store.snapshot().node.eligible(), "deleted");
    store.apply(node(json!({})));
    assert!(store.snapshot().node.eligible(), "re-created");
}
