//! Whether the API server is currently reachable, for health reporting and metrics.
//!
//! Both the client's HTTP layer (every response or transport error) and the watchers
//! (every list/watch error or delivered object) update it, so it turns false as soon as
//! one request fails and true again with the first successful answer.

use std::sync::Arc;
use std::sync::Mutex;

use tokio::time::Instant;
use tracing::{info, warn};

#[derive(Debug)]
struct State {
    connected: bool,
    since: Instant,
    last_error: Option<String>,
}

/// Shared, cheap to clone view of the connection to the API server.
///
/// Starts as "not connected" until the first successful answer.
#[derive(Clone, Debug)]
pub struct Connectivity {
    state: Arc<Mutex<State>>,
}

impl Default for Connectivity {
    fn default() -> Self {
        Self::new()
    }
}

impl Connectivity {
    /// A new tracker: not connected yet.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                connected: false,
                since: Instant::now(),
                last_error: None,
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while holding it; the state is
        // two plain fields and stays meaningful.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// True if the last exchange with the API server succeeded.
    pub fn is_connected(&self) -> bool {
        self.with(|s| s.connected)
    }

    /// When the current state (connected or not) began.
    pub fn since(&self) -> Instant {
        self.with(|s| s.since)
    }

    /// The last error seen, if the source is disconnected.
    pub fn last_error(&self) -> Option<String> {
        self.with(|s| {
            if s.connected {
                None
            } else {
                s.last_error.clone()
            }
        })
    }

    /// Records a successful exchange.
    pub fn mark_connected(&self) {
        let changed = self.with(|s| {
            let changed = !s.connected;
            if changed {
                s.connected = true;
                s.since = Instant::now();
                s.last_error = None;
            }
            changed
        });
        if changed {
            info!("connected to the API server");
        }
    }

    /// Records a failed exchange.
    pub fn mark_disconnected(&self, error: &str) {
        let changed = self.with(|s| {
            let changed = s.connected;
            if changed {
                s.connected = false;
                s.since = Instant::now();
            }
            s.last_error = Some(error.to_string());
            changed
        });
        if changed {
            warn!(
                error,
                "lost the API server; keeping the rules programmed, retrying"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transitions flip the state, keep the last error while disconnected and forget it
    /// once connected.
    #[tokio::test(start_paused = true)]
    async fn transitions() {
        let c = Connectivity::new();
        assert!(!c.is_connected());
        c.mark_connected();
        assert!(c.is_connected());
        assert_eq!(c.last_error(), None);
        let t0 = c.since();
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        c.mark_disconnected("connection refused");
        assert!(!c.is_connected());
        assert_eq!(c.last_error().as_deref(), Some("connection refused"));
        assert!(c.since() > t0);
        let clone = c.clone();
        clone.mark_connected();
        assert!(c.is_connected());
    }
}
