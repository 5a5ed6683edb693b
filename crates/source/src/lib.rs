//! Sources of Kubernetes objects for kube-proxy-rs.
//!
//! The manifest-directory source reads Services, EndpointSlices, v1 Endpoints, Nodes
//! and ServiceCIDRs from YAML/JSON files (multi-document, `List` kinds), reports each
//! broken file or object in one line and keeps the rest, fills in the allocations the
//! API server would make, and watches the directory for changes.

pub mod alloc;
pub mod dir;
mod json;
pub mod manifest;
pub mod problem;
pub mod tracked;
pub mod watch;

pub use dir::{ManifestSet, Origin, SourceError, load_dir};
pub use manifest::{
    Located, Object, Parsed, is_json, parse_json_file_each, parse_manifest, parse_manifest_each,
};
pub use problem::SourceProblem;
pub use tracked::{Reread, TrackedDir};
pub use watch::{DirWatcher, watch_dir};
