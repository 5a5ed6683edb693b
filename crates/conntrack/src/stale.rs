//! Which conntrack entries are stale: a pure reconcile of dumped entries against
//! the proxy state (no I/O, no clock).
//!
//! This is upstream's `CleanStaleEntries` (`pkg/proxy/conntrack/cleanup.go`: the
//! reconciler of v1.32+, kubernetes PR 127318, comparing the endpoint's IP *and*
//! port since v1.33, PR 130542), with the fixes upstream made after v1.35 and a
//! few of our own. Only UDP and SCTP flows are considered: a TCP flow to a
//! vanished endpoint fails on its own (RST or timeout), and deleting TCP entries
//! would break graceful termination.
//!
//! A flow is *to a Service* when its original destination is a frontend of a UDP
//! or SCTP Service port of the state: ClusterIP:port, external IP:port,
//! load-balancer IP:port, or a node address:NodePort. For such a flow:
//!
//! 1. **Not DNATed to a serving endpoint** (`CleanStaleEntries`): the reply source
//!    (IP and port) must be an endpoint of that Service port that is serving
//!    (upstream's `IsServing`; a ready one counts too), terminating or not, with
//!    traffic policies and topology ignored as upstream does, so that a Service
//!    change does not cut existing flows. Otherwise the entry is deleted. This also covers flows
//!    that were never DNATed (reply source = Service address), which blackhole
//!    the client when they were created before the rules existed (kubernetes
//!    issue 48370, which upstream's old event-based cleanup handled).
//! 2. **Service port without endpoints** (kubernetes issue 139628, fixed
//!    upstream after v1.35): the port is reconciled against an empty endpoint
//!    set instead of being skipped, so flows DNATed to the endpoints it had are
//!    deleted when it scales to zero, not left to blackhole one-way senders.
//! 3. **Deleted Service or port** (kubernetes PR 141371, after v1.35): a frontend
//!    of `previous` that is no longer a frontend of `current` loses its DNATed
//!    flows. Flows that were not translated are left alone there: without our
//!    rules the address may legitimately belong to someone else. A Service
//!    deleted while the proxy was down is unknown after its restart; its flows
//!    stay until they expire.
//! 4. **Restarts** (kubernetes issue 122740): there is no "flush every UDP entry
//!    of the Services" step at start-up. A restarted proxy (no `previous`)
//!    reconciles against the current state like any other sync, so QUIC and
//!    other long UDP flows to live endpoints survive it.
//!
//! Deliberate differences from upstream:
//! - A NodePort frontend matches only when the destination is one of
//!   `node_ips` (upstream matches the port on any address, which also hits
//!   unrelated flows to that port elsewhere). With an empty `node_ips` we match
//!   any address as upstream, but only flows that were DNATed.
//! - When several frontends match one flow (an address that is both a
//!   ClusterIP and a node address with a NodePort of that number, or two
//!   Services claiming one external IP), the flow is kept if *any* of them has
//!   its reply source as an endpoint; upstream deletes it if any does not.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use kpr_model::{FamilyState, Protocol};

use crate::entry::Entry;

/// Why an entry is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StaleReason {
    /// DNATed to an address:port that is not a serving endpoint of the Service
    /// port any more (rule 1).
    NotAnEndpoint,
    /// To a Service frontend but never DNATed: created before the rules existed
    /// (rule 1).
    NotTranslated,
    /// DNATed for a Service port that has no serving endpoint now (rule 2).
    NoEndpoints,
    /// DNATed for a Service, port or address that no longer exists (rule 3).
    ServiceRemoved,
}

type Backend = (IpAddr, u16);

/// The Service frontends of one family and their serving endpoints, indexed for
/// classifying many entries.
#[derive(Debug, Default)]
pub struct Frontends {
    by_address: HashMap<(Protocol, IpAddr, u16), HashSet<Backend>>,
    by_node_port: HashMap<(Protocol, u16), HashSet<Backend>>,
    removed_addresses: HashSet<(Protocol, IpAddr, u16)>,
    removed_node_ports: HashSet<(Protocol, u16)>,
    node_ips: HashSet<IpAddr>,
}

/// True for the protocols whose flows are reconciled.
pub fn is_cleaned(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Udp | Protocol::Sctp)
}

/// Calls `f(protocol, address, port, node_port, endpoints)` for every cleaned
/// Service port of `state`.
fn for_each_port(
    state: &FamilyState,
    mut f: impl FnMut(Protocol, &[IpAddr], Option<u16>, u16, &mut dyn Iterator<Item = Backend>),
) {
    for service in state.services.values() {
        for port in &service.ports {
            let info = &port.info;
            let protocol = info.name.protocol;
            if !is_cleaned(protocol) {
                continue;
            }
            let mut addresses =
                Vec::with_capacity(1 + info.external_ips.len() + info.load_balancer_vips.len());
            addresses.push(info.cluster_ip);
            addresses.extend(&info.external_ips);
            addresses.extend(&info.load_balancer_vips);
            let mut backends = port
                .endpoints
                .iter()
                .filter(|e| e.ready || e.serving)
                .map(|e| (e.ip, e.port));
            f(
                protocol,
                &addresses,
                info.node_port,
                info.port,
                &mut backends,
            );
        }
    }
}

