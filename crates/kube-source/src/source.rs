//! The running source: one kube-rs watcher per kind, each with its own backoff, merged
//! into one task that keeps a `KindTracker` per kind and sends [`SourceEvent`]s.

use std::time::{Duration, SystemTime};

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::backoff::{Backoff, BackoffSettings};
use crate::client::ApiClient;
use crate::connectivity::Connectivity;
use crate::error::SourceError;
use crate::event::{ChangeBatch, SourceEvent, TriggerTime, WatchedKind};
use crate::lenient::Lenient;
use crate::objects::{
    Seen, Watched, endpoint_slice_selector, node_selector, see, service_selectors,
};
use crate::tracker::{KindTracker, Step};

/// Settings of the source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// This node's name (`--hostname-override` or the host name).
    pub node_name: String,
    /// Retry delays after errors.
    pub backoff: BackoffSettings,
    /// Objects per list page (kube-rs and client-go default: 500; `None`: unpaged).
    pub page_size: Option<u32>,
    /// Server-side watch timeout in seconds (kube-rs default 290); the client gives up
    /// on a silent watch 5 s after it.
    pub watch_timeout: Option<u32>,
    /// Capacity of the event channel; a slow consumer slows the watchers down, nothing
    /// is dropped.
    pub channel_capacity: usize,
    /// Most watch events merged into one [`SourceEvent::Changes`].
    pub max_batch: usize,
    /// How long to wait before asking again for an optional kind the API server does
    /// not serve or the proxy may not read ([`SourceError::Unavailable`]).
    pub unavailable_retry: Duration,
}

impl SourceConfig {
    /// Defaults (client-go's backoff, 500 per page) for `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            backoff: BackoffSettings::default(),
            page_size: Some(500),
            watch_timeout: None,
            channel_capacity: 64,
            max_batch: 1024,
            unavailable_retry: Duration::from_secs(300),
        }
    }

    fn watcher_config(&self, labels: Option<&str>, fields: Option<&str>) -> watcher::Config {
        // Consistent (quorum) lists, kube-rs' default: a re-list after 410 Gone must not
        // go back in time, and current API servers serve consistent lists from their
        // watch cache anyway.
        watcher::Config {
            label_selector: labels.map(str::to_owned),
            field_selector: fields.map(str::to_owned),
            page_size: self.page_size,
            timeout: self.watch_timeout,
            ..Default::default()
        }
    }
}

/// Owns the running source; dropping it stops the source.
#[derive(Debug)]
pub struct SourceHandle {
    task: JoinHandle<()>,
    connectivity: Connectivity,
}

impl SourceHandle {
    /// Whether the API server is currently reachable.
    pub fn connectivity(&self) -> &Connectivity {
        &self.connectivity
    }

    /// True once the source has stopped (the receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching Services, EndpointSlices, this node's Node and the ServiceCIDRs
/// through `api`.
/// Must be called inside a tokio runtime.
pub fn spawn(api: &ApiClient, config: SourceConfig) -> (mpsc::Receiver<SourceEvent>, SourceHandle) {
    spawn_with(api.client.clone(), api.connectivity.clone(), config)
}

/// As [`spawn`], with a client built elsewhere; `connectivity` is updated by the
/// watchers (and by the client too if it was built by [`crate::connect`]).
pub fn spawn_with(
    client: kube::Client,
    connectivity: Connectivity,
    config: SourceConfig,
) -> (mpsc::Receiver<SourceEvent>, SourceHandle) {
    let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
    let (svc_labels, svc_fields) = service_selectors();
    let mut streams: SelectAll<BoxStream<'static, (WatchedKind, Item)>> = SelectAll::new();
    streams.push(kind_stream::<Service>(
        client.clone(),
        config.watcher_config(Some(&svc_labels), Some(&svc_fields)),
        &config,
    ));
    streams.push(kind_stream::<EndpointSlice>(
        client.clone(),
        config.watcher_config(Some(&endpoint_slice_selector()), None),
        &config,
    ));
    streams.push(kind_stream::<Node>(
        client.clone(),
        config.watcher_config(None, Some(&node_selector(&config.node_name))),
        &config,
    ));
    // Upstream watches ServiceCIDRs unfiltered (`NewServiceCIDRConfig`).
    streams.push(kind_stream::<ServiceCIDR>(
        client,
        config.watcher_config(None, None),
        &config,
    ));
    let pump = Pump {
        trackers: WatchedKind::ALL.map(KindTracker::new),
        synced: false,
        started: SystemTime::now(),
        connectivity: connectivity.clone(),
    };
    let task = tokio::spawn(pump.run(streams, tx, config.max_batch.max(1)));
    (rx, SourceHandle { task, connectivity })
}

/// A watcher event, type-erased.
enum Item {
    Init,
    InitApply(Seen),
    InitDone,
    Apply(Seen),
    Delete(Seen),
    Error {
        error: watcher::Error,
        retry_in: Duration,
    },
    /// An optional kind is not served or not readable (404/403 on the list).
    Unavailable {
        code: u16,
        message: String,
        retry_in: Duration,
    },
}

type GuardedStream<K> = BoxStream<'static, Result<watcher::Event<Lenient<K>>, watcher::Error>>;

struct KindStream<K: Watched> {
    api: Api<Lenient<K>>,
    config: watcher::Config,
    watcher: Option<GuardedStream<K>>,
    backoff: Backoff,
    unavailable_retry: Duration,
    delay: Option<Duration>,
}

/// kube-rs' watcher retries a watch that the server refused with HTTP 410 from the same
/// resourceVersion forever (only a 410 *event* makes it re-list); start over instead.
fn gone_at_watch_start(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 410)
}

