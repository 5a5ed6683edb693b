//! The binary against an API server: kube-proxy-rs in a network namespace watches a
//! fake API server (the real list/watch wire protocol, see kpr-kube-source's tests)
//! and programs nftables from it; follows changes (ServiceCIDRs included); keeps its rules while the API
//! server is down and catches up when it returns; reports programming latency; and
//! turns `/healthz` unhealthy when its Node is deleted. Needs root.

#![allow(clippy::unwrap_used)]

#[path = "../../kube-source/tests/fake_api/mod.rs"]
#[allow(dead_code)]
mod fake_api;
#[path = "../../kube-source/tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_api::{FakeApi, Resource};
use kpr_netns_lab::Netns;
use kpr_netns_lab::client::http_get_here;
use support::{NODE, node, service, service_cidr, slice};

/// Kills the proxy when the test ends, however it ends.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nft(ns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "ip",
            "kube-proxy",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls (every 10 ms, at most `limit`) until `f` holds; returns how long it took.
async fn until(
    what: &str,
    limit: Duration,
    log: &std::path::Path,
    mut f: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{what}: not within {limit:?}; proxy log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// One HTTP GET on this namespace's loopback: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    http_get_here(addr, path, Duration::from_secs(5)).unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn with_trigger_time(
    mut s: k8s_openapi::api::discovery::v1::EndpointSlice,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    s.metadata.annotations = Some(
        [(
            "endpoints.kubernetes.io/last-change-trigger-time".to_string(),
            now,
        )]
        .into(),
    );
    s
}

