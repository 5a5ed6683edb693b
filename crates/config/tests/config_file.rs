//! The config file: the seed loads, defaults match upstream, YAML and JSON
//! agree, and every bad input gets one line naming the field and the value.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kpr_config::{
    DetectLocal, IpvsScheduler, KubeProxyConfiguration, NodePortAddresses, ProxyMode,
    parse_file_contents,
};

const HEADER: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn load_ok(text: &str) -> kpr_config::Loaded {
    match parse_file_contents(text, "/x.yaml") {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected success, got:\n{e}"),
    }
}

fn body(yaml: &str) -> KubeProxyConfiguration {
    load_ok(&format!("{HEADER}{yaml}")).config
}

/// Loads `HEADER + yaml` (or the text as is when it has its own apiVersion or
/// is JSON) and returns a description of the mismatch, if the error text is
/// not exactly `expected`.
fn check(input: &str, expected: &str) -> Option<String> {
    let text = if input.contains("apiVersion") || input.trim_start().starts_with('{') {
        input.to_owned()
    } else {
        format!("{HEADER}{input}")
    };
    match parse_file_contents(&text, "/x.yaml") {
        Ok(loaded) => Some(format!(
            "input {input:?}: expected error, loaded {:?}",
            loaded.config.mode
        )),
        Err(e) if e.to_string() == expected => None,
        Err(e) => Some(format!(
            "input {input:?}:\n  want {expected:?}\n  got  {:?}",
            e.to_string()
        )),
    }
}

/// The kubeadm-era config from the seed post loads unchanged, with warnings
/// for the removed `udpIdleTimeout` key and the removed feature gate.
#[test]
fn seed_config_loads() {
    let text = include_str!("data/seed-001.yaml");
    let loaded = load_ok(text);
    let c = &loaded.config;
    assert_eq!(c.mode(), ProxyMode::Iptables);
    assert_eq!(c.cluster_cidrs(), vec!["10.100.0.0/16".parse().unwrap()]);
    assert_eq!(
        c.client_connection.kubeconfig,
        "/var/lib/kube-proxy/kubeconfig.conf"
    );
    assert_eq!(c.client_connection.burst, 10);
    assert_eq!(c.sync_period(), Duration::from_secs(30));
    assert_eq!(c.min_sync_period(), Duration::from_secs(1));
    assert_eq!(c.node_port_addresses(), NodePortAddresses::All);
    assert_eq!(c.feature_gate("SupportIPVSProxyMode"), Some(true));
    assert_eq!(
        loaded.warnings,
        vec![
            "config file /x.yaml: field \"udpIdleTimeout\" was removed from upstream kube-proxy in v1.26 and is ignored",
            "featureGates.SupportIPVSProxyMode: feature gate was removed from upstream Kubernetes before v1.35; ignored",
        ]
    );
}

/// An empty file (only apiVersion/kind) gets exactly upstream's v1.35 defaults.
#[test]
fn defaults_match_upstream() {
    let c = body("");
    let secs = Duration::from_secs;
    assert_eq!(c.bind_address, "0.0.0.0");
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
    assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
    assert_eq!(
        c.healthz_bind_address(),
        Some("0.0.0.0:10256".parse().unwrap())
    );
    assert_eq!(
        c.metrics_bind_address(),
        Some("127.0.0.1:10249".parse().unwrap())
    );
    assert_eq!(c.oom_score_adj, Some(-999));
    assert_eq!(c.mode(), ProxyMode::Iptables);
    assert_eq!(c.iptables.masquerade_bit, Some(14));
    assert_eq!(c.iptables.localhost_node_ports, Some(true));
    assert_eq!(c.iptables.sync_period.to_string(), "30s");
    assert_eq!(c.iptables.min_sync_period.to_string(), "1s");
    assert_eq!(c.ipvs.sync_period.to_string(), "30s");
    assert_eq!(c.ipvs.min_sync_period.to_string(), "0s");
    assert_eq!(c.nftables.sync_period.to_string(), "30s");
    assert_eq!(c.nftables.min_sync_period.to_string(), "1s");
    assert_eq!(c.nftables.masquerade_bit, Some(14));
    assert_eq!(c.conntrack.max_per_core, Some(32768));
    assert_eq!(c.conntrack.min, Some(131072));
    let ct = c.conntrack();
    assert_eq!(ct.tcp_established_timeout, Some(secs(24 * 3600)));
    assert_eq!(ct.tcp_close_wait_timeout, Some(secs(3600)));
    assert_eq!(ct.udp_timeout, None);
    assert_eq!(c.config_sync_period(), secs(15 * 60));
    assert_eq!(c.config_sync_period.to_string(), "15m0s");
    assert_eq!(
        c.client_connection.content_type,
        "application/vnd.kubernetes.protobuf"
    );
    assert_eq!(c.client_connection.qps, 5.0);
    assert_eq!(c.client_connection.burst, 10);
    assert_eq!(c.logging.format, "text");
    assert_eq!(c.logging.flush_frequency.duration.to_string(), "5s");
    assert_eq!(c.detect_local(), DetectLocal::None);
    assert_eq!(c.masquerade_bit(), 14);
    assert!(!c.masquerade_all());
    assert!(c.localhost_node_ports());
    assert_eq!(c.ipvs().scheduler, IpvsScheduler::RoundRobin);
    assert_eq!(c.node_ip_override(), None);
}

