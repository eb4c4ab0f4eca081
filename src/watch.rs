//! Keeping the configuration file in force: a `notify` watch of its folder, SIGHUP, and a slow poll
//! as a backstop. Every trigger ends in [`Live::reload`], which ignores text it has already applied.
//!
//! The folder is watched rather than the file, because editors replace the file (write a temporary,
//! rename it over) and Kubernetes swaps a `..data` symlink: both are events in the folder, while a
//! watch on the old file would see nothing more.
//!
//! Only events that can change the configuration count (SPEC §8): a change to the config file's
//! name, to `..data` beside it, or to the symlink target's name in its own folder; never another
//! file of the folder (a log file there would trigger itself), and never an access event (every
//! read of the config, keyswap's own included, makes one: reacting to them re-read the file in a
//! loop). The poll only `stat`s the file and reads it when that changed.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::live::Live;

/// Events come in bursts (write, chmod, rename); wait this long for the burst to end.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A backstop for events the kernel dropped or a watched folder that was itself replaced.
const POLL: Duration = Duration::from_secs(2);

/// Starts watching; the returned watcher must be kept alive for as long as the watch should run.
pub fn spawn(live: Arc<Live>, mut shutdown: watch::Receiver<bool>) -> Option<RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = folder_watcher(&live, tx);
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    live.reload("watch", false).await;
                }
                _ = poll.tick() => live.poll().await,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    live.reload("sighup", true).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    });
    watcher
}

/// The Kubernetes ConfigMap/Secret volume link swapped atomically on every update.
const DATA_LINK: &str = "..data";

/// The names in the watched folders whose events may mean a new configuration.
fn relevant_names(path: &Path) -> Vec<OsString> {
    let mut names = vec![OsString::from(DATA_LINK)];
    names.extend(path.file_name().map(OsStr::to_os_string));
    if let Some(target) = std::fs::canonicalize(path)
        .ok()
        .and_then(|t| t.file_name().map(OsStr::to_os_string))
    {
        names.push(target);
    }
    names
}

/// Whether `event` may have changed the configuration: not an access (a read, an open, a close
/// without writing, an atime update), and about one of `names`. A close after writing counts: it
/// is the moment a slow writer is done. A queue overflow counts: what it dropped is unknown.
fn is_relevant(event: &notify::Event, names: &[OsString]) -> bool {
    if event.need_rescan() {
        return true;
    }
    let reads_only = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => true,
        _ => false,
    };
    !reads_only
        && event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
}

/// A watch on the config file's folder (and, for a symlinked file, on its target's folder).
fn folder_watcher(live: &Live, tx: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let names = relevant_names(live.path());
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Errors are left to the poll.
            if event.is_ok_and(|e| is_relevant(&e, &names)) {
                let _ = tx.send(());
            }
        }) {
            Ok(watcher) => watcher,
            Err(e) => {
                warn!(error = %e, "cannot watch the configuration file; polling only");
                return None;
            }
        };
    let path = live.path();
    let folders = [
        path.parent().map(Path::to_path_buf),
        std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    ];
    for folder in folders.into_iter().flatten() {
        let folder = if folder.as_os_str().is_empty() {
            std::path::PathBuf::from(".")
        } else {
            folder
        };
        match watcher.watch(&folder, RecursiveMode::NonRecursive) {
            Ok(()) => debug!(folder = %folder.display(), "watching"),
            Err(e) => debug!(folder = %folder.display(), error = %e, "cannot watch folder"),
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, RenameMode};
    use notify::{Event, EventKind};

    use super::*;

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        paths
            .iter()
            .fold(Event::new(kind), |e, p| e.add_path(p.into()))
    }

    #[test]
    fn only_changes_to_the_config_or_its_data_link_count() {
        let names = relevant_names(Path::new("/etc/keyswap/keyswap.toml"));
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        assert!(is_relevant(
            &event(write, &["/etc/keyswap/keyswap.toml"]),
            &names
        ));
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(is_relevant(
            &event(
                rename,
                &[
                    "/etc/keyswap/.keyswap.toml.swp",
                    "/etc/keyswap/keyswap.toml"
                ]
            ),
            &names
        ));
        assert!(is_relevant(
            &event(rename, &["/etc/keyswap/..data_tmp", "/etc/keyswap/..data"]),
            &names
        ));
        assert!(is_relevant(
            &event(
                EventKind::Create(CreateKind::File),
                &["/etc/keyswap/keyswap.toml"]
            ),
            &names
        ));
        // Another file of the folder, and reads of the config itself, do not.
        assert!(!is_relevant(
            &event(write, &["/etc/keyswap/keyswap.log"]),
            &names
        ));
        for access in [
            AccessKind::Read,
            AccessKind::Open(notify::event::AccessMode::Any),
            AccessKind::Close(notify::event::AccessMode::Read),
        ] {
            assert!(!is_relevant(
                &event(EventKind::Access(access), &["/etc/keyswap/keyswap.toml"]),
                &names
            ));
        }
        let closed_after_writing = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(is_relevant(
            &event(closed_after_writing, &["/etc/keyswap/keyswap.toml"]),
            &names
        ));
        let atime = EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime));
        assert!(!is_relevant(
            &event(atime, &["/etc/keyswap/keyswap.toml"]),
            &names
        ));
    }
}
