//! A batch of nft commands that the kernel applies atomically (`nft -f -`), written in
//! the same verbs and shapes as knftables (`add`, `flush`, `delete`, one line per
//! operation), so operation counts compare with upstream's tests.

use std::fmt::Write as _;

use crate::names::TABLE;
use crate::objects::{Chain, Element, Family, Rule, Set, chain_decl, element_text, set_decl};

/// One operation of a [`Transaction`], kept typed next to its text so that an applier
/// can send it without parsing nft syntax (see [`crate::netlink`]).
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
    /// `flush set` / `flush map`.
    FlushSet(String),
    /// `delete set` / `delete map`.
    DeleteSet(String),
    /// `add element`.
    AddElement(Element),
    /// `delete element <set> { <key> }`, the key as nft prints it.
    DeleteElement(String, String),
    /// A line of nft syntax with no typed form.
    Raw(String),
}

/// An ordered list of nft operations for one family's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    family: Family,
    text: String,
    ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new(family: Family) -> Self {
        Self {
            family,
            text: String::new(),
            ops: Vec::new(),
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

    /// The `nft -f` input.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Appends `other`'s operations after this one's.
    pub fn append(&mut self, other: Transaction) {
        self.text.push_str(&other.text);
        self.ops.extend(other.ops);
    }

    fn line(&mut self, l: &str, op: Op) {
        self.text.push_str(l);
        self.text.push('\n');
        self.ops.push(op);
    }

    fn obj(&mut self, verb: &str, kind: &str, name: &str, op: Op) {
        let _ = writeln!(
            self.text,
            "{verb} {kind} {} {TABLE} {name}",
            self.family.word()
        );
        self.ops.push(op);
    }

    /// `add table` with upstream's comment.
    pub fn add_table(&mut self) {
        let l = format!(
            "add table {} {TABLE} {{ comment \"rules for kube-proxy\" ; }}",
            self.family.word()
        );
        self.line(&l, Op::AddTable);
    }

    /// One operation as written (e.g. a line of [`crate::Ruleset::creation_script`]).
    pub fn raw(&mut self, line: &str) {
        self.line(line, Op::Raw(line.to_string()));
    }

    /// `delete table`.
    pub fn delete_table(&mut self) {
        let l = format!("delete table {} {TABLE}", self.family.word());
        self.line(&l, Op::DeleteTable);
    }

    /// `add chain` with the chain's hook or comment.
    pub fn add_chain(&mut self, chain: &Chain) {
        let l = chain_decl(self.family, chain);
        let decl = Chain {
            rules: Vec::new(),
            ..chain.clone()
        };
        self.line(&l, Op::AddChain(decl));
    }

    /// `add chain <name>` with no properties (creates it if missing).
    pub fn add_chain_name(&mut self, name: &str) {
        self.obj("add", "chain", name, Op::AddChainName(name.to_string()));
    }

    /// `flush chain`.
    pub fn flush_chain(&mut self, name: &str) {
        self.obj("flush", "chain", name, Op::FlushChain(name.to_string()));
    }

    /// `delete chain`.
    pub fn delete_chain(&mut self, name: &str) {
        self.obj("delete", "chain", name, Op::DeleteChain(name.to_string()));
    }

    /// `add rule <chain> <rule>`.
    pub fn add_rule(&mut self, chain: &str, rule: &Rule) {
        let _ = writeln!(
            self.text,
            "add rule {} {TABLE} {chain} {}",
            self.family.word(),
            rule.text(self.family)
        );
        self.ops.push(Op::AddRule(chain.to_string(), rule.clone()));
    }

    /// `flush chain` + every rule: the (declared) chain ends up holding exactly its
    /// rules.
    pub fn write_chain(&mut self, chain: &Chain) {
        self.flush_chain(&chain.name);
        for r in &chain.rules {
            self.add_rule(&chain.name, r);
        }
    }

    /// `add set` / `add map`.
    pub fn add_set(&mut self, set: &Set) {
        let l = set_decl(self.family, set);
        self.line(&l, Op::AddSet(set.clone()));
    }

    /// `flush set` / `flush map`.
    pub fn flush_set(&mut self, name: &str, map: bool) {
        let what = if map { "map" } else { "set" };
        self.obj("flush", what, name, Op::FlushSet(name.to_string()));
    }

    /// `delete set` / `delete map`.
    pub fn delete_set(&mut self, name: &str, map: bool) {
        let what = if map { "map" } else { "set" };
        self.obj("delete", what, name, Op::DeleteSet(name.to_string()));
    }

    /// `add element`.
    pub fn add_element(&mut self, e: &Element) {
        let l = element_text(self.family, "add", e);
        self.line(&l, Op::AddElement(e.clone()));
    }

    /// `delete element <set> { <key> }`, the key as nft prints it.
    pub fn delete_element(&mut self, set: &str, key: &str) {
        let _ = writeln!(
            self.text,
            "delete element {} {TABLE} {set} {{ {key} }}",
            self.family.word()
        );
        self.ops
            .push(Op::DeleteElement(set.to_string(), key.to_string()));
    }
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
