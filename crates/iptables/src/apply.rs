//! Applying rendered rules to the kernel: the only code in this crate that changes
//! kernel state (through [`Runner`]).
//!
//! As upstream: one `iptables-restore --noflush --counters` per sync (the filter and
//! nat tables each commit atomically; chains not declared in the input are left
//! alone), the jump rules from the built-in chains ensured on full syncs, and canary
//! chains that reveal an external flush (firewalld reload, `iptables -F`). Unlike
//! upstream, the jump rules are checked with one `iptables-save` per table instead of
//! one `iptables -C` per rule, and missing ones are inserted in one restore.

use std::sync::Arc;

use kpr_model::IpFamily;

use crate::dump::{Dump, split_words};
use crate::exec::{InputWriter, Output, Runner};
use crate::names::*;
use crate::render::ExistingChains;

/// Which iptables binaries to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `iptables` as installed (whatever alternative it points to).
    #[default]
    Default,
    /// `iptables-nft`.
    Nft,
    /// `iptables-legacy`.
    Legacy,
}

/// Errors from running the iptables tools.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program failed.
    #[error("{program} failed (exit {status}): {stderr}{}", failing_line.as_ref().map(|(n, l)| format!("; input line {n}: {l}")).unwrap_or_default())]
    Failed {
        /// The program.
        program: String,
        /// Exit status.
        status: i32,
        /// Its first error line.
        stderr: String,
        /// The input line iptables-restore reported, with its text.
        failing_line: Option<(usize, String)>,
    },
    /// Output that could not be parsed.
    #[error("cannot parse {program} output: {message}")]
    Parse {
        /// The program.
        program: String,
        /// What went wrong.
        message: String,
    },
}

/// A jump rule from a built-in chain to one of ours (upstream `iptablesJumpChains`).
#[derive(Clone, Copy, Debug)]
pub struct JumpRule {
    /// Table.
    pub table: &'static str,
    /// Built-in chain the rule is in.
    pub from: &'static str,
    /// Our chain it jumps to.
    pub to: &'static str,
    /// Its comment ("" for none).
    pub comment: &'static str,
    /// Only for new connections (`-m conntrack --ctstate NEW`).
    pub new_only: bool,
}

/// A jump rule into `to` from the built-in chain `from` of `table`.
pub const fn jump(
    table: &'static str,
    to: &'static str,
    from: &'static str,
    comment: &'static str,
    new_only: bool,
) -> JumpRule {
    JumpRule {
        table,
        from,
        to,
        comment,
        new_only,
    }
}

/// The jump rules upstream installs, in its order (each is inserted at the top, so
/// the last one ends up first). The last two are duplicates of kubelet's rules.
pub const JUMP_RULES: [JumpRule; 14] = [
    jump(
        "filter",
        KUBE_EXTERNAL_SERVICES,
        "INPUT",
        "kubernetes externally-visible service portals",
        true,
    ),
    jump(
        "filter",
        KUBE_EXTERNAL_SERVICES,
        "FORWARD",
        "kubernetes externally-visible service portals",
        true,
    ),
    jump(
        "filter",
        KUBE_NODEPORTS,
        "INPUT",
        "kubernetes health check service ports",
        false,
    ),
    jump(
        "filter",
        KUBE_SERVICES,
        "FORWARD",
        "kubernetes service portals",
        true,
    ),
    jump(
        "filter",
        KUBE_SERVICES,
        "OUTPUT",
        "kubernetes service portals",
        true,
    ),
    jump(
        "filter",
        KUBE_FORWARD,
        "FORWARD",
        "kubernetes forwarding rules",
        false,
    ),
    jump(
        "filter",
        KUBE_PROXY_FIREWALL,
        "INPUT",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        "filter",
        KUBE_PROXY_FIREWALL,
        "OUTPUT",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        "filter",
        KUBE_PROXY_FIREWALL,
        "FORWARD",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        "nat",
        KUBE_SERVICES,
        "OUTPUT",
        "kubernetes service portals",
        false,
    ),
    jump(
        "nat",
        KUBE_SERVICES,
        "PREROUTING",
        "kubernetes service portals",
        false,
    ),
    jump(
        "nat",
        KUBE_POSTROUTING,
        "POSTROUTING",
        "kubernetes postrouting rules",
        false,
    ),
    jump("filter", KUBE_FIREWALL, "INPUT", "", false),
    jump("filter", KUBE_FIREWALL, "OUTPUT", "", false),
];

