//! The plan of one family kept across syncs. An update re-plans only the Services
//! that changed since the last one, merges their pieces into the plan, and says what
//! changed in it (the [`Delta`]), so that the proxier touches only that in the
//! kernel: one endpoint change costs about the same with 10 Services as with 10,000.
//! Upstream's IPVS proxier re-plans and compares every Service on every sync.
//!
//! Merging keeps upstream's rules for what Services share: an address:port asked
//! for by several Services goes to the first by name (then by the order within that
//! Service), and only that winner binds the address; an ipset entry stays while any
//! Service wants it. [`plan`](crate::plan::plan) builds the same plan from nothing
//! through the same code.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use kpr_model::{FamilyState, NamespacedName, ServiceMap};

use crate::plan::{Plan, PlanConfig, PlannedService, piece};
use crate::rules::iptables_rules;
use crate::sets::{self, Set};
use crate::types::ServiceKey;

/// The plan, and who asks for what in it.
///
/// What each Service contributes is not kept: an update plans a changed Service's
/// last state again to know what it had (the planner is deterministic), which
/// costs a plan of the changed Services instead of a second copy of every one.
#[derive(Debug)]
pub struct Desired {
    config: PlanConfig,
    plan: Plan,
    /// The Services as the last update planned them (None: none planned yet).
    services: Option<Arc<ServiceMap>>,
    claims: HashMap<ServiceKey, Claimants>,
    /// ipset entries that more than one claim wants, with how many (an entry of
    /// the plan absent here is wanted once; almost all are).
    shared: HashMap<Entry, u32>,
    /// How many winning claims bind each address.
    bound: HashMap<IpAddr, u32>,
    /// How many Services put each frontend in `KUBE-IPVS-OUT-FILTER`.
    out_filter: BTreeMap<ServiceKey, u32>,
}

/// The Services asking for one address:port, sorted by (Service, index of the
/// claim in the Service's plan): the first wins.
#[derive(Debug, Default)]
struct Claimants {
    by: Vec<Claimant>,
    /// The winner now in the plan binds the address.
    binds: bool,
}

#[derive(Debug)]
struct Claimant {
    service: NamespacedName,
    index: usize,
    bind: bool,
    /// Its virtual server is the plan's.
    wins: bool,
    /// During an update: where its newly planned virtual server waits.
    offered: Option<usize>,
}

/// An ipset entry: the set, and the entry as `ipset` writes it.
pub type Entry = (Set, String);

/// One virtual server whose plan changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChange {
    /// What the plan held (None: the virtual server is new).
    pub old: Option<PlannedService>,
    /// What it holds now (None: the virtual server is gone).
    pub new: Option<PlannedService>,
}

/// What one update changed in the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Virtual servers added, changed or removed.
    pub services: BTreeMap<ServiceKey, ServiceChange>,
    /// ipset entries to add.
    pub entries_added: Vec<Entry>,
    /// ipset entries to delete.
    pub entries_removed: Vec<Entry>,
    /// Addresses to bind to `kube-ipvs0`.
    pub bind_added: Vec<IpAddr>,
    /// Addresses to remove from `kube-ipvs0`.
    pub bind_removed: Vec<IpAddr>,
    /// The iptables rules changed.
    pub iptables_changed: bool,
    /// Services re-planned (changed, added or removed).
    pub services_replanned: usize,
    /// The first update: every Service was new, and nothing above is recorded (the
    /// proxier's first sync is a full one).
    pub first: bool,
}

impl Delta {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !(self.first && self.services_replanned > 0)
            && self.services.is_empty()
            && self.entries_added.is_empty()
            && self.entries_removed.is_empty()
            && self.bind_added.is_empty()
            && self.bind_removed.is_empty()
            && !self.iptables_changed
    }

    /// The `ipset restore` input for the entries that changed (the sets exist: a
    /// full sync created them).
    pub fn ipset_script(&self, family: kpr_model::IpFamily) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (set, entry) in &self.entries_removed {
            let _ = writeln!(out, "del {} {entry} -exist", set.name(family));
        }
        for (set, entry) in &self.entries_added {
            let _ = writeln!(out, "add {} {entry} -exist", set.name(family));
        }
        out
    }
}

impl Desired {
    /// An empty plan (no Service) under `config`.
    pub fn new(config: PlanConfig) -> Self {
        let sets = sets::empty_sets();
        let iptables = iptables_rules(&sets, &[], &config);
        let plan = Plan {
            family: config.family,
            services: BTreeMap::new(),
            bind: BTreeSet::new(),
            sets,
            out_filter: Vec::new(),
            iptables,
        };
        Self {
            config,
            plan,
            services: None,
            claims: HashMap::new(),
            shared: HashMap::new(),
            bound: HashMap::new(),
            out_filter: BTreeMap::new(),
        }
    }

