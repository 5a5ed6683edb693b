//! Explicit flags applied over the (defaulted) file configuration.
//!
//! Deliberate difference from upstream: upstream ignores almost every flag
//! when `--config` is given (only logging flags and `--hostname-override`
//! win). Here every flag given explicitly wins over the file, and flags not
//! given leave the file alone. Flags apply after defaulting, as upstream's
//! flag path does, so `--iptables-min-sync-period=0` keeps its meaning
//! (immediate syncs) instead of being defaulted back to 1s.
//!
//! Where one upstream flag feeds several v1alpha1 fields (upstream applies it
//! to its single internal value), it is written to each: `--masquerade-all`
//! and `--iptables-(min-)sync-period` also set the nftables section.

use crate::address::{append_port_if_needed, parse_host_port, parse_ip_sloppy};
use crate::defaults::{HEALTHZ_PORT, METRICS_PORT};
use crate::duration::GoDuration;
use crate::error::FlagError;
use crate::flags::Flags;
use crate::scalars::{parse_go_bool, parse_go_f32, parse_go_i32, parse_go_u32};
use crate::settings::{IpvsScheduler, ProxyMode};
use crate::types::{KubeProxyConfiguration, Quantity, VModuleItem};
use crate::validation::{
    DETECT_LOCAL_MODES, MODE_HINT, check_cidr, check_cluster_cidr, scheduler_hint,
};

/// Collects flag problems so that all of them are reported at once.
struct Checker {
    errors: Vec<FlagError>,
}

impl Checker {
    fn fail(&mut self, flag: &str, value: &str, reason: impl Into<String>) {
        self.errors.push(FlagError {
            flag: format!("--{flag}"),
            value: value.to_owned(),
            reason: reason.into(),
        });
    }