impl JumpRule {
    /// The rule text after `-A CHAIN` / `-I CHAIN`, quoted for iptables-restore.
    pub fn spec(&self) -> String {
        let mut s = String::new();
        if self.new_only {
            s.push_str("-m conntrack --ctstate NEW ");
        }
        if !self.comment.is_empty() {
            s.push_str(&format!("-m comment --comment \"{}\" ", self.comment));
        }
        s.push_str("-j ");
        s.push_str(self.to);
        s
    }
}

/// The iptables tools of one family and backend.
#[derive(Clone)]
pub struct Iptables {
    family: IpFamily,
    iptables: String,
    save: String,
    restore: String,
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for Iptables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iptables")
            .field("family", &self.family)
            .field("iptables", &self.iptables)
            .finish()
    }
}

/// What [`Iptables::ensure_jumps_and_canaries`] found.
#[derive(Clone, Debug, Default)]
pub struct Ensured {
    /// Jump rules that were missing and have been inserted.
    pub missing: usize,
    /// The per-service and per-endpoint nat chains that existed before.
    pub nat_chains: ExistingChains,
}

/// Features of the installed iptables found by probing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `MASQUERADE --random-fully` (iptables >= 1.6.2).
    pub random_fully: bool,
}

impl Iptables {
    /// Tools for `family` with `backend`, run through `runner`.
    pub fn new(family: IpFamily, backend: Backend, runner: Arc<dyn Runner>) -> Self {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let suffix = match backend {
            Backend::Default => "",
            Backend::Nft => "-nft",
            Backend::Legacy => "-legacy",
        };
        Self {
            family,
            iptables: format!("{base}{suffix}"),
            save: format!("{base}{suffix}-save"),
            restore: format!("{base}{suffix}-restore"),
            runner,
        }
    }

