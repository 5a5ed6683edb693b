//! Garbage in never panics: the file entry point, the flag path and the
//! accessors either succeed or return an error.
#![allow(clippy::unwrap_used)]

use kpr_config::{GoDuration, parse_file_contents, parse_flags};
use proptest::prelude::*;

const HEADER: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

/// Reads every accessor, so a loaded value that breaks one is caught too.
fn touch(c: &kpr_config::KubeProxyConfiguration) {
    let _ = (
        c.mode(),
        c.sync_period(),
        c.min_sync_period(),
        c.masquerade_bit(),
        c.masquerade_all(),
    );
    let _ = (
        c.cluster_cidrs(),
        c.node_port_addresses(),
        c.detect_local(),
        c.localhost_node_ports(),
    );
    let _ = (
        c.healthz_bind_address(),
        c.metrics_bind_address(),
        c.conntrack(),
        c.ipvs(),
    );
    let _ = (
        c.config_sync_period(),
        c.node_ip_override(),
        serde_json::to_string(c),
    );
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("~".to_owned()),
        Just("yes".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("1.5".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        "[-+]?[0-9]{0,4}(ns|ms|s|m|h)?",
        "[0-9a-f:./,]{0,20}",
        "\"[^\"\\\\]{0,12}\"",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("mode".to_owned()),
        Just("clusterCIDR".to_owned()),
        Just("bindAddress".to_owned()),
        Just("healthzBindAddress".to_owned()),
        Just("metricsBindAddress".to_owned()),
        Just("nodePortAddresses".to_owned()),
        Just("configSyncPeriod".to_owned()),
        Just("oomScoreAdj".to_owned()),
        Just("portRange".to_owned()),
        Just("featureGates".to_owned()),
        Just("detectLocalMode".to_owned()),
        Just("udpIdleTimeout".to_owned()),
        "[a-zA-Z]{1,10}",
    ]
}

fn section() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("syncPeriod"),
        Just("minSyncPeriod"),
        Just("masqueradeBit"),
        Just("masqueradeAll"),
        Just("scheduler"),
        Just("excludeCIDRs"),
        Just("maxPerCore"),
        Just("tcpEstablishedTimeout"),
        Just("flushFrequency"),
        Just("format"),
        Just("verbosity"),
    ];
    let name = prop_oneof![
        Just("iptables"),
        Just("ipvs"),
        Just("nftables"),
        Just("conntrack"),
        Just("logging"),
        Just("clientConnection"),
        Just("winkernel"),
    ];
    (name, proptest::collection::vec((field, scalar()), 0..4)).prop_map(|(name, fields)| {
        let mut s = format!("{name}:\n");
        for (f, v) in fields {
            s.push_str(&format!("  {f}: {v}\n"));
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary text, as YAML or (with a leading brace) JSON.
    #[test]
    fn arbitrary_text(text in "\\PC{0,200}") {
        if let Ok(l) = parse_file_contents(&text, "fuzz") { touch(&l.config); }
        if let Ok(l) = parse_file_contents(&format!("{{{text}"), "fuzz") { touch(&l.config); }
        if let Ok(l) = parse_file_contents(&format!("{HEADER}{text}"), "fuzz") { touch(&l.config); }
    }

    /// Structurally plausible documents with random keys and values.
    #[test]
    fn plausible_documents(
        top in proptest::collection::vec((key(), scalar()), 0..6),
        sections in proptest::collection::vec(section(), 0..3),
    ) {
        let mut doc = HEADER.to_owned();
        for (k, v) in top { doc.push_str(&format!("{k}: {v}\n")); }
        for s in sections { doc.push_str(&s); }
        if let Ok(l) = parse_file_contents(&doc, "fuzz") {
            touch(&l.config);
            // A loaded configuration serializes and loads back unchanged.
            let json = serde_json::to_string(&l.config).unwrap();
            let again = parse_file_contents(&json, "again").unwrap();
            prop_assert_eq!(again.config, l.config);
        }
    }

    /// Random flag values never panic parsing or loading.
    #[test]
    fn arbitrary_flag_values(
        flag in prop_oneof![
            Just("--proxy-mode"), Just("--iptables-sync-period"), Just("--cluster-cidr"),
            Just("--nodeport-addresses"), Just("--v"), Just("--oom-score-adj"), Just("--feature-gates"),
            Just("--healthz-bind-address"), Just("--vmodule"), Just("--kube-api-qps"), Just("--cleanup"),
            Just("--healthz-port"), Just("--log-text-info-buffer-size"), Just("--bind-address"),
        ],
        value in "\\PC{0,30}",
    ) {
        let parsed = parse_flags(["kube-proxy".to_owned(), format!("{flag}={value}")]);
        if let Ok(Ok(l)) = parsed.map(|flags| kpr_config::load(&flags)) {
            touch(&l.config);
        }
    }

    /// The duration parser on arbitrary text.
    #[test]
    fn durations(text in "\\PC{0,40}") {
        let _ = GoDuration::parse(&text);
    }
}
