//! iptables mode: one [`FamilyProxier`] per family.

use kpr_iptables::RenderConfig;
use kpr_iptables::apply::Iptables;
use kpr_iptables::proxier::FamilyProxier;
use kpr_model::{IpFamily, ProxyState};

use super::{DataPlane, FamilySync, SyncSummary};

/// Computes each family's iptables render settings from the state.
pub type IptablesConfigs = Box<dyn Fn(&ProxyState) -> Vec<RenderConfig> + Send>;

/// The iptables data plane.
pub struct IptablesDataPlane {
    families: Vec<FamilyProxier>,
    configs: IptablesConfigs,
}

impl std::fmt::Debug for IptablesDataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IptablesDataPlane")
            .field("families", &self.families)
            .finish()
    }
}

impl IptablesDataPlane {
    /// A data plane over the given per-family tools; `configs` gives the settings.
    pub fn new(tools: Vec<Iptables>, initial: &ProxyState, configs: IptablesConfigs) -> Self {
        let settings = configs(initial);
        let families = tools
            .into_iter()
            .filter_map(|ipt| {
                let family = ipt.family();
                let cfg = settings.iter().find(|c| c.family == family)?.clone();
                Some(FamilyProxier::new(ipt, cfg))
            })
            .collect();
        Self { families, configs }
    }

    fn reconfigure(&mut self, state: &ProxyState) {
        for config in (self.configs)(state) {
            for p in &mut self.families {
                if p.config().family == config.family && *p.config() != config {
                    let ipt = p.iptables().clone();
                    *p = FamilyProxier::new(ipt, config.clone());
                }
            }
        }
    }
}

impl DataPlane for IptablesDataPlane {
    fn mode(&self) -> &'static str {
        "iptables"
    }

    fn sync(&mut self, state: &ProxyState, full: bool) -> Vec<FamilySync> {
        self.reconfigure(state);
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
                            ("service_ports", r.stats.service_ports as u64),
                            ("endpoints", r.stats.endpoints as u64),
                            ("nat_rules", r.stats.nat_rules_total as u64),
                            ("nat_rules_written", r.stats.nat_rules_written as u64),
                            ("filter_rules", r.stats.filter_rules as u64),
                        ],
                    })
                    .map_err(|e| e.to_string());
                FamilySync { family, outcome }
            })
            .collect()
    }

    fn intact(&self) -> bool {
        self.families
            .iter()
            .all(|p| p.iptables().canaries_present())
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
