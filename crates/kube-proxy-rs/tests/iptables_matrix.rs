//! The Service scenario matrix against the iptables data plane, with real packets
//! between network namespaces and the real binary on each node. Needs root.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::scenarios;

const MODE: &str = "iptables";

/// ClusterIP over TCP and UDP from pods, nodes and across nodes; hairpin.
#[test]
fn iptables_cluster_ip() {
    scenarios::cluster_ip(MODE);
}

/// A Service without endpoints is refused at once.
#[test]
fn iptables_no_endpoints() {
    scenarios::no_endpoints(MODE);
}

/// NodePort on each node IP, TCP and UDP; nodePortAddresses limits the addresses.
#[test]
fn iptables_node_port() {
    scenarios::node_port(MODE);
}

/// externalIPs, LoadBalancer IP, loadBalancerSourceRanges.
#[test]
fn iptables_external_and_load_balancer() {
    scenarios::external_and_load_balancer(MODE);
}

/// externalTrafficPolicy Local keeps the client IP and uses local endpoints only.
#[test]
fn iptables_external_traffic_policy() {
    scenarios::external_traffic_policy(MODE);
}

/// internalTrafficPolicy Local.
#[test]
fn iptables_internal_traffic_policy() {
    scenarios::internal_traffic_policy(MODE);
}

/// ClientIP session affinity sticks, then expires.
#[test]
fn iptables_session_affinity() {
    scenarios::session_affinity(MODE);
}

/// Terminating endpoints only as a fallback.
#[test]
fn iptables_terminating_endpoints() {
    scenarios::terminating_endpoints(MODE);
}

/// Load spreads evenly over endpoints.
#[test]
fn iptables_load_distribution() {
    scenarios::load_distribution(MODE);
}

/// Endpoints added and removed under load.
#[test]
fn iptables_churn() {
    scenarios::churn(MODE);
}

/// Proxy restart under load.
#[test]
fn iptables_restart() {
    scenarios::restart(MODE);
}

/// IPv6 ClusterIP and NodePort of a dual-stack Service.
#[test]
fn iptables_dual_stack() {
    scenarios::dual_stack(MODE);
}

/// The matrix can fail: a deliberately broken rule breaks its scenario.
#[test]
fn iptables_broken_rule_is_detected() {
    scenarios::broken_rule_is_detected(MODE);
}

/// 300 connections over 3 endpoints, each at least 20% (issue 2's acceptance check).
#[test]
fn iptables_three_endpoints() {
    scenarios::three_endpoints(MODE);
}

/// Host-network endpoints behind a ClusterIP.
#[test]
fn iptables_host_network_backend() {
    scenarios::host_network_backend(MODE);
}

/// Conntrack: a UDP flow pinned to a removed endpoint moves on after one sync
/// (ClusterIP and NodePort).
#[test]
fn iptables_conntrack_udp_endpoint_removed() {
    scenarios::conntrack_udp_endpoint_removed(MODE);
}

/// Conntrack: a UDP Service going from 0 to 1 endpoints answers the same flow at once.
#[test]
fn iptables_conntrack_udp_zero_to_one() {
    scenarios::conntrack_udp_zero_to_one(MODE);
}

/// `show` reads frontends, backends and connection counts from the kernel.
#[test]
fn iptables_show_reads_the_kernel() {
    scenarios::show_reads_the_kernel(MODE);
}
