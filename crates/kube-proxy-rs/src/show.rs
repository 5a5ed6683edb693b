//! `kube-proxy-rs show`: every Service frontend the kernel holds, with its backends,
//! their share of new connections and their connection counts from conntrack, like
//! `ipvsadm -Ln` for every mode. It reads the live kernel state (never the proxy's
//! memory), so it shows what really forwards traffic; with `--manifests` it also
//! compares that with what the model wants for those objects and lists the drift.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kpr_config::{KubeProxyConfiguration, ProxyMode};
use kpr_conntrack::{Conntrack, ConntrackTable};
use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::exec::{ProcessRunner, Runner};
use kpr_model::view::{Drift, Flow, Frontend, Verdict, count_connections, drift, wanted};
use kpr_model::{IpFamily, Protocol, join_host_port};
use kpr_nftables::nft::Nft;
use kpr_nftables::objects::Family as NftFamily;
use serde::Serialize;

use crate::app::{load_snapshot, node_name, supported_families};
use crate::host::Host;
use crate::render_settings::ipvs_plan_config;

/// What `show` was asked for.
#[derive(Clone, Debug, Default)]
pub struct ShowArgs {
    /// Compare with what the model wants for the objects in this directory.
    pub manifests: Option<PathBuf>,
}

/// What `show` found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The proxy mode read.
    pub mode: &'static str,
    /// Every frontend programmed, sorted, with connection counts.
    pub frontends: Vec<Frontend>,
    /// Differences from the wanted state (only with `--manifests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Vec<Drift>>,
    /// Things that could not be read (the rest is still shown).
    pub warnings: Vec<String>,
}

/// Reads the kernel state of `config`'s mode and, if asked, the wanted state.
pub fn collect(
    config: &KubeProxyConfiguration,
    args: &ShowArgs,
    host: &dyn Host,
) -> anyhow::Result<Report> {
    let runner: Arc<dyn Runner> = Arc::new(ProcessRunner);
    let mode = config.mode();
    let mut warnings = Vec::new();
    let mut frontends = match mode {
        ProxyMode::Iptables => read_iptables(host, &runner)?,
        ProxyMode::Nftables => read_nftables(&runner)?,
        ProxyMode::Ipvs => read_ipvs(&runner)?,
    };
    // IPVS counts its own connections per real server.
    if mode != ProxyMode::Ipvs {
        match conntrack_flows() {
            Ok(flows) => count_connections(&mut frontends, flows),
            Err(e) => warnings.push(format!("connection counts unavailable: {e:#}")),
        }
    }
    let drift = match &args.manifests {
        Some(dir) => {
            let (state, _notes) = load_snapshot(dir, &node_name(config, host))?;
            let want = if mode == ProxyMode::Ipvs {
                // IPVS mode has its own semantics (per-address NodePorts, Local
                // policies falling back to every endpoint): compare with its plan.
                IpFamily::ALL
                    .iter()
                    .flat_map(|f| {
                        let cfg = ipvs_plan_config(config, &state.node, host, true, *f);
                        kpr_ipvs::view::planned(&kpr_ipvs::plan(state.family(*f), &cfg))
                    })
                    .collect()
            } else {
                wanted(&state)
            };
            Some(drift(&want, &frontends))
        }
        None => None,
    };
    Ok(Report {
        mode: mode.as_str(),
        frontends,
        drift,
        warnings,
    })
}

fn read_iptables(host: &dyn Host, runner: &Arc<dyn Runner>) -> anyhow::Result<Vec<Frontend>> {
    let mut out = Vec::new();
    for family in supported_families(host, runner) {
        let ipt = Iptables::new(family, Backend::Default, runner.clone());
        let dump = ipt
            .save(None)
            .with_context(|| format!("reading the {family} iptables rules"))?;
        out.extend(kpr_iptables::view::frontends(family, &dump));
    }
    Ok(out)
}

