//! Feeds sync results into the metrics and the health state.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kpr_model::{IpFamily, ProxyState};
use kpr_server::ProxyHealth;
use kpr_server::metrics::Metrics;

use crate::run::Observer;

/// Reports syncs to metrics and health.
#[derive(Debug)]
pub struct ServerObserver {
    metrics: Arc<Metrics>,
    health: Arc<ProxyHealth>,
    families: Vec<IpFamily>,
}

impl ServerObserver {
    /// An observer for the proxied `families`.
    pub fn new(metrics: Arc<Metrics>, health: Arc<ProxyHealth>, families: Vec<IpFamily>) -> Self {
        Self {
            metrics,
            health,
            families,
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Observer for ServerObserver {
    fn synced(&mut self, _state: &ProxyState, full: bool, ok: bool, elapsed: Duration) {
        let now = SystemTime::now();
        for f in &self.families {
            let label = Metrics::family(f.as_kubernetes());
            self.metrics
                .sync_duration
                .get_or_create(&label)
                .observe(elapsed.as_secs_f64());
            let hist = if full {
                &self.metrics.sync_full_duration
            } else {
                &self.metrics.sync_partial_duration
            };
            hist.get_or_create(&label).observe(elapsed.as_secs_f64());
            if ok {
                self.metrics
                    .last_sync_timestamp
                    .get_or_create(&label)
                    .set(unix_seconds(now));
                self.health.updated(f.as_kubernetes(), now);
            }
        }
    }

    fn queued(&mut self) {
        let now = SystemTime::now();
        for f in &self.families {
            self.metrics
                .last_queued_timestamp
                .get_or_create(&Metrics::family(f.as_kubernetes()))
                .set(unix_seconds(now));
            self.health.queued(f.as_kubernetes(), now);
        }
    }
}
