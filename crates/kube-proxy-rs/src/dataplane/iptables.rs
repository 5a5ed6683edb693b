//! iptables mode: one [`FamilyProxier`] per family.

use kpr_iptables::RenderConfig;
use kpr_iptables::apply::Iptables;
use kpr_iptables::proxier::FamilyProxier;
use kpr_model::{FamilyState, IpFamily, ProxyState};

use super::{FamilyProxy, IptablesConfigs, PerFamily, SyncSummary};

/// The iptables data plane.
pub type IptablesDataPlane = PerFamily<FamilyProxier>;

impl IptablesDataPlane {
    /// A data plane over the given per-family tools; `configs` gives the settings.
    pub fn new(tools: Vec<Iptables>, initial: &ProxyState, configs: IptablesConfigs) -> Self {
        Self::from_tools(
            tools,
            Iptables::family,
            FamilyProxier::new,
            initial,
            configs,
        )
    }
}

impl FamilyProxy for FamilyProxier {
    const MODE: &'static str = "iptables";
    type Config = RenderConfig;

    fn family(&self) -> IpFamily {
        self.config().family
    }

    fn config_family(config: &RenderConfig) -> IpFamily {
        config.family
    }

    /// New settings start a new proxier: nothing it remembers holds for them.
    fn reconfigure(&mut self, config: RenderConfig) {
        if *self.config() != config {
            let ipt = self.iptables().clone();
            *self = FamilyProxier::new(ipt, config);
        }
    }

    fn sync_family(&mut self, state: &FamilyState, full: bool) -> Result<SyncSummary, String> {
        self.sync(state, full)
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
            .map_err(|e| e.to_string())
    }

    fn intact(&self) -> bool {
        self.iptables().canaries_present()
    }
}

/// Writes the `--dry-run` output of iptables mode to `out`: the IPv4 restore input,
/// then the IPv6 one, each headed by a `#` comment line naming the family.
pub fn render_iptables_dry_run(
    state: &ProxyState,
    configs: &[RenderConfig],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    for config in configs {
        writeln!(
            out,
            "# {} (iptables-restore input for {})",
            config.family.as_kubernetes(),
            match config.family {
                IpFamily::V4 => "iptables",
                IpFamily::V6 => "ip6tables",
            }
        )?;
        kpr_iptables::render::render_to(
            state.family(config.family),
            config,
            kpr_iptables::SyncMode::Full,
            None,
            out,
        )?;
    }
    Ok(())
}
