//! `kube-proxy-rs check`: node preflight for the configured mode, one actionable
//! line per finding. Facts are gathered from the node ([`gather`]) and judged by a
//! pure function ([`evaluate`]), so every rule is unit-tested and the real-kernel
//! test only has to prove the facts are read.
//!
//! Exit status: 0 when every check passes, 2 when there are warnings but no
//! failure, 1 when something fails (or the command line is invalid).

use std::fmt::Write as _;
use std::sync::Arc;

use kpr_config::{KubeProxyConfiguration, ProxyMode};
use kpr_conntrack::HostFiles;
use kpr_conntrack::sysctl::{conntrack_max, online_cpus};
use kpr_iptables::exec::Runner;
use serde::Serialize;

use crate::host::Host;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fine.
    Pass,
    /// Works, but something is likely to bite.
    Warn,
    /// Service traffic will not work (or not fully) until fixed.
    Fail,
}

impl Severity {
    /// `PASS`, `WARN`, `FAIL`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// One result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check (`ip_forward`, `br_netfilter`, ...).
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What was found and, unless it passed, what to do.
    pub message: String,
}

/// What `check` reads from the node. `None` means "could not be read".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The configured mode.
    pub mode: Option<ProxyMode>,
    /// `net.ipv4.ip_forward`.
    pub ip_forward: Option<String>,
    /// `net.ipv6.conf.all.forwarding` (`None` without IPv6).
    pub ipv6_forwarding: Option<String>,
    /// `clusterCIDR` has an IPv6 range (a dual-stack or IPv6 cluster).
    pub ipv6_cluster: bool,
    /// Linux bridges on the node.
    pub bridges: Vec<String>,
    /// `net.bridge.bridge-nf-call-iptables` (`None`: br_netfilter not loaded).
    pub bridge_nf_call_iptables: Option<String>,
    /// `net.bridge.bridge-nf-call-ip6tables`.
    pub bridge_nf_call_ip6tables: Option<String>,
    /// `nf_conntrack_count`.
    pub conntrack_count: Option<u64>,
    /// `nf_conntrack_max`.
    pub conntrack_max: Option<u64>,
    /// The `nf_conntrack_max` the configuration asks for, if any.
    pub conntrack_max_wanted: Option<u64>,
    /// `iptables --version` (e.g. `iptables v1.8.9 (nf_tables)`).
    pub iptables_version: Option<String>,
    /// Rules in the legacy backend: (all `-A` lines, lines in `KUBE-` chains).
    pub legacy_rules: Option<(usize, usize)>,
    /// Rules in the nf_tables backend: (all `-A` lines, lines in `KUBE-` chains).
    pub nft_backend_rules: Option<(usize, usize)>,
    /// `iptables -t nat -S` worked, or its error.
    pub iptables_usable: Option<Result<(), String>>,
    /// `nft --check` of a table using every feature nftables mode needs, or its error.
    pub nftables_usable: Option<Result<(), String>>,
    /// Kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// `net.ipv4.conf.all.route_localnet`.
    pub route_localnet: Option<String>,
    /// NodePorts on 127.0.0.1 are configured (iptables mode only).
    pub localhost_node_ports: bool,
    /// Other kube-proxy processes: (pid, command).
    pub other_proxies: Vec<(u32, String)>,
    /// IPVS mode only: the IPVS table can be opened, ipset >= 6.0 runs, and the
    /// scheduler's module is loaded (`None`: unknown, it loads on first use).
    pub ipvs: Option<IpvsFacts>,
}

/// What `check` found about IPVS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsFacts {
    /// The IPVS netlink family answers, or why not.
    pub table: Result<(), String>,
    /// `ipset --version`, or why it failed.
    pub ipset: Result<String, String>,
    /// The configured scheduler.
    pub scheduler: String,
    /// `/sys/module/ip_vs_<scheduler>` exists.
    pub scheduler_loaded: bool,
}

