//! Test support: k8s-openapi object builders, a source connected to the fake API, and
//! a collector that applies events to a real `kpr_model::Store` and compares its
//! snapshot with the one built from the fake server's objects.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kpr_kube_source::{
    BackoffSettings, ChangeBatch, ClientSettings, SourceConfig, SourceEvent, SourceHandle,
};
use kpr_model::{Change, ObjectKind, Objects, ProxyState, Store};
use tokio::sync::mpsc;

use crate::fake_api::{FakeApi, Resource};

pub const NODE: &str = "node-a";

fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    }
}

/// A ClusterIP Service with one TCP port `http`.
pub fn service(namespace: &str, name: &str, cluster_ip: &str, port: i32) -> Service {
    Service {
        metadata: meta(Some(namespace), name, &[]),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: (cluster_ip != "None").then(|| vec![cluster_ip.into()]),
            type_: Some("ClusterIP".into()),
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An IPv4 EndpointSlice of `service` with ready endpoints on port 8080 (`http`).
pub fn slice(namespace: &str, name: &str, service: &str, ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: meta(
            Some(namespace),
            name,
            &[("kubernetes.io/service-name", service)],
        ),
        address_type: "IPv4".into(),
        endpoints: Some(
            ips.iter()
                .map(|ip| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(NODE.into()),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

/// A ServiceCIDR with these ranges.
pub fn service_cidr(name: &str, cidrs: &[&str]) -> ServiceCIDR {
    ServiceCIDR {
        metadata: meta(None, name, &[]),
        spec: Some(ServiceCIDRSpec {
            cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
        }),
        ..Default::default()
    }
}

/// A Node with one InternalIP and a zone label.
pub fn node(name: &str, ip: &str, zone: &str) -> Node {
    Node {
        metadata: meta(None, name, &[("topology.kubernetes.io/zone", zone)]),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Fast retries for tests.
pub fn test_config() -> SourceConfig {
    let mut config = SourceConfig::new(NODE);
    config.backoff = BackoffSettings {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        reset_after: Duration::from_secs(2),
        jitter: 0.0,
    };
    config.unavailable_retry = Duration::from_millis(300);
    config
}

/// A source watching `fake` as node [`NODE`].
pub async fn start_source(fake: &FakeApi, config: SourceConfig) -> (Collector, SourceHandle) {
    let settings = ClientSettings {
        master: Some(fake.url()),
        ..Default::default()
    };
    let api = kpr_kube_source::connect(&settings).await.unwrap();
    let (rx, handle) = kpr_kube_source::spawn(&api, config);
    (Collector::new(rx), handle)
}

/// One line per change: `service+ ns/name@rv`, `slice- ns/name`, `node+ name@rv`.
pub fn describe(change: &Change) -> String {
    fn id(m: &ObjectMeta) -> String {
        match &m.namespace {
            Some(ns) => format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
            None => m.name.clone().unwrap_or_default(),
        }
    }
    let rv = |m: &ObjectMeta| m.resource_version.clone().unwrap_or_default();
    match change {
        Change::ServiceUpsert(s) => format!("service+ {}@{}", id(&s.metadata), rv(&s.metadata)),
        Change::ServiceDelete(n) => format!("service- {n}"),
        Change::SliceUpsert(s) => format!("slice+ {}@{}", id(&s.metadata), rv(&s.metadata)),
        Change::SliceDelete(n) => format!("slice- {n}"),
        Change::NodeUpsert(n) => format!("node+ {}@{}", id(&n.metadata), rv(&n.metadata)),
        Change::NodeDelete(n) => format!("node- {n}"),
        Change::ServiceCidrUpsert(c) => format!("cidr+ {}@{}", id(&c.metadata), rv(&c.metadata)),
        Change::ServiceCidrDelete(n) => format!("cidr- {n}"),
        Change::Converted(c) => {
            let what = match c.kind() {
                ObjectKind::Service => "service",
                ObjectKind::EndpointSlice => "slice",
                _ => "endpoints",
            };
            format!("{what}+ {}@{}", c.key(), c.resource_version())
        }
        other => format!("{other:?}"),
    }
}

/// The model state the fake's objects produce (what the source must converge to).
pub fn expected_state(fake: &FakeApi) -> ProxyState {
    let decode = |r: Resource| fake.objects(r);
    let objects = Objects {
        services: decode(Resource::Services)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        slices: decode(Resource::EndpointSlices)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        endpoints: Vec::new(),
        converted: Vec::new(),
        nodes: decode(Resource::Nodes)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        service_cidrs: decode(Resource::ServiceCidrs)
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
    };
    let mut store = Store::new(NODE);
    store.replace_all(&objects);
    store.snapshot()
}

pub fn same_state(a: &ProxyState, b: &ProxyState) -> bool {
    a.families[0].services == b.families[0].services
        && a.families[1].services == b.families[1].services
        && a.node == b.node
        && a.service_cidrs == b.service_cidrs
}

/// Receives source events and applies them to a model store, as the sync loop will.
pub struct Collector {
    rx: mpsc::Receiver<SourceEvent>,
    pub store: Store,
    /// Every event, one line each, in order.
    pub events: Vec<String>,
    /// Every change delivered, described.
    pub changes: Vec<String>,
    /// Every batch (watch or re-list), as received.
    pub batches: Vec<ChangeBatch>,
    /// `Synced { node_found }` once received.
    pub synced: Option<bool>,
    /// Error events, as text.
    pub errors: Vec<String>,
}

impl Collector {
    fn new(rx: mpsc::Receiver<SourceEvent>) -> Self {
        Self {
            rx,
            store: Store::new(NODE),
            events: Vec::new(),
            changes: Vec::new(),
            batches: Vec::new(),
            synced: None,
            errors: Vec::new(),
        }
    }

    fn apply(&mut self, batch: ChangeBatch) -> Vec<String> {
        let lines: Vec<String> = batch.changes.iter().map(describe).collect();
        self.changes.extend(lines.iter().cloned());
        self.batches.push(batch.clone());
        for change in batch.changes {
            self.store.apply(change);
        }
        lines
    }

    fn record(&mut self, event: SourceEvent) {
        let line = match event {
            SourceEvent::Changes(batch) => format!("changes {:?}", self.apply(batch)),
            SourceEvent::Relisted {
                kind,
                initial,
                batch,
            } => {
                let lines = self.apply(batch);
                let what = if initial { "listed" } else { "relisted" };
                format!("{what} {kind} {lines:?}")
            }
            SourceEvent::Synced { node_found } => {
                assert!(self.synced.is_none(), "Synced sent twice");
                self.synced = Some(node_found);
                format!("synced node_found={node_found}")
            }
            SourceEvent::Error(e) => {
                self.errors.push(e.to_string());
                format!("error {e}")
            }
        };
        self.events.push(line);
    }

    /// Receives events until `done` holds (checked after each event and every 50 ms);
    /// fails after 20 s with the events seen.
    pub async fn until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(self) {
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting for {what}; events:\n{:#?}", self.events);
            }
            let tick = tokio::time::Instant::now() + Duration::from_millis(50);
            match tokio::time::timeout_at(tick.min(deadline), self.rx.recv()).await {
                Ok(Some(event)) => self.record(event),
                Ok(None) => panic!("source ended while waiting for {what}"),
                Err(_) => {}
            }
        }
    }

    /// Waits until the source has synced and the model equals the fake's objects.
    pub async fn converge(&mut self, fake: &FakeApi, what: &str) {
        self.until(what, |c| {
            c.synced.is_some() && same_state(&c.store.snapshot(), &expected_state(fake))
        })
        .await;
    }

    /// Receives whatever arrives within `period` (to show something does *not* happen).
    pub async fn idle(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.record(event);
        }
    }

    /// How often each change line occurs.
    pub fn count(&self, change: &str) -> usize {
        self.changes.iter().filter(|c| *c == change).count()
    }
}
