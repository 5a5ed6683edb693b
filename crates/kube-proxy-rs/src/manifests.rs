//! The manifest-directory source as the sync loop uses it: re-read the directory into
//! the store, logging each problem once (not on every re-read).

use std::collections::HashSet;
use std::path::PathBuf;

use kpr_model::Store;
use tracing::{info, warn};

/// Re-reads a manifest directory into a [`Store`].
#[derive(Debug)]
pub struct ManifestSource {
    dir: PathBuf,
    reported: HashSet<String>,
}

/// What a reload found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reload {
    /// Files read.
    pub files: usize,
    /// Problems found (all of them, including ones reported before).
    pub problems: usize,
}

impl ManifestSource {
    /// A source over `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            reported: HashSet::new(),
        }
    }

    /// The problem and allocation lines of the last reload.
    pub fn reported_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.reported.iter().cloned().collect();
        v.sort();
        v
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Reads the directory and replaces the store's objects with what it holds.
    /// If the directory cannot be read at all, the store is left as it is (the rules
    /// programmed from the last good read stay) and the error is returned.
    pub fn reload(&mut self, store: &mut Store) -> Result<Reload, kpr_source::SourceError> {
        let set = kpr_source::load_dir(&self.dir)?;
        let mut lines: Vec<String> = set.problems.iter().map(ToString::to_string).collect();
        for p in store.replace_all_owned(set.objects) {
            let origin = set
                .origins
                .get(&format!("{} {}", p.kind.as_str(), p.object))
                .cloned()
                .unwrap_or_else(|| self.dir.display().to_string());
            lines.push(format!("{origin}: {p}"));
        }
        let mut current = HashSet::new();
        for line in &lines {
            if !self.reported.contains(line) {
                warn!(problem = %line, "manifest problem; the object or field named is skipped");
            }
            current.insert(line.clone());
        }
        for line in set.allocations {
            if !self.reported.contains(&line) {
                info!(allocation = %line, "manifest source allocation");
            }
            current.insert(line);
        }
        self.reported = current;
        Ok(Reload {
            files: set.files,
            problems: lines.len(),
        })
    }
}
