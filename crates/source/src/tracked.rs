//! A manifest directory kept in a [`Store`], re-read only where its files changed.
//!
//! A change to one file of a large directory (a new Service written next to a
//! 50,000-Service list) decodes that file alone: its objects are upserted, the ones
//! it no longer holds deleted. The whole directory is read again when a change could
//! reach beyond the file: a file that held or now holds a Node, a ServiceCIDR, a
//! Service needing a ClusterIP or NodePort allocated (allocation avoids what every
//! other Service holds), an object also defined in another file (the later file
//! wins), or a file that could not be read. Either way the store ends up exactly as a
//! full read would leave it (a test checks this over random edits). A file counts as
//! changed when its size, inode or times differ ([`Seen`]), or, for a file changed
//! just before it was read, its content does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kpr_model::{Change, NamespacedName, ObjectKind, Store};

use crate::dir::{FileRead, ManifestSet, SourceError, key, key_hash, list_files, read_files};

/// What identifies a file's content without reading it: size, inode and change
/// time (an atomic replace is a new inode; a write, or setting the modification
/// time, moves ctime, so mtime would add nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ino: u64,
    dev: u64,
    ctime: (i64, i64),
}

/// How recent a change must be for a stamp to be distrusted (well above the
/// timestamp granularity of any Linux file system).
const RACY: Duration = Duration::from_millis(100);

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            len: m.len(),
            ino: m.ino(),
            dev: m.dev(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// True if the file changed less than [`RACY`] before `before` (a time taken
    /// before the file was stamped).
    fn racy(&self, before: SystemTime) -> bool {
        let Some(limit) = before
            .checked_sub(RACY)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        else {
            return true;
        };
        let limit = (limit.as_secs() as i64, i64::from(limit.subsec_nanos()));
        self.ctime >= limit
    }
}

/// How a file looked when it was last read.
///
/// File times are coarse (the kernel stamps them from a clock that ticks every few
/// milliseconds), so a write just after a read can leave the same stamp. A stamp
/// taken less than [`RACY`] after the file changed is therefore backed by a digest
/// of the content, taken after the stamp and before the file is decoded (so a
/// write in between shows as a different digest next time); the digest is
/// checked on the following re-reads until the stamp is old enough to be trusted
/// alone (git treats its index the same way).
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// `None` if the file could not be stamped (it counts as changed).
    stamp: Option<Stamp>,
    /// The content's digest: for racy stamps, and to compare with a racy record.
    digest: Option<u64>,
    /// The stamp is racy: keep the digest in the record.
    racy: bool,
}

impl Seen {
    /// Looks at `path` (`last`: how it was seen before, if it was).
    fn observe(path: &Path, before: SystemTime, last: Option<&Seen>) -> Self {
        let stamp = Stamp::of(path);
        let racy = stamp.is_none_or(|s| s.racy(before));
        let checked = last.is_some_and(|l| l.digest.is_some());
        let digest = if stamp.is_some() && (racy || checked) {
            content_digest(path)
        } else {
            None
        };
        Self {
            stamp,
            digest,
            racy,
        }
    }

    /// What to remember: the digest only while the stamp cannot be trusted alone.
    fn record(self) -> Self {
        Self {
            digest: self.digest.filter(|_| self.racy),
            ..self
        }
    }

    /// True if the file is known to hold what it held when `self` was recorded.
    fn unchanged(&self, now: &Seen) -> bool {
        now.stamp.is_some()
            && self.stamp == now.stamp
            && self.digest.is_none_or(|d| now.digest == Some(d))
    }
}

/// A digest of a file's bytes (std's SipHash; `None` if it cannot be read).
fn content_digest(path: &Path) -> Option<u64> {
    use std::hash::Hasher;
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(hasher.finish()),
            Ok(n) => hasher.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// One file as last read.
#[derive(Debug)]
struct Tracked {
    seen: Seen,
    read: FileRead,
    /// Problem lines of this file's objects (source and model problems).
    lines: Vec<String>,
}

/// What a re-read did.
#[derive(Debug, Default)]
pub struct Reread {
    /// Manifest files in the directory that could be read.
    pub files: usize,
    /// Files decoded by this re-read (all of them on a full read).
    pub decoded: usize,
    /// True if the whole directory was read.
    pub full: bool,
    /// Every problem line of the directory as it now is (not only new ones).
    pub problems: Vec<String>,
    /// ClusterIP / NodePort allocation lines.
    pub allocations: Vec<String>,
}

/// A manifest directory whose objects a [`Store`] holds.
#[derive(Debug)]
pub struct TrackedDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Tracked>,
    /// Problem lines not traced to one file (the Node's, ServiceCIDRs').
    dir_lines: Vec<String>,
    allocations: Vec<String>,
    /// False until a full read succeeded.
    known: bool,
}

