//! The write-ahead spool: the single source of truth for records not yet accepted by
//! Kinesis.
//!
//! Every record is written here before anything else happens to it, and leaves only
//! when Kinesis has accepted it. The store is sled, and nothing outside this module
//! names it: the API speaks of entries, records, acks and bytes.
//!
//! # Layout
//!
//! One sled tree per destination stream, so a stream's entries and (later) the read
//! positions of the sources that feed it can be written in one atomic batch, and each
//! stream is read and drained on its own. Inside a tree, keys start with a namespace
//! byte followed by a big-endian `u64`, so iteration order is numeric order:
//!
//! - `0x00 id`: an *entry*: a batch of records (what one read or one socket batch
//!   produced). Value: format version byte, then the bincode [`EntryV1`]. Batching is
//!   what makes the spool fast: sled takes ~30 MiB/s as single 256-byte records but
//!   hundreds of MiB/s in values of tens of KiB.
//! - `0x00 id chunk`: an entry stored in *chunks* (`chunk` a big-endian `u16`): the
//!   value cut in pieces of [`CHUNK_BYTES`], concatenated on reading. Entries that
//!   wait in the spool (written while the stream is behind, see
//!   [`StreamSpool::append_with_checkpoint`]) are stored so: sled keeps one leaf page
//!   per LRU shard (256) in memory whatever its cache capacity, and a leaf holds up to
//!   16 values, so large values held for long set a memory floor of hundreds of MiB;
//!   small ones keep it near 256 × 16 × 4 KiB. Entries handed over in memory are
//!   written whole (fewer, larger writes: cheaper) and deleted soon after.
//! - `0x01 id`: the *progress* of a partly delivered entry: a bitmap of the records
//!   already accepted, so a restart re-sends only the rest.
//! - `0x02 name`: a source's *checkpoint* (a file's read position), written in the
//!   same atomic batch as the records read up to it, so a crash can neither lose nor
//!   duplicate a record between a source and the spool.
//! - `0x03 id`: a *time mark*: the wall-clock time (Unix milliseconds, big-endian
//!   `u64`) at which entry `id` was appended. A mark is written with an entry at most
//!   once per [`MARK_INTERVAL`], so every entry was appended less than that after the
//!   mark at or before its id; the age of the oldest record is read from the mark at
//!   or before the first entry ([`Spool::oldest_record_age`]), an over-estimate by
//!   less than [`MARK_INTERVAL`]. Marks behind the first entry are pruned as entries
//!   are retired. Entries carry no time themselves: a mark per second costs one small
//!   key, a time per entry would cost a format change and a scan.
//!
//! - `0x04`: the *summary* a clean stop leaves: the last entry id, the bytes and
//!   the records held. The next open takes it (and removes it) instead of reading
//!   every entry, so a large backlog does not delay the start; it is trusted only
//!   if the last entry id still matches. After a crash, the open reads the entries.
//!
//! # Durability
//!
//! Writes go to sled's log at once and are made durable by a group commit: sled
//! flushes (fsyncs) every `flush_interval_ms`, and [`Spool::flush`] forces one. A
//! crash loses at most the writes of the last interval that were not flushed — and
//! since acks (deletes) are writes too, the records re-sent after a crash are at most
//! those accepted by Kinesis since the last flush.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::record::UserRecord;

/// Format version of entry and progress values.
const FORMAT_VERSION: u8 = 1;
const NS_ENTRY: u8 = 0x00;
const NS_PROGRESS: u8 = 0x01;
const NS_CHECKPOINT: u8 = 0x02;
const NS_MARK: u8 = 0x03;
const NS_SUMMARY: u8 = 0x04;
/// Size of the pieces of a chunked entry (part of the format).
pub const CHUNK_BYTES: usize = 4 << 10;
/// Least time between two time marks of a stream, hence the precision of
/// [`Spool::oldest_record_age`]: one small key per second of traffic at most.
pub const MARK_INTERVAL: Duration = Duration::from_secs(1);

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open spool at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("spool I/O failed")]
    Io(#[from] sled::Error),
    #[error("spool is full: {used} of {max} bytes used, {needed} more needed")]
    Full { used: u64, max: u64, needed: u64 },
    #[error("spool entry {id} is corrupt: {reason}")]
    Corrupt { id: u64, reason: String },
    #[error("spool entry of {records} records cannot be encoded")]
    Encode {
        records: usize,
        #[source]
        source: bincode::error::EncodeError,
    },
}

/// Settings of the spool.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Directory of the database; `None` keeps nothing on disk (no durability: for
    /// benchmarks of the pipeline alone and for embedders that do not need it).
    pub dir: Option<PathBuf>,
    /// Most bytes of entries the spool holds; writers wait or are refused past it.
    pub max_bytes: u64,
    /// Interval of the group commit (fsync).
    pub flush_interval_ms: u64,
    /// sled's page cache (its default of 1 GiB is far too much for a host agent).
    pub cache_capacity_bytes: u64,
}

/// One record as stored.
#[derive(Serialize, Deserialize)]
struct StoredRecord<'a> {
    partition_key: &'a str,
    explicit_hash_key: Option<u128>,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

/// A stored entry, format version 1.
#[derive(Serialize, Deserialize)]
struct EntryV1<'a> {
    /// The destination stream (also implied by the tree; kept so an entry is
    /// self-describing).
    stream: &'a str,
    #[serde(borrow)]
    records: Vec<StoredRecord<'a>>,
}

/// An entry read back from the spool.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    /// Encoded size, as counted against `max_bytes`.
    pub bytes: u64,
    pub records: Vec<UserRecord>,
    /// Records already accepted by Kinesis (bit i = record i), for a partly
    /// delivered entry.
    pub delivered: Option<Vec<u64>>,
    /// When the entry was spooled, in milliseconds since the Unix epoch.
    pub spooled_at_ms: u64,
}

