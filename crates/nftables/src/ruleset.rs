//! A whole family's ruleset as a value: assembled from fragments, printed as the
//! transaction that creates it (`--dry-run`) or in the shape of upstream's test dumps
//! (golden comparisons), and diffed by the applier.

use std::collections::BTreeMap;

use crate::names::TABLE;
use crate::objects::{Chain, Element, Family, Key, Set};
use crate::render::Fragment;
use crate::transaction::Transaction;

/// Everything in one family's `kube-proxy` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The family.
    pub family: Family,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, Set>,
    /// Elements by (set, key).
    pub elements: BTreeMap<(&'static str, Key), Element>,
}

impl Ruleset {
    /// An empty ruleset.
    pub fn new(family: Family) -> Self {
        Self {
            family,
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
            elements: BTreeMap::new(),
        }
    }

    /// Adds a fragment. Chains and sets are named after their Service, so they do not
    /// clash; an element key two Services claim (the same external IP and port) stays
    /// with the one added first, as the applier decides.
    pub fn add(&mut self, f: &Fragment) {
        for c in &f.chains {
            self.chains.insert(c.name.clone(), c.clone());
        }
        for s in &f.sets {
            self.sets.insert(s.name.clone(), s.clone());
        }
        for e in &f.elements {
            self.elements
                .entry((e.set, e.key.clone()))
                .or_insert_with(|| e.clone());
        }
    }

    /// The `add table` line.
    pub fn table_line(&self) -> String {
        format!(
            "add table {} {TABLE} {{ comment \"rules for kube-proxy\" ; }}",
            self.family.word()
        )
    }

    /// A transaction creating this ruleset in an empty namespace: table, chains,
    /// sets and maps, then rules, then elements, so that every reference is defined
    /// before use.
    pub fn creation(&self) -> Transaction {
        let mut tx = Transaction::new(self.family);
        tx.add_table();
        for c in self.chains.values() {
            tx.add_chain(c);
        }
        for s in self.sets.values() {
            tx.add_set(s);
        }
        for c in self.chains.values() {
            for r in &c.rules {
                tx.add_rule(&c.name, r);
            }
        }
        for e in self.elements.values() {
            tx.add_element(e);
        }
        tx
    }

    /// [`Ruleset::creation`] as `nft -f` input.
    pub fn creation_script(&self) -> String {
        self.creation().text()
    }

    /// The ruleset in the form upstream's tests compare (knftables' fake `Dump`, then
    /// sorted by [`sort_like_upstream`]).
    pub fn dump_upstream(&self) -> String {
        sort_like_upstream(&self.creation_script())
    }
}

fn rank(kind: &str) -> u8 {
    match kind {
        "table" => 10,
        "chain" => 9,
        "rule" => 8,
        "set" => 7,
        "map" => 6,
        "element" => 5,
        _ => 0,
    }
}

/// Upstream's `sortNFTablesTransaction` (`pkg/proxy/nftables/helpers_test.go`): drop
/// blank and `#` lines, then order by object kind (table, chain, rule, set, map,
/// element), then object name, keeping rules of one chain in order and sorting other
/// lines of one object whole.
pub fn sort_like_upstream(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    // A total order equivalent to upstream's comparator: kind rank (descending), object
    // name, then input position for rules (their order matters) or the line itself.
    let mut keyed: Vec<(std::cmp::Reverse<u8>, &str, usize, &str)> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let w: Vec<&str> = l.splitn(6, ' ').collect();
            if w.len() < 5 {
                (std::cmp::Reverse(0), "", i, "")
            } else if w[1] == "rule" {
                (std::cmp::Reverse(rank(w[1])), w[4], i, "")
            } else {
                (std::cmp::Reverse(rank(w[1])), w[4], 0, *l)
            }
        })
        .collect();
    keyed.sort();
    let mut out = keyed
        .iter()
        .map(|(_, _, i, l)| if l.is_empty() { lines[*i] } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}
