//! The API source against a fake API server speaking the real list/watch protocol.
//! No test contacts a real cluster.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod fake_api;
#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use fake_api::{FakeApi, GoneMode, Resource};
use kpr_model::Change;
use serde_json::json;
use support::{NODE, describe, node, service, service_cidr, slice, start_source, test_config};

/// A small cluster: two proxied Services with slices, objects the selectors exclude,
/// this node and another one.
fn populate(fake: &FakeApi) {
    fake.put(Resource::Services, &service("ns", "web", "10.96.0.10", 80));
    fake.put(Resource::Services, &service("ns", "db", "10.96.0.11", 5432));
    fake.put(
        Resource::EndpointSlices,
        &slice("ns", "web-1", "web", &["10.1.0.1", "10.1.0.2"]),
    );
    fake.put(
        Resource::EndpointSlices,
        &slice("ns", "db-1", "db", &["10.1.0.3"]),
    );
    // Excluded on the server by upstream's selectors.
    let mut other_proxy = service("ns", "other", "10.96.0.12", 80);
    other_proxy.metadata.labels = Some(
        [(
            "service.kubernetes.io/service-proxy-name".to_string(),
            "foo".to_string(),
        )]
        .into(),
    );
    fake.put(Resource::Services, &other_proxy);
    fake.put(Resource::Services, &service("ns", "headless", "None", 80));
    let mut headless_slice = slice("ns", "headless-1", "headless", &["10.1.0.9"]);
    headless_slice
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("service.kubernetes.io/headless".into(), String::new());
    fake.put(Resource::EndpointSlices, &headless_slice);
    fake.put(Resource::Nodes, &node(NODE, "192.168.1.10", "zone-a"));
    fake.put(Resource::Nodes, &node("node-b", "192.168.1.11", "zone-b"));
    fake.put(
        Resource::ServiceCidrs,
        &service_cidr("kubernetes", &["10.96.0.0/16", "fd00:10:96::/112"]),
    );
}

fn deletions(changes: &[String]) -> Vec<&String> {
    changes.iter().filter(|c| c.contains("- ")).collect()
}

/// The first lists of all four kinds come before `Synced` (so the sync loop never
/// programs a partial view), the model then equals the server's objects, and watch
/// events that follow (add, update, delete, leaving a selector) arrive as changes.
#[tokio::test]
async fn initial_lists_then_watch_yield_the_right_changes() {
    let fake = FakeApi::start().await;
    populate(&fake);
    let (mut c, handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "initial sync").await;
    assert_eq!(c.synced, Some(true), "this node's Node was listed");
    let synced_at = c
        .events
        .iter()
        .position(|e| e.starts_with("synced"))
        .unwrap();
    let listed: BTreeSet<&str> = c.events[..synced_at]
        .iter()
        .filter_map(|e| e.strip_prefix("listed "))
        .map(|e| e.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["endpointslices", "node", "servicecidrs", "services"])
    );
    assert!(
        c.events[..synced_at]
            .iter()
            .all(|e| e.starts_with("listed ")),
        "{:#?}",
        c.events
    );
    // The server-side selectors kept these out entirely.
    for excluded in ["ns/other", "ns/headless", "node-b"] {
        assert!(
            !c.changes.iter().any(|l| l.contains(excluded)),
            "{excluded} delivered: {:?}",
            c.changes
        );
    }
    assert!(handle.connectivity().is_connected());
    let synced_changes = c.changes.len();

    fake.put(Resource::Services, &service("ns", "api", "10.96.0.20", 443));
    fake.put(
        Resource::EndpointSlices,
        &slice("ns", "api-1", "api", &["10.1.0.7"]),
    );
    fake.put(
        Resource::EndpointSlices,
        &slice("ns", "web-1", "web", &["10.1.0.1"]),
    );
    fake.delete(Resource::EndpointSlices, "ns", "db-1");
    let mut leaving = service("ns", "db", "10.96.0.11", 5432);
    leaving.metadata.labels = Some(
        [(
            "service.kubernetes.io/service-proxy-name".to_string(),
            "foo".to_string(),
        )]
        .into(),
    );
    fake.put(Resource::Services, &leaving);
    fake.put(
        Resource::ServiceCidrs,
        &service_cidr("extra", &["172.30.0.0/16"]),
    );
    fake.delete(Resource::ServiceCidrs, "", "kubernetes");
    c.until("the watch changes", |c| {
        let after_sync = &c.changes[synced_changes..];
        ["slice- ns/db-1", "service- ns/db", "cidr- kubernetes"]
            .iter()
            .all(|l| after_sync.iter().any(|c| c == l))
            && after_sync.iter().any(|l| l.starts_with("service+ ns/api@"))
            && after_sync.iter().any(|l| l.starts_with("slice+ ns/api-1@"))
            && after_sync.iter().any(|l| l.starts_with("slice+ ns/web-1@"))
            && after_sync.iter().any(|l| l.starts_with("cidr+ extra@"))
    })
    .await;
    c.converge(&fake, "watch changes").await;
    let cidrs: Vec<String> = c
        .store
        .snapshot()
        .service_cidrs
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(cidrs, ["172.30.0.0/16"]);
    assert!(c.events.iter().any(|e| e.starts_with("changes ")));
}

