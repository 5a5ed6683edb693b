//! The nftables data plane of kube-proxy-rs.
//!
//! [`render`] turns model state into typed objects laid out exactly as upstream
//! kube-proxy's nftables mode (v1.35), a fragment per Service port; [`ruleset`] assembles
//! and prints them; the applier sends only what changed.

pub mod listing;
pub mod names;
pub mod netlink;
pub mod nft;
pub mod objects;
pub mod proxier;
pub mod render;
pub mod ruleset;
pub mod sync;
pub mod trace;
pub mod transaction;
pub mod view;

pub use proxier::{FamilyProxier, SyncReport, probe, render_ruleset, render_service};
pub use render::{Fragment, RenderConfig, base, service_port};
pub use ruleset::{Ruleset, sort_like_upstream};
pub use transaction::Transaction;
