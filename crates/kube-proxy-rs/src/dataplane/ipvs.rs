//! IPVS mode: one [`FamilyProxier`] per family, each with its own IPVS netlink
//! handle, `kube-ipvs0` handle, ipsets and iptables chains.

use kpr_ipvs::{FamilyProxier, PlanConfig};
use kpr_model::{IpFamily, ProxyState};

use super::{DataPlane, FamilySync, SyncSummary};

/// Computes each family's plan settings from the state (node addresses change).
pub type IpvsConfigs = Box<dyn Fn(&ProxyState) -> Vec<PlanConfig> + Send>;

/// The IPVS data plane.
pub struct IpvsDataPlane {
    families: Vec<FamilyProxier>,
    configs: IpvsConfigs,
}

impl std::fmt::Debug for IpvsDataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsDataPlane")
            .field("families", &self.families)
            .finish()
    }
}

impl IpvsDataPlane {
    /// A data plane over per-family proxiers; `configs` recomputes their settings.
    pub fn new(families: Vec<FamilyProxier>, configs: IpvsConfigs) -> Self {
        Self { families, configs }
    }
}

impl DataPlane for IpvsDataPlane {
    fn mode(&self) -> &'static str {
        "ipvs"
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
                            ("ipvs_operations", r.operations as u64),
                            ("real_servers_draining", r.draining as u64),
                        ],
                    })
                    .map_err(|e| e.to_string());
                FamilySync { family, outcome }
            })
            .collect()
    }

    fn intact(&self) -> bool {
        // Every sync compares with the kernel where it matters, and full syncs
        // (every syncPeriod) read all of it back.
        true
    }
}

/// The `--dry-run` output of IPVS mode: per family, the virtual and real servers
/// (`ipvsadm -Sn` form), the ipsets (`ipset restore` form), the addresses of
/// `kube-ipvs0` and the iptables rules, each part headed by a `#` line.
pub fn render_ipvs_dry_run(state: &ProxyState, configs: &[PlanConfig]) -> String {
    let mut out = String::new();
    for config in configs {
        let family: IpFamily = config.family;
        out.push_str(&kpr_ipvs::plan(state.family(family), config).dry_run());
    }
    out
}
