//! Kubernetes Events about this node (`events.k8s.io/v1`, in the `default`
//! namespace, regarding the Node, as upstream kube-proxy records them): `Starting`
//! when the proxy starts and, ours, `SyncProxyRulesFailed` when programming the
//! kernel fails, so `kubectl describe node` shows a node whose Services are broken.
//!
//! Recording never blocks the caller: events go through a bounded queue to a task
//! that posts them; when the queue is full or the API server refuses, the event is
//! dropped with a log line (events are best effort, as in upstream's recorder).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::client::ApiClient;

/// `reportingController` of our events (upstream's is `kube-proxy`; operators
/// filter on it, and we replace kube-proxy).
pub const REPORTING_CONTROLLER: &str = "kube-proxy";

/// How many events may wait to be posted.
const QUEUE: usize = 16;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

impl EventType {
    fn word(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// One event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// `reason`, e.g. `Starting`.
    pub reason: String,
    /// `action`, e.g. `StartKubeProxy`.
    pub action: String,
    /// `note`: the human-readable message (at most 1 kB, as the API requires).
    pub note: String,
}

/// Records events regarding one Node; cheap to clone.
#[derive(Clone, Debug)]
pub struct EventRecorder {
    tx: mpsc::Sender<NodeEvent>,
}

impl EventRecorder {
    /// Starts the posting task for `node`; `instance` is the reporting instance
    /// (upstream: the hostname).
    pub fn start(api: &ApiClient, node: &str, instance: &str) -> Self {
        let (tx, mut rx) = mpsc::channel::<NodeEvent>(QUEUE);
        let events: Api<Event> = Api::namespaced(api.client.clone(), "default");
        let (node, instance) = (node.to_string(), instance.to_string());
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                let event = to_event(&node, &instance, &e, jiff_now());
                match events.create(&PostParams::default(), &event).await {
                    Ok(_) => debug!(reason = %e.reason, "event recorded"),
                    Err(err) => warn!(reason = %e.reason, error = %err, "cannot record event"),
                }
            }
        });
        Self { tx }
    }

    /// Queues an event; drops it (with a log line) if the queue is full.
    pub fn record(&self, event: NodeEvent) {
        if let Err(e) = self.tx.try_send(event) {
            warn!(error = %e, "event dropped");
        }
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// The API object for `e`, named `<node>.<time in hex>` like upstream's recorder.
pub fn to_event(
    node: &str,
    instance: &str,
    e: &NodeEvent,
    now: k8s_openapi::jiff::Timestamp,
) -> Event {
    let mut note = e.note.clone();
    if note.len() > 1024 {
        let mut cut = 1021;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{node}.{:x}", now.as_nanosecond())),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(e.type_.word().into()),
        reason: Some(e.reason.clone()),
        action: Some(e.action.clone()),
        note: Some(note),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.into()),
        regarding: Some(ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.into()),
            uid: Some(node.into()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_regard_the_node_with_a_bounded_note() {
        let now: k8s_openapi::jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let e = to_event(
            "node-a",
            "host-a",
            &NodeEvent {
                type_: EventType::Warning,
                reason: "SyncProxyRulesFailed".into(),
                action: "SyncProxyRules".into(),
                note: "é".repeat(600),
            },
            now,
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["regarding"]["kind"], "Node");
        assert_eq!(v["regarding"]["name"], "node-a");
        assert_eq!(v["reportingController"], "kube-proxy");
        assert_eq!(v["reportingInstance"], "host-a");
        assert_eq!(v["metadata"]["namespace"], "default");
        assert!(
            v["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("node-a.")
        );
        assert!(v["note"].as_str().unwrap().len() <= 1024);
        assert!(
            v["eventTime"]
                .as_str()
                .unwrap()
                .starts_with("2026-11-23T10:00:00")
        );
    }
}
