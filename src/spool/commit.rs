//! The group commit: one thread per spool makes every stream's writes and acks
//! durable, then publishes what it covered.
//!
//! [`CommitState`] is the commit thread's own state (the wake-up, the durable
//! watermark it publishes, the last commit's time); each stream's part of a
//! commit belongs to the stream (`stream/commit.rs`). Started by the spool's
//! open; asked for a commit by a wait for durability (a durability ack) and by
//! the space when too much is written unsynced, and run once more by the last
//! handle's drop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::index;
use super::{now_ms, SpoolInner, Store, StreamSpool};

/// The flusher's side of the group commit.
pub(super) struct CommitState {
    /// Set to ask for a commit now; the flusher waits on `wake`.
    pub(super) asked: Mutex<bool>,
    pub(super) wake: Condvar,
    pub(super) stop: AtomicBool,
    pub(super) interval: Duration,
    /// Writes covered by the last commit, or the error that stopped it.
    pub(super) durable: watch::Sender<Result<u64, String>>,
    /// The flusher thread, joined by the last handle's drop.
    pub(super) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// When the last commit ended (Unix milliseconds), for the watchdog.
    pub(super) last_commit_ms: AtomicU64,
    /// Held through a commit: one at a time (the commit thread's, the last one
    /// of a drop, a migration's).
    pub(super) running: Mutex<()>,
    /// Set by the power-cut tests: the drop makes no last commit.
    #[cfg(test)]
    pub(super) crashed: AtomicBool,
}

impl CommitState {
    pub(super) fn ask(&self) {
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
    }
}

impl Drop for SpoolInner {
    fn drop(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        store.commit.stop.store(true, Ordering::Relaxed);
        store.commit.ask();
        #[cfg(test)]
        let crashed = store.commit.crashed.load(Ordering::Relaxed);
        #[cfg(not(test))]
        let crashed = false;
        // A last commit: writes made before the drop are durable after it.
        if !crashed {
            commit_all(self, store);
        }
        let handle = store
            .commit
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

pub(super) fn open_streams(inner: &SpoolInner) -> Vec<StreamSpool> {
    inner
        .streams
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

/// One group commit over every stream. Returns whether it went through.
pub(super) fn commit_all(inner: &SpoolInner, store: &Store) -> bool {
    let _one = store
        .commit
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let space = &inner.space;
    // Written before this point is covered by this commit's syncs.
    let unsynced = space.unsynced.load(Ordering::Acquire);
    let covering = space.writes.load(Ordering::Acquire);
    let streams = open_streams(inner);
    let mut ok = true;
    let mut freed = 0u64;
    for (i, s) in streams.iter().enumerate() {
        let Some(disk) = &s.inner.disk else { continue };
        // Copying forward is rarer work: one stream per commit, in turn.
        let copy = (covering as usize + i).is_multiple_of(streams.len().max(1));
        let c = disk.collect(&s.inner.name, space, copy);
        let done = disk.sync(&c).and_then(|()| disk.finish(&s.inner.name, c));
        match done {
            Ok((bytes, catalog)) => {
                freed += bytes;
                if let (Some(index), false) = (&store.index, catalog.is_empty()) {
                    let removed = catalog
                        .iter()
                        .any(|e| matches!(e, index::CatalogEvent::Removed(_)));
                    let applied = index.apply(&s.inner.name, &catalog).and_then(|()| {
                        if removed {
                            index.flush()
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = applied {
                        tracing::warn!(stream = %s.inner.name, error = %e, "Updating the spool index failed");
                    }
                }
            }
            Err(e) => {
                ok = false;
                disk.mark_dirty();
                if !e.is_full() {
                    tracing::error!(stream = %s.inner.name, error = %e, "The spool's group commit failed");
                    let _ = store.commit.durable.send_replace(Err(e.to_string()));
                }
            }
        }
    }
    if let Ok(free) = store.storage.free_bytes(&store.dir) {
        space.disk_free.store(free, Ordering::Relaxed);
    }
    if freed > 0 {
        space.disk_bytes.fetch_sub(freed, Ordering::AcqRel);
        space.freed.notify_waiters();
    } else if space.disk_free.load(Ordering::Relaxed) > space.min_free_bytes {
        // Writers waiting for a full disk may go again.
        space.freed.notify_waiters();
    }
    if ok {
        space.unsynced.fetch_sub(unsynced, Ordering::AcqRel);
        store.commit.durable.send_if_modified(|d| match d {
            Ok(v) if *v >= covering => false,
            _ => {
                *d = Ok(covering);
                true
            }
        });
        store
            .commit
            .last_commit_ms
            .store(now_ms(), Ordering::Relaxed);
    }
    ok
}

/// The flusher thread: a commit every interval, or at once when asked.
pub(super) fn flusher(spool: std::sync::Weak<SpoolInner>, commit: Arc<CommitState>) {
    loop {
        {
            let asked = commit.asked.lock().unwrap_or_else(|e| e.into_inner());
            let (mut asked, _) = commit
                .wake
                .wait_timeout_while(asked, commit.interval, |a| {
                    !*a && !commit.stop.load(Ordering::Relaxed)
                })
                .unwrap_or_else(|e| e.into_inner());
            *asked = false;
        }
        if commit.stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(inner) = spool.upgrade() else {
            return;
        };
        if let Some(store) = &inner.store {
            commit_all(&inner, store);
        }
    }
}
