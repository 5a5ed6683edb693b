//! A full sync, planned and sent one transaction at a time.
//!
//! The Services are rendered twice, never held rendered all at once: a first pass
//! declares their chains and sets and records what each occupies (its footprint and
//! element claims); a second pass writes their chains' rules. Each transaction is
//! handed to the sender as soon as it holds [`FULL_SYNC_BATCH_OPS`] operations, so a
//! full sync at 50,000 Services holds one batch, not the 2.4 million operations of
//! the whole table. Rendering twice costs about a second of CPU at 10,000 Services,
//! against the tens of seconds the kernel takes to load the table.
//!
//! Up to the batch size in all, the plan is one atomic transaction: the first
//! batches are held back until the total is known to exceed it.
//!
//! [`FULL_SYNC_BATCH_OPS`]: super::FULL_SYNC_BATCH_OPS

use std::collections::{HashMap, HashSet};

use kpr_model::NamespacedName;

use super::{DIFFED_SETS, Synced, endpoint_chain_reusable, listed_key};
use crate::listing::Listing;
use crate::names::*;
use crate::objects::{Element, Family};
use crate::render::Fragment;
use crate::transaction::Transaction;

/// What a full sync did, besides the record it leaves.
#[derive(Clone, Debug, Default)]
pub struct FullSync {
    /// Chains flushed by this sync (in the kernel, no longer used), to delete later.
    pub newly_stale: Vec<String>,
    /// Operations sent, all transactions together.
    pub operations: usize,
    /// Bytes of `nft` text those operations would be.
    pub bytes: usize,
    /// Transactions sent.
    pub transactions: usize,
}

/// Collects transactions into batches of about `batch_ops` operations and sends
/// them; everything is sent as one transaction if it all fits in one batch.
struct Batcher<'a, E> {
    family: Family,
    batch_ops: usize,
    /// Held back while the total may still fit in one batch.
    held: Vec<Transaction>,
    held_ops: usize,
    /// The total no longer fits: transactions go out as they fill.
    spilled: bool,
    current: Transaction,
    send: &'a mut dyn FnMut(Transaction) -> Result<(), E>,
    report: FullSync,
}

impl<'a, E> Batcher<'a, E> {
    fn new(
        family: Family,
        batch_ops: usize,
        send: &'a mut dyn FnMut(Transaction) -> Result<(), E>,
    ) -> Self {
        Self {
            family,
            batch_ops,
            held: Vec::new(),
            held_ops: 0,
            spilled: false,
            current: Transaction::new(family),
            send,
            report: FullSync::default(),
        }
    }

    /// The transaction being filled.
    fn tx(&mut self) -> &mut Transaction {
        &mut self.current
    }

    /// Ends the current transaction if it is full (call between units that must
    /// stay in one transaction, such as a Service's chains).
    fn maybe_cut(&mut self) -> Result<(), E> {
        if self.current.len() >= self.batch_ops {
            self.cut()?;
        }
        Ok(())
    }

    /// Ends the current transaction: what comes next goes in a later one.
    fn cut(&mut self) -> Result<(), E> {
        let tx = std::mem::replace(&mut self.current, Transaction::new(self.family));
        if tx.is_empty() {
            return Ok(());
        }
        if self.spilled {
            return self.send_one(tx);
        }
        self.held_ops += tx.len();
        self.held.push(tx);
        if self.held_ops > self.batch_ops {
            self.spilled = true;
            for tx in std::mem::take(&mut self.held) {
                self.send_one(tx)?;
            }
        }
        Ok(())
    }

    fn send_one(&mut self, tx: Transaction) -> Result<(), E> {
        self.report.operations += tx.len();
        self.report.bytes += tx.text_len();
        self.report.transactions += 1;
        (self.send)(tx)
    }

    /// Sends what is left (everything as one transaction if it never spilled).
    fn finish(mut self) -> Result<FullSync, E> {
        self.cut()?;
        if !self.spilled {
            let mut held = std::mem::take(&mut self.held).into_iter();
            if let Some(mut one) = held.next() {
                for tx in held {
                    one.append(tx);
                }
                self.send_one(one)?;
            }
        }
        Ok(self.report)
    }
}

