//! IPVS mode: one [`FamilyProxier`] per family, each with its own IPVS netlink
//! handle, `kube-ipvs0` handle, ipsets and iptables chains.

use kpr_ipvs::{FamilyProxier, PlanConfig};
use kpr_model::{FamilyState, IpFamily, ProxyState};

use super::{FamilyProxy, PerFamily, SyncSummary};

/// The IPVS data plane (built with [`PerFamily::from_proxiers`]).
pub type IpvsDataPlane = PerFamily<FamilyProxier>;

impl FamilyProxy for FamilyProxier {
    const MODE: &'static str = "ipvs";
    type Config = PlanConfig;

    fn family(&self) -> IpFamily {
        self.config().family
    }

    fn config_family(config: &PlanConfig) -> IpFamily {
        config.family
    }

    fn reconfigure(&mut self, config: PlanConfig) {
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
                    ("services_replanned", r.services_replanned as u64),
                    ("ipvs_operations", r.operations as u64),
                    ("real_servers_draining", r.draining as u64),
                ],
            })
            .map_err(|e| e.to_string())
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
