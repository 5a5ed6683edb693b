//! What the binary does, as library functions the tests can call: dry run, cleanup,
//! and running the proxy.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use kpr_config::{KubeProxyConfiguration, ProxyMode};
use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::exec::{ProcessRunner, Runner};
use kpr_iptables::{NfacctCounters, RenderConfig};
use kpr_kube_source::{ClientSettings, EventRecorder, EventType, NodeEvent, SourceConfig};
use kpr_model::{IpFamily, NodeInfo, ProxyState, Store};
use kpr_nftables::netlink::NfTables;
use kpr_nftables::nft::{Nft, NftError};
use kpr_nftables::objects::Family as NftFamily;
use kpr_server::{Metrics, ProxyHealth, ServerState};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::dataplane::{
    DataPlane, IptablesDataPlane, IpvsDataPlane, NftablesDataPlane, render_iptables_dry_run,
    render_ipvs_dry_run, render_nftables_dry_run,
};
use crate::host::Host;
use crate::manifests::ManifestSource;
use crate::observer::ServerObserver;
use crate::render_settings::{
    Features, iptables_render_config, ipvs_plan_config, nftables_render_config,
};
use crate::run::{Feed, LoopSettings, SyncLoop, run};
use crate::scheduler::Timing;

/// Upstream's `FullSyncPeriod`: a full resync at least this often.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// The node name: `hostnameOverride`, else the host name (lower-cased), as upstream.
pub fn node_name(config: &KubeProxyConfiguration, host: &dyn Host) -> String {
    config
        .hostname_override()
        .map(str::to_lowercase)
        .unwrap_or_else(|| host.hostname())
}

/// Reads a manifest directory once into a snapshot; returns it with one line per
/// problem or allocation (for stderr).
pub fn load_snapshot(dir: &Path, node: &str) -> anyhow::Result<(ProxyState, Vec<String>)> {
    let mut store = Store::new(node);
    let mut source = ManifestSource::new(dir.to_path_buf());
    source.reload(&mut store)?;
    Ok((store.snapshot(), source.reported_lines()))
}

