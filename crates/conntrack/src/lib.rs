//! Conntrack for kube-proxy-rs: kernel tuning and stale-entry cleanup.
//!
//! - [`sysctl`]: the `conntrack.*` configuration applied to the kernel at start-up
//!   (`nf_conntrack_max`, `hashsize`, timeouts, `tcp_be_liberal`) through a small
//!   file trait; read-only or missing files are skipped with a message.
//! - [`netlink`]: the conntrack table of a network namespace over netfilter
//!   netlink (no `conntrack` tool): dump by family and protocol, batched deletes.
//! - [`stale`]: which UDP/SCTP entries are stale for a proxy state, decided
//!   without I/O (upstream's `CleanStaleEntries` plus the fixes listed there).
//! - [`cleanup()`]: dump, select and delete for one family, with counts and times.
//!
//! Benchmark (root; in a namespace of its own): `cargo run --release -p
//! kpr-conntrack --example kpr-conntrack-bench` fills a table with 100,000 UDP
//! entries, 1,000 of them stale, and times a cleanup against a dump alone.
//!
//! Architecture invariants: the selection reads only `kpr_model` state and dumped
//! entries (it never touches the kernel); only [`netlink`] and [`sysctl`] do I/O,
//! each in the calling thread's network namespace; the proxy never creates
//! entries ([`Conntrack::create`] exists for tests and benchmarks).

#![forbid(unsafe_code)]

pub mod cleanup;
pub mod entry;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod message;
pub mod netlink;
pub mod stale;
pub mod sysctl;

pub use cleanup::{CleanupReport, cleanup};
pub use entry::{Entry, TcpState, Tuple};
pub use error::ConntrackError;
pub use netlink::{Conntrack, ConntrackTable, Dump};
pub use stale::{StaleReason, classify_entries, stale_entries};
pub use sysctl::{
    HostFiles, KernelFile, KernelFiles, SysctlAction, SysctlOutcome, SysctlReport, TableUsage,
    apply_sysctls, usage,
};
