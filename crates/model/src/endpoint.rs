//! Endpoints: what the model keeps of a `discovery.k8s.io/v1` EndpointSlice.
//!
//! As upstream's `pkg/proxy/endpointslicecache.go`: only the first address of an
//! endpoint is used; `ready` defaults to true and `serving` to true when unset,
//! `terminating` to false; an endpoint is local when its `nodeName` is this node; slices
//! are tied to their Service by the `kubernetes.io/service-name` label; FQDN slices
//! are ignored. Ports are matched to Service ports by name and protocol.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1 as discovery;

use crate::intern::intern;
use crate::ip::parse_ip_sloppy;
use crate::name::{IpFamily, NamespacedName, Protocol, join_host_port};
use crate::problem::{ObjectKind, Problem};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An endpoint's topology hints, shared by the slice and every Service port's copy of
/// the endpoint (most endpoints have none: then there is no allocation at all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// `hints.forZones[].name`.
    pub zones: BTreeSet<String>,
    /// `hints.forNodes[].name`.
    pub nodes: BTreeSet<String>,
}

impl Hints {
    /// Hints for these zones and nodes, or `None` when both are empty.
    pub fn new(zones: BTreeSet<String>, nodes: BTreeSet<String>) -> Option<Arc<Hints>> {
        (!zones.is_empty() || !nodes.is_empty()).then(|| Arc::new(Hints { zones, nodes }))
    }
}

static NO_HINTS: BTreeSet<String> = BTreeSet::new();

/// One endpoint address of one slice, before it is matched to Service ports. Kept
/// small (48 bytes): there is one per endpoint of every slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The endpoint's (first) address.
    pub ip: IpAddr,
    /// `conditions.ready` (unset means ready).
    pub ready: bool,
    /// `conditions.serving` (unset means serving).
    pub serving: bool,
    /// `conditions.terminating` (unset means not terminating).
    pub terminating: bool,
    /// `nodeName`, if set (one shared copy per node: [`crate::intern`]).
    pub node_name: Option<Arc<str>>,
    /// Topology hints, if any.
    pub hints: Option<Arc<Hints>>,
}

/// One port of one slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    /// `name` (empty when unset), matched against the Service port name.
    pub name: String,
    /// `port`.
    pub port: u16,
    /// `protocol` (TCP when unset, as the API server defaults it).
    pub protocol: Protocol,
}

/// What the model keeps of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The Service this slice belongs to.
    pub service: NamespacedName,
    /// The slice's own name (used for deterministic ordering).
    pub slice_name: String,
    /// Address family of every endpoint in the slice.
    pub family: IpFamily,
    /// Ports.
    pub ports: Vec<SlicePort>,
    /// Endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

/// One endpoint of one Service port, as data planes see it (32 bytes: the snapshot
/// holds one per endpoint of every Service port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Address.
    pub ip: IpAddr,
    /// Target port.
    pub port: u16,
    /// Ready to receive new connections.
    pub ready: bool,
    /// Serving (may be terminating but still answering).
    pub serving: bool,
    /// Being shut down.
    pub terminating: bool,
    /// Runs on this node.
    pub is_local: bool,
    /// Topology hints, if any.
    pub hints: Option<Arc<Hints>>,
}

impl Endpoint {
    /// Zone hints (empty: none).
    pub fn zone_hints(&self) -> &BTreeSet<String> {
        self.hints.as_ref().map_or(&NO_HINTS, |h| &h.zones)
    }

    /// Node hints (empty: none).
    pub fn node_hints(&self) -> &BTreeSet<String> {
        self.hints.as_ref().map_or(&NO_HINTS, |h| &h.nodes)
    }

    /// `ip:port` (or `[ip]:port`), upstream's `Endpoint.String()`, which feeds chain
    /// names and comments.
    pub fn addr(&self) -> String {
        join_host_port(&self.ip, self.port)
    }
}