/// An update is delivered exactly once, however the watch continues: bookmarks, a
/// cleanly ended watch (server timeout) and a re-watch from the last resourceVersion.
#[tokio::test]
async fn an_update_arrives_once() {
    let fake = FakeApi::start().await;
    populate(&fake);
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "initial sync").await;
    let rv = fake.put(
        Resource::EndpointSlices,
        &slice("ns", "web-1", "web", &["10.1.0.5"]),
    );
    let line = format!("slice+ ns/web-1@{rv}");
    c.until("the update", |c| c.count(&line) == 1).await;
    fake.bookmark();
    let before = fake.requests().len();
    fake.end_watches();
    c.idle(Duration::from_millis(300)).await;
    assert_eq!(
        fake.open_watches(),
        Resource::ALL.len(),
        "watches re-opened"
    );
    // Re-opened where the bookmark said, not from the start and not with a re-list.
    let rewatches: Vec<_> = fake.requests()[before..].to_vec();
    assert_eq!(rewatches.len(), Resource::ALL.len(), "{rewatches:?}");
    for r in &rewatches {
        assert!(r.is_watch(), "{r:?}");
        assert_eq!(r.query["resourceVersion"], rv.to_string());
    }
    let rv2 = fake.put(Resource::Services, &service("ns", "db", "10.96.0.11", 5433));
    c.until("a later update", |c| {
        c.count(&format!("service+ ns/db@{rv2}")) == 1
    })
    .await;
    fake.end_watches();
    c.idle(Duration::from_millis(300)).await;
    assert_eq!(c.count(&line), 1, "{:#?}", c.events);
    assert_eq!(c.count(&format!("service+ ns/db@{rv2}")), 1);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
}

/// A watch connection dropped mid-stream resumes from the last resourceVersion: the
/// events missed meanwhile arrive once each, nothing is lost, nothing duplicated.
#[tokio::test]
async fn dropped_watch_recovers_without_loss_or_duplicates() {
    let fake = FakeApi::start().await;
    populate(&fake);
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "initial sync").await;
    fake.break_watches();
    let rv_a = fake.put(Resource::Services, &service("ns", "api", "10.96.0.20", 443));
    let rv_s = fake.put(
        Resource::EndpointSlices,
        &slice("ns", "web-1", "web", &["10.1.0.8"]),
    );
    fake.delete(Resource::EndpointSlices, "ns", "db-1");
    c.converge(&fake, "recovery").await;
    c.idle(Duration::from_millis(200)).await;
    assert_eq!(c.count(&format!("service+ ns/api@{rv_a}")), 1);
    assert_eq!(c.count(&format!("slice+ ns/web-1@{rv_s}")), 1);
    assert_eq!(c.count("slice- ns/db-1"), 1);
    // No object was re-delivered at a version already delivered.
    let upserts: Vec<&String> = c.changes.iter().filter(|l| l.contains("+ ")).collect();
    let unique: BTreeSet<&&String> = upserts.iter().collect();
    assert_eq!(upserts.len(), unique.len(), "{upserts:#?}");
    assert!(
        !c.events.iter().any(|e| e.starts_with("relisted")),
        "resumed, not re-listed"
    );
}

