//! kube-proxy-rs: wiring and the sync loop.

pub mod app;
pub mod check;
pub mod conntrack;
pub mod dataplane;
pub mod host;
pub mod manifests;
pub mod observer;
pub mod render_settings;
pub mod run;
pub mod scheduler;
pub mod show;
