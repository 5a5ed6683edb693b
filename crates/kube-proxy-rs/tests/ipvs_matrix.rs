//! The Service scenario matrix against the IPVS data plane, with real packets
//! between network namespaces and the real binary on each node. The host kernel
//! here has no ip_vs (and no dummy device), so `kpr_netns_lab::vm` runs this
//! binary inside a VM with Debian's stock kernel when it must.

#![allow(clippy::unwrap_used)]

mod lab;

use std::process::ExitCode;
use std::time::Duration;

use kpr_netns_lab::Netns;
use kpr_netns_lab::vm::{Suite, Test};
use lab::scenarios;

const MODE: &str = "ipvs";

macro_rules! matrix {
    ($($name:ident),* $(,)?) => {
        $(
            fn $name(_: &Netns) {
                scenarios::$name(MODE);
            }
        )*
        const TESTS: &[Test] = &[$(Test { name: concat!("ipvs_", stringify!($name)), run: $name }),*];
    };
}

matrix![
    cluster_ip,
    no_endpoints,
    node_port,
    external_and_load_balancer,
    external_traffic_policy,
    internal_traffic_policy,
    session_affinity,
    terminating_endpoints,
    load_distribution,
    three_endpoints,
    churn,
    restart,
    dual_stack,
    host_network_backend,
    broken_rule_is_detected,
    conntrack_udp_endpoint_removed,
    conntrack_udp_zero_to_one,
    show_reads_the_kernel,
];

fn mode_switch_iptables(_: &Netns) {
    scenarios::mode_switch(MODE, "iptables");
}

fn mode_switch_nftables(_: &Netns) {
    scenarios::mode_switch("nftables", MODE);
}

const SWITCHES: &[Test] = &[
    Test {
        name: "ipvs_mode_switch_iptables",
        run: mode_switch_iptables,
    },
    Test {
        name: "ipvs_mode_switch_nftables",
        run: mode_switch_nftables,
    },
];

/// br_netfilter as on the host (and on any node running IPVS mode): replies of a
/// pod to a pod on the same bridge must pass through IPVS to be un-NATed.
const ALL: [Test; TESTS.len() + SWITCHES.len()] = {
    let mut all = [TESTS[0]; TESTS.len() + SWITCHES.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = if i < TESTS.len() {
            TESTS[i]
        } else {
            SWITCHES[i - TESTS.len()]
        };
        i += 1;
    }
    all
};

fn main() -> ExitCode {
    kpr_netns_lab::vm::run(&Suite {
        feature: "IPVS",
        modules: &["ip_vs", "ip_vs_rr", "dummy", "xt_ipvs", "br_netfilter"],
        probe: "/proc/net/ip_vs",
        test_timeout: Duration::from_secs(600),
        tests: &ALL,
    })
}