async fn gone_relists_as_a_replacement(mode: GoneMode) {
    let fake = FakeApi::start().await;
    fake.set_gone_mode(mode);
    populate(&fake);
    fake.put(
        Resource::Services,
        &service("ns", "cache", "10.96.0.13", 6379),
    );
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "initial sync").await;
    fake.break_watches();
    let rv_web = fake.put(
        Resource::Services,
        &service("ns", "web", "10.96.0.10", 8080),
    );
    fake.delete(Resource::Services, "ns", "db");
    let rv_api = fake.put(Resource::Services, &service("ns", "api", "10.96.0.20", 443));
    fake.compact();
    c.converge(&fake, "re-list after 410").await;
    c.idle(Duration::from_millis(200)).await;
    let relisted: Vec<&String> = c
        .events
        .iter()
        .filter(|e| e.starts_with("relisted services"))
        .collect();
    assert_eq!(relisted.len(), 1, "{:#?}", c.events);
    // Exactly the difference: no re-delivery of the unchanged `ns/cache`.
    assert_eq!(
        relisted[0],
        &format!(
            "relisted services [\"service+ ns/api@{rv_api}\", \"service+ ns/web@{rv_web}\", \"service- ns/db\"]"
        )
    );
    for kind in ["endpointslices", "node"] {
        assert!(
            c.events.contains(&format!("relisted {kind} []")),
            "{kind}: {:#?}",
            c.events
        );
    }
    assert!(
        c.errors
            .iter()
            .any(|e| e.contains("410") || e.contains("too old")),
        "{:?}",
        c.errors
    );
    assert_eq!(c.count("service- ns/cache"), 0);
}

/// `410 Gone` as the real API server sends it (an `ERROR` event on the watch) makes
/// the source re-list, delivered as the exact difference to what it had.
#[tokio::test]
async fn gone_event_relists_as_a_replacement() {
    gone_relists_as_a_replacement(GoneMode::Event).await;
}

/// `410 Gone` as an HTTP status on the watch request also leads to a re-list (kube-rs
/// alone would retry the same resourceVersion forever).
#[tokio::test]
async fn gone_status_relists_as_a_replacement() {
    gone_relists_as_a_replacement(GoneMode::HttpStatus).await;
}

/// While the API server is unreachable the source keeps retrying, reports the
/// errors and the lost connection, and delivers no deletion; when the server comes
/// back, what changed meanwhile arrives.
#[tokio::test]
async fn unreachable_server_yields_no_deletions_and_retries() {
    let mut fake = FakeApi::start().await;
    populate(&fake);
    let (mut c, handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "initial sync").await;
    let changes_before = c.changes.len();
    fake.stop().await;
    c.until("several failed retries", |c| c.errors.len() >= 6)
        .await;
    assert!(!handle.connectivity().is_connected());
    assert!(handle.connectivity().last_error().is_some());
    assert_eq!(c.changes.len(), changes_before, "{:#?}", c.events);
    // Still what it was: nothing removed from the model.
    assert!(support::same_state(
        &c.store.snapshot(),
        &support::expected_state(&fake)
    ));
    // Changes made while it was unreachable arrive after it comes back.
    fake.delete(Resource::Services, "ns", "db");
    fake.restart().await;
    c.converge(&fake, "reconnect").await;
    assert!(deletions(&c.changes[changes_before..]) == vec!["service- ns/db"]);
    c.until("connected", |_| handle.connectivity().is_connected())
        .await;
}

/// A source started while the API server is down sends errors but no `Synced` (so
/// nothing is programmed, and no "empty cluster" is taken for real); it syncs once
/// the server appears.
#[tokio::test]
async fn unreachable_at_start_waits_for_the_first_lists() {
    let mut fake = FakeApi::start().await;
    populate(&fake);
    fake.stop().await;
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.until("failed lists", |c| c.errors.len() >= 6).await;
    assert_eq!(c.synced, None);
    assert!(c.changes.is_empty());
    fake.restart().await;
    c.converge(&fake, "late sync").await;
}