/// For an optional kind: the status code and message of a list or watch start the
/// server refused with 404 (not served) or 403 (not allowed).
fn unavailable(kind: WatchedKind, error: &watcher::Error) -> Option<(u16, String)> {
    if !kind.is_optional() {
        return None;
    }
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            if matches!(status.code, 403 | 404) =>
        {
            Some((status.code, status.message.clone()))
        }
        _ => None,
    }
}

fn kind_stream<K: Watched>(
    client: kube::Client,
    watch: watcher::Config,
    config: &SourceConfig,
) -> BoxStream<'static, (WatchedKind, Item)> {
    let state = KindStream::<K> {
        api: Api::all(client),
        config: watch,
        watcher: None,
        backoff: Backoff::new(config.backoff),
        unavailable_retry: config.unavailable_retry,
        delay: None,
    };
    futures::stream::unfold(state, |mut st| async move {
        if let Some(delay) = st.delay.take() {
            tokio::time::sleep(delay).await;
        }
        loop {
            let stream = match st.watcher.as_mut() {
                Some(s) => s,
                None => st
                    .watcher
                    .insert(watcher(st.api.clone(), st.config.clone()).boxed()),
            };
            let item = match stream.next().await {
                // The watcher never ends; if it did, start a new one (a fresh list).
                None => {
                    st.watcher = None;
                    continue;
                }
                Some(Ok(event)) => match event {
                    watcher::Event::Init => Item::Init,
                    watcher::Event::InitApply(o) => Item::InitApply(see(o)),
                    watcher::Event::InitDone => Item::InitDone,
                    watcher::Event::Apply(o) => Item::Apply(see(o)),
                    watcher::Event::Delete(o) => Item::Delete(see(o)),
                },
                Some(Err(error)) if let Some((code, message)) = unavailable(K::KIND, &error) => {
                    // Not a connection problem: ask again much later, from a fresh list.
                    st.watcher = None;
                    let retry_in = st.unavailable_retry;
                    st.delay = Some(retry_in);
                    Item::Unavailable {
                        code,
                        message,
                        retry_in,
                    }
                }
                Some(Err(error)) => {
                    let retry_in = st.backoff.on_error(Instant::now());
                    if gone_at_watch_start(&error) {
                        st.watcher = None;
                    }
                    st.delay = Some(retry_in);
                    Item::Error { error, retry_in }
                }
            };
            return Some(((K::KIND, item), st));
        }
    })
    .boxed()
}

struct Pump {
    trackers: [KindTracker; WatchedKind::ALL.len()],
    synced: bool,
    started: SystemTime,
    connectivity: Connectivity,
}

