//! Manifest text for lab scenarios.

use std::fmt::Write as _;

use kpr_netns_lab::cluster::addr;

/// The two Node objects, with their LAN addresses.
pub fn nodes() -> String {
    let mut s = String::new();
    for i in 1..=2u8 {
        let _ = write!(
            s,
            "apiVersion: v1\nkind: Node\nmetadata: {{name: node{i}}}\nspec: {{podCIDRs: [10.244.{i}.0/24, \"fd44:{i}::/64\"]}}\nstatus:\n  addresses:\n  - {{type: InternalIP, address: {}}}\n  - {{type: InternalIP, address: \"{}\"}}\n---\n",
            addr::node4(i),
            addr::node6(i)
        );
    }
    s
}

/// A Service port.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: &'static str,
    pub port: u16,
    pub protocol: &'static str,
    pub target: u16,
    pub node_port: Option<u16>,
}

impl Port {
    pub fn tcp(port: u16, target: u16) -> Self {
        Self {
            name: "tcp",
            port,
            protocol: "TCP",
            target,
            node_port: None,
        }
    }
    pub fn udp(port: u16, target: u16) -> Self {
        Self {
            name: "udp",
            port,
            protocol: "UDP",
            target,
            node_port: None,
        }
    }
    pub fn node_port(mut self, np: u16) -> Self {
        self.node_port = Some(np);
        self
    }
}

/// A Service.
#[derive(Clone, Debug, Default)]
pub struct Svc {
    pub name: String,
    pub type_: &'static str,
    pub cluster_ips: Vec<String>,
    pub ports: Vec<Port>,
    pub external_ips: Vec<String>,
    pub lb_ips: Vec<String>,
    pub source_ranges: Vec<String>,
    pub etp_local: bool,
    pub itp_local: bool,
    pub affinity_seconds: Option<u32>,
    pub health_check_node_port: Option<u16>,
}

impl Svc {
    pub fn new(name: &str, cluster_ip: &str, ports: Vec<Port>) -> Self {
        Self {
            name: name.into(),
            type_: "ClusterIP",
            cluster_ips: vec![cluster_ip.into()],
            ports,
            ..Self::default()
        }
    }

    pub fn yaml(&self) -> String {
        let mut s = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{namespace: lab, name: {}}}\nspec:\n  type: {}\n",
            self.name, self.type_
        );
        let _ = writeln!(s, "  clusterIP: \"{}\"", self.cluster_ips[0]);
        let quoted = |v: &[String]| {
            v.iter()
                .map(|x| format!("\"{x}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  clusterIPs: [{}]", quoted(&self.cluster_ips));
        if !self.external_ips.is_empty() {
            let _ = writeln!(s, "  externalIPs: [{}]", quoted(&self.external_ips));
        }
        if !self.source_ranges.is_empty() {
            let _ = writeln!(
                s,
                "  loadBalancerSourceRanges: [{}]",
                quoted(&self.source_ranges)
            );
        }
        if self.etp_local {
            s.push_str("  externalTrafficPolicy: Local\n");
        }
        if self.itp_local {
            s.push_str("  internalTrafficPolicy: Local\n");
        }
        if let Some(t) = self.affinity_seconds {
            let _ = writeln!(
                s,
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {t}}}}}"
            );
        }
        if let Some(p) = self.health_check_node_port {
            let _ = writeln!(s, "  healthCheckNodePort: {p}");
        }
        s.push_str("  ports:\n");
        for p in &self.ports {
            let _ = write!(
                s,
                "  - {{name: {}, port: {}, protocol: {}, targetPort: {}",
                p.name, p.port, p.protocol, p.target
            );
            if let Some(np) = p.node_port {
                let _ = write!(s, ", nodePort: {np}");
            }
            s.push_str("}\n");
        }
        if !self.lb_ips.is_empty() {
            s.push_str("status:\n  loadBalancer:\n    ingress:\n");
            for ip in &self.lb_ips {
                let _ = writeln!(s, "    - {{ip: \"{ip}\"}}");
            }
        }
        s.push_str("---\n");
        s
    }
}

/// One endpoint: pod address, node, conditions.
#[derive(Clone, Debug)]
pub struct Ep {
    pub ip: String,
    pub node: u8,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Ep {
    pub fn ready(ip: impl ToString, node: u8) -> Self {
        Self {
            ip: ip.to_string(),
            node,
            ready: true,
            serving: true,
            terminating: false,
        }
    }
    pub fn terminating(ip: impl ToString, node: u8) -> Self {
        Self {
            ip: ip.to_string(),
            node,
            ready: false,
            serving: true,
            terminating: true,
        }
    }
}

/// An EndpointSlice for Service `svc` with the ports of `ports` (target ports).
pub fn slice(svc: &str, name: &str, v6: bool, eps: &[Ep], ports: &[Port]) -> String {
    let mut s = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{namespace: lab, name: {name}, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: {}\nendpoints:\n",
        if v6 { "IPv6" } else { "IPv4" }
    );
    if eps.is_empty() {
        s = s.replace("endpoints:\n", "endpoints: []\n");
    }
    for e in eps {
        let _ = writeln!(
            s,
            "- {{addresses: [\"{}\"], nodeName: node{}, conditions: {{ready: {}, serving: {}, terminating: {}}}}}",
            e.ip, e.node, e.ready, e.serving, e.terminating
        );
    }
    s.push_str("ports:\n");
    for p in ports {
        let _ = writeln!(
            s,
            "- {{name: {}, port: {}, protocol: {}}}",
            p.name, p.target, p.protocol
        );
    }
    s.push_str("---\n");
    s
}
