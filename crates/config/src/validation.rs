//! Validation of a defaulted configuration, after upstream's
//! `pkg/proxy/apis/config/validation/validation.go` (v1.35) and component-base's
//! `logs/api/v1.Validate`, reporting every problem, not only the first.
//!
//! Differences, on purpose:
//! - Paths are the wire paths an operator writes (`iptables.masqueradeBit`,
//!   `nodePortAddresses[1]`), not upstream's internal Go names.
//! - Every section is checked whatever the mode (upstream skips the IPVS and
//!   nftables sections in other modes), so a file stays valid when the mode is
//!   switched; only the `minSyncPeriod <= syncPeriod` rule is limited to the
//!   section the mode uses.
//! - `ipvs.scheduler` must name a kernel scheduler (upstream dropped that check
//!   and fails later, at the first virtual server).
//! - Feature gates are not checked against upstream's registry; see
//!   [`feature_gate_warnings`].

use crate::address::{
    HostPortError, parse_cidr_sloppy, parse_host_port, parse_ip_sloppy, parse_port_range,
};
use crate::duration::GoDuration;
use crate::error::{FieldError, quote};
use crate::settings::{IpvsScheduler, ProxyMode};
use crate::types::{KubeProxyConfiguration, LoggingConfiguration, OutputRoutingOptions};

/// The `detectLocalMode` values upstream accepts.
pub const DETECT_LOCAL_MODES: [&str; 5] = [
    "ClusterCIDR",
    "NodeCIDR",
    "BridgeInterface",
    "InterfaceNamePrefix",
    "",
];

/// The only accepted non-empty `showHiddenMetricsForVersion`: the minor before v1.35.
pub const PREVIOUS_MINOR_VERSION: &str = "1.34";

/// Feature gates that upstream removed before v1.35 (so v1.35 would refuse
/// them) but that old config files still carry; we ignore them with a warning.
const REMOVED_FEATURE_GATES: [&str; 9] = [
    "SupportIPVSProxyMode",
    "IPv6DualStack",
    "EndpointSlice",
    "EndpointSliceProxying",
    "ServiceTopology",
    "ServiceInternalTrafficPolicy",
    "MinimizeIPTablesRestore",
    "IPTablesOwnershipCleanup",
    "ProxyTerminatingEndpoints",
];

/// Explains a bad `mode` / `--proxy-mode` value.
pub(crate) const MODE_HINT: &str =
    "must be one of iptables, ipvs, nftables (or blank for iptables)";

/// Explains a bad `ipvs.scheduler` / `--ipvs-scheduler` value.
pub(crate) fn scheduler_hint() -> String {
    let names: Vec<&str> = IpvsScheduler::ALL.iter().map(|s| s.as_str()).collect();
    format!("must be one of {} (or blank for rr)", names.join(", "))
}

/// Checks one CIDR the way upstream's `ParseCIDRSloppy` accepts it.
pub(crate) fn check_cidr(s: &str) -> Result<(), String> {
    parse_cidr_sloppy(s)
        .map(|_| ())
        .ok_or_else(|| "must be a valid CIDR (e.g. 10.0.0.0/8 or fd00::/64)".to_owned())
}

/// Checks `clusterCIDR`: one CIDR, or a comma-separated IPv4 + IPv6 pair.
pub(crate) fn check_cluster_cidr(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(',').collect();
    match parts.as_slice() {
        [one] => check_cidr(one)
            .map_err(|_| "must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)".to_owned()),
        [a, b] => match (parse_cidr_sloppy(a), parse_cidr_sloppy(b)) {
            (Some(a), Some(b)) if a.addr().is_ipv4() != b.addr().is_ipv4() => Ok(()),
            _ => Err("must be a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)".to_owned()),
        },
        _ => Err("only one CIDR allowed or a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)".to_owned()),
    }
}

