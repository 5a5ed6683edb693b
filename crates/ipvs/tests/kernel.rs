//! Real-kernel tests of kpr-ipvs. The host kernel has no ip_vs, so `cargo test`
//! re-runs this binary in a QEMU VM with Debian's stock kernel (see
//! `kpr_netns_lab::vm`); each test runs in a fresh network namespace there, whose
//! IPVS table starts empty. Run one with `cargo test -p kpr-ipvs --test kernel --
//! NAME`.

#![allow(clippy::unwrap_used)]
#![allow(missing_docs)]

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use kpr_ipvs::{Ipvs, VirtualServer};
use kpr_netns_lab::vm::{Suite, Test};

#[path = "kernel/real_servers.rs"]
mod real_servers;
#[path = "kernel/schedulers.rs"]
mod schedulers;
#[path = "kernel/services.rs"]
mod services;
#[path = "kernel/traffic.rs"]
mod traffic;

/// ip_vs, and every scheduler the tests create.
const MODULES: &[&str] = &[
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_lblc",
    "ip_vs_lblcr",
    "ip_vs_dh",
    "ip_vs_sh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_mh",
];

macro_rules! tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        &[$(Test { name: stringify!($name), run: $module::$name }),*]
    };
}

const TESTS: &[Test] = tests![
    services::services_of_every_protocol_and_family,
    services::every_scheduler,
    services::scheduler_flags_round_trip,
    services::persistence_round_trip,
    services::duplicate_service_is_exists,
    services::missing_service_is_not_found,
    services::unknown_scheduler,
    services::flush_removes_everything,
    services::timeouts_set_and_get,
    services::many_services,
    real_servers::real_servers_add_update_delete,
    real_servers::batch_reports_each_failure,
    real_servers::ipvsadm_agrees,
    real_servers::dropped_acks_are_reported,
    traffic::nat_traffic_reaches_the_real_server,
    schedulers::scheduler_rr_takes_turns,
    schedulers::scheduler_wrr_follows_weights,
    schedulers::scheduler_least_connections_prefer_idle,
    schedulers::scheduler_hashing_sticks,
];

fn main() -> ExitCode {
    kpr_netns_lab::vm::run(&Suite {
        feature: "IPVS",
        modules: MODULES,
        probe: "/proc/net/ip_vs",
        test_timeout: Duration::from_secs(300),
        tests: TESTS,
    })
}

/// A handle on the IPVS table of the current namespace.
pub fn ipvs() -> Ipvs {
    Ipvs::new().expect("IPVS handle")
}

/// Parses an address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The services, sorted by key.
pub fn services(ipvs: &mut Ipvs) -> Vec<VirtualServer> {
    let mut all = ipvs.services().unwrap();
    all.sort_by_key(VirtualServer::key);
    all
}
