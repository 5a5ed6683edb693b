//! The sync loop: one task that takes changes from the source (a manifest directory
//! or the API server), applies them to the model, syncs the data plane on the
//! scheduler's terms, reconciles conntrack after each sync and checks the canary
//! objects.

use std::time::{Duration, SystemTime};

use kpr_kube_source::{ChangeBatch, SourceError, SourceEvent};
use kpr_model::{ObjectKind, ProxyState, Store};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{error, info, info_span, warn};

use crate::dataplane::{DataPlane, FamilySync};
use crate::manifests::ManifestSource;
use crate::scheduler::{Due, Scheduler, Timing};

/// Loop settings.
#[derive(Clone, Copy, Debug)]
pub struct LoopSettings {
    /// Scheduler timing.
    pub timing: Timing,
    /// How often to check that our kernel objects are still there (`syncPeriod`).
    pub canary_interval: Duration,
}

/// One finished sync, as observers see it.
#[derive(Debug)]
pub struct SyncDone<'a> {
    /// The state that was programmed.
    pub state: &'a ProxyState,
    /// A full sync was asked for.
    pub full: bool,
    /// Per-family results.
    pub results: &'a [FamilySync],
    /// How long the data plane took.
    pub elapsed: Duration,
    /// For a successful sync: the EndpointSlice trigger times it programmed
    /// (upstream's network programming latency starts there).
    pub trigger_times: &'a [SystemTime],
    /// For a successful sync: when the oldest change it programmed reached this
    /// process (our event-to-kernel latency starts there).
    pub oldest_change: Option<Instant>,
}

impl SyncDone<'_> {
    /// True if every family synced.
    pub fn ok(&self) -> bool {
        self.results.iter().all(|r| r.outcome.is_ok())
    }
}

/// Hooks the loop reports to (metrics, health, conntrack); all optional.
pub trait Observer: Send {
    /// A sync finished.
    fn synced(&mut self, _done: &SyncDone<'_>) {}
    /// The sources changed and a sync is pending.
    fn queued(&mut self) {}
    /// Changes arrived from the API source: `services` Service and `endpoints`
    /// EndpointSlice changes.
    fn changes(&mut self, _services: usize, _endpoints: usize) {}
    /// The API source reported a problem (it retries by itself).
    fn source_error(&mut self) {}
}

/// An observer that does nothing.
#[derive(Debug, Default)]
pub struct NoObserver;
impl Observer for NoObserver {}

/// Where objects come from.
#[derive(Debug)]
pub enum Feed {
    /// A manifest directory, re-read before a sync whenever `wake` says it changed.
    Manifests {
        /// The directory reader.
        source: ManifestSource,
        /// One message per change of the directory.
        wake: mpsc::Receiver<()>,
    },
    /// The API server's watch events (nothing is programmed before
    /// [`SourceEvent::Synced`]).
    Api {
        /// Events from [`kpr_kube_source::spawn`].
        events: mpsc::Receiver<SourceEvent>,
    },
}

/// Everything the loop drives.
pub struct SyncLoop<'a> {
    /// Where objects come from.
    pub feed: Feed,
    /// The model.
    pub store: Store,
    /// The kernel side.
    pub dataplane: Box<dyn DataPlane>,
    /// Timing.
    pub settings: LoopSettings,
    /// Metrics, health, conntrack.
    pub observer: &'a mut dyn Observer,
}

/// What the feed produced while the loop waited.
enum Input {
    Wake,
    Event(SourceEvent),
    Closed,
}

async fn next_input(feed: &mut Feed, open: bool) -> Input {
    if !open {
        return std::future::pending().await;
    }
    match feed {
        Feed::Manifests { wake, .. } => match wake.recv().await {
            Some(()) => Input::Wake,
            None => Input::Closed,
        },
        Feed::Api { events } => match events.recv().await {
            Some(e) => Input::Event(e),
            None => Input::Closed,
        },
    }
}

/// Changes received but not programmed yet (for the latency metrics).
#[derive(Debug, Default)]
struct Pending {
    trigger_times: Vec<SystemTime>,
    oldest: Option<Instant>,
}

impl Pending {
    fn add(&mut self, batch: &ChangeBatch) {
        self.trigger_times
            .extend(batch.trigger_times.iter().map(|t| t.at));
        self.oldest = Some(
            self.oldest
                .map_or(batch.received_at, |o| o.min(batch.received_at)),
        );
    }
}

/// Applies a batch to the store, logging each problem; returns (Service changes,
/// EndpointSlice changes).
fn apply_batch(store: &mut Store, batch: ChangeBatch) -> (usize, usize) {
    let (mut services, mut endpoints) = (0, 0);
    for change in batch.changes {
        match change.kind() {
            ObjectKind::Service => services += 1,
            ObjectKind::EndpointSlice => endpoints += 1,
            _ => {}
        }
        for p in store.apply(change) {
            warn!(problem = %p, "API object problem; the object or field named is skipped");
        }
    }
    (services, endpoints)
}

