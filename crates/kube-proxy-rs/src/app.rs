//! What the binary does, as library functions the tests can call: dry run, cleanup,
//! and running the proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use kpr_config::{KubeProxyConfiguration, ProxyMode};
use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::exec::{ProcessRunner, Runner};
use kpr_iptables::{NfacctCounters, RenderConfig};
use kpr_kube_source::{ClientSettings, EventRecorder, EventType, NodeEvent, SourceConfig};
use kpr_model::{IpFamily, NodeInfo, ProxyState, Store};
use kpr_nftables::nft::{Nft, NftError};
use kpr_nftables::objects::Family as NftFamily;
use kpr_server::{Metrics, ProxyHealth, ServerState};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::dataplane::{
    DataPlane, IptablesDataPlane, NftablesDataPlane, render_iptables_dry_run,
    render_nftables_dry_run,
};
use crate::host::Host;
use crate::manifests::ManifestSource;
use crate::observer::ServerObserver;
use crate::render_settings::{Features, iptables_render_config, nftables_render_config};
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

/// The `--dry-run` output for `config`'s mode, from the manifests in `dir`.
pub fn dry_run(
    config: &KubeProxyConfiguration,
    dir: &Path,
    host: &dyn Host,
) -> anyhow::Result<(String, Vec<String>)> {
    let node = node_name(config, host);
    let (state, notes) = load_snapshot(dir, &node)?;
    let out = match config.mode() {
        ProxyMode::Iptables => {
            let configs: Vec<RenderConfig> = IpFamily::ALL
                .iter()
                .map(|f| iptables_render_config(config, &state.node, host, &Features::all(), *f))
                .collect();
            render_iptables_dry_run(&state, &configs)
        }
        ProxyMode::Nftables => {
            let configs: Vec<kpr_nftables::RenderConfig> = IpFamily::ALL
                .iter()
                .map(|f| nftables_render_config(config, &state, host, *f))
                .collect();
            render_nftables_dry_run(&state, &configs)
        }
        other => bail!(
            "--proxy-mode {}: not implemented yet in kube-proxy-rs (iptables and nftables are)",
            other.as_str()
        ),
    };
    Ok((out, notes))
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
    let mut failed = cleanup_iptables(&runner);
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
fn cleanup_other_modes(mode: ProxyMode, runner: &Arc<dyn Runner>) {
    let failed = match mode {
        ProxyMode::Nftables => cleanup_iptables(runner),
        _ => cleanup_nftables(runner),
    };
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
    let tools = families
        .iter()
        .map(|f| Nft::new(NftFamily(*f), runner.clone()))
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
    if !matches!(mode, ProxyMode::Iptables | ProxyMode::Nftables) {
        bail!(
            "--proxy-mode {}: not implemented yet in kube-proxy-rs (iptables and nftables are)",
            mode.as_str()
        );
    }
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
    cleanup_other_modes(mode, &runner);
    crate::conntrack::apply_settings(&config.conntrack());
    let initial = ProxyState::empty(NodeInfo::named(node.clone()));
    let (families, dataplane) = match mode {
        ProxyMode::Nftables => nftables_dataplane(&config, host.clone(), runner.clone(), &initial)?,
        _ => iptables_dataplane(&config, host.clone(), runner.clone(), &initial),
    };

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
        full_interval: FULL_SYNC_PERIOD,
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
