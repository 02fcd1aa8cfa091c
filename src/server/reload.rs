//! Re-reads files when they change: a directory watch (inotify) for promptness, and a periodic
//! re-read as a safety net for filesystems and mounts where events go missing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Events arriving within this window are handled by one reload.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Calls `reload` (on a blocking thread) after changes under `dirs` and every `interval`,
/// until `stop` is cancelled.
pub fn spawn(
    what: &'static str,
    dirs: Vec<PathBuf>,
    recursive: bool,
    interval: Duration,
    stop: CancellationToken,
    reload: Arc<dyn Fn() + Send + Sync>,
) {
    let (events_tx, mut events) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        // A full channel already holds a pending reload.
        let _ = events_tx.try_send(());
    });
    let watcher = match watcher {
        Ok(mut watcher) => {
            let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
            for dir in &dirs {
                if let Err(error) = watcher.watch(dir, mode) {
                    warn!(%error, dir = %dir.display(), what, "cannot watch directory; relying on periodic re-reads");
                }
            }
            Some(watcher)
        }
        Err(error) => {
            warn!(%error, what, "file watching unavailable; relying on periodic re-reads");
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = events.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while events.try_recv().is_ok() {}
                }
                _ = ticks.tick() => {}
            }
            let reload = Arc::clone(&reload);
            if let Err(error) = tokio::task::spawn_blocking(move || reload()).await {
                warn!(%error, what, "reload task failed");
            }
        }
    });
}
