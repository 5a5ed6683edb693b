//! Upstream defaulting: zero values in the file become upstream's defaults.
//!
//! As `SetDefaults_KubeProxyConfiguration` in
//! `pkg/proxy/apis/config/v1alpha1/defaults.go` (unchanged from v1.29 through
//! v1.35) plus component-base's `SetRecommendedLoggingConfiguration`. Note
//! the quirks kept on purpose: a `0s` iptables/nftables `minSyncPeriod` in
//! the file becomes 1s (only a flag can set 0), the IPVS `minSyncPeriod` has
//! no default, and `detectLocalMode` stays empty (empty means ClusterCIDR).

use std::net::IpAddr;

use crate::address::{append_port_if_needed, parse_ip_sloppy};
use crate::duration::GoDuration;
use crate::types::{API_VERSION, KIND, KubeProxyConfiguration, Quantity};

/// Port of the health check server (`ports.ProxyHealthzPort`).
pub const HEALTHZ_PORT: u16 = 10256;
/// Port of the metrics server (`ports.ProxyStatusPort`).
pub const METRICS_PORT: u16 = 10249;
/// Default `oomScoreAdj` (`qos.KubeProxyOOMScoreAdj`).
pub const OOM_SCORE_ADJ: i32 = -999;
/// Default fwmark bit for SNAT marking.
pub const MASQUERADE_BIT: i32 = 14;
/// Default full-resync interval of every data plane.
pub const SYNC_PERIOD: GoDuration = GoDuration::from_secs(30);
/// Default minimum interval between iptables / nftables syncs.
pub const MIN_SYNC_PERIOD: GoDuration = GoDuration::from_secs(1);
/// Default conntrack entries per core.
pub const CONNTRACK_MAX_PER_CORE: i32 = 32 * 1024;
/// Default conntrack table minimum.
pub const CONNTRACK_MIN: i32 = 128 * 1024;
/// Default established-TCP conntrack timeout.
pub const CONNTRACK_TCP_ESTABLISHED_TIMEOUT: GoDuration = GoDuration::from_secs(24 * 3600);
/// Default CLOSE_WAIT conntrack timeout.
pub const CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT: GoDuration = GoDuration::from_secs(3600);
/// Default informer resync interval.
pub const CONFIG_SYNC_PERIOD: GoDuration = GoDuration::from_secs(15 * 60);
/// Default API content type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// Default API client QPS.
pub const QPS: f32 = 5.0;
/// Default API client burst.
pub const BURST: i32 = 10;
/// Default log format.
pub const LOG_FORMAT: &str = "text";
/// Default log flush interval.
pub const LOG_FLUSH_FREQUENCY: GoDuration = GoDuration::from_secs(5);

/// Fills every zero-valued field with upstream's default. Idempotent.
pub fn apply_defaults(c: &mut KubeProxyConfiguration) {
    if c.api_version.is_empty() {
        c.api_version = API_VERSION.to_owned();
    }
    if c.kind.is_empty() {
        c.kind = KIND.to_owned();
    }
    if c.bind_address.is_empty() {
        c.bind_address = "0.0.0.0".to_owned();
    }
    let (healthz_host, metrics_host) = default_hosts(&c.bind_address);
    c.healthz_bind_address = if c.healthz_bind_address.is_empty() {
        format!("{healthz_host}:{HEALTHZ_PORT}")
    } else {
        append_port_if_needed(&c.healthz_bind_address, HEALTHZ_PORT)
    };
    c.metrics_bind_address = if c.metrics_bind_address.is_empty() {
        format!("{metrics_host}:{METRICS_PORT}")
    } else {
        append_port_if_needed(&c.metrics_bind_address, METRICS_PORT)
    };
    c.oom_score_adj.get_or_insert(OOM_SCORE_ADJ);

    let ipt = &mut c.iptables;
    default_duration(&mut ipt.sync_period, SYNC_PERIOD);
    default_duration(&mut ipt.min_sync_period, MIN_SYNC_PERIOD);
    ipt.localhost_node_ports.get_or_insert(true);
    ipt.masquerade_bit.get_or_insert(MASQUERADE_BIT);

    default_duration(&mut c.ipvs.sync_period, SYNC_PERIOD);

    let nft = &mut c.nftables;
    default_duration(&mut nft.sync_period, SYNC_PERIOD);
    default_duration(&mut nft.min_sync_period, MIN_SYNC_PERIOD);
    nft.masquerade_bit.get_or_insert(MASQUERADE_BIT);

    let ct = &mut c.conntrack;
    ct.max_per_core.get_or_insert(CONNTRACK_MAX_PER_CORE);
    ct.min.get_or_insert(CONNTRACK_MIN);
    ct.tcp_established_timeout
        .get_or_insert(CONNTRACK_TCP_ESTABLISHED_TIMEOUT);
    ct.tcp_close_wait_timeout
        .get_or_insert(CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT);

    default_duration(&mut c.config_sync_period, CONFIG_SYNC_PERIOD);

    let cc = &mut c.client_connection;
    if cc.content_type.is_empty() {
        cc.content_type = CONTENT_TYPE.to_owned();
    }
    if cc.qps == 0.0 {
        cc.qps = QPS;
    }
    if cc.burst == 0 {
        cc.burst = BURST;
    }

    let log = &mut c.logging;
    if log.format.is_empty() {
        log.format = LOG_FORMAT.to_owned();
    }
    if log.flush_frequency.duration.is_zero() {
        log.flush_frequency.duration = LOG_FLUSH_FREQUENCY;
        log.flush_frequency.as_string = true;
    }
    for routing in [&mut log.options.text, &mut log.options.json] {
        if routing.info_buffer_size.0.is_empty() {
            routing.info_buffer_size = Quantity("0".to_owned());
        }
    }
}

fn default_duration(field: &mut GoDuration, default: GoDuration) {
    if field.is_zero() {
        *field = default;
    }
}

/// Default healthz and metrics hosts for a bind address, as upstream's
/// `getDefaultAddresses`: an IPv4 address (v4-mapped included) picks the IPv4
/// wildcard and loopback; anything else, even an unparsable address that
/// validation then rejects, picks the IPv6 ones.
fn default_hosts(bind_address: &str) -> (&'static str, &'static str) {
    match parse_ip_sloppy(bind_address) {
        Some(IpAddr::V4(_)) => ("0.0.0.0", "127.0.0.1"),
        Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => ("0.0.0.0", "127.0.0.1"),
        _ => ("[::]", "[::1]"),
    }
}
