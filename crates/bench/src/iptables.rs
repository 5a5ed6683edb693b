//! iptables mode at scale: render, iptables-restore of the same text as the
//! baseline, full sync, and one endpoint change as a partial sync.

use std::sync::Arc;
use std::time::Instant;

use kpr_bench::generate::Shape;
use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::exec::Runner;
use kpr_iptables::proxier::FamilyProxier;
use kpr_iptables::{LocalDetector, RenderConfig, SyncMode, render};
use kpr_model::{IpFamily, Objects, ProxyState};
use kpr_netns_lab::Netns;

use crate::{Args, InNetns, Partial, median, ms, partial_syncs, row};

/// Runs the iptables measurements.
pub fn run(args: &Args, shape: &Shape, objs: &Objects, state: &ProxyState) -> anyhow::Result<()> {
    let config = RenderConfig {
        local_detector: LocalDetector::Cidr("10.128.0.0/9".parse()?),
        // The benchmark namespace has no nfacct counters.
        nfacct: kpr_iptables::NfacctCounters::NONE,
        ..RenderConfig::new(IpFamily::V4)
    };

    let mut t = Vec::new();
    let mut text = String::new();
    for _ in 0..args.repeat {
        let start = Instant::now();
        let r = render(state.family(IpFamily::V4), &config, SyncMode::Full, None);
        t.push(start.elapsed());
        text = r.text;
    }
    row("render full ruleset", ms(median(t)));
    if let Some(path) = &args.dump {
        std::fs::write(path, &text)?;
    }
    row(
        "ruleset size",
        format!("{} KiB, {} lines", text.len() / 1024, text.lines().count()),
    );
    if args.no_apply {
        return Ok(());
    }

    let backend = crate::backend(args);
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
    row("baseline: iptables-restore same text", ms(median(base)));
    row("full sync (ensure jumps + restore)", ms(median(full)));
    // One endpoint change and one new Service, end to end: store update, snapshot,
    // partial render, restore.
    partial_syncs(args, shape, objs, "partial sync", |state| {
        let report = proxier.sync(state, false)?;
        Ok(Partial {
            full: report.full,
            services_changed: report.services_changed,
            detail: None,
        })
    })?;
    Ok(())
}