/// The serialized form is upstream-shaped: camelCase keys, Go durations, integer qps.
#[test]
fn serializes_like_upstream() {
    let c = body("");
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["configSyncPeriod"], "15m0s");
    assert_eq!(json["conntrack"]["tcpEstablishedTimeout"], "24h0m0s");
    assert_eq!(json["clientConnection"]["qps"], 5);
    assert_eq!(json["ipvs"]["strictARP"], false);
    assert_eq!(json["clusterCIDR"], "");
    assert_eq!(json["logging"]["flushFrequency"], "5s");
    assert!(json.get("udpIdleTimeout").is_none());
    assert!(json.get("windowsRunAsService").is_none());
    // What we print loads back to the same value.
    let again = parse_file_contents(&serde_json::to_string(&c).unwrap(), "/x.json").unwrap();
    assert_eq!(again.config, c);
}

/// The same settings in YAML and JSON give the same configuration.
#[test]
fn yaml_and_json_agree() {
    let yaml = body(
        "mode: ipvs\nclusterCIDR: 10.0.0.0/8,fd00::/48\nipvs:\n  scheduler: wlc\n  syncPeriod: 1m\n  minSyncPeriod: 5s\n  excludeCIDRs: [192.168.0.0/16]\nnodePortAddresses: [primary]\nfeatureGates:\n  Foo: true\n",
    );
    let json = load_ok(
        r#"{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration",
            "mode":"ipvs","clusterCIDR":"10.0.0.0/8,fd00::/48",
            "ipvs":{"scheduler":"wlc","syncPeriod":"1m","minSyncPeriod":"5s","excludeCIDRs":["192.168.0.0/16"]},
            "nodePortAddresses":["primary"],"featureGates":{"Foo":true}}"#,
    )
    .config;
    assert_eq!(yaml, json);
    assert_eq!(yaml.mode(), ProxyMode::Ipvs);
    assert_eq!(yaml.sync_period(), Duration::from_secs(60));
    assert_eq!(yaml.min_sync_period(), Duration::from_secs(5));
    assert_eq!(
        yaml.ipvs().scheduler,
        IpvsScheduler::WeightedLeastConnection
    );
    assert_eq!(
        yaml.ipvs().exclude_cidrs,
        vec!["192.168.0.0/16".parse().unwrap()]
    );
    assert_eq!(yaml.node_port_addresses(), NodePortAddresses::Primary);
    assert_eq!(yaml.cluster_cidrs().len(), 2);
    assert!(matches!(yaml.detect_local(), DetectLocal::ClusterCidr(c) if c.len() == 2));
}

/// Per-mode sections are read by mode, as upstream's conversion does.
#[test]
fn mode_selects_section() {
    let c = body(
        "mode: nftables\nnftables:\n  masqueradeBit: 3\n  masqueradeAll: true\n  syncPeriod: 10s\n  minSyncPeriod: 2s\niptables:\n  masqueradeBit: 5\n",
    );
    assert_eq!(c.mode().as_str(), "nftables");
    assert_eq!(c.masquerade_bit(), 3);
    assert!(c.masquerade_all());
    assert_eq!(c.sync_period(), Duration::from_secs(10));
    assert_eq!(c.min_sync_period(), Duration::from_secs(2));
    assert!(!c.localhost_node_ports());
    let ipvs = body("mode: ipvs\niptables:\n  masqueradeBit: 5\n  masqueradeAll: true\n");
    assert_eq!(ipvs.masquerade_bit(), 5);
    assert!(ipvs.masquerade_all());
}

