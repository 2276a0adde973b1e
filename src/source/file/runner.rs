//! The tailer's thread: inotify events and rescans drive it until shutdown; its
//! sink is the producer.
//!
//! State: the thread owns its `Tail` (tailer.rs), the inotify watcher and the
//! directories it watches. Callers: the agent, through [`spawn`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::FileConfig;
use crate::metrics::Metrics;
use crate::producer::{Checkpoint, Pace, ProduceError, Producer};
use crate::record::UserRecord;

use super::progress::Files;
use super::tailer::Tail;
use super::{error_chain, FileError, Gate, Receipt, Sink, EVENT_CHANNEL, KIND, RETRY};

/// While delivery keeps up, a file is read at its pace (the file itself holds what
/// is not read yet, so copying it ahead into the spool would only cost); when
/// delivery stalls (an outage), the file is read into the spool, where rotation and
/// deletion cannot reach it.
const PACE: Pace = Pace {
    handover_wait: Duration::from_millis(500),
    read_ahead_bytes: 64 << 20,
    stalled_after: Duration::from_secs(5),
};

/// The producer as a sink, called from the tailer thread.
#[derive(Clone)]
struct ProducerSink {
    producer: Producer,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
}

impl Sink for ProducerSink {
    fn spool(
        &mut self,
        stream: &str,
        records: Vec<UserRecord>,
        checkpoint: &Checkpoint,
    ) -> Result<Option<Receipt>, ProduceError> {
        let (producer, shutdown) = (&self.producer, &self.shutdown);
        // A batch's receipt tells when its records have left the spool
        // (`shardline files`); a checkpoint alone has nothing to wait for.
        let (tx, rx) = if records.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        self.runtime.block_on(async {
            // A spool that stays full must not hold up the shutdown. Dropping the
            // write leaves the checkpoint where it was: the lines are read again at
            // the next start.
            tokio::select! {
                biased;
                r = producer.spool_batch(stream, KIND, records, tx, Some(checkpoint), Some(PACE)) => r,
                _ = shutdown.cancelled() => Err(ProduceError::Stopped),
            }
        })?;
        Ok(rx)
    }

    fn earlier_runs(&mut self, stream: &str) -> Option<Gate> {
        let done = self.producer.earlier_runs(stream)?;
        Some(Arc::new(done))
    }

    fn checkpoints(&mut self, stream: &str) -> Result<Vec<Checkpoint>, ProduceError> {
        self.producer.checkpoints(stream)
    }

    fn remove_checkpoint(&mut self, stream: &str, name: &[u8]) -> Result<(), ProduceError> {
        self.producer.remove_checkpoint(stream, name)
    }
}

/// Waits for `limit` or a stop; true if the source is to stop.
fn wait_or_stop(rx: &mpsc::Receiver<Wake>, shutdown: &CancellationToken, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !shutdown.is_cancelled() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Err(RecvTimeoutError::Disconnected) = rx.recv_timeout(left) {
            std::thread::sleep(left);
        }
    }
    true
}

/// A message to the tailer thread.
enum Wake {
    Paths(Vec<PathBuf>),
    Rescan,
    Stop,
}

/// Starts the file source: one blocking thread, tracked by `tracker`, that tails
/// every file of `files` until `shutdown`.
pub(crate) fn spawn(
    files: Vec<FileConfig>,
    producer: Producer,
    progress: Files,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let (tx, rx) = mpsc::sync_channel(EVENT_CHANNEL);
    let overflow = Arc::new(AtomicBool::new(false));
    let watcher = watcher(tx.clone(), overflow.clone());
    let stop = tx.clone();
    let token = shutdown.clone();
    tracker.spawn(async move {
        token.cancelled().await;
        // If the queue is full the thread is awake anyway and sees the token.
        let _ = stop.try_send(Wake::Stop);
    });
    let runtime = tokio::runtime::Handle::current();
    tracker.spawn_blocking(move || {
        let sink = ProducerSink {
            producer: producer.clone(),
            runtime,
            shutdown: shutdown.clone(),
        };
        let events = Events {
            watcher,
            rx,
            overflow,
        };
        run(
            files,
            sink,
            producer.metrics().clone(),
            progress,
            events,
            shutdown,
        );
    });
}

