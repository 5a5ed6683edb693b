//! Reading a whole manifest directory into one consistent set of objects.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kpr_model::{Converted, Objects};

use crate::alloc::{Taken, allocate_avoiding, needs_allocation};
use crate::manifest::{Located, Object, is_json, parse_json_file_each, parse_manifest_each};
use crate::problem::SourceProblem;

/// Errors that stop a directory from being read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The directory cannot be listed.
    #[error("manifest directory {path}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything read from a manifest directory.
#[derive(Debug, Default)]
pub struct ManifestSet {
    /// The objects, ready for [`kpr_model::Store::replace_all`].
    pub objects: Objects,
    /// ServiceCIDRs found (used for ClusterIP allocation).
    pub service_cidrs: Vec<IpNet>,
    /// Problems: each names the file and object; the rest was read.
    pub problems: Vec<SourceProblem>,
    /// ClusterIP / NodePort allocations made for Services written without them.
    pub allocations: Vec<String>,
    /// Where each object came from, by `Kind namespace/name` (see
    /// [`ManifestSet::origin`]), so model problems can be traced back to files.
    pub origins: HashMap<String, Origin>,
    /// The manifest files found, in the order read.
    pub paths: Vec<PathBuf>,
    /// What each file of `paths` held, for [`crate::TrackedDir`].
    pub(crate) read: Vec<FileRead>,
}

/// Where an object was read: a file of [`ManifestSet::paths`] and, in a
/// multi-document YAML file, the 1-based document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Index into [`ManifestSet::paths`].
    pub file: usize,
    /// The YAML document, if any.
    pub document: Option<usize>,
}

impl ManifestSet {
    /// Where the object `key` (`Kind namespace/name`, e.g. `Service default/web`) was
    /// read, as `file (document n)`.
    pub fn origin(&self, key: &str) -> Option<String> {
        Some(place(&self.paths, self.origins.get(key)?))
    }
}

/// What one file held, in the form re-reading needs: which objects, and whether it
/// holds anything that ties it to the rest of the directory.
#[derive(Debug, Default)]
pub(crate) struct FileRead {
    /// [`key_hash`] of each Service, EndpointSlice and v1 Endpoints, sorted.
    pub keys: Vec<u64>,
    /// Nodes, ServiceCIDRs, Services needing allocation, objects also defined in
    /// another file, or the file could not be read: changing such a file needs the
    /// whole directory read again.
    pub entangled: bool,
    /// The file could be opened.
    pub readable: bool,
}

/// An object read: as decoded, or already converted (EndpointSlices, Endpoints, and
/// Services that need no allocation, with what they hold).
enum Entry {
    Object(Object),
    Converted(Box<Converted>, Option<Taken>),
}

/// The first bytes of a file (enough to tell JSON from YAML).
fn read_start(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut start = Vec::with_capacity(4096);
    std::fs::File::open(path)?
        .take(4096)
        .read_to_end(&mut start)?;
    Ok(start)
}

/// True for files the directory source reads: `*.yaml`, `*.yml`, `*.json`, not hidden.
pub fn is_manifest_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
}

/// `Kind namespace/name` (`Kind name` for cluster-scoped kinds).
pub(crate) fn key(kind: &str, ns: Option<&str>, name: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{}", name.unwrap_or_default()),
        None => format!("{kind} {}", name.unwrap_or_default()),
    }
}

/// A 64-bit digest of a [`key`] (std's SipHash with fixed keys: stable within a
/// process, which is all re-reading needs). A collision can only make a re-read
/// treat two objects as one file's duplicate (it then reads everything) or delete
/// an object a full re-read restores.
pub(crate) fn key_hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The manifest files of `dir` (not recursive), in name order.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_manifest_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every manifest file of `dir` (not recursive, in name order). Unreadable or
/// broken files and objects are reported in [`ManifestSet::problems`] and skipped.
pub fn load_dir(dir: &Path) -> Result<ManifestSet, SourceError> {
    Ok(read_files(list_files(dir)?))
}