/// 5xx answers are reported and retried until the lists succeed.
#[tokio::test]
async fn server_errors_are_retried() {
    let fake = FakeApi::start().await;
    populate(&fake);
    fake.fail_next(&[500, 500, 500, 500]);
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "sync despite 5xx").await;
    assert!(c.errors.len() >= 4, "{:?}", c.errors);
    assert!(
        c.errors.iter().all(|e| e.contains("injected failure")),
        "{:?}",
        c.errors
    );
}

/// Upstream's label and field selectors are sent on every list and watch, with
/// bookmarks requested on watches.
#[tokio::test]
async fn selectors_are_sent() {
    let fake = FakeApi::start().await;
    populate(&fake);
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "initial sync").await;
    c.until("every watch", |_| {
        fake.open_watches() == Resource::ALL.len()
    })
    .await;
    let requests = fake.requests();
    let expect = [
        (
            Resource::Services,
            Some("!service.kubernetes.io/service-proxy-name"),
            Some("spec.clusterIP!=None"),
        ),
        (
            Resource::EndpointSlices,
            Some("!service.kubernetes.io/headless"),
            None,
        ),
        (Resource::Nodes, None, Some("metadata.name=node-a")),
        (Resource::ServiceCidrs, None, None),
    ];
    for (resource, labels, fields) in expect {
        let mine: Vec<_> = requests
            .iter()
            .filter(|r| r.path == resource.path())
            .collect();
        assert!(mine.iter().any(|r| !r.is_watch()), "{resource:?} listed");
        assert!(mine.iter().any(|r| r.is_watch()), "{resource:?} watched");
        for r in mine {
            assert_eq!(
                r.query.get("labelSelector").map(String::as_str),
                labels,
                "{r:?}"
            );
            assert_eq!(
                r.query.get("fieldSelector").map(String::as_str),
                fields,
                "{r:?}"
            );
            if r.is_watch() {
                assert_eq!(r.query["allowWatchBookmarks"], "true");
                assert!(r.query.contains_key("resourceVersion"));
            }
        }
    }
}

/// A malformed object is reported with its field path and skipped; the last good
/// version stays in effect and the stream goes on.
#[tokio::test]
async fn malformed_object_never_ends_the_stream() {
    let fake = FakeApi::start().await;
    populate(&fake);
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "initial sync").await;
    let mut bad = serde_json::to_value(service("ns", "web", "10.96.0.10", 80)).unwrap();
    bad["spec"]["ports"] = json!("oops");
    fake.put_raw(Resource::Services, bad);
    let rv = fake.put(Resource::Services, &service("ns", "api", "10.96.0.20", 443));
    c.until("the next object", |c| {
        c.count(&format!("service+ ns/api@{rv}")) == 1
    })
    .await;
    let invalid: Vec<&String> = c.errors.iter().filter(|e| e.contains("ns/web")).collect();
    assert_eq!(invalid.len(), 1, "{:?}", c.errors);
    assert!(invalid[0].contains("spec.ports"), "{}", invalid[0]);
    let state = c.store.snapshot();
    let web = state.families[0]
        .services
        .keys()
        .find(|n| &*n.name == "web")
        .cloned();
    assert!(web.is_some(), "the last good ns/web stays");
    assert!(!c.changes.iter().any(|l| l == "service- ns/web"));
}

