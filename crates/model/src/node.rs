//! This node: its name, labels, addresses and pod CIDRs, from its `v1/Node` object.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;

use crate::ip::{parse_cidr_sloppy, parse_ip_sloppy};
use crate::name::IpFamily;
use crate::problem::{ObjectKind, Problem};

/// The well-known zone label read for topology-aware routing.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The cluster autoscaler's taint on nodes it is about to remove.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// What the proxy knows about the node it runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node name (hostname, or `hostnameOverride`).
    pub name: String,
    /// The Node object's labels (empty until the Node is seen).
    pub labels: BTreeMap<String, String>,
    /// Node addresses, InternalIP before ExternalIP, as upstream's `GetNodeHostIPs`.
    pub addresses: Vec<IpAddr>,
    /// `spec.podCIDRs` (or `spec.podCIDR`), for `detectLocalMode: NodeCIDR`.
    pub pod_cidrs: Vec<IpNet>,
    /// True once the Node object has been seen and not deleted since.
    pub present: bool,
    /// The Node object has a `deletionTimestamp` or the cluster autoscaler's
    /// `ToBeDeletedByClusterAutoscaler` taint (upstream's `ProxyHealthServer.SyncNode`).
    pub being_deleted: bool,
    /// The Node object was seen and then deleted.
    pub deleted: bool,
}

impl NodeInfo {
    /// A node known only by name (no Node object yet).
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Whether the node should get new traffic: upstream's `/healthz` answers 503 once
    /// the node is being deleted (or was deleted).
    pub fn eligible(&self) -> bool {
        !self.being_deleted && !self.deleted
    }

    /// The node's zone label, if set.
    pub fn zone(&self) -> Option<&str> {
        self.labels.get(ZONE_LABEL).map(String::as_str)
    }

    /// The node's primary address of `family`, if it has one.
    pub fn primary_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.addresses
            .iter()
            .find(|ip| IpFamily::of(ip) == family)
            .copied()
    }

    /// The node's pod CIDR of `family`, if it has one.
    pub fn pod_cidr(&self, family: IpFamily) -> Option<IpNet> {
        self.pod_cidrs
            .iter()
            .find(|n| IpFamily::of(&n.addr()) == family)
            .copied()
    }

    /// Updates this record from a Node object (which must carry this node's name).
    pub fn update_from(&mut self, node: &core::Node, problems: &mut Vec<Problem>) {
        let obj = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.present = true;
        self.deleted = false;
        self.being_deleted = node.metadata.deletion_timestamp.is_some()
            || node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
        let mut internal = Vec::new();
        let mut external = Vec::new();
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default();
        for (i, a) in addresses.iter().enumerate() {
            let target = match a.type_.as_str() {
                "InternalIP" => &mut internal,
                "ExternalIP" => &mut external,
                _ => continue,
            };
            match parse_ip_sloppy(a.address.trim()) {
                Some(ip) => target.push(ip),
                None => problems.push(Problem::new(
                    ObjectKind::Node,
                    &obj,
                    format!("status.addresses[{i}].address"),
                    format!("invalid IP address {:?}; address skipped", a.address),
                )),
            }
        }
        internal.extend(external);
        self.addresses = internal;

        let spec = node.spec.as_ref();
        let cidrs: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
            Some(c) if !c.is_empty() => c.iter().collect(),
            _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
        };
        self.pod_cidrs = cidrs
            .into_iter()
            .filter_map(|c| {
                let parsed = parse_cidr_sloppy(c.trim());
                if parsed.is_none() {
                    problems.push(Problem::new(
                        ObjectKind::Node,
                        &obj,
                        "spec.podCIDRs",
                        format!("invalid CIDR {c:?}; skipped"),
                    ));
                }
                parsed
            })
            .collect();
    }
}