/// Validates a defaulted configuration; an empty result means valid.
pub fn validate(c: &KubeProxyConfiguration) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mode = ProxyMode::parse(&c.mode);
    if mode.is_none() {
        errs.push(FieldError::invalid("mode", quote(&c.mode), MODE_HINT));
    }
    let mode = mode.unwrap_or(ProxyMode::Iptables);

    check_masquerade_bit(
        &mut errs,
        "iptables.masqueradeBit",
        c.iptables.masquerade_bit,
    );
    check_sync_periods(
        &mut errs,
        "iptables",
        c.iptables.sync_period,
        c.iptables.min_sync_period,
        mode == ProxyMode::Iptables,
    );
    check_sync_periods(
        &mut errs,
        "ipvs",
        c.ipvs.sync_period,
        c.ipvs.min_sync_period,
        mode == ProxyMode::Ipvs,
    );
    if IpvsScheduler::parse(&c.ipvs.scheduler).is_none() {
        errs.push(FieldError::invalid(
            "ipvs.scheduler",
            quote(&c.ipvs.scheduler),
            scheduler_hint(),
        ));
    }
    for (i, cidr) in c.ipvs.exclude_cidrs.iter().enumerate() {
        if let Err(reason) = check_cidr(cidr) {
            errs.push(FieldError::invalid(
                format!("ipvs.excludeCIDRs[{i}]"),
                quote(cidr),
                reason,
            ));
        }
    }
    non_negative(&mut errs, "ipvs.tcpTimeout", c.ipvs.tcp_timeout);
    non_negative(&mut errs, "ipvs.tcpFinTimeout", c.ipvs.tcp_fin_timeout);
    non_negative(&mut errs, "ipvs.udpTimeout", c.ipvs.udp_timeout);
    check_masquerade_bit(
        &mut errs,
        "nftables.masqueradeBit",
        c.nftables.masquerade_bit,
    );
    check_sync_periods(
        &mut errs,
        "nftables",
        c.nftables.sync_period,
        c.nftables.min_sync_period,
        mode == ProxyMode::Nftables,
    );

    let ct = &c.conntrack;
    for (path, value) in [
        ("conntrack.maxPerCore", ct.max_per_core),
        ("conntrack.min", ct.min),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            errs.push(FieldError::invalid(
                path,
                v,
                "must be greater than or equal to 0",
            ));
        }
    }
    for (path, value) in [
        (
            "conntrack.tcpEstablishedTimeout",
            ct.tcp_established_timeout.unwrap_or_default(),
        ),
        (
            "conntrack.tcpCloseWaitTimeout",
            ct.tcp_close_wait_timeout.unwrap_or_default(),
        ),
        ("conntrack.udpTimeout", ct.udp_timeout),
        ("conntrack.udpStreamTimeout", ct.udp_stream_timeout),
    ] {
        non_negative(&mut errs, path, value);
    }

    if !c.client_connection.qps.is_finite() {
        errs.push(FieldError::invalid(
            "clientConnection.qps",
            c.client_connection.qps,
            "must be a finite number",
        ));
    }
    if c.client_connection.burst < 0 {
        errs.push(FieldError::invalid(
            "clientConnection.burst",
            c.client_connection.burst,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(adj) = c.oom_score_adj.filter(|a| !(-1000..=1000).contains(a)) {
        errs.push(FieldError::invalid(
            "oomScoreAdj",
            adj,
            "must be within the range [-1000, 1000]",
        ));
    }
    if c.config_sync_period.as_nanos() <= 0 {
        errs.push(duration_error(
            "configSyncPeriod",
            c.config_sync_period,
            "must be greater than 0",
        ));
    }
    if parse_ip_sloppy(&c.bind_address).is_none() {
        errs.push(FieldError::invalid(
            "bindAddress",
            quote(&c.bind_address),
            "must be a valid IP address",
        ));
    }
    // Empty healthz/metrics addresses can only come from flags and mean "disabled".
    check_host_port(&mut errs, "healthzBindAddress", &c.healthz_bind_address);
    check_host_port(&mut errs, "metricsBindAddress", &c.metrics_bind_address);
    if !c.cluster_cidr.is_empty()
        && let Err(reason) = check_cluster_cidr(&c.cluster_cidr)
    {
        errs.push(FieldError::invalid(
            "clusterCIDR",
            quote(&c.cluster_cidr),
            reason,
        ));
    }
    if parse_port_range(&c.port_range).is_err() {
        errs.push(FieldError::invalid(
            "portRange",
            quote(&c.port_range),
            "must be a valid port range (e.g. 300-2000)",
        ));
    }
    check_node_port_addresses(&mut errs, &c.node_port_addresses);
    let hidden = &c.show_hidden_metrics_for_version;
    if !hidden.is_empty() && hidden != PREVIOUS_MINOR_VERSION {
        errs.push(FieldError::invalid(
            "showHiddenMetricsForVersion",
            quote(hidden),
            format!("must be omitted or have the value '{PREVIOUS_MINOR_VERSION}'; only the previous minor version is allowed"),
        ));
    }
    check_detect_local(&mut errs, c);
    check_logging(
        &mut errs,
        &c.logging,
        c.feature_gate("LoggingAlphaOptions") != Some(false),
    );
    errs
}

/// Warnings for `featureGates` entries: gates upstream removed before v1.35.
pub fn feature_gate_warnings(c: &KubeProxyConfiguration) -> Vec<String> {
    c.feature_gates
        .keys()
        .filter(|gate| REMOVED_FEATURE_GATES.contains(&gate.as_str()))
        .map(|gate| {
            format!("featureGates.{gate}: feature gate was removed from upstream Kubernetes before v1.35; ignored")
        })
        .collect()
}

fn duration_error(path: &str, d: GoDuration, detail: &str) -> FieldError {
    FieldError::invalid(path, quote(&d.to_string()), detail)
}

fn non_negative(errs: &mut Vec<FieldError>, path: &str, d: GoDuration) {
    if d.as_nanos() < 0 {
        errs.push(duration_error(
            path,
            d,
            "must be greater than or equal to 0",
        ));
    }
}

fn check_masquerade_bit(errs: &mut Vec<FieldError>, path: &str, bit: Option<i32>) {
    if let Some(bit) = bit.filter(|b| !(0..=31).contains(b)) {
        errs.push(FieldError::invalid(
            path,
            bit,
            "must be within the range [0, 31]",
        ));
    }
}

fn check_sync_periods(
    errs: &mut Vec<FieldError>,
    section: &str,
    sync: GoDuration,
    min: GoDuration,
    active: bool,
) {
    if sync.as_nanos() <= 0 {
        errs.push(duration_error(
            &format!("{section}.syncPeriod"),
            sync,
            "must be greater than 0",
        ));
    }
    non_negative(errs, &format!("{section}.minSyncPeriod"), min);
    if active && sync.as_nanos() > 0 && min > sync {
        errs.push(duration_error(
            &format!("{section}.syncPeriod"),
            sync,
            &format!("must be greater than or equal to {section}.minSyncPeriod ({min})"),
        ));
    }
}

fn check_host_port(errs: &mut Vec<FieldError>, path: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    match parse_host_port(value) {
        Ok(_) => {}
        Err(HostPortError::Syntax(_)) => {
            errs.push(FieldError::invalid(path, quote(value), "must be IP:port"));
        }
        Err(HostPortError::Ip(host)) => {
            errs.push(FieldError::invalid(
                path,
                quote(&host),
                "must be a valid IP",
            ));
        }
        Err(HostPortError::Port(port)) => {
            errs.push(FieldError::invalid(
                path,
                quote(&port),
                "must be a valid port",
            ));
        }
    }
}

fn check_node_port_addresses(errs: &mut Vec<FieldError>, addresses: &[String]) {
    for (i, entry) in addresses.iter().enumerate() {
        let path = format!("nodePortAddresses[{i}]");
        if entry == "primary" {
            if addresses.len() != 1 {
                errs.push(FieldError::invalid(
                    path,
                    quote(entry),
                    "can't use both 'primary' and CIDRs",
                ));
            }
        } else if let Err(reason) = check_cidr(entry) {
            errs.push(FieldError::invalid(path, quote(entry), reason));
        }
    }
}

fn check_detect_local(errs: &mut Vec<FieldError>, c: &KubeProxyConfiguration) {
    let mode = c.detect_local_mode.as_str();
    if !DETECT_LOCAL_MODES.contains(&mode) {
        errs.push(FieldError::unsupported(
            "detectLocalMode",
            mode,
            &DETECT_LOCAL_MODES,
        ));
    }
    let (path, value) = match mode {
        "BridgeInterface" => (
            "detectLocal.bridgeInterface",
            &c.detect_local.bridge_interface,
        ),
        "InterfaceNamePrefix" => (
            "detectLocal.interfaceNamePrefix",
            &c.detect_local.interface_name_prefix,
        ),
        _ => return,
    };
    if value.is_empty() {
        errs.push(FieldError::invalid(
            path,
            quote(value),
            format!("must not be empty when detectLocalMode is {mode}"),
        ));
    }
}

fn check_logging(errs: &mut Vec<FieldError>, log: &LoggingConfiguration, alpha_options: bool) {
    let freq = log.flush_frequency.duration;
    if freq.as_nanos() <= 0 {
        errs.push(duration_error(
            "logging.flushFrequency",
            freq,
            "must be greater than 0",
        ));
    }
    if !matches!(log.format.as_str(), "text" | "json") {
        errs.push(FieldError::unsupported(
            "logging.format",
            &log.format,
            &["text", "json"],
        ));
    }
    if log.verbosity > i32::MAX as u32 {
        errs.push(FieldError::invalid(
            "logging.verbosity",
            log.verbosity,
            format!("must be <= {}", i32::MAX),
        ));
    }
    if !log.vmodule.is_empty() && log.format != "text" {
        errs.push(FieldError::forbidden(
            "logging.vmodule",
            "only supported for the text log format",
        ));
    }
    for (i, item) in log.vmodule.iter().enumerate() {
        let path = format!("logging.vmodule[{i}]");
        if item.file_pattern.is_empty() {
            errs.push(FieldError::required(
                format!("{path}.filePattern"),
                "file pattern must not be empty",
            ));
        } else if item.file_pattern.contains(['=', ',']) {
            errs.push(FieldError::invalid(
                format!("{path}.filePattern"),
                quote(&item.file_pattern),
                "file pattern must not contain an equal sign or comma",
            ));
        }
        if item.verbosity > i32::MAX as u32 {
            errs.push(FieldError::invalid(
                format!("{path}.verbosity"),
                item.verbosity,
                format!("must be <= {}", i32::MAX),
            ));
        }
    }
    for (name, routing) in [("text", &log.options.text), ("json", &log.options.json)] {
        check_output_routing(
            errs,
            &format!("logging.options.{name}"),
            routing,
            alpha_options,
        );
    }
}

fn check_output_routing(
    errs: &mut Vec<FieldError>,
    path: &str,
    routing: &OutputRoutingOptions,
    alpha_options: bool,
) {
    let size = routing.info_buffer_size.to_bytes();
    if size.is_none() {
        errs.push(FieldError::invalid(
            format!("{path}.infoBufferSize"),
            quote(&routing.info_buffer_size.0),
            "must be a quantity such as 0, 512, 64Ki or 1M",
        ));
    }
    if !alpha_options {
        if routing.split_stream {
            errs.push(FieldError::forbidden(
                format!("{path}.splitStream"),
                "feature LoggingAlphaOptions is disabled",
            ));
        }
        if size.is_some_and(|s| s != 0.0) {
            errs.push(FieldError::forbidden(
                format!("{path}.infoBufferSize"),
                "feature LoggingAlphaOptions is disabled",
            ));
        }
    }
}
