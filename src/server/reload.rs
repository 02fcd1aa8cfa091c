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
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening and reading the files is reported too, also the reload's own reads: only
        // changes (and errors, which may hide one) call for a reload, else it would never stop.
        if event.as_ref().is_ok_and(|event| event.kind.is_access()) {
            return;
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Reloads counted by a reload that reads every file under `dir`, as the real ones do.
    fn counting(dir: PathBuf) -> (Arc<AtomicUsize>, Arc<dyn Fn() + Send + Sync>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        let reload = Arc::new(move || {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let _ = std::fs::read(entry.path());
            }
            counted.fetch_add(1, Ordering::SeqCst);
        });
        (count, reload)
    }

    async fn eventually(count: &AtomicUsize, at_least: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while count.load(Ordering::SeqCst) < at_least {
            assert!(tokio::time::Instant::now() < deadline, "no reload within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn one_change_is_one_reload_and_the_reloads_own_reads_start_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "{}").unwrap();
        let (count, reload) = counting(dir.path().to_path_buf());
        let stop = CancellationToken::new();
        spawn("test files", vec![dir.path().to_path_buf()], false, Duration::from_secs(3600), stop.clone(), reload);
        // Reading the files, as a client of them would, is no change either.
        let _ = std::fs::read(dir.path().join("a.json"));
        std::fs::write(dir.path().join("a.json"), "{\"changed\": true}").unwrap();
        eventually(&count, 1).await;
        // Ten debounce windows with nothing changed: the count stays where one change left it.
        tokio::time::sleep(DEBOUNCE * 10).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "reloads kept coming without a change");
        stop.cancel();
    }
}
