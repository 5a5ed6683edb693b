//! What the source has delivered for one kind, so that watch events and re-lists turn
//! into exactly the changes that keep the model equal to the API server: no duplicate
//! (an event already delivered is skipped by resourceVersion), no loss (a re-list
//! deletes only objects missing from a *complete* list).
//!
//! This is the part of client-go's `DeltaFIFO.Replace` / kube-rs' reflector `Store`
//! the proxy needs, keeping keys and resource versions only: the objects themselves
//! live in the model.

use std::collections::HashMap;
use std::time::SystemTime;

use kpr_model::{Change, NamespacedName};

use crate::event::WatchedKind;
use crate::objects::Seen;

/// Output of one tracker step.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Changes to deliver, in order.
    pub changes: Vec<Change>,
    /// Trigger times of the EndpointSlice upserts among them: (Service, time).
    pub triggers: Vec<(NamespacedName, SystemTime)>,
    /// Objects that could not be decoded: (key, resourceVersion, reason).
    pub invalid: Vec<(NamespacedName, String, String)>,
}

impl Step {
    fn deliver(&mut self, seen: Seen) {
        match seen.decoded {
            Ok(decoded) => {
                self.triggers.extend(decoded.trigger);
                self.changes.push(decoded.change);
            }
            Err(reason) => self.invalid.push((seen.key, seen.resource_version, reason)),
        }
    }
}

/// The delivered state of one kind.
#[derive(Debug)]
pub(crate) struct KindTracker {
    kind: WatchedKind,
    /// Delivered objects: key → resourceVersion.
    known: HashMap<NamespacedName, String>,
    /// A list in progress (between `Init` and `InitDone`).
    listing: Option<Vec<Seen>>,
    /// Completed lists so far.
    lists: u64,
    /// The server refused the last list of this optional kind (404/403).
    unavailable: bool,
}

impl KindTracker {
    pub(crate) fn new(kind: WatchedKind) -> Self {
        Self {
            kind,
            known: HashMap::new(),
            listing: None,
            lists: 0,
            unavailable: false,
        }
    }

    /// True once the kind no longer holds up the first sync: it was listed, or (an
    /// optional kind) the server refused to list it.
    pub(crate) fn settled(&self) -> bool {
        self.lists > 0 || self.unavailable
    }

    /// The server refused to list this optional kind; true if that is news (it was
    /// listed, or never tried, before). What was delivered stays.
    pub(crate) fn mark_unavailable(&mut self) -> bool {
        self.listing = None;
        !std::mem::replace(&mut self.unavailable, true)
    }

    /// Number of completed lists.
    pub(crate) fn lists(&self) -> u64 {
        self.lists
    }

    /// Number of objects delivered and not deleted.
    pub(crate) fn len(&self) -> usize {
        self.known.len()
    }

    /// A (re-)list starts: anything buffered from an interrupted list is dropped.
    pub(crate) fn init(&mut self) {
        self.listing = Some(Vec::new());
    }

    /// An object of the list in progress.
    pub(crate) fn init_apply(&mut self, seen: Seen) {
        self.listing.get_or_insert_with(Vec::new).push(seen);
    }

    /// The list is complete: the changes that replace what was delivered with it.
    pub(crate) fn init_done(&mut self) -> Step {
        let listed = self.listing.take().unwrap_or_default();
        let mut step = Step::default();
        let mut known = HashMap::with_capacity(listed.len());
        for seen in listed {
            let unchanged = !seen.resource_version.is_empty()
                && self.known.get(&seen.key) == Some(&seen.resource_version);
            known.insert(seen.key.clone(), seen.resource_version.clone());
            if !unchanged {
                step.deliver(seen);
            }
        }
        let mut vanished: Vec<NamespacedName> = self
            .known
            .keys()
            .filter(|k| !known.contains_key(*k))
            .cloned()
            .collect();
        vanished.sort();
        step.changes
            .extend(vanished.into_iter().map(|k| self.kind.delete_change(k)));
        self.known = known;
        self.lists += 1;
        self.unavailable = false;
        step
    }

    /// An added or modified object from the watch.
    pub(crate) fn apply(&mut self, seen: Seen) -> Step {
        let mut step = Step::default();
        let duplicate = !seen.resource_version.is_empty()
            && self.known.get(&seen.key) == Some(&seen.resource_version);
        if !duplicate {
            self.known
                .insert(seen.key.clone(), seen.resource_version.clone());
            step.deliver(seen);
        }
        step
    }

