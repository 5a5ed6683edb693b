//! The HTTP servers: health (`healthzBindAddress`, default 0.0.0.0:10256) and metrics
//! (`metricsBindAddress`, default 127.0.0.1:10249), with upstream's paths and bodies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::health::{ProxyHealth, go_time};
use crate::metrics::{CodeLabel, Metrics};

/// What the handlers serve.
#[derive(Debug)]
pub struct ServerState {
    /// Proxy health.
    pub health: Arc<ProxyHealth>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The registry holding them.
    pub registry: Arc<Registry>,
    /// `iptables`, `ipvs` or `nftables` (served at `/proxyMode`).
    pub proxy_mode: String,
    /// The effective configuration (served at `/configz`).
    pub configz: serde_json::Value,
}

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for {what}")]
pub struct BindError {
    /// What the server is for.
    pub what: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

fn json(status: StatusCode, body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    (status, headers, body).into_response()
}

async fn healthz(State(s): State<Arc<ServerState>>) -> Response {
    health_response(&s, true)
}

async fn livez(State(s): State<Arc<ServerState>>) -> Response {
    health_response(&s, false)
}

fn health_response(s: &ServerState, with_node: bool) -> Response {
    let now = SystemTime::now();
    let v = s.health.check(now);
    let healthy = v.healthy && (!with_node || v.node_eligible);
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let family = if with_node {
        &s.metrics.healthz_total
    } else {
        &s.metrics.livez_total
    };
    family
        .get_or_create(&CodeLabel {
            code: code.as_u16().to_string(),
        })
        .inc();
    // Upstream reports "now" as lastUpdated when healthy, for compatibility.
    let last = if healthy { Some(now) } else { v.last_updated };
    let last = last.map(go_time).unwrap_or_default();
    let body = if with_node {
        format!(
            "{{\"lastUpdated\": {last:?},\"currentTime\": {:?}, \"nodeEligible\": {}}}",
            go_time(now),
            v.node_eligible
        )
    } else {
        format!(
            "{{\"lastUpdated\": {last:?},\"currentTime\": {:?}}}",
            go_time(now)
        )
    };
    json(code, body)
}

async fn metrics(State(s): State<Arc<ServerState>>) -> Response {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &s.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn proxy_mode(State(s): State<Arc<ServerState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        s.proxy_mode.clone(),
    )
        .into_response()
}

async fn configz(State(s): State<Arc<ServerState>>) -> Response {
    let body = serde_json::json!({ "kubeproxy.config.k8s.io": s.configz });
    json(StatusCode::OK, body.to_string())
}

async fn ok() -> &'static str {
    "ok"
}

/// The health server's routes: `/healthz`, `/livez`.
pub fn health_router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(state)
}

/// The metrics server's routes: `/metrics`, `/proxyMode`, `/configz`, `/healthz`.
pub fn metrics_router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/proxyMode", get(proxy_mode))
        .route("/configz", get(configz))
        .route("/healthz", get(ok))
        .with_state(state)
}

/// Binds `addr` and serves `router` on a background task; returns the bound address
/// (useful when the port was 0).
pub async fn serve(
    what: &'static str,
    addr: SocketAddr,
    router: Router,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), BindError> {
    let listener =
        TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { what, addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BindError { what, addr, source })?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(server = what, error = %e, "HTTP server stopped");
        }
    });
    Ok((bound, task))
}
