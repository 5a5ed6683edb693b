//! `ProxyState`: the immutable snapshot every data plane renders from.
//!
//! A snapshot holds, per address family, every proxied Service port with its endpoints
//! already selected for each traffic policy, and the traffic routing decided once for
//! all data planes ([`Traffic`]). Snapshots share unchanged services with their
//! predecessors (`Arc`), so taking one is cheap and comparing two finds what changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::endpoint::Endpoint;
use crate::name::{IpFamily, NamespacedName};
use crate::node::NodeInfo;
use crate::service::ServicePortInfo;
use crate::topology::Selection;

/// Where traffic of one kind (to the ClusterIP, or to an external destination) goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the endpoints of the "Cluster" policy (iptables `KUBE-SVC-*`).
    Cluster,
    /// To the endpoints of the "Local" policy (iptables `KUBE-SVL-*`).
    Local,
    /// Rejected at once: the port has no usable endpoint anywhere ("has no endpoints").
    Reject,
    /// Dropped: Local policy and no local endpoint ("has no local endpoints").
    Drop,
}

impl Route {
    /// True if the route delivers to endpoints.
    pub fn is_delivered(self) -> bool {
        matches!(self, Route::Cluster | Route::Local)
    }
}

/// The routing of one Service port, as upstream's iptables and nftables proxiers
/// decide it (`syncProxyRules`: internalPolicyChain, externalPolicyChain,
/// usesExternalTrafficChain, usesFWChain ...), decided here once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// The port has a usable endpoint somewhere in the cluster.
    pub has_endpoints: bool,
    /// Traffic to the ClusterIP.
    pub internal: Route,
    /// Traffic to NodePorts, external IPs and load-balancer IPs, after the
    /// short-circuit for locally originated traffic.
    pub external: Route,
    /// A Cluster-policy endpoint chain exists.
    pub uses_cluster_chain: bool,
    /// A Local-policy endpoint chain exists.
    pub uses_local_chain: bool,
    /// The external-destinations chain exists (`KUBE-EXT-*`): the port has endpoints
    /// and is externally accessible. It exists even when `external` drops, so that
    /// traffic from pods and from the node itself can still be short-circuited.
    pub uses_external_chain: bool,
    /// The load-balancer source-range firewall chain exists (`KUBE-FW-*`).
    pub uses_firewall: bool,
}

/// One Service port in one family with its endpoints selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortState {
    /// The port's configuration (shared with the store's copy of the Service).
    pub info: Arc<ServicePortInfo>,
    /// All endpoints of the port in this family, sorted by `ip:port`.
    pub endpoints: Vec<Endpoint>,
    /// Which policies use each endpoint (same order as `endpoints`).
    pub selection: Vec<Selection>,
    /// Upstream `hasAnyEndpoints`.
    pub has_any_endpoints: bool,
}

impl ServicePortState {
    /// Endpoints used by the Cluster policy, in order.
    pub fn cluster_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.selected(|s| s.cluster)
    }

    /// Endpoints used by the Local policy, in order.
    pub fn local_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.selected(|s| s.local)
    }

    /// Endpoints reachable through some policy: each gets an endpoint chain.
    pub fn reachable_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.selected(Selection::reachable)
    }

    fn selected(&self, pick: impl Fn(Selection) -> bool) -> impl Iterator<Item = &Endpoint> {
        self.endpoints
            .iter()
            .zip(&self.selection)
            .filter(move |(_, s)| pick(**s))
            .map(|(e, _)| e)
    }

    /// How traffic to this port is routed.
    pub fn traffic(&self) -> Traffic {
        let info = &self.info;
        let has_cluster = self.selection.iter().any(|s| s.cluster);
        let has_local = self.selection.iter().any(|s| s.local);
        let has_endpoints = self.has_any_endpoints;
        let policy_route = |local_policy: bool| {
            if !has_endpoints {
                Route::Reject
            } else if local_policy {
                if has_local { Route::Local } else { Route::Drop }
            } else {
                Route::Cluster
            }
        };
        Traffic {
            has_endpoints,
            internal: policy_route(info.internal_policy_local),
            external: policy_route(info.external_policy_local),
            uses_cluster_chain: has_cluster && info.uses_cluster_endpoints(),
            uses_local_chain: has_local && info.uses_local_endpoints(),
            uses_external_chain: has_endpoints && info.externally_accessible(),
            uses_firewall: has_endpoints
                && !info.load_balancer_vips.is_empty()
                && !info.load_balancer_source_ranges.is_empty(),
        }
    }
}

/// One Service in one family: its ports, in spec order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceState {
    /// The Service.
    pub name: NamespacedName,
    /// Its ports.
    pub ports: Vec<ServicePortState>,
}

/// Every proxied Service of one family, by name.
pub type ServiceMap = BTreeMap<NamespacedName, Arc<ServiceState>>;

/// The services of one address family.
#[derive(Clone, Debug)]
pub struct FamilyState {
    /// The family.
    pub family: IpFamily,
    /// Services by name (sorted: rendering is deterministic).
    pub services: Arc<ServiceMap>,
}

impl FamilyState {
    /// Total number of endpoint chains the family needs (upstream counts endpoints to
    /// decide "large cluster mode").
    pub fn total_endpoints(&self) -> usize {
        self.services
            .values()
            .flat_map(|s| &s.ports)
            .map(|p| p.endpoints.len())
            .sum()
    }

    /// Names of services whose state differs between `previous` and `self`
    /// (added, removed or changed): the input of a partial sync.
    pub fn changed_since(&self, previous: &FamilyState) -> Vec<NamespacedName> {
        let mut changed = Vec::new();
        for (name, svc) in self.services.iter() {
            match previous.services.get(name) {
                Some(old) if Arc::ptr_eq(old, svc) || old == svc => {}
                _ => changed.push(name.clone()),
            }
        }
        for name in previous.services.keys() {
            if !self.services.contains_key(name) {
                changed.push(name.clone());
            }
        }
        changed
    }
}

/// An immutable snapshot of everything the data planes program.
#[derive(Clone, Debug)]
pub struct ProxyState {
    /// Per family, index [`IpFamily::index`].
    pub families: [FamilyState; 2],
    /// This node.
    pub node: Arc<NodeInfo>,
    /// Every ServiceCIDR's ranges, sorted, both families.
    pub service_cidrs: Arc<Vec<ipnet::IpNet>>,
}

impl ProxyState {
    /// The state of one family.
    pub fn family(&self, family: IpFamily) -> &FamilyState {
        &self.families[family.index()]
    }

    /// An empty state (no services) for a node.
    pub fn empty(node: NodeInfo) -> Self {
        Self {
            families: IpFamily::ALL.map(|family| FamilyState {
                family,
                services: Arc::default(),
            }),
            node: Arc::new(node),
            service_cidrs: Arc::default(),
        }
    }

    /// The ServiceCIDR ranges of `family`.
    pub fn service_cidrs(&self, family: IpFamily) -> Vec<ipnet::IpNet> {
        self.service_cidrs
            .iter()
            .filter(|c| IpFamily::of(&c.addr()) == family)
            .copied()
            .collect()
    }
}