/// YAML 1.1 booleans work for boolean fields while string fields keep their text.
#[test]
fn yaml_booleans_like_upstream() {
    let c = body("iptables:\n  masqueradeAll: yes\nhostnameOverride: on\n");
    assert!(c.iptables.masquerade_all);
    assert_eq!(c.hostname_override(), Some("on"));
}

/// Accessors for detect-local modes, bind address and addresses.
#[test]
fn typed_accessors() {
    let c = body("detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cbr0\n");
    assert_eq!(
        c.detect_local(),
        DetectLocal::BridgeInterface("cbr0".into())
    );
    let c =
        body("detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: veth\n");
    assert_eq!(
        c.detect_local(),
        DetectLocal::InterfaceNamePrefix("veth".into())
    );
    assert_eq!(
        body("detectLocalMode: NodeCIDR\n").detect_local(),
        DetectLocal::NodeCidr
    );
    let c = body(
        "bindAddress: fd00::1\nhealthzBindAddress: fd00::1\nnodePortAddresses: [10.1.2.3/8]\n",
    );
    assert_eq!(c.node_ip_override(), Some("fd00::1".parse().unwrap()));
    assert_eq!(c.healthz_bind_address, "[fd00::1]:10256");
    assert_eq!(c.metrics_bind_address, "[::1]:10249");
    assert_eq!(
        c.node_port_addresses(),
        NodePortAddresses::Cidrs(vec!["10.0.0.0/8".parse().unwrap()])
    );
    let c = body(
        "conntrack:\n  maxPerCore: 0\n  tcpEstablishedTimeout: 0s\n  udpTimeout: 30s\n  tcpBeLiberal: true\n",
    );
    let ct = c.conntrack();
    assert_eq!((ct.max_per_core, ct.tcp_established_timeout), (0, None));
    assert_eq!(ct.udp_timeout, Some(Duration::from_secs(30)));
    assert!(ct.tcp_be_liberal);
}

/// Old keys load with a warning; `null` means unset everywhere.
#[test]
fn legacy_keys_and_nulls() {
    let loaded = load_ok(&format!(
        "{HEADER}resourceContainer: /kube-proxy\nconntrack:\n  max: null\n  min: ~\nmode: null\niptables: null\nlogging:\n  flushFrequency: 2000000000\n"
    ));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("\"resourceContainer\" was removed"));
    assert_eq!(loaded.config.conntrack.min, Some(131072));
    assert_eq!(
        loaded.config.logging.flush_frequency.duration.to_string(),
        "2s"
    );
    let loaded = load_ok(&format!("{HEADER}conntrack:\n  max: 0\n"));
    assert!(loaded.warnings[0].contains("\"conntrack.max\" was removed"));
}

