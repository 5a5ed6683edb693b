//! Problems found in input objects.
//!
//! A bad object never poisons the others: the object (or just the offending part of it,
//! such as one external IP) is skipped and a [`Problem`] says exactly what and why, in
//! one line that names the object and the field.

use std::fmt;

/// The kind of a Kubernetes object the model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `v1/Service`.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `v1/Endpoints` (mirrored into EndpointSlices).
    Endpoints,
    /// `v1/Node`.
    Node,
    /// `networking.k8s.io/v1/ServiceCIDR`.
    ServiceCidr,
}

impl ObjectKind {
    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::Endpoints => "Endpoints",
            Self::Node => "Node",
            Self::ServiceCidr => "ServiceCIDR",
        }
    }
}

/// What was wrong with an input object, and what was skipped because of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// `namespace/name` (or just `name` for cluster-scoped objects).
    pub object: String,
    /// Field path inside the object, e.g. `spec.ports[1].protocol`.
    pub field: String,
    /// What is wrong and what was skipped.
    pub message: String,
}

impl Problem {
    /// Builds a problem report.
    pub fn new(
        kind: ObjectKind,
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            object: object.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.kind.as_str(),
            self.object,
            self.field,
            self.message
        )
    }
}
