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

use std::collections::{BTreeSet, HashMap};

use kpr_model::NamespacedName;

use crate::listing::{Listing, element_state};
use crate::names::*;
use crate::objects::{Chain, Element, Family, Rule, Set};
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

type ElementId = (&'static str, String);

/// Our record of one family's table after the last successful sync.
#[derive(Clone, Debug)]
pub struct Synced {
    family: Family,
    /// What each Service's objects occupy (their names, not their rules: the
    /// rules are in the kernel, and their digests in `chains`).
    services: HashMap<NamespacedName, Footprint>,
    /// Who wants which element, with what value.
    claims: HashMap<ElementId, Owners>,
    /// What the diffed maps hold: [`element_state`] text.
    elements: HashMap<ElementId, String>,
    /// Service and endpoint chains in the kernel and a digest of their rules (None:
    /// flushed). A digest, not a copy: at 10,000 Services the rules are about
    /// 480,000 values, needed only to tell whether a chain changed.
    chains: HashMap<String, Option<RulesDigest>>,
    /// Affinity sets in the kernel.
    affinity_sets: HashMap<String, Set>,
}

/// Operations above which a full sync is sent as several transactions (see
/// [`Synced::full`]). Measured on kernel 6.18 at 4,000 Services (about 200,000
/// operations in all): see BENCHMARKS.md.
pub const FULL_SYNC_BATCH_OPS: usize = 20_000;

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

/// A 128-bit digest of a chain's rules: two SipHash passes with different keys (the
/// std hasher, whose output is fixed within a process, which is all a comparison with
/// the last sync needs). A false "unchanged" would need a 128-bit collision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RulesDigest(u64, u64);

impl RulesDigest {
    fn of(rules: &[Rule]) -> Self {
        use std::hash::{Hash, Hasher};
        let pass = |key: u8| {
            let mut h = std::hash::DefaultHasher::new();
            key.hash(&mut h);
            rules.hash(&mut h);
            h.finish()
        };
        Self(pass(0), pass(1))
    }
}

fn value_text(e: &Element) -> String {
    element_state(
        e.value.as_ref().map(ToString::to_string).as_deref(),
        e.comment.as_deref(),
    )
}

fn elem_id(e: &Element) -> ElementId {
    (e.set, e.key.to_string())
}

/// What one Service's objects occupy: the names a later sync needs to take them
/// away again, without the rules that made most of a fragment's memory.
#[derive(Clone, Debug, Default)]
struct Footprint {
    chains: Vec<String>,
    sets: Vec<String>,
    elements: Vec<ElementId>,
}

impl Footprint {
    fn of(f: &Fragment) -> Self {
        Footprint {
            chains: f.chains.iter().map(|c| c.name.clone()).collect(),
            sets: f.sets.iter().map(|s| s.name.clone()).collect(),
            elements: f.elements.iter().map(elem_id).collect(),
        }
    }
}

/// The Services that want one element, each with the value it wants, sorted by
/// Service: the first one wins. Almost every element has one owner, so a vector of
/// exactly that size: a `BTreeMap` allocates a node with room for eleven (about 1.5 KB
/// per element; at 3,000 Services this record was the largest live allocation).
#[derive(Clone, Debug, Default)]
struct Owners(Vec<(NamespacedName, Element)>);

impl Owners {
    fn insert(&mut self, name: NamespacedName, element: Element) {
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

    fn winner(&self) -> Option<&Element> {
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
    let affinity_set = format!("{AFFINITY_PREFIX}{base}");
    let uses_affinity = chain
        .rules
        .iter()
        .any(|r| matches!(r, Rule::AffinityUpdate(_)));
    listing.chains.contains(&chain.name) && listing.sets.contains(&affinity_set) == uses_affinity
}

impl Synced {
    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Service and endpoint chains we believe exist (flushed ones included).
    pub fn chain_names(&self) -> impl Iterator<Item = &str> {
        self.chains.keys().map(String::as_str)
    }

    /// Records that `names` were deleted.
    pub fn chains_deleted<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for n in names {
            self.chains.remove(n);
        }
    }

    /// Records that Service `name` wants `elements` (whose ids are `footprint`'s).
    fn claim(&mut self, name: &NamespacedName, footprint: &Footprint, elements: &[Element]) {
        for (id, e) in footprint.elements.iter().zip(elements) {
            self.claims
                .entry(id.clone())
                .or_default()
                .insert(name.clone(), e.clone());
        }
    }

    /// Plans a partial sync: each changed Service with its new objects (None: gone).
    /// Updates the record as if the transaction succeeds; drop the record if it fails.
    pub fn partial(&mut self, changes: Vec<(NamespacedName, Option<Fragment>)>) -> Plan {
        // Chains to write, with the digest of their new rules.
        let mut decl_chains: Vec<(Chain, RulesDigest)> = Vec::new();
        let mut new_sets: Vec<Set> = Vec::new();
        let mut flushes: Vec<String> = Vec::new();
        let mut dropped_sets: BTreeSet<String> = BTreeSet::new();
        let mut touched: BTreeSet<ElementId> = BTreeSet::new();

        for (name, new) in changes {
            let old = self.services.remove(&name).unwrap_or_default();
            let new = new.unwrap_or_default();
            // Chains.
            let new_names: BTreeSet<&str> = new.chains.iter().map(|c| c.name.as_str()).collect();
            for c in &new.chains {
                let digest = RulesDigest::of(&c.rules);
                if self.chains.get(&c.name) != Some(&Some(digest)) {
                    decl_chains.push((c.clone(), digest));
                }
            }
            for c in old
                .chains
                .iter()
                .filter(|c| !new_names.contains(c.as_str()))
            {
                if let Some(slot) = self.chains.get_mut(c)
                    && slot.is_some()
                {
                    *slot = None;
                    flushes.push(c.clone());
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
                .filter(|s| !new_set_names.contains(s.as_str()))
            {
                dropped_sets.insert(s.clone());
            }
            // Element claims.
            for id in old.elements {
                if let Some(owners) = self.claims.get_mut(&id) {
                    owners.remove(&name);
                    if owners.is_empty() {
                        self.claims.remove(&id);
                    }
                }
                touched.insert(id);
            }
            let footprint = Footprint::of(&new);
            self.claim(&name, &footprint, &new.elements);
            touched.extend(footprint.elements.iter().cloned());
            if !new.chains.is_empty() || !new.elements.is_empty() || !new.sets.is_empty() {
                self.services.insert(name, footprint);
            }
        }

        // As upstream, every written chain gets `add` + `flush` + its rules, whether
        // or not we believe it exists: the kernel ends up right either way.
        let mut tx = Transaction::new(self.family);
        for (c, _) in &decl_chains {
            tx.add_chain(c);
        }
        for s in &new_sets {
            tx.add_set(s);
            self.affinity_sets.insert(s.name.clone(), s.clone());
        }
        let mut written = Vec::new();
        for (c, digest) in &decl_chains {
            tx.write_chain(c);
            self.chains.insert(c.name.clone(), Some(*digest));
            written.push(c.name.clone());
        }
        for name in &flushes {
            tx.flush_chain(name);
        }
        let mut adds: Vec<Element> = Vec::new();
        for id in touched {
            let winner = self.claims.get(&id).and_then(Owners::winner);
            let have = self.elements.get(&id);
            match (winner, have) {
                (None, None) => {}
                (None, Some(_)) => {
                    tx.delete_element(id.0, &id.1);
                    self.elements.remove(&id);
                }
                (Some(w), have) => {
                    let want = value_text(w);
                    if have != Some(&want) {
                        if have.is_some() {
                            tx.delete_element(id.0, &id.1);
                        }
                        adds.push(w.clone());
                        self.elements.insert(id, want);
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

    fn svc(name: &str) -> NamespacedName {
        NamespacedName::new("default", name)
    }

    #[test]
    fn the_first_service_by_name_wins_and_the_next_takes_over() {
        let mut owners = Owners::default();
        owners.insert(svc("web"), element("svc-web"));
        owners.insert(svc("api"), element("svc-api"));
        owners.insert(svc("db"), element("svc-db"));
        assert_eq!(owners.winner(), Some(&element("svc-api")));

        // A new value from the same Service replaces its claim, not adds one.
        owners.insert(svc("api"), element("svc-api-2"));
        assert_eq!(owners.0.len(), 3);
        assert_eq!(owners.winner(), Some(&element("svc-api-2")));

        owners.remove(&svc("api"));
        assert_eq!(owners.winner(), Some(&element("svc-db")));
        owners.remove(&svc("nobody"));
        owners.remove(&svc("db"));
        owners.remove(&svc("web"));
        assert!(owners.is_empty());
        assert_eq!(owners.winner(), None);
    }
}
