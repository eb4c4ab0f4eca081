//! Keeping the configuration file in force: a `notify` watch of its folder, SIGHUP, and a slow poll
//! as a backstop. Every trigger ends in [`Live::reload`], which ignores text it has already applied.
//!
//! The folder is watched rather than the file, because editors replace the file (write a temporary,
//! rename it over) and Kubernetes swaps a `..data` symlink: both are events in the folder, while a
//! watch on the old file would see nothing more.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
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
                _ = poll.tick() => live.reload("poll", false).await,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    live.reload("sighup", true).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    });
    watcher
}

/// A watch on the config file's folder (and, for a symlinked file, on its target's folder).
fn folder_watcher(live: &Live, tx: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
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
        path.parent().map(std::path::Path::to_path_buf),
        std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(std::path::Path::to_path_buf)),
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
