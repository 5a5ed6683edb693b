//! Watching a manifest directory: any change to a manifest file wakes the sync loop,
//! which re-reads the directory (the loop coalesces bursts, so no debouncing here).

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::dir::is_manifest_file;

/// Keeps the directory watch alive; dropping it stops the watch.
pub struct DirWatcher {
    _watcher: RecommendedWatcher,
}

/// Errors setting up the watch.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch manifest directory {path}")]
pub struct WatchError {
    /// The directory.
    pub path: PathBuf,
    /// The watcher's error.
    #[source]
    pub source: notify::Error,
}

/// Watches `dir`; a unit message is sent on `tx` after each change to a manifest file
/// (created, written, renamed or removed). Sends are non-blocking: one pending
/// notification is as good as many.
pub fn watch_dir(dir: &Path, tx: mpsc::Sender<()>) -> Result<DirWatcher, WatchError> {
    let handler = move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(ev) => {
                !matches!(ev.kind, notify::EventKind::Access(_))
                    && (ev.paths.is_empty() || ev.paths.iter().any(|p| is_manifest_file(p)))
            }
            // An error (e.g. event queue overflow) may hide changes: re-read.
            Err(_) => true,
        };
        if relevant {
            let _ = tx.try_send(());
        }
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(|source| WatchError {
        path: dir.to_path_buf(),
        source,
    })?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(DirWatcher { _watcher: watcher })
}
