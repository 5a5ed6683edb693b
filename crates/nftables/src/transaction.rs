//! A batch of nft commands that the kernel applies atomically (`nft -f -`), written in
//! the same verbs and shapes as knftables (`add`, `flush`, `delete`, one line per
//! operation), so operation counts compare with upstream's tests.

use std::fmt::Write;

use crate::names::TABLE;
use crate::objects::{Chain, Element, Family, Rule, Set, chain_decl, element_text, set_decl};

/// One operation of a [`Transaction`], typed so that an applier can send it without
/// parsing nft syntax (see [`crate::netlink`]); its text is derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `add table` with upstream's comment.
    AddTable,
    /// `delete table`.
    DeleteTable,
    /// `add chain` with the chain's hook or comment (its rules are not part of it).
    AddChain(Chain),
    /// `add chain <name>` with no properties.
    AddChainName(String),
    /// `flush chain`.
    FlushChain(String),
    /// `delete chain`.
    DeleteChain(String),
    /// `add rule <chain> <rule>`.
    AddRule(String, Rule),
    /// `add set` / `add map`.
    AddSet(Set),
    /// `flush set` / `flush map` (true).
    FlushSet(String, bool),
    /// `delete set` / `delete map` (true).
    DeleteSet(String, bool),
    /// `add element`.
    AddElement(Element),
    /// `delete element <set> { <key> }`, the key as nft prints it.
    DeleteElement(String, String),
    /// A line of nft syntax with no typed form.
    Raw(String),
}

/// An ordered list of nft operations for one family's table.
///
/// Only the typed operations are kept; their `nft -f` text is written when asked for
/// ([`Transaction::text`]: the `nft -f` fallback, error messages, tests). A full sync
/// at 10,000 Services is about 480,000 operations and 57 MB of text, which the
/// netlink path never needs whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    family: Family,
    ops: Vec<Op>,
    /// Length of [`Transaction::text`], kept as operations are added.
    text_len: usize,
}

impl Transaction {
    /// An empty transaction.
    pub fn new(family: Family) -> Self {
        Self {
            family,
            ops: Vec::new(),
            text_len: 0,
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Number of operations (lines).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The `nft -f` input: one line per operation.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.text_len);
        for op in &self.ops {
            write_op(&mut out, self.family, op);
            out.push('\n');
        }
        out
    }

    /// Length in bytes of [`Transaction::text`], without writing it.
    pub fn text_len(&self) -> usize {
        self.text_len
    }

    /// The `nft` line of operation `index`, if there is one.
    pub fn op_text(&self, index: usize) -> Option<String> {
        let mut out = String::new();
        write_op(&mut out, self.family, self.ops.get(index)?);
        Some(out)
    }

    /// Appends `other`'s operations after this one's.
    pub fn append(&mut self, other: Transaction) {
        self.text_len += other.text_len;
        self.ops.extend(other.ops);
    }

    fn push(&mut self, op: Op) {
        let mut len = Len(1); // the newline
        write_op(&mut len, self.family, &op);
        self.text_len += len.0;
        self.ops.push(op);
    }

    /// `add table` with upstream's comment.
    pub fn add_table(&mut self) {
        self.push(Op::AddTable);
    }

    /// One operation as written (e.g. a line of [`crate::Ruleset::creation_script`]).
    pub fn raw(&mut self, line: &str) {
        self.push(Op::Raw(line.to_string()));
    }

    /// `delete table`.
    pub fn delete_table(&mut self) {
        self.push(Op::DeleteTable);
    }

    /// `add chain` with the chain's hook or comment.
    pub fn add_chain(&mut self, chain: &Chain) {
        let decl = Chain {
            name: chain.name.clone(),
            hook: chain.hook,
            comment: chain.comment,
            rules: Vec::new(),
        };
        self.push(Op::AddChain(decl));
    }

    /// `add chain <name>` with no properties (creates it if missing).
    pub fn add_chain_name(&mut self, name: &str) {
        self.push(Op::AddChainName(name.to_string()));
    }

    /// `flush chain`.
    pub fn flush_chain(&mut self, name: &str) {
        self.push(Op::FlushChain(name.to_string()));
    }

