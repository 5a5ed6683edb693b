//! The HTTP endpoints operators look at, with upstream kube-proxy's paths, bodies and
//! metric names: `/healthz` and `/livez` on the health port, `/metrics`,
//! `/proxyMode` and `/configz` on the metrics port.

pub mod health;
pub mod http;
pub mod metrics;
pub mod process;
pub mod service_health;

pub use health::ProxyHealth;
pub use http::{ServerState, health_router, metrics_router, serve};
pub use metrics::Metrics;
pub use service_health::{HealthCheck, ServiceHealthServers};