/// Converts an EndpointSlice. Returns `None` (with a problem when it is a mistake
/// rather than a deliberate skip) when the slice cannot be used at all.
pub fn convert_slice(
    slice: &discovery::EndpointSlice,
    problems: &mut Vec<Problem>,
) -> Option<SliceInfo> {
    let namespace = slice
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let slice_name = slice.metadata.name.clone().unwrap_or_default();
    let obj = format!("{namespace}/{slice_name}");
    let problem = |field: String, msg: String| {
        Problem::new(ObjectKind::EndpointSlice, obj.clone(), field, msg)
    };
    if slice_name.is_empty() {
        problems.push(problem(
            "metadata.name".into(),
            "missing name; EndpointSlice skipped".into(),
        ));
        return None;
    }
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
    else {
        problems.push(problem(
            format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
            "label missing: the slice belongs to no Service; EndpointSlice skipped".into(),
        ));
        return None;
    };
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        // Upstream ignores FQDN slices: nothing to program for them.
        "FQDN" => return None,
        other => {
            problems.push(problem(
                "addressType".into(),
                format!(
                    "unsupported value {other:?}: must be IPv4, IPv6 or FQDN; EndpointSlice skipped"
                ),
            ));
            return None;
        }
    };

    let mut ports = Vec::new();
    for (i, p) in slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(port) = p.port else {
            problems.push(problem(
                format!("ports[{i}].port"),
                "port missing; slice port skipped".into(),
            ));
            continue;
        };
        let Some(port) = u16::try_from(port).ok().filter(|p| *p != 0) else {
            problems.push(problem(
                format!("ports[{i}].port"),
                format!("invalid port {port}: must be in 1..=65535; slice port skipped"),
            ));
            continue;
        };
        let protocol = match p.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(s) => match Protocol::from_kubernetes(s) {
                Some(p) => p,
                None => {
                    problems.push(problem(
                        format!("ports[{i}].protocol"),
                        format!("unsupported protocol {s:?}: must be TCP, UDP or SCTP; slice port skipped"),
                    ));
                    continue;
                }
            },
        };
        ports.push(SlicePort {
            name: p.name.clone().unwrap_or_default(),
            port,
            protocol,
        });
    }

    let mut endpoints = Vec::new();
    for (i, ep) in slice
        .endpoints
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(raw) = ep.addresses.first() else {
            continue;
        };
        let Some(ip) = parse_ip_sloppy(raw) else {
            problems.push(problem(
                format!("endpoints[{i}].addresses[0]"),
                format!("invalid IP address {raw:?}; endpoint skipped"),
            ));
            continue;
        };
        if IpFamily::of(&ip) != family {
            problems.push(problem(
                format!("endpoints[{i}].addresses[0]"),
                format!(
                    "address {raw:?} is not {} as addressType says; endpoint skipped",
                    family.as_kubernetes()
                ),
            ));
            continue;
        }
        let conditions = ep.conditions.as_ref();
        let hints = ep.hints.as_ref();
        endpoints.push(SliceEndpoint {
            ip,
            ready: conditions.and_then(|c| c.ready).unwrap_or(true),
            serving: conditions.and_then(|c| c.serving).unwrap_or(true),
            terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            node_name: ep.node_name.as_deref().map(intern),
            hints: Hints::new(
                hints
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect())
                    .unwrap_or_default(),
                hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .map(|n| n.iter().map(|n| n.name.clone()).collect())
                    .unwrap_or_default(),
            ),
        });
    }

    Some(SliceInfo {
        service: NamespacedName::new(namespace, service.clone()),
        slice_name,
        family,
        // Kept for the slice's lifetime: no spare capacity.
        ports: ports.into_boxed_slice().into_vec(),
        endpoints: endpoints.into_boxed_slice().into_vec(),
    })
}

/// Collects the endpoints of one Service port from the Service's slices (all of the
/// port's family), matching slice ports by name and protocol.
///
/// As upstream, endpoints are deduplicated by `ip:port`; when the same endpoint shows
/// up in several slices, the first is kept unless a later copy is local. The result is
/// sorted by `ip:port` string, which makes rule output stable.
pub fn endpoints_for_port<'a>(
    slices: impl IntoIterator<Item = &'a SliceInfo>,
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Endpoint> {
    let mut by_addr: std::collections::BTreeMap<String, Endpoint> = Default::default();
    for slice in slices {
        for sp in slice
            .ports
            .iter()
            .filter(|p| p.name == port_name && p.protocol == protocol)
        {
            for ep in &slice.endpoints {
                let is_local = ep.node_name.as_deref() == Some(node_name);
                let endpoint = Endpoint {
                    ip: ep.ip,
                    port: sp.port,
                    ready: ep.ready,
                    serving: ep.serving,
                    terminating: ep.terminating,
                    is_local,
                    hints: ep.hints.clone(),
                };
                let key = endpoint.addr();
                match by_addr.get(&key) {
                    Some(_) if !is_local => {}
                    _ => {
                        by_addr.insert(key, endpoint);
                    }
                }
            }
        }
    }
    by_addr.into_values().collect()
}
