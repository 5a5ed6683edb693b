use super::*;
use serde_json::json;

fn svc(value: serde_json::Value) -> core::Service {
    serde_json::from_value(value).unwrap()
}

fn convert(value: serde_json::Value) -> (Option<ServiceConversion>, Vec<Problem>) {
    let mut problems = Vec::new();
    let out = convert_service(&svc(value), &mut problems);
    (out, problems)
}

fn proxied(value: serde_json::Value) -> ServiceInfo {
    match convert(value) {
        (Some(ServiceConversion::Proxied(info)), _) => info,
        other => panic!("not proxied: {other:?}"),
    }
}

/// Headless and ExternalName Services are not proxied, and that is not a problem.
#[test]
fn headless_and_external_name_are_skipped() {
    let (out, problems) = convert(
        json!({"metadata": {"name": "a"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    );
    assert!(matches!(
        out,
        Some(ServiceConversion::NotProxied(_, NotProxied::Headless))
    ));
    assert!(problems.is_empty());
    let (out, _) = convert(
        json!({"metadata": {"name": "a"}, "spec": {"type": "ExternalName", "externalName": "x.example"}}),
    );
    assert!(matches!(
        out,
        Some(ServiceConversion::NotProxied(_, NotProxied::ExternalName))
    ));
}

/// A dual-stack Service gets ports in both families, each with its own addresses.
#[test]
fn dual_stack_splits_addresses_by_family() {
    let info = proxied(json!({
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.0.0.10",
            "clusterIPs": ["10.0.0.10", "fd00::10"],
            "externalIPs": ["192.0.2.1", "2001:db8::1"],
            "loadBalancerSourceRanges": ["203.0.113.0/24", " 2001:db8:ff::/48"],
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"ip": "2001:db8:1::1"}, {"hostname": "lb.example"}]}}
    }));
    let v4 = &info.ports[0][0];
    let v6 = &info.ports[1][0];
    assert_eq!(v4.cluster_ip.to_string(), "10.0.0.10");
    assert_eq!(v6.cluster_ip.to_string(), "fd00::10");
    assert_eq!(
        v4.external_ips,
        vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        v6.load_balancer_vips,
        vec!["2001:db8:1::1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        v6.load_balancer_source_ranges[0].to_string(),
        "2001:db8:ff::/48"
    );
    assert_eq!(v4.name.to_string(), "ns/web:http");
    assert_eq!(v4.node_port, Some(30080));
}

/// Load balancers in ipMode Proxy receive the traffic themselves: no VIP is captured.
#[test]
fn ip_mode_proxy_is_not_captured() {
    let info = proxied(json!({
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1", "ports": [{"port": 80, "nodePort": 30000}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "Proxy"}, {"ip": "5.6.7.8", "ipMode": "VIP"}]}}
    }));
    assert_eq!(
        info.ports[0][0].load_balancer_vips,
        vec!["5.6.7.8".parse::<IpAddr>().unwrap()]
    );
}

/// Bad values are skipped one by one, each with a problem naming the field.
#[test]
fn bad_values_are_reported_and_skipped() {
    let (out, problems) = convert(json!({
        "metadata": {"namespace": "ns", "name": "bad"},
        "spec": {
            "clusterIP": "10.0.0.1",
            "externalIPs": ["not-an-ip", "192.0.2.9"],
            "loadBalancerSourceRanges": ["10.0.0.0/33"],
            "ports": [{"name": "a", "port": 80, "protocol": "ICMP"}, {"name": "b", "port": 70000}, {"name": "c", "port": 81}]
        }
    }));
    let Some(ServiceConversion::Proxied(info)) = out else {
        panic!()
    };
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "Service ns/bad: spec.externalIPs[0]: invalid IP address \"not-an-ip\"; address skipped",
            "Service ns/bad: spec.loadBalancerSourceRanges[0]: invalid CIDR \"10.0.0.0/33\"; range skipped",
            "Service ns/bad: spec.ports[0].protocol: unsupported protocol \"ICMP\": must be TCP, UDP or SCTP; port skipped",
            "Service ns/bad: spec.ports[1].port: invalid port 70000: must be in 1..=65535; port skipped",
        ]
    );
    assert_eq!(info.ports[0].len(), 1, "the good port is kept");
    assert_eq!(info.ports[0][0].external_ips.len(), 1);
}

/// An unparsable ClusterIP skips the whole Service with a clear message.
#[test]
fn invalid_cluster_ip_skips_service() {
    let (out, problems) = convert(
        json!({"metadata": {"namespace": "ns", "name": "x"}, "spec": {"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}}),
    );
    assert!(out.is_none());
    assert_eq!(
        problems[0].to_string(),
        "Service ns/x: spec.clusterIP: invalid IP address \"10.0.0.300\"; Service skipped"
    );
}

/// ClientIP affinity defaults to 10800 s; Local policies apply as upstream defines them.
#[test]
fn affinity_and_policies() {
    let info = proxied(json!({
        "metadata": {"name": "a"},
        "spec": {"type": "NodePort", "clusterIP": "10.0.0.1", "sessionAffinity": "ClientIP",
                 "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                 "ports": [{"port": 80, "nodePort": 30001}]}
    }));
    let p = &info.ports[0][0];
    assert_eq!(
        p.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 10800
        }
    );
    assert!(p.external_policy_local && p.internal_policy_local);
    assert!(p.uses_local_endpoints());
    assert!(
        p.uses_cluster_endpoints(),
        "external traffic short-circuits to cluster endpoints"
    );
    assert_eq!(
        p.health_check_node_port, None,
        "only LoadBalancer Services get health checks"
    );

    let cip = proxied(
        json!({"metadata": {"name": "b"}, "spec": {"clusterIP": "10.0.0.2", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}}),
    );
    assert!(
        !cip.ports[0][0].external_policy_local,
        "ClusterIP Services ignore externalTrafficPolicy"
    );
}
