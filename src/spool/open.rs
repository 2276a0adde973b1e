//! Opening a spool: the format file, a 0.1 directory's migration, the index,
//! each stream's recovery, and the commit thread.
//!
//! Owns no state of its own: it builds the [`Spool`] (its streams, the sled
//! index, the commit thread) that then owns everything. Called through
//! [`Spool::open`] by the producer at start-up, and by tests and tools through
//! [`open_at`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::commit::{flusher, CommitState};
use super::format::{open_error, write_format};
use super::index::Index;
use super::legacy;
use super::lock::SpoolLock;
use super::space::{new_space, segment_bytes};
use super::storage::{self, Fs, Storage};
use super::stream;
use super::{
    now_ms, Spool, SpoolError, SpoolInner, SpoolOptions, Store, StreamInner, StreamSpool,
    FORMAT_FILE, FORMAT_TEXT,
};

impl Spool {
    /// Opens (or creates) the spool: migrates a 0.1 directory, reads segment
    /// footers, applies acks, and starts the flusher thread.
    pub fn open(options: &SpoolOptions) -> Result<Spool, SpoolError> {
        match &options.dir {
            None => Ok(Spool::memory(options)),
            Some(dir) => {
                // Before anything in the directory is read, moved or created.
                let lock = SpoolLock::acquire(dir)?;
                let spool = Spool::open_on(Arc::new(Fs), dir, options, true)?;
                let _ = spool.inner.lock.set(lock);
                Ok(spool)
            }
        }
    }

    pub(super) fn memory(options: &SpoolOptions) -> Spool {
        Spool {
            inner: Arc::new(SpoolInner {
                store: None,
                space: Arc::new(new_space(options)),
                streams: Mutex::new(HashMap::new()),
                lock: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Opens the spool on a storage layer; `with_index` opens the sled index
    /// (on the real filesystem only: sled does not write through `storage`).
    pub(super) fn open_on(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: &SpoolOptions,
        with_index: bool,
    ) -> Result<Spool, SpoolError> {
        let open_err = |source| open_error(dir, source);
        storage.create_dir_all(dir).map_err(open_err)?;
        let real = storage.exists(&dir.join("conf")) && storage.exists(&dir.join("db"));
        let format = dir.join(FORMAT_FILE);
        if storage.exists(&format) {
            let f = storage.open(&format, false).map_err(open_err)?;
            let mut text = vec![0u8; f.len().map_err(open_err)?.min(256) as usize];
            f.read_at(0, &mut text).map_err(open_err)?;
            let text = String::from_utf8_lossy(&text);
            if text != FORMAT_TEXT {
                let version = text
                    .strip_prefix("shardline-spool ")
                    .and_then(|v| v.trim().parse::<u8>().ok())
                    .unwrap_or(0);
                return Err(SpoolError::Version {
                    path: format,
                    version,
                });
            }
            if real {
                // 0.1 ran here again after an upgrade: its records are added
                // (never deleted unread).
                legacy::migrate(dir, options, legacy::Target::Beside)?;
            }
        } else if real {
            legacy::migrate(dir, options, legacy::Target::Fresh)?;
        } else {
            write_format(&*storage, dir).map_err(open_err)?;
        }
        Spool::open_layout_with(storage, dir, options, with_index)
    }

    /// Opens the current layout (after the format check or the migration).
    pub(super) fn open_layout(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: &SpoolOptions,
    ) -> Result<Spool, SpoolError> {
        Spool::open_layout_with(storage, dir, options, true)
    }

    fn open_layout_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: &SpoolOptions,
        with_index: bool,
    ) -> Result<Spool, SpoolError> {
        let open_err = |source| open_error(dir, source);
        let damaged = dir.join("damaged");
        // The index: moved aside and rebuilt if it cannot be opened.
        let index = if with_index {
            open_index(dir, options.cache_capacity_bytes)
        } else {
            None
        };
        let space = Arc::new(new_space(options));
        let free = storage.free_bytes(dir).unwrap_or(u64::MAX / 2);
        space.disk_free.store(free, Ordering::Relaxed);
        let (durable, _) = watch::channel(Ok(0));
        let commit = Arc::new(CommitState {
            asked: Mutex::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            interval: Duration::from_millis(options.flush_interval_ms.max(1)),
            durable,
            thread: Mutex::new(None),
            last_commit_ms: AtomicU64::new(now_ms()),
            running: Mutex::new(()),
            #[cfg(test)]
            crashed: AtomicBool::new(false),
        });
        let _ = space.commit.set(commit.clone());
        let segment_bytes = segment_bytes(options);
        let spool = Spool {
            inner: Arc::new(SpoolInner {
                store: Some(Store {
                    dir: dir.to_owned(),
                    storage: storage.clone(),
                    index,
                    segment_bytes,
                    commit: commit.clone(),
                }),
                space,
                streams: Mutex::new(HashMap::new()),
                lock: std::sync::OnceLock::new(),
            }),
        };
        let streams_dir = dir.join("streams");
        storage::create_dir_durable(&*storage, &streams_dir).map_err(open_err)?;
        // The entries of `streams/` and sled's `index/` in the root: durable before
        // any commit reports a record so.
        storage.sync_dir(dir).map_err(open_err)?;
        for name in storage.list(&streams_dir).map_err(open_err)? {
            match stream::stream_of_dir(&name) {
                Some(stream) => {
                    spool.open_stream(&stream, &damaged)?;
                }
                None => {
                    tracing::warn!(path = %streams_dir.join(&name).display(), "Ignoring a directory in the spool that names no stream")
                }
            }
        }
        let weak = Arc::downgrade(&spool.inner);
        let handle = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || flusher(weak, commit))
            .map_err(open_err)?;
        *spool
            .store()
            .expect("on disk")
            .commit
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(spool)
    }

    pub(super) fn open_stream(
        &self,
        name: &str,
        damaged: &Path,
    ) -> Result<StreamSpool, SpoolError> {
        let store = self.store().expect("on disk");
        let catalog = match &store.index {
            Some(i) => Some(i.segments(name)?),
            None => None,
        };
        let (inner, found) = StreamInner::recover(
            name,
            store.dir.join("streams").join(stream::dir_name(name)),
            store.storage.clone(),
            store.segment_bytes,
            self.inner.space.clone(),
            catalog.as_ref(),
            damaged,
        )?;
        if let (Some(index), Some(disk)) = (&store.index, &inner.disk) {
            // The catalog now says what is there (a missing file was reported).
            index.reset(name, &disk.segment_seqs())?;
        }
        let space = &self.inner.space;
        space
            .damaged_frames
            .fetch_add(found.damaged_frames, Ordering::Relaxed);
        space
            .lost_records
            .fetch_add(found.lost_records, Ordering::Relaxed);
        let s = StreamSpool {
            inner: Arc::new(inner),
        };
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), s.clone());
        Ok(s)
    }
}

