//! The write-ahead spool: the single source of truth for records not yet accepted by
//! Kinesis.
//!
//! Every record is written here before anything else happens to it, and leaves only
//! when Kinesis has accepted it. The API speaks of entries, records, acks,
//! checkpoints and bytes; nothing outside this module knows how they are stored.
//!
//! # Who calls it
//!
//! Intake is the only door: it appends entries and checkpoints (`crate::intake`),
//! reads spilled entries back for a dispatcher and retires what delivery acked
//! (its `Outlet` and `Acks`). The producer opens and closes the spool and waits
//! for durability (the socket's acks); gauges, status, pacing and the watchdog
//! read it through intake's read-only `Backlog`. Sources and delivery never name
//! it. `survey/` reads a spool directory from outside, without opening the spool
//! or taking its lock (`shardline spool check|inspect|export`).
//!
//! # Layout
//!
//! ```text
//! <dir>/lock                  flock'ed by the agent that has the spool open (its pid)
//! <dir>/spool.format           "shardline-spool 2": the format of everything below
//! <dir>/index/                 sled: the catalog of segment files (small, no payload)
//! <dir>/streams/<hex name>/    one directory per destination stream:
//!     <seq>.seg                segment: append-only, CRC-framed entries and checkpoints,
//!                              sealed with a footer when it reaches the roll size
//!     <seq>.ack                acks of that segment's entries (retired, partly delivered)
//!     checkpoints              the checkpoint table carried forward
//!     manifest                 how far each segment was synced and what it held
//!                              (appended by the group commit, see `stream/manifest.rs`)
//! <dir>/damaged/               files that could not be read, moved aside
//! <dir>/damaged/report         every damage found and the records it lost, one
//!                              line each, until an operator deletes the file
//! <dir>/redrive/               `shardline redrive` requests to the running agent
//!                              (intake's, not the spool's: see `intake/redrive/`)
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
//! # Memory-only
//!
//! With no `dir` the spool keeps nothing: a stream's spool gives ids and sizes
//! and refuses an entry that would wait to be read back (a spill) as a full
//! spool, so intake's hand-over is the only queue and waiting for room in it is
//! the backpressure. Nothing is durable and nothing is replayed.
//!
//! # Recovery
//!
//! An open reads the footer of every sealed segment (where its entries are) and
//! scans only the segments without one (the one open at a crash), then applies
//! the ack files. It reads no record. Each stream's manifest says how far every
//! segment was synced and what it held, so a segment missing, cut short or
//! damaged before that point is damage, never taken for a crash's torn tail.
//! Damage is reported (ERROR naming the segment, offset and records lost,
//! `shardline_spool_damaged_frames_total`, `shardline_spool_lost_records_total`,
//! a line in `damaged/report` that `shardline status` shows until the file is
//! deleted) and skipped; a file that cannot be read at all is moved to
//! `damaged/`; a format version this binary does not know is refused with a
//! message naming it. A directory written by shardline 0.1 (sled holding the
//! records) is migrated on first open; one that does not read whole has what
//! could be read migrated and its files kept in `damaged/` (see `legacy.rs`).

mod commit;
mod damage;
mod format;
mod frame;
mod index;
mod legacy;
mod lock;
mod open;
mod space;
mod storage;
mod stream;
pub(crate) mod survey;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::futures::Notified;

use crate::record::UserRecord;
use stream::StreamInner;
pub use stream::StreamSpool;

pub use self::damage::DamageReport;

use self::commit::{commit_all, open_streams, CommitState};
use self::index::Index;
pub(crate) use self::lock::{holder as lock_holder, LockState};
pub use self::open::open_at;
pub use self::space::Refusing;
pub(crate) use self::space::Space;
use self::storage::{Fs, Storage};

/// The format file's name and its content for this format.
const FORMAT_FILE: &str = "spool.format";
const FORMAT_TEXT: &str = "shardline-spool 2\n";
const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Descriptors one stream's spool holds at most, whatever its size: its open
/// segment, a few sealed segment and ack files, its manifest, and one opened
/// for a moment (a sync, a rewrite, the damage report).
pub(crate) const FILES_PER_STREAM: u64 = stream::OPEN_FILES as u64 + 4;

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
    #[error("spool {path} is in use by another shardline ({}); one spool takes one agent: give this one its own spool.dir, or stop the other", match pid { Some(p) => format!("pid {p}"), None => "pid unknown".to_owned() })]
    Locked { path: PathBuf, pid: Option<u32> },
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

/// A checkpoint borrowed from its owner, as [`StreamSpool::write`] takes it: the
/// caller keeps its own (to try again), and the frame copies the bytes once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointRef<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> From<&'a Checkpoint> for CheckpointRef<'a> {
    fn from(c: &'a Checkpoint) -> Self {
        CheckpointRef {
            name: &c.name,
            value: &c.value,
        }
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
    /// The directory's lock, held while the spool is open (on disk only).
    lock: std::sync::OnceLock<lock::SpoolLock>,
}

struct Store {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    index: Option<Index>,
    segment_bytes: u64,
    commit: Arc<CommitState>,
}

impl Spool {
    fn store(&self) -> Option<&Store> {
        self.inner.store.as_ref()
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

    /// Every stream the spool holds records of, with their count and the
    /// directory they are in (`None` in memory).
    pub fn held_streams(&self) -> Vec<(String, u64, Option<PathBuf>)> {
        let mut out: Vec<_> = self
            .open_streams()
            .iter()
            .map(|s| {
                (
                    s.inner.name.to_string(),
                    s.inner.records.load(Ordering::Relaxed),
                    s.inner.disk.as_ref().map(|d| d.dir.clone()),
                )
            })
            .filter(|(_, n, _)| *n > 0)
            .collect();
        out.sort();
        out
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

    /// Whether writers are refused room now (they wait, or are told so).
    pub fn refusing(&self) -> Option<Refusing> {
        self.inner.space.refusing()
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

    /// The damage report (`damaged/report`): every damage found since an
    /// operator last deleted the file, and the records lost with it. `None` when
    /// there is none, or in memory. Blocking (a small file read).
    pub fn damage_report(&self) -> Option<DamageReport> {
        let store = self.store()?;
        damage::read(&*store.storage, &store.dir.join("damaged"))
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

    /// Waits until some space has been freed. The wait counts from the call, not
    /// from the first poll: space freed in between is not missed.
    pub fn space_freed(&self) -> Notified<'_> {
        self.inner.space.freed.notified()
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
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
