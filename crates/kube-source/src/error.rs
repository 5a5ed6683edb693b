//! Errors of the API source: building the client ([`ClientError`]) and what the
//! running watchers report ([`SourceError`]). Watch errors are never fatal: the source
//! keeps retrying with backoff and keeps what it already delivered.

use std::path::PathBuf;

use crate::event::WatchedKind;

/// The client could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file named by `--kubeconfig` / `clientConnection.kubeconfig`.
        path: PathBuf,
        /// kube-rs' reason.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig file was read but does not describe a usable connection.
    #[error("kubeconfig {path}: cannot use it: {source}")]
    KubeconfigContents {
        /// The kubeconfig file.
        path: PathBuf,
        /// kube-rs' reason.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor `--master` was given and the in-cluster service
    /// account credentials are not available.
    #[error(
        "neither --kubeconfig nor --master given, and no in-cluster credentials \
         (KUBERNETES_SERVICE_HOST/PORT and /var/run/secrets/kubernetes.io/serviceaccount): {source}"
    )]
    InCluster {
        /// kube-rs' reason.
        #[source]
        source: kube::config::InClusterError,
    },
    /// `--master` is not a valid URL.
    #[error("--master {value:?}: not a valid URL: {reason}")]
    Master {
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// kube-rs could not build the HTTP client (TLS material, auth plugin, ...).
    #[error("cannot build the API client for {url}: {source}")]
    Build {
        /// The API server URL.
        url: String,
        /// kube-rs' reason.
        #[source]
        source: kube::Error,
    },
}

/// Something the running source reports. None of these stops it: watches are retried
/// with backoff, and an object that cannot be decoded is skipped (the last good version
/// of it stays in effect).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Listing or watching one kind failed (API server unreachable, 5xx, 403, 410 Gone,
    /// dropped connection, ...). It will be retried after `retry_in`.
    #[error("{kind}: {source}; retrying in {retry_in:?}")]
    Watch {
        /// The kind being listed or watched.
        kind: WatchedKind,
        /// What went wrong.
        #[source]
        source: kube::runtime::watcher::Error,
        /// When the next attempt is made.
        retry_in: std::time::Duration,
    },
    /// The API server answered a list of an optional kind with 404 (it does not serve
    /// the resource) or 403 (the proxy may not read it). The source goes on without
    /// it, treating it as empty, and asks again after `retry_in`.
    #[error("{kind}: {}; going on without them, asking again in {retry_in:?}", unavailable_reason(*.code, .message))]
    Unavailable {
        /// The optional kind.
        kind: WatchedKind,
        /// The HTTP status code (404 or 403).
        code: u16,
        /// The API server's message.
        message: String,
        /// When the next attempt is made.
        retry_in: std::time::Duration,
    },
    /// The API server sent an object that does not decode as its kind. It is skipped;
    /// the version delivered before (if any) stays in effect.
    #[error(
        "{kind} {object} (resourceVersion {resource_version}): cannot decode: {reason}; skipped"
    )]
    InvalidObject {
        /// The kind.
        kind: WatchedKind,
        /// `namespace/name` (or the name for Nodes).
        object: String,
        /// The object's resourceVersion.
        resource_version: String,
        /// The decoder's message (names the field).
        reason: String,
    },
}

impl SourceError {
    /// The kind the error is about.
    pub fn kind(&self) -> WatchedKind {
        match self {
            Self::Watch { kind, .. }
            | Self::Unavailable { kind, .. }
            | Self::InvalidObject { kind, .. } => *kind,
        }
    }

    /// True for errors that mean the API server could not be reached or answered
    /// with a server error (as opposed to a bad object).
    pub fn is_connection_error(&self) -> bool {
        matches!(self, Self::Watch { .. })
    }
}

fn unavailable_reason(code: u16, message: &str) -> String {
    match code {
        404 => format!(
            "not served by this API server (HTTP 404 {message:?}; ServiceCIDRs are GA since Kubernetes 1.33), \
             so nftables mode does not drop traffic to unallocated ClusterIPs"
        ),
        _ => format!(
            "forbidden (HTTP {code} {message:?}): grant list and watch on networking.k8s.io servicecidrs \
             (deploy/rbac.yaml does)"
        ),
    }
}