pub(super) fn open_index(dir: &Path, cache: u64) -> Option<Index> {
    let path = dir.join("index");
    match Index::open(&path, cache) {
        Ok(i) => Some(i),
        // An I/O error (a full disk, a permission, a lock) says nothing about
        // the index's content: it is kept as it is, and the spool runs without it
        // this time. Only an index that reads as damaged is moved aside.
        Err(sled::Error::Io(e)) if says_nothing_of_content(&e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "The spool index cannot be opened; it is kept, and the spool runs without it until the next start (missing segment files go unnoticed)");
            None
        }
        Err(e) => {
            let aside = dir.join("damaged").join(format!("index-{}", now_ms()));
            tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %e,
                "The spool index is damaged; it is moved aside and rebuilt from the segments");
            let _ = std::fs::create_dir_all(dir.join("damaged"));
            if std::fs::rename(&path, &aside).is_err() {
                let _ = std::fs::remove_dir_all(&path);
            }
            match Index::open(&path, cache) {
                Ok(i) => Some(i),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e,
                        "The spool index cannot be created; the spool runs without it (missing segment files go unnoticed)");
                    None
                }
            }
        }
    }
}

/// Whether an error opening the index comes from the system (space, rights,
/// descriptors, a lock), not from what the index holds.
fn says_nothing_of_content(e: &std::io::Error) -> bool {
    const SYSTEM: [i32; 10] = [
        libc::ENOSPC,
        libc::EDQUOT,
        libc::EACCES,
        libc::EPERM,
        libc::EROFS,
        libc::EAGAIN,
        libc::EMFILE,
        libc::ENFILE,
        libc::ENOMEM,
        libc::EIO,
    ];
    // sled reports its own file lock held elsewhere as a message, no errno.
    e.raw_os_error().is_some_and(|n| SYSTEM.contains(&n))
        || e.to_string().contains("could not acquire lock")
}

/// Opens a spool at `dir` with the given limit (for tests and tools).
pub fn open_at(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
    Spool::open(&SpoolOptions {
        dir: Some(dir.to_owned()),
        max_bytes,
        flush_interval_ms: 100,
        min_free_bytes: 0,
        ..SpoolOptions::default()
    })
}
