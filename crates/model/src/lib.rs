//! The model of kube-proxy-rs: where Service semantics live, once, for every data plane.
//!
//! Sources (the Kubernetes API, a manifest directory) feed Kubernetes objects into a
//! [`Store`] as [`Change`]s. The store converts and validates them (a bad object is
//! reported as a [`Problem`] and skipped; the others keep working) and produces
//! [`ProxyState`] snapshots: per address family, every proxied Service port with its
//! endpoints already selected for the Cluster and Local traffic policies (topology
//! hints, terminating fallback) and its [`Traffic`] routing decided.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of iptables,
//! nftables or IPVS. Data planes render from [`ProxyState`] and never look at
//! Kubernetes objects.

pub mod change;
pub mod endpoint;
pub mod intern;
pub mod ip;
pub mod local;
pub mod mirror;
pub mod name;
pub mod node;
pub mod problem;
pub mod service;
pub mod service_cidr;
pub mod state;
pub mod store;
pub mod topology;
pub mod view;

pub use change::{Change, Converted, Objects};
pub use endpoint::Endpoint;
pub use local::{LocalDetector, NodePortAddresses};
pub use name::{IpFamily, NamespacedName, Protocol, ServicePortName, join_host_port};
pub use node::NodeInfo;
pub use problem::{ObjectKind, Problem};
pub use service::{ServicePortInfo, SessionAffinity};
pub use state::{
    FamilyState, ProxyState, Route, ServiceMap, ServicePortState, ServiceState, Traffic,
};
pub use store::Store;