impl Frontends {
    /// Indexes `current` (and the frontends `previous` had that `current` lacks).
    pub fn new(previous: Option<&FamilyState>, current: &FamilyState, node_ips: &[IpAddr]) -> Self {
        let mut fe = Frontends {
            node_ips: node_ips.iter().copied().collect(),
            ..Frontends::default()
        };
        for_each_port(current, |protocol, addresses, node_port, port, backends| {
            let backends: HashSet<Backend> = backends.collect();
            for &address in addresses {
                fe.by_address
                    .entry((protocol, address, port))
                    .or_default()
                    .extend(&backends);
            }
            if let Some(node_port) = node_port {
                fe.by_node_port
                    .entry((protocol, node_port))
                    .or_default()
                    .extend(&backends);
            }
        });
        if let Some(previous) = previous {
            for_each_port(previous, |protocol, addresses, node_port, port, _| {
                for &address in addresses {
                    let key = (protocol, address, port);
                    if !fe.by_address.contains_key(&key) {
                        fe.removed_addresses.insert(key);
                    }
                }
                if let Some(node_port) =
                    node_port.filter(|p| !fe.by_node_port.contains_key(&(protocol, *p)))
                {
                    fe.removed_node_ports.insert((protocol, node_port));
                }
            });
        }
        fe
    }

    /// True if some flow of `protocol` can be stale: the state has (or had) a
    /// frontend of that protocol. Lets a cleanup skip dumping it altogether.
    pub fn has_protocol(&self, protocol: Protocol) -> bool {
        self.by_address.keys().any(|k| k.0 == protocol)
            || self.by_node_port.keys().any(|k| k.0 == protocol)
            || self.removed_addresses.iter().any(|k| k.0 == protocol)
            || self.removed_node_ports.iter().any(|k| k.0 == protocol)
    }

    /// Why `entry` is stale, or `None` if it must be kept.
    pub fn classify(&self, entry: &Entry) -> Option<StaleReason> {
        if !is_cleaned(entry.protocol) {
            return None;
        }
        let protocol = entry.protocol;
        let dst = entry.original.dst;
        let port = entry.original.dst_port;
        let backend = (entry.reply.src, entry.reply.src_port);
        let dnat = entry.is_dnat();
        // With unknown node addresses, any destination may be a node address; only
        // translated flows are then taken as NodePort flows (see the module doc).
        let on_node = if self.node_ips.is_empty() {
            dnat
        } else {
            self.node_ips.contains(&dst)
        };

        let mut matched: [Option<&HashSet<Backend>>; 2] = [None, None];
        matched[0] = self.by_address.get(&(protocol, dst, port));
        if on_node {
            matched[1] = self.by_node_port.get(&(protocol, port));
        }
        if matched.iter().any(Option::is_some) {
            let sets = matched.iter().flatten();
            if sets.clone().any(|s| s.contains(&backend)) {
                return None;
            }
            return Some(if !dnat {
                StaleReason::NotTranslated
            } else if sets.clone().all(|s| s.is_empty()) {
                StaleReason::NoEndpoints
            } else {
                StaleReason::NotAnEndpoint
            });
        }
        let removed = self.removed_addresses.contains(&(protocol, dst, port))
            || (on_node && self.removed_node_ports.contains(&(protocol, port)));
        (removed && dnat).then_some(StaleReason::ServiceRemoved)
    }
}

/// The entries to delete, with the reason for each, in input order.
pub fn classify_entries(
    previous: Option<&FamilyState>,
    current: &FamilyState,
    node_ips: &[IpAddr],
    entries: &[Entry],
) -> Vec<(Entry, StaleReason)> {
    let frontends = Frontends::new(previous, current, node_ips);
    entries
        .iter()
        .filter_map(|e| frontends.classify(e).map(|r| (*e, r)))
        .collect()
}

/// The entries to delete, in input order (see the module doc for the rules).
///
/// `previous` is the state of the last cleanup (`None` after a start);
/// `node_ips` are the addresses NodePorts are served on (the node's addresses
/// allowed by `nodePortAddresses`, plus 127.0.0.1 when localhost NodePorts are
/// enabled); empty means "unknown" (see the module doc). `current` must be
/// complete (every source has finished its initial list): an endpoint missing
/// from it would have its flows deleted.
pub fn stale_entries(
    previous: Option<&FamilyState>,
    current: &FamilyState,
    node_ips: &[IpAddr],
    entries: &[Entry],
) -> Vec<Entry> {
    let frontends = Frontends::new(previous, current, node_ips);
    entries
        .iter()
        .filter(|e| frontends.classify(e).is_some())
        .copied()
        .collect()
}

#[cfg(test)]
#[path = "stale_tests.rs"]
pub(crate) mod tests;