impl TrackedDir {
    /// A directory not read yet.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            files: BTreeMap::new(),
            dir_lines: Vec::new(),
            allocations: Vec::new(),
            known: false,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings `store` up to date with the directory, decoding only the files that
    /// changed when that is enough. If the directory cannot be listed, the store is
    /// left as it is and the error returned.
    pub fn reload(&mut self, store: &mut Store) -> Result<Reread, SourceError> {
        let before = SystemTime::now();
        let paths = list_files(&self.dir)?;
        let seen: Vec<Seen> = (paths.iter())
            .map(|p| Seen::observe(p, before, self.files.get(p).map(|t| &t.seen)))
            .collect();
        if !self.known || !self.allocations.is_empty() {
            return Ok(self.full(store, paths, seen));
        }
        let listed: HashSet<&PathBuf> = paths.iter().collect();
        let removed: Vec<PathBuf> = (self.files.keys())
            .filter(|p| !listed.contains(p))
            .cloned()
            .collect();
        let mut changed = Vec::new();
        let mut changed_seen = Vec::new();
        for (path, now) in paths.iter().zip(&seen) {
            match self.files.get_mut(path) {
                Some(t) if t.seen.unchanged(now) => t.seen = now.record(),
                _ => {
                    changed.push(path.clone());
                    changed_seen.push(*now);
                }
            }
        }
        let touched = changed.iter().chain(&removed);
        if touched
            .clone()
            .any(|p| self.files.get(p).is_some_and(|t| t.read.entangled))
        {
            return Ok(self.full(store, paths, seen));
        }
        if changed.is_empty() && removed.is_empty() {
            return Ok(self.report(0, false));
        }

        let set = read_files(changed.clone());
        // New keys must not be defined by a file left as it is.
        let untouched: Vec<&FileRead> = (self.files.iter())
            .filter(|(p, _)| !changed.contains(p) && !removed.contains(p))
            .map(|(_, t)| &t.read)
            .collect();
        let collides = (set.read.iter().flat_map(|r| &r.keys))
            .any(|k| untouched.iter().any(|r| r.keys.binary_search(k).is_ok()));
        if collides || set.read.iter().any(|r| r.entangled) {
            return Ok(self.full(store, paths, seen));
        }

        // Objects that were in the touched files and are no longer: delete them.
        let now: HashSet<u64> = set
            .read
            .iter()
            .flat_map(|r| r.keys.iter().copied())
            .collect();
        let gone: HashSet<u64> = (touched.filter_map(|p| self.files.get(p)))
            .flat_map(|t| t.read.keys.iter().copied())
            .filter(|k| !now.contains(k))
            .collect();
        if !gone.is_empty() {
            delete_keys(store, &gone);
        }
        for path in &removed {
            self.files.remove(path);
        }
        let decoded = set.paths.len();
        self.absorb(store, set, changed_seen);
        Ok(self.report(decoded, false))
    }

    /// Reads the whole directory into `store`.
    fn full(&mut self, store: &mut Store, paths: Vec<PathBuf>, seen: Vec<Seen>) -> Reread {
        let mut set = read_files(paths);
        let objects = std::mem::take(&mut set.objects);
        let model = store.replace_all_owned(objects);
        self.files.clear();
        self.allocations = std::mem::take(&mut set.allocations);
        let decoded = set.paths.len();
        self.dir_lines = self.remember(set, seen, model);
        self.known = true;
        self.report(decoded, true)
    }

    /// Upserts the objects of `set` (the changed files) and records the files.
    fn absorb(&mut self, store: &mut Store, mut set: ManifestSet, seen: Vec<Seen>) {
        let mut model = Vec::new();
        for converted in std::mem::take(&mut set.objects.converted) {
            model.extend(store.apply(Change::Converted(Box::new(converted))));
        }
        // Every object here was read from one of these files: no line is untraced.
        let _untraced = self.remember(set, seen, model);
    }

