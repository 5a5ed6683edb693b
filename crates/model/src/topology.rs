//! Endpoint selection: which endpoints each traffic policy may use.
//!
//! This is upstream's `CategorizeEndpoints` (`pkg/proxy/topology.go`), decided once here
//! for every data plane:
//!
//! - **Cluster** endpoints: the ready endpoints, narrowed by topology hints when the
//!   hints are usable (every ready endpoint has hints and at least one hint names this
//!   node, or else this node's zone); if no endpoint is ready anywhere, the serving
//!   terminating endpoints instead (the terminating fallback ignores topology).
//! - **Local** endpoints: the ready endpoints on this node; if there are none, the
//!   serving terminating endpoints on this node.
//! - **has_any_endpoints**: some endpoint (ready, or serving and terminating) exists
//!   for a policy this port uses; without it, traffic is rejected.
//!
//! Cluster endpoints are only computed when the port uses the Cluster policy, local
//! ones only when it uses the Local policy.

use crate::endpoint::Endpoint;
use crate::service::ServicePortInfo;

/// The node facts endpoint selection depends on.
#[derive(Clone, Copy, Debug)]
pub struct NodeTopology<'a> {
    /// This node's name (matched against endpoint `nodeName` and node hints).
    pub node_name: &'a str,
    /// This node's `topology.kubernetes.io/zone` label, if any.
    pub zone: Option<&'a str>,
}

/// Which endpoint set a policy uses, per endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Used by the "Cluster" policy chain.
    pub cluster: bool,
    /// Used by the "Local" policy chain.
    pub local: bool,
}

impl Selection {
    /// Reachable from this node through some policy: gets an endpoint chain.
    pub fn reachable(self) -> bool {
        self.cluster || self.local
    }
}

/// The outcome of endpoint selection for one Service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// One entry per input endpoint, same order.
    pub selection: Vec<Selection>,
    /// Whether the Service port has any usable endpoint anywhere in the cluster.
    pub has_any_endpoints: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TopologyMode {
    None,
    Node,
    Zone,
}

fn topology_mode(endpoints: &[Endpoint], node: NodeTopology<'_>) -> TopologyMode {
    let mut all_node_hints = true;
    let mut has_for_node = false;
    let mut all_zone_hints = true;
    let mut has_for_zone = false;
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        if ep.zone_hints().is_empty() {
            all_zone_hints = false;
        } else if node.zone.is_some_and(|z| ep.zone_hints().contains(z)) {
            has_for_zone = true;
        }
        if ep.node_hints().is_empty() {
            all_node_hints = false;
        } else if ep.node_hints().contains(node.node_name) {
            has_for_node = true;
        }
    }
    if all_node_hints && has_for_node {
        return TopologyMode::Node;
    }
    if all_zone_hints && has_for_zone {
        return TopologyMode::Zone;
    }
    TopologyMode::None
}

fn available_for_topology(ep: &Endpoint, mode: TopologyMode, node: NodeTopology<'_>) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::Node => ep.node_hints().contains(node.node_name),
        TopologyMode::Zone => node.zone.is_some_and(|z| ep.zone_hints().contains(z)),
    }
}

/// Selects the endpoints each policy of `port` may use (see the module docs).
pub fn categorize(
    port: &ServicePortInfo,
    endpoints: &[Endpoint],
    node: NodeTopology<'_>,
) -> Categorized {
    let mut selection = vec![Selection::default(); endpoints.len()];
    let mut has_any_endpoints = false;

    if port.uses_cluster_endpoints() {
        let mode = topology_mode(endpoints, node);
        let mut any = false;
        for (sel, ep) in selection.iter_mut().zip(endpoints) {
            if ep.ready && available_for_topology(ep, mode, node) {
                sel.cluster = true;
                any = true;
            }
        }
        if !any {
            for (sel, ep) in selection.iter_mut().zip(endpoints) {
                if ep.serving && ep.terminating {
                    sel.cluster = true;
                    any = true;
                }
            }
        }
        has_any_endpoints = any;
    }

    if port.uses_local_endpoints() {
        let mut local_ready = false;
        let mut local_serving_terminating = false;
        for ep in endpoints {
            if ep.ready {
                has_any_endpoints = true;
                local_ready |= ep.is_local;
            } else if ep.serving && ep.terminating {
                has_any_endpoints = true;
                local_serving_terminating |= ep.is_local;
            }
        }
        for (sel, ep) in selection.iter_mut().zip(endpoints) {
            sel.local = if local_ready {
                ep.is_local && ep.ready
            } else if local_serving_terminating {
                ep.is_local && ep.serving && ep.terminating
            } else {
                false
            };
        }
    }

    Categorized {
        selection,
        has_any_endpoints,
    }
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
