//! Service frontends and the backends they forward to, as a data plane programs
//! them: what `kube-proxy-rs show` prints.
//!
//! The model derives the view it wants from a [`ProxyState`] ([`wanted`]); each data
//! plane reads the view it actually programmed back from the kernel; [`drift`]
//! compares the two. Frontends are keyed by protocol, address and port, so the
//! comparison does not depend on how a data plane names its chains.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::name::{IpFamily, Protocol, join_host_port};
use crate::service::SessionAffinity;
use crate::state::{ProxyState, Route, ServicePortState};

/// What kind of address a frontend is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FrontendKind {
    /// The ClusterIP.
    ClusterIp,
    /// An entry of `spec.externalIPs`.
    ExternalIp,
    /// A load-balancer ingress IP.
    LoadBalancer,
    /// An external IP or a load-balancer IP, where the kernel state does not tell
    /// them apart (nftables mode maps both the same way).
    External,
    /// The NodePort, on every address NodePorts answer on.
    NodePort,
}

impl FrontendKind {
    /// Short name for tables.
    pub fn word(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::ExternalIp => "ExternalIP",
            Self::LoadBalancer => "LoadBalancer",
            Self::External => "External",
            Self::NodePort => "NodePort",
        }
    }
}

/// What happens to a new connection to a frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// DNATed to one of the backends.
    Forward,
    /// Rejected at once (the Service has no endpoints).
    Reject,
    /// Dropped (a Local traffic policy without local endpoints).
    Drop,
}

impl Verdict {
    /// Short name for tables.
    pub fn word(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Reject => "reject",
            Self::Drop => "drop",
        }
    }
}

/// Where a frontend is reached: protocol, address and port. NodePorts have no
/// address: they answer on every NodePort address of the node. Keys sort by
/// family, then addressed frontends by address, port and protocol, then NodePorts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FrontendKey {
    /// The address family.
    pub family: IpFamily,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The address; `None` for a NodePort.
    pub address: Option<IpAddr>,
    /// The port.
    pub port: u16,
}

impl FrontendKey {
    fn order(&self) -> (IpFamily, bool, Option<IpAddr>, u16, Protocol) {
        (
            self.family,
            self.address.is_none(),
            self.address,
            self.port,
            self.protocol,
        )
    }
}

impl Ord for FrontendKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl PartialOrd for FrontendKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.protocol.as_kubernetes();
        match &self.address {
            Some(a) => write!(f, "{proto} {}", join_host_port(a, self.port)),
            None if self.family == IpFamily::V6 => write!(f, "{proto} [*]:{}", self.port),
            None => write!(f, "{proto} *:{}", self.port),
        }
    }
}

/// One backend of a frontend.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Endpoint address.
    pub address: IpAddr,
    /// Endpoint port.
    pub port: u16,
    /// The fraction of new connections it gets (0..=1), as programmed.
    pub share: f64,
    /// Established TCP connections through this frontend to this backend, from
    /// conntrack (IPVS's ActiveConn); 0 until counted.
    pub active_connections: u64,
    /// Other flows (TCP not established, UDP, SCTP) through this frontend to this
    /// backend, from conntrack (IPVS's InActConn); 0 until counted.
    pub inactive_connections: u64,
}

impl Backend {
    /// A backend with its share and no connections counted.
    pub fn new(address: IpAddr, port: u16, share: f64) -> Self {
        Self {
            address,
            port,
            share,
            active_connections: 0,
            inactive_connections: 0,
        }
    }
}

/// A Service frontend and its backends.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Frontend {
    /// Where it is reached.
    #[serde(flatten)]
    pub key: FrontendKey,
    /// What kind of address it is.
    pub kind: FrontendKind,
    /// The Service port (`namespace/name:port`), when known.
    pub service: String,
    /// What happens to new connections.
    pub verdict: Verdict,
    /// ClientIP session affinity timeout in seconds, if any.
    pub affinity_seconds: Option<u32>,
    /// The backends, sorted by address and port.
    pub backends: Vec<Backend>,
}

impl Frontend {
    /// Sorts the backends by address and port.
    pub fn sort_backends(&mut self) {
        self.backends.sort_by_key(|b| (b.address, b.port));
    }
}

