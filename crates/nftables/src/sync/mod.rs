//! What one family's table holds, as far as we know, and the transactions that move
//! it to a new desired state: a full sync planned against a fresh [`Listing`] of the
//! kernel, or a partial sync planned against our own record of the last one.
//!
//! Like upstream: a full sync rewrites every chain and diffs the map elements against
//! the kernel; chains no longer used are flushed and deleted later, in a separate
//! transaction (the kernel may still count a reference from a just-deleted map
//! element); affinity sets no longer used are deleted at once. Unlike upstream, a
//! partial sync rewrites only the chains whose rules changed, not every chain of a
//! changed Service: one endpoint more in a 1,000-endpoint Service is one new chain and
//! one rewritten service chain, not 1,001 chains.
//!
//! Elements are owned by Services. Two Services may claim the same key (the same
//! external IP and port, say); the first by name wins, as a full sync would decide,
//! and the other takes over when the first lets go.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use kpr_model::NamespacedName;

use crate::listing::{Listing, element_state};
use crate::names::*;
use crate::objects::{Chain, Element, Family, Key, Rule, Set, Verdict};
use crate::render::Fragment;
use crate::transaction::Transaction;

mod full;

pub use full::FullSync;

/// The maps and sets whose elements are diffed (`nodeport-ips` is rewritten on full
/// syncs instead, like upstream).
pub const DIFFED_SETS: [&str; 6] = [
    CLUSTER_IPS,
    SERVICE_IPS,
    FIREWALL_IPS,
    NO_ENDPOINT_SERVICES,
    NO_ENDPOINT_NODEPORTS,
    SERVICE_NODEPORTS,
];

type ElementId = (&'static str, Key);

/// Our record of one family's table after the last successful sync.
///
/// What each Service occupies is not kept: a partial sync is given the Service's
/// objects as the last sync rendered them (the caller renders its last state
/// again), which costs a render of the changed Services instead of the names of
/// every object of every Service (at 50,000 Services, 46 MB). Nor are the chains in
/// use: each belongs to one Service (its name says which), so the Service's last
/// objects tell which of its chains the kernel holds and with what rules. A record
/// of 128-bit digests of every chain's name and rules took 35 MB at 50,000 Services
/// (567,000 chains).
#[derive(Clone, Debug)]
pub struct Synced {
    family: Family,
    /// Who wants which element, with what value. The winner of each is what the
    /// kernel holds (the diffed maps' elements).
    claims: HashMap<ElementId, Owners>,
    /// Service and endpoint chains flushed (used by no Service) and not yet deleted.
    flushed: HashSet<String>,
    /// Affinity sets in the kernel.
    affinity_sets: HashMap<String, Set>,
}

/// Operations above which a full sync is sent as several transactions (see
/// [`Synced::full`]). Measured on kernel 6.18 at 4,000 Services (about 200,000
/// operations in all): see BENCHMARKS.md.
pub const FULL_SYNC_BATCH_OPS: usize = 20_000;

/// One Service's objects in a partial sync.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// What the last sync wrote for it (None: nothing, it is new).
    pub old: Option<Fragment>,
    /// What it needs now (None: nothing, it is gone).
    pub new: Option<Fragment>,
}

/// The result of planning a sync.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The transactions, to apply in order. One, except for a large full sync.
    pub txs: Vec<Transaction>,
    /// Chains flushed by this sync, to delete later.
    pub newly_stale: Vec<String>,
    /// Chains written by this sync (no longer stale if they were).
    pub written: Vec<String>,
}

/// What one Service wants an element to hold (its set and key are the claim's).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    value: Option<Verdict>,
    comment: Option<String>,
}

impl Wanted {
    fn of(e: &Element) -> Self {
        Self {
            value: e.value.clone(),
            comment: e.comment.clone(),
        }
    }

    /// As the kernel listing shows it.
    fn text(&self) -> String {
        element_state(
            self.value.as_ref().map(ToString::to_string).as_deref(),
            self.comment.as_deref(),
        )
    }

    fn element(&self, (set, key): &ElementId) -> Element {
        Element {
            set,
            key: key.clone(),
            value: self.value.clone(),
            comment: self.comment.clone(),
        }
    }
}

fn elem_id(e: &Element) -> ElementId {
    (e.set, e.key.clone())
}

/// The key a listing shows as `text`, if it is one we would write exactly so.
fn listed_key(text: &str) -> Option<Key> {
    crate::netlink::batch::parse_key(text)
        .ok()
        .filter(|k| k.to_string() == text)
}

