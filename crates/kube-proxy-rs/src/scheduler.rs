//! When to sync, kept apart from what a sync does (as upstream's
//! `BoundedFrequencyRunner`, `pkg/util/async`).
//!
//! - A change requests a sync. Syncs are at least `min_interval` apart, except that a
//!   burst of `burst` syncs may run back to back after a quiet period (upstream uses 2),
//!   so a single change is applied at once and a storm of changes is coalesced.
//! - A full resync is due every `full_interval` even without changes.
//! - After a failure, the next attempt comes after an exponential backoff that starts
//!   at `min_interval` (at least 1 s) and is capped at `retry_max`; upstream always
//!   waits a whole sync period (30 s), which leaves a node broken for longer.
//!
//! The scheduler only computes deadlines on tokio's clock; tests pause the clock.

use tokio::time::{Duration, Instant};

/// Scheduler settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Minimum time between syncs (`minSyncPeriod`), beyond the burst.
    pub min_interval: Duration,
    /// Syncs allowed back to back before `min_interval` applies.
    pub burst: u32,
    /// A full resync at least this often.
    pub full_interval: Duration,
    /// Largest retry backoff after failures.
    pub retry_max: Duration,
}

/// What the loop should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing to do until the given instant (or a new request).
    Wait(Instant),
    /// Sync now; `full` says whether every chain must be rewritten.
    Sync {
        /// Rewrite everything.
        full: bool,
    },
}

/// The scheduler's state.
#[derive(Debug)]
pub struct Scheduler {
    timing: Timing,
    /// Token bucket for bursts: times of the last `burst` syncs.
    recent: Vec<Instant>,
    pending: bool,
    need_full: bool,
    last_full: Option<Instant>,
    retry_at: Option<Instant>,
    failures: u32,
}

impl Scheduler {
    /// A scheduler that wants a full sync first.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            recent: Vec::new(),
            pending: true,
            need_full: true,
            last_full: None,
            retry_at: None,
            failures: 0,
        }
    }

    /// Something changed: a (partial) sync is wanted.
    pub fn request(&mut self) {
        self.pending = true;
    }

    /// Something requires rewriting everything (canary gone, node labels changed).
    pub fn request_full(&mut self) {
        self.pending = true;
        self.need_full = true;
    }

    /// Consecutive failed syncs.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn earliest_allowed(&self) -> Option<Instant> {
        if (self.recent.len() as u32) < self.timing.burst.max(1) {
            return None;
        }
        // The oldest of the last `burst` syncs bounds the next one.
        self.recent.first().map(|t| *t + self.timing.min_interval)
    }

    /// Decides what to do at `now`.
    pub fn poll(&self, now: Instant) -> Due {
        let full_due = self
            .last_full
            .is_none_or(|t| now >= t + self.timing.full_interval);
        let wanted = self.pending || full_due;
        let mut at = match self.earliest_allowed() {
            Some(t) if t > now => Some(t),
            _ => None,
        };
        if let Some(r) = self.retry_at
            && r > now
        {
            at = Some(at.map_or(r, |a| a.max(r)));
        }
        if wanted {
            if let Some(at) = at {
                return Due::Wait(at);
            }
            return Due::Sync {
                full: self.need_full || full_due,
            };
        }
        let next_full = self
            .last_full
            .map_or(now, |t| t + self.timing.full_interval);
        Due::Wait(at.map_or(next_full, |a| a.min(next_full)).max(now))
    }

    /// Records a sync attempt that started at `started`.
    pub fn record(&mut self, started: Instant, full: bool, ok: bool) {
        self.recent.push(started);
        let keep = self.timing.burst.max(1) as usize;
        if self.recent.len() > keep {
            let excess = self.recent.len() - keep;
            self.recent.drain(..excess);
        }
        if ok {
            self.pending = false;
            self.failures = 0;
            self.retry_at = None;
            if full {
                self.need_full = false;
                self.last_full = Some(started);
            }
        } else {
            // The changes since the last success are not known any more in detail:
            // the retry rewrites everything.
            self.pending = true;
            self.need_full = true;
            self.failures += 1;
            let base = self.timing.min_interval.max(Duration::from_secs(1));
            let backoff = base
                .checked_mul(1u32 << (self.failures - 1).min(16))
                .unwrap_or(self.timing.retry_max)
                .min(self.timing.retry_max);
            self.retry_at = Some(started + backoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            min_interval: Duration::from_secs(1),
            burst: 2,
            full_interval: Duration::from_secs(3600),
            retry_max: Duration::from_secs(30),
        }
    }

    /// The first sync is full and immediate; a quiet change syncs at once (partial).
    #[tokio::test(start_paused = true)]
    async fn first_full_then_partial() {
        let mut s = Scheduler::new(timing());
        let t0 = Instant::now();
        assert_eq!(s.poll(t0), Due::Sync { full: true });
        s.record(t0, true, true);
        assert!(matches!(s.poll(t0), Due::Wait(_)), "nothing pending");
        tokio::time::advance(Duration::from_secs(5)).await;
        s.request();
        assert_eq!(s.poll(Instant::now()), Due::Sync { full: false });
    }

    /// A storm of changes: two syncs back to back, then one per min_interval.
    #[tokio::test(start_paused = true)]
    async fn bursts_are_bounded() {
        let mut s = Scheduler::new(timing());
        let t0 = Instant::now();
        s.record(t0, true, true);
        s.request();
        assert_eq!(s.poll(t0), Due::Sync { full: false });
        s.record(t0, false, true);
        s.request();
        assert_eq!(s.poll(t0), Due::Wait(t0 + Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.poll(Instant::now()), Due::Sync { full: false });
    }

    /// Failures back off exponentially up to the cap, and the retry is a full sync.
    #[tokio::test(start_paused = true)]
    async fn failure_backoff() {
        let mut s = Scheduler::new(Timing {
            burst: 100,
            ..timing()
        });
        let t0 = Instant::now();
        s.record(t0, true, false);
        assert_eq!(s.poll(t0), Due::Wait(t0 + Duration::from_secs(1)));
        s.record(t0, true, false);
        assert_eq!(s.poll(t0), Due::Wait(t0 + Duration::from_secs(2)));
        for _ in 0..10 {
            s.record(t0, true, false);
        }
        assert_eq!(s.poll(t0), Due::Wait(t0 + Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(s.poll(Instant::now()), Due::Sync { full: true });
    }

    /// Without changes, a full resync comes after full_interval.
    #[tokio::test(start_paused = true)]
    async fn periodic_full_resync() {
        let mut s = Scheduler::new(timing());
        let t0 = Instant::now();
        s.record(t0, true, true);
        assert_eq!(s.poll(t0), Due::Wait(t0 + Duration::from_secs(3600)));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(s.poll(Instant::now()), Due::Sync { full: true });
    }
}
