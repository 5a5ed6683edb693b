//! IPVS mode's pure render: from one family's model state to the [`Plan`] the
//! kernel should hold: virtual servers with their real servers, the addresses bound
//! to `kube-ipvs0`, the ipset entries and the iptables rules, laid out as upstream
//! kube-proxy's IPVS proxier lays them out (`syncProxyRules`).
//!
//! Where upstream's IPVS mode differs from its iptables mode, upstream's IPVS mode
//! is followed: Local traffic policies with no local endpoint fall back to every
//! endpoint instead of dropping, a virtual server exists even with no endpoints
//! (new connections then get no answer from IPVS, and `KUBE-IPVS-FILTER` does not
//! reject them as the address:port is a Service).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use kpr_model::{
    Endpoint, FamilyState, IpFamily, LocalDetector, Protocol, ServicePortName, ServicePortState,
    ServiceState, SessionAffinity,
};

use crate::desired::Desired;
use crate::sets::{self, Set, SetEntries};
use crate::types::{RealServer, ServiceFlags, ServiceKey, VirtualServer};

/// Settings of one family's plan, resolved by the shell from configuration and host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// The family planned.
    pub family: IpFamily,
    /// The IPVS scheduler (`rr` ...).
    pub scheduler: String,
    /// The masquerade mark as written in rules (`0x00004000`).
    pub masquerade_mark: String,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// How traffic from local pods is recognised.
    pub local_detector: LocalDetector,
    /// Addresses taking NodePorts (this family, no loopback), in order.
    pub node_port_ips: Vec<IpAddr>,
    /// Addresses of this node on interfaces other than `kube-ipvs0`: external and
    /// load-balancer IPs among them are not bound to `kube-ipvs0`.
    pub node_addresses: BTreeSet<IpAddr>,
    /// The node's primary IP of the family (load-balancer source ranges containing
    /// it admit the node itself).
    pub node_ip: Option<IpAddr>,
    /// `MASQUERADE --random-fully` is supported.
    pub random_fully: bool,
}

impl PlanConfig {
    /// Upstream's defaults for a family: round robin, mark bit 14, no node addresses.
    pub fn new(family: IpFamily) -> Self {
        Self {
            family,
            scheduler: "rr".into(),
            masquerade_mark: "0x00004000".into(),
            masquerade_all: false,
            local_detector: LocalDetector::None,
            node_port_ips: Vec::new(),
            node_addresses: BTreeSet::new(),
            node_ip: None,
            random_fully: true,
        }
    }
}

/// One virtual server of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedService {
    /// The virtual server.
    pub vs: VirtualServer,
    /// Its real servers, sorted by address and port, weight 1.
    pub reals: Vec<RealServer>,
    /// The Service port it serves.
    pub service: ServicePortName,
}

/// What the kernel should hold for one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The family.
    pub family: IpFamily,
    /// Virtual servers by key.
    pub services: BTreeMap<ServiceKey, PlannedService>,
    /// Addresses to bind to `kube-ipvs0`.
    pub bind: BTreeSet<IpAddr>,
    /// Entries of every set.
    pub sets: SetEntries,
    /// Load-balancer frontends whose source ranges exclude the node: traffic from
    /// the node itself is dropped in `KUBE-IPVS-OUT-FILTER`.
    pub out_filter: Vec<ServiceKey>,
    /// The `iptables-restore --noflush` input.
    pub iptables: String,
}

/// The NodePort sets of a protocol: (all, Local policy).
fn node_port_sets(protocol: Protocol) -> (Set, Set) {
    match protocol {
        Protocol::Tcp => (Set::NodePortTcp, Set::NodePortLocalTcp),
        Protocol::Udp => (Set::NodePortUdp, Set::NodePortLocalUdp),
        Protocol::Sctp => (Set::NodePortSctp, Set::NodePortLocalSctp),
    }
}