    /// A deleted object from the watch.
    pub(crate) fn delete(&mut self, key: NamespacedName) -> Step {
        let mut step = Step::default();
        if self.known.remove(&key).is_some() {
            step.changes.push(self.kind.delete_change(key));
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::objects::Decoded;

    fn seen(name: &str, rv: &str) -> Seen {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Seen {
            key: NamespacedName::new("ns", name),
            resource_version: rv.into(),
            decoded: Ok(Decoded {
                change: Change::ServiceUpsert(Box::new(svc)),
                trigger: None,
            }),
        }
    }

    fn describe(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::ServiceUpsert(s) => format!(
                    "upsert {}@{}",
                    s.metadata.name.as_deref().unwrap_or_default(),
                    s.metadata.resource_version.as_deref().unwrap_or_default()
                ),
                Change::ServiceDelete(n) => format!("delete {}", n.name),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn list(t: &mut KindTracker, items: &[(&str, &str)]) -> Vec<String> {
        t.init();
        for (n, rv) in items {
            t.init_apply(seen(n, rv));
        }
        describe(&t.init_done().changes)
    }

    /// A re-list delivers only the difference: new and changed objects, deletions of
    /// vanished ones; unchanged ones produce nothing.
    #[test]
    fn relist_is_a_replacement() {
        let mut t = KindTracker::new(WatchedKind::Services);
        assert_eq!(
            list(&mut t, &[("a", "1"), ("b", "2"), ("c", "3")]),
            ["upsert a@1", "upsert b@2", "upsert c@3"]
        );
        assert_eq!(
            list(&mut t, &[("a", "1"), ("c", "5"), ("d", "6")]),
            ["upsert c@5", "upsert d@6", "delete b"]
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t.lists(), 2);
    }

    /// An interrupted list (a new `Init` before `InitDone`) delivers nothing and
    /// deletes nothing; the next complete list is diffed against what was delivered.
    #[test]
    fn interrupted_list_changes_nothing() {
        let mut t = KindTracker::new(WatchedKind::Services);
        list(&mut t, &[("a", "1"), ("b", "2")]);
        t.init();
        t.init_apply(seen("a", "1"));
        // The connection broke here; the watcher starts over.
        assert_eq!(
            list(&mut t, &[("a", "1"), ("b", "2")]),
            Vec::<String>::new()
        );
    }

    /// Watch events already delivered (same resourceVersion) are skipped; deletes of
    /// unknown objects produce nothing.
    #[test]
    fn watch_events_once() {
        let mut t = KindTracker::new(WatchedKind::Services);
        list(&mut t, &[("a", "1")]);
        assert_eq!(
            describe(&t.apply(seen("a", "1")).changes),
            Vec::<String>::new()
        );
        assert_eq!(describe(&t.apply(seen("a", "4")).changes), ["upsert a@4"]);
        assert_eq!(
            describe(&t.apply(seen("a", "4")).changes),
            Vec::<String>::new()
        );
        assert_eq!(
            describe(&t.delete(NamespacedName::new("ns", "a")).changes),
            ["delete a"]
        );
        assert!(t.delete(NamespacedName::new("ns", "a")).changes.is_empty());
    }

    /// An undecodable object is reported, not delivered, and does not count as
    /// vanished in the next list (the last good version stays in the model).
    #[test]
    fn refused_optional_kind_settles_once_and_keeps_what_it_had() {
        let mut t = KindTracker::new(WatchedKind::ServiceCidrs);
        assert!(!t.settled());
        assert!(t.mark_unavailable(), "news the first time");
        assert!(!t.mark_unavailable(), "not news again");
        assert!(t.settled() && t.lists() == 0);
        list(&mut t, &[("a", "1")]);
        assert!(t.settled() && t.lists() == 1);
        // Refused again (RBAC changed): news, and nothing is deleted.
        assert!(t.mark_unavailable());
        assert_eq!(t.len(), 1);
        assert!(
            list(&mut t, &[("a", "1")]).is_empty(),
            "same object, no change"
        );
    }

    #[test]
    fn invalid_objects_are_reported_and_kept() {
        let mut t = KindTracker::new(WatchedKind::Services);
        list(&mut t, &[("a", "1")]);
        let bad = Seen {
            decoded: Err("spec.ports: invalid type".into()),
            ..seen("a", "2")
        };
        let step = t.apply(bad.clone());
        assert!(step.changes.is_empty());
        assert_eq!(step.invalid.len(), 1);
        t.init();
        t.init_apply(bad);
        let step = t.init_done();
        assert!(step.changes.is_empty(), "{:?}", describe(&step.changes));
        assert!(
            step.invalid.is_empty(),
            "already reported at this resourceVersion"
        );
    }
}