fn watcher(tx: SyncSender<Wake>, overflow: Arc<AtomicBool>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, Watcher as _};
    let handler = move |event: notify::Result<notify::Event>| {
        let message = match event {
            Ok(e) if matches!(e.kind, EventKind::Create(notify::event::CreateKind::Folder)) => {
                Wake::Rescan
            }
            Ok(e) if matches!(e.kind, EventKind::Access(_)) => return,
            Ok(e) => Wake::Paths(e.paths),
            // The kernel queue overflowed, or similar: look at everything.
            Err(_) => Wake::Rescan,
        };
        if let Err(TrySendError::Full(_)) = tx.try_send(message) {
            overflow.store(true, Ordering::Relaxed);
        }
    };
    match notify::RecommendedWatcher::new(handler, notify::Config::default()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot watch files with inotify; relying on the periodic rescan");
            None
        }
    }
}

/// What wakes the tailer thread: inotify's watcher and the channel it (and the
/// stop) send on, and whether events were dropped.
struct Events {
    watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::Receiver<Wake>,
    overflow: Arc<AtomicBool>,
}

/// The tailer thread.
fn run(
    files: Vec<FileConfig>,
    sink: ProducerSink,
    metrics: Metrics,
    progress: Files,
    events: Events,
    shutdown: CancellationToken,
) {
    let Events {
        watcher,
        rx,
        overflow,
    } = events;
    let interval = files
        .iter()
        .map(|f| f.rescan_interval)
        .min()
        .unwrap_or(Duration::from_secs(1));
    let mut watches = Watches {
        watcher,
        watched: HashSet::new(),
    };
    let Some(mut tail) = start(&files, &sink, &metrics, &progress, &rx, &shutdown) else {
        return;
    };
    watches.add(&tail);
    tracing::info!(files = tail.open_files(), "File source started");
    let mut next_rescan = Instant::now() + interval;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let more = match tail.service() {
            Ok(more) => more,
            Err(FileError::Stopped) => break,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "File source failed; retrying");
                false
            }
        };
        let deadline = tail
            .next_deadline()
            .map_or(next_rescan, |d| d.min(next_rescan));
        let timeout = if more {
            Duration::ZERO
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let (paths, rescan) = wait_for_events(&rx, timeout);
        if shutdown.is_cancelled() {
            break;
        }
        let result = (|| {
            if rescan || overflow.swap(false, Ordering::Relaxed) || Instant::now() >= next_rescan {
                tail.rescan()?;
                next_rescan = Instant::now() + interval;
            }
            for p in &paths {
                tail.changed(p)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(FileError::Stopped) => break,
            Err(e) => tracing::error!(error = %error_chain(&e), "File source failed; retrying"),
        }
        watches.add(&tail);
    }
    tracing::info!("File source stopped");
}

/// Starts the tailer, retrying until it starts or the source stops.
fn start(
    files: &[FileConfig],
    sink: &ProducerSink,
    metrics: &Metrics,
    progress: &Files,
    rx: &mpsc::Receiver<Wake>,
    shutdown: &CancellationToken,
) -> Option<Tail<ProducerSink>> {
    loop {
        match Tail::start_with(
            files.to_vec(),
            sink.clone(),
            metrics.clone(),
            progress.clone(),
        ) {
            Ok(t) => return Some(t),
            Err(FileError::Stopped) => return None,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "File source cannot start; retrying");
                if wait_or_stop(rx, shutdown, RETRY) {
                    return None;
                }
            }
        }
    }
}

/// Waits up to `timeout` for events, then takes every one queued: the paths that
/// changed, and whether a rescan was asked for.
fn wait_for_events(rx: &mpsc::Receiver<Wake>, timeout: Duration) -> (HashSet<PathBuf>, bool) {
    let mut paths: HashSet<PathBuf> = HashSet::new();
    let mut rescan = false;
    let mut take = |w: Wake| match w {
        Wake::Paths(p) => paths.extend(p),
        Wake::Rescan => rescan = true,
        Wake::Stop => {}
    };
    match rx.recv_timeout(timeout) {
        Ok(w) => take(w),
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
    }
    while let Ok(w) = rx.try_recv() {
        take(w);
    }
    (paths, rescan)
}

/// The directories inotify watches (each added once, when it exists).
struct Watches {
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
}

impl Watches {
    /// Watches the directories the tailer needs that are not watched yet.
    fn add(&mut self, tail: &Tail<ProducerSink>) {
        use notify::Watcher as _;
        let Some(w) = &mut self.watcher else { return };
        for (dir, recursive) in tail.watch_dirs() {
            if self.watched.contains(&dir) || !dir.is_dir() {
                continue;
            }
            let mode = if recursive {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            match w.watch(&dir, mode) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch a directory; relying on the periodic rescan")
                }
            }
        }
    }
}
