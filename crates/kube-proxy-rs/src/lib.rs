//! kube-proxy-rs: wiring and the sync loop.

pub mod scheduler;