/// Writes the `--dry-run` output for `config`'s mode, from the manifests in `dir`, to
/// `out`; returns the problem and allocation lines.
pub fn dry_run(
    config: &KubeProxyConfiguration,
    dir: &Path,
    host: &dyn Host,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<Vec<String>> {
    let node = node_name(config, host);
    let (state, notes) = load_snapshot(dir, &node)?;
    let text = match config.mode() {
        ProxyMode::Iptables => {
            let configs: Vec<RenderConfig> = IpFamily::ALL
                .iter()
                .map(|f| iptables_render_config(config, &state.node, host, &Features::all(), *f))
                .collect();
            // Streamed: the ruleset of a large cluster is never held whole.
            render_iptables_dry_run(&state, &configs, out).context("write the ruleset")?;
            return Ok(notes);
        }
        ProxyMode::Nftables => {
            let configs: Vec<kpr_nftables::RenderConfig> = IpFamily::ALL
                .iter()
                .map(|f| nftables_render_config(config, &state, host, *f))
                .collect();
            render_nftables_dry_run(&state, &configs)
        }
        ProxyMode::Ipvs => {
            let configs: Vec<kpr_ipvs::PlanConfig> = IpFamily::ALL
                .iter()
                .map(|f| ipvs_plan_config(config, &state.node, host, true, *f))
                .collect();
            render_ipvs_dry_run(&state, &configs)
        }
    };
    out.write_all(text.as_bytes())
        .context("write the ruleset")?;
    Ok(notes)
}

fn iptables_for(family: IpFamily, runner: Arc<dyn Runner>) -> Iptables {
    Iptables::new(family, Backend::Default, runner)
}

/// The families this host can proxy: IPv4, and IPv6 when the kernel has it and
/// `ip6tables` works (upstream proxies both when both are supported).
pub fn supported_families(host: &dyn Host, runner: &Arc<dyn Runner>) -> Vec<IpFamily> {
    let mut families = vec![IpFamily::V4];
    let v6_kernel = host.sysctl("net/ipv6/conf/all/forwarding").is_some();
    let v6_tools = runner
        .run(
            "ip6tables",
            &["-w", "5", "-t", "nat", "-S", "POSTROUTING"],
            None,
        )
        .is_ok_and(|o| o.success());
    if v6_kernel && v6_tools {
        families.push(IpFamily::V6);
    }
    families
}

/// Removes iptables mode's rules and chains (both families); returns failures.
fn cleanup_iptables(runner: &Arc<dyn Runner>) -> Vec<String> {
    let mut failed = Vec::new();
    for family in IpFamily::ALL {
        let ipt = iptables_for(family, runner.clone());
        match ipt.cleanup() {
            Ok(0) => {}
            Ok(n) => info!(family = %family, removed = n, "iptables rules cleaned up"),
            Err(e) => failed.push(format!("iptables {family}: {e}")),
        }
    }
    failed
}

/// Removes nftables mode's tables (both families); returns failures. A host without
/// `nft` has nothing to clean.
fn cleanup_nftables(runner: &Arc<dyn Runner>) -> Vec<String> {
    let mut failed = Vec::new();
    for family in IpFamily::ALL {
        let nft = Nft::new(NftFamily(family), runner.clone());
        match nft.delete_table() {
            Ok(true) => info!(family = %family, "nftables table kube-proxy deleted"),
            Ok(false) => {}
            Err(NftError::Spawn(_)) => {}
            Err(e) => failed.push(format!("nftables {family}: {e}")),
        }
    }
    failed
}

/// `--cleanup`: removes every rule, chain and table of every kube-proxy mode, both
/// families (ours and upstream's have the same names).
pub fn cleanup() -> anyhow::Result<()> {
    let runner: Arc<dyn Runner> = Arc::new(ProcessRunner);
    // IPVS first: its part needs the ipsets, which the chains still use; it
    // then removes every chain (of both iptables-based modes).
    let mut failed = cleanup_ipvs(&runner);
    failed.extend(cleanup_nftables(&runner));
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("cleanup failed: {}", failed.join("; "))
    }
}

/// Upstream's `platformCleanup` at start-up: nftables mode removes iptables-mode
/// leftovers, iptables mode removes nftables-mode leftovers, so that a node switching
/// modes does not run both rule sets.
fn cleanup_other_modes(mode: ProxyMode, runner: &Arc<dyn Runner>, host: &dyn Host) {
    let mut failed = match mode {
        ProxyMode::Nftables if ipvs_leftovers(host) => cleanup_ipvs(runner),
        ProxyMode::Nftables => cleanup_iptables(runner),
        _ => cleanup_nftables(runner),
    };
    // Leaving IPVS mode for iptables mode: kube-ipvs0 would keep every ClusterIP
    // local and IPVS would keep answering, so it all goes (upstream leaves it).
    if mode == ProxyMode::Iptables && ipvs_leftovers(host) {
        failed.extend(cleanup_ipvs(runner));
    }
    // Leaving iptables mode for IPVS mode: its service chains and filter rules
    // (REJECT for Services without endpoints) would stay in the path.
    if mode == ProxyMode::Ipvs && iptables_for(IpFamily::V4, runner.clone()).canaries_present() {
        failed.extend(cleanup_iptables(runner));
    }
    for f in failed {
        warn!(error = %f, "cannot remove another proxy mode's leftovers");
    }
}

fn set_sysctl(path: &str, value: &str) {
    let file = format!("/proc/sys/{path}");
    match std::fs::read_to_string(&file) {
        Ok(v) if v.trim() == value => {}
        Ok(_) => match std::fs::write(&file, value) {
            Ok(()) => info!(sysctl = path, value, "sysctl set"),
            Err(e) => {
                warn!(sysctl = path, value, error = %e, "cannot set sysctl (read-only /proc/sys in a container?); continuing")
            }
        },
        Err(e) => warn!(sysctl = path, error = %e, "sysctl not available"),
    }
}

