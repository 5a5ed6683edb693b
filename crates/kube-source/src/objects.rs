//! Per-kind knowledge: how each watched kind is selected on the server, keyed, slimmed
//! down and turned into a [`Change`].

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kpr_model::store::{HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL};
use kpr_model::{Change, NamespacedName};
use kube::{Resource, ResourceExt};

use crate::event::WatchedKind;
use crate::lenient::Lenient;

/// EndpointSlice annotation with the time of the change that triggered the update
/// (upstream `v1.EndpointsLastChangeTriggerTime`).
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Annotation written by `kubectl apply`: a copy of the whole object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Upstream's Service selectors (`cmd/kube-proxy/app/server.go`): not owned by another
/// proxy, and not headless.
pub fn service_selectors() -> (String, String) {
    (
        format!("!{SERVICE_PROXY_NAME_LABEL}"),
        "spec.clusterIP!=None".to_string(),
    )
}

/// Upstream's EndpointSlice label selector: not of a headless Service.
pub fn endpoint_slice_selector() -> String {
    format!("!{HEADLESS_LABEL}")
}

/// Upstream's Node field selector (`pkg/proxy/node.go`): this node only.
pub fn node_selector(node_name: &str) -> String {
    format!("metadata.name={node_name}")
}

/// An object as received, reduced to what the tracker needs.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// `namespace/name` (empty namespace for Nodes).
    pub key: NamespacedName,
    /// `metadata.resourceVersion` (empty if the server sent none).
    pub resource_version: String,
    /// The upsert, or why the object could not be decoded.
    pub decoded: Result<Decoded, String>,
}

/// A decoded object.
#[derive(Clone, Debug)]
pub(crate) struct Decoded {
    /// The upsert change (object slimmed down).
    pub change: Change,
    /// EndpointSlices: the trigger-time annotation and the Service name.
    pub trigger: Option<(NamespacedName, SystemTime)>,
}

/// A kind the source watches.
pub(crate) trait Watched:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + k8s_openapi::serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: WatchedKind;

    /// Drops what the proxy never reads, to save memory.
    fn slim(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
    }

    /// The upsert change for the (slimmed) object.
    fn into_change(self) -> Change;

    /// The trigger time, for EndpointSlices.
    fn trigger(&self) -> Option<(NamespacedName, SystemTime)> {
        None
    }
}

impl Watched for Service {
    const KIND: WatchedKind = WatchedKind::Services;
    fn into_change(self) -> Change {
        Change::ServiceUpsert(Box::new(self))
    }
}

impl Watched for EndpointSlice {
    const KIND: WatchedKind = WatchedKind::EndpointSlices;
    fn into_change(self) -> Change {
        Change::SliceUpsert(Box::new(self))
    }
    fn trigger(&self) -> Option<(NamespacedName, SystemTime)> {
        let at = parse_trigger_time(self.annotations().get(LAST_CHANGE_TRIGGER_TIME)?)?;
        let service = self.labels().get(SERVICE_NAME_LABEL)?;
        Some((
            NamespacedName::new(self.namespace().unwrap_or_default(), service.clone()),
            at,
        ))
    }
}

impl Watched for Node {
    const KIND: WatchedKind = WatchedKind::Node;
    fn slim(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(LAST_APPLIED);
        }
        // The image list and volume lists are the bulk of a Node; the proxy reads
        // addresses, pod CIDRs, labels, taints and the deletion timestamp.
        if let Some(status) = self.status.as_mut() {
            status.images = None;
            status.volumes_attached = None;
            status.volumes_in_use = None;
        }
    }
    fn into_change(self) -> Change {
        Change::NodeUpsert(Box::new(self))
    }
}

impl Watched for ServiceCIDR {
    const KIND: WatchedKind = WatchedKind::ServiceCidrs;
    fn into_change(self) -> Change {
        Change::ServiceCidrUpsert(Box::new(self))
    }
}

