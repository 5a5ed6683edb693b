//! ServiceCIDRs are optional: an API server that does not serve them (before
//! Kubernetes 1.33) or a ClusterRole without them must not hold up the first sync,
//! must not count as "API server unreachable", and must not spam the log; once they
//! can be read, they are picked up without a restart.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod fake_api;
#[allow(dead_code)]
mod support;

use std::time::Duration;

use fake_api::{FakeApi, Resource};
use support::{NODE, node, service, service_cidr, start_source, test_config};

fn cluster(fake: &FakeApi) {
    fake.put(Resource::Services, &service("ns", "web", "10.96.0.10", 80));
    fake.put(Resource::Nodes, &node(NODE, "192.168.1.10", "zone-a"));
    fake.put(
        Resource::ServiceCidrs,
        &service_cidr("kubernetes", &["10.96.0.0/16"]),
    );
}

fn cidrs(c: &mut support::Collector) -> Vec<String> {
    let state = c.store.snapshot();
    state.service_cidrs.iter().map(|n| n.to_string()).collect()
}

/// Refused with `code`: the source syncs without ServiceCIDRs, says why once (however
/// often it asks again), stays "connected", and takes them in once they are served.
async fn refused_then_served(code: u16, says: &str) {
    let fake = FakeApi::start().await;
    cluster(&fake);
    fake.refuse(Resource::ServiceCidrs, Some(code));
    let (mut c, handle) = start_source(&fake, test_config()).await;
    c.until("synced without ServiceCIDRs", |c| c.synced.is_some())
        .await;
    assert_eq!(c.synced, Some(true));
    assert!(cidrs(&mut c).is_empty());
    assert!(
        c.store.snapshot().families[0].services.len() == 1,
        "the Service is there"
    );
    // Several retries (every 300 ms in tests), one message.
    c.idle(Duration::from_millis(1200)).await;
    let asked = fake
        .requests()
        .iter()
        .filter(|r| r.path == Resource::ServiceCidrs.path())
        .count();
    assert!(asked >= 3, "asked again: {asked} requests");
    assert_eq!(c.errors.len(), 1, "{:#?}", c.errors);
    assert!(
        c.errors[0].starts_with("servicecidrs: ") && c.errors[0].contains(says),
        "{}",
        c.errors[0]
    );
    assert!(handle.connectivity().is_connected());

    fake.refuse(Resource::ServiceCidrs, None);
    c.until("ServiceCIDRs once served", |c| cidrs(c) == ["10.96.0.0/16"])
        .await;
    assert!(
        c.events
            .iter()
            .any(|e| e.starts_with("listed servicecidrs")),
        "{:#?}",
        c.events
    );
    c.converge(&fake, "everything").await;
}

#[tokio::test]
async fn not_served_does_not_hold_up_the_first_sync() {
    refused_then_served(404, "not served by this API server").await;
}

#[tokio::test]
async fn forbidden_does_not_hold_up_the_first_sync() {
    refused_then_served(
        403,
        "grant list and watch on networking.k8s.io servicecidrs",
    )
    .await;
}

/// A server error on ServiceCIDRs is not a refusal: the first sync waits for them,
/// as for every other kind (a 5xx says nothing about whether they exist).
#[tokio::test]
async fn server_errors_still_hold_up_the_first_sync() {
    let fake = FakeApi::start().await;
    cluster(&fake);
    fake.refuse(Resource::ServiceCidrs, Some(500));
    let (mut c, _handle) = start_source(&fake, test_config()).await;
    c.until("failed lists", |c| c.errors.len() >= 3).await;
    assert_eq!(c.synced, None, "{:#?}", c.events);
    fake.refuse(Resource::ServiceCidrs, None);
    c.converge(&fake, "sync once ServiceCIDRs list").await;
    assert_eq!(cidrs(&mut c), ["10.96.0.0/16"]);
}
