//! Decoding that survives a malformed object: [`Lenient<K>`] decodes as `Ok(K)` or, if
//! the object does not fit `K`, as `Err` with its metadata and a reason naming the
//! field (`spec.ports: invalid type: ...`). A list or watch stream of `Lenient<K>`
//! therefore never fails because of one object.
//!
//! kube-rs' `DeserializeGuard` does the same but its reason carries no field path.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// An object that did not decode as its kind.
#[derive(Clone, Debug)]
pub(crate) struct Invalid {
    /// Its metadata (default if even that is malformed).
    pub metadata: ObjectMeta,
    /// Field path and decoder message.
    pub reason: String,
}

/// `K`, or why the object is not a valid `K`.
#[derive(Clone, Debug)]
pub(crate) struct Lenient<K>(pub Result<K, Invalid>);

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(object) => Ok(Self(Ok(object))),
            Err(e) => {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                let reason = if path.is_empty() || path == "." {
                    message
                } else {
                    format!("{path}: {message}")
                };
                let metadata = value
                    .get("metadata")
                    .and_then(|m| ObjectMeta::deserialize(m).ok())
                    .unwrap_or_default();
                Ok(Self(Err(Invalid { metadata, reason })))
            }
        }
    }
}

impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(object) => object.meta(),
            Err(invalid) => &invalid.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(object) => object.meta_mut(),
            Err(invalid) => &mut invalid.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use kube::ResourceExt;
    use serde_json::json;

    use super::*;

    /// A valid object decodes as itself; a malformed one keeps its metadata and the
    /// reason names the field.
    #[test]
    fn decodes_or_explains() {
        let ok: Lenient<Service> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"ports": [{"port": 80}]}
        }))
        .unwrap();
        assert_eq!(ok.name_any(), "a");
        assert!(ok.0.is_ok());

        let bad: Lenient<Service> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "b", "namespace": "ns", "resourceVersion": "4"},
            "spec": {"ports": [{"port": "eighty"}]}
        }))
        .unwrap();
        assert_eq!(bad.namespace().as_deref(), Some("ns"));
        assert_eq!(bad.resource_version().as_deref(), Some("4"));
        let reason = bad.0.unwrap_err().reason;
        assert!(
            reason.starts_with("spec.ports[0].port: invalid type"),
            "{reason}"
        );
    }

    /// The wrapper lists and watches the same resource as `K`.
    #[test]
    fn same_resource() {
        assert_eq!(Lenient::<Service>::plural(&()), "services");
        assert_eq!(Lenient::<Service>::api_version(&()), "v1");
    }
}