fn probe_features(config: &KubeProxyConfiguration, ipt: &Iptables, host: &dyn Host) -> Features {
    let nfacct = NfacctCounters {
        localhost_nodeports: kpr_iptables::nfacct::ensure(
            kpr_iptables::names::NFACCT_LOCALHOST_NODEPORTS,
        )
        .is_ok(),
        ct_invalid_dropped: kpr_iptables::nfacct::ensure(
            kpr_iptables::names::NFACCT_CT_INVALID_DROPPED,
        )
        .is_ok(),
    };
    if !nfacct.localhost_nodeports || !nfacct.ct_invalid_dropped {
        warn!("cannot create nfacct counters; rules will not count packets for the nfacct metrics");
    }
    let tcp_liberal = config.conntrack().tcp_be_liberal
        || host
            .sysctl("net/netfilter/nf_conntrack_tcp_be_liberal")
            .is_some_and(|v| v == "1");
    Features {
        random_fully: ipt.probe().random_fully,
        nfacct,
        tcp_liberal,
    }
}

/// Builds iptables mode's data plane: families the host supports, kernel features,
/// `route_localnet` for localhost NodePorts.
fn iptables_dataplane(
    config: &KubeProxyConfiguration,
    host: Arc<dyn Host>,
    runner: Arc<dyn Runner>,
    initial: &ProxyState,
) -> (Vec<IpFamily>, Box<dyn DataPlane>) {
    let families = supported_families(host.as_ref(), &runner);
    let probe_ipt = iptables_for(IpFamily::V4, runner.clone());
    let features = probe_features(config, &probe_ipt, host.as_ref());
    info!(families = ?families, random_fully = features.random_fully, nfacct = features.nfacct.ct_invalid_dropped, "kernel features");
    // Localhost NodePorts need route_localnet (upstream closes the hole it opens
    // with the KUBE-FIREWALL rule).
    if iptables_render_config(
        config,
        &initial.node,
        host.as_ref(),
        &features,
        IpFamily::V4,
    )
    .localhost_node_ports
    {
        set_sysctl("net/ipv4/conf/all/route_localnet", "1");
    }
    let tools = families
        .iter()
        .map(|f| iptables_for(*f, runner.clone()))
        .collect();
    let cfg = config.clone();
    let fams = families.clone();
    let configs = Box::new(move |state: &ProxyState| {
        fams.iter()
            .map(|f| iptables_render_config(&cfg, &state.node, host.as_ref(), &features, *f))
            .collect()
    });
    (
        families,
        Box::new(IptablesDataPlane::new(tools, initial, configs)),
    )
}

