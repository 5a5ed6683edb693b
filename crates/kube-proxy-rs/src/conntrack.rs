//! Conntrack on the node as the proxy uses it: sysctls at start-up, and after each
//! sync a reconcile of UDP/SCTP flows against what was just programmed.

use std::collections::HashMap;

use kpr_config::ConntrackSettings;
use kpr_conntrack::{CleanupReport, Conntrack, cleanup};
use kpr_conntrack::{HostFiles, SysctlAction, TableUsage, apply_sysctls};
use kpr_model::{FamilyState, IpFamily, ProxyState};
use tracing::{info, warn};

/// Applies the `conntrack.*` configuration to the kernel, logging each setting;
/// read-only files (a container without a writable `/proc/sys`) are skipped with a
/// message, never fatal (upstream fails on some of them; we say which and go on).
pub fn apply_settings(settings: &ConntrackSettings) {
    let report = apply_sysctls(settings, &HostFiles::real());
    for o in &report.outcomes {
        match &o.action {
            SysctlAction::Skipped { .. } | SysctlAction::Failed { .. } => {
                warn!(setting = %o, "conntrack sysctl not applied; continuing")
            }
            _ => info!(setting = %o, cpus = report.cpus, "conntrack sysctl"),
        }
    }
}

/// Deletes stale UDP/SCTP flows after syncs (see [`kpr_conntrack::stale`]).
#[derive(Debug)]
pub struct Reconciler {
    table: Option<Conntrack>,
    previous: HashMap<IpFamily, FamilyState>,
    warned_full: bool,
}

impl Reconciler {
    /// Opens the conntrack netlink socket of the current network namespace; without
    /// one (no `nf_conntrack`) cleanup is off, with a warning.
    pub fn open() -> Self {
        let table = match Conntrack::new() {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "cannot open the conntrack netlink socket; stale UDP flows will not be cleared");
                None
            }
        };
        Self {
            table,
            previous: HashMap::new(),
            warned_full: false,
        }
    }

    /// Reconciles `family` after its rules for `state` are in place. Returns the
    /// report, or `None` when cleanup is off or failed (failures are logged; the
    /// next sync tries again against the same previous state).
    pub fn after_sync(&mut self, state: &ProxyState, family: IpFamily) -> Option<CleanupReport> {
        let table = self.table.as_mut()?;
        let current = state.family(family);
        match cleanup(
            table,
            self.previous.get(&family),
            current,
            &state.node.addresses,
        ) {
            Ok(report) => {
                if report.deleted > 0 || report.interrupted {
                    info!(
                        family = %family,
                        dumped = report.dumped,
                        deleted = report.deleted,
                        interrupted = report.interrupted,
                        elapsed_ms = report.elapsed().as_millis() as u64,
                        "stale conntrack flows deleted"
                    );
                }
                self.previous.insert(family, current.clone());
                Some(report)
            }
            Err(e) => {
                warn!(family = %family, error = %e, "conntrack cleanup failed; retrying after the next sync");
                None
            }
        }
    }

    /// Reads the table usage and warns once each time it passes 90 %.
    pub fn usage(&mut self) -> Option<TableUsage> {
        let usage = kpr_conntrack::usage().ok()?;
        if usage.is_nearly_full() {
            if !self.warned_full {
                warn!(
                    entries = usage.count,
                    max = usage.max,
                    "conntrack table more than 90% full: new connections will be dropped (\"nf_conntrack: table full\"); raise conntrack.maxPerCore or conntrack.min"
                );
                self.warned_full = true;
            }
        } else {
            self.warned_full = false;
        }
        Some(usage)
    }
}
