//! IPVS mode at scale: the plan (render), then in a fresh namespace (needs ip_vs,
//! so a VM on hosts without it) the baseline of the same objects created with one
//! netlink batch, `ipset restore` and `iptables-restore`, the proxier's first and
//! forced full syncs, and one endpoint change and one new Service.

use std::sync::Arc;
use std::time::Instant;

use kpr_bench::generate::Shape;
use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::exec::Runner;
use kpr_ipvs::desired::Desired;
use kpr_ipvs::device::Device;
use kpr_ipvs::ipset::Ipset;
use kpr_ipvs::links::Links;
use kpr_ipvs::{FamilyProxier, Ipvs, Operation, PlanConfig, plan};
use kpr_model::{IpFamily, LocalDetector, Objects, ProxyState};
use kpr_netns_lab::Netns;

use crate::{Args, InNetns, Partial, median, ms, partial_syncs, row};

fn config() -> anyhow::Result<PlanConfig> {
    Ok(PlanConfig {
        local_detector: LocalDetector::Cidr("10.128.0.0/9".parse()?),
        node_port_ips: vec!["192.168.0.2".parse()?],
        node_addresses: ["192.168.0.2".parse()?].into_iter().collect(),
        node_ip: Some("192.168.0.2".parse()?),
        ..PlanConfig::new(IpFamily::V4)
    })
}

/// IPVS and link handles opened inside `ns`.
pub(crate) fn handles(ns: &Netns) -> anyhow::Result<(Ipvs, Links)> {
    ns.enter(|| -> anyhow::Result<(Ipvs, Links)> { Ok((Ipvs::new()?, Links::new()?)) })?
}

/// Runs the IPVS measurements.
pub fn run(args: &Args, shape: &Shape, objs: &Objects, state: &ProxyState) -> anyhow::Result<()> {
    let config = config()?;
    let family_state = state.family(IpFamily::V4);
    let mut t = Vec::new();
    let mut planned = None;
    for _ in 0..args.repeat {
        let start = Instant::now();
        planned = Some(plan(family_state, &config));
        t.push(start.elapsed());
    }
    let planned = planned.ok_or_else(|| anyhow::anyhow!("no repetitions"))?;
    row("plan (servers, ipsets, rules)", ms(median(t)));
    let reals: usize = planned.services.values().map(|p| p.reals.len()).sum();
    let entries: usize = planned.sets.values().map(|s| s.len()).sum();
    row(
        "plan size",
        format!(
            "{} virtual, {} real servers, {} set entries",
            planned.services.len(),
            reals,
            entries
        ),
    );
    if let Some(path) = &args.dump {
        std::fs::write(path, planned.dry_run())?;
    }
    // What a partial sync plans: only the Services that changed (no kernel, so
    // this runs on hosts without ip_vs too).
    let mut desired = Desired::new(config.clone());
    desired.update(family_state);
    partial_syncs(args, shape, objs, "re-plan, no kernel", |state| {
        let delta = desired.update(state);
        Ok(Partial {
            full: false,
            services_changed: delta.services_replanned,
            detail: Some(format!("{} virtual servers changed", delta.services.len())),
        })
    })?;
    if args.no_apply {
        return Ok(());
    }

    // Baseline: the same objects straight into an empty namespace.
    let mut base = Vec::new();
    for _ in 0..args.repeat {
        let ns = Netns::new("bench")?;
        let runner = InNetns(ns.name().to_string());
        let (mut table, _) = handles(&ns)?;
        let mut ops = Vec::new();
        for p in planned.services.values() {
            ops.push(Operation::AddService(p.vs.clone()));
            for rs in &p.reals {
                ops.push(Operation::AddRealServer(p.vs.key(), rs.clone()));
            }
        }
        let start = Instant::now();
        let report = table.apply(&ops)?;
        let sets = runner.run(
            "ipset",
            &["restore"],
            Some(planned.ipset_restore().as_bytes()),
        )?;
        let rules = runner.run(
            "iptables-restore",
            &["--noflush"],
            Some(planned.iptables.as_bytes()),
        )?;
        base.push(start.elapsed());
        anyhow::ensure!(report.failures.is_empty(), "baseline IPVS batch failed");
        anyhow::ensure!(
            sets.success() && rules.success(),
            "baseline restore failed: {}{}",
            sets.stderr,
            rules.stderr
        );
    }
    row(
        "baseline: netlink batch + restores, empty ns",
        ms(median(base)),
    );

    let ns = Netns::new("bench")?;
    let runner: Arc<dyn Runner> = Arc::new(InNetns(ns.name().to_string()));
    let (table, links) = handles(&ns)?;
    let mut proxier = FamilyProxier::new(
        config,
        Vec::new(),
        Box::new(table),
        Box::new(Device(links)),
        Ipset::new(runner.clone()),
        Iptables::new(IpFamily::V4, Backend::Default, runner),
    );
    let start = Instant::now();
    proxier.sync(family_state, true)?;
    row("first full sync (empty kernel)", ms(start.elapsed()));
    let mut full = Vec::new();
    for _ in 0..args.repeat {
        let start = Instant::now();
        let report = proxier.sync(family_state, true)?;
        full.push(start.elapsed());
        anyhow::ensure!(
            report.full && report.operations == 0,
            "expected a full sync changing nothing"
        );
    }
    row(
        "forced full sync (read all back, no change)",
        ms(median(full)),
    );
    partial_syncs(args, shape, objs, "partial sync", |state| {
        let report = proxier.sync(state, false)?;
        Ok(Partial {
            full: report.full,
            services_changed: report.services_changed,
            detail: Some(format!(
                "{} re-planned, {} virtual servers, {} IPVS operations, {} bytes",
                report.services_replanned,
                report.services_examined,
                report.operations,
                report.bytes
            )),
        })
    })?;
    drop(proxier);
    drop(ns);
    Ok(())
}