/// Builds nftables mode's data plane: checks that nft and the kernel can hold our
/// table (upstream needs nft >= 1.0.1 and kernel >= 5.13), then one table per family.
fn nftables_dataplane(
    config: &KubeProxyConfiguration,
    host: Arc<dyn Host>,
    runner: Arc<dyn Runner>,
    initial: &ProxyState,
) -> anyhow::Result<(Vec<IpFamily>, Box<dyn DataPlane>)> {
    let mut families = Vec::new();
    for family in IpFamily::ALL {
        let nft = Nft::new(NftFamily(family), runner.clone());
        let probe = nftables_render_config(config, initial, host.as_ref(), family);
        match kpr_nftables::probe(&nft, &probe) {
            Ok(()) => families.push(family),
            Err(e) if family == IpFamily::V4 => {
                return Err(anyhow::anyhow!(
                    "nftables mode needs nft >= 1.0.1 and a kernel >= 5.13 with nf_tables: {e}"
                ));
            }
            Err(e) => {
                warn!(error = %e, "IPv6 nftables table cannot be created; proxying IPv4 only")
            }
        }
    }
    if families.contains(&IpFamily::V6) && host.sysctl("net/ipv6/conf/all/forwarding").is_none() {
        families.retain(|f| *f == IpFamily::V4);
    }
    info!(families = ?families, "nftables available");
    // Transactions go over one nf_tables netlink socket (no nft cache reload per
    // change); without it, through `nft -f`.
    let socket = match NfTables::new() {
        Ok(s) => {
            info!("nftables transactions go over netlink");
            Some(Arc::new(Mutex::new(s)))
        }
        Err(e) => {
            warn!(error = %e, "nf_tables netlink unavailable; applying changes with nft -f");
            None
        }
    };
    let tools = families
        .iter()
        .map(|f| {
            let nft = Nft::new(NftFamily(*f), runner.clone());
            match &socket {
                Some(s) => nft.with_netlink(s.clone()),
                None => nft,
            }
        })
        .collect();
    let cfg = config.clone();
    let fams = families.clone();
    let configs = Box::new(move |state: &ProxyState| {
        fams.iter()
            .map(|f| nftables_render_config(&cfg, state, host.as_ref(), *f))
            .collect()
    });
    Ok((
        families,
        Box::new(NftablesDataPlane::new(tools, initial, configs)),
    ))
}

