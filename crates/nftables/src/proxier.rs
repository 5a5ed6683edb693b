//! The nftables data plane of one family across syncs: decides full or partial,
//! renders, plans, applies, and deletes stale chains once they have aged.
//!
//! A full sync happens first, when asked (periodically, after the table vanished),
//! and after any failure; it reads the kernel's table and rewrites everything. A
//! partial sync re-renders only Services that changed since the last successful sync
//! and sends only what differs. Each transaction is atomic: a failed one leaves the
//! previous rules in place and makes the next sync full.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kpr_model::{FamilyState, NamespacedName, ServiceState};

use crate::nft::{Nft, NftError};
use crate::objects::Family;
use crate::render::{Fragment, RenderConfig, base, service_port};
use crate::ruleset::Ruleset;
use crate::sync::{Change, FULL_SYNC_BATCH_OPS, Synced};
use crate::transaction::Transaction;

/// How long a flushed chain waits before it is deleted (upstream: one second, for
/// kernels that release a chain's last reference lazily).
pub const STALE_CHAIN_DELAY: Duration = Duration::from_secs(1);

/// What one sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// A full sync was done.
    pub full: bool,
    /// Nothing changed and nothing was written.
    pub skipped: bool,
    /// Services re-rendered (all of them for a full sync).
    pub services_changed: usize,
    /// Operations, all transactions together.
    pub operations: usize,
    /// Bytes of nft input, all transactions together.
    pub bytes: usize,
    /// Transactions sent (more than one for a large full sync).
    pub transactions: usize,
    /// Stale chains deleted before the main transaction.
    pub stale_deleted: usize,
}

/// Everything one Service contributes to a family's table.
pub fn render_service(svc: &ServiceState, config: &RenderConfig) -> Fragment {
    let mut f = Fragment::default();
    for port in &svc.ports {
        let p = service_port(port, config);
        f.chains.extend(p.chains);
        f.sets.extend(p.sets);
        f.elements.extend(p.elements);
    }
    f
}

/// The whole ruleset of a family, as `--dry-run` prints it.
pub fn render_ruleset(state: &FamilyState, config: &RenderConfig) -> Ruleset {
    let mut r = Ruleset::new(Family(config.family));
    r.add(&base(config));
    for svc in state.services.values() {
        r.add(&render_service(svc, config));
    }
    r
}

/// The nftables data plane of one family.
#[derive(Debug)]
pub struct FamilyProxier {
    nft: Nft,
    config: RenderConfig,
    synced: Option<Synced>,
    last: Option<FamilyState>,
    stale: HashMap<String, Instant>,
    synced_once: bool,
    last_partial: Option<Transaction>,
    batch_ops: usize,
}

impl FamilyProxier {
    /// A proxier applying through `nft` with `config`.
    pub fn new(nft: Nft, config: RenderConfig) -> Self {
        Self {
            nft,
            config,
            synced: None,
            last: None,
            stale: HashMap::new(),
            synced_once: false,
            last_partial: None,
            batch_ops: FULL_SYNC_BATCH_OPS,
        }
    }

    /// Sets the operation count above which a full sync is split into several
    /// transactions (default [`FULL_SYNC_BATCH_OPS`]; `usize::MAX`: never).
    pub fn with_batch_ops(mut self, ops: usize) -> Self {
        self.batch_ops = ops.max(1);
        self
    }

    /// The render settings in use.
    pub fn config(&self) -> &RenderConfig {
        &self.config
    }

    /// The nft handle.
    pub fn nft(&self) -> &Nft {
        &self.nft
    }

    /// Replaces the render settings; the next sync is full.
    pub fn set_config(&mut self, config: RenderConfig) {
        if config != self.config {
            self.config = config;
            self.invalidate();
        }
    }

    /// Forgets what was applied, so the next sync is full.
    pub fn invalidate(&mut self) {
        self.synced = None;
        self.last = None;
    }

    /// The transaction of the last partial sync that wrote something (for
    /// benchmarks and debugging; full syncs are not kept, they are large).
    pub fn last_partial_transaction(&self) -> Option<&Transaction> {
        self.last_partial.as_ref()
    }

    /// Flushed chains waiting for deletion, with when they were flushed.
    pub fn stale_chains(&self) -> &HashMap<String, Instant> {
        &self.stale
    }

    /// Brings the kernel to `state` now.
    pub fn sync(&mut self, state: &FamilyState, full: bool) -> Result<SyncReport, NftError> {
        self.sync_at(state, full, Instant::now())
    }

