//! Watching a manifest directory: any change to a manifest file wakes the sync loop,
//! which re-reads the directory (the loop coalesces bursts, so no debouncing here).

use std::path::{Path, PathBuf};

use notify::event::{EventKind, ModifyKind, RenameMode};
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
                !matches!(
                    ev.kind,
                    // Access: reads and closes change nothing. A rename inside the
                    // directory also arrives as its two halves (From, To), each
                    // judged on its own path; the combined event would wake the
                    // loop a second time for the same change, and a second sync
                    // after the first is wasted work at best.
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Name(RenameMode::Both))
                ) && (ev.paths.is_empty() || ev.paths.iter().any(|p| is_manifest_file(p)))
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Wake-ups received within `quiet` of the last one (bounded to 5 s in all).
    fn wakes(rx: &mut mpsc::Receiver<()>, quiet: Duration) -> usize {
        let (mut n, mut last) = (0, Instant::now());
        let end = Instant::now() + Duration::from_secs(5);
        while last.elapsed() < quiet && Instant::now() < end {
            if rx.try_recv().is_ok() {
                n += 1;
                last = Instant::now();
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        n
    }

    #[test]
    fn one_wake_per_change_and_none_for_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let _w = watch_dir(dir.path(), tx).unwrap();
        let quiet = Duration::from_millis(300);

        // Atomic replace, the way kubectl-style tools and our tests write: the
        // temporary file is hidden, only the rename onto a manifest counts, once.
        let tmp = dir.path().join(".svc.yaml.tmp");
        std::fs::write(&tmp, "kind: Service\n").unwrap();
        std::fs::rename(&tmp, dir.path().join("svc.yaml")).unwrap();
        assert_eq!(wakes(&mut rx, quiet), 1, "rename onto svc.yaml");

        // Files that are not manifests wake nothing.
        std::fs::write(dir.path().join(".swap"), "x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert_eq!(wakes(&mut rx, quiet), 0, "hidden and non-manifest files");

        // Renaming a manifest away and removing one are changes.
        std::fs::rename(dir.path().join("svc.yaml"), dir.path().join("svc.yaml.bak")).unwrap();
        assert_eq!(wakes(&mut rx, quiet), 1, "rename away from svc.yaml");
        std::fs::write(dir.path().join("b.json"), "{}").unwrap();
        assert!(wakes(&mut rx, quiet) >= 1, "new b.json");
        std::fs::remove_file(dir.path().join("b.json")).unwrap();
        assert_eq!(wakes(&mut rx, quiet), 1, "b.json removed");
    }
}
