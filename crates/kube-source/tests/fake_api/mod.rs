//! A fake Kubernetes API server on 127.0.0.1 speaking the real list/watch wire
//! protocol for Services, EndpointSlices, Nodes and ServiceCIDRs:
//!
//! - `GET /api/v1/services` (and the others) lists as JSON with
//!   `metadata.resourceVersion`, honouring `labelSelector`, `fieldSelector`, `limit`
//!   and `continue`;
//! - `?watch=true&resourceVersion=N` streams `{"type":...,"object":...}` lines: the
//!   events after `N` from its log, then live ones; objects entering or leaving the
//!   selectors become `ADDED`/`DELETED`, as the real server does; `BOOKMARK`s when
//!   `allowWatchBookmarks=true`;
//! - after [`FakeApi::compact`], a watch from an older resourceVersion gets `410 Gone`
//!   (as an `ERROR` event, like the real server, or as an HTTP status);
//! - failures on demand: 5xx `Status` answers, cleanly ended or abruptly broken
//!   watches, and the whole server stopping (connection refused) and coming back;
//! - a resource not served (404 with the real server's plain-text body, as for a
//!   group version it does not know) or forbidden (403 `Status`), see
//!   [`FakeApi::refuse`].
//!
//! Every request is recorded for assertions.

mod selector;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::channel::mpsc;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use selector::Selector;

/// The resources the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Services,
    EndpointSlices,
    Nodes,
    ServiceCidrs,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Self::Services,
        Self::EndpointSlices,
        Self::Nodes,
        Self::ServiceCidrs,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Self::Services => "/api/v1/services",
            Self::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Self::Nodes => "/api/v1/nodes",
            Self::ServiceCidrs => "/apis/networking.k8s.io/v1/servicecidrs",
        }
    }

    fn list_kind(self) -> (&'static str, &'static str) {
        let (api_version, _) = self.kind();
        let list = match self {
            Self::Services => "ServiceList",
            Self::EndpointSlices => "EndpointSliceList",
            Self::Nodes => "NodeList",
            Self::ServiceCidrs => "ServiceCIDRList",
        };
        (api_version, list)
    }

    fn kind(self) -> (&'static str, &'static str) {
        match self {
            Self::Services => ("v1", "Service"),
            Self::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSlice"),
            Self::Nodes => ("v1", "Node"),
            Self::ServiceCidrs => ("networking.k8s.io/v1", "ServiceCIDR"),
        }
    }
}

/// How a watch from a compacted resourceVersion is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoneMode {
    /// `200` and one `ERROR` event with a 410 `Status` (what real API servers do).
    Event,
    /// An HTTP `410` response with a `Status` body.
    HttpStatus,
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: &'static str,
    pub query: HashMap<String, String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl Request {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }
}

#[derive(Clone, Debug)]
struct LogEntry {
    rv: u64,
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    log: Vec<LogEntry>,
    compacted: u64,
}

struct Watch {
    resource: Resource,
    labels: Selector,
    fields: Selector,
    tx: mpsc::UnboundedSender<Result<String, std::io::Error>>,
}

struct State {
    rv: u64,
    stores: HashMap<Resource, Store>,
    requests: Vec<Request>,
    /// Events posted to `events.k8s.io/v1`, in order.
    events: Vec<Value>,
    fail_next: VecDeque<u16>,
    /// Resources answered with this HTTP status instead (404: not served, 403:
    /// forbidden), before any other failure.
    refused: HashMap<Resource, u16>,
    gone_mode: GoneMode,
    watches: Vec<Watch>,
    pages: HashMap<String, (Vec<Value>, u64)>,
    next_page: u64,
    /// Stopping: requests on connections still open are aborted.
    down: bool,
}

type Shared = Arc<Mutex<State>>;

/// The fake server; see the module documentation.
pub struct FakeApi {
    state: Shared,
    addr: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default()
    )
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn line(kind: &str, object: &Value) -> String {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    s
}

