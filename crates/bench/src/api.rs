//! The process benchmark's API server: the fake of kpr-kube-source's tests (the real
//! list/watch wire protocol over HTTP, with paging and watch events), serving inside
//! the proxy's network namespace, so the proxy reads the generated cluster the way it
//! does in production and one change travels as one watch event.

use std::thread::JoinHandle;

use anyhow::Context;
use kpr_bench::generate::{NODE, Shape, service, slices};
use kpr_netns_lab::Netns;
use serde_json::json;
use tokio::sync::oneshot;

#[path = "../../kube-source/tests/fake_api/mod.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod fake_api;

use fake_api::{FakeApi, Resource};

/// A fake API server running on its own thread inside a namespace; stopped on drop.
pub struct ApiServer {
    fake: FakeApi,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Starts an empty server on the loopback of `ns`.
    pub fn start(ns: &Netns) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = ns.spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            // The server's tasks run on this thread while it waits for the stop.
            rt.block_on(async move {
                let _ = ready_tx.send(Ok(FakeApi::start().await));
                let _ = stop_rx.await;
            });
        })?;
        let fake = ready_rx
            .recv()
            .context("the API server thread ended before starting")?
            .map_err(|e| anyhow::anyhow!("API server runtime: {e}"))?;
        Ok(Self {
            fake,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:port`, inside the namespace.
    pub fn url(&self) -> String {
        self.fake.url()
    }

    /// Stores the generated cluster: the Node, then every Service and EndpointSlice.
    pub fn load(&self, shape: &Shape) {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "zone-a"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
        });
        self.fake.put_raw(Resource::Nodes, node);
        for i in 0..shape.services {
            self.add_service(i, shape);
        }
    }

    /// Generated Service `i`: its EndpointSlices first, then the Service, so the
    /// proxy's sync after the Service's event programs it whole.
    pub fn add_service(&self, i: usize, shape: &Shape) {
        self.add_slices(i, shape);
        self.add_service_only(i, shape);
    }

    /// The EndpointSlices of generated Service `i` (they program nothing while the
    /// Service is absent).
    pub fn add_slices(&self, i: usize, shape: &Shape) {
        for slice in slices(i, shape) {
            self.fake.put(Resource::EndpointSlices, &slice);
        }
    }

    /// Generated Service `i` alone: one watch event.
    pub fn add_service_only(&self, i: usize, shape: &Shape) {
        self.fake.put(Resource::Services, &service(i, shape));
    }
}

impl Drop for ApiServer {
    /// Ends the server's runtime (its tasks with it); the `FakeApi` handle is
    /// dropped after, with nothing left to stop.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
