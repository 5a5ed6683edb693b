//! The data planes as the sync loop sees them: bring the kernel to a [`ProxyState`],
//! render it for `--dry-run`, remove everything on `--cleanup`.

use kpr_iptables::RenderConfig;
use kpr_iptables::apply::{ApplyError, Iptables};
use kpr_iptables::proxier::{FamilyProxier, SyncReport};
use kpr_model::{IpFamily, ProxyState};

/// Result of syncing one family.
#[derive(Debug)]
pub struct FamilySync {
    /// The family.
    pub family: IpFamily,
    /// What happened.
    pub outcome: Result<SyncReport, ApplyError>,
}

/// The iptables data plane, one proxier per family.
#[derive(Debug)]
pub struct IptablesDataPlane {
    families: Vec<FamilyProxier>,
}

impl IptablesDataPlane {
    /// A data plane over the given per-family tools and render settings.
    pub fn new(families: Vec<(Iptables, RenderConfig)>) -> Self {
        Self {
            families: families
                .into_iter()
                .map(|(ipt, cfg)| FamilyProxier::new(ipt, cfg))
                .collect(),
        }
    }

    /// Syncs every family; a failure in one does not stop the other.
    pub fn sync(&mut self, state: &ProxyState, full: bool) -> Vec<FamilySync> {
        self.families
            .iter_mut()
            .map(|p| {
                let family = p.config().family;
                FamilySync {
                    family,
                    outcome: p.sync(state.family(family), full),
                }
            })
            .collect()
    }

    /// True if every family's canary chains are still in place.
    pub fn canaries_present(&self) -> bool {
        self.families
            .iter()
            .all(|p| p.iptables().canaries_present())
    }

    /// Replaces the render settings of a family (e.g. node IP changed) and forces its
    /// next sync to be full.
    pub fn reconfigure(&mut self, config: RenderConfig) {
        for p in &mut self.families {
            if p.config().family == config.family && *p.config() != config {
                let ipt = p.iptables().clone();
                *p = FamilyProxier::new(ipt, config.clone());
            }
        }
    }
}

/// The `--dry-run` output of iptables mode: the IPv4 restore input, then the IPv6 one,
/// each headed by a `#` comment line naming the family.
pub fn render_iptables_dry_run(state: &ProxyState, configs: &[RenderConfig]) -> String {
    let mut out = String::new();
    for config in configs {
        let rendered = kpr_iptables::render(
            state.family(config.family),
            config,
            kpr_iptables::SyncMode::Full,
            None,
        );
        out.push_str(&format!(
            "# {} (iptables-restore input for {})\n",
            config.family.as_kubernetes(),
            match config.family {
                IpFamily::V4 => "iptables",
                IpFamily::V6 => "ip6tables",
            }
        ));
        out.push_str(&rendered.text);
    }
    out
}