/// Parses an RFC 3339 time as Go's `time.RFC3339Nano` writes it.
pub fn parse_trigger_time(value: &str) -> Option<SystemTime> {
    let ts: k8s_openapi::jiff::Timestamp = value.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// The key of an object: `namespace/name`, or `/name` for cluster-scoped ones.
pub(crate) fn key_of(meta: &ObjectMeta) -> NamespacedName {
    NamespacedName::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Turns what the watcher delivered into a [`Seen`]. Services, EndpointSlices and
/// Endpoints are converted into the model's form at once: an initial list of 50,000
/// EndpointSlices is held until it is complete, and the API objects are five times
/// the size of what the model keeps of them.
pub(crate) fn see<K: Watched>(guarded: Lenient<K>) -> Seen {
    match guarded.0 {
        Ok(mut object) => {
            object.slim();
            let key = key_of(object.meta());
            let resource_version = object.resource_version().unwrap_or_default();
            let trigger = object.trigger();
            let change = match object.into_change().converted() {
                Change::Converted(mut converted) => {
                    converted.set_resource_version(resource_version.clone());
                    Change::Converted(converted)
                }
                other => other,
            };
            Seen {
                key,
                resource_version,
                decoded: Ok(Decoded { change, trigger }),
            }
        }
        Err(invalid) => Seen {
            key: key_of(&invalid.metadata),
            resource_version: invalid
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default(),
            decoded: Err(invalid.reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use serde_json::json;

    use super::*;

    /// Go's RFC3339Nano times (with or without fraction, any offset) parse.
    #[test]
    fn trigger_times() {
        let t = parse_trigger_time("2026-01-02T03:04:05.123456789Z").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(secs.subsec_nanos(), 123_456_789);
        let a = parse_trigger_time("2026-01-02T03:04:05Z").unwrap();
        let b = parse_trigger_time("2026-01-02T04:04:05+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            t.duration_since(a).unwrap(),
            Duration::from_nanos(123_456_789)
        );
        assert_eq!(parse_trigger_time("yesterday"), None);
    }

    /// managedFields, last-applied and the Node's image list are dropped; the
    /// trigger-time annotation and what the model reads stay.
    #[test]
    fn slimming() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": "web-abc", "namespace": "ns", "resourceVersion": "7",
                "labels": {"kubernetes.io/service-name": "web"},
                "annotations": {
                    LAST_CHANGE_TRIGGER_TIME: "2026-01-02T03:04:05Z",
                    LAST_APPLIED: "{...}"
                },
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]
            },
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap();
        assert!(
            slice
                .metadata
                .managed_fields
                .as_ref()
                .is_some_and(|m: &Vec<ManagedFieldsEntry>| !m.is_empty())
        );
        let mut slimmed = slice.clone();
        slimmed.slim();
        assert_eq!(slimmed.metadata.managed_fields, None);
        let annotations = slimmed.metadata.annotations.unwrap();
        assert!(annotations.contains_key(LAST_CHANGE_TRIGGER_TIME));
        assert!(!annotations.contains_key(LAST_APPLIED));
        let seen = see(Lenient(Ok(slice)));
        assert_eq!(seen.key, NamespacedName::new("ns", "web-abc"));
        assert_eq!(seen.resource_version, "7");
        let decoded = seen.decoded.unwrap();
        let Change::Converted(converted) = decoded.change else {
            panic!("not converted")
        };
        assert_eq!(converted.key(), &NamespacedName::new("ns", "web-abc"));
        assert_eq!(converted.resource_version(), "7");
        let (service, at) = decoded.trigger.unwrap();
        assert_eq!(service, NamespacedName::new("ns", "web"));
        assert_eq!(Some(at), parse_trigger_time("2026-01-02T03:04:05Z"));

        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "resourceVersion": "3"},
            "status": {"images": [{"names": ["x"], "sizeBytes": 1}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}
        }))
        .unwrap();
        let seen = see(Lenient(Ok(node)));
        assert_eq!(seen.key, NamespacedName::new("", "n1"));
        let Ok(Decoded {
            change: Change::NodeUpsert(node),
            ..
        }) = seen.decoded
        else {
            panic!("not a node upsert")
        };
        let status = node.status.unwrap();
        assert_eq!(status.images, None);
        assert_eq!(status.addresses.unwrap().len(), 1);
    }

    /// An undecodable object keeps its key and resourceVersion and says why.
    #[test]
    fn invalid_objects() {
        let guarded: Lenient<Service> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "bad", "namespace": "ns", "resourceVersion": "9"},
            "spec": {"ports": "not-a-list"}
        }))
        .unwrap();
        let seen = see(guarded);
        assert_eq!(seen.key, NamespacedName::new("ns", "bad"));
        assert_eq!(seen.resource_version, "9");
        let reason = seen.decoded.unwrap_err();
        assert!(reason.starts_with("spec.ports: invalid type"), "{reason}");
    }

    /// The selectors are upstream's, byte for byte.
    #[test]
    fn selectors() {
        assert_eq!(
            service_selectors(),
            (
                "!service.kubernetes.io/service-proxy-name".to_string(),
                "spec.clusterIP!=None".to_string()
            )
        );
        assert_eq!(endpoint_slice_selector(), "!service.kubernetes.io/headless");
        assert_eq!(node_selector("node-a"), "metadata.name=node-a");
    }
}
