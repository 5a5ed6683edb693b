//! The command line: every flag upstream kube-proxy v1.35 registers on Linux
//! (`cmd/kube-proxy/app/options.go` `AddFlags`, the component-base logging
//! flags, `--version`, and the Go-flag-set leftovers `--boot-id-file` /
//! `--machine-id-file`), plus our own `--manifests` and `--dry-run`.
//!
//! pflag conventions are kept: `--flag=value` and `--flag value`, booleans as
//! `--cleanup` / `--cleanup=false` (never `--cleanup false`), `-v=4`, `-v 4`
//! and `--v=4`, repeated flags (the last wins; list flags accumulate), values
//! that start with `-`, and `_` read as `-` in flag names (call
//! [`normalize_args`] before clap sees argv, as [`parse_flags`] does).
//!
//! Values that map onto the config file are kept as text here and checked in
//! [`crate::load()`], so that a bad value is reported as
//! `--proxy-mode: invalid value "ipvsx": ...` together with every other bad
//! flag, rather than one at a time by clap. `None` means "not given".

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser};

use crate::scalars::parse_go_bool;

fn go_bool(s: &str) -> Result<bool, String> {
    parse_go_bool(s)
}

/// Every upstream kube-proxy flag plus kube-proxy-rs's own. Flatten it into
/// the binary's parser with `#[command(flatten)]`; the binary must not also
/// define `--version` (this struct owns it, as upstream's `verflag` does).
#[derive(Debug, Clone, Default, PartialEq, Args)]
#[command(args_override_self = true)]
pub struct Flags {
    // === kube-proxy-rs ===
    /// Read Services, EndpointSlices, Endpoints, Nodes and ServiceCIDRs from this directory instead of the API server.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Render the full ruleset of the chosen mode to stdout once and exit, changing nothing.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, value_name = "BOOL")]
    pub dry_run: bool,

    // === files and actions ===
    /// The path to the configuration file. Flags given explicitly override its values.
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub config: Option<PathBuf>,
    /// If set, write the effective configuration to this file and exit.
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub write_config_to: Option<PathBuf>,
    /// If true cleanup iptables and ipvs rules and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, value_name = "BOOL")]
    pub cleanup: bool,
    /// If true, perform initialization steps that need full root privileges, then exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool, value_name = "BOOL")]
    pub init_only: bool,
    /// Print version information and quit (true, false or raw).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "version")]
    pub version: Option<String>,

    // === API server ===
    /// Comma-separated key=value pairs of feature gates for alpha/experimental features.
    #[arg(long, value_name = "mapStringBool", allow_hyphen_values = true)]
    pub feature_gates: Option<Vec<String>>,
    /// Path to kubeconfig file with authorization information.
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub kubeconfig: Option<String>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub master: Option<String>,
    /// Content type of requests sent to apiserver (default "application/vnd.kubernetes.protobuf").
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub kube_api_content_type: Option<String>,
    /// Burst to use while talking with kubernetes apiserver (default 10).
    #[arg(long, value_name = "int32", allow_hyphen_values = true)]
    pub kube_api_burst: Option<String>,
    /// QPS to use while talking with kubernetes apiserver (default 5).
    #[arg(long, value_name = "float32", allow_hyphen_values = true)]
    pub kube_api_qps: Option<String>,

    // === node identity and servers ===
    /// If non-empty, the name of the Node kube-proxy runs on (instead of the host name).
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub hostname_override: Option<String>,
    /// Overrides kube-proxy's idea of the node's primary IP (no socket is bound to it) (default 0.0.0.0).
    #[arg(long, value_name = "ip", allow_hyphen_values = true)]
    pub bind_address: Option<String>,
    /// IP address and port of the health check server; empty disables it (default 0.0.0.0:10256).
    #[arg(long, value_name = "ipport", allow_hyphen_values = true)]
    pub healthz_bind_address: Option<String>,
    /// IP address and port of the metrics server; empty disables it (default 127.0.0.1:10249).
    #[arg(long, value_name = "ipport", allow_hyphen_values = true)]
    pub metrics_bind_address: Option<String>,
    /// If true kube-proxy will treat failure to bind to a port as fatal and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool, value_name = "BOOL")]
    pub bind_address_hard_fail: Option<bool>,
    /// If true enables profiling via web interface on /debug/pprof handler.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool, value_name = "BOOL")]
    pub profiling: Option<bool>,
    /// The previous minor version for which to show hidden metrics (e.g. 1.34).
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub show_hidden_metrics_for_version: Option<String>,
    /// Deprecated: the port of the health check server; 0 disables it. Use --healthz-bind-address.
    #[arg(long, value_name = "int32", allow_hyphen_values = true, hide = true)]
    pub healthz_port: Option<String>,
    /// Deprecated: the port of the metrics server; 0 disables it. Use --metrics-bind-address.
    #[arg(long, value_name = "int32", allow_hyphen_values = true, hide = true)]
    pub metrics_port: Option<String>,

