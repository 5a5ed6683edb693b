//! The sync loop: one task that reacts to source changes, coalesces them, syncs the
//! data plane on the scheduler's terms and checks the canary chains.

use std::time::Duration;

use kpr_model::{ProxyState, Store};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{error, info, info_span, warn};

use crate::dataplane::DataPlane;
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

/// Hooks the loop reports to (metrics, health); all optional.
pub trait Observer: Send {
    /// A sync finished.
    fn synced(&mut self, _state: &ProxyState, _full: bool, _ok: bool, _elapsed: Duration) {}
    /// The sources changed and a sync is pending.
    fn queued(&mut self) {}
}

/// An observer that does nothing.
#[derive(Debug, Default)]
pub struct NoObserver;
impl Observer for NoObserver {}

/// Everything the loop drives.
pub struct SyncLoop<'a> {
    /// Where objects come from.
    pub source: ManifestSource,
    /// The model.
    pub store: Store,
    /// The kernel side.
    pub dataplane: Box<dyn DataPlane>,
    /// Timing.
    pub settings: LoopSettings,
    /// Metrics and health.
    pub observer: &'a mut dyn Observer,
}

/// Runs `parts` until `shutdown` resolves; `wake` receives a message per source change.
pub async fn run(
    parts: SyncLoop<'_>,
    wake: mpsc::Receiver<()>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let SyncLoop {
        mut source,
        mut store,
        mut dataplane,
        settings,
        observer,
    } = parts;
    tokio::pin!(shutdown);
    let mut wake = Some(wake);
    let mut scheduler = Scheduler::new(settings.timing);
    let mut reload_needed = true;
    let mut next_canary = Instant::now() + settings.canary_interval;
    loop {
        let now = Instant::now();
        match scheduler.poll(now) {
            Due::Sync { full } => {
                let span = info_span!("sync", mode = if full { "full" } else { "partial" });
                let _enter = span.enter();
                if reload_needed {
                    match source.reload(&mut store) {
                        Ok(r) => {
                            reload_needed = false;
                            info!(files = r.files, problems = r.problems, "manifests read");
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
                let mut ok = true;
                for r in &results {
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
                            ok = false;
                            error!(family = %r.family, error = %e, "sync failed; previous rules stay in place, retrying");
                        }
                    }
                }
                scheduler.record(now, full, ok);
                observer.synced(&state, full, ok, elapsed);
            }
            Due::Wait(at) => {
                let deadline = at.min(next_canary);
                tokio::select! {
                    _ = sleep_until(deadline) => {
                        if Instant::now() >= next_canary {
                            next_canary = Instant::now() + settings.canary_interval;
                            if !dataplane.intact() {
                                warn!(mode = dataplane.mode(), "our rules are gone (flushed by someone else?); doing a full resync");
                                scheduler.request_full();
                            }
                        }
                    }
                    msg = async {
                        match wake.as_mut() {
                            Some(rx) => rx.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        match msg {
                            Some(()) => {
                                reload_needed = true;
                                scheduler.request();
                                observer.queued();
                            }
                            // The watcher is gone: rely on periodic resyncs.
                            None => wake = None,
                        }
                    }
                    _ = &mut shutdown => {
                        info!("shutting down; rules stay in place");
                        return;
                    }
                }
            }
        }
    }
}
