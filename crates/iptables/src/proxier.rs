//! The iptables data plane of one family across syncs: decides full or partial,
//! renders, applies, and remembers what the kernel holds.
//!
//! Partial syncs rewrite only the chains of Services that changed since the last
//! successful sync, and delete stale chains from our own record of what exists
//! instead of running `iptables-save` each time (upstream reads the kernel on every
//! sync of a small cluster). A full sync re-reads the kernel, re-ensures the jump
//! rules and canaries and rewrites everything. A failed restore leaves the previous
//! rules in place (each table commits atomically) and forces the next sync to be full.

use std::collections::{BTreeSet, HashSet};

use kpr_model::FamilyState;

use crate::apply::{ApplyError, Iptables};
use crate::config::RenderConfig;
use crate::render::{RenderStats, SyncMode, render};

/// What one sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// A full sync was done.
    pub full: bool,
    /// Nothing changed and nothing was written.
    pub skipped: bool,
    /// Services whose chains were rewritten (all of them for a full sync).
    pub services_changed: usize,
    /// Jump rules found missing and re-inserted (full syncs).
    pub jumps_repaired: usize,
    /// Counters from the render.
    pub stats: RenderStats,
    /// Bytes of iptables-restore input written.
    pub bytes: usize,
}

/// The iptables data plane of one family.
#[derive(Debug)]
pub struct FamilyProxier {
    ipt: Iptables,
    config: RenderConfig,
    last: Option<FamilyState>,
    chains: Option<BTreeSet<String>>,
}

impl FamilyProxier {
    /// A proxier applying through `ipt` with `config`.
    pub fn new(ipt: Iptables, config: RenderConfig) -> Self {
        Self {
            ipt,
            config,
            last: None,
            chains: None,
        }
    }

    /// The render settings in use.
    pub fn config(&self) -> &RenderConfig {
        &self.config
    }

    /// The tools in use.
    pub fn iptables(&self) -> &Iptables {
        &self.ipt
    }

    /// Forgets what was applied, so the next sync is full.
    pub fn invalidate(&mut self) {
        self.last = None;
        self.chains = None;
    }

    /// Brings the kernel to `state`. `full` forces a full sync; one also happens when
    /// nothing is known of the kernel (first sync, after a failure).
    pub fn sync(&mut self, state: &FamilyState, full: bool) -> Result<SyncReport, ApplyError> {
        let full = full || self.last.is_none() || self.chains.is_none();
        let mut report = SyncReport {
            full,
            ..SyncReport::default()
        };
        let (existing, changed): (BTreeSet<String>, HashSet<_>) = if full {
            let ensured = match self.ipt.ensure_jumps_and_canaries() {
                Ok(e) => e,
                Err(e) => {
                    self.invalidate();
                    return Err(e);
                }
            };
            report.jumps_repaired = ensured.missing;
            (ensured.nat_chains, HashSet::new())
        } else {
            let last = self
                .last
                .as_ref()
                .map(|l| state.changed_since(l))
                .unwrap_or_default();
            if last.is_empty() {
                report.skipped = true;
                return Ok(report);
            }
            (
                self.chains.clone().unwrap_or_default(),
                last.into_iter().collect(),
            )
        };
        let mode = if full {
            SyncMode::Full
        } else {
            SyncMode::Partial(&changed)
        };
        report.services_changed = if full {
            state.services.len()
        } else {
            changed.len()
        };
        let rendered = render(state, &self.config, mode, Some(&existing));
        report.stats = rendered.stats;
        report.bytes = rendered.text.len();
        if let Err(e) = self.ipt.restore(&rendered.text) {
            self.invalidate();
            return Err(e);
        }
        self.last = Some(state.clone());
        self.chains = Some(rendered.active_nat_chains);
        Ok(report)
    }
}
