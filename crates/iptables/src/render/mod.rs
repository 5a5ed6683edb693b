//! Pure rendering of one family's [`FamilyState`] into `iptables-restore` input,
//! laid out as upstream kube-proxy's iptables mode writes it
//! (`pkg/proxy/iptables/proxier.go`, `syncProxyRules` and
//! `writeServiceToEndpointRules`): the same chains, rules, rule order within each
//! chain, comments, marks and probabilities, so that upstream's golden tests hold for
//! the kernel's tables.
//!
//! Service semantics (which endpoints, where each kind of traffic goes) come decided
//! from the model ([`Traffic`](kpr_model::Traffic)); this module only spells them in
//! iptables.
//!
//! The input is written as it is rendered ([`render_to`]), so that a sync never holds
//! the whole ruleset in memory (170 MB at 50,000 Services). That changes one thing
//! against upstream's text, not the tables it produces: in the nat table each Service
//! port's chains are declared just before its rules instead of all declarations
//! first. `iptables-restore` needs a chain declared before a rule jumps to it, and
//! every jump stays within the port or goes to a chain declared at the top.

mod filter;
mod nat;

use std::collections::HashSet;
use std::io::Write;

use kpr_model::{FamilyState, IpFamily, NamespacedName};

use crate::buffer::LineBuffer;
use crate::config::{NodePortAddresses, RenderConfig};
use crate::names::*;

/// Full or partial sync.
#[derive(Clone, Copy, Debug)]
pub enum SyncMode<'a> {
    /// Rewrite every chain.
    Full,
    /// Rewrite the top-level chains and the chains of these Services only; leave the
    /// others' chains as they are in the kernel.
    Partial(&'a HashSet<NamespacedName>),
}

impl SyncMode<'_> {
    fn rewrites(&self, name: &NamespacedName) -> bool {
        match self {
            SyncMode::Full => true,
            SyncMode::Partial(changed) => changed.contains(name),
        }
    }
}

/// The result of rendering one family into memory.
#[derive(Debug)]
pub struct Rendered {
    /// `iptables-restore` input (`*filter` ... `COMMIT`, `*nat` ... `COMMIT`).
    pub text: String,
    /// Counters for metrics and logs.
    pub stats: RenderStats,
}

/// Numbers about a rendered ruleset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Rules in the filter table.
    pub filter_rules: usize,
    /// nat rules written in this restore.
    pub nat_rules_written: usize,
    /// nat rules in the whole ruleset (written + left in place by a partial sync).
    pub nat_rules_total: usize,
    /// Stale chains deleted.
    pub deleted_chains: usize,
    /// Services whose ClusterIP traffic is dropped for lack of local endpoints.
    pub no_local_endpoints_internal: usize,
    /// Services whose external traffic is dropped for lack of local endpoints.
    pub no_local_endpoints_external: usize,
    /// Endpoint comments were omitted (more endpoints than the threshold).
    pub large_cluster_mode: bool,
    /// Service ports rendered.
    pub service_ports: usize,
    /// Endpoints of all services (the large-cluster-mode measure).
    pub endpoints: usize,
    /// Bytes of input written.
    pub bytes: usize,
}

/// Per-service and per-endpoint nat chains known to exist (in the kernel, or after
/// the last sync): a render deletes those its ruleset no longer uses. Sorted names,
/// nothing else, so that the 550,000 chains of 50,000 Services cost 20 MB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingChains {
    names: Vec<Box<str>>,
}

impl ExistingChains {
    /// Number of chains.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// True if `name` is one of them.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| (**n).cmp(name)).ok()
    }
}

impl<S: AsRef<str>> FromIterator<S> for ExistingChains {
    /// Keeps the per-service and per-endpoint chains of `names` (others are never
    /// deleted by a sync).
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let mut names: Vec<Box<str>> = names
            .into_iter()
            .filter(|n| is_service_chain(n.as_ref()))
            .map(|n| Box::from(n.as_ref()))
            .collect();
        names.sort_unstable();
        names.dedup();
        Self { names }
    }
}

/// What a render shares with each Service port it writes.
struct Ctx<'a> {
    config: &'a RenderConfig,
    large_cluster_mode: bool,
    localhost_node_ports: bool,
}

impl<'a> Ctx<'a> {
    fn new(state: &FamilyState, config: &'a RenderConfig) -> Self {
        Self {
            config,
            large_cluster_mode: state.total_endpoints() > config.large_cluster_endpoints,
            localhost_node_ports: config.family == IpFamily::V4 && config.localhost_node_ports,
        }
    }
}

/// Renders `state` for `config.family` into memory (`--dry-run`, tests). See
/// [`render_to`].
pub fn render(
    state: &FamilyState,
    config: &RenderConfig,
    mode: SyncMode<'_>,
    existing: Option<&ExistingChains>,
) -> Rendered {
    let mut text = Vec::new();
    // Writing into a Vec cannot fail.
    let stats = render_to(state, config, mode, existing, &mut text).unwrap_or_default();
    Rendered {
        text: String::from_utf8_lossy(&text).into_owned(),
        stats,
    }
}