/// Reads the facts for `config` from this node.
pub fn gather(config: &KubeProxyConfiguration, host: &dyn Host, runner: &Arc<dyn Runner>) -> Facts {
    let mode = config.mode();
    let number = |path: &str| host.sysctl(path).and_then(|v| v.trim().parse::<u64>().ok());
    // stdout, or the first line of stderr.
    let run_with = |program: &str, args: &[&str], stdin: Option<&[u8]>| -> Result<String, String> {
        match runner.run(program, args, stdin) {
            Ok(o) if o.success() => Ok(o.stdout),
            Ok(o) => Err(o
                .stderr
                .lines()
                .next()
                .unwrap_or("failed")
                .trim()
                .to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let run = |program: &str, args: &[&str]| run_with(program, args, None);
    let count_rules = |program: &str| -> Option<(usize, usize)> {
        let text = run(program, &[]).ok()?;
        let rules = text.lines().filter(|l| l.starts_with("-A ")).count();
        let kube = text.lines().filter(|l| l.starts_with("-A KUBE-")).count();
        Some((rules, kube))
    };
    let cpus = online_cpus(&HostFiles::real());
    let nftables_usable = (mode == ProxyMode::Nftables)
        .then(|| run_with("nft", &["--check", "-f", "-"], Some(NFT_PROBE.as_bytes())).map(|_| ()));
    Facts {
        mode: Some(mode),
        ip_forward: host.sysctl("net/ipv4/ip_forward"),
        ipv6_forwarding: host.sysctl("net/ipv6/conf/all/forwarding"),
        ipv6_cluster: config
            .cluster_cidrs()
            .iter()
            .any(|c| matches!(c, ipnet::IpNet::V6(_))),
        bridges: bridges(),
        bridge_nf_call_iptables: host.sysctl("net/bridge/bridge-nf-call-iptables"),
        bridge_nf_call_ip6tables: host.sysctl("net/bridge/bridge-nf-call-ip6tables"),
        conntrack_count: number("net/netfilter/nf_conntrack_count"),
        conntrack_max: number("net/netfilter/nf_conntrack_max"),
        conntrack_max_wanted: conntrack_max(&config.conntrack(), cpus),
        iptables_version: run("iptables", &["--version"])
            .ok()
            .map(|v| v.trim().to_string()),
        legacy_rules: count_rules("iptables-legacy-save"),
        nft_backend_rules: count_rules("iptables-nft-save"),
        iptables_usable: (mode != ProxyMode::Nftables)
            .then(|| run("iptables", &["-w", "5", "-t", "nat", "-S", "POSTROUTING"]).map(|_| ())),
        nftables_usable,
        kernel: nix::sys::utsname::uname()
            .ok()
            .map(|u| u.release().to_string_lossy().into_owned()),
        route_localnet: host.sysctl("net/ipv4/conf/all/route_localnet"),
        localhost_node_ports: config.localhost_node_ports(),
        other_proxies: other_proxies(),
        ipvs: (mode == ProxyMode::Ipvs).then(|| {
            let scheduler = config.ipvs().scheduler.as_str().to_string();
            IpvsFacts {
                table: kpr_ipvs::Ipvs::new().map(|_| ()).map_err(|e| e.to_string()),
                ipset: kpr_ipvs::ipset::Ipset::new(runner.clone())
                    .version()
                    .map_err(|e| e.to_string()),
                scheduler_loaded: std::path::Path::new(&format!("/sys/module/ip_vs_{scheduler}"))
                    .exists(),
                scheduler,
            }
        }),
    }
}

/// A throwaway table using what nftables mode needs (concatenated verdict maps,
/// numgen, sets with timeouts, ct state, fib, dnat, masquerade, reject, comments),
/// checked by the kernel with `nft --check` and never committed.
const NFT_PROBE: &str = "\
add table ip kube-proxy-rs-check { comment \"kube-proxy-rs check probe\" ; }
add set ip kube-proxy-rs-check affinity { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add map ip kube-proxy-rs-check vips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add chain ip kube-proxy-rs-check ep
add rule ip kube-proxy-rs-check ep update @affinity { ip saddr }
add rule ip kube-proxy-rs-check ep meta l4proto tcp dnat to 10.0.0.1:80
add chain ip kube-proxy-rs-check svc
add rule ip kube-proxy-rs-check svc numgen random mod 1 vmap { 0 : goto ep }
add chain ip kube-proxy-rs-check pre { type nat hook prerouting priority -100 ; }
add rule ip kube-proxy-rs-check pre ip daddr . meta l4proto . th dport vmap @vips
add rule ip kube-proxy-rs-check pre fib saddr type local ct state new counter masquerade
add chain ip kube-proxy-rs-check filter { type filter hook forward priority 0 ; }
add rule ip kube-proxy-rs-check filter ct state invalid drop comment \"probe\"
add rule ip kube-proxy-rs-check filter meta l4proto tcp reject
";

/// Linux bridges (`/sys/class/net/*/bridge`).
fn bridges() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .flatten()
        .filter(|e| e.path().join("bridge").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Processes named `kube-proxy` (upstream's binary), not counting ourselves.
fn other_proxies() -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if pid != me && comm.trim() == "kube-proxy" {
            let cmd = std::fs::read(e.path().join("cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            out.push((pid, cmd));
        }
    }
    out.sort();
    out
}

#[path = "check_rules.rs"]
mod rules;
pub use rules::evaluate;

/// Text output: one line per finding, then a summary.
pub fn render_text(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let _ = writeln!(s, "{} {}: {}", f.severity.word(), f.check, f.message);
    }
    let count = |sev| findings.iter().filter(|f| f.severity == sev).count();
    let _ = writeln!(
        s,
        "{} passed, {} warnings, {} failures",
        count(Severity::Pass),
        count(Severity::Warn),
        count(Severity::Fail)
    );
    s
}

/// The exit status for a set of findings: 0 all pass, 2 warnings, 1 failures.
pub fn exit_status(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Fail) => 1,
        Some(Severity::Warn) => 2,
        _ => 0,
    }
}
