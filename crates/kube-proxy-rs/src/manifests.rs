//! The manifest-directory source as the sync loop uses it: re-read the directory into
//! the store, logging each problem once (not on every re-read).

use std::collections::HashSet;
use std::path::PathBuf;

use kpr_model::Store;
use kpr_source::TrackedDir;
use tracing::{info, warn};

/// Re-reads a manifest directory into a [`Store`].
#[derive(Debug)]
pub struct ManifestSource {
    dir: TrackedDir,
    reported: HashSet<String>,
}

/// What a reload found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reload {
    /// Manifest files in the directory that could be read.
    pub files: usize,
    /// Files decoded by this reload (only the changed ones, when that is enough).
    pub decoded: usize,
    /// Problems found (all of them, including ones reported before).
    pub problems: usize,
}

impl ManifestSource {
    /// A source over `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir: TrackedDir::new(dir),
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
        self.dir.dir()
    }

    /// Brings the store up to date with the directory (decoding only the files that
    /// changed, when nothing else can be affected). If the directory cannot be read
    /// at all, the store is left as it is (the rules programmed from the last good
    /// read stay) and the error is returned.
    pub fn reload(&mut self, store: &mut Store) -> Result<Reload, kpr_source::SourceError> {
        let read = self.dir.reload(store)?;
        let mut current = HashSet::new();
        for line in &read.problems {
            if !self.reported.contains(line) {
                warn!(problem = %line, "manifest problem; the object or field named is skipped");
            }
            current.insert(line.clone());
        }
        for line in read.allocations {
            if !self.reported.contains(&line) {
                info!(allocation = %line, "manifest source allocation");
            }
            current.insert(line);
        }
        self.reported = current;
        Ok(Reload {
            files: read.files,
            decoded: read.decoded,
            problems: read.problems.len(),
        })
    }
}
