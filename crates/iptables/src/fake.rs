//! A fake of the iptables tools that keeps tables in memory, for tests that follow a
//! ruleset across many syncs without a kernel. Like knftables' fake, a restore is
//! applied to a copy and kept only if the result is consistent (no rule jumps to a
//! chain that does not exist, no deleted chain is still referenced), so the failures
//! a kernel would report are reported here too.

use std::sync::Mutex;

use crate::dump::{Chain, Dump, Table};
use crate::exec::{Output, Runner};

/// In-memory iptables for one family.
#[derive(Debug, Default)]
pub struct FakeIptables {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    tables: Dump,
    restores: Vec<String>,
    fail_next: bool,
}

const BUILTIN_TARGETS: [&str; 8] = [
    "ACCEPT",
    "REJECT",
    "DROP",
    "MARK",
    "RETURN",
    "DNAT",
    "SNAT",
    "MASQUERADE",
];

impl FakeIptables {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every restore input received, in order.
    pub fn restores(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.restores.clone())
            .unwrap_or_default()
    }

    /// The last restore input received.
    pub fn last_restore(&self) -> Option<String> {
        self.restores().pop()
    }

    /// Makes the next restore fail.
    pub fn fail_next_restore(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.fail_next = true;
        }
    }

    /// The current tables.
    pub fn dump(&self) -> Dump {
        self.state
            .lock()
            .map(|s| s.tables.clone())
            .unwrap_or_default()
    }

    /// Appends a rule to a chain (as `iptables -A` would), creating nothing.
    pub fn append_rule(&self, table: &str, rule_line: &str) -> bool {
        let Some((chain, rule)) = crate::dump::Rule::parse(rule_line) else {
            return false;
        };
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        match s
            .tables
            .tables
            .iter_mut()
            .find(|t| t.name == table)
            .and_then(|t| t.chains.iter_mut().find(|c| c.name == chain))
        {
            Some(c) => {
                c.rules.push(rule);
                true
            }
            None => false,
        }
    }

    fn restore(&self, input: &str) -> Result<(), String> {
        let parsed = Dump::parse(input).map_err(|e| e.to_string())?;
        let mut s = self.state.lock().map_err(|_| "poisoned".to_string())?;
        s.restores.push(input.to_string());
        if std::mem::take(&mut s.fail_next) {
            return Err("injected failure".into());
        }
        let mut next = s.tables.clone();
        for t in &parsed.tables {
            let table = match next.tables.iter_mut().position(|x| x.name == t.name) {
                Some(i) => &mut next.tables[i],
                None => {
                    next.tables.push(Table {
                        name: t.name.clone(),
                        ..Table::default()
                    });
                    let i = next.tables.len() - 1;
                    &mut next.tables[i]
                }
            };
            for c in &t.chains {
                match table.chains.iter_mut().find(|x| x.name == c.name) {
                    Some(existing) => existing.rules = c.rules.clone(),
                    None => table.chains.push(Chain {
                        name: c.name.clone(),
                        policy: c.policy.clone(),
                        rules: c.rules.clone(),
                    }),
                }
            }
            for d in &t.deleted {
                table.chains.retain(|c| &c.name != d);
            }
            // Consistency: every jump target exists.
            for c in &table.chains {
                for r in &c.rules {
                    if let Some(j) = r.jump.as_deref()
                        && !BUILTIN_TARGETS.contains(&j)
                        && !table.chains.iter().any(|x| x.name == j)
                    {
                        return Err(format!("chain {} jumps to missing chain {j}", c.name));
                    }
                }
            }
        }
        s.tables = next;
        Ok(())
    }
}

impl Runner for FakeIptables {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        let mut out = Output::default();
        if program.ends_with("-save") {
            let table = args.iter().skip_while(|a| **a != "-t").nth(1).copied();
            let dump = self.dump();
            let mut text = String::new();
            for t in dump
                .tables
                .iter()
                .filter(|t| table.is_none_or(|n| n == t.name))
            {
                text.push_str(
                    &Dump {
                        tables: vec![t.clone()],
                    }
                    .to_text(),
                );
            }
            if text.is_empty()
                && let Some(t) = table
            {
                text = format!("*{t}\nCOMMIT\n");
            }
            out.stdout = text;
        } else if program.ends_with("-restore") {
            let input = String::from_utf8_lossy(stdin.unwrap_or_default()).into_owned();
            if let Err(e) = self.restore(&input) {
                out.status = 1;
                out.stderr = format!("iptables-restore: {e}");
            }
        } else if args.contains(&"-S") {
            // Canary check: `iptables -t TABLE -S CHAIN`.
            let table = args
                .iter()
                .skip_while(|a| **a != "-t")
                .nth(1)
                .copied()
                .unwrap_or("filter");
            let chain = args.last().copied().unwrap_or_default();
            let found = self.dump().chain(table, chain).is_some();
            out.status = if found { 0 } else { 1 };
        } else if args.first() == Some(&"--version") {
            out.stdout = "iptables v1.8.9 (fake)".into();
        }
        Ok(out)
    }
}
