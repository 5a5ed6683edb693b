//! The iptables data plane of kube-proxy-rs.
//!
//! [`render`] is a pure function from a family's model state to `iptables-restore`
//! input laid out exactly as upstream kube-proxy's iptables mode; the apply side runs
//! `iptables-restore`/`ip6tables-restore` and is the only code here touching the kernel.

pub mod buffer;
pub mod config;
pub mod names;
pub mod render;

pub use config::{LocalDetector, NfacctCounters, NodePortAddresses, RenderConfig};
pub use render::{RenderStats, Rendered, SyncMode, render};
pub mod apply;
pub mod dump;
/// Running the tools (re-exported from `kpr-exec`).
pub use kpr_exec as exec;
pub mod fake;
pub mod nfacct;
pub mod proxier;
pub mod trace;
pub mod view;
