//! Command-line flags: pflag-style parsing, and explicit flags overriding the file.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use kpr_config::{Flags, NodePortAddresses, ProxyMode, load, parse_flags};

fn flags(args: &[&str]) -> Flags {
    let argv = std::iter::once("kube-proxy").chain(args.iter().copied());
    match parse_flags(argv) {
        Ok(f) => f,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn flag_error(args: &[&str]) -> String {
    let argv = std::iter::once("kube-proxy").chain(args.iter().copied());
    match parse_flags(argv) {
        Ok(f) => panic!("{args:?} parsed: {f:?}"),
        Err(e) => e.to_string(),
    }
}

fn loaded(args: &[&str]) -> kpr_config::KubeProxyConfiguration {
    match load(&flags(args)) {
        Ok(l) => l.config,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn load_error(args: &[&str]) -> String {
    match load(&flags(args)) {
        Ok(l) => panic!("{args:?} loaded: {:?}", l.config),
        Err(e) => e.to_string(),
    }
}

/// A config file under the target temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("kpr-config-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    fn arg(&self) -> String {
        format!("--config={}", self.0.display())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Booleans are pflag-style: bare means true, `=false` means false, a separate value is not taken.
#[test]
fn booleans() {
    assert!(!flags(&[]).cleanup);
    assert!(flags(&["--cleanup"]).cleanup);
    assert!(!flags(&["--cleanup=false"]).cleanup);
    assert!(flags(&["--cleanup=T"]).cleanup);
    assert!(flags(&["--dry-run"]).dry_run);
    assert_eq!(flags(&["--masquerade-all"]).masquerade_all, Some(true));
    assert_eq!(flags(&["--masquerade-all=0"]).masquerade_all, Some(false));
    assert_eq!(flags(&[]).masquerade_all, None);
    assert!(flag_error(&["--cleanup", "false"]).contains("unexpected argument 'false'"));
    assert!(flag_error(&["--cleanup=maybe"]).contains("must be a boolean"));
}

/// Verbosity in all of pflag's spellings, and `=`/space forms of values.
#[test]
fn verbosity_and_value_forms() {
    for args in [
        &["--v=4"][..],
        &["-v=4"],
        &["-v", "4"],
        &["-v4"],
        &["--v", "4"],
    ] {
        assert_eq!(flags(args).v.as_deref(), Some("4"), "{args:?}");
        assert_eq!(loaded(args).verbosity(), 4, "{args:?}");
    }
    assert_eq!(
        flags(&["--proxy-mode", "ipvs"]).proxy_mode.as_deref(),
        Some("ipvs")
    );
    assert_eq!(
        flags(&["--oom-score-adj", "-500"]).oom_score_adj.as_deref(),
        Some("-500")
    );
}

/// `_` in flag names reads as `-`, as pflag's WordSepNormalizeFunc does; values keep theirs.
#[test]
fn underscores_normalised() {
    let f = flags(&[
        "--iptables_sync_period=10s",
        "--hostname_override",
        "my_node",
        "--masquerade_all",
    ]);
    assert_eq!(f.iptables_sync_period.as_deref(), Some("10s"));
    assert_eq!(f.hostname_override.as_deref(), Some("my_node"));
    assert_eq!(f.masquerade_all, Some(true));
    assert_eq!(
        loaded(&["--iptables_sync_period=10s"]).sync_period(),
        Duration::from_secs(10)
    );
}

/// Repeated flags: the last wins; list flags accumulate, comma-separated like pflag's StringSlice.
#[test]
fn repeats_and_lists() {
    assert_eq!(
        flags(&["--proxy-mode=ipvs", "--proxy-mode=nftables"])
            .proxy_mode
            .as_deref(),
        Some("nftables")
    );
    let c = loaded(&[
        "--nodeport-addresses=10.0.0.0/8,192.168.0.0/16",
        "--nodeport-addresses",
        "fd00::/64",
    ]);
    assert_eq!(
        c.node_port_addresses,
        vec!["10.0.0.0/8", "192.168.0.0/16", "fd00::/64"]
    );
    assert!(matches!(c.node_port_addresses(), NodePortAddresses::Cidrs(v) if v.len() == 3));
    assert_eq!(
        loaded(&["--nodeport-addresses=primary"]).node_port_addresses(),
        NodePortAddresses::Primary
    );
    let c = loaded(&[
        "--ipvs-exclude-cidrs=10.0.0.0/8,fd00::/64",
        "--feature-gates=A=true,B=false",
        "--feature-gates",
        "C=1",
    ]);
    assert_eq!(c.ipvs.exclude_cidrs.len(), 2);
    assert_eq!(
        (
            c.feature_gate("A"),
            c.feature_gate("B"),
            c.feature_gate("C")
        ),
        (Some(true), Some(false), Some(true))
    );
}

/// Every flag maps onto the right field.
#[test]
fn flags_map_to_fields() {
    let c = loaded(&[
        "--proxy-mode=ipvs",
        "--ipvs-scheduler=sh",
        "--ipvs-sync-period=45s",
        "--ipvs-min-sync-period=2s",
        "--ipvs-strict-arp",
        "--ipvs-tcp-timeout=900s",
        "--ipvs-tcpfin-timeout=2m",
        "--ipvs-udp-timeout=300ms",
        "--iptables-masquerade-bit=7",
        "--masquerade-all",
        "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
        "--detect-local-mode=InterfaceNamePrefix",
        "--pod-interface-name-prefix=cali",
        "--pod-bridge-interface=cni0",
        "--hostname-override=  Node-1 ",
        "--bind-address=10.0.0.5",
        "--healthz-bind-address=10.0.0.5",
        "--metrics-bind-address=0.0.0.0:9999",
        "--bind-address-hard-fail",
        "--profiling",
        "--oom-score-adj=-500",
        "--conntrack-max-per-core=0",
        "--conntrack-min=1000",
        "--conntrack-tcp-timeout-established=2h",
        "--conntrack-tcp-timeout-close-wait=30m",
        "--conntrack-tcp-be-liberal",
        "--conntrack-udp-timeout=30s",
        "--conntrack-udp-timeout-stream=2m",
        "--config-sync-period=5m",
        "--kubeconfig=/etc/kp.conf",
        "--kube-api-qps=20.5",
        "--kube-api-burst=40",
        "--kube-api-content-type=application/json",
        "--show-hidden-metrics-for-version=1.34",
        "--logging-format=json",
        "--log-flush-frequency=1s",
        "--iptables-localhost-nodeports=false",
    ]);
    assert_eq!(c.mode(), ProxyMode::Ipvs);
    let ipvs = c.ipvs();
    assert_eq!(ipvs.scheduler.as_str(), "sh");
    assert!(ipvs.strict_arp);
    assert_eq!(ipvs.tcp_timeout, Some(Duration::from_secs(900)));
    assert_eq!(ipvs.tcp_fin_timeout, Some(Duration::from_secs(120)));
    assert_eq!(ipvs.udp_timeout, Some(Duration::from_millis(300)));
    assert_eq!(c.sync_period(), Duration::from_secs(45));
    assert_eq!(c.min_sync_period(), Duration::from_secs(2));
    assert_eq!(c.masquerade_bit(), 7);
    assert!(c.masquerade_all());
    assert_eq!(c.cluster_cidrs().len(), 2);
    assert_eq!(
        c.detect_local(),
        kpr_config::DetectLocal::InterfaceNamePrefix("cali".into())
    );
    assert_eq!(c.detect_local.bridge_interface, "cni0");
    assert_eq!(c.hostname_override(), Some("node-1"));
    assert_eq!(c.node_ip_override(), Some("10.0.0.5".parse().unwrap()));
    assert_eq!(c.healthz_bind_address, "10.0.0.5:10256");
    assert_eq!(
        c.metrics_bind_address(),
        Some("0.0.0.0:9999".parse().unwrap())
    );
    assert!(c.bind_address_hard_fail && c.enable_profiling);
    assert_eq!(c.oom_score_adj, Some(-500));
    let ct = c.conntrack();
    assert_eq!((ct.max_per_core, ct.min), (0, 1000));
    assert_eq!(ct.tcp_established_timeout, Some(Duration::from_secs(7200)));
    assert_eq!(ct.tcp_close_wait_timeout, Some(Duration::from_secs(1800)));
    assert!(ct.tcp_be_liberal);
    assert_eq!(ct.udp_timeout, Some(Duration::from_secs(30)));
    assert_eq!(ct.udp_stream_timeout, Some(Duration::from_secs(120)));
    assert_eq!(c.config_sync_period(), Duration::from_secs(300));
    assert_eq!(c.client_connection.kubeconfig, "/etc/kp.conf");
    assert_eq!(
        (c.client_connection.qps, c.client_connection.burst),
        (20.5, 40)
    );
    assert_eq!(c.client_connection.content_type, "application/json");
    assert_eq!(c.show_hidden_metrics_for_version, "1.34");
    assert_eq!(c.logging.format, "json");
    assert_eq!(c.iptables.localhost_node_ports, Some(false));
}

/// Our own flags and the action flags are plain fields.
#[test]
fn own_and_action_flags() {
    let f = flags(&[
        "--manifests",
        "/srv/manifests",
        "--dry-run",
        "--init-only",
        "--write-config-to=/tmp/x",
        "--master=https://1.2.3.4:6443",
        "--version",
    ]);
    assert_eq!(f.manifests, Some(PathBuf::from("/srv/manifests")));
    assert!(f.dry_run && f.init_only);
    assert_eq!(f.write_config_to, Some(PathBuf::from("/tmp/x")));
    assert_eq!(f.master.as_deref(), Some("https://1.2.3.4:6443"));
    assert_eq!(f.version.as_deref(), Some("true"));
    // Accepted for compatibility.
    flags(&[
        "--boot-id-file=/proc/sys/kernel/random/boot_id",
        "--machine_id_file=/etc/machine-id",
    ]);
}

/// Zero-valued flags keep their meaning instead of being defaulted away.
#[test]
fn zero_flags_are_kept() {
    let c = loaded(&["--iptables-min-sync-period=0"]);
    assert_eq!(c.min_sync_period(), Duration::ZERO);
    let c = loaded(&["--healthz-port=0"]);
    assert_eq!(c.healthz_bind_address(), None);
    let c = loaded(&["--metrics-bind-address="]);
    assert_eq!(c.metrics_bind_address(), None);
    let loaded = load(&flags(&["--healthz-port=0"])).unwrap();
    assert_eq!(
        loaded.warnings,
        vec!["flag --healthz-port is deprecated and will be removed; use --healthz-bind-address"]
    );
}

/// Bad flag values are all reported, one line each, naming the flag and the value.
#[test]
fn bad_flag_values() {
    assert_eq!(
        load_error(&["--proxy-mode=ipvsx"]),
        "--proxy-mode: invalid value \"ipvsx\": must be one of iptables, ipvs, nftables (or blank for iptables)"
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["--iptables-sync-period=10x"],
            "--iptables-sync-period: invalid value \"10x\": unknown unit \"x\" in duration \"10x\"",
        ),
        (
            &["--iptables-sync-period=0s"],
            "--iptables-sync-period: invalid value \"0s\": must be greater than 0",
        ),
        (
            &["--ipvs-min-sync-period=-1s"],
            "--ipvs-min-sync-period: invalid value \"-1s\": must be greater than or equal to 0",
        ),
        (
            &["--iptables-masquerade-bit=32"],
            "--iptables-masquerade-bit: invalid value \"32\": must be within the range [0, 31]",
        ),
        (
            &["--oom-score-adj=x"],
            "--oom-score-adj: invalid value \"x\": must be an integer",
        ),
        (
            &["--cluster-cidr=10.0.0.0/8,bad"],
            "--cluster-cidr: invalid value \"10.0.0.0/8,bad\": must be a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
        ),
        (
            &["--nodeport-addresses=10.0.0.0/8,primary"],
            "--nodeport-addresses: invalid value \"primary\": can't use both 'primary' and CIDRs",
        ),
        (
            &["--nodeport-addresses=10.0.0.0/88"],
            "--nodeport-addresses: invalid value \"10.0.0.0/88\": must be a valid CIDR (e.g. 10.0.0.0/8 or fd00::/64)",
        ),
        (
            &["--ipvs-exclude-cidrs=nope"],
            "--ipvs-exclude-cidrs: invalid value \"nope\": must be a valid CIDR (e.g. 10.0.0.0/8 or fd00::/64)",
        ),
        (
            &["--ipvs-scheduler=fifo"],
            "--ipvs-scheduler: invalid value \"fifo\": must be one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh (or blank for rr)",
        ),
        (
            &["--detect-local-mode=Foo"],
            "--detect-local-mode: invalid value \"Foo\": must be one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix",
        ),
        (
            &["--bind-address=1.2.3"],
            "--bind-address: invalid value \"1.2.3\": must be a valid IP address",
        ),
        (
            &["--healthz-bind-address=1.2.3.4:0"],
            "--healthz-bind-address: invalid value \"1.2.3.4:0\": must be an IP address or IP:port with a port in 1-65535",
        ),
        (
            &["--feature-gates=Foo"],
            "--feature-gates: invalid value \"Foo\": missing bool value (want Name=true|false)",
        ),
        (
            &["--feature-gates=Foo=maybe"],
            "--feature-gates: invalid value \"Foo=maybe\": value of Foo: must be a boolean (true or false)",
        ),
        (&["--v=x"], "--v: invalid value \"x\": must be an integer"),
        (
            &["--vmodule=proxier"],
            "--vmodule: invalid value \"proxier\": must be pattern=N",
        ),
        (
            &["--logging-format=xml"],
            "--logging-format: invalid value \"xml\": must be one of text, json",
        ),
        (
            &["--hostname-override=  "],
            "--hostname-override: invalid value \"  \": must not be empty",
        ),
        (
            &["--kube-api-qps=fast"],
            "--kube-api-qps: invalid value \"fast\": must be a number",
        ),
        (
            &["--log-json-info-buffer-size=lots"],
            "--log-json-info-buffer-size: invalid value \"lots\": must be a quantity such as 0, 512, 64Ki or 1M",
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(args, want)| {
            let got = load_error(args);
            (got != *want).then(|| format!("{args:?}:\n  want {want:?}\n  got  {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // All at once.
    let all = load_error(&[
        "--proxy-mode=x",
        "--iptables-sync-period=1",
        "--conntrack-min=-1",
    ]);
    assert_eq!(all.lines().count(), 3, "{all}");
}

/// Explicit flags override the file; flags not given leave the file's values alone.
#[test]
fn flags_override_file() {
    let file = TempFile::new(
        "override.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nclusterCIDR: 10.1.0.0/16\niptables:\n  masqueradeBit: 10\n  syncPeriod: 1m\nipvs:\n  scheduler: lc\nlogging:\n  vmodule: [{filePattern: a, verbosity: 1}]\n",
    );
    let base = loaded(&[&file.arg()]);
    assert_eq!(base.mode(), ProxyMode::Ipvs);
    assert_eq!(base.ipvs().scheduler.as_str(), "lc");

    let c = loaded(&[
        &file.arg(),
        "--proxy-mode=iptables",
        "--cluster-cidr=10.2.0.0/16",
        "--vmodule=b=3",
    ]);
    assert_eq!(c.mode(), ProxyMode::Iptables);
    assert_eq!(c.cluster_cidr, "10.2.0.0/16");
    // Untouched by flags: the file's values survive.
    assert_eq!(c.masquerade_bit(), 10);
    assert_eq!(c.sync_period(), Duration::from_secs(60));
    assert_eq!(c.ipvs.scheduler, "lc");
    // Flag vmodule entries come first (they win), then the file's.
    let patterns: Vec<&str> = c
        .logging
        .vmodule
        .iter()
        .map(|v| v.file_pattern.as_str())
        .collect();
    assert_eq!(patterns, vec!["b", "a"]);
}

/// Missing or broken files are reported with their path.
#[test]
fn file_errors() {
    let err = load_error(&["--config=/nonexistent/kube-proxy.yaml"]);
    assert!(
        err.starts_with("config file /nonexistent/kube-proxy.yaml: "),
        "{err}"
    );
    let file = TempFile::new(
        "bad.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nipvs:\n  strictArp: true\n",
    );
    assert_eq!(
        load_error(&[&file.arg()]),
        format!(
            "config file {}: unknown field \"ipvs.strictArp\" (did you mean \"strictARP\"?) at line 4, column 3",
            file.0.display()
        )
    );
}

/// Without any flag, the configuration is upstream's default.
#[test]
fn no_flags_gives_defaults() {
    let c = loaded(&[]);
    assert_eq!(c.mode(), ProxyMode::Iptables);
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
    assert_eq!(c.api_version, "kubeproxy.config.k8s.io/v1alpha1");
}

/// `--help` lists the upstream flags and ours.
#[test]
fn help_lists_flags() {
    let help = kpr_config::command().render_long_help().to_string();
    for flag in [
        "--proxy-mode",
        "--iptables-sync-period",
        "--conntrack-tcp-timeout-close-wait",
        "--manifests",
        "--dry-run",
        "-v, --v",
        "--nodeport-addresses",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(flag_error(&["--help"]).contains("--ipvs-strict-arp"));
    assert!(flag_error(&["--no-such-flag"]).contains("unexpected argument '--no-such-flag'"));
}
