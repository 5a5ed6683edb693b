//! IPVS for kube-proxy-rs: virtual servers (services) and real servers
//! (destinations) of the kernel's IP Virtual Server over generic netlink.
//!
//! Why our own layer: no maintained crate does the job (see `shared/CRATES.md`,
//! "IPVS generic netlink"). nlrs handles only TCP/UDP service and destination
//! CRUD, without `SET_SERVICE` or parsed flags, on its own netlink stack;
//! netlink-packet-ipvs and ipvs are unmaintained placeholders. This crate builds
//! on the workspace's netlink crates (netlink-packet-core, netlink-packet-generic,
//! netlink-sys) as the conntrack crate does.
//!
//! Supported:
//! - services addressed by protocol (TCP, UDP, SCTP), address (IPv4 or IPv6) and
//!   port: add, update (scheduler, flags, persistence timeout and netmask),
//!   delete, dump; any scheduler the kernel has (`rr`, `wrr`, `lc`, `wlc`,
//!   `lblc`, `lblcr`, `dh`, `sh`, `sed`, `nq`, `mh`, ...) with its flags;
//! - real servers with masquerade (NAT) forwarding, as kube-proxy uses: add,
//!   update (weight, thresholds), delete, dump with connection counters (dumps
//!   decode the other forwarding methods too);
//! - flush, and the TCP / TCP-FIN / UDP connection timeouts;
//! - batches of changes, many requests per `sendmsg`, every ACK read and each
//!   failure reported with the operation it belongs to ([`Ipvs::apply`]).
//!
//! Not supported: firewall-mark services (never created; dumps leave them out),
//! tunnel and direct-routing real servers, persistence engines, the sync daemon
//! and traffic statistics.
//!
//! ```no_run
//! use kpr_ipvs::{Ipvs, Protocol, RealServer, VirtualServer};
//!
//! // The IPVS table of this thread's network namespace.
//! let mut ipvs = Ipvs::new()?;
//! let vs = VirtualServer::new("10.96.0.1".parse()?, Protocol::Tcp, 80, "rr");
//! ipvs.add_service(&vs)?;
//! ipvs.add_real_server(&vs, &RealServer::new("10.244.1.5".parse()?, 8080, 1))?;
//! for (server, stats) in ipvs.real_servers(&vs)? {
//!     println!("{} weight {} active {}", server.socket_addr(), server.weight, stats.active_conns);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layout: [`types`] holds the plain values, [`message`] builds and parses the
//! netlink messages without I/O (unit-tested against bytes derived from
//! `linux/ip_vs.h` and checked against ipvsadm's), [`netlink`] owns the socket.
//! Real-kernel tests (`tests/kernel.rs`) run in a QEMU VM when the host kernel
//! has no ip_vs (`kpr_netns_lab::vm`).
//!
//! Architecture invariants: only [`netlink`] does I/O, always in the network
//! namespace of the thread that opened the handle; nothing the kernel sends can
//! make this crate panic: a malformed answer is an [`IpvsError::Decode`].

#![forbid(unsafe_code)]

pub mod cleanup;
pub mod desired;
pub mod device;
pub mod error;
pub mod ipset;
pub mod links;
pub mod message;
pub mod netlink;
pub mod plan;
pub mod proxier;
pub mod rules;
pub mod sets;
pub mod table;
pub mod types;
pub mod view;

#[cfg(test)]
mod test_objects;

/// The sysctls IPVS mode sets at start in every case, as `/proc/sys` paths and
/// values (upstream's `proxier.go`): conntrack for IPVS (the masquerade rules and
/// replies bridged back to a pod on the same node need it), and expiring the
/// connections and persistence templates of removed or zero-weight real servers.
/// `conn_reuse_mode` (kernel-dependent), `ip_forward` and strict ARP are left to
/// the caller.
pub const SYSCTLS: [(&str, &str); 3] = [
    ("net/ipv4/vs/conntrack", "1"),
    ("net/ipv4/vs/expire_nodest_conn", "1"),
    ("net/ipv4/vs/expire_quiescent_template", "1"),
];

pub use error::{Command, IpvsError, Target};
pub use links::{LinkError, Links};
pub use netlink::{BatchReport, Ipvs};
pub use plan::{Plan, PlanConfig, PlannedService, plan};
pub use proxier::{FakeInterfaces, FamilyProxier, Interfaces, SyncError, SyncReport};
pub use table::{FakeTable, IpvsTable};
pub use types::{
    ForwardMethod, Operation, Protocol, RealServer, RealServerStats, ServiceFlags, ServiceKey,
    Timeouts, VirtualServer, full_netmask,
};
