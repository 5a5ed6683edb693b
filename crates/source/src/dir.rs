//! Reading a whole manifest directory into one consistent set of objects.

use std::collections::HashMap;
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
    /// Where each object came from, `Kind namespace/name` -> `file (document n)`, so
    /// model problems can be traced back to files.
    pub origins: HashMap<String, String>,
    /// Manifest files read.
    pub files: usize,
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

fn key(kind: &str, ns: Option<&str>, name: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{}", name.unwrap_or_default()),
        None => format!("{kind} {}", name.unwrap_or_default()),
    }
}

/// Reads every manifest file of `dir` (not recursive, in name order). Unreadable or
/// broken files and objects are reported in [`ManifestSet::problems`] and skipped.
pub fn load_dir(dir: &Path) -> Result<ManifestSet, SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_manifest_file(p))
        .collect();
    files.sort();

    let mut set = ManifestSet::default();
    // Later definitions of the same object replace earlier ones, as `kubectl apply`
    // of the directory would; the duplicate is reported.
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut objects: Vec<(String, Entry)> = Vec::new();
    for path in &files {
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
                continue;
            }
        };
        set.files += 1;
        // Each object is taken as it is decoded (EndpointSlices and Endpoints
        // converted at once), so a file is never held decoded whole.
        let problems = &mut set.problems;
        let origins = &mut set.origins;
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
            let place = match located.document {
                Some(d) => format!("{} (document {d})", located.file),
                None => located.file.clone(),
            };
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
            if let Some(&i) = index.get(&k) {
                problems.push(SourceProblem::new(
                    &located.file,
                    located.document,
                    format!(
                        "{k} is also defined in {}; this definition wins",
                        objects[i].0
                    ),
                ));
                objects[i] = (place.clone(), entry);
            } else {
                index.insert(k.clone(), objects.len());
                objects.push((place.clone(), entry));
            }
            origins.insert(k, place);
        };
        let parsed = match &text {
            Some(text) => parse_manifest_each(text, &origin, &mut take),
            None => parse_json_file_each(path, &origin, &mut take),
        };
        // Drop the text before the next file is read.
        drop(text);
        set.problems.extend(parsed.problems);
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
    Ok(set)
}