    /// The family these tools program.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output, ApplyError> {
        self.runner
            .run(program, args, stdin)
            .map_err(|source| ApplyError::Spawn {
                program: program.to_string(),
                source,
            })
    }

    /// `out` if it succeeded, else the error; `line_of(n)` is the text of input line
    /// `n` (1-based) when iptables-restore names the one that failed.
    fn check(
        &self,
        program: &str,
        out: Output,
        line_of: &dyn Fn(usize) -> Option<String>,
    ) -> Result<Output, ApplyError> {
        if out.success() {
            return Ok(out);
        }
        let failing_line =
            failing_line_number(&out.stderr).and_then(|n| line_of(n).map(|l| (n, l)));
        Err(ApplyError::Failed {
            program: program.to_string(),
            status: out.status,
            stderr: out
                .stderr
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            failing_line,
        })
    }

    /// Probes optional features.
    pub fn probe(&self) -> Features {
        let version = self
            .run(&self.iptables, &["--version"], None)
            .map(|o| o.stdout)
            .unwrap_or_default();
        Features {
            random_fully: version_at_least(&version, (1, 6, 2)),
        }
    }

    /// `iptables-save` of one table (or all tables), parsed.
    pub fn save(&self, table: Option<&str>) -> Result<Dump, ApplyError> {
        self.save_selected(table, |_| true)
    }

    /// `iptables-save` of one table (or all), keeping only the rules of the chains
    /// `keep` selects.
    pub fn save_selected(
        &self,
        table: Option<&str>,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Dump, ApplyError> {
        let args: Vec<&str> = match table {
            Some(t) => vec!["-t", t],
            None => vec![],
        };
        // The output is parsed as it comes: at 50,000 Services the nat table is
        // 170 MB of text.
        let mut parsed = None;
        let out = self
            .runner
            .run_reading(&self.save, &args, &mut |reader| {
                parsed = Some(Dump::read_selected(reader, &keep));
                Ok(())
            })
            .map_err(|source| ApplyError::Spawn {
                program: self.save.clone(),
                source,
            })?;
        self.check(&self.save, out, &|_| None)?;
        parsed
            .unwrap_or_else(|| Ok(Dump::default()))
            .map_err(|e| ApplyError::Parse {
                program: self.save.clone(),
                message: e.to_string(),
            })
    }

    /// Runs `iptables-restore --noflush --counters` with `text`.
    pub fn restore(&self, text: &str) -> Result<(), ApplyError> {
        let out = self.run(
            &self.restore,
            &["-w", "5", "--noflush", "--counters"],
            Some(text.as_bytes()),
        )?;
        let line_of = |n: usize| text.lines().nth(n.saturating_sub(1)).map(str::to_string);
        self.check(&self.restore, out, &line_of).map(|_| ())
    }

    /// Like [`Iptables::restore`], the input written by `input` while
    /// `iptables-restore` reads it (never held whole). If the tool names a failing
    /// line, `line_of(n)` is asked for the text of input line `n` (1-based).
    pub fn restore_streaming(
        &self,
        input: &mut InputWriter<'_>,
        line_of: &dyn Fn(usize) -> Option<String>,
    ) -> Result<(), ApplyError> {
        let out = self
            .runner
            .run_writing(
                &self.restore,
                &["-w", "5", "--noflush", "--counters"],
                input,
            )
            .map_err(|source| ApplyError::Spawn {
                program: self.restore.clone(),
                source,
            })?;
        self.check(&self.restore, out, line_of).map(|_| ())
    }

    /// Makes sure our top-level chains exist and the built-in chains jump to them, and
    /// creates the canary chains. Reads each table once; returns how many jump rules
    /// were missing and the nat chains that exist (for stale-chain deletion).
    pub fn ensure_jumps_and_canaries(&self) -> Result<Ensured, ApplyError> {
        self.ensure_jumps(&JUMP_RULES, &["filter", "nat", "mangle"], true)
    }

    /// Makes sure the chains `rules` jump to exist (and, with `canaries`, the canary
    /// chain in each of `tables`) and that every rule is in its built-in chain; a
    /// missing one is inserted first, as upstream. Reads each table once and writes
    /// with one restore.
    pub fn ensure_jumps(
        &self,
        rules: &[JumpRule],
        tables: &[&str],
        canaries: bool,
    ) -> Result<Ensured, ApplyError> {
        let mut missing = 0;
        let mut nat_chains = ExistingChains::default();
        let mut input = String::new();
        for &table in tables {
            // Only the built-in chains' rules matter here.
            let dump = self.save_selected(Some(table), |c| !c.starts_with("KUBE-"))?;
            if table == "nat" {
                nat_chains = dump
                    .table("nat")
                    .map(|t| t.chains.iter().map(|c| c.name.as_str()).collect())
                    .unwrap_or_default();
            }
            let existing = dump.table(table);
            input.push_str(&format!("*{table}\n"));
            // Declaring a chain that exists would flush it, so only missing ones.
            let has_chain =
                |c: &str| existing.is_some_and(|t| t.chains.iter().any(|ch| ch.name == c));
            let mut ours: Vec<&str> = rules
                .iter()
                .filter(|j| j.table == table)
                .map(|j| j.to)
                .collect();
            if canaries {
                ours.push(KUBE_PROXY_CANARY);
            }
            ours.sort_unstable();
            ours.dedup();
            for c in ours {
                if !has_chain(c) {
                    input.push_str(&format!(":{c} - [0:0]\n"));
                }
            }
            for j in rules.iter().filter(|j| j.table == table) {
                let present = existing
                    .and_then(|t| t.chains.iter().find(|c| c.name == j.from))
                    .is_some_and(|c| {
                        c.rules.iter().any(|r| {
                            r.jump.as_deref() == Some(j.to)
                                && r.comment.as_deref().unwrap_or_default() == j.comment
                        })
                    });
                if !present {
                    missing += 1;
                    input.push_str(&format!("-I {} 1 {}\n", j.from, j.spec()));
                }
            }
            input.push_str("COMMIT\n");
        }
        self.restore(&input)?;
        Ok(Ensured {
            missing,
            nat_chains,
        })
    }

    /// True if every canary chain still exists (false after an external flush).
    pub fn canaries_present(&self) -> bool {
        ["mangle", "nat", "filter"].iter().all(|t| {
            self.run(
                &self.iptables,
                &["-w", "5", "-t", t, "-S", KUBE_PROXY_CANARY],
                None,
            )
            .is_ok_and(|o| o.success())
        })
    }

    /// Removes every chain and jump rule kube-proxy (ours or upstream's iptables or
    /// IPVS mode) creates in this family, keeping kubelet's chains. Idempotent.
    pub fn cleanup(&self) -> Result<usize, ApplyError> {
        let mut removed = 0;
        let dump = self.save(None)?;
        for table in &dump.tables {
            let ours: Vec<&str> = table
                .chains
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| is_cleanup_chain(table.name.as_str(), c))
                .collect();
            if ours.is_empty() {
                continue;
            }
            // First unlink: delete rules in other chains that jump to ours.
            for chain in table
                .chains
                .iter()
                .filter(|c| !ours.contains(&c.name.as_str()))
            {
                for rule in chain
                    .rules
                    .iter()
                    .filter(|r| r.jump.as_deref().is_some_and(|j| ours.contains(&j)))
                {
                    let words = split_words(&rule.raw);
                    let mut args: Vec<&str> = vec!["-w", "5", "-t", &table.name, "-D"];
                    args.extend(words.iter().skip(1).map(String::as_str));
                    let out = self.run(&self.iptables, &args, None)?;
                    self.check(&self.iptables, out, &|_| None)?;
                    removed += 1;
                }
            }
            // Then flush and delete ours in one restore.
            let mut input = format!("*{}\n", table.name);
            for c in &ours {
                input.push_str(&format!(":{c} - [0:0]\n"));
            }
            for c in &ours {
                input.push_str(&format!("-X {c}\n"));
            }
            input.push_str("COMMIT\n");
            self.restore(&input)?;
            removed += ours.len();
        }
        Ok(removed)
    }
}