impl Synced {
    /// Plans a full sync of `base` and the Services `services` yields (called twice,
    /// each time rendering every Service in name order) over what `listing` found,
    /// handing each transaction to `send` in order. On the process's `first` sync,
    /// base chains are recreated (their hook or priority may differ from an older
    /// version's) and endpoint chains already present are kept.
    ///
    /// Beyond `batch_ops` operations the plan is several transactions, each leaving a
    /// working table behind: first the table and the base chains (recreated and
    /// written in one transaction), then every Service chain and set declared, then
    /// the contents of the Services' chains, all chains of a Service in the same
    /// transaction; last the map elements, stale chain flushes and set deletions. A
    /// Service's new chains are reachable only once the last transaction adds its
    /// map elements, and a chain that traffic already reaches changes in one step, so
    /// packets never meet a half-written chain. Why split at all: on kernel 6.18,
    /// binding each anonymous set (one `numgen` map per service chain) walks the
    /// batch's whole list of pending operations, so one batch of n Services costs
    /// O(n^2) in the kernel (`__nft_set_trans_bind`), with `nft -f` as with us.
    ///
    /// If `send` fails, planning stops and the error is returned; the caller should
    /// forget what it knew of the kernel (the next sync is full again).
    #[allow(clippy::too_many_arguments)]
    pub fn full<'s, I, E>(
        family: Family,
        base: &Fragment,
        services: impl Fn() -> I,
        listing: &Listing,
        first: bool,
        batch_ops: usize,
        send: &mut dyn FnMut(Transaction) -> Result<(), E>,
    ) -> Result<(Synced, FullSync), E>
    where
        I: Iterator<Item = (&'s NamespacedName, Fragment)>,
    {
        let mut out = Batcher::new(family, batch_ops, send);
        let mut synced = Synced {
            family,
            claims: HashMap::new(),
            flushed: HashSet::new(),
            affinity_sets: HashMap::new(),
        };

        // The table and the base chains, whole: recreated chains must be written
        // again in the same transaction.
        let tx = out.tx();
        tx.add_table();
        if first {
            // Recreated in case an older version left them with another hook or
            // priority.
            for c in base.chains.iter().filter(|c| c.hook.is_some()) {
                tx.add_chain_name(&c.name);
                tx.delete_chain(&c.name);
            }
        }
        for c in &base.chains {
            tx.add_chain(c);
        }
        for s in &base.sets {
            tx.add_set(s);
        }
        for c in &base.chains {
            tx.write_chain(c);
        }
        out.maybe_cut()?;

        // The kernel's Service and endpoint chains that no Service wants: those the
        // first pass does not name.
        let mut unwanted: HashSet<&str> = listing
            .chains
            .iter()
            .filter(|n| is_service_chain(n))
            .map(String::as_str)
            .collect();

        // First pass: declarations and element claims. An endpoint chain already in
        // the kernel on the first sync is kept as it is.
        for (name, f) in services() {
            for c in &f.chains {
                unwanted.remove(c.name.as_str());
                if !(first && endpoint_chain_reusable(c, listing)) {
                    out.tx().add_chain(c);
                }
            }
            for s in &f.sets {
                out.tx().add_set(s);
                synced.affinity_sets.insert(s.name.clone(), s.clone());
            }
            synced.claim(name, &f.elements);
            out.maybe_cut()?;
        }
        out.cut()?;

        // Second pass: the chains' contents, whole Services per transaction. Which
        // endpoint chains are kept is decided again as in the first pass rather than
        // remembered (that would be a set of every endpoint chain at start-up).
        for (_, f) in services() {
            for c in f.chains {
                if !(first && endpoint_chain_reusable(&c, listing)) {
                    out.tx().write_chain_owned(c);
                }
            }
            out.maybe_cut()?;
        }
        out.cut()?;

        // The rest: flushes, elements, set deletions.
        let mut newly_stale = Vec::new();
        for name in listing
            .chains
            .iter()
            .filter(|n| unwanted.contains(n.as_str()))
        {
            out.tx().flush_chain(name);
            synced.flushed.insert(name.clone());
            newly_stale.push(name.clone());
        }

        // `nodeport-ips` is rewritten whole; when unused it is removed.
        match base.sets.iter().find(|s| s.name == NODEPORT_IPS) {
            Some(_) => {
                out.tx().flush_set(NODEPORT_IPS, false);
                for e in base.elements.iter().filter(|e| e.set == NODEPORT_IPS) {
                    out.tx().add_element(e);
                }
            }
            None if listing.sets.contains(NODEPORT_IPS) => {
                out.tx().delete_set(NODEPORT_IPS, false);
            }
            None => {}
        }

        // Elements: diff the winners against the kernel.
        // Added in the order of (set, key as nft prints it).
        let mut adds: Vec<(&str, String, Element)> = Vec::new();
        for (id, owners) in &synced.claims {
            let Some(winner) = owners.winner() else {
                continue;
            };
            let key = id.1.to_string();
            match listing.elements.get(id.0).and_then(|m| m.get(&key)) {
                Some(have) if *have == winner.text() => {}
                Some(_) => {
                    out.tx().delete_element(id.0, &key);
                    adds.push((id.0, key, winner.element(id)));
                }
                None => adds.push((id.0, key, winner.element(id))),
            }
        }
        for set in DIFFED_SETS {
            for key in listing.elements.get(set).into_iter().flat_map(|m| m.keys()) {
                let claimed =
                    listed_key(key).is_some_and(|k| synced.claims.contains_key(&(set, k)));
                if !claimed {
                    out.tx().delete_element(set, key);
                }
            }
        }
        adds.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, _, e) in adds {
            out.tx().add_element(&e);
        }

        // Affinity sets nobody uses any more (their chains were flushed above).
        for name in listing
            .sets
            .iter()
            .filter(|n| n.starts_with(AFFINITY_PREFIX))
        {
            if !synced.affinity_sets.contains_key(name) {
                out.tx().delete_set(name, false);
            }
        }
        let mut report = out.finish()?;
        report.newly_stale = newly_stale;
        Ok((synced, report))
    }

    /// [`Synced::full`] into memory: the transactions, in order (tests, benchmarks).
    pub fn full_plan<'s, I>(
        family: Family,
        base: &Fragment,
        services: impl Fn() -> I,
        listing: &Listing,
        first: bool,
        batch_ops: usize,
    ) -> (Synced, FullSync, Vec<Transaction>)
    where
        I: Iterator<Item = (&'s NamespacedName, Fragment)>,
    {
        let mut txs = Vec::new();
        let mut keep = |tx| {
            txs.push(tx);
            Ok::<(), std::convert::Infallible>(())
        };
        match Self::full(family, base, services, listing, first, batch_ops, &mut keep) {
            Ok((synced, report)) => (synced, report, txs),
            Err(never) => match never {},
        }
    }
}