    fn parse<T>(
        &mut self,
        flag: &str,
        value: &Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = value.as_deref()?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.fail(flag, value, reason);
                None
            }
        }
    }

    fn duration(
        &mut self,
        flag: &str,
        value: &Option<String>,
        positive: bool,
    ) -> Option<GoDuration> {
        let d = self.parse(flag, value, |s| {
            GoDuration::parse(s).map_err(|e| e.to_string())
        })?;
        let raw = value.as_deref().unwrap_or_default();
        if positive && d.as_nanos() <= 0 {
            self.fail(flag, raw, "must be greater than 0");
            return None;
        }
        if d.as_nanos() < 0 {
            self.fail(flag, raw, "must be greater than or equal to 0");
            return None;
        }
        Some(d)
    }

    fn int_in(
        &mut self,
        flag: &str,
        value: &Option<String>,
        range: std::ops::RangeInclusive<i32>,
    ) -> Option<i32> {
        let v = self.parse(flag, value, parse_go_i32)?;
        if range.contains(&v) {
            Some(v)
        } else {
            let raw = value.as_deref().unwrap_or_default();
            self.fail(
                flag,
                raw,
                format!(
                    "must be within the range [{}, {}]",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }
}

/// Splits pflag `StringSlice` occurrences: comma-separated, repeated flags append.
fn slice(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Applies every explicitly given flag to `c`. Returns the flag errors (if
/// any) and warnings (deprecated flags).
pub(crate) fn apply_flags(
    flags: &Flags,
    c: &mut KubeProxyConfiguration,
) -> (Vec<FlagError>, Vec<String>) {
    let mut ck = Checker { errors: Vec::new() };
    let mut warnings = Vec::new();

    for entry in flags.feature_gates.iter().flatten() {
        for pair in entry.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((name, value)) => match parse_go_bool(value.trim()) {
                    Ok(on) => {
                        c.feature_gates.insert(name.trim().to_owned(), on);
                    }
                    Err(reason) => ck.fail(
                        "feature-gates",
                        pair,
                        format!("value of {}: {reason}", name.trim()),
                    ),
                },
                None => ck.fail(
                    "feature-gates",
                    pair,
                    "missing bool value (want Name=true|false)",
                ),
            }
        }
    }

    let cc = &mut c.client_connection;
    if let Some(v) = &flags.kubeconfig {
        cc.kubeconfig = v.clone();
    }
    if let Some(v) = &flags.kube_api_content_type {
        cc.content_type = v.clone();
    }
    if let Some(v) = ck.int_in("kube-api-burst", &flags.kube_api_burst, 0..=i32::MAX) {
        cc.burst = v;
    }
    if let Some(v) = ck.parse("kube-api-qps", &flags.kube_api_qps, parse_go_f32) {
        cc.qps = v;
    }

    if let Some(raw) = &flags.hostname_override {
        // As upstream's processHostnameOverrideFlag: trimmed, lowercased; "" is ignored.
        let name = raw.trim();
        if name.is_empty() && !raw.is_empty() {
            ck.fail("hostname-override", raw, "must not be empty");
        } else if !name.is_empty() {
            c.hostname_override = name.to_lowercase();
        }
    }
    if let Some(raw) = flags.bind_address.as_deref().filter(|s| !s.is_empty()) {
        if parse_ip_sloppy(raw).is_some() {
            c.bind_address = raw.to_owned();
        } else {
            ck.fail("bind-address", raw, "must be a valid IP address");
        }
    }
    let healthz_port = ck.int_in("healthz-port", &flags.healthz_port, 0..=65535);
    let metrics_port = ck.int_in("metrics-port", &flags.metrics_port, 0..=65535);
    for (flag, given) in [
        ("healthz-port", &flags.healthz_port),
        ("metrics-port", &flags.metrics_port),
    ] {
        if given.is_some() {
            let replacement = flag.replace("port", "bind-address");
            warnings.push(format!(
                "flag --{flag} is deprecated and will be removed; use --{replacement}"
            ));
        }
    }
    for (flag, value, port_flag, default_port, target) in [
        (
            "healthz-bind-address",
            &flags.healthz_bind_address,
            healthz_port,
            HEALTHZ_PORT,
            &mut c.healthz_bind_address,
        ),
        (
            "metrics-bind-address",
            &flags.metrics_bind_address,
            metrics_port,
            METRICS_PORT,
            &mut c.metrics_bind_address,
        ),
    ] {
        let port = port_flag.map_or(default_port, |p| p as u16);
        if let Some(raw) = value {
            if raw.is_empty() {
                target.clear();
            } else if parse_ip_sloppy(raw).is_some() {
                *target = append_port_if_needed(raw, port);
            } else if parse_host_port(raw).is_ok() {
                *target = raw.clone();
            } else {
                ck.fail(
                    flag,
                    raw,
                    "must be an IP address or IP:port with a port in 1-65535",
                );
            }
        }
        if port_flag == Some(0) {
            target.clear();
        }
    }
    if let Some(v) = flags.bind_address_hard_fail {
        c.bind_address_hard_fail = v;
    }
    if let Some(v) = flags.profiling {
        c.enable_profiling = v;
    }
    if let Some(v) = &flags.show_hidden_metrics_for_version {
        c.show_hidden_metrics_for_version = v.clone();
    }

    if let Some(raw) = &flags.proxy_mode {
        if ProxyMode::parse(raw).is_some() {
            c.mode = raw.clone();
        } else {
            ck.fail("proxy-mode", raw, MODE_HINT);
        }
    }
    if let Some(v) = ck.int_in(
        "iptables-masquerade-bit",
        &flags.iptables_masquerade_bit,
        0..=31,
    ) {
        c.iptables.masquerade_bit = Some(v);
    }
    if let Some(v) = flags.masquerade_all {
        c.iptables.masquerade_all = v;
        c.nftables.masquerade_all = v;
    }
    if let Some(v) = flags.iptables_localhost_nodeports {
        c.iptables.localhost_node_ports = Some(v);
    }
    if let Some(d) = ck.duration("iptables-sync-period", &flags.iptables_sync_period, true) {
        c.iptables.sync_period = d;
        c.nftables.sync_period = d;
    }
    if let Some(d) = ck.duration(
        "iptables-min-sync-period",
        &flags.iptables_min_sync_period,
        false,
    ) {
        c.iptables.min_sync_period = d;
        c.nftables.min_sync_period = d;
    }
    if let Some(d) = ck.duration("ipvs-sync-period", &flags.ipvs_sync_period, true) {
        c.ipvs.sync_period = d;
    }
    if let Some(d) = ck.duration("ipvs-min-sync-period", &flags.ipvs_min_sync_period, false) {
        c.ipvs.min_sync_period = d;
    }
    if let Some(raw) = &flags.ipvs_scheduler {
        if IpvsScheduler::parse(raw).is_some() {
            c.ipvs.scheduler = raw.clone();
        } else {
            ck.fail("ipvs-scheduler", raw, scheduler_hint());
        }
    }
    if let Some(values) = &flags.ipvs_exclude_cidrs {
        let cidrs = slice(values);
        let before = ck.errors.len();
        for cidr in &cidrs {
            if let Err(reason) = check_cidr(cidr) {
                ck.fail("ipvs-exclude-cidrs", cidr, reason);
            }
        }
        if ck.errors.len() == before {
            c.ipvs.exclude_cidrs = cidrs;
        }
    }
    if let Some(v) = flags.ipvs_strict_arp {
        c.ipvs.strict_arp = v;
    }
    if let Some(d) = ck.duration("ipvs-tcp-timeout", &flags.ipvs_tcp_timeout, false) {
        c.ipvs.tcp_timeout = d;
    }
    if let Some(d) = ck.duration("ipvs-tcpfin-timeout", &flags.ipvs_tcpfin_timeout, false) {
        c.ipvs.tcp_fin_timeout = d;
    }
    if let Some(d) = ck.duration("ipvs-udp-timeout", &flags.ipvs_udp_timeout, false) {
        c.ipvs.udp_timeout = d;
    }

    if let Some(raw) = &flags.detect_local_mode {
        if DETECT_LOCAL_MODES.contains(&raw.as_str()) {
            c.detect_local_mode = raw.clone();
        } else {
            ck.fail(
                "detect-local-mode",
                raw,
                "must be one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix",
            );
        }
    }
    if let Some(v) = &flags.pod_bridge_interface {
        c.detect_local.bridge_interface = v.clone();
    }
    if let Some(v) = &flags.pod_interface_name_prefix {
        c.detect_local.interface_name_prefix = v.clone();
    }
    if let Some(raw) = &flags.cluster_cidr {
        if raw.is_empty() {
            c.cluster_cidr.clear();
        } else {
            match check_cluster_cidr(raw) {
                Ok(()) => c.cluster_cidr = raw.clone(),
                Err(reason) => ck.fail("cluster-cidr", raw, reason),
            }
        }
    }
    if let Some(values) = &flags.nodeport_addresses {
        let entries = slice(values);
        let before = ck.errors.len();
        for entry in &entries {
            if entry == "primary" {
                if entries.len() != 1 {
                    ck.fail(
                        "nodeport-addresses",
                        entry,
                        "can't use both 'primary' and CIDRs",
                    );
                }
            } else if let Err(reason) = check_cidr(entry) {
                ck.fail("nodeport-addresses", entry, reason);
            }
        }
        if ck.errors.len() == before {
            c.node_port_addresses = entries;
        }
    }

    if let Some(v) = ck.int_in("oom-score-adj", &flags.oom_score_adj, -1000..=1000) {
        c.oom_score_adj = Some(v);
    }
    let ct = &mut c.conntrack;
    if let Some(v) = ck.int_in(
        "conntrack-max-per-core",
        &flags.conntrack_max_per_core,
        0..=i32::MAX,
    ) {
        ct.max_per_core = Some(v);
    }
    if let Some(v) = ck.int_in("conntrack-min", &flags.conntrack_min, 0..=i32::MAX) {
        ct.min = Some(v);
    }
    if let Some(d) = ck.duration(
        "conntrack-tcp-timeout-established",
        &flags.conntrack_tcp_timeout_established,
        false,
    ) {
        ct.tcp_established_timeout = Some(d);
    }
    if let Some(d) = ck.duration(
        "conntrack-tcp-timeout-close-wait",
        &flags.conntrack_tcp_timeout_close_wait,
        false,
    ) {
        ct.tcp_close_wait_timeout = Some(d);
    }
    if let Some(v) = flags.conntrack_tcp_be_liberal {
        ct.tcp_be_liberal = v;
    }
    if let Some(d) = ck.duration("conntrack-udp-timeout", &flags.conntrack_udp_timeout, false) {
        ct.udp_timeout = d;
    }
    if let Some(d) = ck.duration(
        "conntrack-udp-timeout-stream",
        &flags.conntrack_udp_timeout_stream,
        false,
    ) {
        ct.udp_stream_timeout = d;
    }
    if let Some(d) = ck.duration("config-sync-period", &flags.config_sync_period, true) {
        c.config_sync_period = d;
    }

    apply_logging_flags(flags, c, &mut ck);
    (ck.errors, warnings)
}

/// Logging flags, which upstream also lets win over the file (`copyLogsFromFlags`):
/// `--vmodule` entries come before the file's, so they take priority.
fn apply_logging_flags(flags: &Flags, c: &mut KubeProxyConfiguration, ck: &mut Checker) {
    let log = &mut c.logging;
    if let Some(raw) = &flags.logging_format {
        if matches!(raw.as_str(), "text" | "json") {
            log.format = raw.clone();
        } else {
            ck.fail("logging-format", raw, "must be one of text, json");
        }
    }
    if let Some(d) = ck.duration("log-flush-frequency", &flags.log_flush_frequency, true) {
        log.flush_frequency.duration = d;
        log.flush_frequency.as_string = true;
    }
    if let Some(v) = ck.parse("v", &flags.v, parse_go_u32) {
        if v > i32::MAX as u32 {
            ck.fail(
                "v",
                flags.v.as_deref().unwrap_or_default(),
                format!("must be <= {}", i32::MAX),
            );
        } else {
            log.verbosity = v;
        }
    }
    if let Some(values) = &flags.vmodule {
        let mut items = Vec::new();
        for entry in slice(values) {
            let parsed = entry
                .split_once('=')
                .filter(|(pattern, _)| !pattern.is_empty())
                .and_then(|(pattern, level)| Some((pattern, parse_go_u32(level).ok()?)));
            match parsed {
                Some((pattern, verbosity)) => items.push(VModuleItem {
                    file_pattern: pattern.to_owned(),
                    verbosity,
                }),
                None => ck.fail("vmodule", &entry, "must be pattern=N"),
            }
        }
        items.append(&mut log.vmodule);
        log.vmodule = items;
    }
    if let Some(v) = flags.log_text_split_stream {
        log.options.text.split_stream = v;
    }
    if let Some(v) = flags.log_json_split_stream {
        log.options.json.split_stream = v;
    }
    for (flag, value, target) in [
        (
            "log-text-info-buffer-size",
            &flags.log_text_info_buffer_size,
            &mut log.options.text.info_buffer_size,
        ),
        (
            "log-json-info-buffer-size",
            &flags.log_json_info_buffer_size,
            &mut log.options.json.info_buffer_size,
        ),
    ] {
        if let Some(raw) = value {
            let q = Quantity(raw.clone());
            if q.to_bytes().is_some() {
                *target = q;
            } else {
                ck.fail(flag, raw, "must be a quantity such as 0, 512, 64Ki or 1M");
            }
        }
    }
}