/// Every bad input gives one line naming the field path and the bad value.
#[test]
fn bad_inputs_name_field_and_value() {
    let cases: &[(&str, &str)] = &[
        // unknown fields, with path
        (
            "iptables:\n  minSyncPerod: 1s\n",
            "config file /x.yaml: unknown field \"iptables.minSyncPerod\" (did you mean \"minSyncPeriod\"?) at line 4, column 3",
        ),
        (
            "foo: 1\n",
            "config file /x.yaml: unknown field \"foo\" at line 3, column 1",
        ),
        (
            "logging:\n  options:\n    text:\n      splitStrem: true\n",
            "config file /x.yaml: unknown field \"logging.options.text.splitStrem\" (did you mean \"splitStream\"?) at line 6, column 7",
        ),
        (
            r#"{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration","ipvs":{"schedular":"rr"}}"#,
            "config file /x.yaml: unknown field \"ipvs.schedular\" (did you mean \"scheduler\"?) at line 1, column 100",
        ),
        // wrong types
        (
            "iptables:\n  masqueradeBit: abc\n",
            "config file /x.yaml: iptables.masqueradeBit: invalid value \"abc\": expected i32 at line 4, column 18",
        ),
        (
            "conntrack:\n  maxPerCore: 1.5\n",
            "config file /x.yaml: conntrack.maxPerCore: invalid value \"1.5\": expected i32 at line 4, column 15",
        ),
        (
            r#"{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration","iptables":{"masqueradeBit":"x"}}"#,
            "config file /x.yaml: iptables.masqueradeBit: invalid type: string \"x\", expected i32 at line 1 column 112",
        ),
        (
            r#"{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration","configSyncPeriod":60}"#,
            "config file /x.yaml: configSyncPeriod: invalid type: integer `60`, expected a duration string such as \"30s\" or \"1h2m\" at line 1 column 102",
        ),
        // bad durations
        (
            "iptables:\n  syncPeriod: 15x\n",
            "config file /x.yaml: iptables.syncPeriod: unknown unit \"x\" in duration \"15x\" at line 4, column 15",
        ),
        (
            "configSyncPeriod: \"15\"\n",
            "config file /x.yaml: configSyncPeriod: missing unit in duration \"15\" at line 3, column 19",
        ),
        // syntax, apiVersion, kind, duplicates
        (
            "mode: ipvs\n  bad: 1\n",
            "config file /x.yaml: mapping values are not allowed in this context at line 4, column 6",
        ),
        (
            "mode: a\nmode: b\n",
            "config file /x.yaml: duplicate key \"mode\" at line 4, column 1",
        ),
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
            "config file /x.yaml: apiVersion: Unsupported value: \"kubeproxy.config.k8s.io/v1alpha2\": supported values: \"kubeproxy.config.k8s.io/v1alpha1\"",
        ),
        (
            "{\"kind\":\"KubeProxyConfiguration\"}",
            "config file /x.yaml: apiVersion: Required value: must be \"kubeproxy.config.k8s.io/v1alpha1\"",
        ),
        (
            "{\"apiVersion\":\"kubeproxy.config.k8s.io/v1alpha1\",\"kind\":\"Pod\"}",
            "config file /x.yaml: kind: Unsupported value: \"Pod\": supported values: \"KubeProxyConfiguration\"",
        ),
        (
            "{\"apiVersion\": 1,",
            "config file /x.yaml: apiVersion: invalid type: integer `1`, expected a string at line 1 column 16",
        ),
        // validation: mode, masquerade bit, periods
        (
            "mode: ipvsx\n",
            "invalid configuration: mode: Invalid value: \"ipvsx\": must be one of iptables, ipvs, nftables (or blank for iptables)",
        ),
        (
            "mode: kernelspace\n",
            "invalid configuration: mode: Invalid value: \"kernelspace\": must be one of iptables, ipvs, nftables (or blank for iptables)",
        ),
        (
            "iptables:\n  masqueradeBit: 32\n",
            "invalid configuration: iptables.masqueradeBit: Invalid value: 32: must be within the range [0, 31]",
        ),
        (
            "nftables:\n  masqueradeBit: -1\n",
            "invalid configuration: nftables.masqueradeBit: Invalid value: -1: must be within the range [0, 31]",
        ),
        (
            "iptables:\n  syncPeriod: -1s\n",
            "invalid configuration: iptables.syncPeriod: Invalid value: \"-1s\": must be greater than 0",
        ),
        (
            "ipvs:\n  minSyncPeriod: -5s\n",
            "invalid configuration: ipvs.minSyncPeriod: Invalid value: \"-5s\": must be greater than or equal to 0",
        ),
        (
            "iptables:\n  syncPeriod: 10s\n  minSyncPeriod: 20s\n",
            "invalid configuration: iptables.syncPeriod: Invalid value: \"10s\": must be greater than or equal to iptables.minSyncPeriod (20s)",
        ),
        (
            "configSyncPeriod: -1m\n",
            "invalid configuration: configSyncPeriod: Invalid value: \"-1m0s\": must be greater than 0",
        ),
        // CIDRs
        (
            "clusterCIDR: 10.0.0.0/33\n",
            "invalid configuration: clusterCIDR: Invalid value: \"10.0.0.0/33\": must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
        ),
        (
            "clusterCIDR: 10.0.0.0/8,10.1.0.0/16\n",
            "invalid configuration: clusterCIDR: Invalid value: \"10.0.0.0/8,10.1.0.0/16\": must be a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
        ),
        (
            "clusterCIDR: 10.0.0.0/8,fd00::/48,10.1.0.0/16\n",
            "invalid configuration: clusterCIDR: Invalid value: \"10.0.0.0/8,fd00::/48,10.1.0.0/16\": only one CIDR allowed or a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
        ),
        (
            "nodePortAddresses: [10.0.0.0/8, bogus]\n",
            "invalid configuration: nodePortAddresses[1]: Invalid value: \"bogus\": must be a valid CIDR (e.g. 10.0.0.0/8 or fd00::/64)",
        ),
        (
            "nodePortAddresses: [primary, 10.0.0.0/8]\n",
            "invalid configuration: nodePortAddresses[0]: Invalid value: \"primary\": can't use both 'primary' and CIDRs",
        ),
        (
            "ipvs:\n  excludeCIDRs: [1.2.3.4]\n",
            "invalid configuration: ipvs.excludeCIDRs[0]: Invalid value: \"1.2.3.4\": must be a valid CIDR (e.g. 10.0.0.0/8 or fd00::/64)",
        ),
        // addresses
        (
            "bindAddress: 1.2.3\n",
            "invalid configuration: bindAddress: Invalid value: \"1.2.3\": must be a valid IP address",
        ),
        (
            "healthzBindAddress: \"0.0.0.0:99999\"\n",
            "invalid configuration: healthzBindAddress: Invalid value: \"99999\": must be a valid port",
        ),
        (
            "metricsBindAddress: \"localhost:10249\"\n",
            "invalid configuration: metricsBindAddress: Invalid value: \"localhost\": must be a valid IP",
        ),
        (
            "metricsBindAddress: \"::1:10249\"\n",
            "invalid configuration: metricsBindAddress: Invalid value: \"::1:10249\": must be IP:port",
        ),
        // modes and schedulers
        (
            "detectLocalMode: Foo\n",
            "invalid configuration: detectLocalMode: Unsupported value: \"Foo\": supported values: \"ClusterCIDR\", \"NodeCIDR\", \"BridgeInterface\", \"InterfaceNamePrefix\", \"\"",
        ),
        (
            "detectLocalMode: BridgeInterface\n",
            "invalid configuration: detectLocal.bridgeInterface: Invalid value: \"\": must not be empty when detectLocalMode is BridgeInterface",
        ),
        (
            "ipvs:\n  scheduler: fifo\n",
            "invalid configuration: ipvs.scheduler: Invalid value: \"fifo\": must be one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh (or blank for rr)",
        ),
        // other ranges
        (
            "oomScoreAdj: 1001\n",
            "invalid configuration: oomScoreAdj: Invalid value: 1001: must be within the range [-1000, 1000]",
        ),
        (
            "conntrack:\n  min: -1\n",
            "invalid configuration: conntrack.min: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "conntrack:\n  udpTimeout: -1s\n",
            "invalid configuration: conntrack.udpTimeout: Invalid value: \"-1s\": must be greater than or equal to 0",
        ),
        (
            "clientConnection:\n  qps: .inf\n",
            "invalid configuration: clientConnection.qps: Invalid value: inf: must be a finite number",
        ),
        (
            "mode: ipvs\n---\nmode: iptables\n",
            "config file /x.yaml: the file must hold a single YAML document (another starts at line 5, column 1)",
        ),
        (
            "clientConnection:\n  burst: -1\n",
            "invalid configuration: clientConnection.burst: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "portRange: 2000-300\n",
            "invalid configuration: portRange: Invalid value: \"2000-300\": must be a valid port range (e.g. 300-2000)",
        ),
        (
            "showHiddenMetricsForVersion: \"1.30\"\n",
            "invalid configuration: showHiddenMetricsForVersion: Invalid value: \"1.30\": must be omitted or have the value '1.34'; only the previous minor version is allowed",
        ),
        (
            "logging:\n  format: xml\n",
            "invalid configuration: logging.format: Unsupported value: \"xml\": supported values: \"text\", \"json\"",
        ),
        (
            "logging:\n  format: json\n  vmodule: [{filePattern: proxier, verbosity: 4}]\n",
            "invalid configuration: logging.vmodule: Forbidden: only supported for the text log format",
        ),
        (
            "featureGates: {LoggingAlphaOptions: false}\nlogging:\n  options:\n    json: {splitStream: true}\n",
            "invalid configuration: logging.options.json.splitStream: Forbidden: feature LoggingAlphaOptions is disabled",
        ),
    ];
    let failures: Vec<String> = cases.iter().filter_map(|(i, e)| check(i, e)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// All validation problems are reported together, one per line.
#[test]
fn collects_all_errors() {
    let err = parse_file_contents(
        &format!("{HEADER}mode: bogus\niptables:\n  masqueradeBit: 40\nclusterCIDR: nope\n"),
        "/x.yaml",
    )
    .unwrap_err();
    assert_eq!(
        err.lines(),
        vec![
            "invalid configuration: mode: Invalid value: \"bogus\": must be one of iptables, ipvs, nftables (or blank for iptables)",
            "invalid configuration: iptables.masqueradeBit: Invalid value: 40: must be within the range [0, 31]",
            "invalid configuration: clusterCIDR: Invalid value: \"nope\": must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
        ]
    );
}
