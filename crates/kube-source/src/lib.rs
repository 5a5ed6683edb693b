//! The Kubernetes API source of kube-proxy-rs: kube-rs watchers over Services,
//! EndpointSlices and this node's Node, delivered to the sync loop as
//! [`kpr_model::Change`]s over a tokio channel.
//!
//! ```no_run
//! # async fn demo(cc: &kpr_config::types::ClientConnectionConfiguration) -> Result<(), Box<dyn std::error::Error>> {
//! use kpr_kube_source::{ClientSettings, SourceConfig, SourceEvent};
//! let api = kpr_kube_source::connect(&ClientSettings::from_config(cc, None)).await?;
//! let (mut events, handle) = kpr_kube_source::spawn(&api, SourceConfig::new("node-a"));
//! let mut store = kpr_model::Store::new("node-a");
//! while let Some(event) = events.recv().await {
//!     match event {
//!         SourceEvent::Changes(batch) | SourceEvent::Relisted { batch, .. } => {
//!             for change in batch.changes {
//!                 store.apply(change);
//!             }
//!         }
//!         SourceEvent::Synced { .. } => { /* from now on, sync the data plane */ }
//!         SourceEvent::Error(e) => eprintln!("{e}"),
//!     }
//! }
//! # drop(handle);
//! # Ok(())
//! # }
//! ```
//!
//! # Upstream facts used
//!
//! - Selectors, from `cmd/kube-proxy/app/server.go` (`ProxyServer.Run`) and
//!   `pkg/proxy/node.go` (`NewNodeManager`): Services with label selector
//!   `!service.kubernetes.io/service-proxy-name` and field selector
//!   `spec.clusterIP!=None`; EndpointSlices (discovery.k8s.io/v1) with
//!   `!service.kubernetes.io/headless`; Nodes with `metadata.name=<node>`.
//! - Client, from `createClient`: in-cluster config when neither kubeconfig nor master
//!   is given, else the explicit kubeconfig with `--master` overriding its server;
//!   `qps`/`burst`/`contentType` from `clientConnection` ([`client`]).
//! - Programming latency, from `pkg/proxy/endpointschangetracker.go`: the
//!   `endpoints.kubernetes.io/last-change-trigger-time` annotation of updated (not
//!   deleted) slices, ignored when older than the tracker's start ([`TriggerTime`]).
//! - Health while the API server is unreachable, from
//!   `pkg/proxy/healthcheck/proxy_health.go`: `/healthz` fails only when an update was
//!   *queued* and not applied within `healthTimeout` (2 × `iptables.syncPeriod`), or
//!   the Node is being deleted / tainted `ToBeDeletedByClusterAutoscaler`. An
//!   unreachable API server queues nothing, so upstream stays healthy for as long as
//!   it lasts, and its informers keep the last known objects. This source does the
//!   same: errors never become deletions, and [`Connectivity`] is for metrics and
//!   logs, not for `/healthz`.
//! - Retry spacing, from client-go's reflector (and kube-rs' `DefaultBackoff`):
//!   800 ms doubling to 30 s with jitter, reset after 2 min without errors
//!   ([`BackoffSettings`]).
//!
//! # Architecture invariants
//!
//! - Nothing is deleted except by a watch `DELETED` event or by a *complete* re-list
//!   that lacks the object; a failed or interrupted list changes nothing.
//! - An event already delivered (same resourceVersion) is never delivered again, so
//!   reconnects and re-lists produce no duplicate changes.
//! - A malformed object is reported and skipped; it never ends a stream.
//! - Only the in-cluster configuration reads the environment (inside kube-rs).

pub mod backoff;
pub mod client;
pub mod connectivity;
pub mod error;
pub mod event;
mod layer;
mod lenient;
pub mod objects;
pub mod recorder;
pub mod source;
mod tracker;

pub use backoff::BackoffSettings;
pub use client::{ApiClient, ClientSettings, connect};
pub use connectivity::Connectivity;
pub use error::{ClientError, SourceError};
pub use event::{ChangeBatch, SourceEvent, TriggerTime, WatchedKind};
pub use recorder::{EventRecorder, EventType, NodeEvent};
pub use source::{SourceConfig, SourceHandle, spawn, spawn_with};
