//! A batch of nft commands that the kernel applies atomically (`nft -f -`), written in
//! the same verbs and shapes as knftables (`add`, `flush`, `delete`, one line per
//! operation), so operation counts compare with upstream's tests.

use std::fmt::Write as _;

use crate::names::TABLE;
use crate::objects::{Chain, Element, Family, Rule, Set, chain_decl, element_text, set_decl};

/// An ordered list of nft operations for one family's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    family: Family,
    text: String,
    ops: usize,
}

impl Transaction {
    /// An empty transaction.
    pub fn new(family: Family) -> Self {
        Self {
            family,
            text: String::new(),
            ops: 0,
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Number of operations (lines).
    pub fn len(&self) -> usize {
        self.ops
    }

    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// The `nft -f` input.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn line(&mut self, l: &str) {
        self.text.push_str(l);
        self.text.push('\n');
        self.ops += 1;
    }

    fn obj(&mut self, verb: &str, kind: &str, name: &str) {
        let _ = writeln!(
            self.text,
            "{verb} {kind} {} {TABLE} {name}",
            self.family.word()
        );
        self.ops += 1;
    }

    /// `add table` with upstream's comment.
    pub fn add_table(&mut self) {
        let l = format!(
            "add table {} {TABLE} {{ comment \"rules for kube-proxy\" ; }}",
            self.family.word()
        );
        self.line(&l);
    }

    /// One operation as written (e.g. a line of [`crate::Ruleset::creation_script`]).
    pub fn raw(&mut self, line: &str) {
        self.line(line);
    }

    /// `delete table`.
    pub fn delete_table(&mut self) {
        let l = format!("delete table {} {TABLE}", self.family.word());
        self.line(&l);
    }

    /// `add chain` with the chain's hook or comment.
    pub fn add_chain(&mut self, chain: &Chain) {
        let l = chain_decl(self.family, chain);
        self.line(&l);
    }

    /// `add chain <name>` with no properties (creates it if missing).
    pub fn add_chain_name(&mut self, name: &str) {
        self.obj("add", "chain", name);
    }

    /// `flush chain`.
    pub fn flush_chain(&mut self, name: &str) {
        self.obj("flush", "chain", name);
    }

    /// `delete chain`.
    pub fn delete_chain(&mut self, name: &str) {
        self.obj("delete", "chain", name);
    }

    /// `add rule <chain> <rule>`.
    pub fn add_rule(&mut self, chain: &str, rule: &Rule) {
        let _ = writeln!(
            self.text,
            "add rule {} {TABLE} {chain} {}",
            self.family.word(),
            rule.text(self.family)
        );
        self.ops += 1;
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
        self.line(&l);
    }

    /// `flush set` / `flush map`.
    pub fn flush_set(&mut self, name: &str, map: bool) {
        self.obj("flush", if map { "map" } else { "set" }, name);
    }

    /// `delete set` / `delete map`.
    pub fn delete_set(&mut self, name: &str, map: bool) {
        self.obj("delete", if map { "map" } else { "set" }, name);
    }

    /// `add element`.
    pub fn add_element(&mut self, e: &Element) {
        let l = element_text(self.family, "add", e);
        self.line(&l);
    }

    /// `delete element <set> { <key> }`, the key as nft prints it.
    pub fn delete_element(&mut self, set: &str, key: &str) {
        let _ = writeln!(
            self.text,
            "delete element {} {TABLE} {set} {{ {key} }}",
            self.family.word()
        );
        self.ops += 1;
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
