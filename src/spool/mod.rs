//! The write-ahead spool: the single source of truth for records not yet accepted by
//! Kinesis.
//!
//! Every record is written here before anything else happens to it, and leaves only
//! when Kinesis has accepted it. The API speaks of entries, records, acks,
//! checkpoints and bytes; nothing outside this module knows how they are stored.
//!
//! # Layout
//!
//! ```text
//! <dir>/spool.format           "shardline-spool 2": the format of everything below
//! <dir>/index/                 sled: the catalog of segment files (small, no payload)
//! <dir>/streams/<hex name>/    one directory per destination stream:
//!     <seq>.seg                segment: append-only, CRC-framed entries and checkpoints,
//!                              sealed with a footer when it reaches the roll size
//!     <seq>.ack                acks of that segment's entries (retired, partly delivered)
//!     checkpoints              the checkpoint table carried forward
//! <dir>/damaged/               files that could not be read, moved aside
//! ```
//!
//! An *entry* is what one read or one socket batch produced. Its frame holds the
//! records **and** the checkpoint of the source that read them, so a file's read
//! position and the lines read up to it are one atomic write: a crash can neither
//! lose nor duplicate a line between a file and the spool. Frames are described
//! in `frame.rs`; a torn tail is found by its CRC and cut on open.
//!
//! # Durability (group commit)
//!
//! Writers append into the page cache under their stream's lock. One flusher
//! thread per spool runs a *commit* every `flush_interval_ms`, and at once when
//! someone waits in [`Spool::durable`]: it writes the buffered acks, `fdatasync`s
//! every file written since the last commit, fsyncs a directory after a file was
//! created or removed, and only then reports the writes it covered as durable.
//! A durability ack to a socket client waits for that, so an acknowledged record
//! survives a power loss, not only a crash of the process.
//!
//! # Space
//!
//! A sealed segment is removed once none of its entries is live, after the
//! checkpoint table it may hold was carried forward (temp file, fdatasync,
//! rename). A sealed segment whose few live entries pin it (a slow shard) is
//! copied forward. Whole segment files count against `max_bytes`, and the
//! filesystem's free space must stay above `min_free_bytes`: either limit is a
//! full spool (writers wait or are refused), and delivery and removal keep
//! working on a full disk (removing a file needs no space).
//!
//! # Recovery
//!
//! An open reads the footer of every sealed segment (where its entries are) and
//! scans only the segments without one (the one open at a crash), then applies
//! the ack files. It reads no record. A damaged frame is reported (ERROR naming
//! the segment and offset, `shardline_spool_damaged_frames_total`) and skipped;
//! a file that cannot be read at all is moved to `damaged/`; a format version
//! this binary does not know is refused with a message naming it. A directory
//! written by shardline 0.1 (sled holding the records) is migrated on first open.

mod frame;
mod index;
mod legacy;
mod storage;
mod stream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::record::UserRecord;
use stream::StreamInner;
pub use stream::StreamSpool;

use self::index::Index;
use self::storage::{Fs, Storage};

/// The format file's name and its content for this format.
const FORMAT_FILE: &str = "spool.format";
const FORMAT_TEXT: &str = "shardline-spool 2\n";
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open spool at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool file {path} failed")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool index failed")]
    Index(#[from] sled::Error),
    #[error("spool is full: {used} of {max} bytes used, {needed} more needed")]
    Full { used: u64, max: u64, needed: u64 },
    #[error("the disk holding the spool is full ({free} bytes free, {reserve} kept free, {needed} more needed)")]
    DiskFull {
        free: u64,
        reserve: u64,
        needed: u64,
    },
    #[error("the disk holding the spool is full (writing {path})")]
    NoSpace { path: PathBuf },
    #[error("spool file {path} has format version {version}, which this shardline does not know (it reads version 2); use the shardline that wrote it, or move the spool aside")]
    Version { path: PathBuf, version: u8 },
    #[error(
        "the spool's disk is behind: {unsynced} bytes written and not yet synced (at most {limit})"
    )]
    Behind { unsynced: u64, limit: u64 },
    #[error("spool entry {id} is corrupt: {reason}")]
    Corrupt { id: u64, reason: String },
    #[error("the spool could not make writes durable: {0}")]
    Sync(String),
}