    /// `delete chain`.
    pub fn delete_chain(&mut self, name: &str) {
        self.push(Op::DeleteChain(name.to_string()));
    }

    /// `add rule <chain> <rule>`.
    pub fn add_rule(&mut self, chain: &str, rule: &Rule) {
        self.push(Op::AddRule(chain.to_string(), rule.clone()));
    }

    /// `flush chain` + every rule: the (declared) chain ends up holding exactly its
    /// rules.
    pub fn write_chain(&mut self, chain: &Chain) {
        self.write_chain_owned(chain.clone());
    }

    /// [`Transaction::write_chain`] taking the chain's rules instead of copying
    /// them.
    pub fn write_chain_owned(&mut self, chain: Chain) {
        self.flush_chain(&chain.name);
        for r in chain.rules {
            self.push(Op::AddRule(chain.name.clone(), r));
        }
    }

    /// `add set` / `add map`.
    pub fn add_set(&mut self, set: &Set) {
        self.push(Op::AddSet(set.clone()));
    }

    /// `flush set` / `flush map`.
    pub fn flush_set(&mut self, name: &str, map: bool) {
        self.push(Op::FlushSet(name.to_string(), map));
    }

    /// `delete set` / `delete map`.
    pub fn delete_set(&mut self, name: &str, map: bool) {
        self.push(Op::DeleteSet(name.to_string(), map));
    }

    /// `add element`.
    pub fn add_element(&mut self, e: &Element) {
        self.push(Op::AddElement(e.clone()));
    }

    /// `delete element <set> { <key> }`, the key as nft prints it.
    pub fn delete_element(&mut self, set: &str, key: &str) {
        self.push(Op::DeleteElement(set.to_string(), key.to_string()));
    }
}

/// Counts the bytes written through it: a text's length without the text.
struct Len(usize);

impl Write for Len {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Writes the `nft` line of `op` (no newline).
fn write_op(out: &mut impl Write, family: Family, op: &Op) {
    let fam = family.word();
    let set_word = |map: &bool| if *map { "map" } else { "set" };
    let _ = match op {
        Op::AddTable => write!(
            out,
            "add table {fam} {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
        ),
        Op::DeleteTable => write!(out, "delete table {fam} {TABLE}"),
        Op::AddChain(chain) => out.write_str(&chain_decl(family, chain)),
        Op::AddChainName(name) => write!(out, "add chain {fam} {TABLE} {name}"),
        Op::FlushChain(name) => write!(out, "flush chain {fam} {TABLE} {name}"),
        Op::DeleteChain(name) => write!(out, "delete chain {fam} {TABLE} {name}"),
        Op::AddRule(chain, rule) => {
            write!(out, "add rule {fam} {TABLE} {chain} {}", rule.text(family))
        }
        Op::AddSet(set) => out.write_str(&set_decl(family, set)),
        Op::FlushSet(name, map) => write!(out, "flush {} {fam} {TABLE} {name}", set_word(map)),
        Op::DeleteSet(name, map) => {
            write!(out, "delete {} {fam} {TABLE} {name}", set_word(map))
        }
        Op::AddElement(e) => out.write_str(&element_text(family, "add", e)),
        Op::DeleteElement(set, key) => {
            write!(out, "delete element {fam} {TABLE} {set} {{ {key} }}")
        }
        Op::Raw(line) => out.write_str(line),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpr_model::IpFamily;

    #[test]
    fn counts_and_spells_operations() {
        let mut tx = Transaction::new(Family(IpFamily::V6));
        assert!(tx.is_empty());
        tx.add_table();
        tx.add_chain_name("services");
        tx.delete_element("service-ips", "fd00::1 . tcp . 80");
        tx.delete_set("affinity-X", false);
        tx.flush_set("no-endpoint-services", true);
        assert_eq!(tx.len(), 5);
        assert_eq!(
            tx.text(),
            "add table ip6 kube-proxy { comment \"rules for kube-proxy\" ; }\n\
             add chain ip6 kube-proxy services\n\
             delete element ip6 kube-proxy service-ips { fd00::1 . tcp . 80 }\n\
             delete set ip6 kube-proxy affinity-X\n\
             flush map ip6 kube-proxy no-endpoint-services\n"
        );
    }
}
