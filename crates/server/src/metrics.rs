//! kube-proxy's metrics, under upstream's names and labels (`pkg/proxy/metrics`), in a
//! registry passed around explicitly (no globals).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// `ip_family` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabel {
    /// `IPv4` or `IPv6`.
    pub ip_family: String,
}

/// `table` + `ip_family` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// `filter` or `nat`.
    pub table: String,
    /// `IPv4` or `IPv6`.
    pub ip_family: String,
}

/// `traffic_policy` + `ip_family` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    /// `internal` or `external`.
    pub traffic_policy: String,
    /// `IPv4` or `IPv6`.
    pub ip_family: String,
}

/// HTTP `code` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// Status code.
    pub code: String,
}

type Hist = Family<FamilyLabel, Histogram, fn() -> Histogram>;

fn sync_histogram() -> Histogram {
    // Upstream: ExponentialBuckets(0.001, 2, 15).
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn programming_histogram() -> Histogram {
    // Upstream: 0.25, 0.5, 1..59 s, 60..115 s by 5, 120..300 s by 30.
    let mut b = vec![0.25, 0.5];
    b.extend((1..60).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    Histogram::new(b)
}

/// Every metric kube-proxy-rs exposes.
#[derive(Debug)]
pub struct Metrics {
    /// `kubeproxy_sync_proxy_rules_duration_seconds`.
    pub sync_duration: Hist,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`.
    pub sync_full_duration: Hist,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`.
    pub sync_partial_duration: Hist,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub last_sync_timestamp: Family<FamilyLabel, Gauge<f64, AtomicU64>>,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`.
    pub last_queued_timestamp: Family<FamilyLabel, Gauge<f64, AtomicU64>>,
    /// `kubeproxy_network_programming_duration_seconds`.
    pub network_programming: Hist,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_total`.
    pub endpoint_changes_total: Counter,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_pending`.
    pub endpoint_changes_pending: Gauge,
    /// `kubeproxy_sync_proxy_rules_service_changes_total`.
    pub service_changes_total: Counter,
    /// `kubeproxy_sync_proxy_rules_service_changes_pending`.
    pub service_changes_pending: Gauge,
    /// `kubeproxy_sync_proxy_rules_iptables_total`.
    pub iptables_rules_total: Family<TableLabel, Gauge>,
    /// `kubeproxy_sync_proxy_rules_iptables_last`.
    pub iptables_rules_last: Family<TableLabel, Gauge>,
    /// `kubeproxy_sync_proxy_rules_iptables_restore_failures_total`.
    pub iptables_restore_failures: Family<FamilyLabel, Counter>,
    /// `kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total`.
    pub iptables_partial_restore_failures: Family<FamilyLabel, Counter>,
    /// `kubeproxy_sync_proxy_rules_no_local_endpoints_total`.
    pub no_local_endpoints: Family<PolicyLabel, Gauge>,
    /// `kubeproxy_proxy_healthz_total`.
    pub healthz_total: Family<CodeLabel, Counter>,
    /// `kubeproxy_proxy_livez_total`.
    pub livez_total: Family<CodeLabel, Counter>,
    /// `kubeproxy_manifest_problems` (ours): problems found in the last manifest read.
    pub manifest_problems: Gauge,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`.
    pub nftables_sync_failures: Family<FamilyLabel, Counter>,
    /// `kubeproxy_conntrack_reconciler_sync_duration_seconds`.
    pub conntrack_reconcile_duration: Hist,
    /// `kubeproxy_conntrack_reconciler_deleted_entries_total`.
    pub conntrack_deleted: Family<FamilyLabel, Counter>,
    /// `kubeproxy_conntrack_table_entries` (ours): `nf_conntrack_count`.
    pub conntrack_entries: Gauge,
    /// `kubeproxy_conntrack_table_max` (ours): `nf_conntrack_max`.
    pub conntrack_max: Gauge,
    /// `kubeproxy_event_to_kernel_duration_seconds` (ours): from a change reaching
    /// the proxy (watch event or manifest file change) to its rules being in the kernel.
    pub event_to_kernel: Hist,
    /// `kubeproxy_api_source_errors_total` (ours): API list/watch problems (the
    /// source retries by itself).
    pub api_source_errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            sync_duration: Family::new_with_constructor(sync_histogram),
            sync_full_duration: Family::new_with_constructor(sync_histogram),
            sync_partial_duration: Family::new_with_constructor(sync_histogram),
            last_sync_timestamp: Family::default(),
            last_queued_timestamp: Family::default(),
            network_programming: Family::new_with_constructor(programming_histogram),
            endpoint_changes_total: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            service_changes_total: Counter::default(),
            service_changes_pending: Gauge::default(),
            iptables_rules_total: Family::default(),
            iptables_rules_last: Family::default(),
            iptables_restore_failures: Family::default(),
            iptables_partial_restore_failures: Family::default(),
            no_local_endpoints: Family::default(),
            healthz_total: Family::default(),
            livez_total: Family::default(),
            manifest_problems: Gauge::default(),
            nftables_sync_failures: Family::default(),
            conntrack_reconcile_duration: Family::new_with_constructor(sync_histogram),
            conntrack_deleted: Family::default(),
            conntrack_entries: Gauge::default(),
            conntrack_max: Gauge::default(),
            event_to_kernel: Family::new_with_constructor(sync_histogram),
            api_source_errors: Counter::default(),
        };
        registry.register_collector(Box::new(crate::process::ProcessCollector));
        let r = registry.sub_registry_with_prefix("kubeproxy");
        r.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.sync_full_duration.clone(),
        );
        r.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.sync_partial_duration.clone(),
        );
        r.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync_timestamp.clone(),
        );
        r.register(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued_timestamp.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes_total.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes_total.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            m.iptables_rules_total.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            m.iptables_rules_last.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.iptables_restore_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables partial restore failures",
            m.iptables_partial_restore_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        r.register(
            "proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz_total.clone(),
        );
        r.register(
            "proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.livez_total.clone(),
        );
        r.register(
            "manifest_problems",
            "Problems found in the last read of the manifest directory (kube-proxy-rs)",
            m.manifest_problems.clone(),
        );
        r.register(
            "sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            m.nftables_sync_failures.clone(),
        );
        r.register(
            "conntrack_reconciler_sync_duration_seconds",
            "ReconcileConntrackFlowsLatency latency in seconds",
            m.conntrack_reconcile_duration.clone(),
        );
        r.register(
            "conntrack_reconciler_deleted_entries",
            "Cumulative conntrack flows deleted by conntrack reconciler",
            m.conntrack_deleted.clone(),
        );
        r.register(
            "conntrack_table_entries",
            "Entries in the conntrack table of this node (kube-proxy-rs)",
            m.conntrack_entries.clone(),
        );
        r.register(
            "conntrack_table_max",
            "The conntrack table's limit, nf_conntrack_max (kube-proxy-rs)",
            m.conntrack_max.clone(),
        );
        r.register(
            "event_to_kernel_duration_seconds",
            "From a change reaching kube-proxy-rs to its rules being in the kernel (kube-proxy-rs)",
            m.event_to_kernel.clone(),
        );
        r.register(
            "api_source_errors",
            "API server list/watch problems; the source retries by itself (kube-proxy-rs)",
            m.api_source_errors.clone(),
        );
        m
    }

    /// A family label value.
    pub fn family(ip_family: &str) -> FamilyLabel {
        FamilyLabel {
            ip_family: ip_family.to_string(),
        }
    }
}
