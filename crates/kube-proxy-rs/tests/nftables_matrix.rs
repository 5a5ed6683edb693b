//! The Service scenario matrix against the nftables data plane, with real packets
//! between network namespaces and the real binary on each node. Needs root.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::scenarios;

const MODE: &str = "nftables";

/// ClusterIP over TCP and UDP from pods, nodes and across nodes; hairpin.
#[test]
fn nftables_cluster_ip() {
    scenarios::cluster_ip(MODE);
}

/// A Service without endpoints is refused at once.
#[test]
fn nftables_no_endpoints() {
    scenarios::no_endpoints(MODE);
}

/// NodePort on each node IP, TCP and UDP; nodePortAddresses limits the addresses.
#[test]
fn nftables_node_port() {
    scenarios::node_port(MODE);
}

/// externalIPs, LoadBalancer IP, loadBalancerSourceRanges.
#[test]
fn nftables_external_and_load_balancer() {
    scenarios::external_and_load_balancer(MODE);
}

/// externalTrafficPolicy Local keeps the client IP and uses local endpoints only.
#[test]
fn nftables_external_traffic_policy() {
    scenarios::external_traffic_policy(MODE);
}

/// internalTrafficPolicy Local.
#[test]
fn nftables_internal_traffic_policy() {
    scenarios::internal_traffic_policy(MODE);
}

/// ClientIP session affinity sticks, then expires.
#[test]
fn nftables_session_affinity() {
    scenarios::session_affinity(MODE);
}

/// Terminating endpoints only as a fallback.
#[test]
fn nftables_terminating_endpoints() {
    scenarios::terminating_endpoints(MODE);
}

/// Load spreads evenly over endpoints.
#[test]
fn nftables_load_distribution() {
    scenarios::load_distribution(MODE);
}

/// Endpoints added and removed under load.
#[test]
fn nftables_churn() {
    scenarios::churn(MODE);
}

/// Proxy restart under load.
#[test]
fn nftables_restart() {
    scenarios::restart(MODE);
}

/// IPv6 ClusterIP and NodePort of a dual-stack Service.
#[test]
fn nftables_dual_stack() {
    scenarios::dual_stack(MODE);
}

/// The matrix can fail: a deliberately broken rule breaks its scenario.
#[test]
fn nftables_broken_rule_is_detected() {
    scenarios::broken_rule_is_detected(MODE);
}

/// 300 connections over 3 endpoints, each at least 20% (issue 2's acceptance check).
#[test]
fn nftables_three_endpoints() {
    scenarios::three_endpoints(MODE);
}

/// Host-network endpoints behind a ClusterIP.
#[test]
fn nftables_host_network_backend() {
    scenarios::host_network_backend(MODE);
}

/// iptables → nftables → iptables on one node: leftovers removed each time.
#[test]
fn nftables_mode_switch() {
    scenarios::mode_switch("iptables", MODE);
}

/// Conntrack: a UDP flow pinned to a removed endpoint moves on after one sync
/// (ClusterIP and NodePort).
#[test]
fn nftables_conntrack_udp_endpoint_removed() {
    scenarios::conntrack_udp_endpoint_removed(MODE);
}

/// Conntrack: a UDP Service going from 0 to 1 endpoints answers the same flow at once.
#[test]
fn nftables_conntrack_udp_zero_to_one() {
    scenarios::conntrack_udp_zero_to_one(MODE);
}

/// `show` reads frontends, backends and connection counts from the kernel.
#[test]
fn nftables_show_reads_the_kernel() {
    scenarios::show_reads_the_kernel(MODE);
}