fn chunk_key(id: u64, chunk: u16) -> [u8; 11] {
    let mut k = [0u8; 11];
    k[1..9].copy_from_slice(&id.to_be_bytes());
    k[9..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// Number of chunks of a chunked entry of `bytes`.
fn chunks_of(bytes: u64) -> u64 {
    bytes.div_ceil(CHUNK_BYTES as u64)
}

/// Whether an entry key is a chunk other than the first (the first carries the
/// header).
fn is_later_chunk(k: &[u8]) -> bool {
    k.len() == 11 && k[9..] != [0, 0]
}

fn key(ns: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ns;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A source's read position, stored with the records read up to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Source-defined name (for a file: its identity).
    pub name: Vec<u8>,
    /// Source-defined value (for a file: its position and fingerprint).
    pub value: Vec<u8>,
}

fn checkpoint_key(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(NS_CHECKPOINT);
    k.extend_from_slice(name);
    k
}

fn key_id(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(1..9)?.try_into().ok()?))
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The spool: one sled database, one tree per stream.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<SpoolInner>,
}

struct SpoolInner {
    /// `None` in memory-only mode.
    db: Option<sled::Db>,
    space: Arc<Space>,
    /// One group-commit flush at a time; those who wait behind it usually find
    /// their writes covered by it.
    commit: tokio::sync::Mutex<()>,
    /// Value of `space.writes` covered by the last completed flush.
    durable: AtomicU64,
    streams: Mutex<HashMap<String, StreamSpool>>,
}

/// Space accounting, shared by all streams.
struct Space {
    max_bytes: u64,
    /// Bytes of entries in all streams.
    used_bytes: AtomicU64,
    /// Records not yet delivered, in all streams.
    records: AtomicU64,
    /// Entries written so far (the group commit's clock).
    writes: AtomicU64,
    /// Woken whenever space is freed.
    freed: Notify,
    /// When space was last freed (Unix milliseconds; 0: never).
    freed_at_ms: AtomicU64,
    /// Held by every write to the database: one writer at a time. sled 0.34 can
    /// hang under heavy write load (a writer holding its segment accountant waits
    /// for a file truncation queued behind I/O threads that wait for that lock;
    /// seen within minutes with two threads writing 64 KiB values): one writer
    /// makes it rarer, and its write path is fast enough alone. The service's
    /// watchdog covers the rest (see [`Spool::heartbeat`]).
    writer: Mutex<()>,
}

