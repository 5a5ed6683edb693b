//! A tower layer on top of kube-rs' client stack: client-go's request rate limit
//! (`qps`/`burst`, a token bucket taken before each request is sent) and connectivity
//! tracking (every answer or transport error updates [`Connectivity`]).
//!
//! kube-rs has no rate limiter of its own. As in client-go, the limit applies to
//! request starts: a watch takes one token when it is opened, however long it streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{Layer, Service};

use crate::connectivity::Connectivity;

/// client-go's `flowcontrol.NewTokenBucketRateLimiter(qps, burst)`: the bucket holds up
/// to `burst` tokens and refills at `qps` per second; it starts full.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `burst` below 1 is taken as 1.
    pub(crate) fn new(qps: f32, burst: i32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            per_second: f64::from(qps),
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes a token, or says when one will be available.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(now + Duration::from_secs_f64(missing / self.per_second))
        }
    }
}

/// The layer; see the module documentation.
#[derive(Clone, Debug)]
pub(crate) struct ApiLayer {
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    connectivity: Connectivity,
}

impl ApiLayer {
    /// Rate limited to `qps`/`burst` if `qps > 0`, unlimited otherwise.
    pub(crate) fn new(qps: f32, burst: i32, connectivity: Connectivity) -> Self {
        let bucket = (qps > 0.0 && qps.is_finite())
            .then(|| Arc::new(Mutex::new(TokenBucket::new(qps, burst, Instant::now()))));
        Self {
            bucket,
            connectivity,
        }
    }
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiService {
            inner,
            bucket: self.bucket.clone(),
            connectivity: self.connectivity.clone(),
            has_token: false,
            wait: None,
        }
    }
}

/// The service [`ApiLayer`] wraps around kube-rs' stack.
pub(crate) struct ApiService<S> {
    inner: S,
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    connectivity: Connectivity,
    has_token: bool,
    wait: Option<Pin<Box<Sleep>>>,
}

impl<S> ApiService<S> {
    fn poll_token(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(bucket) = &self.bucket else {
            return Poll::Ready(());
        };
        loop {
            if self.has_token {
                return Poll::Ready(());
            }
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            let taken = {
                let mut bucket = match bucket.lock() {
                    Ok(b) => b,
                    Err(poisoned) => poisoned.into_inner(),
                };
                bucket.try_take(Instant::now())
            };
            match taken {
                Ok(()) => self.has_token = true,
                Err(at) => self.wait = Some(Box::pin(sleep_until(at))),
            }
        }
    }
}

impl<S, B, RB> Service<Request<B>> for ApiService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.poll_token(cx).is_pending() {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.has_token = false;
        let connectivity = self.connectivity.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            match &result {
                // A 5xx means the API server (or what stands in front of it) cannot
                // serve us; any other answer proves it is there.
                Ok(resp) if resp.status().is_server_error() => {
                    connectivity.mark_disconnected(&format!("HTTP {}", resp.status()));
                }
                Ok(_) => connectivity.mark_connected(),
                Err(e) => connectivity.mark_disconnected(&e.to_string()),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket starts full (`burst` requests at once), then allows `qps` per second,
    /// never accumulating more than `burst`.
    #[tokio::test(start_paused = true)]
    async fn token_bucket_as_client_go() {
        let start = Instant::now();
        let mut b = TokenBucket::new(5.0, 10, start);
        for _ in 0..10 {
            assert!(b.try_take(start).is_ok());
        }
        let next = b.try_take(start).unwrap_err();
        assert_eq!(next - start, Duration::from_millis(200));
        assert!(b.try_take(start + Duration::from_millis(200)).is_ok());
        // A long pause refills to `burst`, not more.
        let later = start + Duration::from_secs(60);
        for _ in 0..10 {
            assert!(b.try_take(later).is_ok());
        }
        assert!(b.try_take(later).is_err());
    }

    /// A burst of 0 still lets one request through at a time.
    #[tokio::test(start_paused = true)]
    async fn zero_burst_means_one() {
        let now = Instant::now();
        let mut b = TokenBucket::new(1.0, 0, now);
        assert!(b.try_take(now).is_ok());
        assert_eq!(b.try_take(now).unwrap_err() - now, Duration::from_secs(1));
    }

    /// The service waits for tokens (paused clock) and records connectivity from the
    /// inner service's answers.
    #[tokio::test(start_paused = true)]
    async fn service_waits_for_tokens_and_tracks_answers() {
        use tower::ServiceExt;
        let connectivity = Connectivity::new();
        let layer = ApiLayer::new(2.0, 1, connectivity.clone());
        let inner = tower::service_fn(|req: Request<u16>| async move {
            let status = *req.body();
            if status == 0 {
                Err("connection refused".to_string())
            } else {
                Ok(Response::builder().status(status).body(()).unwrap())
            }
        });
        let mut svc = layer.layer(inner);
        let start = Instant::now();
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(200))
            .await
            .unwrap();
        assert!(connectivity.is_connected());
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(503))
            .await
            .unwrap();
        assert!(!connectivity.is_connected());
        assert_eq!(Instant::now() - start, Duration::from_millis(500));
        let err = svc.ready().await.unwrap().call(Request::new(0)).await;
        assert!(err.is_err());
        assert_eq!(
            connectivity.last_error().as_deref(),
            Some("connection refused")
        );
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(404))
            .await
            .unwrap();
        assert!(connectivity.is_connected());
        assert_eq!(Instant::now() - start, Duration::from_millis(1500));
    }
}