/// Chains `--cleanup` removes: all kube-proxy chains of the iptables and IPVS modes.
/// kubelet's `KUBE-FIREWALL`, `KUBE-KUBELET-CANARY` and `KUBE-IPTABLES-HINT` stay.
pub fn is_cleanup_chain(table: &str, chain: &str) -> bool {
    if is_service_chain(chain) {
        return table == "nat";
    }
    match table {
        "nat" => matches!(
            chain,
            "KUBE-SERVICES"
                | "KUBE-NODEPORTS"
                | "KUBE-POSTROUTING"
                | "KUBE-MARK-MASQ"
                | "KUBE-MARK-DROP"
                | "KUBE-PROXY-CANARY"
                | "KUBE-LOAD-BALANCER"
                | "KUBE-LOOP-BACK"
                | "KUBE-EXTERNAL-SERVICES"
                | "KUBE-NODE-PORT"
        ),
        "filter" => matches!(
            chain,
            "KUBE-SERVICES"
                | "KUBE-EXTERNAL-SERVICES"
                | "KUBE-FORWARD"
                | "KUBE-NODEPORTS"
                | "KUBE-PROXY-FIREWALL"
                | "KUBE-PROXY-CANARY"
                | "KUBE-SOURCE-RANGES-FIREWALL"
                | "KUBE-IPVS-FILTER"
                | "KUBE-IPVS-OUT-FILTER"
                | "KUBE-NODE-PORT"
        ),
        "mangle" => chain == "KUBE-PROXY-CANARY",
        _ => false,
    }
}

/// The input line `iptables-restore` names as the one that failed: the nft backend
/// says `Error occurred at line: N`, the legacy one `iptables-restore: line N failed`.
fn failing_line_number(stderr: &str) -> Option<usize> {
    stderr.lines().find_map(|l| {
        let l = l.trim();
        let n = match l.strip_prefix("Error occurred at line: ") {
            Some(n) => n,
            None => l
                .split_once(": line ")
                .and_then(|(_, rest)| rest.strip_suffix(" failed"))?,
        };
        n.trim().parse().ok()
    })
}

fn version_at_least(version_output: &str, min: (u32, u32, u32)) -> bool {
    let Some(v) = version_output
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
    else {
        return false;
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let got = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    got >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    /// iptables prints "iptables v1.8.9 (nf_tables)"; --random-fully needs 1.6.2.
    #[test]
    fn failing_lines_of_both_backends() {
        assert_eq!(
            failing_line_number(
                "iptables-restore v1.8.9 (nf_tables): unknown option\nError occurred at line: 7\nTry `iptables-restore -h'"
            ),
            Some(7)
        );
        assert_eq!(
            failing_line_number("iptables-restore: line 2222523 failed\n"),
            Some(2222523)
        );
        assert_eq!(
            failing_line_number("iptables-restore: unable to initialize table"),
            None
        );
    }

    #[test]
    fn version_parse() {
        assert!(version_at_least("iptables v1.8.9 (nf_tables)", (1, 6, 2)));
        assert!(!version_at_least("iptables v1.6.1", (1, 6, 2)));
        assert!(!version_at_least("garbage", (1, 6, 2)));
    }

    /// Cleanup keeps kubelet's chains and takes every kube-proxy one.
    #[test]
    fn cleanup_selection() {
        assert!(is_cleanup_chain("nat", "KUBE-SVC-XPGD46QRK7WJZT7O"));
        assert!(is_cleanup_chain("filter", "KUBE-PROXY-FIREWALL"));
        assert!(!is_cleanup_chain("filter", "KUBE-FIREWALL"));
        assert!(!is_cleanup_chain("nat", "KUBE-KUBELET-CANARY"));
        assert!(!is_cleanup_chain("mangle", "KUBE-IPTABLES-HINT"));
    }
}
