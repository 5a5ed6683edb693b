//! The iptables data plane of one family across syncs: decides full or partial,
//! renders, applies, and remembers what the kernel holds.
//!
//! Partial syncs rewrite only the chains of Services that changed since the last
//! successful sync, and delete the chains those Services had in the last state and no
//! longer have, instead of running `iptables-save` each time (upstream reads the
//! kernel on every sync of a small cluster). A full sync re-reads the kernel,
//! re-ensures the jump rules and canaries and rewrites everything. A failed restore
//! leaves the previous rules in place (each table commits atomically) and forces the
//! next sync to be full.
//!
//! The restore input is streamed into `iptables-restore` as it is rendered; nothing
//! but the last state (shared with the model's snapshot) is kept between syncs.

use std::collections::HashSet;

use kpr_model::FamilyState;

use crate::apply::{ApplyError, Iptables};
use crate::config::RenderConfig;
use crate::render::{ExistingChains, RenderStats, SyncMode, line_of, render_to, service_chains};

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
}

impl FamilyProxier {
    /// A proxier applying through `ipt` with `config`.
    pub fn new(ipt: Iptables, config: RenderConfig) -> Self {
        Self {
            ipt,
            config,
            last: None,
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
    }

    /// Brings the kernel to `state`. `full` forces a full sync; one also happens when
    /// nothing is known of the kernel (first sync, after a failure).
    pub fn sync(&mut self, state: &FamilyState, full: bool) -> Result<SyncReport, ApplyError> {
        // A partial sync builds on the last state; without one (first sync, after a
        // failure) the sync is full.
        let base = if full { None } else { self.last.as_ref() };
        let full = base.is_none();
        let mut report = SyncReport {
            full,
            ..SyncReport::default()
        };
        let (existing, changed): (ExistingChains, HashSet<_>) = match base {
            None => {
                let ensured = match self.ipt.ensure_jumps_and_canaries() {
                    Ok(e) => e,
                    Err(e) => {
                        self.invalidate();
                        return Err(e);
                    }
                };
                report.jumps_repaired = ensured.missing;
                (ensured.nat_chains, HashSet::new())
            }
            Some(last) => {
                let changed: HashSet<_> = state.changed_since(last).into_iter().collect();
                if changed.is_empty() {
                    report.skipped = true;
                    return Ok(report);
                }
                // What the changed Services had: the render deletes what they lose.
                (service_chains(last, &self.config, &changed), changed)
            }
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
        let config = &self.config;
        let mut stats = RenderStats::default();
        let applied = self.ipt.restore_streaming(
            &mut |out| {
                stats = render_to(state, config, mode, Some(&existing), out)?;
                Ok(())
            },
            &|n| line_of(state, config, mode, Some(&existing), n),
        );
        if let Err(e) = applied {
            self.invalidate();
            return Err(e);
        }
        report.stats = stats;
        report.bytes = stats.bytes;
        self.last = Some(state.clone());
        Ok(report)
    }
}