/// The kernel release as (major, minor), from `kernel/osrelease`.
fn kernel_version(host: &dyn Host) -> Option<(u32, u32)> {
    let release = host.sysctl("kernel/osrelease")?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The sysctls IPVS mode needs, as upstream sets them.
fn ipvs_sysctls(config: &KubeProxyConfiguration, host: &dyn Host) {
    for (path, value) in kpr_ipvs::SYSCTLS {
        set_sysctl(path, value);
    }
    // Connection reuse (kubernetes #81775, #93297): before 5.9, mode 1 stalls
    // reused ports for a second, so upstream sets 0; from 5.9 the kernel is fixed
    // and the value is left alone.
    match kernel_version(host) {
        Some(v) if ((4, 1)..(5, 9)).contains(&v) => set_sysctl("net/ipv4/vs/conn_reuse_mode", "0"),
        Some(_) => {}
        None => {
            warn!("cannot read the kernel version; leaving net.ipv4.vs.conn_reuse_mode as it is")
        }
    }
    set_sysctl("net/ipv4/ip_forward", "1");
    if config.ipvs().strict_arp {
        set_sysctl("net/ipv4/conf/all/arp_ignore", "1");
        set_sysctl("net/ipv4/conf/all/arp_announce", "2");
    }
}

/// Refuses to start when the kernel lacks IPVS or the scheduler (upstream falls
/// back silently; we say why). Probes the scheduler as upstream does: through a
/// virtual server on a TEST-NET-2 address, created and deleted.
fn ipvs_preflight(ipvs: &mut kpr_ipvs::Ipvs, scheduler: &str) -> anyhow::Result<()> {
    let services = ipvs
        .services()
        .map_err(|e| anyhow::anyhow!("IPVS mode cannot read the IPVS table: {e}"))?;
    if services.iter().any(|s| s.scheduler == scheduler) {
        return Ok(());
    }
    let probe = kpr_ipvs::VirtualServer::new(
        std::net::IpAddr::from([198, 51, 100, 0]),
        kpr_model::Protocol::Tcp,
        20000,
        scheduler,
    );
    match ipvs.add_service(&probe) {
        Ok(()) | Err(kpr_ipvs::IpvsError::ServiceExists { .. }) => {}
        Err(kpr_ipvs::IpvsError::SchedulerNotFound { .. }) => bail!(
            "IPVS mode cannot start: the kernel has no IPVS scheduler {scheduler:?} (module ip_vs_{scheduler} is missing; try `modprobe ip_vs_{scheduler}`)"
        ),
        Err(e) => bail!("IPVS mode cannot start: probing scheduler {scheduler:?}: {e}"),
    }
    let _ = ipvs.delete_service(&probe);
    Ok(())
}

/// Builds IPVS mode's data plane after the preflight checks: ip_vs and the
/// scheduler, ipset >= 6.0, a `kube-ipvs0` dummy device; then the sysctls and the
/// IPVS timeouts, and one proxier per family.
fn ipvs_dataplane(
    config: &KubeProxyConfiguration,
    host: Arc<dyn Host>,
    runner: Arc<dyn Runner>,
    initial: &ProxyState,
) -> anyhow::Result<(Vec<IpFamily>, Box<dyn DataPlane>)> {
    let settings = config.ipvs();
    let scheduler = settings.scheduler.as_str();
    // As upstream: load ip_vs if we can; a kernel with it built in needs nothing.
    let _ = runner.run("modprobe", &["-q", "ip_vs"], None);
    let mut probe =
        kpr_ipvs::Ipvs::new().map_err(|e| anyhow::anyhow!("IPVS mode cannot start: {e}"))?;
    ipvs_preflight(&mut probe, scheduler)?;
    let ipset = kpr_ipvs::ipset::Ipset::new(runner.clone());
    let version = ipset
        .version()
        .map_err(|e| anyhow::anyhow!("IPVS mode cannot start: {e}"))?;
    let mut links = kpr_ipvs::links::Links::new()
        .map_err(|e| anyhow::anyhow!("IPVS mode cannot start: {e}"))?;
    links.ensure_dummy(kpr_ipvs::proxier::DUMMY_DEVICE).map_err(|e| {
        anyhow::anyhow!(
            "IPVS mode cannot start: cannot create the dummy device kube-ipvs0 (is the dummy module available?): {e}"
        )
    })?;
    ipvs_sysctls(config, host.as_ref());
    let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32);
    let timeouts = kpr_ipvs::Timeouts {
        tcp: secs(settings.tcp_timeout),
        tcp_fin: secs(settings.tcp_fin_timeout),
        udp: secs(settings.udp_timeout),
    };
    if timeouts != kpr_ipvs::Timeouts::default()
        && let Err(e) = probe.set_timeouts(&timeouts)
    {
        warn!(error = %e, "cannot set the IPVS timeouts");
    }
    warn!(
        "upstream kube-proxy deprecated its ipvs mode in 1.35; kube-proxy-rs keeps it, and its nftables mode is the way off it"
    );
    let families = supported_families(host.as_ref(), &runner);
    let random_fully = iptables_for(IpFamily::V4, runner.clone())
        .probe()
        .random_fully;
    info!(families = ?families, scheduler, ipset = %version, "IPVS available");
    let mut proxiers = Vec::new();
    for family in &families {
        let table = kpr_ipvs::Ipvs::new()?;
        let device = kpr_ipvs::links::Links::new()?;
        proxiers.push(kpr_ipvs::FamilyProxier::new(
            ipvs_plan_config(config, &initial.node, host.as_ref(), random_fully, *family),
            settings.exclude_cidrs.clone(),
            Box::new(table),
            Box::new(kpr_ipvs::device::Device(device)),
            ipset.clone(),
            iptables_for(*family, runner.clone()),
        ));
    }
    let cfg = config.clone();
    let fams = families.clone();
    let configs = Box::new(move |state: &ProxyState| {
        fams.iter()
            .map(|f| ipvs_plan_config(&cfg, &state.node, host.as_ref(), random_fully, *f))
            .collect()
    });
    Ok((
        families,
        Box::new(IpvsDataPlane::from_proxiers(proxiers, configs)),
    ))
}