impl FakeApi {
    /// Starts an empty server on an ephemeral port of 127.0.0.1.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            stores: Resource::ALL
                .iter()
                .map(|r| (*r, Store::default()))
                .collect(),
            requests: Vec::new(),
            events: Vec::new(),
            fail_next: VecDeque::new(),
            refused: HashMap::new(),
            gone_mode: GoneMode::Event,
            watches: Vec::new(),
            pages: HashMap::new(),
            next_page: 0,
            down: false,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut api = Self {
            state,
            addr,
            server: None,
        };
        api.serve(listener);
        api
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let router = Router::new();
        let router = Resource::ALL.iter().fold(router, |router, r| {
            let r = *r;
            router.route(
                r.path(),
                get(
                    move |AxumState(state): AxumState<Shared>,
                          headers: HeaderMap,
                          Query(query): Query<HashMap<String, String>>| async move {
                        let authorization = headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        handle(state, r, query, authorization)
                    },
                ),
            )
        });
        let router = router.route(
            "/apis/events.k8s.io/v1/namespaces/{namespace}/events",
            post(
                |AxumState(state): AxumState<Shared>, body: axum::body::Bytes| async move {
                    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            &status(400, "BadRequest", "not JSON"),
                        );
                    };
                    lock(&state).events.push(event.clone());
                    json_response(StatusCode::CREATED, &event)
                },
            ),
        );
        let app = router.with_state(self.state.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        self.server = Some((stop_tx, task));
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and closes every connection: clients get "connection refused".
    pub async fn stop(&mut self) {
        lock(&self.state).down = true;
        self.break_watches();
        if let Some((stop, mut task)) = self.server.take() {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "already running");
        lock(&self.state).down = false;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Creates or replaces an object (a typed k8s-openapi value); returns its
    /// resourceVersion.
    pub fn put<T: Serialize>(&self, resource: Resource, object: &T) -> u64 {
        self.put_raw(resource, serde_json::to_value(object).unwrap())
    }

    /// Creates or replaces an object given as JSON (possibly malformed).
    pub fn put_raw(&self, resource: Resource, mut object: Value) -> u64 {
        let mut st = lock(&self.state);
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&object);
        let store = st.stores.get_mut(&resource).unwrap();
        let old = store.objects.insert(key, object.clone());
        let entry = LogEntry {
            rv,
            old,
            new: Some(object),
        };
        store.log.push(entry.clone());
        notify(&mut st, resource, &entry);
        rv
    }

    /// Deletes an object (`namespace` empty for Nodes).
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) {
        let mut st = lock(&self.state);
        st.rv += 1;
        let rv = st.rv;
        let store = st.stores.get_mut(&resource).unwrap();
        let Some(mut old) = store.objects.remove(&format!("{namespace}/{name}")) else {
            panic!("no {resource:?} {namespace}/{name} to delete");
        };
        old["metadata"]["resourceVersion"] = json!(rv.to_string());
        let entry = LogEntry {
            rv,
            old: Some(old),
            new: None,
        };
        store.log.push(entry.clone());
        notify(&mut st, resource, &entry);
    }

    /// Every object of `resource` (unfiltered): the truth the source must converge to.
    pub fn objects(&self, resource: Resource) -> Vec<Value> {
        lock(&self.state).stores[&resource]
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Forgets the event history: a watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut st = lock(&self.state);
        let rv = st.rv;
        for store in st.stores.values_mut() {
            store.compacted = rv;
            store.log.clear();
        }
    }

    pub fn set_gone_mode(&self, mode: GoneMode) {
        lock(&self.state).gone_mode = mode;
    }

    /// The next `codes.len()` requests are answered with these HTTP errors.
    pub fn fail_next(&self, codes: &[u16]) {
        lock(&self.state).fail_next.extend(codes);
    }

    /// Answers every request for `resource` with `code` (404: the server does not
    /// serve it; 403: the client may not read it), or serves it again (`None`).
    pub fn refuse(&self, resource: Resource, code: Option<u16>) {
        let mut st = lock(&self.state);
        match code {
            Some(code) => st.refused.insert(resource, code),
            None => st.refused.remove(&resource),
        };
    }

    /// Sends a `BOOKMARK` with the current resourceVersion on every open watch.
    pub fn bookmark(&self) {
        let mut st = lock(&self.state);
        let rv = st.rv;
        st.watches.retain(|w| {
            let (api_version, kind) = w.resource.kind();
            let object = json!({"apiVersion": api_version, "kind": kind,
                "metadata": {"resourceVersion": rv.to_string()}});
            w.tx.unbounded_send(Ok(line("BOOKMARK", &object))).is_ok()
        });
    }

    /// Ends every open watch cleanly (as the server does at `timeoutSeconds`).
    pub fn end_watches(&self) {
        lock(&self.state).watches.clear();
    }

    /// Breaks every open watch mid-stream (the connection is dropped).
    pub fn break_watches(&self) {
        for w in lock(&self.state).watches.drain(..) {
            let _ =
                w.tx.unbounded_send(Err(std::io::Error::other("connection dropped")));
        }
    }

    /// Number of open watches.
    pub fn open_watches(&self) -> usize {
        let mut st = lock(&self.state);
        st.watches.retain(|w| !w.tx.is_closed());
        st.watches.len()
    }

    /// Every request so far.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.state).events.clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state).requests.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some((_, task)) = self.server.take() {
            task.abort();
        }
    }
}

/// The event a watcher with these selectors sees for `entry`, if any.
fn transform(
    entry: &LogEntry,
    labels: &Selector,
    fields: &Selector,
) -> Option<(&'static str, Value)> {
    let matches = |o: &Option<Value>| {
        o.as_ref()
            .is_some_and(|o| labels.matches_labels(o) && fields.matches_fields(o))
    };
    match (matches(&entry.old), matches(&entry.new), &entry.new) {
        (false, true, Some(new)) => Some(("ADDED", new.clone())),
        (true, true, Some(new)) => Some(("MODIFIED", new.clone())),
        (true, false, Some(new)) => Some(("DELETED", new.clone())),
        (true, false, None) => {
            let mut old = entry.old.clone()?;
            old["metadata"]["resourceVersion"] = json!(entry.rv.to_string());
            Some(("DELETED", old))
        }
        _ => None,
    }
}

