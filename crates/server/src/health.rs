//! Proxy health, as upstream's `ProxyHealthServer` (`pkg/proxy/healthcheck`):
//! unhealthy when a change has been queued for longer than the health timeout
//! (twice the sync period) without a successful sync, and — for `/healthz` only —
//! when the node is being deleted.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Shared health state, updated by the sync loop and read by the HTTP handlers.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last_updated: BTreeMap<String, SystemTime>,
    oldest_pending: BTreeMap<String, SystemTime>,
    node_eligible: bool,
}

/// A health verdict with the times upstream reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Healthy.
    pub healthy: bool,
    /// Last successful sync (of any family).
    pub last_updated: Option<SystemTime>,
    /// Whether the node may receive traffic (not being deleted).
    pub node_eligible: bool,
}

impl ProxyHealth {
    /// Health with the given timeout (upstream: 2 × syncPeriod) for `families`.
    pub fn new(timeout: Duration, families: &[&str], now: SystemTime) -> Self {
        let mut inner = Inner {
            node_eligible: true,
            ..Inner::default()
        };
        for f in families {
            // Healthy while starting up.
            inner.last_updated.insert((*f).to_string(), now);
        }
        Self {
            timeout,
            inner: Mutex::new(inner),
        }
    }

    /// True if `family` is one of the families this health state tracks.
    pub fn tracks(&self, family: &str) -> bool {
        self.inner
            .lock()
            .is_ok_and(|i| i.last_updated.contains_key(family))
    }

    /// A change is waiting to be synced for `family`.
    pub fn queued(&self, family: &str, now: SystemTime) {
        if let Ok(mut i) = self.inner.lock() {
            i.oldest_pending.entry(family.to_string()).or_insert(now);
        }
    }

    /// `family` was synced successfully.
    pub fn updated(&self, family: &str, now: SystemTime) {
        if let Ok(mut i) = self.inner.lock() {
            i.last_updated.insert(family.to_string(), now);
            i.oldest_pending.remove(family);
        }
    }

    /// Whether this node may get traffic (false while it is being deleted).
    pub fn set_node_eligible(&self, eligible: bool) {
        if let Ok(mut i) = self.inner.lock() {
            i.node_eligible = eligible;
        }
    }

    /// The proxy's own health (`/livez`), ignoring the node.
    pub fn check(&self, now: SystemTime) -> Verdict {
        let Ok(i) = self.inner.lock() else {
            return Verdict {
                healthy: false,
                last_updated: None,
                node_eligible: false,
            };
        };
        let last_updated = i.last_updated.values().max().copied();
        let late = i
            .oldest_pending
            .values()
            .any(|queued| now.duration_since(*queued).unwrap_or_default() >= self.timeout);
        Verdict {
            healthy: !late,
            last_updated,
            node_eligible: i.node_eligible,
        }
    }
}

/// Formats a time as Go's `time.Time.String()` does (without the monotonic part):
/// `2006-01-02 15:04:05.999999999 +0000 UTC`.
pub fn go_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    let mut frac = format!(".{:09}", d.subsec_nanos());
    while frac.ends_with('0') {
        frac.pop();
    }
    if frac == "." {
        frac.clear();
    }
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}{frac} +0000 UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Healthy at start, unhealthy once a queued change is older than the timeout,
    /// healthy again after a sync.
    #[test]
    fn queued_changes_age() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = ProxyHealth::new(Duration::from_secs(60), &["IPv4"], t0);
        assert!(h.check(t0).healthy);
        h.queued("IPv4", t0);
        assert!(h.check(t0 + Duration::from_secs(59)).healthy);
        assert!(!h.check(t0 + Duration::from_secs(60)).healthy);
        h.updated("IPv4", t0 + Duration::from_secs(61));
        assert!(h.check(t0 + Duration::from_secs(62)).healthy);
    }

    /// Go's time format.
    #[test]
    fn go_time_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_420_800, 120_000_000);
        assert_eq!(go_time(t), "2026-11-23 08:00:00.12 +0000 UTC");
        assert_eq!(
            go_time(SystemTime::UNIX_EPOCH),
            "1970-01-01 00:00:00 +0000 UTC"
        );
    }
}
