//! Running the `ipset` tool: read our sets (`ipset save`), apply a script
//! (`ipset restore`), destroy sets, check the version. The kernel's ipset netlink
//! protocol has no maintained Rust crate; upstream kube-proxy drives the same tool
//! (one exec per entry; we batch a whole sync into one `ipset restore`).

use std::sync::Arc;

use kpr_exec::{Output, Runner};
use kpr_model::IpFamily;

use crate::sets::{self, Set, SetEntries};

/// Errors from running `ipset`.
#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    /// The program could not be started.
    #[error("cannot run ipset {operation}: {source}")]
    Spawn {
        /// `save`, `restore`, ...
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program failed.
    #[error("ipset {operation} failed (exit {status}): {stderr}")]
    Failed {
        /// `save`, `restore`, ...
        operation: &'static str,
        /// Exit status.
        status: i32,
        /// Its first error line.
        stderr: String,
    },
    /// The installed ipset is too old (upstream needs 6.0).
    #[error("ipset {found} is too old: kube-proxy needs ipset >= 6.0")]
    TooOld {
        /// The version found.
        found: String,
    },
}

/// The `ipset` tool.
#[derive(Clone)]
pub struct Ipset {
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for Ipset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ipset")
    }
}

impl Ipset {
    /// `ipset` run through `runner`.
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        Self { runner }
    }

    fn run(
        &self,
        operation: &'static str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output, IpsetError> {
        let out = self
            .runner
            .run("ipset", args, stdin)
            .map_err(|source| IpsetError::Spawn { operation, source })?;
        if out.success() {
            Ok(out)
        } else {
            Err(IpsetError::Failed {
                operation,
                status: out.status,
                stderr: out
                    .stderr
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            })
        }
    }

    /// Checks that `ipset` runs and is at least 6.0; returns its version.
    pub fn version(&self) -> Result<String, IpsetError> {
        let out = self.run("--version", &["--version"], None)?;
        let found = out
            .stdout
            .split_whitespace()
            .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or_default()
            .to_string();
        let major: u32 = found
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 6 {
            return Err(IpsetError::TooOld { found });
        }
        Ok(found)
    }

    /// Our sets of `family` as the kernel holds them (absent sets are missing from
    /// the map). One `ipset save` of all sets: the tool cannot save several named
    /// sets at once, and the other sets' lines are skipped while parsing.
    pub fn save(&self, family: IpFamily) -> Result<SetEntries, IpsetError> {
        let out = self.run("save", &["save"], None)?;
        Ok(sets::parse_save(&out.stdout, family))
    }

    /// Our sets of both families, from one `ipset save`.
    pub fn save_both(&self) -> Result<[(IpFamily, SetEntries); 2], IpsetError> {
        let out = self.run("save", &["save"], None)?;
        Ok(IpFamily::ALL.map(|family| (family, sets::parse_save(&out.stdout, family))))
    }

    /// Runs `ipset restore` with `script` (nothing when it is empty).
    pub fn restore(&self, script: &str) -> Result<(), IpsetError> {
        if script.is_empty() {
            return Ok(());
        }
        self.run("restore", &["restore"], Some(script.as_bytes()))
            .map(|_| ())
    }

    /// Destroys our sets of both families (IPv4 and `KUBE-6-` names; upstream's
    /// cleanup forgets the latter). Missing sets are fine; a set still referenced
    /// by an iptables rule fails. Returns how many were destroyed.
    pub fn destroy_all(&self) -> Result<usize, IpsetError> {
        let existing = self.run("list", &["list", "-n"], None)?;
        let names: Vec<&str> = existing.stdout.lines().map(str::trim).collect();
        let mut destroyed = 0;
        for family in IpFamily::ALL {
            for set in Set::ALL {
                let name = set.name(family);
                if names.contains(&name.as_str()) {
                    self.run("destroy", &["destroy", &name], None)?;
                    destroyed += 1;
                }
            }
        }
        Ok(destroyed)
    }
}