impl Pump {
    async fn run(
        mut self,
        mut streams: SelectAll<BoxStream<'static, (WatchedKind, Item)>>,
        tx: mpsc::Sender<SourceEvent>,
        max_batch: usize,
    ) {
        while let Some(first) = streams.next().await {
            let received_at = Instant::now();
            let mut out = Vec::new();
            self.process(first, received_at, &mut out);
            // Merge what is already waiting into the same batch.
            for _ in 1..max_batch {
                match streams.next().now_or_never() {
                    Some(Some(item)) => self.process(item, received_at, &mut out),
                    _ => break,
                }
            }
            for event in out {
                if tx.send(event).await.is_err() {
                    debug!("API source receiver dropped; stopping");
                    return;
                }
            }
        }
    }

    fn process(
        &mut self,
        (kind, item): (WatchedKind, Item),
        received_at: Instant,
        out: &mut Vec<SourceEvent>,
    ) {
        let tracker = &mut self.trackers[kind.index()];
        match item {
            Item::Init => tracker.init(),
            Item::InitApply(seen) => {
                self.connectivity.mark_connected();
                tracker.init_apply(seen);
            }
            Item::InitDone => {
                self.connectivity.mark_connected();
                let step = tracker.init_done();
                let initial = tracker.lists() == 1;
                let mut batch = ChangeBatch::new(received_at);
                let errors = self.fill(kind, step, &mut batch);
                out.push(SourceEvent::Relisted {
                    kind,
                    initial,
                    batch,
                });
                out.extend(errors);
                self.check_synced(out);
            }
            Item::Unavailable {
                code,
                message,
                retry_in,
            } => {
                // The server answered: it is reachable.
                self.connectivity.mark_connected();
                if tracker.mark_unavailable() {
                    out.push(SourceEvent::Error(SourceError::Unavailable {
                        kind,
                        code,
                        message,
                        retry_in,
                    }));
                }
                self.check_synced(out);
            }
            Item::Apply(seen) => {
                self.connectivity.mark_connected();
                let step = tracker.apply(seen);
                self.push_changes(kind, step, received_at, out);
            }
            Item::Delete(seen) => {
                self.connectivity.mark_connected();
                let step = tracker.delete(seen.key);
                self.push_changes(kind, step, received_at, out);
            }
            Item::Error { error, retry_in } => {
                self.connectivity.mark_disconnected(&error.to_string());
                out.push(SourceEvent::Error(SourceError::Watch {
                    kind,
                    source: error,
                    retry_in,
                }));
            }
        }
    }

    /// Sends `Synced` once every kind has been listed (or, if optional, refused).
    fn check_synced(&mut self, out: &mut Vec<SourceEvent>) {
        if !self.synced && self.trackers.iter().all(KindTracker::settled) {
            self.synced = true;
            let node_found = self.trackers[WatchedKind::Node.index()].len() > 0;
            out.push(SourceEvent::Synced { node_found });
        }
    }

    /// Appends watch changes to the last `Changes` event of `out`, or starts one.
    fn push_changes(
        &self,
        kind: WatchedKind,
        step: Step,
        received_at: Instant,
        out: &mut Vec<SourceEvent>,
    ) {
        let mut fresh = ChangeBatch::new(received_at);
        let errors = self.fill(kind, step, &mut fresh);
        if !fresh.is_empty() {
            match out.last_mut() {
                Some(SourceEvent::Changes(batch)) => {
                    batch.changes.append(&mut fresh.changes);
                    batch.trigger_times.append(&mut fresh.trigger_times);
                }
                _ => out.push(SourceEvent::Changes(fresh)),
            }
        }
        out.extend(errors);
    }

    /// Moves a tracker step into `batch` (changes, trigger times); returns the errors
    /// about undecodable objects.
    fn fill(&self, kind: WatchedKind, step: Step, batch: &mut ChangeBatch) -> Vec<SourceEvent> {
        batch.changes.extend(step.changes);
        batch.trigger_times.extend(
            step.triggers
                .into_iter()
                .filter(|(_, at)| *at > self.started)
                .map(|(service, at)| TriggerTime { service, at }),
        );
        step.invalid
            .into_iter()
            .map(|(key, resource_version, reason)| {
                let object = if key.namespace.is_empty() {
                    key.name.to_string()
                } else {
                    key.to_string()
                };
                SourceEvent::Error(SourceError::InvalidObject {
                    kind,
                    object,
                    resource_version,
                    reason,
                })
            })
            .collect()
    }
}