/// The Services that want one element, each with the value it wants, sorted by
/// Service: the first one wins. Almost every element has one owner, so a vector of
/// exactly that size: a `BTreeMap` allocates a node with room for eleven (about 1.5 KB
/// per element; at 3,000 Services this record was the largest live allocation).
#[derive(Clone, Debug, Default)]
struct Owners(Vec<(NamespacedName, Wanted)>);

impl Owners {
    fn insert(&mut self, name: NamespacedName, element: Wanted) {
        match self.0.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) => self.0[i].1 = element,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (name, element));
            }
        }
    }

    fn remove(&mut self, name: &NamespacedName) {
        if let Ok(i) = self.0.binary_search_by(|(n, _)| n.cmp(name)) {
            self.0.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn winner(&self) -> Option<&Wanted> {
        self.0.first().map(|(_, e)| e)
    }
}

/// The rules of a chain are fixed by its name and whether its endpoint uses affinity:
/// true if a chain listed at start-up may be kept as it is (upstream's
/// `epChainSkipUpdate`).
fn endpoint_chain_reusable(chain: &Chain, listing: &Listing) -> bool {
    let Some(base) = chain.name.strip_prefix(ENDPOINT_PREFIX) else {
        return false;
    };
    if !listing.chains.contains(&chain.name) {
        return false;
    }
    let affinity_set = format!("{AFFINITY_PREFIX}{base}");
    let uses_affinity = chain
        .rules
        .iter()
        .any(|r| matches!(r, Rule::AffinityUpdate(_)));
    listing.sets.contains(&affinity_set) == uses_affinity
}

impl Synced {
    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Records that `names` were deleted.
    pub fn chains_deleted<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for n in names {
            self.flushed.remove(n);
        }
    }

    /// True if `chain` was flushed (no longer used) and waits for deletion.
    pub fn is_flushed(&self, chain: &str) -> bool {
        self.flushed.contains(chain)
    }

    /// The value text of the element the kernel holds for `id` (its winner's).
    fn winner_text(&self, id: &ElementId) -> Option<String> {
        self.claims
            .get(id)
            .and_then(Owners::winner)
            .map(Wanted::text)
    }

    /// Records that Service `name` wants `elements`.
    fn claim(&mut self, name: &NamespacedName, elements: &[Element]) {
        for e in elements {
            self.claims
                .entry(elem_id(e))
                .or_default()
                .insert(name.clone(), Wanted::of(e));
        }
    }

    /// Plans a partial sync: each changed Service with its objects as the last sync
    /// wrote them and its new ones (None: none). Updates the record as if the
    /// transaction succeeds; drop the record if it fails.
    pub fn partial(&mut self, changes: Vec<(NamespacedName, Change)>) -> Plan {
        // Chains to write.
        let mut decl_chains: Vec<Chain> = Vec::new();
        let mut new_sets: Vec<Set> = Vec::new();
        let mut flushes: Vec<String> = Vec::new();
        let mut dropped_sets: BTreeSet<String> = BTreeSet::new();
        // Each element touched, with what the kernel held before (its winner's value
        // text), taken before this sync changes any claim on it.
        let mut touched: BTreeMap<ElementId, Option<String>> = BTreeMap::new();

        for (name, Change { old, new }) in changes {
            let old = old.unwrap_or_default();
            let new = new.unwrap_or_default();
            // Chains.
            // The kernel holds the old chains with their old rules: a chain is
            // flushed only once its Service lets it go, so none of them is.
            let held: HashMap<&str, &[Rule]> = old
                .chains
                .iter()
                .map(|c| (c.name.as_str(), c.rules.as_slice()))
                .collect();
            for c in &new.chains {
                if held.get(c.name.as_str()) != Some(&c.rules.as_slice()) {
                    decl_chains.push(c.clone());
                }
            }
            let new_names: BTreeSet<&str> = new.chains.iter().map(|c| c.name.as_str()).collect();
            for c in old
                .chains
                .iter()
                .filter(|c| !new_names.contains(c.name.as_str()))
            {
                if self.flushed.insert(c.name.clone()) {
                    flushes.push(c.name.clone());
                }
            }
            // Affinity sets.
            let new_set_names: BTreeSet<&str> = new.sets.iter().map(|s| s.name.as_str()).collect();
            for s in &new.sets {
                if self.affinity_sets.get(&s.name) != Some(s) {
                    new_sets.push(s.clone());
                }
                dropped_sets.remove(&s.name);
            }
            for s in old
                .sets
                .iter()
                .filter(|s| !new_set_names.contains(s.name.as_str()))
            {
                dropped_sets.insert(s.name.clone());
            }
            // Element claims.
            for id in old.elements.iter().chain(&new.elements).map(elem_id) {
                if let std::collections::btree_map::Entry::Vacant(slot) = touched.entry(id) {
                    let held = self.winner_text(slot.key());
                    slot.insert(held);
                }
            }
            for id in old.elements.iter().map(elem_id) {
                if let Some(owners) = self.claims.get_mut(&id) {
                    owners.remove(&name);
                    if owners.is_empty() {
                        self.claims.remove(&id);
                    }
                }
            }
            self.claim(&name, &new.elements);
        }

        // As upstream, every written chain gets `add` + `flush` + its rules, whether
        // or not we believe it exists: the kernel ends up right either way.
        let mut tx = Transaction::new(self.family);
        for c in &decl_chains {
            tx.add_chain(c);
        }
        for s in &new_sets {
            tx.add_set(s);
            self.affinity_sets.insert(s.name.clone(), s.clone());
        }
        let mut written = Vec::new();
        for c in &decl_chains {
            tx.write_chain(c);
            self.flushed.remove(&c.name);
            written.push(c.name.clone());
        }
        for name in &flushes {
            tx.flush_chain(name);
        }
        let mut adds: Vec<Element> = Vec::new();
        for (id, have) in touched {
            let winner = self.claims.get(&id).and_then(Owners::winner);
            match (winner, have) {
                (None, None) => {}
                (None, Some(_)) => tx.delete_element(id.0, &id.1.to_string()),
                (Some(w), have) => {
                    if have.as_deref() != Some(w.text().as_str()) {
                        if have.is_some() {
                            tx.delete_element(id.0, &id.1.to_string());
                        }
                        adds.push(w.element(&id));
                    }
                }
            }
        }
        for e in &adds {
            tx.add_element(e);
        }
        for s in &dropped_sets {
            if self.affinity_sets.remove(s).is_some() {
                tx.delete_set(s, false);
            }
        }
        Plan {
            txs: vec![tx],
            newly_stale: flushes,
            written,
        }
    }
}

