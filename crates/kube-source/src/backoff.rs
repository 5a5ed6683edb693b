//! Retry delays after list/watch errors, as client-go's reflector (and kube-rs'
//! `DefaultBackoff`) space them: exponential from `initial` to `max`, with jitter, and
//! back to `initial` once no error has been seen for `reset_after`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;

/// Backoff parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffSettings {
    /// First delay (client-go: 800 ms).
    pub initial: Duration,
    /// Largest delay (client-go: 30 s).
    pub max: Duration,
    /// A quiet period after which the delay starts from `initial` again (client-go:
    /// 2 min).
    pub reset_after: Duration,
    /// Add up to this fraction of the delay at random, so nodes do not retry in step
    /// (client-go: 1.0).
    pub jitter: f64,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(800),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(120),
            jitter: 1.0,
        }
    }
}

/// Backoff state of one watcher.
#[derive(Debug)]
pub(crate) struct Backoff {
    settings: BackoffSettings,
    next: Duration,
    last_error: Option<Instant>,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub(crate) fn new(settings: BackoffSettings) -> Self {
        Self {
            settings,
            next: settings.initial,
            last_error: None,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The delay before retrying after an error seen at `now`.
    pub(crate) fn on_error(&mut self, now: Instant) -> Duration {
        if self
            .last_error
            .is_some_and(|t| now.saturating_duration_since(t) >= self.settings.reset_after)
        {
            self.next = self.settings.initial;
        }
        self.last_error = Some(now);
        let base = self.next.min(self.settings.max);
        self.next = (self.next * 2).min(self.settings.max);
        base + base.mul_f64(self.settings.jitter.clamp(0.0, 1.0) * self.unit_random())
    }

    /// A number in [0, 1) from std's per-process random hasher keys (enough to spread
    /// retries; not for anything else).
    fn unit_random(&mut self) -> f64 {
        self.draws += 1;
        let bits = self.random.hash_one(self.draws) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> BackoffSettings {
        BackoffSettings {
            jitter: 0.0,
            ..BackoffSettings::default()
        }
    }

    /// Delays double up to the cap.
    #[tokio::test(start_paused = true)]
    async fn doubles_to_the_cap() {
        let mut b = Backoff::new(no_jitter());
        let now = Instant::now();
        let delays: Vec<u64> = (0..8).map(|_| b.on_error(now).as_millis() as u64).collect();
        assert_eq!(delays, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    }

    /// After a quiet period the delay starts over.
    #[tokio::test(start_paused = true)]
    async fn resets_after_quiet_period() {
        let mut b = Backoff::new(no_jitter());
        let now = Instant::now();
        for _ in 0..5 {
            b.on_error(now);
        }
        assert_eq!(
            b.on_error(now + Duration::from_secs(119)),
            Duration::from_millis(25600)
        );
        assert_eq!(
            b.on_error(now + Duration::from_secs(119 + 120)),
            Duration::from_millis(800)
        );
    }

    /// Jitter adds at most the configured fraction.
    #[tokio::test(start_paused = true)]
    async fn jitter_bounds() {
        let mut b = Backoff::new(BackoffSettings::default());
        let now = Instant::now();
        let first = b.on_error(now);
        assert!(first >= Duration::from_millis(800) && first < Duration::from_millis(1600));
    }
}
