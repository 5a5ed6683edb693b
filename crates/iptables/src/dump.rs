//! Reading `iptables-save` / `iptables-restore` text back into tables, chains and rules.
//!
//! Used by the applier (which chains exist), by `--cleanup`, by tests (comparing with
//! upstream's expected rules, tracing packets) and by the `show` tooling. Rules keep
//! their raw text; the matches the tracer needs are parsed into [`Rule`] fields.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;

/// A parsed ruleset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// Tables in input order.
    pub tables: Vec<Table>,
}

/// One table (`*nat` ... `COMMIT`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// `filter`, `nat`, `mangle` ...
    pub name: String,
    /// Chains in declaration order (chains only appended to are added on first use).
    pub chains: Vec<Chain>,
    /// Chains deleted with `-X` in this input (restore input only; they are also
    /// declared, which flushes them before deletion).
    pub deleted: Vec<String>,
}

/// One chain and its rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// `-` for user chains, the policy for built-in chains.
    pub policy: String,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// A match value that may be negated with `!`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// Preceded by `!`.
    pub negated: bool,
    /// The value.
    pub value: String,
}

/// One rule: its raw line plus the parsed fields the tracer uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// The whole line as written (`-A CHAIN ...`).
    pub raw: String,
    /// `-m comment --comment`.
    pub comment: Option<String>,
    /// `-s`.
    pub source: Option<Value>,
    /// `-d`.
    pub destination: Option<Value>,
    /// `-p`.
    pub protocol: Option<Value>,
    /// `--src-type`.
    pub source_type: Option<Value>,
    /// `--dst-type`.
    pub destination_type: Option<Value>,
    /// `--dport`.
    pub destination_port: Option<Value>,
    /// `-i`.
    pub in_interface: Option<Value>,
    /// `-j`.
    pub jump: Option<String>,
    /// `--to-destination`.
    pub dnat_destination: Option<String>,
    /// `--probability`.
    pub probability: Option<String>,
    /// `-m recent --rcheck` (affinity check).
    pub affinity_check: bool,
    /// `-m mark --mark`.
    pub mark_check: bool,
    /// `--ctstate`.
    pub ctstate_check: bool,
}

/// Errors parsing a dump.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DumpError {
    /// The input could not be read.
    #[error("reading the input: {0}")]
    Read(String),
    /// A line outside a table, or an unknown directive.
    #[error("line {line}: {message}: {text:?}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: &'static str,
        /// The line.
        text: String,
    },
}

/// Splits a rule line into words, honouring double quotes (iptables-save quotes
/// comments with spaces).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            ' ' | '\t' if !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut cur));
                    has_word = false;
                }
            }
            c => {
                cur.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(cur);
    }
    words
}

impl Rule {
    /// Parses a rule line (starting with `-A CHAIN`); returns the chain and the rule.
    pub fn parse(line: &str) -> Option<(String, Rule)> {
        let words = split_words(line);
        if words.len() < 2 || words[0] != "-A" {
            return None;
        }
        let chain = words[1].clone();
        let mut rule = Rule {
            raw: line.to_string(),
            ..Rule::default()
        };
        let mut negate = false;
        let mut i = 2;
        let take = |i: &mut usize| -> Option<String> {
            *i += 1;
            words.get(*i).cloned()
        };
        while i < words.len() {
            let w = words[i].as_str();
            let value = |negated: bool, v: Option<String>| v.map(|value| Value { negated, value });
            match w {
                "!" => {
                    negate = true;
                    i += 1;
                    continue;
                }
                "--comment" => rule.comment = take(&mut i),
                "-s" | "--source" | "--src" => rule.source = value(negate, take(&mut i)),
                "-d" | "--destination" | "--dst" => rule.destination = value(negate, take(&mut i)),
                "-p" | "--protocol" => rule.protocol = value(negate, take(&mut i)),
                "--src-type" => rule.source_type = value(negate, take(&mut i)),
                "--dst-type" => rule.destination_type = value(negate, take(&mut i)),
                "--dport" | "--destination-port" => {
                    rule.destination_port = value(negate, take(&mut i))
                }
                "-i" | "--in-interface" => rule.in_interface = value(negate, take(&mut i)),
                "-j" | "--jump" => rule.jump = take(&mut i),
                "--to-destination" => rule.dnat_destination = take(&mut i),
                "--probability" => rule.probability = take(&mut i),
                "--rcheck" => rule.affinity_check = true,
                "--mark" => {
                    rule.mark_check = true;
                    take(&mut i);
                }
                "--ctstate" => {
                    rule.ctstate_check = true;
                    take(&mut i);
                }
                _ => {}
            }
            negate = false;
            i += 1;
        }
        Some((chain, rule))
    }
}

