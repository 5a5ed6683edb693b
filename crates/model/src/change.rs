//! What sources feed the store: one object added, updated or deleted ([`Change`]), or
//! a complete set ([`Objects`]).
//!
//! A Service, EndpointSlice or v1 Endpoints can be converted into the form the store
//! keeps as soon as it is read ([`Change::converted`]): what the model uses of an
//! EndpointSlice is about a fifth of the decoded API object, so a source that holds
//! many objects at once (an initial list, a manifest directory) holds them converted.
//! Conversion does not depend on anything else the store holds; applying a converted
//! change is the same as applying the object.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::endpoint::{SliceInfo, convert_slice};
use crate::mirror::mirror_endpoints;
use crate::name::NamespacedName;
use crate::problem::{ObjectKind, Problem};
use crate::service::{ServiceConversion, ServiceInfo, convert_service, service_name};

/// Services or EndpointSlices carrying this label belong to another proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Services or EndpointSlices carrying this label are headless: nothing to proxy.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// One object added, updated or deleted.
#[derive(Clone, Debug)]
pub enum Change {
    /// A Service was added or updated.
    ServiceUpsert(Box<core::Service>),
    /// A Service was deleted.
    ServiceDelete(NamespacedName),
    /// An EndpointSlice was added or updated.
    SliceUpsert(Box<discovery::EndpointSlice>),
    /// An EndpointSlice (by namespace/slice-name) was deleted.
    SliceDelete(NamespacedName),
    /// A v1 Endpoints was added or updated (it is mirrored into slices).
    EndpointsUpsert(Box<core::Endpoints>),
    /// A v1 Endpoints was deleted.
    EndpointsDelete(NamespacedName),
    /// A Node was added or updated (only this node's object is used).
    NodeUpsert(Box<core::Node>),
    /// A Node (by name) was deleted.
    NodeDelete(String),
    /// A ServiceCIDR was added or updated.
    ServiceCidrUpsert(Box<networking::ServiceCIDR>),
    /// A ServiceCIDR (by name) was deleted.
    ServiceCidrDelete(String),
    /// A Service, EndpointSlice or v1 Endpoints upsert already converted
    /// ([`Change::converted`]).
    Converted(Box<Converted>),
}

/// A complete set of objects, as a manifest directory holds them.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Services, EndpointSlices and v1 Endpoints converted as they were read (a
    /// source that holds a whole set keeps them this way: a fraction of the API
    /// objects' size).
    pub converted: Vec<Converted>,
    /// Services.
    pub services: Vec<core::Service>,
    /// EndpointSlices.
    pub slices: Vec<discovery::EndpointSlice>,
    /// v1 Endpoints.
    pub endpoints: Vec<core::Endpoints>,
    /// Nodes.
    pub nodes: Vec<core::Node>,
    /// ServiceCIDRs.
    pub service_cidrs: Vec<networking::ServiceCIDR>,
}

impl Change {
    /// The same change, with a Service, EndpointSlice or v1 Endpoints upsert
    /// converted into the form the store keeps; other changes are returned as they
    /// are.
    pub fn converted(self) -> Change {
        match self {
            Change::ServiceUpsert(svc) => Change::Converted(Box::new(Converted::service(&svc))),
            Change::SliceUpsert(slice) => Change::Converted(Box::new(Converted::slice(&slice))),
            Change::EndpointsUpsert(eps) => Change::Converted(Box::new(Converted::endpoints(&eps))),
            other => other,
        }
    }

    /// The kind of object the change is about.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Change::ServiceUpsert(_) | Change::ServiceDelete(_) => ObjectKind::Service,
            Change::SliceUpsert(_) | Change::SliceDelete(_) => ObjectKind::EndpointSlice,
            Change::EndpointsUpsert(_) | Change::EndpointsDelete(_) => ObjectKind::Endpoints,
            Change::NodeUpsert(_) | Change::NodeDelete(_) => ObjectKind::Node,
            Change::ServiceCidrUpsert(_) | Change::ServiceCidrDelete(_) => ObjectKind::ServiceCidr,
            Change::Converted(c) => c.kind(),
        }
    }
}

/// A Service, EndpointSlice or v1 Endpoints as the store keeps it, with the problems
/// found converting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    pub(crate) object: ConvertedObject,
    pub(crate) problems: Vec<Problem>,
    /// The object's `metadata.resourceVersion` as received (empty when unknown):
    /// for messages and tests; the store does not keep it.
    resource_version: String,
}

/// The converted forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConvertedObject {
    /// A Service by name, or `None` when it is not proxied (headless, another
    /// proxy's, broken).
    Service(NamespacedName, Option<ServiceInfo>),
    /// An EndpointSlice by namespace/slice name, or `None` when it is not used.
    Slice(NamespacedName, Option<SliceInfo>),
    /// v1 Endpoints by namespace/name, mirrored (empty when not mirrored).
    Endpoints(NamespacedName, Vec<SliceInfo>),
}

impl Converted {
    /// Converts a Service.
    pub fn service(svc: &core::Service) -> Self {
        let mut problems = Vec::new();
        let info = if owned_by_other_proxy(&svc.metadata) {
            None
        } else {
            match convert_service(svc, &mut problems) {
                Some(ServiceConversion::Proxied(info)) => Some(info),
                Some(ServiceConversion::NotProxied(..)) | None => None,
            }
        };
        Self {
            object: ConvertedObject::Service(service_name(svc), info),
            problems,
            resource_version: String::new(),
        }
    }

    /// Converts an EndpointSlice.
    pub fn slice(slice: &discovery::EndpointSlice) -> Self {
        let mut problems = Vec::new();
        let info = if owned_by_other_proxy(&slice.metadata) {
            None
        } else {
            convert_slice(slice, &mut problems)
        };
        Self {
            object: ConvertedObject::Slice(object_key(&slice.metadata), info),
            problems,
            resource_version: String::new(),
        }
    }

    /// Converts (mirrors) a v1 Endpoints.
    pub fn endpoints(eps: &core::Endpoints) -> Self {
        let mut problems = Vec::new();
        let slices = mirror_endpoints(eps, &mut problems);
        Self {
            object: ConvertedObject::Endpoints(object_key(&eps.metadata), slices),
            problems,
            resource_version: String::new(),
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match &self.object {
            ConvertedObject::Service(..) => ObjectKind::Service,
            ConvertedObject::Slice(..) => ObjectKind::EndpointSlice,
            ConvertedObject::Endpoints(..) => ObjectKind::Endpoints,
        }
    }

    /// The object's namespace/name.
    pub fn key(&self) -> &NamespacedName {
        match &self.object {
            ConvertedObject::Service(key, _)
            | ConvertedObject::Slice(key, _)
            | ConvertedObject::Endpoints(key, _) => key,
        }
    }

    /// Problems found converting the object (the parts they name are skipped).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The object's resourceVersion, when the source set it.
    pub fn resource_version(&self) -> &str {
        &self.resource_version
    }

    /// Records the object's resourceVersion.
    pub fn set_resource_version(&mut self, version: String) {
        self.resource_version = version;
    }
}

fn owned_by_other_proxy(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL) || l.contains_key(HEADLESS_LABEL))
}

/// `namespace/name` of a namespaced object, the namespace defaulting to `default` as
/// the API does.
pub(crate) fn object_key(meta: &ObjectMeta) -> NamespacedName {
    NamespacedName::new(
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        meta.name.clone().unwrap_or_default(),
    )
}
