//! `kpr-bench`: measures model build, render and apply of the iptables data plane at a
//! given scale, in a throwaway network namespace (root), and prints a report with a
//! baseline from the same run.
//!
//! Baseline: `iptables-restore` fed the very same ruleset directly, i.e. the kernel and
//! tool cost that any iptables-based proxy pays; the difference is our own overhead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kpr_bench::generate::{NODE, Shape, objects, slices};
use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::exec::{Output, ProcessRunner, Runner};
use kpr_iptables::proxier::FamilyProxier;
use kpr_iptables::{LocalDetector, RenderConfig, SyncMode, render};
use kpr_model::{Change, IpFamily, Store};
use kpr_netns_lab::Netns;

#[derive(Parser)]
#[command(about = "Measure kube-proxy-rs sync costs at scale (needs root for the apply part)")]
struct Args {
    /// Services.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Repetitions of each timed step (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Skip the kernel part (no root needed).
    #[arg(long)]
    no_apply: bool,
    /// Write the rendered ruleset to this file.
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
    /// iptables backend: `default` (whatever `iptables` is), `nft` or `legacy`.
    #[arg(long, default_value = "default")]
    backend: String,
}

struct InNetns(String);

impl Runner for InNetns {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        let mut full = vec!["netns", "exec", self.0.as_str(), program];
        full.extend_from_slice(args);
        ProcessRunner.run("ip", &full, stdin)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = Shape {
        services: args.services,
        endpoints: args.endpoints,
        dual_stack: false,
    };
    let objs = objects(&shape);
    let config = RenderConfig {
        local_detector: LocalDetector::Cidr("10.128.0.0/9".parse()?),
        // The benchmark namespace has no nfacct counters.
        nfacct: kpr_iptables::NfacctCounters {
            localhost_nodeports: false,
            ct_invalid_dropped: false,
        },
        ..RenderConfig::new(IpFamily::V4)
    };
    println!(
        "kube-proxy-rs benchmark: {} Services x {} endpoints (iptables, IPv4)",
        shape.services, shape.endpoints
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
    println!(
        "model build (objects -> snapshot)     {:>12}",
        ms(median(t))
    );

    let mut t = Vec::new();
    let mut text = String::new();
    for _ in 0..args.repeat {
        let start = Instant::now();
        let r = render(state.family(IpFamily::V4), &config, SyncMode::Full, None);
        t.push(start.elapsed());
        text = r.text;
    }
    println!(
        "render full ruleset                   {:>12}",
        ms(median(t))
    );
    if let Some(path) = &args.dump {
        std::fs::write(path, &text)?;
    }
    println!(
        "ruleset size                          {:>9} KiB, {} lines",
        text.len() / 1024,
        text.lines().count()
    );
    if args.no_apply {
        return Ok(());
    }

    let backend = match args.backend.as_str() {
        "nft" => Backend::Nft,
        "legacy" => Backend::Legacy,
        _ => Backend::Default,
    };
    let restore = match backend {
        Backend::Nft => "iptables-nft-restore",
        Backend::Legacy => "iptables-legacy-restore",
        Backend::Default => "iptables-restore",
    };
    println!("iptables backend: {restore}");
    let ns = Netns::new("bench")?;
    let runner: Arc<dyn Runner> = Arc::new(InNetns(ns.name().to_string()));
    // Baseline: the same text straight into iptables-restore.
    let mut base = Vec::new();
    for _ in 0..args.repeat {
        let start = Instant::now();
        let out = runner.run(
            restore,
            &["-w", "5", "--noflush", "--counters"],
            Some(text.as_bytes()),
        )?;
        anyhow::ensure!(out.success(), "baseline restore failed: {}", out.stderr);
        base.push(start.elapsed());
    }
    let ipt = Iptables::new(IpFamily::V4, backend, runner.clone());
    let mut proxier = FamilyProxier::new(ipt, config.clone());
    let mut full = Vec::new();
    for _ in 0..args.repeat {
        let start = Instant::now();
        proxier.sync(state.family(IpFamily::V4), true)?;
        full.push(start.elapsed());
    }
    // One endpoint change, end to end: store update, snapshot, partial render, restore.
    let mut store = Store::new(NODE);
    store.replace_all(&objs);
    let mut partial = Vec::new();
    for k in 0..args.repeat {
        let mut s = slices(k, &shape).remove(0);
        if let Some(eps) = s.endpoints.as_mut() {
            eps[0].addresses[0] = format!("10.255.{}.{}", k / 250, k % 250 + 1);
        }
        let start = Instant::now();
        store.apply(Change::SliceUpsert(Box::new(s)));
        let snap = store.snapshot();
        let report = proxier.sync(snap.family(IpFamily::V4), false)?;
        partial.push(start.elapsed());
        anyhow::ensure!(
            !report.full && report.services_changed == 1,
            "expected a partial sync of one Service"
        );
    }
    println!(
        "baseline: iptables-restore same text  {:>12}",
        ms(median(base))
    );
    println!(
        "full sync (ensure jumps + restore)    {:>12}",
        ms(median(full))
    );
    println!(
        "one endpoint change (partial sync)    {:>12}",
        ms(median(partial))
    );
    Ok(())
}