    /// Brings the kernel to `state`, taking `now` as the current time (stale chains
    /// flushed at least [`STALE_CHAIN_DELAY`] before `now` are deleted first).
    pub fn sync_at(
        &mut self,
        state: &FamilyState,
        full: bool,
        now: Instant,
    ) -> Result<SyncReport, NftError> {
        let mut report = SyncReport::default();
        let mut full = full || self.synced.is_none() || self.last.is_none();

        // Aged stale chains go in their own, earlier transaction.
        let due: Vec<String> = self
            .stale
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= STALE_CHAIN_DELAY)
            .map(|(n, _)| n.clone())
            .collect();
        if !due.is_empty() {
            let mut tx = Transaction::new(self.nft.family());
            let mut sorted = due.clone();
            sorted.sort();
            for name in &sorted {
                tx.delete_chain(name);
            }
            match self.nft.apply(&tx) {
                Ok(()) => {
                    for name in &due {
                        self.stale.remove(name);
                    }
                    if let Some(s) = self.synced.as_mut() {
                        s.chains_deleted(&due);
                    }
                    report.stale_deleted = due.len();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot delete stale chains; doing a full sync");
                    self.stale.clear();
                    full = true;
                }
            }
        }

        if let (false, Some(synced), Some(last)) = (full, self.synced.as_mut(), self.last.as_ref())
        {
            let changed = state.changed_since(last);
            if changed.is_empty() {
                report.skipped = report.stale_deleted == 0;
                return Ok(report);
            }
            report.services_changed = changed.len();
            let config = &self.config;
            // The record does not keep what each Service wrote: the last state,
            // rendered again, says it.
            let render = |s: &FamilyState, name: &NamespacedName| {
                s.services.get(name).map(|svc| render_service(svc, config))
            };
            let changes = changed
                .into_iter()
                .map(|name| {
                    let change = Change {
                        old: render(last, &name),
                        new: render(state, &name),
                    };
                    (name, change)
                })
                .collect();
            let plan = synced.partial(changes);
            report.operations = plan.txs.iter().map(Transaction::len).sum();
            report.bytes = plan.txs.iter().map(Transaction::text_len).sum();
            report.transactions = plan.txs.len();
            for tx in &plan.txs {
                if let Err(e) = self.nft.apply(tx) {
                    self.invalidate();
                    self.stale.clear();
                    return Err(e);
                }
            }
            for name in &plan.written {
                self.stale.remove(name);
            }
            for name in plan.newly_stale {
                self.stale.entry(name).or_insert(now);
            }
            self.last_partial = plan.txs.into_iter().next();
        } else {
            report.full = true;
            let listing = match self.nft.list() {
                Ok(l) => l,
                Err(e) => {
                    self.invalidate();
                    return Err(e);
                }
            };
            report.services_changed = state.services.len();
            let config = &self.config;
            // Rendered as the plan needs them (twice), never all held at once.
            let services = || {
                state
                    .services
                    .iter()
                    .map(|(name, svc)| (name, render_service(svc, config)))
            };
            let nft = &self.nft;
            let planned = Synced::full(
                Family(config.family),
                &base(config),
                services,
                &listing,
                !self.synced_once,
                self.batch_ops,
                &mut |tx| nft.apply(&tx),
            );
            let (synced, done) = match planned {
                Ok(done) => done,
                Err(e) => {
                    self.invalidate();
                    self.stale.clear();
                    return Err(e);
                }
            };
            report.operations = done.operations;
            report.bytes = done.bytes;
            report.transactions = done.transactions;
            // A chain written by this sync is no longer waiting for deletion.
            self.stale.retain(|name, _| synced.is_flushed(name));
            for name in done.newly_stale {
                self.stale.entry(name).or_insert(now);
            }
            self.synced = Some(synced);
            self.last_partial = None;
        }
        self.last = Some(state.clone());
        self.synced_once = true;
        Ok(report)
    }
}

/// Checks, without changing anything, that nft and the kernel accept everything this
/// mode writes: the fixed part of the table plus a chain using each per-Service
/// construct (random endpoint choice, affinity set, DNAT).
pub fn probe(nft: &Nft, config: &RenderConfig) -> Result<(), NftError> {
    use crate::objects::{Chain, KeyType, Rule, Set};
    let mut r = Ruleset::new(Family(config.family));
    r.add(&base(config));
    let ip = match config.family {
        kpr_model::IpFamily::V4 => "192.0.2.1".parse(),
        kpr_model::IpFamily::V6 => "2001:db8::1".parse(),
    };
    let ip = ip.map_err(|_| NftError::Failed {
        command: "probe".into(),
        status: -1,
        stderr: "bad probe address".into(),
    })?;
    r.add(&Fragment {
        chains: vec![
            Chain::new(
                "probe-endpoint",
                vec![
                    Rule::MasqueradeHairpin(ip),
                    Rule::AffinityUpdate("probe-affinity".into()),
                    Rule::Dnat(kpr_model::Protocol::Tcp, ip, 80),
                ],
            ),
            Chain::new(
                "probe-service",
                vec![Rule::NumgenVmap(vec!["probe-endpoint".into()])],
            ),
        ],
        sets: vec![Set {
            name: "probe-affinity".into(),
            key: KeyType::Addr,
            verdict_map: false,
            timeout: Some(10800),
            comment: None,
        }],
        elements: Vec::new(),
    });
    let mut tx = Transaction::new(Family(config.family));
    for line in r.creation_script().lines() {
        tx.raw(line);
    }
    nft.check(&tx)
}
