//! nftables mode: one [`FamilyProxier`] per family, each owning its family's
//! `kube-proxy` table.

use kpr_model::ProxyState;
use kpr_nftables::nft::Nft;
use kpr_nftables::{FamilyProxier, RenderConfig, render_ruleset};

use super::{DataPlane, FamilySync, SyncSummary};

/// Computes each family's nftables render settings from the state.
pub type NftablesConfigs = Box<dyn Fn(&ProxyState) -> Vec<RenderConfig> + Send>;

/// The nftables data plane.
pub struct NftablesDataPlane {
    families: Vec<FamilyProxier>,
    configs: NftablesConfigs,
}

impl std::fmt::Debug for NftablesDataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftablesDataPlane")
            .field("families", &self.families)
            .finish()
    }
}

impl NftablesDataPlane {
    /// A data plane over the given per-family nft handles; `configs` gives the
    /// settings.
    pub fn new(tools: Vec<Nft>, initial: &ProxyState, configs: NftablesConfigs) -> Self {
        let settings = configs(initial);
        let families = tools
            .into_iter()
            .filter_map(|nft| {
                let family = nft.family().0;
                let cfg = settings.iter().find(|c| c.family == family)?.clone();
                Some(FamilyProxier::new(nft, cfg))
            })
            .collect();
        Self { families, configs }
    }
}

impl DataPlane for NftablesDataPlane {
    fn mode(&self) -> &'static str {
        "nftables"
    }

    fn sync(&mut self, state: &ProxyState, full: bool) -> Vec<FamilySync> {
        for config in (self.configs)(state) {
            for p in &mut self.families {
                if p.config().family == config.family {
                    p.set_config(config.clone());
                }
            }
        }
        self.families
            .iter_mut()
            .map(|p| {
                let family = p.config().family;
                let outcome = p
                    .sync(state.family(family), full)
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
                    .map_err(|e| e.to_string());
                FamilySync { family, outcome }
            })
            .collect()
    }

    fn intact(&self) -> bool {
        // A failure to run nft is not "gone": the next sync reports it.
        self.families
            .iter()
            .all(|p| p.nft().table_present().unwrap_or(true))
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
