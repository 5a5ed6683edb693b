//! nftables mode at scale: render, `nft -f` of the same creation script into a fresh
//! namespace as the baseline, the proxier's first and forced full syncs, and one
//! endpoint change and one new Service as partial syncs.

use std::sync::Arc;
use std::time::Instant;

use kpr_bench::generate::Shape;
use kpr_iptables::exec::Runner;
use kpr_model::{IpFamily, LocalDetector, NodePortAddresses, Objects, ProxyState};
use kpr_netns_lab::Netns;
use kpr_nftables::names::MARK_FOR_MASQUERADE;
use kpr_nftables::objects::{Chain, Family, Rule};
use kpr_nftables::transaction::Transaction;
use kpr_nftables::{FamilyProxier, RenderConfig, render_ruleset};

use crate::{Args, InNetns, Partial, median, ms, nft_netlink, partial_syncs, row};

/// Runs the nftables measurements.
pub fn run(args: &Args, shape: &Shape, objs: &Objects, state: &ProxyState) -> anyhow::Result<()> {
    let config = RenderConfig {
        local_detector: LocalDetector::Cidr("10.128.0.0/9".parse()?),
        // Upstream's nftables default: NodePorts on the node's primary IP only.
        node_port_addresses: NodePortAddresses::Ips(vec!["192.168.0.2".parse()?]),
        service_cidrs: vec!["10.96.0.0/12".parse()?],
        node_ip: Some("192.168.0.2".parse()?),
        ..RenderConfig::new(IpFamily::V4)
    };
    let family_state = state.family(IpFamily::V4);

    let mut t = Vec::new();
    let mut script = String::new();
    let mut objects = (0, 0, 0);
    for _ in 0..args.repeat {
        let start = Instant::now();
        let ruleset = render_ruleset(family_state, &config);
        script = ruleset.creation_script();
        t.push(start.elapsed());
        objects = (
            ruleset.chains.len(),
            ruleset
                .chains
                .values()
                .map(|c| c.rules.len())
                .sum::<usize>(),
            ruleset.elements.len(),
        );
    }
    row("render full ruleset (nft -f script)", ms(median(t)));
    if let Some(path) = &args.dump {
        std::fs::write(path, &script)?;
    }
    row(
        "ruleset size",
        format!(
            "{} KiB, {} chains, {} rules, {} map elements",
            script.len() / 1024,
            objects.0,
            objects.1,
            objects.2
        ),
    );
    if args.no_apply {
        return Ok(());
    }

    // Baseline: the same script into an empty namespace, nothing else.
    let mut base = Vec::new();
    for _ in 0..if args.no_baseline { 0 } else { args.repeat } {
        let ns = Netns::new("bench")?;
        let runner = InNetns(ns.name().to_string());
        let start = Instant::now();
        let out = runner.run("nft", &["-f", "-"], Some(script.as_bytes()))?;
        base.push(start.elapsed());
        anyhow::ensure!(out.success(), "baseline nft -f failed: {}", out.stderr);
    }
    if !base.is_empty() {
        row("baseline: nft -f same script, empty ns", ms(median(base)));
    }

    let ns = Netns::new("bench")?;
    let runner: Arc<dyn Runner> = Arc::new(InNetns(ns.name().to_string()));
    // Transactions over netlink, as the proxy sends them; `nft -f` of the same
    // partial transaction is measured below as the baseline.
    let nft = nft_netlink(&ns, runner.clone())?;
    let mut proxier = FamilyProxier::new(nft, config);
    if let Some(ops) = args.batch_ops {
        proxier = proxier.with_batch_ops(ops);
    }
    let start = Instant::now();
    let report = proxier.sync(family_state, true)?;
    row("first full sync (empty kernel)", ms(start.elapsed()));
    row(
        "  its transactions",
        format!("{}, {} operations", report.transactions, report.operations),
    );

    let mut full = Vec::new();
    for _ in 0..args.repeat {
        let start = Instant::now();
        let report = proxier.sync(family_state, true)?;
        full.push(start.elapsed());
        anyhow::ensure!(report.full, "expected a full sync");
    }
    row(
        "forced full sync (read table, diff, write)",
        ms(median(full)),
    );

    let (mut kept, mut calls) = (None, 0usize);
    partial_syncs(args, shape, objs, "partial sync", |state| {
        let report = proxier.sync(state, false)?;
        calls += 1;
        // Odd calls are endpoint changes: keep the last one's transaction for the
        // baseline.
        if calls % 2 == 1
            && let Some(tx) = proxier.last_partial_transaction()
        {
            kept = Some(tx.clone());
        }
        Ok(Partial {
            full: report.full,
            services_changed: report.services_changed,
            detail: Some(format!(
                "{} operations, {} bytes",
                report.operations, report.bytes
            )),
        })
    })?;
    // Baseline: the last endpoint change's transaction again, through `nft -f` into
    // the same table (it only adds and flushes chains that still exist, so replaying
    // it leaves the table as it is).
    if let Some(tx) = kept {
        let text = tx.text();
        let mut replays = Vec::new();
        for _ in 0..args.repeat {
            let start = Instant::now();
            let out = runner.run("nft", &["-f", "-"], Some(text.as_bytes()))?;
            replays.push(start.elapsed());
            anyhow::ensure!(out.success(), "nft -f replay failed: {}", out.stderr);
        }
        row(
            "baseline: that endpoint change's transaction via nft -f",
            ms(median(replays)),
        );
    }
    // The kernel's floor: committing any rule that jumps (or NATs, or looks up a
    // verdict map) makes the kernel re-validate every chain reachable from the base
    // chains, so even a one-rule transaction into an unreachable chain costs O(table).
    let floor = Chain::new("bench-floor", vec![Rule::Jump(MARK_FOR_MASQUERADE.into())]);
    let mut floors = Vec::new();
    for _ in 0..args.repeat {
        let mut tx = Transaction::new(Family(IpFamily::V4));
        tx.add_chain(&floor);
        tx.write_chain(&floor);
        let start = Instant::now();
        proxier.nft().apply(&tx)?;
        floors.push(start.elapsed());
    }
    let mut tx = Transaction::new(Family(IpFamily::V4));
    tx.delete_chain(&floor.name);
    proxier.nft().apply(&tx)?;
    row(
        "kernel floor: one jump rule, netlink (validation)",
        ms(median(floors)),
    );
    drop(proxier);
    drop(ns);
    Ok(())
}