impl SpoolError {
    /// Whether this is a full spool or a full disk: backpressure, not a failure.
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            SpoolError::Full { .. }
                | SpoolError::DiskFull { .. }
                | SpoolError::NoSpace { .. }
                | SpoolError::Behind { .. }
        )
    }
}

/// Settings of the spool.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Directory of the spool; `None` keeps nothing on disk (no durability: for
    /// benchmarks of the pipeline alone and for embedders that do not need it).
    pub dir: Option<PathBuf>,
    /// Most bytes of segment files the spool holds; writers wait or are refused past it.
    pub max_bytes: u64,
    /// Interval of the group commit (fdatasync).
    pub flush_interval_ms: u64,
    /// Page cache of the sled index.
    pub cache_capacity_bytes: u64,
    /// Size at which a segment file is sealed and a new one started (at most an
    /// eighth of `max_bytes`).
    pub segment_bytes: u64,
    /// Free space the spool leaves on its filesystem: below it the spool is full.
    pub min_free_bytes: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            dir: None,
            max_bytes: 8 << 30,
            flush_interval_ms: 200,
            cache_capacity_bytes: 4 << 20,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            min_free_bytes: 64 << 20,
        }
    }
}

/// An entry read back from the spool.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    /// Encoded size.
    pub bytes: u64,
    pub records: Vec<UserRecord>,
    /// Records already accepted by Kinesis (bit i = record i), for a partly
    /// delivered entry.
    pub delivered: Option<Vec<u64>>,
    /// When the entry was spooled, in milliseconds since the Unix epoch.
    pub spooled_at_ms: u64,
}

/// A source's read position, stored with the records read up to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Source-defined name (for a file: its identity).
    pub name: Vec<u8>,
    /// Source-defined value (for a file: its position and fingerprint).
    pub value: Vec<u8>,
}

/// Space accounting, shared by all streams.
pub(crate) struct Space {
    max_bytes: u64,
    min_free_bytes: u64,
    /// Bytes of live entries in all streams (what is held).
    used_bytes: AtomicU64,
    /// Bytes of segment files (what counts against `max_bytes`).
    disk_bytes: AtomicU64,
    /// Free bytes of the filesystem, as last read, less what was written since.
    disk_free: AtomicU64,
    /// Records not yet delivered, in all streams.
    records: AtomicU64,
    /// Writes so far (the group commit's clock).
    writes: AtomicU64,
    /// Woken whenever space is freed.
    freed: Notify,
    /// When space was last freed (Unix milliseconds; 0: never).
    freed_at_ms: AtomicU64,
    /// Damaged frames found, and the records they held.
    damaged_frames: AtomicU64,
    lost_records: AtomicU64,
    /// Bytes written since the commit that last covered them. Writers wait
    /// past `unsynced_limit`: a writer faster than the disk can sync would
    /// otherwise push every commit (and the removal of delivered segments, and
    /// what a power loss takes) further behind.
    unsynced: AtomicU64,
    unsynced_limit: u64,
    /// The commit thread, asked for a commit by a writer that waits.
    commit: std::sync::OnceLock<Arc<CommitState>>,
}