fn read_nftables(runner: &Arc<dyn Runner>) -> anyhow::Result<Vec<Frontend>> {
    let mut out = Vec::new();
    for family in IpFamily::ALL {
        let nft = Nft::new(NftFamily(family), runner.clone());
        let json = nft
            .table_json()
            .with_context(|| format!("reading the {family} nftables table"))?;
        if let Some(json) = json {
            out.extend(
                kpr_nftables::view::frontends(family, &json)
                    .with_context(|| format!("reading the {family} nftables table"))?,
            );
        }
    }
    Ok(out)
}

fn read_ipvs(runner: &Arc<dyn Runner>) -> anyhow::Result<Vec<Frontend>> {
    let mut ipvs = kpr_ipvs::Ipvs::new().context("reading the IPVS table")?;
    let mut dumped = Vec::new();
    for vs in ipvs.services().context("reading the IPVS table")? {
        let reals = ipvs
            .real_servers(&vs)
            .with_context(|| format!("reading the real servers of {}", vs.key()))?;
        dumped.push((vs, reals));
    }
    let saved = kpr_ipvs::ipset::Ipset::new(runner.clone())
        .save_both()
        .context("reading the ipsets")?;
    let mut out = Vec::new();
    for (family, sets) in &saved {
        out.extend(kpr_ipvs::view::frontends(*family, &dumped, sets));
    }
    Ok(out)
}

/// Every TCP, UDP and SCTP flow of both families.
fn conntrack_flows() -> anyhow::Result<Vec<Flow>> {
    let mut ct = Conntrack::new().context("opening the conntrack netlink socket")?;
    let mut flows = Vec::new();
    for family in IpFamily::ALL {
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            let dump = ct.dump(family, protocol).with_context(|| {
                format!("dumping {family} {} conntrack entries", protocol.as_lower())
            })?;
            flows.extend(dump.entries.iter().map(|e| Flow {
                protocol: e.protocol,
                destination: e.original.dst,
                destination_port: e.original.dst_port,
                backend: e.reply.src,
                backend_port: e.reply.src_port,
                established: e.tcp_state.is_some_and(|s| s.is_established()),
            }));
        }
    }
    Ok(flows)
}

/// The report as a table like `ipvsadm -Ln`, then the drift, then the warnings.
pub fn render_text(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "kube-proxy-rs: {} mode, {} frontends (read from the kernel)",
        report.mode,
        report.frontends.len()
    );
    let _ = writeln!(
        s,
        "Prot LocalAddress:Port                     Kind         Scheduler            Service"
    );
    let _ = writeln!(
        s,
        "  -> RemoteAddress:Port                    Share   ActiveConn InActConn"
    );
    for f in &report.frontends {
        let address = match &f.key.address {
            Some(a) => join_host_port(a, f.key.port),
            None => format!("*:{}", f.key.port),
        };
        let scheduler = match (f.verdict, f.affinity_seconds) {
            (Verdict::Forward, Some(t)) => format!("random persistent {t}"),
            (Verdict::Forward, None) => "random".to_string(),
            (v, _) => v.word().to_string(),
        };
        let _ = writeln!(
            s,
            "{:<4} {:<38} {:<12} {:<20} {}",
            f.key.protocol.as_kubernetes(),
            address,
            f.kind.word(),
            scheduler,
            f.service
        );
        for b in &f.backends {
            let _ = writeln!(
                s,
                "  -> {:<38} {:>5.1}%  {:<10} {}",
                join_host_port(&b.address, b.port),
                b.share * 100.0,
                b.active_connections,
                b.inactive_connections
            );
        }
    }
    if let Some(drift) = &report.drift {
        if drift.is_empty() {
            let _ = writeln!(s, "\nNo drift: the kernel forwards as the manifests want.");
        } else {
            let _ = writeln!(
                s,
                "\nDrift: {} frontend(s) differ from what the manifests want:",
                drift.len()
            );
            for d in drift {
                let _ = writeln!(s, "  {d}");
            }
        }
    }
    for w in &report.warnings {
        let _ = writeln!(s, "\nwarning: {w}");
    }
    s
}