    // === proxy mode ===
    /// Which proxy mode to use: 'iptables' (default), 'ipvs' or 'nftables'.
    #[arg(long, value_name = "ProxyMode", allow_hyphen_values = true)]
    pub proxy_mode: Option<String>,
    /// The fwmark bit marking packets for SNAT in iptables/ipvs mode, in [0, 31] (default 14).
    #[arg(long, value_name = "int32", allow_hyphen_values = true)]
    pub iptables_masquerade_bit: Option<String>,
    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool, value_name = "BOOL")]
    pub masquerade_all: Option<bool>,
    /// If false, NodePorts are not served on IPv4 localhost (iptables mode) (default true).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool, value_name = "BOOL")]
    pub iptables_localhost_nodeports: Option<bool>,
    /// How often rules are fully resynchronized in iptables/nftables mode; > 0 (default 30s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub iptables_sync_period: Option<String>,
    /// Minimum period between iptables/nftables resyncs; 0 syncs on every change (default 1s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub iptables_min_sync_period: Option<String>,
    /// How often IPVS rules are fully resynchronized; > 0 (default 30s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub ipvs_sync_period: Option<String>,
    /// Minimum period between IPVS resyncs; 0 syncs on every change.
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub ipvs_min_sync_period: Option<String>,
    /// The IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh; default rr).
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub ipvs_scheduler: Option<String>,
    /// Comma-separated CIDRs whose IPVS rules cleanup must not touch.
    #[arg(long, value_name = "strings", allow_hyphen_values = true)]
    pub ipvs_exclude_cidrs: Option<Vec<String>>,
    /// Enable strict ARP by setting arp_ignore to 1 and arp_announce to 2.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool, value_name = "BOOL")]
    pub ipvs_strict_arp: Option<bool>,
    /// Timeout for idle IPVS TCP connections, 0 to leave as-is.
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub ipvs_tcp_timeout: Option<String>,
    /// Timeout for IPVS TCP connections after a FIN, 0 to leave as-is.
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub ipvs_tcpfin_timeout: Option<String>,
    /// Timeout for IPVS UDP packets, 0 to leave as-is.
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub ipvs_udp_timeout: Option<String>,

    // === local traffic and addresses ===
    /// Mode to detect local traffic: ClusterCIDR (default), NodeCIDR, BridgeInterface, InterfaceNamePrefix.
    #[arg(long, value_name = "LocalMode", allow_hyphen_values = true)]
    pub detect_local_mode: Option<String>,
    /// Bridge whose traffic is local when --detect-local-mode=BridgeInterface.
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub pod_bridge_interface: Option<String>,
    /// Interface name prefix whose traffic is local when --detect-local-mode=InterfaceNamePrefix.
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub pod_interface_name_prefix: Option<String>,
    /// Pod CIDR range of the cluster (a comma-separated IPv4,IPv6 pair for dual-stack).
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub cluster_cidr: Option<String>,
    /// CIDRs of node IPs that accept NodePort connections, or 'primary'; empty means all.
    #[arg(long, value_name = "strings", allow_hyphen_values = true)]
    pub nodeport_addresses: Option<Vec<String>>,

    // === process and conntrack ===
    /// The oom-score-adj value for the process, in [-1000, 1000] (default -999).
    #[arg(long, value_name = "int32", allow_hyphen_values = true)]
    pub oom_score_adj: Option<String>,
    /// Maximum NAT connections to track per CPU core; 0 leaves the limit as-is (default 32768).
    #[arg(long, value_name = "int32", allow_hyphen_values = true)]
    pub conntrack_max_per_core: Option<String>,
    /// Minimum number of conntrack entries to allocate (default 131072).
    #[arg(long, value_name = "int32", allow_hyphen_values = true)]
    pub conntrack_min: Option<String>,
    /// Idle timeout for established TCP connections, 0 to leave as-is (default 24h0m0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub conntrack_tcp_timeout_established: Option<String>,
    /// NAT timeout for TCP connections in CLOSE_WAIT (default 1h0m0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub conntrack_tcp_timeout_close_wait: Option<String>,
    /// Enable liberal TCP tracking (nf_conntrack_tcp_be_liberal=1).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool, value_name = "BOOL")]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// Idle timeout for UNREPLIED UDP connections, 0 to leave as-is.
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub conntrack_udp_timeout: Option<String>,
    /// Idle timeout for ASSURED UDP connections, 0 to leave as-is.
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub conntrack_udp_timeout_stream: Option<String>,
    /// How often configuration from the apiserver is refreshed; > 0 (default 15m0s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub config_sync_period: Option<String>,

    // === logging (component-base) ===
    /// Log format: text (default) or json.
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub logging_format: Option<String>,
    /// Maximum time between log flushes (default 5s).
    #[arg(long, value_name = "duration", allow_hyphen_values = true)]
    pub log_flush_frequency: Option<String>,
    /// Number for the log level verbosity.
    #[arg(
        short = 'v',
        long = "v",
        value_name = "Level",
        allow_hyphen_values = true
    )]
    pub v: Option<String>,
    /// Comma-separated pattern=N settings for file-filtered logging (text format only).
    #[arg(long, value_name = "pattern=N,...", allow_hyphen_values = true)]
    pub vmodule: Option<Vec<String>>,
    /// (Alpha) In text format, write errors to stderr and info to stdout.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool, value_name = "BOOL")]
    pub log_text_split_stream: Option<bool>,
    /// (Alpha) In text format with split streams, buffer size of the info stream (e.g. 64Ki).
    #[arg(long, value_name = "quantity", allow_hyphen_values = true)]
    pub log_text_info_buffer_size: Option<String>,
    /// (Alpha) In JSON format, write errors to stderr and info to stdout.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool, value_name = "BOOL")]
    pub log_json_split_stream: Option<bool>,
    /// (Alpha) In JSON format with split streams, buffer size of the info stream (e.g. 64Ki).
    #[arg(long, value_name = "quantity", allow_hyphen_values = true)]
    pub log_json_info_buffer_size: Option<String>,

    // === accepted for compatibility, unused ===
    /// Comma-separated files to check for boot-id (accepted, unused).
    #[arg(long, value_name = "string", allow_hyphen_values = true, hide = true)]
    pub boot_id_file: Option<String>,
    /// Comma-separated files to check for machine-id (accepted, unused).
    #[arg(long, value_name = "string", allow_hyphen_values = true, hide = true)]
    pub machine_id_file: Option<String>,
}