/// Runs `parts` until `shutdown` resolves.
pub async fn run(parts: SyncLoop<'_>, shutdown: impl std::future::Future<Output = ()>) {
    let SyncLoop {
        mut feed,
        mut store,
        mut dataplane,
        settings,
        observer,
    } = parts;
    tokio::pin!(shutdown);
    let mut open = true;
    let mut scheduler = Scheduler::new(settings.timing);
    // The manifest feed is complete as soon as it is read; the API feed once every
    // kind has been listed.
    let mut ready = matches!(feed, Feed::Manifests { .. });
    let mut reload_needed = true;
    let mut pending = Pending::default();
    let mut next_canary = Instant::now() + settings.canary_interval;
    loop {
        let now = Instant::now();
        let due = if ready {
            scheduler.poll(now)
        } else {
            Due::Wait(next_canary)
        };
        match due {
            Due::Sync { full } => {
                let span = info_span!("sync", mode = if full { "full" } else { "partial" });
                let _enter = span.enter();
                if let Feed::Manifests { source, .. } = &mut feed
                    && reload_needed
                {
                    match source.reload(&mut store) {
                        Ok(r) => {
                            reload_needed = false;
                            info!(
                                files = r.files,
                                decoded = r.decoded,
                                problems = r.problems,
                                "manifests read"
                            );
                        }
                        Err(e) => {
                            error!(error = %e, "cannot read manifests; keeping the rules in place");
                        }
                    }
                }
                let state = store.snapshot();
                let started = std::time::Instant::now();
                let results = dataplane.sync(&state, full);
                let elapsed = started.elapsed();
                log_results(&results, elapsed);
                let done = SyncDone {
                    state: &state,
                    full,
                    results: &results,
                    elapsed,
                    trigger_times: &pending.trigger_times,
                    oldest_change: pending.oldest,
                };
                let ok = done.ok();
                observer.synced(&done);
                if ok {
                    pending = Pending::default();
                }
                scheduler.record(now, full, ok);
            }
            Due::Wait(at) => {
                let deadline = at.min(next_canary);
                tokio::select! {
                    _ = sleep_until(deadline) => {
                        if Instant::now() >= next_canary {
                            next_canary = Instant::now() + settings.canary_interval;
                            if ready && !dataplane.intact() {
                                warn!(mode = dataplane.mode(), "our rules are gone (flushed by someone else?); doing a full resync");
                                scheduler.request_full();
                            }
                        }
                    }
                    input = next_input(&mut feed, open) => match input {
                        Input::Wake => {
                            // The change reached us now, not when the directory is read.
                            pending.oldest.get_or_insert(Instant::now());
                            reload_needed = true;
                            scheduler.request();
                            observer.queued();
                        }
                        Input::Event(event) => {
                            handle_event(event, &mut store, &mut pending, &mut ready, &mut scheduler, observer);
                        }
                        Input::Closed => {
                            // The source is gone: keep the rules, rely on periodic resyncs.
                            if matches!(feed, Feed::Api { .. }) {
                                error!("the API source stopped; the rules stay as last programmed");
                            }
                            open = false;
                        }
                    },
                    _ = &mut shutdown => {
                        info!("shutting down; rules stay in place");
                        return;
                    }
                }
            }
        }
    }
}

fn handle_event(
    event: SourceEvent,
    store: &mut Store,
    pending: &mut Pending,
    ready: &mut bool,
    scheduler: &mut Scheduler,
    observer: &mut dyn Observer,
) {
    match event {
        SourceEvent::Changes(batch) | SourceEvent::Relisted { batch, .. } => {
            if batch.is_empty() {
                return;
            }
            pending.add(&batch);
            let (services, endpoints) = apply_batch(store, batch);
            observer.changes(services, endpoints);
            if *ready {
                scheduler.request();
                observer.queued();
            }
        }
        SourceEvent::Synced { node_found } => {
            if !node_found {
                warn!(
                    node = %store.node_name(),
                    "this node's Node object does not exist; node addresses, zone and pod CIDRs stay unknown until it appears"
                );
            }
            info!("initial lists complete; programming the first full sync");
            *ready = true;
            scheduler.request_full();
            observer.queued();
        }
        SourceEvent::Error(e @ SourceError::Unavailable { .. }) => {
            warn!(error = %e, "optional API resource unavailable");
            observer.source_error();
        }
        SourceEvent::Error(e) => {
            warn!(error = %e, "API source problem; retrying, the rules stay in place");
            observer.source_error();
        }
    }
}

fn log_results(results: &[FamilySync], elapsed: Duration) {
    for r in results {
        match &r.outcome {
            Ok(report) if report.skipped => {}
            Ok(report) => info!(
                family = %r.family,
                full = report.full,
                services_changed = report.services_changed,
                counters = %report
                    .counters
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                bytes = report.bytes,
                elapsed_ms = elapsed.as_millis() as u64,
                "rules applied"
            ),
            Err(e) => {
                error!(family = %r.family, error = %e, "sync failed; previous rules stay in place, retrying");
            }
        }
    }
}