impl Space {
    /// Takes room for `len` bytes, or says why there is none.
    fn reserve(&self, len: u64) -> Result<(), SpoolError> {
        let used = self.disk_bytes.fetch_add(len, Ordering::AcqRel);
        if used + len > self.max_bytes {
            self.disk_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(SpoolError::Full {
                used,
                max: self.max_bytes,
                needed: len,
            });
        }
        let free = self.disk_free.load(Ordering::Relaxed);
        if free < self.min_free_bytes.saturating_add(len) {
            self.disk_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(SpoolError::DiskFull {
                free,
                reserve: self.min_free_bytes,
                needed: len,
            });
        }
        let unsynced = self.unsynced.load(Ordering::Relaxed);
        if unsynced > self.unsynced_limit {
            self.disk_bytes.fetch_sub(len, Ordering::AcqRel);
            if let Some(c) = self.commit.get() {
                c.ask();
            }
            return Err(SpoolError::Behind {
                unsynced,
                limit: self.unsynced_limit,
            });
        }
        self.disk_free.fetch_sub(len, Ordering::Relaxed);
        Ok(())
    }

    fn unreserve(&self, len: u64) {
        self.disk_bytes.fetch_sub(len, Ordering::AcqRel);
        self.disk_free.fetch_add(len, Ordering::Relaxed);
    }
}

/// The spool: one directory, one subdirectory per stream.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<SpoolInner>,
}

struct SpoolInner {
    /// `None` in memory-only mode.
    store: Option<Store>,
    space: Arc<Space>,
    streams: Mutex<HashMap<String, StreamSpool>>,
}

struct Store {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    index: Option<Index>,
    segment_bytes: u64,
    commit: Arc<CommitState>,
}

/// The flusher's side of the group commit.
struct CommitState {
    /// Set to ask for a commit now; the flusher waits on `wake`.
    asked: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
    interval: Duration,
    /// Writes covered by the last commit, or the error that stopped it.
    durable: watch::Sender<Result<u64, String>>,
    /// The flusher thread, joined by the last handle's drop.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// When the last commit ended (Unix milliseconds), for the watchdog.
    last_commit_ms: AtomicU64,
    /// Held through a commit: one at a time (the commit thread's, the last one
    /// of a drop, a migration's).
    running: Mutex<()>,
    /// Set by the power-cut tests: the drop makes no last commit.
    #[cfg(test)]
    crashed: AtomicBool,
}

impl CommitState {
    fn ask(&self) {
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
    }
}

impl Spool {
    /// Opens (or creates) the spool: migrates a 0.1 directory, reads segment
    /// footers, applies acks, and starts the flusher thread.
    pub fn open(options: &SpoolOptions) -> Result<Spool, SpoolError> {
        match &options.dir {
            None => Ok(Spool::memory(options)),
            Some(dir) => Spool::open_on(Arc::new(Fs), dir, options, true),
        }
    }

    fn memory(options: &SpoolOptions) -> Spool {
        Spool {
            inner: Arc::new(SpoolInner {
                store: None,
                space: Arc::new(new_space(options)),
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Opens the spool on a storage layer; `with_index` opens the sled index
    /// (on the real filesystem only: sled does not write through `storage`).
    fn open_on(
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
                // Migrated before a crash that left the old files.
                legacy::remove_old_files(dir);
            }
        } else if real {
            legacy::migrate(dir, options)?;
        } else {
            write_format(&*storage, dir).map_err(open_err)?;
        }
        Spool::open_layout_with(storage, dir, options, with_index)
    }

    /// Opens the current layout (after the format check or the migration).
    fn open_layout(
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
            }),
        };
        let streams_dir = dir.join("streams");
        storage.create_dir_all(&streams_dir).map_err(open_err)?;
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

    fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
    }

    fn open_stream(&self, name: &str, damaged: &Path) -> Result<StreamSpool, SpoolError> {
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

    /// The spool of one stream (opened on first use).
    pub fn stream(&self, name: &str) -> Result<StreamSpool, SpoolError> {
        if let Some(s) = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(s.clone());
        }
        match self.store() {
            Some(store) => {
                let damaged = store.dir.join("damaged");
                self.open_stream(name, &damaged)
            }
            None => {
                let s = StreamSpool {
                    inner: Arc::new(StreamInner::memory(name, self.inner.space.clone())),
                };
                let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
                Ok(streams.entry(name.to_owned()).or_insert(s).clone())
            }
        }
    }

    fn open_streams(&self) -> Vec<StreamSpool> {
        open_streams(&self.inner)
    }

    /// Bytes of live entries held, in all streams.
    pub fn used_bytes(&self) -> u64 {
        self.inner.space.used_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of segment files, what counts against [`max_bytes`](Self::max_bytes).
    pub fn disk_bytes(&self) -> u64 {
        self.inner.space.disk_bytes.load(Ordering::Relaxed)
    }

    /// Free bytes of the spool's filesystem, as last read (`None` in memory).
    pub fn disk_free_bytes(&self) -> Option<u64> {
        self.store()
            .map(|_| self.inner.space.disk_free.load(Ordering::Relaxed))
    }

    /// Records held and not yet delivered, in all streams.
    pub fn records(&self) -> u64 {
        self.inner.space.records.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.inner.space.max_bytes
    }

    /// Free space the spool leaves on its filesystem (`spool.min_free_bytes`).
    pub fn min_free_bytes(&self) -> u64 {
        self.inner.space.min_free_bytes
    }

    /// Damaged frames found so far (at open and on reading), and the records
    /// they held as far as known.
    pub fn damaged(&self) -> (u64, u64) {
        let s = &self.inner.space;
        (
            s.damaged_frames.load(Ordering::Relaxed),
            s.lost_records.load(Ordering::Relaxed),
        )
    }

    /// How long the oldest record held has waited, over all streams; `None` when
    /// the spool is empty or memory-only.
    pub fn oldest_record_age(&self) -> Result<Option<Duration>, SpoolError> {
        let mut oldest = None;
        for s in self.open_streams() {
            if let Some(age) = s.oldest_record_age()? {
                oldest = oldest.max(Some(age));
            }
        }
        Ok(oldest)
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.durable().await
    }

    /// Waits until every write made before the call is durable (fdatasync'd):
    /// concurrent callers share one commit, and a caller whose writes an earlier
    /// commit already covered returns at once.
    pub async fn durable(&self) -> Result<(), SpoolError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let target = self.inner.space.writes.load(Ordering::Acquire);
        let mut rx = store.commit.durable.subscribe();
        if matches!(&*rx.borrow(), Ok(d) if *d >= target) {
            return Ok(());
        }
        store.commit.ask();
        let seen = rx
            .wait_for(|d| match d {
                Ok(d) => *d >= target,
                Err(_) => true,
            })
            .await
            .map_err(|_| SpoolError::Sync("the spool was closed".into()))?;
        match &*seen {
            Ok(_) => Ok(()),
            Err(e) => Err(SpoolError::Sync(e.clone())),
        }
    }

    /// Whether records are kept in memory only.
    pub fn is_memory_only(&self) -> bool {
        self.store().is_none()
    }

    /// Whether the spool's commits go through: the service's watchdog is told
    /// only then (a spool that cannot sync gets the service restarted).
    /// Blocking: call it from a blocking thread.
    pub fn heartbeat(&self) -> Result<(), SpoolError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let last = store.commit.last_commit_ms.load(Ordering::Relaxed);
        let late = now_ms().saturating_sub(last);
        let bound = 10_000 + 4 * store.commit.interval.as_millis() as u64;
        if late > bound {
            return Err(SpoolError::Sync(format!("no group commit for {late} ms")));
        }
        if let Err(e) = &*store.commit.durable.borrow() {
            return Err(SpoolError::Sync(e.clone()));
        }
        Ok(())
    }

    /// [`close`](Self::close) on the caller's thread, without a runtime.
    fn sync_now(&self) -> Result<(), SpoolError> {
        if let Some(store) = self.store() {
            for s in self.open_streams() {
                if let Some(disk) = &s.inner.disk {
                    disk.seal_open(&self.inner.space);
                }
            }
            if !commit_all(&self.inner, store) {
                return Err(SpoolError::Sync("the migration's commit failed".into()));
            }
            if let Some(index) = &store.index {
                index.flush()?;
            }
        }
        Ok(())
    }

    /// Seals every open segment and makes everything durable, so the next open
    /// reads footers only. Call it when nothing appends or retires any more.
    pub async fn close(&self) -> Result<(), SpoolError> {
        if let Some(store) = self.store() {
            for s in self.open_streams() {
                if let Some(disk) = &s.inner.disk {
                    disk.seal_open(&self.inner.space);
                }
            }
            self.inner.space.writes.fetch_add(1, Ordering::Release);
            self.durable().await?;
            if let Some(index) = &store.index {
                index.flush()?;
            }
        }
        Ok(())
    }

    /// A handle that does not keep the spool open, for observers (the metrics)
    /// that may outlive the agent.
    pub fn downgrade(&self) -> WeakSpool {
        WeakSpool(Arc::downgrade(&self.inner))
    }

    /// How long ago space was last freed (records delivered); `None` if never
    /// since the spool was opened.
    pub fn since_freed(&self) -> Option<Duration> {
        match self.inner.space.freed_at_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }

    /// Waits until some space has been freed.
    pub async fn space_freed(&self) {
        self.inner.space.freed.notified().await
    }

    /// Bytes the spool's files take on disk (segments and acks).
    pub fn size_on_disk(&self) -> Result<u64, SpoolError> {
        Ok(self
            .open_streams()
            .iter()
            .filter_map(|s| s.inner.disk.as_ref().map(|d| d.size_on_disk()))
            .sum())
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

fn open_error(dir: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Open {
        path: dir.to_owned(),
        source,
    }
}

fn new_space(options: &SpoolOptions) -> Space {
    Space {
        max_bytes: options.max_bytes,
        min_free_bytes: options.min_free_bytes,
        used_bytes: AtomicU64::new(0),
        disk_bytes: AtomicU64::new(0),
        disk_free: AtomicU64::new(u64::MAX / 2),
        records: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        freed: Notify::new(),
        freed_at_ms: AtomicU64::new(0),
        damaged_frames: AtomicU64::new(0),
        lost_records: AtomicU64::new(0),
        unsynced: AtomicU64::new(0),
        unsynced_limit: segment_bytes(options),
        commit: std::sync::OnceLock::new(),
    }
}

/// The size at which segments roll: `segment_bytes`, at most an eighth of
/// `max_bytes`, at least 4 KiB.
fn segment_bytes(options: &SpoolOptions) -> u64 {
    options
        .segment_bytes
        .min(options.max_bytes / 8)
        .max(4 << 10)
}

fn write_format(storage: &dyn Storage, dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let f = storage.open(&tmp, true)?;
    f.set_len(0)?;
    f.write_at(0, FORMAT_TEXT.as_bytes())?;
    f.sync_data()?;
    storage.rename(&tmp, &dir.join(FORMAT_FILE))?;
    storage.sync_dir(dir)
}

fn open_index(dir: &Path, cache: u64) -> Option<Index> {
    let path = dir.join("index");
    match Index::open(&path, cache) {
        Ok(i) => Some(i),
        Err(e) => {
            let aside = dir.join("damaged").join(format!("index-{}", now_ms()));
            tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %e,
                "The spool index cannot be opened; it is moved aside and rebuilt from the segments");
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

fn open_streams(inner: &SpoolInner) -> Vec<StreamSpool> {
    inner
        .streams
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

/// One group commit over every stream. Returns whether it went through.
fn commit_all(inner: &SpoolInner, store: &Store) -> bool {
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
        let copy = (covering as usize + i) % streams.len().max(1) == 0;
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
fn flusher(spool: std::sync::Weak<SpoolInner>, commit: Arc<CommitState>) {
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

/// See [`Spool::downgrade`].
#[derive(Clone)]
pub struct WeakSpool(std::sync::Weak<SpoolInner>);

impl WeakSpool {
    /// The spool, while it is open.
    pub fn upgrade(&self) -> Option<Spool> {
        self.0.upgrade().map(|inner| Spool { inner })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

#[cfg(test)]
mod tests;