async fn scenario(ns: String, dir: std::path::PathBuf) {
    let log = dir.join("proxy.log");
    let mut fake = FakeApi::start().await;
    fake.put(Resource::Nodes, &node(NODE, "10.0.0.1", "zone-a"));
    fake.put(
        Resource::Services,
        &service("default", "web", "10.96.0.10", 80),
    );
    fake.put(
        Resource::EndpointSlices,
        &slice("default", "web-1", "web", &["10.244.1.5"]),
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_kube-proxy-rs")])
        .args([
            &format!("--master={}", fake.url()),
            "--proxy-mode=nftables",
            &format!("--hostname-override={NODE}"),
            "--metrics-bind-address=127.0.0.1:10249",
            "--healthz-bind-address=127.0.0.1:10256",
            "--iptables-min-sync-period=0s",
            "--v=2",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _proxy = Proxy(child);
    let limit = Duration::from_secs(20);

    let first = until("first sync from the API", limit, &log, || {
        let t = nft(&ns);
        t.contains("10.96.0.10 . tcp . 80") && t.contains("10.244.1.5")
    })
    .await;
    eprintln!("first full sync from the API server after start: {first:?}");
    // Upstream's start-up event, regarding the Node.
    until("Starting event", limit, &log, || {
        fake.events()
            .iter()
            .any(|e| e["reason"] == "Starting" && e["regarding"]["name"] == NODE)
    })
    .await;

    // An endpoint change (with the EndpointSlice controller's trigger time).
    let started = Instant::now();
    fake.put(
        Resource::EndpointSlices,
        &with_trigger_time(slice(
            "default",
            "web-1",
            "web",
            &["10.244.1.5", "10.244.1.6"],
        )),
    );
    until("endpoint added", limit, &log, || {
        nft(&ns).contains("10.244.1.6")
    })
    .await;
    eprintln!(
        "watch event to rules in the kernel (polled): {:?}",
        started.elapsed()
    );

    // A second Service, then the first one deleted.
    fake.put(
        Resource::Services,
        &service("default", "db", "10.96.0.20", 5432),
    );
    fake.put(
        Resource::EndpointSlices,
        &slice("default", "db-1", "db", &["10.244.1.7"]),
    );
    fake.delete(Resource::Services, "default", "web");
    until("web deleted, db added", limit, &log, || {
        let t = nft(&ns);
        !t.contains("10.96.0.10 . tcp . 80") && t.contains("10.96.0.20 . tcp . 5432")
    })
    .await;

    // A ServiceCIDR: traffic to its unallocated addresses is dropped from then on.
    assert!(!nft(&ns).contains("10.96.0.0/16"));
    fake.put(
        Resource::ServiceCidrs,
        &service_cidr("kubernetes", &["10.96.0.0/16"]),
    );
    until("ServiceCIDR programmed", limit, &log, || {
        nft(&ns).contains("ip daddr 10.96.0.0/16 drop")
    })
    .await;

    // The API server goes away: the rules stay; it comes back: changes flow again.
    fake.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = nft(&ns);
    assert!(
        t.contains("10.96.0.20 . tcp . 5432"),
        "rules stay while the API server is down:\n{t}"
    );
    let (code, _) = get(10256, "/healthz");
    assert_eq!(
        code, 200,
        "an unreachable API server queues nothing: still healthy"
    );
    fake.restart().await;
    fake.put(
        Resource::Services,
        &service("default", "cache", "10.96.0.30", 6379),
    );
    until(
        "change after the API server returned",
        Duration::from_secs(60),
        &log,
        || nft(&ns).contains("10.96.0.30 . tcp . 6379"),
    )
    .await;
    assert!(
        nft(&ns).contains("10.96.0.20 . tcp . 5432"),
        "no rewrite storm lost db"
    );

    let (code, text) = get(10249, "/metrics");
    assert_eq!(code, 200);
    // Process metrics as every Go program (upstream kube-proxy included) exports.
    assert!(
        text.lines()
            .any(|l| l.starts_with("process_cpu_seconds_total ")),
        "{text}"
    );
    assert!(
        metric(&text, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
    assert!(metric(&text, "process_open_fds") >= 3.0, "{text}");
    assert!(
        metric(&text, "process_start_time_seconds") > 1.7e9,
        "{text}"
    );
    assert!(
        metric(&text, "kubeproxy_sync_proxy_rules_service_changes_total") >= 3.0,
        "{text}"
    );
    assert!(
        metric(&text, "kubeproxy_sync_proxy_rules_endpoint_changes_total") >= 2.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "kubeproxy_network_programming_duration_seconds_count"
        ) >= 1.0,
        "the trigger time of the slice update is measured:\n{text}"
    );
    assert!(
        metric(&text, "kubeproxy_event_to_kernel_duration_seconds_count") >= 3.0,
        "{text}"
    );
    assert!(
        metric(&text, "kubeproxy_api_source_errors_total") >= 1.0,
        "the outage is counted:\n{text}"
    );

    // Programming the kernel fails (someone deleted the table, so the kernel refuses
    // the next partial sync): a Warning event on the Node says why; when it works
    // again (the retry is a full sync), a Normal event says so.
    let deleted = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "nft",
            "delete",
            "table",
            "ip",
            "kube-proxy",
        ])
        .status()
        .unwrap();
    assert!(deleted.success());
    fake.put(
        Resource::Services,
        &service("default", "queue", "10.96.0.40", 5672),
    );
    until("SyncProxyRulesFailed event", limit, &log, || {
        fake.events().iter().any(|e| {
            e["reason"] == "SyncProxyRulesFailed"
                && e["type"] == "Warning"
                && e["note"]
                    .as_str()
                    .unwrap_or("")
                    .contains("the kernel rejected the nftables transaction")
        })
    })
    .await;
    until(
        "recovered after the failure",
        Duration::from_secs(90),
        &log,
        || {
            nft(&ns).contains("10.96.0.40 . tcp . 5672")
                && fake
                    .events()
                    .iter()
                    .any(|e| e["reason"] == "SyncProxyRulesRecovered")
        },
    )
    .await;
    let failures = fake
        .events()
        .iter()
        .filter(|e| e["reason"] == "SyncProxyRulesFailed")
        .count();
    assert_eq!(
        failures, 1,
        "one event per run of failures, not one per retry"
    );

    // The Node is deleted: /healthz turns 503 (load balancers stop sending traffic),
    // /livez stays 200 (the proxy itself is fine).
    fake.delete(Resource::Nodes, "", NODE);
    until("healthz 503 after the Node is deleted", limit, &log, || {
        get(10256, "/healthz").0 == 503
    })
    .await;
    assert_eq!(get(10256, "/livez").0, 200);
}

#[test]
fn api_source_end_to_end() {
    let ns = Netns::new("api").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = ns.name().to_string();
    let path = dir.path().to_path_buf();
    let handle = ns
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(scenario(name, path));
        })
        .unwrap();
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}