    /// Records the files of `set` as `seen`, with their problem lines (`model`: the
    /// problems the store found in their objects); returns the lines traced to no
    /// file.
    fn remember(
        &mut self,
        set: ManifestSet,
        seen: Vec<Seen>,
        model: Vec<kpr_model::Problem>,
    ) -> Vec<String> {
        let mut lines = lines_by_file(&self.dir, &set, model);
        for (i, (path, (read, seen))) in (set.paths.into_iter())
            .zip(set.read.into_iter().zip(seen))
            .enumerate()
        {
            let lines = lines.remove(&Some(i)).unwrap_or_default();
            let seen = seen.record();
            self.files.insert(path, Tracked { seen, read, lines });
        }
        lines.remove(&None).unwrap_or_default()
    }

    fn report(&self, decoded: usize, full: bool) -> Reread {
        let mut problems: Vec<String> = (self.files.values())
            .flat_map(|t| t.lines.iter().cloned())
            .chain(self.dir_lines.iter().cloned())
            .collect();
        problems.sort();
        Reread {
            files: self.files.values().filter(|t| t.read.readable).count(),
            decoded,
            full,
            problems,
            allocations: self.allocations.clone(),
        }
    }
}

/// The problem lines of `set` (its source problems, then `model`'s, each prefixed with
/// where its object was read), by file index (`None`: not traced to a file).
fn lines_by_file(
    dir: &Path,
    set: &ManifestSet,
    model: Vec<kpr_model::Problem>,
) -> HashMap<Option<usize>, Vec<String>> {
    let by_name: HashMap<String, usize> = (set.paths.iter().enumerate())
        .map(|(i, p)| (p.display().to_string(), i))
        .collect();
    let mut lines: HashMap<Option<usize>, Vec<String>> = HashMap::new();
    for p in &set.problems {
        let file = by_name.get(&p.file).copied();
        lines.entry(file).or_default().push(p.to_string());
    }
    for p in model {
        let k = format!("{} {}", p.kind.as_str(), p.object);
        let file = set.origins.get(&k).map(|o| o.file);
        let line = match set.origin(&k) {
            Some(place) => format!("{place}: {p}"),
            None => format!("{}: {p}", dir.display()),
        };
        lines.entry(file).or_default().push(line);
    }
    lines
}

/// Deletes from `store` the Services, EndpointSlices and v1 Endpoints whose key
/// digest is in `gone`.
fn delete_keys(store: &mut Store, gone: &HashSet<u64>) {
    let kinds = [
        ObjectKind::Service,
        ObjectKind::EndpointSlice,
        ObjectKind::Endpoints,
    ];
    for kind in kinds {
        let names: Vec<NamespacedName> = (store.names(kind))
            .filter(|n| {
                gone.contains(&key_hash(&key(
                    kind.as_str(),
                    Some(&n.namespace),
                    Some(&n.name),
                )))
            })
            .cloned()
            .collect();
        for name in names {
            let change = match kind {
                ObjectKind::Service => Change::ServiceDelete(name),
                ObjectKind::EndpointSlice => Change::SliceDelete(name),
                _ => Change::EndpointsDelete(name),
            };
            store.apply(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file rewritten in place with the same size right after it was read can
    /// keep its stamp where file times are coarse (kernels before multigrain
    /// timestamps; this one gives the second write a new ctime, so the coarse
    /// clock is simulated by reusing the first stamp). The digest kept with a
    /// racy stamp still tells the contents apart.
    #[test]
    fn racy_stamps_are_backed_by_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "port: 80\n").unwrap();
        let recorded = Seen::observe(&path, SystemTime::now(), None).record();
        assert!(recorded.digest.is_some(), "a file written just now is racy");

        std::fs::write(&path, "port: 81\n").unwrap();
        let mut now = Seen::observe(&path, SystemTime::now(), Some(&recorded));
        now.stamp = recorded.stamp;
        assert!(!recorded.unchanged(&now), "same stamp, other content");

        std::fs::write(&path, "port: 80\n").unwrap();
        let mut now = Seen::observe(&path, SystemTime::now(), Some(&recorded));
        now.stamp = recorded.stamp;
        assert!(recorded.unchanged(&now), "same stamp, same content");

        // Once the change is old enough, the stamp alone is kept.
        let later = SystemTime::now() + Duration::from_secs(1);
        let settled = Seen::observe(&path, later, Some(&recorded)).record();
        assert!(settled.digest.is_none());
        let again = Seen::observe(&path, later, Some(&settled));
        assert!(settled.unchanged(&again) && again.digest.is_none());
    }
}