/// The real servers for a virtual server: Local-policy frontends use the local
/// endpoints, or every endpoint when there is no local one (upstream IPVS mode).
fn real_servers(port: &ServicePortState, only_local: bool) -> Vec<RealServer> {
    let pick = |eps: Vec<&Endpoint>| {
        let mut reals: Vec<RealServer> = eps
            .into_iter()
            .map(|e| RealServer::new(e.ip, e.port, 1))
            .collect();
        reals.sort_by_key(RealServer::socket_addr);
        reals.dedup_by_key(|r| r.socket_addr());
        reals
    };
    if only_local {
        let local: Vec<&Endpoint> = port.local_endpoints().collect();
        if !local.is_empty() {
            return pick(local);
        }
    }
    pick(port.cluster_endpoints().collect())
}

/// One frontend a Service port asks for: the virtual server, and whether its
/// address goes on `kube-ipvs0`. Two Services may ask for one address:port; the
/// first by name (then in the planner's order within the Service) gets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The virtual server with its real servers.
    pub(crate) planned: PlannedService,
    /// Bind the address, if this claim wins.
    pub(crate) bind: bool,
}

/// What one Service contributes to its family's plan, in the order the planner
/// meets it (ports in spec order; per port the ClusterIP, external IPs,
/// load-balancer IPs, NodePorts). [`crate::desired::Desired`] merges the pieces of
/// every Service into the [`Plan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Piece {
    /// The virtual servers it asks for.
    pub(crate) claims: Vec<Claim>,
    /// Its ipset entries (the same entry may come from several Services).
    pub(crate) entries: Vec<(Set, String)>,
    /// Its load-balancer frontends whose source ranges exclude the node.
    pub(crate) out_filter: Vec<ServiceKey>,
}

struct Planner<'a> {
    config: &'a PlanConfig,
    piece: Piece,
}

impl Planner<'_> {
    fn add(&mut self, set: Set, entry: String) {
        self.piece.entries.push((set, entry));
    }

    fn virtual_server(
        &mut self,
        port: &ServicePortState,
        address: IpAddr,
        vport: u16,
        only_local: bool,
        bind: bool,
    ) {
        let info = &port.info;
        let mut vs = VirtualServer::new(
            address,
            info.name.protocol,
            vport,
            self.config.scheduler.clone(),
        );
        if let SessionAffinity::ClientIp { timeout_seconds } = info.session_affinity {
            vs.flags |= ServiceFlags::PERSISTENT;
            vs.timeout = timeout_seconds;
        }
        if self.config.scheduler == "mh" {
            // Upstream hashes on the source port too with Maglev (`mh-port`).
            vs.flags |= ServiceFlags::SH_PORT;
        }
        let reals = real_servers(port, only_local);
        self.piece.claims.push(Claim {
            planned: PlannedService {
                vs,
                reals,
                service: info.name.clone(),
            },
            bind,
        });
    }

    fn service_port(&mut self, port: &ServicePortState) {
        let info = &port.info;
        let protocol = info.name.protocol;
        for ep in port.endpoints.iter().filter(|e| e.is_local) {
            self.add(
                Set::LoopBack,
                sets::ip_port_ip(ep.ip, protocol, ep.port, ep.ip),
            );
        }
        self.add(
            Set::ClusterIp,
            sets::ip_port(info.cluster_ip, protocol, info.port),
        );
        self.virtual_server(
            port,
            info.cluster_ip,
            info.port,
            info.internal_policy_local,
            true,
        );
        let external_local = info.external_policy_local;
        for ip in &info.external_ips {
            let set = if external_local {
                Set::ExternalIpLocal
            } else {
                Set::ExternalIp
            };
            self.add(set, sets::ip_port(*ip, protocol, info.port));
            let bind = !self.config.node_addresses.contains(ip);
            self.virtual_server(port, *ip, info.port, external_local, bind);
        }
        for ip in &info.load_balancer_vips {
            let entry = sets::ip_port(*ip, protocol, info.port);
            self.add(Set::LoadBalancer, entry.clone());
            if external_local {
                self.add(Set::LoadBalancerLocal, entry.clone());
            }
            let ranges = &info.load_balancer_source_ranges;
            if !ranges.is_empty() {
                self.add(Set::LoadBalancerFw, entry);
                for net in ranges {
                    self.add(
                        Set::LoadBalancerSourceCidr,
                        sets::ip_port_net(*ip, protocol, info.port, *net),
                    );
                }
                let admits_node = self
                    .config
                    .node_ip
                    .is_some_and(|n| ranges.iter().any(|r| r.contains(&n)));
                if admits_node {
                    self.add(
                        Set::LoadBalancerSourceIp,
                        sets::ip_port_ip(*ip, protocol, info.port, *ip),
                    );
                } else {
                    self.piece
                        .out_filter
                        .push(ServiceKey::new(*ip, protocol, info.port));
                }
            }
            let bind = !self.config.node_addresses.contains(ip);
            self.virtual_server(port, *ip, info.port, external_local, bind);
        }
        if let Some(node_port) = info.node_port {
            if self.config.node_port_ips.is_empty() {
                // Upstream skips the rest of the port, health-check port included.
                return;
            }
            let (all, local) = node_port_sets(protocol);
            if protocol == Protocol::Sctp {
                for ip in self.config.node_port_ips.clone() {
                    self.add(all, sets::ip_port(ip, protocol, node_port));
                    if external_local {
                        self.add(local, sets::ip_port(ip, protocol, node_port));
                    }
                }
            } else {
                self.add(all, node_port.to_string());
                if external_local {
                    self.add(local, node_port.to_string());
                }
            }
            for ip in self.config.node_port_ips.clone() {
                self.virtual_server(port, ip, node_port, external_local, false);
            }
        }
        if let Some(hc) = info.health_check_node_port {
            self.add(Set::HealthCheckNodePort, hc.to_string());
        }
    }
}