/// Slices are delivered converted (managedFields and the rest of the metadata are not
/// held), and the EndpointSlice trigger-time
/// annotation is exposed with its Service for the programming-latency metric.
#[tokio::test]
async fn managed_fields_dropped_and_trigger_time_exposed() {
    let fake = FakeApi::start().await;
    populate(&fake);
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.converge(&fake, "initial sync").await;
    let when = std::time::SystemTime::now() + Duration::from_secs(1);
    let stamp = k8s_openapi::jiff::Timestamp::try_from(when)
        .unwrap()
        .to_string();
    let mut s = serde_json::to_value(slice("ns", "web-1", "web", &["10.1.0.4"])).unwrap();
    s["metadata"]["annotations"] =
        json!({"endpoints.kubernetes.io/last-change-trigger-time": stamp});
    s["metadata"]["managedFields"] = json!([{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "discovery.k8s.io/v1"}]);
    let rv = fake.put_raw(Resource::EndpointSlices, s);
    let line = format!("slice+ ns/web-1@{rv}");
    c.until("the annotated slice", |c| c.count(&line) == 1)
        .await;
    let batch = c
        .batches
        .iter()
        .find(|b| b.changes.iter().any(|ch| describe(ch) == line))
        .unwrap();
    // The slice arrives converted into the model's form: nothing of its metadata
    // (managed fields and all) is held past decoding.
    assert!(
        batch
            .changes
            .iter()
            .all(|ch| matches!(ch, Change::Converted(_))),
        "{:?}",
        batch.changes
    );
    assert_eq!(batch.trigger_times.len(), 1);
    assert_eq!(batch.trigger_times[0].service.to_string(), "ns/web");
    assert_eq!(batch.trigger_times[0].at, when);
    // Initial-list slices carry no trigger time (they predate the source).
    assert!(c.batches.iter().take(3).all(|b| b.trigger_times.is_empty()));
}

/// Large lists are paged with `limit`/`continue` and arrive complete.
#[tokio::test]
async fn paged_initial_list() {
    let fake = FakeApi::start().await;
    populate(&fake);
    for i in 0..7 {
        fake.put(
            Resource::Services,
            &service("bulk", &format!("s{i}"), &format!("10.96.1.{i}"), 80),
        );
    }
    let mut config = test_config();
    config.page_size = Some(3);
    let (mut c, _handle) = start_source(&fake, config).await;
    c.converge(&fake, "paged sync").await;
    let continued = fake
        .requests()
        .iter()
        .filter(|r| r.path == Resource::Services.path() && r.query.contains_key("continue"))
        .count();
    assert_eq!(continued, 2, "9 services in pages of 3");
}

/// A kubeconfig's token is sent, and `--master` replaces its server.
#[tokio::test]
async fn kubeconfig_token_and_master_override() {
    let fake = FakeApi::start().await;
    populate(&fake);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig.conf");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://192.0.2.1:6443\n\
         contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n\
         users:\n- name: u\n  user:\n    token: s3cr3t\n",
    )
    .unwrap();
    let settings = kpr_kube_source::ClientSettings {
        kubeconfig: Some(path),
        master: Some(fake.url()),
        qps: 50.0,
        burst: 100,
        ..Default::default()
    };
    let api = kpr_kube_source::connect(&settings).await.unwrap();
    assert_eq!(api.url, format!("{}/", fake.url()));
    let (rx, _handle) = kpr_kube_source::spawn(&api, test_config());
    drop(rx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = fake.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer s3cr3t")),
        "{requests:?}"
    );
}

/// The event recorder posts `events.k8s.io/v1` Events regarding the Node, in order,
/// without blocking the caller.
#[tokio::test]
async fn node_events_are_posted() {
    let fake = FakeApi::start().await;
    let settings = kpr_kube_source::ClientSettings {
        master: Some(fake.url()),
        qps: 50.0,
        burst: 100,
        ..Default::default()
    };
    let api = kpr_kube_source::connect(&settings).await.unwrap();
    let recorder = kpr_kube_source::EventRecorder::start(&api, "node-a", "host-a");
    for reason in ["Starting", "SyncProxyRulesFailed"] {
        recorder.record(kpr_kube_source::NodeEvent {
            type_: kpr_kube_source::EventType::Warning,
            reason: reason.into(),
            action: "SyncProxyRules".into(),
            note: "x".into(),
        });
    }
    let start = std::time::Instant::now();
    while fake.events().len() < 2 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = fake.events();
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["Starting", "SyncProxyRulesFailed"]);
    assert_eq!(events[0]["regarding"]["kind"], "Node");
    assert_eq!(events[0]["regarding"]["name"], "node-a");
}