/// Removes IPVS mode's objects: our virtual servers and `kube-ipvs0`, then every
/// kube-proxy chain (both families), then the ipsets. A host without ip_vs or
/// ipset has nothing of them to remove.
fn cleanup_ipvs(runner: &Arc<dyn Runner>) -> Vec<String> {
    let mut failed = Vec::new();
    let ipset = kpr_ipvs::ipset::Ipset::new(runner.clone());
    let mut table = kpr_ipvs::Ipvs::new().ok();
    match kpr_ipvs::links::Links::new() {
        Ok(mut links) => {
            let table = table.as_mut().map(|t| t as &mut dyn kpr_ipvs::IpvsTable);
            match kpr_ipvs::cleanup::remove_servers_and_device(table, &mut links, &ipset) {
                Ok(r) if r.services > 0 || r.device => {
                    info!(
                        virtual_servers = r.services,
                        device = r.device,
                        "IPVS objects removed"
                    )
                }
                Ok(_) => {}
                Err(e) => failed.extend(e.into_iter().map(|e| format!("ipvs: {e}"))),
            }
        }
        Err(e) => failed.push(format!("ipvs: {e}")),
    }
    failed.extend(cleanup_iptables(runner));
    match ipset.destroy_all() {
        Ok(0) => {}
        Ok(n) => info!(sets = n, "ipsets destroyed"),
        Err(kpr_ipvs::ipset::IpsetError::Spawn { .. }) => {}
        Err(e) => failed.push(format!("ipset: {e}")),
    }
    failed
}

/// True if IPVS mode left its device on this node.
fn ipvs_leftovers(host: &dyn Host) -> bool {
    host.interface_addresses()
        .iter()
        .any(|a| a.interface == kpr_ipvs::proxier::DUMMY_DEVICE)
        || std::path::Path::new("/sys/class/net")
            .join(kpr_ipvs::proxier::DUMMY_DEVICE)
            .exists()
}

/// Where the proxy reads Services, EndpointSlices and its Node from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A manifest directory (`--manifests`), re-read when it changes.
    Manifests(PathBuf),
    /// The Kubernetes API server (kubeconfig, `--master` or in-cluster credentials).
    Api(ClientSettings),
}

impl Input {
    fn describe(&self) -> String {
        match self {
            Input::Manifests(dir) => format!("manifests {}", dir.display()),
            Input::Api(s) => match (&s.master, &s.kubeconfig) {
                (Some(m), _) => format!("API server {m}"),
                (None, Some(k)) => format!("API server from kubeconfig {}", k.display()),
                (None, None) => "API server (in-cluster credentials)".to_string(),
            },
        }
    }
}

