//! The data planes as the sync loop sees them: bring the kernel to a [`ProxyState`]
//! and say whether our objects are still there. One implementation per proxy mode;
//! each recomputes its render settings from the state (node IPs, ServiceCIDRs) before
//! every sync, and a change of settings makes that family's sync full.

mod iptables;
mod ipvs;
mod nftables;

pub use iptables::{IptablesDataPlane, render_iptables_dry_run};
pub use ipvs::{IpvsDataPlane, render_ipvs_dry_run};
pub use nftables::{NftablesDataPlane, render_nftables_dry_run};

use kpr_model::{IpFamily, ProxyState};

/// What one family's sync did, in mode-neutral terms.
#[derive(Clone, Debug, Default)]
pub struct SyncSummary {
    /// A full sync was done.
    pub full: bool,
    /// Nothing changed and nothing was written.
    pub skipped: bool,
    /// Services re-rendered.
    pub services_changed: usize,
    /// Bytes of input handed to the kernel tool.
    pub bytes: usize,
    /// Mode-specific counters for the log line (`nat_rules`, `operations`, ...).
    pub counters: Vec<(&'static str, u64)>,
}

/// Result of syncing one family.
#[derive(Debug)]
pub struct FamilySync {
    /// The family.
    pub family: IpFamily,
    /// What happened, or why it failed.
    pub outcome: Result<SyncSummary, String>,
}

/// A proxy mode's kernel side.
pub trait DataPlane: Send {
    /// The mode's name (`iptables`, `nftables`, `ipvs`).
    fn mode(&self) -> &'static str;
    /// Syncs every family; a failure in one does not stop the others.
    fn sync(&mut self, state: &ProxyState, full: bool) -> Vec<FamilySync>;
    /// False if our kernel objects vanished behind our back (someone flushed the
    /// rules): the loop then asks for a full sync.
    fn intact(&self) -> bool;
}
