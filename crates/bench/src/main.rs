//! `kpr-bench`: measures model build, render and apply of a data plane at a given
//! scale, in a throwaway network namespace (root), and prints a report with a
//! baseline from the same run.
//!
//! Baselines: the very same ruleset fed straight to the kernel tool
//! (`iptables-restore`, `nft -f`) in a fresh namespace, i.e. the cost that any proxy
//! producing these rules pays; the difference is our own overhead.

mod api;
mod dataplane;
mod iptables;
mod ipvs;
mod nftables;
mod plot;
mod process;

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use kpr_bench::generate::{NODE, Shape, objects, service, slices};
use kpr_iptables::exec::{Output, ProcessRunner, Runner};
use kpr_model::{Change, FamilyState, IpFamily, Objects, Store};

/// Data plane to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    Iptables,
    Nftables,
    /// Needs ip_vs: run inside `shared/tools/vm-run` on hosts without it.
    Ipvs,
}

#[derive(Parser)]
#[command(about = "Measure kube-proxy-rs sync costs at scale (needs root for the apply part)")]
struct Args {
    /// Data plane.
    #[arg(long, value_enum, default_value = "iptables")]
    mode: Mode,
    /// Services.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Repetitions of each timed step (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Rounds of partial syncs (one endpoint change and one new Service each);
    /// defaults to `--repeat`. Many rounds make a partial sync easy to profile.
    #[arg(long)]
    rounds: Option<usize>,
    /// nftables: operations above which a full sync is split into several
    /// transactions (the proxy's default when absent).
    #[arg(long)]
    batch_ops: Option<usize>,
    /// nftables: skip the baseline that loads the whole ruleset with `nft -f`
    /// (minutes at 10,000 Services).
    #[arg(long)]
    no_baseline: bool,
    /// Skip the kernel part (no root needed).
    #[arg(long)]
    no_apply: bool,
    /// Write the rendered ruleset to this file.
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
    /// Run the data-plane benchmark instead: new-connection latency through a
    /// ClusterIP with `--sizes` Services programmed, per `--modes`.
    #[arg(long)]
    data_plane: bool,
    /// Data plane: modes to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "iptables,nftables"
    )]
    modes: Vec<Mode>,
    /// Data plane: numbers of Services to program.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    sizes: Vec<usize>,
    /// Data plane: connections per series (each to the ClusterIP and to the pod).
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Data plane: write the figure (SVG) here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Measure the real `kube-proxy-rs` process instead: generated manifests, the
    /// binary in a fresh namespace; start to first sync, peak RSS, CPU time, one new
    /// Service end to end.
    #[arg(long)]
    process: bool,
    /// Process benchmark: the proxy binary (default: `kube-proxy-rs` next to this one).
    #[arg(long)]
    proxy_bin: Option<std::path::PathBuf>,
    /// Process benchmark: keep the proxy's log in this file.
    #[arg(long)]
    proxy_log: Option<std::path::PathBuf>,
    /// Process benchmark: where the proxy reads the cluster from.
    #[arg(long, value_enum, default_value = "manifests")]
    source: process::Source,
    /// Only write the generated Services, EndpointSlices and Node as manifests (JSON
    /// `List`s) into this directory, for `kube-proxy-rs --manifests`.
    #[arg(long)]
    write_manifests: Option<std::path::PathBuf>,
    /// iptables backend: `default` (whatever `iptables` is), `nft` or `legacy`.
    #[arg(long, default_value = "default")]
    backend: String,
}

/// Runs commands inside a named network namespace.
struct InNetns(String);

impl Runner for InNetns {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        let mut full = vec!["netns", "exec", self.0.as_str(), program];
        full.extend_from_slice(args);
        ProcessRunner.run("ip", &full, stdin)
    }
}