/// Renders `state` for `config.family`, writing the `iptables-restore` input to `out`
/// as it goes (the filter table first: it is small and rendered whole; then the nat
/// table one Service port at a time).
///
/// `existing` is what the kernel (or the previous sync) holds; service chains found
/// there but no longer used are deleted (`-X`). Pass `None` to skip the clean-up.
pub fn render_to(
    state: &FamilyState,
    config: &RenderConfig,
    mode: SyncMode<'_>,
    existing: Option<&ExistingChains>,
    out: &mut dyn Write,
) -> std::io::Result<RenderStats> {
    let ctx = Ctx::new(state, config);
    let mut stats = RenderStats {
        large_cluster_mode: ctx.large_cluster_mode,
        endpoints: state.total_endpoints(),
        ..RenderStats::default()
    };
    let mut out = Counted { out, bytes: 0 };
    let filter = filter::render(&ctx, state, &mut stats);
    out.write_all(filter.as_bytes())?;
    nat::render(&ctx, state, mode, existing, &mut out, &mut stats)?;
    stats.bytes = out.bytes;
    Ok(stats)
}

/// Line `n` (1-based) of what [`render_to`] writes for the same arguments, found by
/// rendering again and keeping only that line (render is deterministic): how a failed
/// streamed restore names the line `iptables-restore` refused.
pub fn line_of(
    state: &FamilyState,
    config: &RenderConfig,
    mode: SyncMode<'_>,
    existing: Option<&ExistingChains>,
    n: usize,
) -> Option<String> {
    let mut finder = LineFinder {
        want: n,
        line: 1,
        text: Vec::new(),
    };
    render_to(state, config, mode, existing, &mut finder).ok()?;
    (finder.line > n).then(|| String::from_utf8_lossy(&finder.text).into_owned())
}

/// Keeps line `want` of what is written.
struct LineFinder {
    want: usize,
    line: usize,
    text: Vec<u8>,
}

impl Write for LineFinder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &byte in buf {
            if self.line > self.want {
                break;
            }
            if byte == b'\n' {
                self.line += 1;
            } else if self.line == self.want {
                self.text.push(byte);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The per-service and per-endpoint chains the ruleset of `state` has for the
/// Services `services`: after a partial sync that changes them, those of the old
/// state not in the new one are stale.
pub fn service_chains(
    state: &FamilyState,
    config: &RenderConfig,
    services: &HashSet<NamespacedName>,
) -> ExistingChains {
    let ctx = Ctx::new(state, config);
    let mut names = Vec::new();
    for name in services {
        if let Some(svc) = state.services.get(name) {
            for port in &svc.ports {
                names.extend(nat::port_chains(&ctx, port));
            }
        }
    }
    names.into_iter().collect()
}

/// `out`, counting the bytes written.
struct Counted<'a> {
    out: &'a mut dyn Write,
    bytes: usize,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.bytes += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The rule at the end of `KUBE-SERVICES` (nat) that sends what is left to
/// `KUBE-NODEPORTS`, one per NodePort address.
fn write_nodeports_tail(ctx: &Ctx<'_>, rules: &mut LineBuffer) {
    // The tail call to KUBE-NODEPORTS must be the last rule of KUBE-SERVICES.
    const NODEPORTS_COMMENT: &str =
        "\"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
    let is_v6 = ctx.config.family == IpFamily::V6;
    match &ctx.config.node_port_addresses {
        NodePortAddresses::All => {
            // Localhost NodePorts never work on IPv6, and on IPv4 only with route_localnet.
            let exclude = if is_v6 {
                "! -d ::1/128"
            } else if !ctx.localhost_node_ports {
                "! -d 127.0.0.0/8"
            } else {
                ""
            };
            rules.line(&[
                "-A",
                KUBE_SERVICES,
                "-m",
                "comment",
                "--comment",
                NODEPORTS_COMMENT,
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                exclude,
                "-j",
                KUBE_NODEPORTS,
            ]);
        }
        NodePortAddresses::Ips(ips) => {
            for ip in ips {
                if ip.is_loopback() && (is_v6 || !ctx.localhost_node_ports) {
                    continue;
                }
                let ip = ip.to_string();
                rules.line(&[
                    "-A",
                    KUBE_SERVICES,
                    "-m",
                    "comment",
                    "--comment",
                    NODEPORTS_COMMENT,
                    "-d",
                    &ip,
                    "-j",
                    KUBE_NODEPORTS,
                ]);
            }
        }
    }
}

/// `1/n` with 10 decimals, as Go's `%0.10f` prints it (round half to even on the
/// exact binary value).
pub fn probability_string(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}
