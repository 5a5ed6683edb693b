//! nftables mode: one [`FamilyProxier`] per family, each owning its family's
//! `kube-proxy` table.

use kpr_model::{FamilyState, IpFamily, ProxyState};
use kpr_nftables::nft::Nft;
use kpr_nftables::{FamilyProxier, RenderConfig, render_ruleset};

use super::{FamilyProxy, NftablesConfigs, PerFamily, SyncSummary};

/// The nftables data plane.
pub type NftablesDataPlane = PerFamily<FamilyProxier>;

impl NftablesDataPlane {
    /// A data plane over the given per-family nft handles; `configs` gives the
    /// settings.
    pub fn new(tools: Vec<Nft>, initial: &ProxyState, configs: NftablesConfigs) -> Self {
        Self::from_tools(
            tools,
            |nft: &Nft| nft.family().0,
            FamilyProxier::new,
            initial,
            configs,
        )
    }
}

impl FamilyProxy for FamilyProxier {
    const MODE: &'static str = "nftables";
    type Config = RenderConfig;

    fn family(&self) -> IpFamily {
        self.config().family
    }

    fn config_family(config: &RenderConfig) -> IpFamily {
        config.family
    }

    fn reconfigure(&mut self, config: RenderConfig) {
        self.set_config(config);
    }

    fn sync_family(&mut self, state: &FamilyState, full: bool) -> Result<SyncSummary, String> {
        self.sync(state, full)
            .map(|r| SyncSummary {
                full: r.full,
                skipped: r.skipped,
                services_changed: r.services_changed,
                bytes: r.bytes,
                counters: vec![
                    ("operations", r.operations as u64),
                    ("stale_chains_deleted", r.stale_deleted as u64),
                ],
            })
            .map_err(|e| e.to_string())
    }

    fn intact(&self) -> bool {
        // A failure to run nft is not "gone": the next sync reports it.
        self.nft().table_present().unwrap_or(true)
    }
}

/// The `--dry-run` output of nftables mode: one `nft -f` script creating both
/// families' tables, each part headed by a `#` comment line.
pub fn render_nftables_dry_run(state: &ProxyState, configs: &[RenderConfig]) -> String {
    let mut out = String::new();
    for config in configs {
        let ruleset = render_ruleset(state.family(config.family), config);
        out.push_str(&format!(
            "# {} (nft -f input for table {} kube-proxy)\n",
            config.family.as_kubernetes(),
            kpr_nftables::objects::Family(config.family).word()
        ));
        out.push_str(&ruleset.creation_script());
    }
    out
}