impl Space {
    fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Spool {
    /// Opens (or creates) the spool and counts the bytes it holds.
    pub fn open(options: &SpoolOptions) -> Result<Spool, SpoolError> {
        let db = match &options.dir {
            None => None,
            Some(dir) => Some(
                sled::Config::new()
                    .path(dir)
                    .cache_capacity(options.cache_capacity_bytes)
                    .flush_every_ms(Some(options.flush_interval_ms.max(1)))
                    .mode(sled::Mode::HighThroughput)
                    .open()
                    .map_err(|source| SpoolError::Open {
                        path: dir.clone(),
                        source,
                    })?,
            ),
        };
        let spool = Spool {
            inner: Arc::new(SpoolInner {
                db,
                space: Arc::new(Space {
                    max_bytes: options.max_bytes,
                    used_bytes: AtomicU64::new(0),
                    records: AtomicU64::new(0),
                    writes: AtomicU64::new(0),
                    freed: Notify::new(),
                    freed_at_ms: AtomicU64::new(0),
                    writer: Mutex::new(()),
                }),
                commit: tokio::sync::Mutex::new(()),
                durable: AtomicU64::new(0),
                streams: Mutex::new(HashMap::new()),
            }),
        };
        let names: Vec<String> = spool
            .inner
            .db
            .iter()
            .flat_map(|db| db.tree_names())
            .filter_map(|n| {
                n.strip_prefix(b"stream/")
                    .map(|s| String::from_utf8_lossy(s).into_owned())
            })
            .collect();
        for name in names {
            spool.stream(&name)?;
        }
        Ok(spool)
    }

    /// The spool of one stream (opened on first use).
    pub fn stream(&self, name: &str) -> Result<StreamSpool, SpoolError> {
        let mut streams = self
            .inner
            .streams
            .lock()
            .expect("spool stream table lock poisoned");
        if let Some(s) = streams.get(name) {
            return Ok(s.clone());
        }
        let tree = match &self.inner.db {
            Some(db) => Some(db.open_tree(format!("stream/{name}"))?),
            None => None,
        };
        let (mut bytes, mut records, mut last) = (0u64, 0u64, None);
        let mut chunked = HashSet::new();
        if let Some(t) = &tree {
            last = t
                .range(key(NS_ENTRY, 0)..=key(NS_ENTRY, u64::MAX))
                .keys()
                .next_back()
                .transpose()?
                .and_then(|k| key_id(&k));
            match take_summary(t, last)? {
                Some(summary) => (bytes, records) = summary,
                None => (bytes, records, chunked) = count_entries(t)?,
            }
        }
        let marks = match &tree {
            Some(t) => load_marks(t, last)?,
            None => BTreeMap::new(),
        };
        let space = &self.inner.space;
        space.used_bytes.fetch_add(bytes, Ordering::Relaxed);
        space.records.fetch_add(records, Ordering::Relaxed);
        let s = StreamSpool {
            inner: Arc::new(StreamInner {
                name: name.into(),
                bytes: AtomicU64::new(bytes),
                records: AtomicU64::new(records),
                tree,
                next_id: AtomicU64::new(last.map_or(1, |l| l + 1)),
                space: self.inner.space.clone(),
                chunked: Mutex::new(chunked),
                marks: Mutex::new(Marks {
                    by_id: marks,
                    last: None,
                }),
            }),
        };
        streams.insert(name.to_owned(), s.clone());
        Ok(s)
    }

    /// The streams opened so far.
    fn open_streams(&self) -> Vec<StreamSpool> {
        self.inner
            .streams
            .lock()
            .expect("spool stream table lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Bytes of entries held, in all streams.
    pub fn used_bytes(&self) -> u64 {
        self.inner.space.used_bytes.load(Ordering::Relaxed)
    }

    /// Records held and not yet delivered, in all streams.
    pub fn records(&self) -> u64 {
        self.inner.space.records.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.inner.space.max_bytes
    }

    /// How long the oldest record held has waited, over all streams; `None` when
    /// the spool is empty or memory-only. Precise to [`MARK_INTERVAL`] (never
    /// under the real age). A few key lookups per stream: cheap enough per scrape.
    pub fn oldest_record_age(&self) -> Result<Option<Duration>, SpoolError> {
        let streams = self.open_streams();
        let mut oldest = None;
        for s in streams {
            if let Some(age) = s.oldest_record_age()? {
                oldest = oldest.max(Some(age));
            }
        }
        Ok(oldest)
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        if let Some(db) = &self.inner.db {
            db.flush_async().await?;
        }
        Ok(())
    }

    /// Waits until every entry written before the call is durable (group commit):
    /// concurrent callers share one fsync, and a caller whose writes an earlier
    /// flush already covered returns at once.
    pub async fn durable(&self) -> Result<(), SpoolError> {
        let Some(db) = &self.inner.db else {
            return Ok(());
        };
        let target = self.inner.space.writes.load(Ordering::Acquire);
        if self.inner.durable.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let _turn = self.inner.commit.lock().await;
        if self.inner.durable.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        // Every write counted here is already in sled's log: the flush covers it.
        let covering = self.inner.space.writes.load(Ordering::Acquire);
        db.flush_async().await?;
        self.inner.durable.fetch_max(covering, Ordering::AcqRel);
        Ok(())
    }

    /// Whether records are kept in memory only.
    pub fn is_memory_only(&self) -> bool {
        self.inner.db.is_none()
    }

    /// Writes a small key through the same path as every write, to show the
    /// spool still answers (the service's watchdog is told only then: sled 0.34
    /// can hang inside a write under heavy load, and a restart replays the spool).
    /// Blocking: call it from a blocking thread.
    pub fn heartbeat(&self) -> Result<(), SpoolError> {
        if let Some(db) = &self.inner.db {
            let _writing = self.inner.space.writing();
            db.insert(b"heartbeat", &now_ms().to_le_bytes())?;
        }
        Ok(())
    }

    /// Leaves a summary of every stream for the next open (see the module docs)
    /// and flushes. Call it when nothing appends or retires any more.
    pub async fn close(&self) -> Result<(), SpoolError> {
        let streams = self.open_streams();
        for s in streams {
            let Some(tree) = &s.inner.tree else {
                continue;
            };
            let last = tree
                .range(key(NS_ENTRY, 0)..=key(NS_ENTRY, u64::MAX))
                .keys()
                .next_back()
                .transpose()?
                .and_then(|k| key_id(&k))
                .unwrap_or(0);
            let mut v = Vec::with_capacity(25);
            v.push(FORMAT_VERSION);
            for n in [
                last,
                s.inner.bytes.load(Ordering::Relaxed),
                s.inner.records.load(Ordering::Relaxed),
            ] {
                v.extend_from_slice(&n.to_le_bytes());
            }
            let _writing = self.inner.space.writing();
            tree.insert([NS_SUMMARY], v)?;
        }
        self.flush().await
    }

    /// A handle that does not keep the spool open, for observers (the metrics)
    /// that may outlive the agent: the database closes when the agent is done.
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

    /// Bytes the spool directory takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, SpoolError> {
        match &self.inner.db {
            Some(db) => Ok(db.size_on_disk()?),
            None => Ok(0),
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

/// The spool of one stream.
#[derive(Clone)]
pub struct StreamSpool {
    inner: Arc<StreamInner>,
}

struct StreamInner {
    name: Arc<str>,
    /// `None` in memory-only mode.
    tree: Option<sled::Tree>,
    next_id: AtomicU64,
    space: Arc<Space>,
    /// Ids of the entries stored in chunks, of those appended or read since the
    /// open (every entry is one or the other before it is retired).
    chunked: Mutex<HashSet<u64>>,
    /// This stream's share of the space's counts.
    bytes: AtomicU64,
    records: AtomicU64,
    /// The time marks, as stored (see the module docs). Held while a mark is
    /// written with its entry and while marks are pruned, so a pruning never misses
    /// an entry whose mark it has seen.
    marks: Mutex<Marks>,
}

struct Marks {
    /// Entry id → Unix milliseconds of its append.
    by_id: BTreeMap<u64, u64>,
    /// When this process last wrote a mark.
    last: Option<std::time::Instant>,
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Reads every entry of a tree: the bytes and records held (less those a progress
/// bitmap marks delivered) and the ids of the chunked entries.
fn count_entries(tree: &sled::Tree) -> Result<(u64, u64, HashSet<u64>), SpoolError> {
    let (mut bytes, mut records) = (0u64, 0u64);
    let mut chunked = HashSet::new();
    for kv in tree.range(key(NS_ENTRY, 0)..=key(NS_ENTRY, u64::MAX)) {
        let (k, v) = kv?;
        bytes += v.len() as u64;
        if k.len() == 11 {
            chunked.extend(key_id(&k));
        }
        if !is_later_chunk(&k) {
            records += entry_count(&v) as u64;
        }
    }
    for kv in tree.range(key(NS_PROGRESS, 0)..=key(NS_PROGRESS, u64::MAX)) {
        let (k, v) = kv?;
        let delivered: u64 = decode_progress(key_id(&k).unwrap_or(0), &v)?
            .iter()
            .map(|w| w.count_ones() as u64)
            .sum();
        records = records.saturating_sub(delivered);
    }
    Ok((bytes, records, chunked))
}

/// Takes the summary a clean stop left (bytes, records), if it still describes
/// the tree: its last entry id is `last`. Removed either way, so a crash after
/// this open cannot leave a stale one.
fn take_summary(tree: &sled::Tree, last: Option<u64>) -> Result<Option<(u64, u64)>, SpoolError> {
    let Some(v) = tree.remove([NS_SUMMARY])? else {
        return Ok(None);
    };
    let field = |i: usize| {
        v.get(1 + 8 * i..9 + 8 * i)
            .map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes")))
    };
    match (v.first(), field(0), field(1), field(2)) {
        (Some(&FORMAT_VERSION), Some(id), Some(bytes), Some(records))
            if v.len() == 25 && last.unwrap_or(0) == id =>
        {
            Ok(Some((bytes, records)))
        }
        _ => Ok(None),
    }
}

/// The id of the first entry of a tree.
fn first_entry_id(tree: &sled::Tree) -> Result<Option<u64>, SpoolError> {
    match tree
        .range(key(NS_ENTRY, 0)..=key(NS_ENTRY, u64::MAX))
        .keys()
        .next()
    {
        Some(k) => Ok(key_id(&k?)),
        None => Ok(None),
    }
}

/// Reads a stream's time marks at open. Marks past the last entry are left from
/// ids used before a restart (ids start again after the last entry held) and go;
/// entries without a mark at or before them (a spool older than marks) get one at
/// the current time, so their age counts at least from this start.
fn load_marks(tree: &sled::Tree, last: Option<u64>) -> Result<BTreeMap<u64, u64>, SpoolError> {
    let mut marks = BTreeMap::new();
    let mut stale = sled::Batch::default();
    for kv in tree.range(key(NS_MARK, 0)..=key(NS_MARK, u64::MAX)) {
        let (k, v) = kv?;
        let id = key_id(&k).unwrap_or(0);
        match (last, <[u8; 8]>::try_from(v.as_ref())) {
            (Some(last), Ok(ms)) if id <= last => {
                marks.insert(id, u64::from_be_bytes(ms));
            }
            _ => stale.remove(&k),
        }
    }
    if let Some(first) = first_entry_id(tree)? {
        if marks.range(..=first).next().is_none() {
            let now = unix_millis(SystemTime::now());
            stale.insert(&key(NS_MARK, first), &now.to_be_bytes());
            marks.insert(first, now);
        }
    }
    tree.apply_batch(stale)?;
    Ok(marks)
}

impl StreamSpool {
    pub fn name(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// Whether records are kept in memory only.
    pub fn is_memory_only(&self) -> bool {
        self.inner.tree.is_none()
    }

    /// Writes a batch of records as one entry and returns its id and size. Fails
    /// with [`SpoolError::Full`] when the spool has no room for it. In memory-only
    /// mode it only assigns the id.
    pub fn append(&self, records: &[UserRecord]) -> Result<(u64, u64), SpoolError> {
        self.append_with_checkpoint(records, None, false)
    }

    /// Like [`append`](Self::append), and writes a checkpoint (name, value) in the
    /// same atomic batch. `waits` says the entry will wait in the spool (the stream
    /// is behind): it is stored in chunks (see the module docs).
    pub fn append_with_checkpoint(
        &self,
        records: &[UserRecord],
        checkpoint: Option<&Checkpoint>,
        waits: bool,
    ) -> Result<(u64, u64), SpoolError> {
        let id = self.reserve_id();
        let bytes = self.write(id, records, checkpoint, waits)?;
        Ok((id, bytes))
    }

    /// Takes the next entry id, for a [`write`](Self::write) that may come later
    /// (ids order the entries; one taken and never written leaves a harmless gap).
    pub fn reserve_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes a batch of records as entry `id` (from [`reserve_id`](Self::reserve_id))
    /// with an optional checkpoint, and returns its size; see
    /// [`append_with_checkpoint`](Self::append_with_checkpoint).
    pub fn write(
        &self,
        id: u64,
        records: &[UserRecord],
        checkpoint: Option<&Checkpoint>,
        waits: bool,
    ) -> Result<u64, SpoolError> {
        let Some(tree) = &self.inner.tree else {
            return Ok(records.iter().map(|r| r.size() as u64).sum());
        };
        let stored = EntryV1 {
            stream: &self.inner.name,
            records: records
                .iter()
                .map(|r| StoredRecord {
                    partition_key: &r.partition_key,
                    explicit_hash_key: r.explicit_hash_key,
                    data: &r.data,
                })
                .collect(),
        };
        let mut value = Vec::with_capacity(
            16 + records
                .iter()
                .map(|r| r.data.len() + r.partition_key.len() + 8)
                .sum::<usize>(),
        );
        value.push(FORMAT_VERSION);
        value.extend_from_slice(&(records.len() as u32).to_le_bytes());
        value.extend_from_slice(&now_ms().to_le_bytes());
        bincode::serde::encode_into_std_write(&stored, &mut value, bincode_config()).map_err(
            |source| SpoolError::Encode {
                records: records.len(),
                source,
            },
        )?;
        let bytes = value.len() as u64;
        let spool = &self.inner.space;
        let used = spool.used_bytes.fetch_add(bytes, Ordering::AcqRel);
        if used + bytes > spool.max_bytes {
            spool.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(SpoolError::Full {
                used,
                max: spool.max_bytes,
                needed: bytes,
            });
        }
        let now = std::time::Instant::now();
        let mut marks = Some(self.inner.marks.lock().expect("spool marks lock poisoned"));
        // The lock is kept only by an append that writes a mark (once a second).
        let mark = match marks.as_mut() {
            Some(m)
                if m.last
                    .is_none_or(|t| now.duration_since(t) >= MARK_INTERVAL) =>
            {
                m.last = Some(now);
                Some(unix_millis(SystemTime::now()))
            }
            _ => {
                marks = None;
                None
            }
        };
        let chunked = waits
            && value.len() > CHUNK_BYTES
            && chunks_of(value.len() as u64) <= u64::from(u16::MAX);
        if chunked {
            self.inner
                .chunked
                .lock()
                .expect("spool chunk set lock poisoned")
                .insert(id);
        }
        let writing = spool.writing();
        let written = match (checkpoint, mark, chunked) {
            (None, None, false) => tree.insert(key(NS_ENTRY, id), value).map(|_| ()),
            (c, m, _) => {
                let mut batch = sled::Batch::default();
                if chunked {
                    for (i, piece) in value.chunks(CHUNK_BYTES).enumerate() {
                        batch.insert(&chunk_key(id, i as u16), piece);
                    }
                } else {
                    batch.insert(&key(NS_ENTRY, id), value);
                }
                if let Some(c) = c {
                    batch.insert(checkpoint_key(&c.name), c.value.as_slice());
                }
                if let Some(ms) = m {
                    batch.insert(&key(NS_MARK, id), &ms.to_be_bytes());
                }
                tree.apply_batch(batch)
            }
        };
        drop(writing);
        if let (Some(m), Some(ms), true) = (marks.as_mut(), mark, written.is_ok()) {
            m.by_id.insert(id, ms);
        }
        drop(marks);
        if let Err(e) = written {
            if chunked {
                self.inner
                    .chunked
                    .lock()
                    .expect("spool chunk set lock poisoned")
                    .remove(&id);
            }
            spool.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(e.into());
        }
        spool
            .records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.inner
            .records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.inner.bytes.fetch_add(bytes, Ordering::Relaxed);
        spool.writes.fetch_add(1, Ordering::Release);
        Ok(bytes)
    }

    /// Reads up to `max_bytes` of entries (at least one, if any) with ids `>= from`,
    /// in id order, skipping the ids for which `skip` is true. Blocking: call it from
    /// a blocking thread.
    pub fn read_from(
        &self,
        from: u64,
        max_bytes: u64,
        skip: impl Fn(u64) -> bool,
    ) -> Result<(Vec<Entry>, Option<u64>), SpoolError> {
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut next = None;
        let Some(tree) = &self.inner.tree else {
            return Ok((out, next));
        };
        let mut values = tree
            .range(key(NS_ENTRY, from)..=key(NS_ENTRY, u64::MAX))
            .peekable();
        while let Some(kv) = values.next() {
            let (k, v) = kv?;
            let id = key_id(&k).ok_or_else(|| SpoolError::Corrupt {
                id: 0,
                reason: "short key".into(),
            })?;
            // The rest of a chunked entry.
            let mut pieces = Vec::new();
            while k.len() == 11 {
                match values.peek() {
                    Some(Ok((n, _))) if n.len() == 11 && key_id(n) == Some(id) => {
                        let (_, piece) = values.next().expect("peeked")?;
                        pieces.push(piece);
                    }
                    _ => break,
                }
            }
            if skip(id) {
                continue;
            }
            if total >= max_bytes && !out.is_empty() {
                next = Some(id);
                break;
            }
            if k.len() == 11 {
                self.inner
                    .chunked
                    .lock()
                    .expect("spool chunk set lock poisoned")
                    .insert(id);
            }
            let value: std::borrow::Cow<'_, [u8]> = if pieces.is_empty() {
                std::borrow::Cow::Borrowed(&v)
            } else {
                let mut whole = Vec::with_capacity(v.len() + pieces.len() * CHUNK_BYTES);
                whole.extend_from_slice(&v);
                for p in &pieces {
                    whole.extend_from_slice(p);
                }
                std::borrow::Cow::Owned(whole)
            };
            total += value.len() as u64;
            let records = decode_entry(id, &value)?;
            let delivered = match tree.get(key(NS_PROGRESS, id))? {
                Some(p) => Some(decode_progress(id, &p)?),
                None => None,
            };
            out.push(Entry {
                id,
                bytes: value.len() as u64,
                records,
                delivered,
                spooled_at_ms: entry_time(&value),
            });
        }
        Ok((out, next))
    }

    /// Records the outcome of deliveries in one atomic write: `done` entries (id,
    /// bytes) are removed with their progress, `partial` entries get their progress
    /// bitmap stored; `records` user records were delivered (or given up) in all.
    pub fn retire(
        &self,
        done: &[(u64, u64)],
        partial: &[(u64, &[u64])],
        records: u64,
    ) -> Result<(), SpoolError> {
        let Some(tree) = &self.inner.tree else {
            return Ok(());
        };
        self.inner
            .space
            .records
            .fetch_sub(records, Ordering::Relaxed);
        self.inner.records.fetch_sub(records, Ordering::Relaxed);
        if done.is_empty() && partial.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        {
            let mut chunked = self
                .inner
                .chunked
                .lock()
                .expect("spool chunk set lock poisoned");
            for &(id, bytes) in done {
                // An entry neither appended nor read since the open is looked up.
                let is_chunked = chunked.remove(&id)
                    || (bytes as usize > CHUNK_BYTES && !tree.contains_key(key(NS_ENTRY, id))?);
                if is_chunked {
                    for i in 0..chunks_of(bytes) {
                        batch.remove(&chunk_key(id, i as u16));
                    }
                } else {
                    batch.remove(&key(NS_ENTRY, id));
                }
                batch.remove(&key(NS_PROGRESS, id));
            }
        }
        for &(id, bits) in partial {
            let mut v = Vec::with_capacity(1 + bits.len() * 8);
            v.push(FORMAT_VERSION);
            for w in bits {
                v.extend_from_slice(&w.to_le_bytes());
            }
            batch.insert(&key(NS_PROGRESS, id), v);
        }
        {
            // Released before the marks are pruned (they lock marks, then this).
            let _writing = self.inner.space.writing();
            tree.apply_batch(batch)?;
        }
        let freed: u64 = done.iter().map(|&(_, b)| b).sum();
        self.inner.bytes.fetch_sub(freed, Ordering::Relaxed);
        if freed > 0 {
            self.inner
                .space
                .used_bytes
                .fetch_sub(freed, Ordering::AcqRel);
            self.inner
                .space
                .freed_at_ms
                .store(now_ms(), Ordering::Relaxed);
            self.inner.space.freed.notify_waiters();
        }
        if !done.is_empty() {
            self.prune_marks(tree)?;
        }
        Ok(())
    }

    /// Drops the time marks behind the first entry, keeping the one at or before it
    /// (it dates that entry) and always the newest (it dates the entries appended
    /// after it without a mark of their own).
    fn prune_marks(&self, tree: &sled::Tree) -> Result<(), SpoolError> {
        let mut marks = self.inner.marks.lock().expect("spool marks lock poisoned");
        if marks.by_id.len() < 2 {
            return Ok(());
        }
        let newest = marks.by_id.keys().next_back().copied().unwrap_or(0);
        let keep_from = match first_entry_id(tree)? {
            Some(first) => marks
                .by_id
                .range(..=first)
                .next_back()
                .map_or(0, |(&id, _)| id),
            None => newest,
        };
        let stale: Vec<u64> = marks.by_id.range(..keep_from).map(|(&id, _)| id).collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for id in &stale {
            batch.remove(&key(NS_MARK, *id));
            marks.by_id.remove(id);
        }
        let _writing = self.inner.space.writing();
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// How long this stream's oldest record has waited (see [`Spool::oldest_record_age`]).
    pub fn oldest_record_age(&self) -> Result<Option<Duration>, SpoolError> {
        let Some(tree) = &self.inner.tree else {
            return Ok(None);
        };
        let marks = self.inner.marks.lock().expect("spool marks lock poisoned");
        let Some(first) = first_entry_id(tree)? else {
            return Ok(None);
        };
        // The mark at or before the first entry; failing that (an entry appended
        // while its mark was being pruned), the next one, off by under a second.
        let appended = marks
            .by_id
            .range(..=first)
            .next_back()
            .or_else(|| marks.by_id.range(first..).next())
            .map(|(_, &ms)| ms);
        Ok(appended
            .map(|ms| Duration::from_millis(unix_millis(SystemTime::now()).saturating_sub(ms))))
    }

    /// Writes a checkpoint alone (a position that moved without records, such as
    /// past refused lines).
    pub fn set_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), SpoolError> {
        if let Some(tree) = &self.inner.tree {
            let _writing = self.inner.space.writing();
            tree.insert(
                checkpoint_key(&checkpoint.name),
                checkpoint.value.as_slice(),
            )?;
        }
        Ok(())
    }

    /// Every checkpoint of this stream, by name.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, SpoolError> {
        let Some(tree) = &self.inner.tree else {
            return Ok(Vec::new());
        };
        tree.scan_prefix([NS_CHECKPOINT])
            .map(|kv| {
                let (k, v) = kv?;
                Ok(Checkpoint {
                    name: k[1..].to_vec(),
                    value: v.to_vec(),
                })
            })
            .collect()
    }

    /// Removes a checkpoint (its source is gone).
    pub fn remove_checkpoint(&self, name: &[u8]) -> Result<(), SpoolError> {
        if let Some(tree) = &self.inner.tree {
            let _writing = self.inner.space.writing();
            tree.remove(checkpoint_key(name))?;
        }
        Ok(())
    }

    /// Number of entries held (scans the keys; for tests and status).
    pub fn entry_count(&self) -> usize {
        self.inner.tree.as_ref().map_or(0, |t| {
            t.range(key(NS_ENTRY, 0)..=key(NS_ENTRY, u64::MAX))
                .keys()
                .filter(|k| k.as_ref().is_ok_and(|k| !is_later_chunk(k)))
                .count()
        })
    }
}

fn decode_entry(id: u64, v: &[u8]) -> Result<Vec<UserRecord>, SpoolError> {
    let corrupt = |reason: String| SpoolError::Corrupt { id, reason };
    match v.first() {
        Some(&FORMAT_VERSION) if v.len() >= HEADER_BYTES => {}
        Some(&FORMAT_VERSION) => return Err(corrupt("truncated header".into())),
        Some(other) => return Err(corrupt(format!("unknown format version {other}"))),
        None => return Err(corrupt("empty value".into())),
    }
    // One copy of the value; every record's data is a slice of it.
    let whole = Bytes::copy_from_slice(&v[HEADER_BYTES..]);
    let (entry, _): (EntryV1<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(&whole, bincode_config())
            .map_err(|e| corrupt(e.to_string()))?;
    Ok(entry
        .records
        .iter()
        .map(|r| UserRecord {
            partition_key: r.partition_key.to_owned(),
            explicit_hash_key: r.explicit_hash_key,
            data: whole.slice_ref(r.data),
        })
        .collect())
}

/// Entry header: version, record count, spool time.
const HEADER_BYTES: usize = 1 + 4 + 8;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When an entry was spooled, from its header.
fn entry_time(v: &[u8]) -> u64 {
    v.get(5..13).map_or(0, |c| {
        u64::from_le_bytes(c.try_into().expect("eight bytes"))
    })
}

/// The record count of an entry, from its header.
fn entry_count(v: &[u8]) -> u32 {
    v.get(1..5)
        .map_or(0, |c| u32::from_le_bytes(c.try_into().expect("four bytes")))
}

fn decode_progress(id: u64, v: &[u8]) -> Result<Vec<u64>, SpoolError> {
    match v.split_first() {
        Some((&FORMAT_VERSION, rest)) if rest.len() % 8 == 0 => Ok(rest
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunks_exact gives 8 bytes")))
            .collect()),
        _ => Err(SpoolError::Corrupt {
            id,
            reason: "invalid progress value".into(),
        }),
    }
}

/// Opens a spool at `dir` with the given limits (for tests and tools).
pub fn open_at(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
    Spool::open(&SpoolOptions {
        dir: Some(dir.to_owned()),
        max_bytes,
        flush_interval_ms: 100,
        cache_capacity_bytes: 16 << 20,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pk: &str, data: &str) -> UserRecord {
        UserRecord::new(pk, data.to_owned())
    }

    #[test]
    fn entries_survive_reopen_and_partial_progress_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = open_at(dir.path(), 1 << 20).unwrap();
            let s = spool.stream("a").unwrap();
            let (id1, b1) = s.append(&[rec("k", "one"), rec("k", "two")]).unwrap();
            let (id2, _) = s.append(&[rec("j", "three")]).unwrap();
            assert!(id2 > id1);
            let other = spool.stream("b").unwrap();
            other.append(&[rec("x", "elsewhere")]).unwrap();
            s.retire(&[], &[(id1, &[0b01])], 1).unwrap();
            assert_eq!(spool.records(), 3);
            assert!(b1 > 0);
            futures_flush(&spool);
        }
        let spool = open_at(dir.path(), 1 << 20).unwrap();
        assert!(spool.used_bytes() > 0);
        // Four records written, one delivered.
        assert_eq!(spool.records(), 3);
        let s = spool.stream("a").unwrap();
        let (entries, next) = s.read_from(0, u64::MAX, |_| false).unwrap();
        assert_eq!(next, None);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].records, vec![rec("k", "one"), rec("k", "two")]);
        assert_eq!(entries[0].delivered, Some(vec![0b01]));
        assert_eq!(entries[1].records, vec![rec("j", "three")]);
        assert_eq!(entries[1].delivered, None);
        // New ids continue after the last one.
        let (id3, _) = s.append(&[rec("z", "four")]).unwrap();
        assert!(id3 > entries[1].id);
        let before = spool.used_bytes();
        s.retire(&[(entries[0].id, entries[0].bytes)], &[], 1)
            .unwrap();
        assert_eq!(spool.used_bytes(), before - entries[0].bytes);
        let (entries, _) = s.read_from(0, u64::MAX, |_| false).unwrap();
        assert_eq!(entries.len(), 2);
        let b = spool.stream("b").unwrap();
        assert_eq!(
            b.read_from(0, u64::MAX, |_| false).unwrap().0[0].records,
            vec![rec("x", "elsewhere")]
        );
    }

    fn futures_flush(spool: &Spool) {
        spool.inner.db.as_ref().unwrap().flush().unwrap();
    }

    #[test]
    fn checkpoints_are_written_with_their_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = open_at(dir.path(), 1 << 20).unwrap();
            let s = spool.stream("a").unwrap();
            let c = Checkpoint {
                name: b"file-1".to_vec(),
                value: b"pos=10".to_vec(),
            };
            s.append_with_checkpoint(&[rec("k", "line")], Some(&c), false)
                .unwrap();
            s.set_checkpoint(&Checkpoint {
                name: b"file-2".to_vec(),
                value: b"pos=3".to_vec(),
            })
            .unwrap();
            s.remove_checkpoint(b"file-2").unwrap();
            futures_flush(&spool);
        }
        let spool = open_at(dir.path(), 1 << 20).unwrap();
        let s = spool.stream("a").unwrap();
        assert_eq!(
            s.checkpoints().unwrap(),
            vec![Checkpoint {
                name: b"file-1".to_vec(),
                value: b"pos=10".to_vec()
            }]
        );
        // Checkpoints are not entries, nor is the heartbeat.
        spool.heartbeat().unwrap();
        assert_eq!(s.entry_count(), 1);
        assert_eq!(spool.records(), 1);
    }

    /// Moves the time mark of entry `id` back by `by` (as if written that long ago).
    fn backdate_mark(s: &StreamSpool, id: u64, by: Duration) {
        let ms = unix_millis(SystemTime::now() - by);
        let mut marks = s.inner.marks.lock().unwrap();
        marks.by_id.insert(id, ms);
        s.inner
            .tree
            .as_ref()
            .unwrap()
            .insert(key(NS_MARK, id), &ms.to_be_bytes())
            .unwrap();
    }

    fn age_secs(spool: &Spool) -> Option<u64> {
        spool.oldest_record_age().unwrap().map(|d| d.as_secs())
    }

    #[test]
    fn oldest_record_age_comes_from_time_marks_across_retires_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = open_at(dir.path(), 1 << 20).unwrap();
            let s = spool.stream("a").unwrap();
            assert_eq!(age_secs(&spool), None);
            let e1 = s.append(&[rec("k", "one")]).unwrap();
            backdate_mark(&s, e1.0, Duration::from_secs(60));
            // A mark is due again (as a second later).
            s.inner.marks.lock().unwrap().last = None;
            let e2 = s.append(&[rec("k", "two")]).unwrap();
            backdate_mark(&s, e2.0, Duration::from_secs(30));
            // Appended within MARK_INTERVAL of e2's own mark: no mark of its own.
            let e3 = s.append(&[rec("k", "three")]).unwrap();
            assert_eq!(s.inner.marks.lock().unwrap().by_id.len(), 2);
            let age = age_secs(&spool).unwrap();
            assert!((60..62).contains(&age), "{age}");
            s.retire(&[e1], &[], 1).unwrap();
            // e1's mark is pruned; e2's dates the first entry.
            assert_eq!(
                s.inner.marks.lock().unwrap().by_id.keys().next(),
                Some(&e2.0)
            );
            let age = age_secs(&spool).unwrap();
            assert!((30..32).contains(&age), "{age}");
            futures_flush(&spool);
            let _ = e3;
        }
        {
            let spool = open_at(dir.path(), 1 << 20).unwrap();
            let age = age_secs(&spool).unwrap();
            assert!((30..32).contains(&age), "marks survive a reopen: {age}");
            let s = spool.stream("a").unwrap();
            let (entries, _) = s.read_from(0, u64::MAX, |_| false).unwrap();
            let done: Vec<(u64, u64)> = entries.iter().map(|e| (e.id, e.bytes)).collect();
            s.retire(&done, &[], 2).unwrap();
            assert_eq!(age_secs(&spool), None);
            futures_flush(&spool);
        }
        let spool = open_at(dir.path(), 1 << 20).unwrap();
        let s = spool.stream("a").unwrap();
        // Ids start again after an empty spool: the old marks are gone.
        assert!(s.inner.marks.lock().unwrap().by_id.is_empty());
        s.append(&[rec("k", "new")]).unwrap();
        assert_eq!(age_secs(&spool), Some(0));
    }

