//! kube-proxy-rs: wiring and the sync loop.

pub mod dataplane;
pub mod host;
pub mod scheduler;
pub mod manifests;
pub mod run;