    /// The plan as of the last update.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The plan, consumed.
    pub fn into_plan(self) -> Plan {
        self.plan
    }

    /// Brings the plan to `state`, re-planning the Services that differ from the
    /// last update's (all of them the first time, when the delta is not recorded:
    /// everything is new); returns what changed.
    pub fn update(&mut self, state: &FamilyState) -> Delta {
        let prev = self.services.replace(state.services.clone());
        let names = match &prev {
            None => state.services.keys().cloned().collect(),
            Some(prev) if Arc::ptr_eq(prev, &state.services) => Vec::new(),
            Some(prev) => changed(prev, &state.services),
        };
        let mut delta = Delta {
            services_replanned: names.len(),
            first: prev.is_none(),
            ..Delta::default()
        };
        if names.is_empty() {
            return delta;
        }
        let mut log = EntryLog::new(prev.is_some());
        let mut keys = BTreeSet::new();
        let mut offered = Vec::new();
        let mut out_filter = false;
        for name in &names {
            if let Some(old) = prev.as_ref().and_then(|p| p.get(name)) {
                let old = piece(old, &self.config);
                for (i, claim) in old.claims.iter().enumerate() {
                    let key = claim.planned.vs.key();
                    if let Some(c) = self.claims.get_mut(&key)
                        && let Ok(at) = c.find(name, i)
                    {
                        c.by.remove(at);
                    }
                    keys.insert(key);
                }
                for entry in old.entries {
                    self.release(entry, &mut log);
                }
                for key in old.out_filter {
                    if let Some(n) = self.out_filter.get_mut(&key) {
                        *n = n.saturating_sub(1);
                    }
                    out_filter = true;
                }
            }
            let Some(svc) = state.services.get(name) else {
                continue;
            };
            let new = piece(svc, &self.config);
            for (i, claim) in new.claims.into_iter().enumerate() {
                let key = claim.planned.vs.key();
                let c = self.claims.entry(key).or_default();
                let at = match c.find(name, i) {
                    Ok(at) => at,
                    Err(at) => {
                        let claimant = Claimant {
                            service: name.clone(),
                            index: i,
                            bind: claim.bind,
                            wins: false,
                            offered: None,
                        };
                        c.by.insert(at, claimant);
                        at
                    }
                };
                c.by[at].bind = claim.bind;
                c.by[at].offered = Some(offered.len());
                offered.push(Some(claim.planned));
                keys.insert(key);
            }
            for entry in new.entries {
                self.hold(entry, &mut log);
            }
            for key in new.out_filter {
                *self.out_filter.entry(key).or_default() += 1;
                out_filter = true;
            }
        }
        self.settle_claims(keys, &mut offered, state, &mut log, &mut delta);
        if out_filter {
            self.out_filter.retain(|_, n| *n > 0);
            self.plan.out_filter = self.out_filter.keys().copied().collect();
        }
        let recorded = log.record;
        (delta.entries_added, delta.entries_removed) = log.finish();
        let sets_changed = !delta.entries_added.is_empty() || !delta.entries_removed.is_empty();
        if !recorded || out_filter || sets_changed {
            let rules = iptables_rules(&self.plan.sets, &self.plan.out_filter, &self.config);
            if rules != self.plan.iptables {
                self.plan.iptables = rules;
                delta.iptables_changed = true;
            }
        }
        delta
    }

    /// One more claim wants `entry`.
    fn hold(&mut self, (set, value): Entry, log: &mut EntryLog) {
        let copy = log.record.then(|| value.clone());
        // One search: the entry goes in either way, and a replaced one was held.
        match self.plan.sets.entry(set).or_default().replace(value) {
            Some(value) => *self.shared.entry((set, value)).or_insert(1) += 1,
            None => {
                if let Some(copy) = copy {
                    log.added(set, copy);
                }
            }
        }
    }

    /// One claim less wants `entry`.
    fn release(&mut self, entry: Entry, log: &mut EntryLog) {
        if let Some(n) = self.shared.get_mut(&entry) {
            *n -= 1;
            if *n <= 1 {
                self.shared.remove(&entry);
            }
            return;
        }
        let (set, value) = entry;
        if self.plan.sets.entry(set).or_default().remove(&value) {
            log.removed(set, value);
        }
    }