    #[test]
    fn waiting_entries_are_chunked_read_whole_and_retired_whole() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<UserRecord> = (0..40)
            .map(|i| rec(&format!("k{i}"), &format!("{i:0>500}")))
            .collect();
        let ids = {
            let spool = open_at(dir.path(), 1 << 24).unwrap();
            let s = spool.stream("a").unwrap();
            let whole = s.append(&big).unwrap();
            let c = Checkpoint {
                name: b"file-1".to_vec(),
                value: b"pos=1".to_vec(),
            };
            let chunked = s.append_with_checkpoint(&big, Some(&c), true).unwrap();
            let small = s
                .append_with_checkpoint(&[rec("k", "small")], None, true)
                .unwrap();
            assert_eq!(whole.1, chunked.1, "the same value, stored in pieces");
            let tree = s.inner.tree.as_ref().unwrap();
            let pieces = tree.scan_prefix(&key(NS_ENTRY, chunked.0)[..]).count() as u64;
            assert_eq!(pieces, chunks_of(chunked.1));
            assert!(pieces > 1);
            // A value under one chunk is stored whole.
            assert!(tree.get(key(NS_ENTRY, small.0)).unwrap().is_some());
            assert_eq!(s.entry_count(), 3);
            s.retire(&[], &[(chunked.0, &[0b11])], 2).unwrap();
            futures_flush(&spool);
            [whole, chunked, small]
        };
        let spool = open_at(dir.path(), 1 << 24).unwrap();
        assert_eq!(spool.records(), 40 + 40 - 2 + 1);
        assert_eq!(spool.used_bytes(), ids.iter().map(|e| e.1).sum::<u64>());
        let s = spool.stream("a").unwrap();
        assert_eq!(s.checkpoints().unwrap().len(), 1);
        // Reading from the middle of the ids and across chunked and whole entries.
        let (entries, next) = s.read_from(ids[1].0, u64::MAX, |_| false).unwrap();
        assert_eq!(next, None);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].records, big);
        assert_eq!(entries[0].bytes, ids[1].1);
        assert_eq!(entries[0].delivered, Some(vec![0b11]));
        assert_eq!(entries[1].records, vec![rec("k", "small")]);
        let (entries, next) = s.read_from(0, 1, |_| false).unwrap();
        assert_eq!((entries.len(), next), (1, Some(ids[1].0)));
        // The chunked entry is known as chunked after the reopen: retiring it
        // removes every piece.
        s.retire(&[(ids[1].0, ids[1].1), (ids[0].0, ids[0].1)], &[], 78)
            .unwrap();
        let tree = s.inner.tree.as_ref().unwrap();
        assert_eq!(tree.scan_prefix([NS_ENTRY]).count(), 1);
        assert_eq!(tree.scan_prefix([NS_PROGRESS]).count(), 0);
        assert_eq!(s.entry_count(), 1);
        assert_eq!(spool.used_bytes(), ids[2].1);
    }

    #[test]
    fn a_clean_close_leaves_a_summary_the_next_open_trusts_only_if_it_matches() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let big: Vec<UserRecord> = (0..20).map(|i| rec("k", &format!("{i:0>400}"))).collect();
        let (bytes, kept) = {
            let spool = open_at(dir.path(), 1 << 24).unwrap();
            let s = spool.stream("a").unwrap();
            let a = s.append(&big).unwrap();
            let b = s.append_with_checkpoint(&big, None, true).unwrap();
            s.append(&[rec("k", "gone")]).unwrap();
            let c = spool.stream("b").unwrap().append(&[rec("k", "b")]).unwrap();
            s.retire(&[], &[(a.0, &[0b111])], 3).unwrap();
            let (entries, _) = s.read_from(0, u64::MAX, |_| false).unwrap();
            s.retire(&[(entries[2].id, entries[2].bytes)], &[], 1)
                .unwrap();
            rt.block_on(spool.close()).unwrap();
            (a.1 + b.1 + c.1, b)
        };
        let counts = |spool: &Spool| (spool.used_bytes(), spool.records());
        // Taken from the summary: the same counts as a full read gives.
        let summary_counts = {
            let spool = open_at(dir.path(), 1 << 24).unwrap();
            let s = spool.stream("a").unwrap();
            assert!(s.inner.chunked.lock().unwrap().is_empty(), "nothing read");
            assert!(s
                .inner
                .tree
                .as_ref()
                .unwrap()
                .get([NS_SUMMARY])
                .unwrap()
                .is_none());
            let got = counts(&spool);
            assert_eq!(got, (bytes, 20 - 3 + 20 + 1));
            // A chunked entry is known once read, and retired whole.
            let (entries, _) = s.read_from(kept.0, u64::MAX, |_| false).unwrap();
            assert_eq!(entries[0].records, big);
            assert!(s.inner.chunked.lock().unwrap().contains(&kept.0));
            rt.block_on(spool.close()).unwrap();
            got
        };
        {
            let spool = open_at(dir.path(), 1 << 24).unwrap();
            let s = spool.stream("a").unwrap();
            assert_eq!(counts(&spool), summary_counts);
            // Retired without being read first: found chunked all the same.
            s.retire(&[kept], &[], 20).unwrap();
            assert_eq!(
                s.inner
                    .tree
                    .as_ref()
                    .unwrap()
                    .scan_prefix(&key(NS_ENTRY, kept.0)[..])
                    .count(),
                0
            );
            futures_flush(&spool);
        }
        {
            // No summary (the last open took it and there was no clean close):
            // every entry is read.
            let spool = open_at(dir.path(), 1 << 24).unwrap();
            assert_eq!(counts(&spool), (bytes - kept.1, 20 - 3 + 1));
            rt.block_on(spool.close()).unwrap();
            // Written after the summary: it no longer matches and is not used.
            spool
                .stream("a")
                .unwrap()
                .append(&[rec("k", "late")])
                .unwrap();
            futures_flush(&spool);
        }
        // sled lets go of its lock file when its background flush is done.
        let spool = (0..100)
            .find_map(|_| {
                open_at(dir.path(), 1 << 24)
                    .inspect_err(|_| std::thread::sleep(Duration::from_millis(20)))
                    .ok()
            })
            .expect("spool opens again");
        assert_eq!(spool.records(), 20 - 3 + 1 + 1);
    }

    #[test]
    fn full_spool_refuses_and_read_respects_budget() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open_at(dir.path(), 300).unwrap();
        let s = spool.stream("a").unwrap();
        let big = "x".repeat(100);
        s.append(&[rec("k", &big)]).unwrap();
        s.append(&[rec("k", &big)]).unwrap();
        assert!(matches!(
            s.append(&[rec("k", &big)]),
            Err(SpoolError::Full { max: 300, .. })
        ));
        let (entries, next) = s.read_from(0, 1, |_| false).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(next, Some(entries[0].id + 1));
        let (entries, _) = s.read_from(0, u64::MAX, |id| id == 1).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, 2);
    }
}