/// Rewrites `_` to `-` in long flag names (`--iptables_sync_period=10s` becomes
/// `--iptables-sync-period=10s`), like pflag's `WordSepNormalizeFunc`. Values,
/// short flags and everything after a bare `--` are left alone.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut after_terminator = false;
    args.into_iter()
        .map(Into::into)
        .map(|arg| {
            if after_terminator {
                return arg;
            }
            let Some(text) = arg.to_str() else {
                return arg;
            };
            if text == "--" {
                after_terminator = true;
                return arg;
            }
            let Some(body) = text.strip_prefix("--") else {
                return arg;
            };
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let name = name.replace('_', "-");
            match value {
                Some(value) => OsString::from(format!("--{name}={value}")),
                None => OsString::from(format!("--{name}")),
            }
        })
        .collect()
}

/// A stand-alone `kube-proxy` command carrying [`Flags`], for callers (and
/// tests) without subcommands of their own.
#[derive(Debug, Parser)]
#[command(
    name = "kube-proxy-rs",
    about = "A drop-in replacement for Kubernetes kube-proxy",
    long_about = None,
    disable_version_flag = true
)]
struct FlagsOnly {
    #[command(flatten)]
    flags: Flags,
}

/// The clap command for [`Flags`] alone, e.g. to render `--help`.
pub fn command() -> clap::Command {
    FlagsOnly::command()
}

/// Parses argv (program name first) into [`Flags`], normalising `_` in flag
/// names first. Errors are clap's (unknown flag, missing value, `--help`).
pub fn parse_flags<I, T>(args: I) -> Result<Flags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let matches = command().try_get_matches_from(normalize_args(args))?;
    Flags::from_arg_matches(&matches)
}