/// Records that `key` does not forward (a data plane's reject or drop rule): the
/// frontend is added if the reader has not seen it yet, and loses its backends and
/// affinity if it has (the reject/drop rule wins over the forwarding rules).
pub fn set_not_forwarding(
    frontends: &mut BTreeMap<FrontendKey, Frontend>,
    key: FrontendKey,
    kind: FrontendKind,
    service: &str,
    verdict: Verdict,
) {
    let f = frontends.entry(key).or_insert_with(|| Frontend {
        key,
        kind,
        service: service.to_string(),
        verdict,
        affinity_seconds: None,
        backends: Vec::new(),
    });
    f.verdict = verdict;
    f.backends.clear();
    f.affinity_seconds = None;
}

/// The frontends the model wants programmed for a state, sorted by key.
pub fn wanted(state: &ProxyState) -> Vec<Frontend> {
    let mut out = Vec::new();
    for family in &state.families {
        for svc in family.services.values() {
            for port in &svc.ports {
                port_frontends(family.family, port, &mut out);
            }
        }
    }
    out.sort_by_key(|f| f.key);
    out
}

fn port_frontends(family: IpFamily, port: &ServicePortState, out: &mut Vec<Frontend>) {
    let info = &port.info;
    let traffic = port.traffic();
    let affinity_seconds = match info.session_affinity {
        SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
        SessionAffinity::None => None,
    };
    let make = |address: Option<IpAddr>, p: u16, kind: FrontendKind, route: Route| {
        let (verdict, backends) = match route {
            Route::Cluster => (Verdict::Forward, even(port.cluster_endpoints())),
            Route::Local => (Verdict::Forward, even(port.local_endpoints())),
            Route::Reject => (Verdict::Reject, Vec::new()),
            Route::Drop => (Verdict::Drop, Vec::new()),
        };
        let mut f = Frontend {
            key: FrontendKey {
                family,
                protocol: info.name.protocol,
                address,
                port: p,
            },
            kind,
            service: info.name.to_string(),
            verdict,
            affinity_seconds: affinity_seconds.filter(|_| verdict == Verdict::Forward),
            backends,
        };
        f.sort_backends();
        f
    };
    out.push(make(
        Some(info.cluster_ip),
        info.port,
        FrontendKind::ClusterIp,
        traffic.internal,
    ));
    for ip in &info.external_ips {
        out.push(make(
            Some(*ip),
            info.port,
            FrontendKind::ExternalIp,
            traffic.external,
        ));
    }
    for ip in &info.load_balancer_vips {
        out.push(make(
            Some(*ip),
            info.port,
            FrontendKind::LoadBalancer,
            traffic.external,
        ));
    }
    if let Some(np) = info.node_port {
        out.push(make(None, np, FrontendKind::NodePort, traffic.external));
    }
}

fn even<'a>(endpoints: impl Iterator<Item = &'a crate::Endpoint>) -> Vec<Backend> {
    let list: Vec<_> = endpoints.collect();
    let share = 1.0 / list.len().max(1) as f64;
    list.iter()
        .map(|e| Backend::new(e.ip, e.port, share))
        .collect()
}

/// One conntrack flow, as [`count_connections`] needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Where the client sent it (the original destination).
    pub destination: IpAddr,
    /// The original destination port.
    pub destination_port: u16,
    /// Where it went (the reply source).
    pub backend: IpAddr,
    /// The reply source port.
    pub backend_port: u16,
    /// An established TCP connection.
    pub established: bool,
}

/// Counts flows against the frontends' backends: a flow to a frontend's address and
/// port (or to any address on a NodePort) that went to one of its backends counts
/// as active when established, else inactive. Other flows are ignored.
pub fn count_connections(frontends: &mut [Frontend], flows: impl IntoIterator<Item = Flow>) {
    let mut addressed = HashMap::new();
    let mut node_ports = HashMap::new();
    for (i, f) in frontends.iter().enumerate() {
        match f.key.address {
            Some(a) => addressed.insert((f.key.protocol, a, f.key.port), i),
            None => node_ports.insert((f.key.family, f.key.protocol, f.key.port), i),
        };
    }
    for flow in flows {
        let family = IpFamily::of(&flow.destination);
        let candidates = [
            addressed.get(&(flow.protocol, flow.destination, flow.destination_port)),
            node_ports.get(&(family, flow.protocol, flow.destination_port)),
        ];
        for i in candidates.into_iter().flatten() {
            let backend = frontends[*i]
                .backends
                .iter_mut()
                .find(|b| b.address == flow.backend && b.port == flow.backend_port);
            if let Some(b) = backend {
                if flow.established {
                    b.active_connections += 1;
                } else {
                    b.inactive_connections += 1;
                }
                break;
            }
        }
    }
}