/// Reads `paths` in order as one set: later definitions of an object replace
/// earlier ones, and allocation avoids what every file's Services hold.
pub(crate) fn read_files(paths: Vec<PathBuf>) -> ManifestSet {
    let mut set = ManifestSet {
        read: (0..paths.len()).map(|_| FileRead::default()).collect(),
        ..ManifestSet::default()
    };
    // Later definitions of the same object replace earlier ones, as `kubectl apply`
    // of the directory would; the duplicate is reported.
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut objects: Vec<(usize, Entry)> = Vec::new();
    for (file, path) in paths.iter().enumerate() {
        let origin = path.display().to_string();
        // JSON is read from the file as a stream; YAML documents are read as text.
        let text = match read_start(path) {
            Ok(start) if is_json(&start) => Ok(None),
            Ok(_) => std::fs::read_to_string(path).map(Some),
            Err(e) => Err(e),
        };
        let text: Option<String> = match text {
            Ok(t) => t,
            Err(e) => {
                set.problems.push(SourceProblem::new(
                    &origin,
                    None,
                    format!("cannot read file: {e}; file skipped"),
                ));
                set.read[file].entangled = true;
                continue;
            }
        };
        set.read[file].readable = true;
        // Each object is taken as it is decoded (EndpointSlices and Endpoints
        // converted at once), so a file is never held decoded whole.
        let problems = &mut set.problems;
        let origins = &mut set.origins;
        let read = &mut set.read;
        let mut take = |located: Located<Object>| {
            let (kind, meta) = match &located.object {
                Object::Service(o) => ("Service", &o.metadata),
                Object::EndpointSlice(o) => ("EndpointSlice", &o.metadata),
                Object::Endpoints(o) => ("Endpoints", &o.metadata),
                Object::Node(o) => ("Node", &o.metadata),
                Object::ServiceCidr(o) => ("ServiceCIDR", &o.metadata),
            };
            let namespaced = !matches!(kind, "Node" | "ServiceCIDR");
            let ns = namespaced.then(|| meta.namespace.as_deref().unwrap_or("default"));
            let k = key(kind, ns, meta.name.as_deref());
            let entry = match located.object {
                Object::EndpointSlice(s) => Entry::Converted(Box::new(Converted::slice(&s)), None),
                Object::Endpoints(e) => Entry::Converted(Box::new(Converted::endpoints(&e)), None),
                // A Service needing no allocation is kept converted too, with what
                // it holds (allocation for the others must avoid it).
                Object::Service(s) if !needs_allocation(&s) => {
                    let mut taken = Taken::default();
                    taken.add(&s);
                    Entry::Converted(Box::new(Converted::service(&s)), Some(taken))
                }
                other => Entry::Object(other),
            };
            if matches!(entry, Entry::Object(_)) {
                read[file].entangled = true;
            } else {
                read[file].keys.push(key_hash(&k));
            }
            if let Some(&i) = index.get(&k) {
                let (earlier, _) = objects[i];
                problems.push(SourceProblem::new(
                    &located.file,
                    located.document,
                    format!(
                        "{k} is also defined in {}; this definition wins",
                        origins
                            .get(&k)
                            .map_or_else(|| "another file".to_string(), |o| place(&paths, o))
                    ),
                ));
                read[file].entangled = true;
                read[earlier].entangled = true;
                objects[i] = (file, entry);
            } else {
                index.insert(k.clone(), objects.len());
                objects.push((file, entry));
            }
            origins.insert(
                k,
                Origin {
                    file,
                    document: located.document,
                },
            );
        };
        let parsed = match &text {
            Some(text) => parse_manifest_each(text, &origin, &mut take),
            None => parse_json_file_each(path, &origin, &mut take),
        };
        // Drop the text before the next file is read.
        drop(text);
        set.problems.extend(parsed.problems);
    }
    for read in &mut set.read {
        read.keys.sort_unstable();
        read.keys.dedup();
    }

    let mut taken = Taken::default();
    for (_, entry) in objects {
        let object = match entry {
            Entry::Converted(c, held) => {
                taken.extend(held.unwrap_or_default());
                set.objects.converted.push(*c);
                continue;
            }
            Entry::Object(object) => object,
        };
        match object {
            Object::Service(s) => set.objects.services.push(*s),
            Object::EndpointSlice(s) => set.objects.slices.push(*s),
            Object::Endpoints(e) => set.objects.endpoints.push(*e),
            Object::Node(n) => set.objects.nodes.push(*n),
            Object::ServiceCidr(c) => {
                // Ranges for allocation here; the model reports bad ones.
                set.service_cidrs.extend(
                    c.spec
                        .iter()
                        .flat_map(|s| s.cidrs.iter().flatten())
                        .filter_map(|cidr| cidr.parse::<IpNet>().ok()),
                );
                set.objects.service_cidrs.push(*c);
            }
        }
    }
    set.allocations = allocate_avoiding(&mut set.objects.services, taken, &set.service_cidrs);
    set.paths = paths;
    set
}

/// `file (document n)` of an origin.
fn place(paths: &[PathBuf], origin: &Origin) -> String {
    let file = paths[origin.file].display();
    match origin.document {
        Some(d) => format!("{file} (document {d})"),
        None => file.to_string(),
    }
}
