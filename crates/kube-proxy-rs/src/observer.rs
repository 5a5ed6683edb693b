//! Feeds sync results into the metrics, the health state and the conntrack
//! reconciler.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kpr_kube_source::{EventRecorder, EventType, NodeEvent};
use kpr_model::{IpFamily, ProxyState, Route};
use kpr_server::metrics::{Metrics, PolicyLabel, TableLabel};
use kpr_server::{HealthCheck, ProxyHealth, ServiceHealthServers};

use crate::conntrack::Reconciler;
use crate::run::{Observer, SyncDone};

/// Reports syncs to metrics and health, and reconciles conntrack after them.
#[derive(Debug)]
pub struct ServerObserver {
    metrics: Arc<Metrics>,
    health: Arc<ProxyHealth>,
    mode: &'static str,
    conntrack: Option<Reconciler>,
    service_health: Option<ServiceHealthServers>,
    /// Listen on `[::]` (both families) rather than `0.0.0.0`.
    dual_stack: bool,
    /// Node Events (API source only).
    events: Option<EventRecorder>,
    /// When the current run of failed syncs was last reported (None: syncs work).
    failing_since_event: Option<Instant>,
}

/// While syncs keep failing, a failure event is repeated at most this often.
const FAILURE_EVENT_INTERVAL: Duration = Duration::from_secs(600);

impl ServerObserver {
    /// An observer for a data plane of `mode`; `conntrack` reconciles flows after
    /// each sync when given.
    pub fn new(
        metrics: Arc<Metrics>,
        health: Arc<ProxyHealth>,
        mode: &'static str,
        conntrack: Option<Reconciler>,
    ) -> Self {
        Self {
            metrics,
            health,
            mode,
            conntrack,
            service_health: None,
            dual_stack: false,
            events: None,
            failing_since_event: None,
        }
    }

    /// Also records Node Events: a Warning when syncing starts failing (repeated
    /// every 10 minutes while it fails) and a Normal one when it works again.
    pub fn with_events(mut self, events: Option<EventRecorder>) -> Self {
        self.events = events;
        self
    }

    fn record_sync_events(&mut self, done: &SyncDone<'_>) {
        let Some(events) = &self.events else {
            return;
        };
        if done.ok() {
            if self.failing_since_event.take().is_some() {
                events.record(NodeEvent {
                    type_: EventType::Normal,
                    reason: "SyncProxyRulesRecovered".into(),
                    action: "SyncProxyRules".into(),
                    note: format!("{} rules are programmed again", self.mode),
                });
            }
            return;
        }
        let due = self
            .failing_since_event
            .is_none_or(|t| t.elapsed() >= FAILURE_EVENT_INTERVAL);
        if !due {
            return;
        }
        let errors: Vec<String> = done
            .results
            .iter()
            .filter_map(|r| {
                r.outcome
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", r.family.as_kubernetes()))
            })
            .collect();
        events.record(NodeEvent {
            type_: EventType::Warning,
            reason: "SyncProxyRulesFailed".into(),
            action: "SyncProxyRules".into(),
            note: format!(
                "cannot program {} rules; Service traffic may use stale rules until this is fixed: {}",
                self.mode,
                errors.join("; ")
            ),
        });
        self.failing_since_event = Some(Instant::now());
    }

    /// Also serves the health-check node ports of LoadBalancer Services with
    /// `externalTrafficPolicy: Local`, on every address (`[::]` when `dual_stack`).
    pub fn with_service_health(mut self, dual_stack: bool) -> Self {
        self.service_health = Some(ServiceHealthServers::new(self.health.clone()));
        self.dual_stack = dual_stack;
        self
    }

