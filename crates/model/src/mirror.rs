//! v1 Endpoints, mirrored into EndpointSlices.
//!
//! As upstream's EndpointSlice mirroring controller
//! (`pkg/controller/endpointslicemirroring`): only Endpoints of a Service without a
//! selector are mirrored, and not those labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"`; each subset becomes one slice per
//! address family; `addresses` become ready endpoints and `notReadyAddresses` not-ready
//! ones (only the `ready` condition is set, as the controller does); ports keep their
//! names and protocols.

use k8s_openapi::api::core::v1 as core;

use crate::endpoint::{SliceEndpoint, SliceInfo, SlicePort};
use crate::intern::intern;
use crate::ip::parse_ip_sloppy;
use crate::name::{IpFamily, NamespacedName, Protocol};
use crate::problem::{ObjectKind, Problem};

/// The label that stops the mirroring controller from mirroring an Endpoints object.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Converts a v1 Endpoints object into the slices the mirroring controller would create.
/// Returns an empty list when the object is not to be mirrored.
pub fn mirror_endpoints(eps: &core::Endpoints, problems: &mut Vec<Problem>) -> Vec<SliceInfo> {
    let namespace = eps
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let name = eps.metadata.name.clone().unwrap_or_default();
    let obj = format!("{namespace}/{name}");
    if name.is_empty() {
        problems.push(Problem::new(
            ObjectKind::Endpoints,
            obj,
            "metadata.name",
            "missing name; Endpoints skipped",
        ));
        return Vec::new();
    }
    if eps
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true")
    {
        return Vec::new();
    }
    let service = NamespacedName::new(namespace, name.clone());
    let mut out = Vec::new();
    for (si, subset) in eps
        .subsets
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let mut ports = Vec::new();
        for (pi, p) in subset
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let protocol = match p.protocol.as_deref() {
                None => Protocol::Tcp,
                Some(s) => {
                    match Protocol::from_kubernetes(s) {
                        Some(proto) => proto,
                        None => {
                            problems.push(Problem::new(
                            ObjectKind::Endpoints,
                            &obj,
                            format!("subsets[{si}].ports[{pi}].protocol"),
                            format!("unsupported protocol {s:?}: must be TCP, UDP or SCTP; port skipped"),
                        ));
                            continue;
                        }
                    }
                }
            };
            let Some(port) = u16::try_from(p.port).ok().filter(|p| *p != 0) else {
                problems.push(Problem::new(
                    ObjectKind::Endpoints,
                    &obj,
                    format!("subsets[{si}].ports[{pi}].port"),
                    format!(
                        "invalid port {}: must be in 1..=65535; port skipped",
                        p.port
                    ),
                ));
                continue;
            };
            ports.push(SlicePort {
                name: p.name.clone().unwrap_or_default(),
                port,
                protocol,
            });
        }
        let mut by_family: [Vec<SliceEndpoint>; 2] = [Vec::new(), Vec::new()];
        let lists = [
            (
                "addresses",
                subset.addresses.as_deref().unwrap_or_default(),
                true,
            ),
            (
                "notReadyAddresses",
                subset.not_ready_addresses.as_deref().unwrap_or_default(),
                false,
            ),
        ];
        for (field, addresses, ready) in lists {
            for (ai, a) in addresses.iter().enumerate() {
                let Some(ip) = parse_ip_sloppy(a.ip.trim()) else {
                    problems.push(Problem::new(
                        ObjectKind::Endpoints,
                        &obj,
                        format!("subsets[{si}].{field}[{ai}].ip"),
                        format!("invalid IP address {:?}; address skipped", a.ip),
                    ));
                    continue;
                };
                by_family[IpFamily::of(&ip).index()].push(SliceEndpoint {
                    ip,
                    ready,
                    // The controller sets only `ready`; unset `serving` reads as true and
                    // unset `terminating` as false.
                    serving: true,
                    terminating: false,
                    node_name: a.node_name.as_deref().map(intern),
                    hints: None,
                });
            }
        }
        for family in IpFamily::ALL {
            let endpoints = std::mem::take(&mut by_family[family.index()]);
            if endpoints.is_empty() {
                continue;
            }
            out.push(SliceInfo {
                service: service.clone(),
                slice_name: format!(
                    "{name}-mirror-{si}-{}",
                    family.as_kubernetes().to_lowercase()
                ),
                family,
                ports: ports.clone(),
                endpoints,
            });
        }
    }
    out
}
