//! What the source sends to the sync loop: one closed enum, [`SourceEvent`].

use std::fmt;
use std::time::SystemTime;

use kpr_model::{Change, NamespacedName, ObjectKind};
use tokio::time::Instant;

use crate::error::SourceError;

/// The kinds the source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchedKind {
    /// `v1/Service`, without those of another proxy or with `clusterIP: None`.
    Services,
    /// `discovery.k8s.io/v1/EndpointSlice`, without those of headless Services.
    EndpointSlices,
    /// `v1/Node`, this node only.
    Node,
    /// `networking.k8s.io/v1/ServiceCIDR`: the ranges ClusterIPs come from (nftables
    /// mode drops traffic to unallocated addresses in them). Optional: an API server
    /// that does not serve it (before Kubernetes 1.33, or RBAC without it) does not
    /// hold up the first sync.
    ServiceCidrs,
}

impl WatchedKind {
    /// Every watched kind.
    pub const ALL: [WatchedKind; 4] = [
        Self::Services,
        Self::EndpointSlices,
        Self::Node,
        Self::ServiceCidrs,
    ];

    /// The model's name for the kind.
    pub fn object_kind(self) -> ObjectKind {
        match self {
            Self::Services => ObjectKind::Service,
            Self::EndpointSlices => ObjectKind::EndpointSlice,
            Self::Node => ObjectKind::Node,
            Self::ServiceCidrs => ObjectKind::ServiceCidr,
        }
    }

    /// Index in [`WatchedKind::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Services => 0,
            Self::EndpointSlices => 1,
            Self::Node => 2,
            Self::ServiceCidrs => 3,
        }
    }

    /// True for kinds the first sync waits for only if the API server serves them
    /// (a 404 or 403 on the list counts as "listed, none").
    pub fn is_optional(self) -> bool {
        self == Self::ServiceCidrs
    }

    /// The change that deletes the object called `key` of this kind (`key.namespace`
    /// is empty for the cluster-scoped Nodes and ServiceCIDRs).
    pub fn delete_change(self, key: NamespacedName) -> Change {
        match self {
            Self::Services => Change::ServiceDelete(key),
            Self::EndpointSlices => Change::SliceDelete(key),
            Self::Node => Change::NodeDelete(key.name.to_string()),
            Self::ServiceCidrs => Change::ServiceCidrDelete(key.name.to_string()),
        }
    }
}

impl fmt::Display for WatchedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices",
            Self::Node => "node",
            Self::ServiceCidrs => "servicecidrs",
        })
    }
}

/// When the EndpointSlice controller saw the change that led to an EndpointSlice
/// update: the `endpoints.kubernetes.io/last-change-trigger-time` annotation, the start
/// of upstream's `kubeproxy_network_programming_duration_seconds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerTime {
    /// The Service the slice belongs to (its `kubernetes.io/service-name` label).
    pub service: NamespacedName,
    /// The annotation's time.
    pub at: SystemTime,
}

/// Changes to apply to the model, in order.
#[derive(Clone, Debug)]
pub struct ChangeBatch {
    /// The changes, in the order the API server sent them.
    pub changes: Vec<Change>,
    /// When the first of them arrived from the API server (tokio's clock): the start of
    /// this proxy's event-to-kernel latency.
    pub received_at: Instant,
    /// Trigger times of the EndpointSlice updates in `changes`. As upstream's
    /// `EndpointsChangeTracker`, only updates (not deletions) whose time is after the
    /// source started are reported, so the first list does not count the age of the
    /// cluster as programming latency.
    pub trigger_times: Vec<TriggerTime>,
}

impl ChangeBatch {
    /// An empty batch stamped `received_at`.
    pub fn new(received_at: Instant) -> Self {
        Self {
            changes: Vec::new(),
            received_at,
            trigger_times: Vec::new(),
        }
    }

    /// True if the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// One event from the API source.
///
/// Contract for the consumer (the sync loop):
/// - Apply the `changes` of [`SourceEvent::Changes`] and [`SourceEvent::Relisted`] to the
///   model in the order received; both are plain [`kpr_model::Store::apply`] calls.
/// - Program nothing before [`SourceEvent::Synced`]: it comes once, after the first
///   complete list of every kind has been delivered (for an optional kind, or after
///   the server said it does not serve it: [`SourceError::Unavailable`]).
/// - A [`SourceEvent::Relisted`] batch already is the difference between what the
///   source delivered before and the new complete list of that kind (upserts of new or
///   changed objects, deletions of vanished ones, nothing for unchanged ones), so
///   applying it leaves the model holding exactly the listed objects.
/// - [`SourceEvent::Error`] is informational: log it, count it. The source retries by
///   itself and never turns a failure into deletions.
#[derive(Debug)]
pub enum SourceEvent {
    /// Watch events (added, modified, deleted objects), possibly of several kinds.
    Changes(ChangeBatch),
    /// A complete list of `kind` was received (the first one, or a re-list after
    /// `410 Gone` or a restarted watcher), as the changes that make the model equal to
    /// it.
    Relisted {
        /// The kind that was listed.
        kind: WatchedKind,
        /// True for the first list of this kind.
        initial: bool,
        /// The difference to apply.
        batch: ChangeBatch,
    },
    /// Every kind has completed its first list: the model is complete and may be
    /// programmed. Sent once.
    Synced {
        /// Whether this node's Node object exists (upstream waits for it before
        /// starting the proxier, up to 5 minutes).
        node_found: bool,
    },
    /// A problem, reported for logs and metrics; the source carries on.
    Error(SourceError),
}