/// An nft handle for the IPv4 table in `ns` that sends transactions over netlink,
/// as the proxy does (`runner` runs `nft` there for listing and fallback).
fn nft_netlink(
    ns: &kpr_netns_lab::Netns,
    runner: std::sync::Arc<dyn Runner>,
) -> anyhow::Result<kpr_nftables::nft::Nft> {
    use kpr_nftables::netlink::NfTables;
    use kpr_nftables::objects::Family;
    let socket = ns.enter(NfTables::new)??;
    Ok(kpr_nftables::nft::Nft::new(Family(IpFamily::V4), runner)
        .with_netlink(std::sync::Arc::new(std::sync::Mutex::new(socket))))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Prints one result line.
fn row(label: &str, value: impl std::fmt::Display) {
    println!("{label:<44} {value:>14}");
}

/// The `k`-th single-endpoint change: Service `k` gets a new address for its first
/// endpoint.
fn endpoint_change(shape: &Shape, k: usize) -> Change {
    let mut s = slices(k, shape).remove(0);
    if let Some(eps) = s.endpoints.as_mut() {
        eps[0].addresses[0] = format!("10.255.{}.{}", k / 250, k % 250 + 1);
    }
    Change::SliceUpsert(Box::new(s))
}

/// The `k`-th new Service (beyond the generated ones) with its endpoints.
fn new_service(shape: &Shape, k: usize) -> Vec<Change> {
    let i = shape.services + k;
    let mut out = vec![Change::ServiceUpsert(Box::new(service(i, shape)))];
    out.extend(
        slices(i, shape)
            .into_iter()
            .map(|s| Change::SliceUpsert(Box::new(s))),
    );
    out
}

/// What one partial sync reported, in mode-neutral terms.
struct Partial {
    full: bool,
    services_changed: usize,
    /// Human-readable size of what was sent (for the report), if the mode has one.
    detail: Option<String>,
}

/// Times `repeat` rounds of one endpoint change and one new Service, each end to end
/// (store update, snapshot, `sync`), checking that each was a partial sync of one
/// Service. Prints the medians and the first endpoint change's detail.
fn partial_syncs(
    args: &Args,
    shape: &Shape,
    objs: &Objects,
    what: &str,
    mut sync: impl FnMut(&FamilyState) -> anyhow::Result<Partial>,
) -> anyhow::Result<()> {
    let mut store = Store::new(NODE);
    store.replace_all(objs);
    let mut timed = |changes: Vec<Change>| -> anyhow::Result<(Duration, Partial)> {
        let start = Instant::now();
        for c in changes {
            store.apply(c);
        }
        let snap = store.snapshot();
        let report = sync(snap.family(IpFamily::V4))?;
        let elapsed = start.elapsed();
        anyhow::ensure!(
            !report.full && report.services_changed == 1,
            "expected a partial sync of one Service, got full={} services_changed={}",
            report.full,
            report.services_changed
        );
        Ok((elapsed, report))
    };
    let (mut changed, mut added, mut detail) = (Vec::new(), Vec::new(), None);
    for k in 0..args.rounds.unwrap_or(args.repeat) {
        let (t, report) = timed(vec![endpoint_change(shape, k)])?;
        changed.push(t);
        detail = detail.or(report.detail);
        added.push(timed(new_service(shape, k))?.0);
    }
    row(
        &format!("one endpoint change ({what})"),
        ms(median(changed)),
    );
    if let Some(d) = detail {
        row("  its transaction", d);
    }
    row(&format!("one new Service ({what})"), ms(median(added)));
    Ok(())
}

/// The iptables backend `--backend` names.
fn backend(args: &Args) -> kpr_iptables::apply::Backend {
    use kpr_iptables::apply::Backend;
    match args.backend.as_str() {
        "nft" => Backend::Nft,
        "legacy" => Backend::Legacy,
        _ => Backend::Default,
    }
}

/// Peak resident set size of this process so far (VmHWM), for the report.
fn peak_rss() -> String {
    process::usage(std::process::id())
        .map_or_else(|_| "unknown".into(), |u| format!("{} kB", u.peak_kib))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.repeat > 0, "--repeat must be at least 1");
    if args.data_plane {
        let series = dataplane::run(&args.modes, backend(&args), &args.sizes, args.connections)?;
        if let Some(path) = &args.plot {
            plot::write(path, &series)?;
            println!("figure written to {}", path.display());
        }
        return Ok(());
    }
    let shape = Shape {
        services: args.services,
        endpoints: args.endpoints,
        dual_stack: false,
    };
    if let Some(dir) = &args.write_manifests {
        process::write_manifests(dir, &shape)?;
        println!("{} Services written to {}", shape.services, dir.display());
        return Ok(());
    }
    if args.process {
        println!(
            "kube-proxy-rs process: {} Services x {} endpoints ({:?}, IPv4, backend {}, from {:?})",
            shape.services, shape.endpoints, args.mode, args.backend, args.source
        );
        return process::run(
            args.mode,
            args.source,
            &shape,
            &args.backend,
            args.proxy_bin.as_deref(),
            args.proxy_log.as_deref(),
        );
    }
    let objs = objects(&shape);
    println!(
        "kube-proxy-rs benchmark: {} Services x {} endpoints ({:?}, IPv4)",
        shape.services, shape.endpoints, args.mode
    );

    let mut t = Vec::new();
    let mut state = None;
    for _ in 0..args.repeat {
        let start = Instant::now();
        let mut store = Store::new(NODE);
        store.replace_all(&objs);
        state = Some(store.snapshot());
        t.push(start.elapsed());
    }
    let state = state.ok_or_else(|| anyhow::anyhow!("no repetitions"))?;
    row("model build (objects -> snapshot)", ms(median(t)));

    match args.mode {
        Mode::Iptables => iptables::run(&args, &shape, &objs, &state)?,
        Mode::Nftables => nftables::run(&args, &shape, &objs, &state)?,
        Mode::Ipvs => ipvs::run(&args, &shape, &objs, &state)?,
    }
    row("peak RSS of the benchmark process", peak_rss());
    Ok(())
}
