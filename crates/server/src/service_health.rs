//! Service health-check node ports: for every LoadBalancer Service with
//! `externalTrafficPolicy: Local`, an HTTP listener on its `healthCheckNodePort`
//! answering 200 while this node has ready local endpoints for it (and the proxy is
//! healthy), 503 otherwise, with upstream's JSON body (`pkg/proxy/healthcheck/
//! service_health.go`). Cloud load balancers probe it to send traffic only to nodes
//! that can serve it. Listeners open and close as Services change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

use crate::ProxyHealth;

/// What one health-check node port reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthCheck {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Ready endpoints of the Service on this node (all ports and families).
    pub local_endpoints: usize,
}

struct Open {
    check: Arc<Mutex<HealthCheck>>,
    task: JoinHandle<()>,
}

/// The open health-check listeners.
pub struct ServiceHealthServers {
    health: Arc<ProxyHealth>,
    open: HashMap<SocketAddr, Open>,
}

impl std::fmt::Debug for ServiceHealthServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHealthServers")
            .field("open", &self.open.keys().collect::<Vec<_>>())
            .finish()
    }
}

type Shared = (Arc<Mutex<HealthCheck>>, Arc<ProxyHealth>);

async fn answer(State((check, health)): State<Shared>) -> Response {
    let check = check.lock().map(|c| c.clone()).unwrap_or_default();
    // Upstream: the proxy's own health (as /livez), ignoring the Node's state.
    let healthy = health.check(SystemTime::now()).healthy;
    let code = if check.local_endpoints > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
        check.namespace, check.name, check.local_endpoints, healthy
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    (code, headers, body).into_response()
}

impl ServiceHealthServers {
    /// No listeners yet; `health` gives the proxy's health for the answers.
    pub fn new(health: Arc<ProxyHealth>) -> Self {
        Self {
            health,
            open: HashMap::new(),
        }
    }

    /// The addresses listened on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.open.keys().copied().collect();
        v.sort();
        v
    }

    /// Makes the listeners match `wanted` (address -> what it reports): opens new
    /// ones, updates counts, closes the others. Must run inside a tokio runtime.
    /// Returns one line per address that could not be bound (the others work).
    pub fn sync(&mut self, wanted: HashMap<SocketAddr, HealthCheck>) -> Vec<String> {
        let gone: Vec<SocketAddr> = self
            .open
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(o) = self.open.remove(&addr) {
                o.task.abort();
            }
        }
        let mut errors = Vec::new();
        for (addr, check) in wanted {
            if let Some(o) = self.open.get(&addr) {
                if let Ok(mut c) = o.check.lock() {
                    *c = check;
                }
                continue;
            }
            let listener = match std::net::TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(l) => l,
                Err(e) => {
                    errors.push(format!(
                        "health check node port {addr} of Service {}/{}: {e}",
                        check.namespace, check.name
                    ));
                    continue;
                }
            };
            let shared = Arc::new(Mutex::new(check));
            let router = Router::new()
                .fallback(answer)
                .with_state((shared.clone(), self.health.clone()));
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            self.open.insert(
                addr,
                Open {
                    check: shared,
                    task,
                },
            );
        }
        errors
    }
}

impl Drop for ServiceHealthServers {
    fn drop(&mut self) {
        for o in self.open.values() {
            o.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn get(addr: SocketAddr) -> Result<(u16, String), std::io::Error> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut t = String::new();
        s.read_to_string(&mut t)?;
        let code = t.split_whitespace().nth(1).unwrap().parse().unwrap();
        Ok((code, t.split_once("\r\n\r\n").unwrap().1.to_string()))
    }

    /// 200 with local endpoints, 503 after they go, closed once the Service is gone;
    /// upstream's body, over real HTTP on loopback.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_answer_close() {
        let health = Arc::new(ProxyHealth::new(
            Duration::from_secs(60),
            &["IPv4"],
            SystemTime::now(),
        ));
        let mut servers = ServiceHealthServers::new(health);
        // A free port on loopback.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let check = |n| HealthCheck {
            namespace: "shop".into(),
            name: "web".into(),
            local_endpoints: n,
        };
        let errors = servers.sync(HashMap::from([(addr, check(2))]));
        assert!(errors.is_empty(), "{errors:?}");
        let (code, body) = tokio::task::spawn_blocking(move || get(addr))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 200);
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"shop\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        servers.sync(HashMap::from([(addr, check(0))]));
        let (code, body) = tokio::task::spawn_blocking(move || get(addr))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 503);
        assert!(body.contains("\"localEndpoints\": 0"), "{body}");
        servers.sync(HashMap::new());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = tokio::task::spawn_blocking(move || get(addr))
            .await
            .unwrap();
        assert!(
            r.is_err(),
            "the port is closed after the Service is gone: {r:?}"
        );
        assert!(servers.addresses().is_empty());
    }
}