/// A difference between the wanted and the programmed view of one frontend.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Drift {
    /// Wanted but not programmed.
    Missing {
        /// The frontend.
        key: FrontendKey,
        /// Its Service port.
        service: String,
    },
    /// Programmed but not wanted (a leftover, or a change not yet synced).
    Unexpected {
        /// The frontend.
        key: FrontendKey,
        /// Its Service port, as the kernel names it.
        service: String,
    },
    /// Programmed with another verdict, other backends or other shares.
    Differs {
        /// The frontend.
        key: FrontendKey,
        /// Its Service port.
        service: String,
        /// What differs, in words.
        what: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Missing { key, service } => write!(f, "{key} ({service}): not programmed"),
            Drift::Unexpected { key, service } => {
                write!(f, "{key} ({service}): programmed but not wanted")
            }
            Drift::Differs { key, service, what } => write!(f, "{key} ({service}): {what}"),
        }
    }
}

/// How far two shares may differ and still count as equal: iptables writes
/// probabilities with 10 decimals.
const SHARE_TOLERANCE: f64 = 1e-6;

/// Compares the wanted view with the programmed one (both from [`wanted`] or a data
/// plane's reader); the differences in key order.
pub fn drift(wanted: &[Frontend], programmed: &[Frontend]) -> Vec<Drift> {
    let have: BTreeMap<FrontendKey, &Frontend> = programmed.iter().map(|f| (f.key, f)).collect();
    let want: BTreeMap<FrontendKey, &Frontend> = wanted.iter().map(|f| (f.key, f)).collect();
    let mut out = Vec::new();
    for (key, w) in &want {
        let Some(h) = have.get(key) else {
            out.push(Drift::Missing {
                key: *key,
                service: w.service.clone(),
            });
            continue;
        };
        if let Some(what) = difference(w, h) {
            out.push(Drift::Differs {
                key: *key,
                service: w.service.clone(),
                what,
            });
        }
    }
    for (key, h) in &have {
        if !want.contains_key(key) {
            out.push(Drift::Unexpected {
                key: *key,
                service: h.service.clone(),
            });
        }
    }
    out.sort_by(|a, b| drift_key(a).cmp(drift_key(b)));
    out
}

fn drift_key(d: &Drift) -> &FrontendKey {
    match d {
        Drift::Missing { key, .. } | Drift::Unexpected { key, .. } | Drift::Differs { key, .. } => {
            key
        }
    }
}

fn difference(want: &Frontend, have: &Frontend) -> Option<String> {
    if want.verdict != have.verdict {
        return Some(format!(
            "{} instead of {}",
            have.verdict.word(),
            want.verdict.word()
        ));
    }
    let addr = |b: &Backend| join_host_port(&b.address, b.port);
    let missing: Vec<String> = want
        .backends
        .iter()
        .filter(|w| !have.backends.iter().any(|h| same_backend(w, h)))
        .map(addr)
        .collect();
    let extra: Vec<String> = have
        .backends
        .iter()
        .filter(|h| !want.backends.iter().any(|w| same_backend(w, h)))
        .map(addr)
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing backends {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            parts.push(format!("unexpected backends {}", extra.join(", ")));
        }
        return Some(parts.join("; "));
    }
    for w in &want.backends {
        if let Some(h) = have.backends.iter().find(|h| same_backend(w, h))
            && (w.share - h.share).abs() > SHARE_TOLERANCE
        {
            return Some(format!(
                "backend {} gets {:.1}% instead of {:.1}%",
                addr(w),
                h.share * 100.0,
                w.share * 100.0
            ));
        }
    }
    if want.affinity_seconds != have.affinity_seconds {
        let show = |a: Option<u32>| a.map_or("no affinity".to_string(), |s| format!("{s}s"));
        return Some(format!(
            "session affinity {} instead of {}",
            show(have.affinity_seconds),
            show(want.affinity_seconds)
        ));
    }
    None
}

fn same_backend(a: &Backend, b: &Backend) -> bool {
    a.address == b.address && a.port == b.port
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
