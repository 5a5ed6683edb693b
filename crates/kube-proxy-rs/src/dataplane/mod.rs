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

/// Computes each family's iptables render settings from the state.
pub type IptablesConfigs = Configs<kpr_iptables::RenderConfig>;
/// Computes each family's nftables render settings from the state.
pub type NftablesConfigs = Configs<kpr_nftables::RenderConfig>;
/// Computes each family's IPVS plan settings from the state.
pub type IpvsConfigs = Configs<kpr_ipvs::PlanConfig>;

use kpr_model::{FamilyState, IpFamily, ProxyState};

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

/// One family's proxier of a mode, as [`PerFamily`] drives it.
pub trait FamilyProxy: Send + std::fmt::Debug {
    /// The mode's name (`iptables`, `nftables`, `ipvs`).
    const MODE: &'static str;
    /// The mode's per-family settings.
    type Config;
    /// The family it programs.
    fn family(&self) -> IpFamily;
    /// The family `config` is for.
    fn config_family(config: &Self::Config) -> IpFamily;
    /// Takes `config` as its settings (a change makes the next sync full).
    fn reconfigure(&mut self, config: Self::Config);
    /// Brings the kernel to `state`.
    fn sync_family(&mut self, state: &FamilyState, full: bool) -> Result<SyncSummary, String>;
    /// False if its kernel objects vanished behind our back.
    fn intact(&self) -> bool;
}

/// Computes each family's settings from the state (node IPs, ServiceCIDRs).
pub type Configs<C> = Box<dyn Fn(&ProxyState) -> Vec<C> + Send>;

/// A mode's data plane: one proxier per family, reconfigured before every sync.
pub struct PerFamily<P: FamilyProxy> {
    families: Vec<P>,
    configs: Configs<P::Config>,
}

impl<P: FamilyProxy> std::fmt::Debug for PerFamily<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerFamily")
            .field("mode", &P::MODE)
            .field("families", &self.families)
            .finish()
    }
}

impl<P: FamilyProxy> PerFamily<P> {
    /// A data plane over per-family proxiers; `configs` recomputes their settings.
    pub fn from_proxiers(families: Vec<P>, configs: Configs<P::Config>) -> Self {
        Self { families, configs }
    }
}

impl<P: FamilyProxy> PerFamily<P>
where
    P::Config: Clone,
{
    /// One proxier per kernel handle that the initial settings cover: `build` makes
    /// it from the handle and its family's settings (`family_of` names a handle's
    /// family).
    pub fn from_tools<T>(
        tools: Vec<T>,
        family_of: impl Fn(&T) -> IpFamily,
        build: impl Fn(T, P::Config) -> P,
        initial: &ProxyState,
        configs: Configs<P::Config>,
    ) -> Self {
        let settings = configs(initial);
        let families = tools
            .into_iter()
            .filter_map(|tool| {
                let family = family_of(&tool);
                let config = settings
                    .iter()
                    .find(|c| P::config_family(c) == family)?
                    .clone();
                Some(build(tool, config))
            })
            .collect();
        Self::from_proxiers(families, configs)
    }
}

impl<P: FamilyProxy> DataPlane for PerFamily<P> {
    fn mode(&self) -> &'static str {
        P::MODE
    }

    fn sync(&mut self, state: &ProxyState, full: bool) -> Vec<FamilySync> {
        for config in (self.configs)(state) {
            let family = P::config_family(&config);
            if let Some(p) = self.families.iter_mut().find(|p| p.family() == family) {
                p.reconfigure(config);
            }
        }
        self.families
            .iter_mut()
            .map(|p| {
                let family = p.family();
                let outcome = p.sync_family(state.family(family), full);
                FamilySync { family, outcome }
            })
            .collect()
    }

    fn intact(&self) -> bool {
        self.families.iter().all(FamilyProxy::intact)
    }
}