/// One transaction if all of `txs` fit in `batch_ops` operations, else `txs`
/// without empty ones.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Key, Verdict};

    fn element(chain: &str) -> Element {
        Element {
            set: SERVICE_IPS,
            key: Key::Addr(std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
            value: Some(Verdict::Goto(chain.to_string())),
            comment: None,
        }
    }

    fn wanted(chain: &str) -> Wanted {
        Wanted::of(&element(chain))
    }

    fn svc(name: &str) -> NamespacedName {
        NamespacedName::new("default", name)
    }

    #[test]
    fn the_first_service_by_name_wins_and_the_next_takes_over() {
        let mut owners = Owners::default();
        owners.insert(svc("web"), wanted("svc-web"));
        owners.insert(svc("api"), wanted("svc-api"));
        owners.insert(svc("db"), wanted("svc-db"));
        assert_eq!(owners.winner(), Some(&wanted("svc-api")));

        // A new value from the same Service replaces its claim, not adds one.
        owners.insert(svc("api"), wanted("svc-api-2"));
        assert_eq!(owners.0.len(), 3);
        assert_eq!(owners.winner(), Some(&wanted("svc-api-2")));

        owners.remove(&svc("api"));
        assert_eq!(owners.winner(), Some(&wanted("svc-db")));
        owners.remove(&svc("nobody"));
        owners.remove(&svc("db"));
        owners.remove(&svc("web"));
        assert!(owners.is_empty());
        assert_eq!(owners.winner(), None);
    }

    #[test]
    fn listed_keys_count_only_as_written() {
        let keys = [
            Key::Addr("192.0.2.1".parse().unwrap()),
            Key::Addr("2001:db8::1".parse().unwrap()),
            Key::ProtoPort(kpr_model::Protocol::Sctp, 30001),
            Key::AddrProtoPort("2001:db8::7".parse().unwrap(), kpr_model::Protocol::Udp, 53),
        ];
        for k in keys {
            assert_eq!(listed_key(&k.to_string()), Some(k));
        }
        for text in [
            "",
            "tcp . 80 . x",
            "icmp . 1",
            "192.0.2.01",
            "2001:DB8::1",
            "1.2.3.4 . tcp",
        ] {
            assert_eq!(listed_key(text), None, "{text:?}");
        }
    }
}