    fn sync_service_health(&mut self, state: &ProxyState) {
        let Some(servers) = self.service_health.as_mut() else {
            return;
        };
        let ip = if self.dual_stack {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let mut wanted: HashMap<SocketAddr, HealthCheck> = HashMap::new();
        for family in IpFamily::ALL {
            for svc in state.family(family).services.values() {
                for port in &svc.ports {
                    let Some(hc) = port.info.health_check_node_port else {
                        continue;
                    };
                    let entry =
                        wanted
                            .entry(SocketAddr::new(ip, hc))
                            .or_insert_with(|| HealthCheck {
                                namespace: svc.name.namespace.to_string(),
                                name: svc.name.name.to_string(),
                                local_endpoints: 0,
                            });
                    // Upstream's LocalReadyEndpoints: summed over the Service's ports.
                    entry.local_endpoints += port
                        .endpoints
                        .iter()
                        .filter(|e| e.is_local && e.ready)
                        .count();
                }
            }
        }
        for e in servers.sync(wanted) {
            tracing::error!(error = %e, "cannot open a health check node port");
        }
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn counter(counters: &[(&'static str, u64)], name: &str) -> Option<i64> {
    counters
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v as i64)
}

/// Service ports with a Local policy whose traffic is dropped for lack of local
/// endpoints (internal, external), as upstream counts them.
fn no_local_endpoints(state: &ProxyState, family: IpFamily) -> (i64, i64) {
    let (mut internal, mut external) = (0, 0);
    for svc in state.family(family).services.values() {
        for port in &svc.ports {
            let t = port.traffic();
            if t.has_endpoints && t.internal == Route::Drop {
                internal += 1;
            }
            if t.has_endpoints && t.external == Route::Drop {
                external += 1;
            }
        }
    }
    (internal, external)
}

impl ServerObserver {
    fn family_synced(&mut self, done: &SyncDone<'_>, family: IpFamily, ok: bool, changed: bool) {
        let m = &self.metrics;
        let name = family.as_kubernetes();
        let label = Metrics::family(name);
        let secs = done.elapsed.as_secs_f64();
        m.sync_duration.get_or_create(&label).observe(secs);
        let hist = if done.full {
            &m.sync_full_duration
        } else {
            &m.sync_partial_duration
        };
        hist.get_or_create(&label).observe(secs);
        if !ok {
            match self.mode {
                "nftables" => m.nftables_sync_failures.get_or_create(&label).inc(),
                _ => m.iptables_restore_failures.get_or_create(&label).inc(),
            };
            return;
        }
        // Conntrack first: the sync counts as done (timestamp, health) once stale
        // flows are gone too.
        if (changed || done.full)
            && let Some(ct) = self.conntrack.as_mut()
            && let Some(report) = ct.after_sync(done.state, family)
        {
            m.conntrack_reconcile_duration
                .get_or_create(&label)
                .observe(report.elapsed().as_secs_f64());
            m.conntrack_deleted
                .get_or_create(&label)
                .inc_by(report.deleted as u64);
        }
        let now = SystemTime::now();
        m.last_sync_timestamp
            .get_or_create(&label)
            .set(unix_seconds(now));
        self.health.updated(name, now);
        let (internal, external) = no_local_endpoints(done.state, family);
        for (policy, n) in [("internal", internal), ("external", external)] {
            m.no_local_endpoints
                .get_or_create(&PolicyLabel {
                    traffic_policy: policy.to_string(),
                    ip_family: name.to_string(),
                })
                .set(n);
        }
    }
}

impl Observer for ServerObserver {
    fn synced(&mut self, done: &SyncDone<'_>) {
        self.record_sync_events(done);
        // Health-check listeners first: a client that sees the sync timestamp
        // move also sees the listeners of the synced state.
        self.health.set_node_eligible(done.state.node.eligible());
        if done.ok() {
            self.sync_service_health(done.state);
        }
        for r in done.results {
            let changed = r.outcome.as_ref().is_ok_and(|s| !s.skipped);
            self.family_synced(done, r.family, r.outcome.is_ok(), changed);
            if let Ok(summary) = &r.outcome
                && !summary.skipped
            {
                let fam = r.family.as_kubernetes().to_string();
                for (table, total, last) in [
                    ("nat", "nat_rules", "nat_rules_written"),
                    ("filter", "filter_rules", "filter_rules"),
                ] {
                    let label = TableLabel {
                        table: table.to_string(),
                        ip_family: fam.clone(),
                    };
                    if let Some(n) = counter(&summary.counters, total) {
                        self.metrics
                            .iptables_rules_total
                            .get_or_create(&label)
                            .set(n);
                    }
                    if let Some(n) = counter(&summary.counters, last) {
                        self.metrics
                            .iptables_rules_last
                            .get_or_create(&label)
                            .set(n);
                    }
                }
            }
        }
        if done.ok() {
            let now = SystemTime::now();
            for t in done.trigger_times {
                if let Ok(d) = now.duration_since(*t) {
                    for r in done.results {
                        self.metrics
                            .network_programming
                            .get_or_create(&Metrics::family(r.family.as_kubernetes()))
                            .observe(d.as_secs_f64());
                    }
                }
            }
            if let Some(oldest) = done.oldest_change {
                let d = oldest.elapsed().as_secs_f64();
                for r in done.results {
                    self.metrics
                        .event_to_kernel
                        .get_or_create(&Metrics::family(r.family.as_kubernetes()))
                        .observe(d);
                }
            }
            self.metrics.endpoint_changes_pending.set(0);
            self.metrics.service_changes_pending.set(0);
        }
        if let Some(usage) = self.conntrack.as_mut().and_then(Reconciler::usage) {
            self.metrics.conntrack_entries.set(usage.count as i64);
            self.metrics.conntrack_max.set(usage.max as i64);
        }
    }

    fn queued(&mut self) {
        let now = SystemTime::now();
        for f in IpFamily::ALL {
            let name = f.as_kubernetes();
            if !self.health.tracks(name) {
                continue;
            }
            self.metrics
                .last_queued_timestamp
                .get_or_create(&Metrics::family(name))
                .set(unix_seconds(now));
            self.health.queued(name, now);
        }
    }

    fn changes(&mut self, services: usize, endpoints: usize) {
        let m = &self.metrics;
        m.service_changes_total.inc_by(services as u64);
        m.endpoint_changes_total.inc_by(endpoints as u64);
        m.service_changes_pending.inc_by(services as i64);
        m.endpoint_changes_pending.inc_by(endpoints as i64);
    }

    fn source_error(&mut self) {
        self.metrics.api_source_errors.inc();
    }
}