    /// Gives each address:port in `keys` to its first claimant, and binds or unbinds
    /// the addresses whose winners changed.
    fn settle_claims(
        &mut self,
        keys: BTreeSet<ServiceKey>,
        offered: &mut [Option<PlannedService>],
        state: &FamilyState,
        log: &mut EntryLog,
        delta: &mut Delta,
    ) {
        let mut addresses = BTreeSet::new();
        for key in keys {
            let Some(claimants) = self.claims.get_mut(&key) else {
                continue;
            };
            let old_binds = claimants.binds;
            let old = self.plan.services.remove(&key);
            let first = claimants.by.first();
            let new = match first.map(|c| (c.offered, c.wins)) {
                None => None,
                Some((Some(at), _)) => offered.get_mut(at).and_then(Option::take),
                // Unchanged and already the winner: what the plan held.
                Some((None, true)) => {
                    if let Some(old) = old {
                        self.plan.services.insert(key, old);
                    }
                    for c in &mut claimants.by[1..] {
                        c.wins = false;
                        c.offered = None;
                    }
                    continue;
                }
                // Unchanged, and the winner now that an earlier claim went.
                Some((None, false)) => first.and_then(|c| {
                    let svc = state.services.get(&c.service)?;
                    let claim = piece(svc, &self.config).claims.into_iter().nth(c.index)?;
                    Some(claim.planned)
                }),
            };
            let binds = new.is_some() && first.is_some_and(|c| c.bind);
            for (i, c) in claimants.by.iter_mut().enumerate() {
                c.wins = i == 0;
                c.offered = None;
            }
            claimants.binds = binds;
            if claimants.by.is_empty() {
                self.claims.remove(&key);
            }
            if log.record && old != new {
                let change = ServiceChange {
                    old,
                    new: new.clone(),
                };
                delta.services.insert(key, change);
            }
            if let Some(new) = new {
                self.plan.services.insert(key, new);
            }
            if old_binds != binds {
                let n = self.bound.entry(key.address).or_default();
                *n = if binds { *n + 1 } else { n.saturating_sub(1) };
                addresses.insert(key.address);
            }
        }
        for ip in addresses {
            let wanted = self.bound.get(&ip).is_some_and(|n| *n > 0);
            if !wanted {
                self.bound.remove(&ip);
            }
            let ipvs_ips = self.plan.sets.entry(Set::IpvsIps).or_default();
            if wanted && self.plan.bind.insert(ip) {
                let text = ip.to_string();
                if log.record {
                    log.added(Set::IpvsIps, text.clone());
                    delta.bind_added.push(ip);
                }
                ipvs_ips.insert(text);
            } else if !wanted && self.plan.bind.remove(&ip) {
                let text = ip.to_string();
                ipvs_ips.remove(&text);
                log.removed(Set::IpvsIps, text);
                if log.record {
                    delta.bind_removed.push(ip);
                }
            }
        }
    }
}

impl Claimants {
    fn find(&self, service: &NamespacedName, index: usize) -> Result<usize, usize> {
        self.by
            .binary_search_by(|c| c.service.cmp(service).then(c.index.cmp(&index)))
    }
}

/// The ipset entries an update added and removed, an entry removed and added again
/// (or the reverse) counting as neither. Not recorded on the first update.
struct EntryLog {
    record: bool,
    added: HashSet<Entry>,
    removed: HashSet<Entry>,
}

impl EntryLog {
    fn new(record: bool) -> Self {
        Self {
            record,
            added: HashSet::new(),
            removed: HashSet::new(),
        }
    }

    fn added(&mut self, set: Set, value: String) {
        if self.record {
            let entry = (set, value);
            if !self.removed.remove(&entry) {
                self.added.insert(entry);
            }
        }
    }

    fn removed(&mut self, set: Set, value: String) {
        if self.record {
            let entry = (set, value);
            if !self.added.remove(&entry) {
                self.removed.insert(entry);
            }
        }
    }

    /// (added, removed), sorted.
    fn finish(self) -> (Vec<Entry>, Vec<Entry>) {
        let mut added: Vec<_> = self.added.into_iter().collect();
        let mut removed: Vec<_> = self.removed.into_iter().collect();
        added.sort();
        removed.sort();
        (added, removed)
    }
}

/// Names of the Services that differ between `prev` and `now` (added, removed or
/// changed): one walk of both sorted maps, comparing pointers first.
fn changed(prev: &ServiceMap, now: &ServiceMap) -> Vec<NamespacedName> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let mut a = prev.iter().peekable();
    let mut b = now.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((n, _)), None) => {
                out.push((*n).clone());
                a.next();
            }
            (None, Some((n, _))) => {
                out.push((*n).clone());
                b.next();
            }
            (Some((na, va)), Some((nb, vb))) => match na.cmp(nb) {
                Ordering::Less => {
                    out.push((*na).clone());
                    a.next();
                }
                Ordering::Greater => {
                    out.push((*nb).clone());
                    b.next();
                }
                Ordering::Equal => {
                    if !(Arc::ptr_eq(va, vb) || va == vb) {
                        out.push((*na).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    out
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