impl Dump {
    /// Parses `iptables-save`-style text. Comment lines (`#`) and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Dump, DumpError> {
        Self::parse_selected(text, |_| true)
    }

    /// Like [`Dump::parse`], but keeps the rules of only the chains `keep` selects
    /// (every chain is still listed). Reading a large nat table for its chain names
    /// and the built-in chains' jump rules then costs little.
    pub fn parse_selected(text: &str, keep: impl Fn(&str) -> bool) -> Result<Dump, DumpError> {
        Self::read_selected(text.as_bytes(), keep)
    }

    /// Like [`Dump::parse_selected`], reading the text a line at a time from `input`
    /// (the output of `iptables-save` as it comes, never held whole).
    pub fn read_selected(
        mut input: impl BufRead,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Dump, DumpError> {
        let mut dump = Dump::default();
        let mut current: Option<Table> = None;
        // Chain name -> index in the current table (rules are appended by name).
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut buf = String::new();
        let mut n = 0;
        loop {
            buf.clear();
            match input.read_line(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(DumpError::Read(e.to_string())),
            }
            n += 1;
            let raw = buf.strip_suffix('\n').unwrap_or(&buf);
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let line = raw.trim();
            let bad = |message| DumpError::BadLine {
                line: n,
                message,
                text: raw.to_string(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if current.is_some() {
                    return Err(bad("table started before COMMIT"));
                }
                index.clear();
                current = Some(Table {
                    name: name.to_string(),
                    ..Table::default()
                });
                continue;
            }
            let Some(table) = current.as_mut() else {
                return Err(bad("line outside a table"));
            };
            if line == "COMMIT" {
                if let Some(t) = current.take() {
                    dump.tables.push(t);
                }
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                let name = parts.next().ok_or_else(|| bad("empty chain declaration"))?;
                let policy = parts.next().unwrap_or("-");
                match index.get(name) {
                    Some(&i) => table.chains[i].rules.clear(),
                    None => {
                        index.insert(name.to_string(), table.chains.len());
                        table.chains.push(Chain {
                            name: name.to_string(),
                            policy: policy.to_string(),
                            rules: Vec::new(),
                        });
                    }
                }
                continue;
            }
            if let Some(name) = line.strip_prefix("-X ") {
                table.deleted.push(name.trim().to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("-A ") {
                let chain = rest.split(' ').next().unwrap_or_default();
                if !keep(chain) {
                    continue;
                }
            }
            // `-I CHAIN [N] ...` (used to insert jump rules) is an append at position N.
            let (line, insert_at) = match line.strip_prefix("-I ") {
                Some(rest) => {
                    let mut words = rest.splitn(3, ' ');
                    let chain = words.next().unwrap_or_default();
                    let second = words.next().unwrap_or_default();
                    match second.parse::<usize>() {
                        Ok(n) => (
                            format!("-A {chain} {}", words.next().unwrap_or_default()),
                            Some(n.max(1) - 1),
                        ),
                        Err(_) => (
                            format!("-A {chain} {second} {}", words.next().unwrap_or_default()),
                            Some(0),
                        ),
                    }
                }
                None => (line.to_string(), None),
            };
            let Some((chain, rule)) = Rule::parse(&line) else {
                return Err(bad("not a rule, chain or table line"));
            };
            let i = match index.get(&chain) {
                Some(&i) => i,
                None => {
                    index.insert(chain.clone(), table.chains.len());
                    table.chains.push(Chain {
                        name: chain,
                        policy: "-".into(),
                        rules: Vec::new(),
                    });
                    table.chains.len() - 1
                }
            };
            let rules = &mut table.chains[i].rules;
            match insert_at {
                Some(at) => rules.insert(at.min(rules.len()), rule),
                None => rules.push(rule),
            }
        }
        if current.is_some() {
            return Err(DumpError::BadLine {
                line: n,
                message: "missing COMMIT at end of input",
                text: String::new(),
            });
        }
        Ok(dump)
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// A chain by table and name.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.table(table)?.chains.iter().find(|c| c.name == chain)
    }

    /// Prints the dump back: per table, chain declarations then rules chain by chain.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            let _ = writeln!(out, "*{}", t.name);
            for c in &t.chains {
                let _ = writeln!(out, ":{} {} [0:0]", c.name, c.policy);
            }
            for c in &t.chains {
                for r in &c.rules {
                    out.push_str(&r.raw);
                    out.push('\n');
                }
            }
            for d in &t.deleted {
                let _ = writeln!(out, "-X {d}");
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// Reorders the dump the way upstream's tests do before comparing
    /// (`sortIPTablesRules` in `pkg/proxy/iptables/proxier_test.go`), so that rules
    /// can be compared regardless of the order Services were processed in: tables by
    /// name; chains KUBE-NODEPORTS, KUBE-SERVICES, other KUBE-* alphabetically, then the
    /// rest alphabetically; rules of KUBE-NODEPORTS and KUBE-SERVICES stably by the
    /// Service named at the start of their comment, keeping the "must be the last
    /// rule" NodePorts jump last.
    pub fn sort_like_upstream(&mut self) {
        self.tables.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &mut self.tables {
            t.chains
                .sort_by(|a, b| chain_rank(&a.name).cmp(&chain_rank(&b.name)));
            for c in &mut t.chains {
                if c.name == crate::names::KUBE_NODEPORTS || c.name == crate::names::KUBE_SERVICES {
                    let nat_services = t.name == "nat" && c.name == crate::names::KUBE_SERVICES;
                    c.rules.sort_by(|a, b| {
                        if nat_services {
                            let last = |r: &Rule| {
                                r.comment
                                    .as_deref()
                                    .is_some_and(|c| c.contains("must be the last rule"))
                            };
                            match (last(a), last(b)) {
                                (true, false) => return std::cmp::Ordering::Greater,
                                (false, true) => return std::cmp::Ordering::Less,
                                (true, true) => return std::cmp::Ordering::Equal,
                                _ => {}
                            }
                        }
                        match (comment_service(a), comment_service(b)) {
                            (Some(x), Some(y)) => x.cmp(y),
                            _ => std::cmp::Ordering::Equal,
                        }
                    });
                }
            }
        }
    }
}

fn chain_rank(name: &str) -> (u8, &str) {
    match name {
        "KUBE-NODEPORTS" => (0, ""),
        "KUBE-SERVICES" => (1, ""),
        n if n.starts_with("KUBE-") => (2, n),
        n => (3, n),
    }
}

/// The Service named at the start of a rule comment (up to the first space or colon).
fn comment_service(rule: &Rule) -> Option<&str> {
    let c = rule.comment.as_deref()?;
    Some(match c.find([' ', ':']) {
        Some(i) => &c[..i],
        None => c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quoted comments stay one word; negations attach to the next match.
    #[test]
    fn parses_rule_fields() {
        let (chain, r) = Rule::parse(
            r#"-A KUBE-SVC-X -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
        )
        .unwrap();
        assert_eq!(chain, "KUBE-SVC-X");
        assert_eq!(r.comment.as_deref(), Some("ns1/svc1:p80 cluster IP"));
        assert_eq!(
            r.source,
            Some(Value {
                negated: true,
                value: "10.0.0.0/8".into()
            })
        );
        assert!(!r.destination.as_ref().unwrap().negated);
        assert_eq!(r.jump.as_deref(), Some("KUBE-MARK-MASQ"));
    }

    /// Garbage is an error, not a panic.
    #[test]
    fn rejects_garbage() {
        assert!(Dump::parse("-A FOO -j BAR\n").is_err());
        assert!(Dump::parse("*nat\n:FOO - [0:0]\n").is_err());
        assert!(Dump::parse("*nat\nhello\nCOMMIT\n").is_err());
    }
}