/// Keeps the source's background work alive while the loop runs.
enum SourceGuard {
    Manifests(#[allow(dead_code)] kpr_source::DirWatcher),
    Api(#[allow(dead_code)] kpr_kube_source::SourceHandle),
}

/// Starts the source: a directory watcher, or the API watchers (with a recorder of
/// Node Events).
async fn start_feed(
    input: &Input,
    node: &str,
    host: &dyn Host,
) -> anyhow::Result<(Feed, SourceGuard, Option<EventRecorder>)> {
    match input {
        Input::Manifests(dir) => {
            let (tx, rx) = mpsc::channel(1);
            let watcher = kpr_source::watch_dir(dir, tx)
                .with_context(|| format!("watching {}", dir.display()))?;
            Ok((
                Feed::Manifests {
                    source: ManifestSource::new(dir.clone()),
                    wake: rx,
                },
                SourceGuard::Manifests(watcher),
                None,
            ))
        }
        Input::Api(settings) => {
            // The error's text already holds its causes; no chain (one line).
            let api = kpr_kube_source::connect(settings)
                .await
                .map_err(|e| anyhow::anyhow!("cannot set up the API client: {e}"))?;
            for note in &api.notes {
                warn!("{note}");
            }
            info!(url = %api.url, "watching Services, EndpointSlices and this Node");
            let (events, handle) = kpr_kube_source::spawn(&api, SourceConfig::new(node));
            let recorder = EventRecorder::start(&api, node, &host.hostname());
            Ok((
                Feed::Api { events },
                SourceGuard::Api(handle),
                Some(recorder),
            ))
        }
    }
}

/// Runs the proxy from `input` until SIGTERM or SIGINT.
pub async fn run_proxy(
    config: KubeProxyConfiguration,
    input: Input,
    host: Arc<dyn Host>,
) -> anyhow::Result<()> {
    let mode = config.mode();
    let node = node_name(&config, host.as_ref());
    info!(node = %node, mode = mode.as_str(), source = %input.describe(), "starting kube-proxy-rs");
    // The source first: a bad kubeconfig fails before anything on the node changes.
    let (feed, _guard, events) = start_feed(&input, &node, host.as_ref()).await?;
    if let Some(events) = &events {
        // Upstream records the same event when it starts.
        events.record(NodeEvent {
            type_: EventType::Normal,
            reason: "Starting".into(),
            action: "StartKubeProxy".into(),
            note: format!(
                "kube-proxy-rs {} starting in {} mode",
                env!("CARGO_PKG_VERSION"),
                mode.as_str()
            ),
        });
    }
    let runner: Arc<dyn Runner> = Arc::new(ProcessRunner);
    let initial = ProxyState::empty(NodeInfo::named(node.clone()));
    // The mode's preflight first: a node that cannot run the mode is left as it is.
    let (families, dataplane) = match mode {
        ProxyMode::Nftables => nftables_dataplane(&config, host.clone(), runner.clone(), &initial)?,
        ProxyMode::Ipvs => ipvs_dataplane(&config, host.clone(), runner.clone(), &initial)?,
        ProxyMode::Iptables => iptables_dataplane(&config, host.clone(), runner.clone(), &initial),
    };
    cleanup_other_modes(mode, &runner, host.as_ref());
    crate::conntrack::apply_settings(&config.conntrack());

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let family_names: Vec<&str> = families.iter().map(|f| f.as_kubernetes()).collect();
    let health = Arc::new(ProxyHealth::new(
        config.sync_period() * 2,
        &family_names,
        SystemTime::now(),
    ));
    let state = Arc::new(ServerState {
        health: health.clone(),
        metrics: metrics.clone(),
        registry: Arc::new(registry),
        proxy_mode: mode.as_str().to_string(),
        configz: serde_json::to_value(&config).unwrap_or_default(),
    });
    if let Some(addr) = config.healthz_bind_address() {
        let (bound, _) =
            kpr_server::serve("healthz", addr, kpr_server::health_router(state.clone())).await?;
        info!(address = %bound, "serving /healthz and /livez");
    }
    if let Some(addr) = config.metrics_bind_address() {
        let (bound, _) =
            kpr_server::serve("metrics", addr, kpr_server::metrics_router(state.clone())).await?;
        info!(address = %bound, "serving /metrics, /proxyMode and /configz");
    }

    let mut observer = ServerObserver::new(
        metrics,
        health,
        dataplane.mode(),
        Some(crate::conntrack::Reconciler::open()),
    )
    .with_service_health(families.contains(&IpFamily::V6))
    .with_events(events);
    let timing = Timing {
        min_interval: config.min_sync_period(),
        burst: 2,
        // IPVS mode reads the whole kernel back every syncPeriod (upstream 1.35.1
        // went back to that after 1.34's one hour).
        full_interval: if mode == ProxyMode::Ipvs {
            config.sync_period()
        } else {
            FULL_SYNC_PERIOD
        },
        retry_max: config.sync_period(),
    };
    run(
        SyncLoop {
            feed,
            store: Store::new(node),
            dataplane,
            settings: LoopSettings {
                timing,
                canary_interval: config.sync_period(),
            },
            observer: &mut observer,
        },
        shutdown_signal(),
    )
    .await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
}
