//! Cluster-sized inputs: `n` Services with `m` endpoints each, in a mix that looks
//! like a real cluster (mostly ClusterIP, some NodePort and LoadBalancer, some with
//! ClientIP affinity or externalTrafficPolicy Local), optionally dual-stack.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kpr_model::Objects;
use serde_json::json;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Number of Services.
    pub services: usize,
    /// Endpoints per Service.
    pub endpoints: usize,
    /// Give every Service an IPv6 ClusterIP and IPv6 endpoints too.
    pub dual_stack: bool,
}

/// The node the benchmark pretends to be.
pub const NODE: &str = "bench-node";

fn v4(base: u32, i: usize) -> String {
    let a = base + i as u32;
    format!(
        "{}.{}.{}.{}",
        a >> 24,
        (a >> 16) & 255,
        (a >> 8) & 255,
        a & 255
    )
}

/// The ClusterIP of Service `i` (10.96.0.0/12 space).
pub fn cluster_ip(i: usize) -> String {
    v4(0x0a60_0000 + 10, i)
}

/// The address of endpoint `j` of Service `i` (10.128.0.0/9 space).
pub fn endpoint_ip(shape: &Shape, i: usize, j: usize) -> String {
    v4(0x0a80_0000, i * shape.endpoints + j)
}

/// Service `i`.
pub fn service(i: usize, shape: &Shape) -> core::Service {
    let kind = i % 20;
    let (ty, etp, affinity) = match kind {
        0 => ("LoadBalancer", "Local", false),
        1 | 2 => ("LoadBalancer", "Cluster", false),
        3..=5 => ("NodePort", "Cluster", false),
        6 => ("ClusterIP", "Cluster", true),
        _ => ("ClusterIP", "Cluster", false),
    };
    let mut ips = vec![cluster_ip(i)];
    if shape.dual_stack {
        ips.push(format!("fd96::{:x}", i + 10));
    }
    let mut spec = json!({
        "type": ty,
        "clusterIP": ips[0],
        "clusterIPs": ips,
        "externalTrafficPolicy": etp,
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
    });
    if ty != "ClusterIP" {
        spec["ports"][0]["nodePort"] = json!(30000 + (i % 2700));
    }
    if ty == "LoadBalancer" && etp == "Local" {
        spec["healthCheckNodePort"] = json!(32700 + (i % 60));
    }
    if affinity {
        spec["sessionAffinity"] = json!("ClientIP");
    }
    let mut svc = json!({"metadata": {"namespace": format!("ns{}", i % 100), "name": format!("svc{i}")}, "spec": spec});
    if ty == "LoadBalancer" {
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": v4(0xc633_6400, i % 250)}]}});
    }
    serde_json::from_value(svc).unwrap_or_default()
}

/// The EndpointSlice(s) of Service `i`.
pub fn slices(i: usize, shape: &Shape) -> Vec<discovery::EndpointSlice> {
    let mut out = Vec::new();
    let families: &[&str] = if shape.dual_stack {
        &["IPv4", "IPv6"]
    } else {
        &["IPv4"]
    };
    for fam in families {
        let endpoints: Vec<_> = (0..shape.endpoints)
            .map(|j| {
                let addr = if *fam == "IPv4" {
                    endpoint_ip(shape, i, j)
                } else {
                    format!("fd00:10::{:x}", i * shape.endpoints + j + 1)
                };
                let node = if j % 4 == 0 {
                    NODE.to_string()
                } else {
                    format!("node-{}", j % 50)
                };
                json!({"addresses": [addr], "nodeName": node, "conditions": {"ready": true}})
            })
            .collect();
        let slice = json!({
            "metadata": {
                "namespace": format!("ns{}", i % 100),
                "name": format!("svc{i}-{}", fam.to_lowercase()),
                "labels": {"kubernetes.io/service-name": format!("svc{i}")}
            },
            "addressType": fam,
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        });
        out.push(serde_json::from_value(slice).unwrap_or_default());
    }
    out
}

/// All objects of a shape.
pub fn objects(shape: &Shape) -> Objects {
    let mut o = Objects::default();
    for i in 0..shape.services {
        o.services.push(service(i, shape));
        o.slices.extend(slices(i, shape));
    }
    o
}