/// What `svc` contributes to the plan under `config`.
pub(crate) fn piece(svc: &ServiceState, config: &PlanConfig) -> Piece {
    let mut planner = Planner {
        config,
        piece: Piece::default(),
    };
    for port in &svc.ports {
        planner.service_port(port);
    }
    planner.piece
}

/// Plans one family: pure, deterministic (Services in name order, ports in spec
/// order). A proxier keeps a [`crate::desired::Desired`] instead, which updates the
/// plan for the Services that changed; this builds one from nothing.
pub fn plan(state: &FamilyState, config: &PlanConfig) -> Plan {
    let mut desired = Desired::new(config.clone());
    desired.update(state);
    desired.into_plan()
}

fn ipvsadm_service(key: &ServiceKey) -> String {
    let flag = match key.protocol {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
        Protocol::Sctp => "--sctp-service",
    };
    format!("{flag} {}", SocketAddr::new(key.address, key.port))
}

impl Plan {
    /// The virtual and real servers as `ipvsadm -Sn` prints them.
    pub fn ipvsadm_save(&self) -> String {
        let mut out = String::new();
        for (key, planned) in &self.services {
            let vs = &planned.vs;
            let _ = write!(out, "-A {} -s {}", ipvsadm_service(key), vs.scheduler);
            if vs.flags.contains(ServiceFlags::SH_PORT) {
                let _ = write!(out, " -b {}-port", vs.scheduler);
            }
            if vs.flags.contains(ServiceFlags::PERSISTENT) {
                let _ = write!(out, " -p {}", vs.timeout);
            }
            out.push('\n');
            for rs in &planned.reals {
                let _ = writeln!(
                    out,
                    "-a {} -r {} -m -w {}",
                    ipvsadm_service(key),
                    rs.socket_addr(),
                    rs.weight
                );
            }
        }
        out
    }

    /// The ipsets as an `ipset restore` script creating them from nothing.
    pub fn ipset_restore(&self) -> String {
        sets::restore_script(&SetEntries::new(), &self.sets, self.family)
    }

    /// The `--dry-run` text of this family: servers, ipsets, bound addresses and
    /// iptables rules, each part headed by a `#` line.
    pub fn dry_run(&self) -> String {
        let fam = self.family.as_kubernetes();
        let prefix = match self.family {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        };
        let mut out = format!("# {fam} IPVS virtual and real servers (ipvsadm -Sn)\n");
        out.push_str(&self.ipvsadm_save());
        let _ = writeln!(out, "# {fam} ipsets (ipset restore input)");
        out.push_str(&self.ipset_restore());
        let _ = writeln!(out, "# {fam} addresses on kube-ipvs0");
        for ip in &self.bind {
            let _ = writeln!(out, "{ip}/{prefix}");
        }
        let tool = match self.family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let _ = writeln!(out, "# {fam} rules ({tool}-restore --noflush input)");
        out.push_str(&self.iptables);
        out
    }
}