fn notify(st: &mut State, resource: Resource, entry: &LogEntry) {
    st.watches.retain(|w| {
        if w.resource != resource {
            return true;
        }
        match transform(entry, &w.labels, &w.fields) {
            Some((kind, object)) => w.tx.unbounded_send(Ok(line(kind, &object))).is_ok(),
            None => !w.tx.is_closed(),
        }
    });
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn handle(
    state: Shared,
    resource: Resource,
    query: HashMap<String, String>,
    authorization: Option<String>,
) -> Response {
    let mut st = lock(&state);
    st.requests.push(Request {
        path: resource.path(),
        query: query.clone(),
        authorization,
    });
    if st.down {
        // A request that slipped in on a connection still open: drop the connection.
        let broken = futures::stream::once(async {
            Err::<String, _>(std::io::Error::other("server stopping"))
        });
        return Response::builder()
            .status(StatusCode::OK)
            .body(Body::from_stream(broken))
            .unwrap();
    }
    match st.refused.get(&resource) {
        // What a real API server says for a group version it does not serve.
        Some(404) => {
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "404 page not found\n",
            )
                .into_response();
        }
        Some(403) => {
            let body = status(
                403,
                "Forbidden",
                &format!(
                    "{} is forbidden: User \"system:serviceaccount:kube-system:kube-proxy-rs\" \
                     cannot list resource at the cluster scope",
                    resource.path()
                ),
            );
            return json_response(StatusCode::FORBIDDEN, &body);
        }
        Some(&code) => {
            let body = status(code, "InternalError", "refused");
            return json_response(StatusCode::from_u16(code).unwrap(), &body);
        }
        None => {}
    }
    if let Some(code) = st.fail_next.pop_front() {
        let code = StatusCode::from_u16(code).unwrap();
        let body = status(code.as_u16(), "InternalError", "injected failure");
        return json_response(code, &body);
    }
    let labels = Selector::parse(query.get("labelSelector").map_or("", String::as_str));
    let fields = Selector::parse(query.get("fieldSelector").map_or("", String::as_str));
    if query.get("watch").map(String::as_str) == Some("true") {
        watch(&mut st, resource, &query, labels, fields)
    } else {
        list(&mut st, resource, &query, &labels, &fields)
    }
}

fn list(
    st: &mut State,
    resource: Resource,
    query: &HashMap<String, String>,
    labels: &Selector,
    fields: &Selector,
) -> Response {
    let (mut items, rv) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match st.pages.remove(token) {
            Some(page) => page,
            None => {
                let body = status(410, "Expired", "the continue token has expired");
                return json_response(StatusCode::GONE, &body);
            }
        },
        None => {
            let items: Vec<Value> = st.stores[&resource]
                .objects
                .values()
                .filter(|o| labels.matches_labels(o) && fields.matches_fields(o))
                .cloned()
                .collect();
            (items, st.rv)
        }
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = limit
        && items.len() > limit
    {
        let rest = items.split_off(limit);
        st.next_page += 1;
        let token = format!("page-{}", st.next_page);
        st.pages.insert(token.clone(), (rest, rv));
        metadata["continue"] = json!(token);
    }
    let (api_version, kind) = resource.list_kind();
    let body =
        json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items});
    json_response(StatusCode::OK, &body)
}

fn watch(
    st: &mut State,
    resource: Resource,
    query: &HashMap<String, String>,
    labels: Selector,
    fields: Selector,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded::<Result<String, std::io::Error>>();
    let store = &st.stores[&resource];
    if from < store.compacted {
        let gone = status(
            410,
            "Expired",
            &format!("too old resource version: {from} ({})", store.compacted),
        );
        if st.gone_mode == GoneMode::HttpStatus {
            return json_response(StatusCode::GONE, &gone);
        }
        let _ = tx.unbounded_send(Ok(line("ERROR", &gone)));
        drop(tx);
        return stream_response(rx);
    }
    for entry in store.log.iter().filter(|e| e.rv > from) {
        if let Some((kind, object)) = transform(entry, &labels, &fields) {
            let _ = tx.unbounded_send(Ok(line(kind, &object)));
        }
    }
    if query.get("allowWatchBookmarks").map(String::as_str) == Some("true") {
        let (api_version, kind) = resource.kind();
        let object = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"resourceVersion": st.rv.to_string()}});
        let _ = tx.unbounded_send(Ok(line("BOOKMARK", &object)));
    }
    st.watches.push(Watch {
        resource,
        labels,
        fields,
        tx,
    });
    stream_response(rx)
}

fn stream_response(rx: mpsc::UnboundedReceiver<Result<String, std::io::Error>>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(rx))
        .unwrap()
}
