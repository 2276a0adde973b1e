//! File tailing source: the files matched by each `[[file]]` block's globs, read as
//! they grow, across rotation, with the read position stored in the same atomic
//! spool write as the records read up to it.
//!
//! # Why it is shaped this way
//!
//! **Exactly-once from a file into the spool.** A file's checkpoint (its read
//! position) is written by [`Producer::spool_batch`] in the *same* spool frame as
//! the records read up to it. After a crash the spool holds either both or neither, so
//! the file is read again from exactly the first byte that did not reach the spool.
//! The position is a *consumed* offset: the end of the last line that went into a
//! spooled record (or was deliberately skipped). A partial last line (no newline
//! yet), a multiline record still collecting lines, and a line being truncated are
//! all *after* it, so they are read again after a crash, never lost or doubled.
//!
//! **One batch per read.** A read of a file (up to [`READ_BYTES`]) becomes records
//! that are cut into batches of [`BATCH_BYTES`]; each batch is one spool entry with
//! the file's checkpoint: one write of tens of KiB per entry instead of one per
//! line. A line's data is a slice of the read buffer: nothing is copied between the
//! file and the spool encoder.
//!
//! **One thread for all files.** Reads, `stat`s and directory walks are blocking
//! I/O; they run on one dedicated blocking thread ([`spawn`]) that owns every tailed
//! file of every block, so the async workers never wait on a disk. The thread calls
//! the producer through the runtime handle; while the spool is full that call waits
//! (the tailer pauses, nothing is read, nothing is lost) until space is freed or the
//! agent stops. A busy file yields after [`READ_BUDGET_BYTES`] so it cannot starve
//! the others.
//!
//! **Discovery.** inotify (the `notify` crate) watches the literal leading directory
//! of every include pattern; its events are hints sent through a bounded channel
//! ([`EVENT_CHANNEL`]). When the channel is full the event is dropped and a full
//! rescan is scheduled instead. Every `rescan_interval_ms` the globs are walked
//! again and every open file is checked for rotation and new data: the fallback for
//! missed events and filesystems without inotify.
//!
//! # File identity and checkpoints
//!
//! A file is its device and inode, plus a fingerprint of its first
//! [`FINGERPRINT_BYTES`] bytes. The checkpoint's *name* is `file/` + device + inode
//! (big-endian): it never changes while the file lives, even while the file is still
//! shorter than the fingerprint, and two existing files never share it. The
//! checkpoint's *value* holds the position, the length and FNV-1a hash of the
//! fingerprint (the first `min(256, position)` bytes: the bytes already consumed, so
//! it grows with a short file and is fixed from 256 bytes on) and the included path
//! the file was tailed under (start-up looks for a rotated file near it):
//!
//! ```text
//! version (1) | position u64 LE | fingerprint length u16 LE | fingerprint FNV-1a u64 LE | path bytes
//! ```
//!
//! A checkpoint whose device and inode match but whose fingerprint does not (or whose
//! position is past the end) belongs to an earlier file: the inode was reused, or the
//! file was truncated while the agent was stopped. The file is read from its start.
//!
//! At start-up, each file found is matched to its checkpoint and resumed at the
//! stored position; a file without one starts at `read_from` (files that appear later
//! always start at 0, so nothing written after start-up is skipped). A checkpoint
//! that matches no included file is looked for in its last directory: found under
//! another name (rotated while the agent was stopped), that file is read to its end
//! from the stored position (from 0, after its copy, if it was truncated too) and
//! then closed; gone but with a copy (copytruncate, then deleted), the copy is read
//! from the stored position under the original's checkpoint; otherwise the
//! checkpoint is removed. A file that is closed at run time (rotated or deleted, read
//! to the end) has its checkpoint removed too. A checkpoint is written when a file is
//! opened, so a crash before its first line cannot make a `read_from = "end"` restart
//! skip it.
//!
//! # Rotation
//!
//! - **rename + create**: the path now names another file (or none). The old handle
//!   is kept and read to its end; once it has not grown for `rotate_wait_ms` its last
//!   partial line is sent as a record and it is closed. The new file is read from 0.
//! - **delete**: the same: the open handle is read to its end, then dropped with its
//!   checkpoint.
//! - **copytruncate**: the file shrinks below the read position, or its first bytes
//!   no longer match the fingerprint (the writer already wrote past the old position
//!   again). WARN. The copy is looked for in the same directory (a file other than
//!   any tailed one that starts with the same bytes); if found, what it holds past
//!   the consumed position is read from it, then the file is read again from 0. Lines
//!   written after the copy was made and before the truncation are in neither file:
//!   that race is inherent to copytruncate, and those lines are lost unless they were
//!   read before the truncation.
//! - A renamed file that is matched again under its new name (both names included)
//!   keeps its handle and position: same device and inode.
//!
//! # Lines and records
//!
//! A record is a line without its `\n` (and `\r`). Empty lines are skipped. With
//! `multiline_start`, a line that does not match starts no record: it is appended,
//! after a `\n`, to the record before it, which is sent when the next matching line
//! arrives or when no line was added for `multiline_timeout_ms`. A line longer than
//! `max_record_bytes` is split into records of that size (at a UTF-8 character
//! boundary when there is one nearby), streaming, so a line of any length uses
//! bounded memory; or truncated (the rest is read and dropped). An oversized line
//! ends any multiline record in progress and is never merged into one. Lines that are
//! not valid UTF-8 are passed, replaced (U+FFFD) or rejected. Each of these is
//! counted, and logged once per file (later ones are only counted).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{FileConfig, InvalidUtf8, Oversized, PartitionKey, ReadFrom};
use crate::metrics::{FileEvent, LineAction, Metrics, RejectReason, Source};
use crate::producer::{Pace, ProduceError, Producer};
use crate::record::{random_partition_key, UserRecord};
use crate::spool::Checkpoint;

/// Source kind, as it appears in metrics.
pub const KIND: Source = Source::File;
/// Bytes of a file's start that make its fingerprint.
pub const FINGERPRINT_BYTES: usize = 256;
/// Size of one read.
pub const READ_BYTES: usize = 128 * 1024;
/// A batch (one spool entry) is cut at this many bytes, like the socket source's.
pub const BATCH_BYTES: usize = super::socket::BATCH_BYTES;
/// Most bytes read from one file before the others get a turn.
pub const READ_BUDGET_BYTES: u64 = 8 << 20;
/// inotify events queued for the tailer thread; past this they are dropped and a
/// rescan is scheduled (events are hints, the rescan finds everything).
pub const EVENT_CHANNEL: usize = 4096;
/// Longest partition key this source makes, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// `read_from = "end"` starts after the last newline within this many bytes of the
/// end, so a half-written last line is not sent as a fragment.
const END_LOOKBACK_BYTES: u64 = 64 * 1024;
/// Wait before reading a file again after a read or spool error.
const RETRY: Duration = Duration::from_secs(1);
/// While delivery keeps up, a file is read at its pace (the file itself holds what
/// is not read yet, so copying it ahead into the spool would only cost); when
/// delivery stalls (an outage), the file is read into the spool, where rotation and
/// deletion cannot reach it.
const PACE: Pace = Pace {
    handover_wait: Duration::from_millis(500),
    read_ahead_bytes: 64 << 20,
    stalled_after: Duration::from_secs(5),
};
const CHECKPOINT_PREFIX: &[u8] = b"file/";
const CHECKPOINT_VERSION: u8 = 1;

/// Errors of the file source.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot spool records of {path}")]
    Spool {
        path: PathBuf,
        #[source]
        source: ProduceError,
    },
    #[error("cannot read or change the checkpoints of stream {stream:?}")]
    Checkpoints {
        stream: String,
        #[source]
        source: ProduceError,
    },
    #[error("the file source is stopping")]
    Stopped,
}

impl FileError {
    fn spool(path: &Path, source: ProduceError) -> FileError {
        match source {
            ProduceError::Stopped => FileError::Stopped,
            source => FileError::Spool {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// Where the tailer's batches and checkpoints go: the producer in the agent, a
/// model in tests. `spool` must write the records and the checkpoint atomically and
/// may block (a full spool); an empty `records` writes the checkpoint alone.
pub trait Sink {
    fn spool(
        &mut self,
        stream: &str,
        records: Vec<UserRecord>,
        checkpoint: &Checkpoint,
    ) -> Result<(), ProduceError>;
    fn checkpoints(&mut self, stream: &str) -> Result<Vec<Checkpoint>, ProduceError>;
    fn remove_checkpoint(&mut self, stream: &str, name: &[u8]) -> Result<(), ProduceError>;
}

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
    ) -> Result<(), ProduceError> {
        let (producer, shutdown) = (&self.producer, &self.shutdown);
        self.runtime.block_on(async {
            // A spool that stays full must not hold up the shutdown. Dropping the
            // write leaves the checkpoint where it was: the lines are read again at
            // the next start.
            tokio::select! {
                biased;
                r = producer.spool_batch(stream, KIND, records, None, Some(checkpoint), Some(PACE)) => r,
                _ = shutdown.cancelled() => Err(ProduceError::Stopped),
            }
        })
    }

    fn checkpoints(&mut self, stream: &str) -> Result<Vec<Checkpoint>, ProduceError> {
        self.producer.checkpoints(stream)
    }

    fn remove_checkpoint(&mut self, stream: &str, name: &[u8]) -> Result<(), ProduceError> {
        self.producer.remove_checkpoint(stream, name)
    }
}

/// Device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The checkpoint name of this file.
    pub fn checkpoint_name(&self) -> Vec<u8> {
        let mut name = CHECKPOINT_PREFIX.to_vec();
        name.extend_from_slice(&self.dev.to_be_bytes());
        name.extend_from_slice(&self.ino.to_be_bytes());
        name
    }

    fn from_checkpoint_name(name: &[u8]) -> Option<FileId> {
        let rest = name.strip_prefix(CHECKPOINT_PREFIX)?;
        if rest.len() != 16 {
            return None;
        }
        Some(FileId {
            dev: u64::from_be_bytes(rest[..8].try_into().ok()?),
            ino: u64::from_be_bytes(rest[8..].try_into().ok()?),
        })
    }
}

/// A decoded checkpoint value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Consumed offset: everything before it is in the spool (or was skipped).
    pub offset: u64,
    pub fingerprint_len: u16,
    pub fingerprint: u64,
    /// Where the file was last seen.
    pub path: PathBuf,
}

impl Position {
    pub fn encode(&self) -> Vec<u8> {
        let path = self.path.as_os_str().as_bytes();
        let mut v = Vec::with_capacity(19 + path.len());
        v.push(CHECKPOINT_VERSION);
        v.extend_from_slice(&self.offset.to_le_bytes());
        v.extend_from_slice(&self.fingerprint_len.to_le_bytes());
        v.extend_from_slice(&self.fingerprint.to_le_bytes());
        v.extend_from_slice(path);
        v
    }

    pub fn decode(v: &[u8]) -> Option<Position> {
        if v.first() != Some(&CHECKPOINT_VERSION) || v.len() < 19 {
            return None;
        }
        Some(Position {
            offset: u64::from_le_bytes(v[1..9].try_into().ok()?),
            fingerprint_len: u16::from_le_bytes(v[9..11].try_into().ok()?),
            fingerprint: u64::from_le_bytes(v[11..19].try_into().ok()?),
            path: PathBuf::from(std::ffi::OsStr::from_bytes(&v[19..])),
        })
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms (the fingerprint is
/// stored; `line_hash` keys must not change between releases).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The first `n` bytes of a file (fewer if it is shorter).
fn read_head(file: &File, n: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// The end of `s[..max]` moved back to a UTF-8 character boundary, when one is
/// within 3 bytes (binary data is cut at `max`).
fn char_boundary(s: &[u8], max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut end = max;
    while end > 0 && max - end < 3 && (s[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    if end == 0 || (s[end] & 0xC0) == 0x80 {
        max
    } else {
        end
    }
}

/// Cuts a key to at most [`MAX_KEY_BYTES`], keeping its end (the file name of a
/// path), at a character boundary.
fn key_tail(s: &str) -> String {
    if s.len() <= MAX_KEY_BYTES {
        return s.to_owned();
    }
    let mut start = s.len() - MAX_KEY_BYTES;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

/// The value of top-level `field` of a JSON object line, as a string (strings as
/// they are, numbers and booleans as written). Stops parsing once found.
pub fn json_field(line: &[u8], field: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};

    struct Key<'de>(Cow<'de, str>);
    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }

    struct Find<'f, 'o> {
        field: &'f str,
        out: &'o mut Option<String>,
    }
    impl<'de> DeserializeSeed<'de> for Find<'_, '_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Find<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                if k == self.field {
                    *self.out = match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(s) => Some(s),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        serde_json::Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    };
                    // Found: the rest of the line need not be parsed.
                    return Err(A::Error::custom("found"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }

    let mut out = None;
    let mut de = serde_json::Deserializer::from_slice(line);
    let _ = Find {
        field,
        out: &mut out,
    }
    .deserialize(&mut de);
    out
}

/// A multiline record collecting lines.
struct Pending {
    data: BytesMut,
    /// Offset of its first line.
    start: u64,
    /// When its last line was added.
    last: Instant,
    truncated: bool,
}

/// An oversized line being truncated: its head is kept, the rest dropped.
struct Truncating {
    head: Bytes,
    line_start: u64,
    len: u64,
}

/// Counts gathered per read and emitted with its batch.
#[derive(Default)]
struct Counts {
    split: u64,
    truncated: u64,
    utf8: u64,
    rejected_utf8: u64,
    key_fallbacks: u64,
}

/// One open file.
struct Tailed {
    block: Arc<FileConfig>,
    /// Identity of the open handle.
    id: FileId,
    /// Whose checkpoint this file carries: its own, or (reading a copy of a file
    /// truncated while the agent was stopped) the original's.
    checkpoint_id: FileId,
    path: PathBuf,
    /// The included path it was found at, kept in its checkpoint (a rotated file's
    /// new name is usually not included; start-up looks for it near this path).
    tailed_path: PathBuf,
    /// Partition key for `file_path`.
    path_key: String,
    file: File,
    /// Bytes read and not yet turned into records, from file offset `start`.
    buf: BytesMut,
    /// Bytes at the front of `buf` already searched for a newline: the search
    /// resumes there, so a line written in small pieces is searched once.
    searched: usize,
    start: u64,
    /// Offset of the next byte to read (`start + buf.len()`).
    read_pos: u64,
    /// The file's first bytes: `file[..min(FINGERPRINT_BYTES, read_pos)]`.
    prefix: Vec<u8>,
    /// Position in the spool.
    committed: u64,
    pending: Option<Pending>,
    truncating: Option<Truncating>,
    /// Inside an oversized line being split: its start and length so far.
    long_line: Option<(u64, u64)>,
    batch: Vec<UserRecord>,
    batch_bytes: usize,
    counts: Counts,
    /// Read at the next service.
    dirty: bool,
    /// Rotated away or deleted: read to the end, then close. When it was noticed.
    draining: Option<Instant>,
    /// Last time a read returned data.
    grew: Instant,
    /// At end of file after the last read.
    at_eof: bool,
    /// Not read again before this (after an error).
    retry_at: Option<Instant>,
    logged_utf8: bool,
    logged_oversized: bool,
}

impl Tailed {
    fn stream(&self) -> &str {
        &self.block.stream
    }

    /// Everything before this offset is in the spool or was skipped.
    fn consumed(&self) -> u64 {
        let mut pos = self.start;
        if let Some(t) = &self.truncating {
            pos = pos.min(t.line_start);
        }
        if let Some(p) = &self.pending {
            pos = pos.min(p.start);
        }
        pos
    }

    fn checkpoint(&self, offset: u64) -> Checkpoint {
        let len = (offset as usize)
            .min(FINGERPRINT_BYTES)
            .min(self.prefix.len());
        Checkpoint {
            name: self.checkpoint_id.checkpoint_name(),
            value: Position {
                offset,
                fingerprint_len: len as u16,
                fingerprint: fnv1a(&self.prefix[..len]),
                path: self.tailed_path.clone(),
            }
            .encode(),
        }
    }

    fn set_path(&mut self, path: PathBuf) {
        self.path_key = key_tail(&path.to_string_lossy());
        self.path = path;
    }

    /// Forgets what was read past `pos` and reads again from there.
    fn reset_to(&mut self, pos: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(pos))?;
        self.buf.clear();
        self.searched = 0;
        self.start = pos;
        self.read_pos = pos;
        self.pending = None;
        self.truncating = None;
        self.long_line = None;
        self.batch.clear();
        self.batch_bytes = 0;
        if (pos as usize) < self.prefix.len() {
            self.prefix.truncate(pos as usize);
        }
        self.at_eof = false;
        Ok(())
    }
}

/// What a service pass of one file did.
enum Serviced {
    Keep { more: bool },
    Closed,
}

/// The tailer: every file of every `[[file]]` block, driven by [`Tail::rescan`],
/// [`Tail::changed`] and [`Tail::service`]. Blocking: run it on its own thread.
pub struct Tail<S: Sink> {
    blocks: Vec<Arc<FileConfig>>,
    sink: S,
    metrics: Metrics,
    /// Open files, in the order they were opened (a rotated file is read before
    /// the one that replaced it).
    files: BTreeMap<u64, Tailed>,
    next_seq: u64,
    by_id: HashMap<FileId, u64>,
    /// Paths of open files that are not draining.
    by_path: HashMap<PathBuf, u64>,
    /// Files too old to open (`ignore_older_secs`), with the position to start at
    /// if they are modified.
    ignored: HashMap<FileId, u64>,
    /// Checkpoints read at start-up and not yet matched to a file.
    stored: HashMap<(String, FileId), Position>,
    starting: bool,
    /// Paths the patterns match that are not tailed (a symbolic link, a target
    /// outside the patterns): each is logged once, while it is there.
    skipped: HashSet<PathBuf>,
    /// Bytes searched for newlines (the cost the resumed search keeps linear).
    scanned_bytes: u64,
}

impl<S: Sink> Tail<S> {
    /// Reads the checkpoints, opens every file the globs match (resuming at its
    /// checkpoint) and settles the checkpoints no file matched.
    pub fn start(blocks: Vec<FileConfig>, sink: S, metrics: Metrics) -> Result<Tail<S>, FileError> {
        let mut tail = Tail {
            blocks: blocks.into_iter().map(Arc::new).collect(),
            sink,
            metrics,
            files: BTreeMap::new(),
            next_seq: 0,
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            ignored: HashMap::new(),
            stored: HashMap::new(),
            starting: true,
            skipped: HashSet::new(),
            scanned_bytes: 0,
        };
        let mut streams: Vec<String> = tail.blocks.iter().map(|b| b.stream.clone()).collect();
        streams.sort();
        streams.dedup();
        for stream in streams {
            let checkpoints =
                tail.sink
                    .checkpoints(&stream)
                    .map_err(|source| FileError::Checkpoints {
                        stream: stream.clone(),
                        source,
                    })?;
            for c in checkpoints {
                let Some(id) = FileId::from_checkpoint_name(&c.name) else {
                    continue;
                };
                match Position::decode(&c.value) {
                    Some(p) => {
                        tail.stored.insert((stream.clone(), id), p);
                    }
                    None => {
                        tracing::warn!(
                            stream = %stream,
                            error = "unknown checkpoint format version",
                            "Removing an unreadable file checkpoint"
                        );
                        tail.remove_checkpoint(&stream, id)?;
                    }
                }
            }
        }
        tail.rescan()?;
        tail.starting = false;
        tail.settle_unmatched()?;
        Ok(tail)
    }

    /// The sink (for tests that simulate a crash: drop the tail, keep the sink).
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Bytes searched for newlines so far (tests: the search stays linear).
    pub fn scanned_bytes(&self) -> u64 {
        self.scanned_bytes
    }

    /// Number of open files.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Directories to watch: the literal leading directory of each include
    /// pattern, and whether the pattern reaches below it.
    pub fn watch_dirs(&self) -> Vec<(PathBuf, bool)> {
        let mut out: Vec<(PathBuf, bool)> = Vec::new();
        for b in &self.blocks {
            for pattern in &b.include {
                let (base, depth) = glob_base(pattern);
                out.push((base, depth.is_none_or(|d| d > 1)));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Walks every block's globs: opens new files, checks open ones for rotation and
    /// marks every file to be read.
    pub fn rescan(&mut self) -> Result<(), FileError> {
        let mut seen = HashSet::new();
        let mut found: Vec<(PathBuf, usize)> = Vec::new();
        let mut claimed = HashSet::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for pattern in &b.include {
                let (base, depth) = glob_base(pattern);
                walk(&base, depth, &mut |p: &Path| {
                    if b.matches(p) && claimed.insert(p.to_owned()) {
                        found.push((p.to_owned(), i));
                    }
                });
            }
        }
        // Open files first: a rotation is noticed (old file draining) before the new
        // file at the same path is opened.
        let seqs: Vec<u64> = self.files.keys().copied().collect();
        for seq in seqs {
            self.check_path(seq)?;
        }
        for (path, block) in found {
            if let Some(id) = self.discover(&path, block)? {
                seen.insert(id);
            }
        }
        self.ignored.retain(|id, _| seen.contains(id));
        // A skipped path that is gone is logged again if it comes back.
        self.skipped.retain(|p| claimed.contains(p));
        for t in self.files.values_mut() {
            t.dirty = true;
        }
        Ok(())
    }

    /// An inotify hint about `path`.
    pub fn changed(&mut self, path: &Path) -> Result<(), FileError> {
        if let Some(&seq) = self.by_path.get(path) {
            if let Some(t) = self.files.get_mut(&seq) {
                t.dirty = true;
            }
            return self.check_path(seq);
        }
        if let Some(block) = self.blocks.iter().position(|b| b.matches(path)) {
            self.discover(path, block)?;
        }
        Ok(())
    }

    /// Reads the files marked to be read, sends multiline records that timed out and
    /// closes rotated files that are done. Returns whether a file has more to read
    /// right away. Stops only when the sink stops; other errors are logged and the
    /// file is read again later from its checkpoint.
    pub fn service(&mut self) -> Result<bool, FileError> {
        let now = Instant::now();
        let mut more = false;
        let seqs: Vec<u64> = self.files.keys().copied().collect();
        for seq in seqs {
            let Some(mut t) = self.files.remove(&seq) else {
                continue;
            };
            match self.service_file(&mut t, now) {
                Ok(Serviced::Keep { more: m }) => {
                    more |= m;
                    self.files.insert(seq, t);
                }
                Ok(Serviced::Closed) => {
                    self.by_id.remove(&t.id);
                    if self.by_path.get(&t.path) == Some(&seq) {
                        self.by_path.remove(&t.path);
                    }
                }
                Err(FileError::Stopped) => {
                    self.files.insert(seq, t);
                    return Err(FileError::Stopped);
                }
                Err(e) => {
                    tracing::warn!(
                        path = %t.path.display(),
                        error = %error_chain(&e),
                        "Tailing a file failed; it is read again from its checkpoint shortly"
                    );
                    let committed = t.committed;
                    if let Err(e) = t.reset_to(committed) {
                        tracing::warn!(path = %t.path.display(), error = %e, "Rewinding a tailed file failed");
                    }
                    t.retry_at = Some(now + RETRY);
                    self.files.insert(seq, t);
                }
            }
        }
        Ok(more)
    }

    /// When [`service`](Self::service) has timed work next (a multiline record to
    /// send, a rotated file to close, a retry).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter_map(|t| {
                let multiline = t
                    .pending
                    .as_ref()
                    .map(|p| p.last + t.block.multiline_timeout);
                let close = t.draining.map(|d| d.max(t.grew) + t.block.rotate_wait);
                [multiline, close, t.retry_at].into_iter().flatten().min()
            })
            .min()
    }

    /// Rescans and services until nothing is left to read (tests, and a pass that
    /// must not wait).
    pub fn poll(&mut self) -> Result<(), FileError> {
        self.rescan()?;
        while self.service()? {}
        Ok(())
    }

    /// The file to open for `path`, a match of block `block`'s patterns: the path
    /// itself, or the target of a symbolic link the block may follow. `None`: not
    /// tailed (logged once while the path is there).
    fn admit(&mut self, path: &Path, block: usize) -> Option<PathBuf> {
        let why = match admit_path(path, &self.blocks[block]) {
            Ok(target) => return Some(target),
            Err(why) => why,
        };
        if self.skipped.insert(path.to_owned()) {
            tracing::warn!(path = %path.display(), reason = %why, "Not tailing a path the patterns match; logged once");
            self.metrics.file_event(FileEvent::Skipped);
        }
        None
    }

    fn remove_checkpoint(&mut self, stream: &str, id: FileId) -> Result<(), FileError> {
        self.sink
            .remove_checkpoint(stream, &id.checkpoint_name())
            .map_err(|source| match source {
                ProduceError::Stopped => FileError::Stopped,
                source => FileError::Checkpoints {
                    stream: stream.to_owned(),
                    source,
                },
            })
    }

    /// Checks that an open file's path still names it; if not, the file drains.
    fn check_path(&mut self, seq: u64) -> Result<(), FileError> {
        let Some(t) = self.files.get_mut(&seq) else {
            return Ok(());
        };
        if t.draining.is_some() {
            return Ok(());
        }
        let now_at_path = match std::fs::metadata(&t.path) {
            Ok(m) if m.is_file() => Some(FileId::of(&m)),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            // Cannot tell (permissions changed?): keep tailing the handle.
            Err(_) => return Ok(()),
        };
        if now_at_path == Some(t.id) {
            return Ok(());
        }
        let (event, what) = if now_at_path.is_some() {
            (FileEvent::Replaced, "replaced by a new file")
        } else {
            (FileEvent::Removed, "removed or renamed")
        };
        self.metrics.file_event(event);
        tracing::info!(
            path = %t.path.display(),
            position = t.read_pos,
            "Tailed file was {what}; reading its old handle to the end"
        );
        t.draining = Some(Instant::now());
        t.dirty = true;
        let path = t.path.clone();
        let block = self.blocks.iter().position(|b| Arc::ptr_eq(b, &t.block));
        self.by_path.remove(&path);
        if now_at_path.is_some() {
            if let Some(block) = block {
                self.discover(&path, block)?;
            }
        }
        Ok(())
    }

    /// Opens `path` for `block` unless it is open already. Returns its identity.
    fn discover(&mut self, path: &Path, block: usize) -> Result<Option<FileId>, FileError> {
        let Some(target) = self.admit(path, block) else {
            return Ok(None);
        };
        let meta = match std::fs::metadata(&target) {
            Ok(m) if m.is_file() => m,
            _ => return Ok(None),
        };
        let id = FileId::of(&meta);
        if let Some(&seq) = self.by_id.get(&id) {
            let t = self.files.get_mut(&seq).expect("by_id names open files");
            if t.path != path {
                let old_still_there = std::fs::metadata(&t.path)
                    .map(|m| FileId::of(&m) == id)
                    .unwrap_or(false);
                if !old_still_there {
                    // Renamed to another included name: same file, same position.
                    if self.by_path.get(&t.path) == Some(&seq) {
                        self.by_path.remove(&t.path);
                    }
                    tracing::info!(from = %t.path.display(), to = %path.display(), "Tailed file was renamed; following it");
                    t.set_path(path.to_owned());
                    t.tailed_path = path.to_owned();
                    t.draining = None;
                    t.dirty = true;
                    self.by_path.insert(path.to_owned(), seq);
                }
            }
            return Ok(Some(id));
        }
        let config = self.blocks[block].clone();
        let stored = if self.starting {
            self.stored.remove(&(config.stream.clone(), id))
        } else {
            None
        };
        if let Some(limit) = config.ignore_older {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if age > limit {
                if !self.ignored.contains_key(&id) {
                    // Where it would start if it is modified later.
                    let pos = match (&stored, self.starting, config.read_from) {
                        (Some(p), _, _) if p.offset <= meta.len() => p.offset,
                        (None, true, ReadFrom::End) => meta.len(),
                        _ => 0,
                    };
                    if stored.is_some() {
                        // Keep its checkpoint: the file is there, only idle.
                        self.stored.remove(&(config.stream.clone(), id));
                    }
                    self.ignored.insert(id, pos);
                }
                return Ok(Some(id));
            }
        }
        // Not through a link that appeared since `admit`, and never blocking on a
        // FIFO that replaced the file.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&target)
        {
            Ok(f) => f,
            Err(e) => {
                if self.skipped.insert(path.to_owned()) {
                    tracing::warn!(path = %path.display(), error = %e, "Cannot open a file to tail; trying again at each rescan, logged once");
                }
                return Ok(None);
            }
        };
        // The handle's identity wins over the path's (it may have been replaced in
        // between).
        let meta = file.metadata().map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Ok(None);
        }
        self.skipped.remove(path);
        let id = FileId::of(&meta);
        if self.by_id.contains_key(&id) {
            return Ok(Some(id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let now = Instant::now();
        let mut t = Tailed {
            block: config.clone(),
            id,
            checkpoint_id: id,
            path: PathBuf::new(),
            tailed_path: path.to_owned(),
            path_key: String::new(),
            file,
            buf: BytesMut::new(),
            searched: 0,
            start: 0,
            read_pos: 0,
            prefix: Vec::new(),
            committed: 0,
            pending: None,
            truncating: None,
            long_line: None,
            batch: Vec::new(),
            batch_bytes: 0,
            counts: Counts::default(),
            dirty: true,
            draining: None,
            grew: now,
            at_eof: false,
            retry_at: None,
            logged_utf8: false,
            logged_oversized: false,
        };
        t.set_path(path.to_owned());
        let ignored_at = self.ignored.remove(&id);
        let (pos, resumed) = match stored {
            Some(p) => match self.verify(&t, &p, meta.len()) {
                Ok(true) => (p.offset, true),
                Ok(false) => {
                    self.metrics.file_event(FileEvent::Truncated);
                    tracing::warn!(
                        path = %path.display(),
                        position = p.offset,
                        size = meta.len(),
                        "File no longer matches its checkpoint (truncated while the agent was stopped, or a new file on a reused inode); reading it from the start"
                    );
                    let _ = self.read_copy_of(&mut t, &p)?;
                    (0, false)
                }
                Err(source) => {
                    return Err(FileError::Read {
                        path: path.to_owned(),
                        source,
                    })
                }
            },
            None => match ignored_at {
                Some(pos) if pos <= meta.len() => (pos, false),
                _ if self.starting && config.read_from == ReadFrom::End => (
                    end_position(&t.file, meta.len()).unwrap_or(meta.len()),
                    false,
                ),
                _ => (0, false),
            },
        };
        t.prefix = read_head(&t.file, (pos as usize).min(FINGERPRINT_BYTES)).map_err(|source| {
            FileError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        t.reset_to(pos).map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        t.committed = pos;
        if !resumed || t.committed != pos {
            let cp = t.checkpoint(pos);
            self.sink
                .spool(&config.stream, Vec::new(), &cp)
                .map_err(|e| FileError::spool(path, e))?;
        }
        self.metrics.file_event(FileEvent::Opened);
        tracing::info!(
            path = %path.display(),
            position = pos,
            resumed,
            stream = %config.stream,
            "Tailing file"
        );
        self.by_id.insert(id, seq);
        self.by_path.insert(path.to_owned(), seq);
        self.files.insert(seq, t);
        Ok(Some(id))
    }

    /// Whether the file behind `t` is the one `p` was written for.
    fn verify(&self, t: &Tailed, p: &Position, size: u64) -> io::Result<bool> {
        if size < p.offset {
            return Ok(false);
        }
        let head = read_head(&t.file, p.fingerprint_len as usize)?;
        Ok(head.len() == p.fingerprint_len as usize && fnv1a(&head) == p.fingerprint)
    }

    /// A file was truncated while the agent was stopped: reads what its copy (if
    /// there is one) holds past the checkpoint, under the file's checkpoint.
    fn read_copy_of(&mut self, t: &mut Tailed, p: &Position) -> Result<bool, FileError> {
        if p.fingerprint_len == 0 {
            return Ok(false);
        }
        let (len, hash) = (p.fingerprint_len as usize, p.fingerprint);
        let copy = find_file(&t.path, |c, meta| {
            FileId::of(meta) != t.id
                && meta.len() >= p.offset
                && !self.by_id.contains_key(&FileId::of(meta))
                && read_head(c, len).is_ok_and(|h| h.len() == len && fnv1a(&h) == hash)
        });
        if let Some((copy_path, copy)) = copy {
            t.prefix = read_head(&copy, len.min(p.offset as usize)).unwrap_or_default();
            self.drain_copy(t, copy, &copy_path, p.offset)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads `copy` from `from` to its end as the content of `t`, then points `t`
    /// at offset 0 of its own file with a checkpoint there.
    fn drain_copy(
        &mut self,
        t: &mut Tailed,
        copy: File,
        copy_path: &Path,
        from: u64,
    ) -> Result<(), FileError> {
        tracing::info!(
            path = %t.path.display(),
            copy = %copy_path.display(),
            from,
            "Reading the rest of a truncated file from its copy"
        );
        let own = std::mem::replace(&mut t.file, copy);
        let read_err = |source| FileError::Read {
            path: copy_path.to_owned(),
            source,
        };
        let result = (|| {
            t.reset_to(from).map_err(read_err)?;
            t.committed = from;
            while let ReadEnd::Budget = self.read(t, u64::MAX, Instant::now())? {}
            self.finish_lines(t)?;
            self.flush(t)
        })();
        t.file = own;
        result?;
        self.restart_at_zero(t)
    }

    /// After a truncation: the file is read again from its start.
    fn restart_at_zero(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        t.reset_to(0).map_err(|source| FileError::Read {
            path: t.path.clone(),
            source,
        })?;
        t.prefix.clear();
        t.committed = 0;
        let cp = t.checkpoint(0);
        self.sink
            .spool(t.stream(), Vec::new(), &cp)
            .map_err(|e| FileError::spool(&t.path, e))
    }

    /// Start-up: checkpoints of files that were not found under an included path.
    fn settle_unmatched(&mut self) -> Result<(), FileError> {
        let stored: Vec<((String, FileId), Position)> = self.stored.drain().collect();
        for ((stream, id), p) in stored {
            let block = self
                .blocks
                .iter()
                .position(|b| b.stream == stream && b.matches(&p.path));
            let same_start = |f: &File| {
                read_head(f, p.fingerprint_len as usize).is_ok_and(|h| {
                    h.len() == p.fingerprint_len as usize && fnv1a(&h) == p.fingerprint
                })
            };
            let Some(block) = block else {
                tracing::info!(
                    path = %p.path.display(),
                    stream = %stream,
                    "Removing the checkpoint of a file that is no longer tailed"
                );
                self.remove_checkpoint(&stream, id)?;
                continue;
            };
            let found = find_file(&p.path, |_, meta| FileId::of(meta) == id);
            match found {
                Some((path, file)) if path != p.path => {
                    // Rotated while the agent was stopped: finish it. If it no
                    // longer starts as it did, it was truncated (or is a new file on
                    // the same inode) and is read from the start.
                    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    let verified = size >= p.offset && same_start(&file);
                    self.open_draining(block, id, path, file, &p, verified)?;
                }
                None if p.fingerprint_len > 0 => {
                    // Truncated (copytruncate) and then deleted while the agent was
                    // stopped: what was not read is in the copy, if there is one.
                    let copy = find_file(&p.path, |f, meta| {
                        let other = FileId::of(meta);
                        !self.by_id.contains_key(&other) && meta.len() >= p.offset && same_start(f)
                    });
                    match copy {
                        Some((path, file)) => {
                            self.open_draining(block, id, path, file, &p, true)?
                        }
                        None => {
                            tracing::info!(path = %p.path.display(), stream = %stream, "Removing the checkpoint of a file that is gone");
                            self.remove_checkpoint(&stream, id)?;
                        }
                    }
                }
                _ => {
                    tracing::info!(
                        path = %p.path.display(),
                        stream = %stream,
                        "Removing the checkpoint of a file that is gone or no longer tailed"
                    );
                    self.remove_checkpoint(&stream, id)?;
                }
            }
        }
        Ok(())
    }

    fn open_draining(
        &mut self,
        block: usize,
        id: FileId,
        path: PathBuf,
        file: File,
        p: &Position,
        verified: bool,
    ) -> Result<(), FileError> {
        tracing::info!(
            path = %path.display(),
            was = %p.path.display(),
            position = if verified { p.offset } else { 0 },
            "File was rotated while the agent was stopped; reading it to the end"
        );
        let now = Instant::now();
        let read_err = |source| FileError::Read {
            path: path.clone(),
            source,
        };
        let own = FileId::of(&file.metadata().map_err(read_err)?);
        let mut t = Tailed {
            block: self.blocks[block].clone(),
            id: own,
            checkpoint_id: id,
            path: PathBuf::new(),
            tailed_path: p.path.clone(),
            path_key: String::new(),
            prefix: read_head(&file, (p.offset as usize).min(FINGERPRINT_BYTES))
                .map_err(read_err)?,
            file,
            buf: BytesMut::new(),
            searched: 0,
            start: 0,
            read_pos: 0,
            committed: p.offset,
            pending: None,
            truncating: None,
            long_line: None,
            batch: Vec::new(),
            batch_bytes: 0,
            counts: Counts::default(),
            dirty: true,
            draining: Some(now),
            grew: now,
            at_eof: false,
            retry_at: None,
            logged_utf8: false,
            logged_oversized: false,
        };
        t.set_path(path.clone());
        t.reset_to(p.offset).map_err(read_err)?;
        if !verified {
            self.metrics.file_event(FileEvent::Truncated);
            tracing::warn!(
                path = %path.display(),
                position = p.offset,
                "Rotated file no longer matches its checkpoint (truncated while the agent was stopped); reading it from the start"
            );
            if !self.read_copy_of(&mut t, p)? {
                self.restart_at_zero(&mut t)?;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(own, seq);
        self.files.insert(seq, t);
        Ok(())
    }

    fn service_file(&mut self, t: &mut Tailed, now: Instant) -> Result<Serviced, FileError> {
        if t.retry_at.is_some_and(|r| now < r) {
            return Ok(Serviced::Keep { more: false });
        }
        t.retry_at = None;
        let mut more = false;
        if t.dirty || t.draining.is_some() {
            t.dirty = false;
            self.check_truncation(t)?;
            match self.read(t, READ_BUDGET_BYTES, now)? {
                ReadEnd::Budget => {
                    t.dirty = true;
                    more = true;
                }
                ReadEnd::Eof => {}
            }
            self.flush(t)?;
        }
        let timed_out = t
            .pending
            .as_ref()
            .is_some_and(|p| now >= p.last + t.block.multiline_timeout);
        if timed_out {
            self.emit_pending(t)?;
            self.flush(t)?;
        }
        if let Some(since) = t.draining {
            // Now, not the pass's start: the read above may have just moved `grew`.
            let now = Instant::now();
            if t.at_eof && !more && now >= since.max(t.grew) + t.block.rotate_wait {
                self.finish_lines(t)?;
                self.flush(t)?;
                self.remove_checkpoint(&t.block.stream.clone(), t.checkpoint_id)?;
                self.metrics.file_event(FileEvent::Closed);
                tracing::info!(path = %t.path.display(), position = t.read_pos, "Closed a rotated or removed file after reading it to the end");
                return Ok(Serviced::Closed);
            }
        }
        Ok(Serviced::Keep { more })
    }

    /// Notices a truncation (copytruncate) and recovers what can be recovered.
    fn check_truncation(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        let read_err = |source| FileError::Read {
            path: t.path.clone(),
            source,
        };
        let size = t.file.metadata().map_err(read_err)?.len();
        let mut truncated = size < t.read_pos;
        if !truncated && !t.prefix.is_empty() {
            let head = read_head(&t.file, t.prefix.len()).map_err(read_err)?;
            truncated = head != t.prefix;
        }
        if !truncated {
            return Ok(());
        }
        self.metrics.file_event(FileEvent::Truncated);
        tracing::warn!(
            path = %t.path.display(),
            position = t.read_pos,
            size,
            "File was truncated (copytruncate); reading it again from the start"
        );
        let (prefix, committed, own_id) = (t.prefix.clone(), t.committed, t.id);
        let copy = if prefix.is_empty() {
            None
        } else {
            find_file(&t.path, |c, meta| {
                let id = FileId::of(meta);
                id != own_id
                    && meta.len() > committed
                    && !self.by_id.contains_key(&id)
                    && read_head(c, prefix.len()).is_ok_and(|h| h == prefix)
            })
        };
        match copy {
            Some((copy_path, copy)) => self.drain_copy(t, copy, &copy_path, committed),
            None => {
                tracing::warn!(
                    path = %t.path.display(),
                    position = t.read_pos,
                    "No copy of the truncated file was found: lines written after the last read and before the truncation, if any, are lost"
                );
                self.restart_at_zero(t)
            }
        }
    }

    /// Reads until the end of the file or `budget` bytes.
    fn read(&mut self, t: &mut Tailed, budget: u64, now: Instant) -> Result<ReadEnd, FileError> {
        let mut total = 0u64;
        loop {
            if total >= budget {
                t.at_eof = false;
                return Ok(ReadEnd::Budget);
            }
            let len = t.buf.len();
            if t.buf.capacity() - len < READ_BYTES {
                t.buf.reserve(READ_BYTES);
            }
            t.buf.resize(len + READ_BYTES, 0);
            let n = loop {
                match t.file.read(&mut t.buf[len..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        t.buf.truncate(len);
                        return Err(FileError::Read {
                            path: t.path.clone(),
                            source,
                        });
                    }
                }
            };
            t.buf.truncate(len + n);
            if n == 0 {
                t.at_eof = true;
                return Ok(ReadEnd::Eof);
            }
            if t.prefix.len() < FINGERPRINT_BYTES && t.read_pos == t.prefix.len() as u64 {
                let take = n.min(FINGERPRINT_BYTES - t.prefix.len());
                t.prefix.extend_from_slice(&t.buf[len..len + take]);
            }
            t.read_pos += n as u64;
            t.grew = now;
            total += n as u64;
            self.lines(t, false)?;
        }
    }

    /// Turns the complete lines in the buffer into records. `last`: the file is
    /// finished, so a final line without a newline counts too.
    fn lines(&mut self, t: &mut Tailed, last: bool) -> Result<(), FileError> {
        let max = t.block.max_record_bytes;
        loop {
            let from = t.searched.min(t.buf.len());
            let newline = memchr(&t.buf[from..]).map(|i| from + i);
            self.scanned_bytes += (newline.map_or(t.buf.len(), |i| i + 1) - from) as u64;
            // Every branch below consumes the buffer's front, except the last.
            t.searched = 0;
            if t.truncating.is_some() {
                let drop = newline.map_or(t.buf.len(), |i| i + 1);
                let _ = t.buf.split_to(drop);
                t.start += drop as u64;
                let tr = t.truncating.as_mut().expect("checked above");
                tr.len += newline.unwrap_or(drop) as u64;
                if newline.is_none() && !last {
                    return Ok(());
                }
                // Counted and logged when it crossed the limit.
                let tr = t.truncating.take().expect("checked above");
                self.line(t, tr.head, tr.line_start)?;
                if newline.is_none() {
                    return Ok(());
                }
                continue;
            }
            match newline {
                Some(i) => {
                    let line_start = t.start;
                    let mut line = t.buf.split_to(i + 1);
                    t.start += (i + 1) as u64;
                    line.truncate(i);
                    if line.last() == Some(&b'\r') {
                        line.truncate(i - 1);
                    }
                    self.whole_line(t, line.freeze(), line_start)?;
                }
                None if t.buf.len() > max => {
                    // Too long already and no end in sight: do not hold it all.
                    match t.block.oversized {
                        Oversized::Split => {
                            self.emit_pending(t)?;
                            if t.long_line.is_none() {
                                // Counted and logged now, not when (or whether)
                                // its newline comes.
                                let (so_far, at) = (t.buf.len() as u64, t.start);
                                self.oversized_line(t, so_far, at, Oversized::Split, false);
                            }
                            let cut = char_boundary(&t.buf, max);
                            let (line_start, len) = t.long_line.unwrap_or((t.start, 0));
                            t.long_line = Some((line_start, len + cut as u64));
                            let chunk = t.buf.split_to(cut).freeze();
                            t.start += cut as u64;
                            self.record(t, chunk)?;
                        }
                        Oversized::Truncate => {
                            let (so_far, at) = (t.buf.len() as u64, t.start);
                            self.oversized_line(t, so_far, at, Oversized::Truncate, false);
                            let cut = char_boundary(&t.buf, max);
                            let head = t.buf.split_to(cut).freeze();
                            t.truncating = Some(Truncating {
                                head,
                                line_start: t.start,
                                len: cut as u64,
                            });
                            t.start += cut as u64;
                        }
                    }
                }
                None if last && !t.buf.is_empty() => {
                    let line_start = t.start;
                    let n = t.buf.len();
                    let mut line = t.buf.split_to(n);
                    t.start += n as u64;
                    if line.last() == Some(&b'\r') {
                        line.truncate(n - 1);
                    }
                    self.whole_line(t, line.freeze(), line_start)?;
                    return Ok(());
                }
                None => {
                    t.searched = t.buf.len();
                    return Ok(());
                }
            }
        }
    }

    /// A line with its end: the tail of a split line, an oversized line, or a line.
    fn whole_line(
        &mut self,
        t: &mut Tailed,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        let max = t.block.max_record_bytes;
        if t.long_line.take().is_some() {
            // The end of a line split as it came in (counted then).
            let mut rest = line;
            while !rest.is_empty() {
                let cut = char_boundary(&rest, max);
                let chunk = rest.split_to(cut);
                self.record(t, chunk)?;
            }
            return Ok(());
        }
        if line.len() <= max {
            return self.line(t, line, line_start);
        }
        match t.block.oversized {
            Oversized::Split => {
                self.oversized_line(t, line.len() as u64, line_start, Oversized::Split, true);
                self.emit_pending(t)?;
                let mut rest = line;
                while !rest.is_empty() {
                    let cut = char_boundary(&rest, max);
                    let chunk = rest.split_to(cut);
                    self.record(t, chunk)?;
                }
                Ok(())
            }
            Oversized::Truncate => {
                self.oversized_line(t, line.len() as u64, line_start, Oversized::Truncate, true);
                let cut = char_boundary(&line, max);
                self.line(t, line.slice(..cut), line_start)
            }
        }
    }

    /// Counts (and, first in a file, logs) a line over the record limit: a whole
    /// one of `len` bytes, or one of `len` bytes so far that has no end yet.
    fn oversized_line(
        &mut self,
        t: &mut Tailed,
        len: u64,
        at: u64,
        action: Oversized,
        complete: bool,
    ) {
        let max = t.block.max_record_bytes;
        match action {
            Oversized::Split => t.counts.split += 1,
            Oversized::Truncate => t.counts.truncated += 1,
        }
        if t.logged_oversized {
            return;
        }
        t.logged_oversized = true;
        let error = if complete {
            format!(
                "line of {len} bytes at offset {at} exceeds the {max}-byte record limit (max_record_bytes)"
            )
        } else {
            format!(
                "line at offset {at} exceeds the {max}-byte record limit (max_record_bytes): {len} bytes so far and no end yet"
            )
        };
        match action {
            Oversized::Split => tracing::warn!(
                path = %t.path.display(),
                error = %error,
                records = len.div_ceil(max as u64),
                "Split an oversized line into several records (oversized = \"split\"); further ones in this file are only counted"
            ),
            Oversized::Truncate => tracing::error!(
                path = %t.path.display(),
                error = %error,
                dropped_bytes = len.saturating_sub(max as u64),
                "Truncated an oversized line (oversized = \"truncate\"); further ones in this file are only counted"
            ),
        }
    }

    /// A line within the size limit.
    fn line(&mut self, t: &mut Tailed, line: Bytes, line_start: u64) -> Result<(), FileError> {
        let line = match std::str::from_utf8(&line) {
            Ok(_) => line,
            Err(e) => {
                let policy = t.block.invalid_utf8;
                if policy == InvalidUtf8::Reject {
                    t.counts.rejected_utf8 += 1;
                } else {
                    t.counts.utf8 += 1;
                }
                if !t.logged_utf8 {
                    t.logged_utf8 = true;
                    let bad = line.get(e.valid_up_to()).copied().unwrap_or_default();
                    let error = format!(
                        "line at offset {line_start} is not valid UTF-8: byte 0x{bad:02x} at position {}",
                        e.valid_up_to()
                    );
                    match policy {
                        InvalidUtf8::Pass => {
                            tracing::warn!(path = %t.path.display(), error = %error, "Line is not valid UTF-8; sent as it is (invalid_utf8 = \"pass\"); further ones in this file are only counted")
                        }
                        InvalidUtf8::Replace => {
                            tracing::warn!(path = %t.path.display(), error = %error, "Line is not valid UTF-8; invalid bytes replaced with U+FFFD (invalid_utf8 = \"replace\"); further ones in this file are only counted")
                        }
                        InvalidUtf8::Reject => {
                            tracing::error!(path = %t.path.display(), error = %error, "Line is not valid UTF-8; not sent (invalid_utf8 = \"reject\"); further ones in this file are only counted")
                        }
                    }
                }
                match policy {
                    InvalidUtf8::Pass => line,
                    InvalidUtf8::Reject => return Ok(()),
                    InvalidUtf8::Replace => {
                        let fixed = String::from_utf8_lossy(&line).into_owned();
                        let max = t.block.max_record_bytes;
                        if fixed.len() > max {
                            // U+FFFD is 3 bytes: the line grew past the limit.
                            let cut = char_boundary(fixed.as_bytes(), max);
                            let fixed = Bytes::from(fixed);
                            match t.block.oversized {
                                Oversized::Truncate => {
                                    self.oversized_line(
                                        t,
                                        fixed.len() as u64,
                                        line_start,
                                        Oversized::Truncate,
                                        true,
                                    );
                                    fixed.slice(..cut)
                                }
                                Oversized::Split => {
                                    self.oversized_line(
                                        t,
                                        fixed.len() as u64,
                                        line_start,
                                        Oversized::Split,
                                        true,
                                    );
                                    self.emit_pending(t)?;
                                    let mut rest = fixed;
                                    while !rest.is_empty() {
                                        let cut = char_boundary(&rest, max);
                                        let chunk = rest.split_to(cut);
                                        self.record(t, chunk)?;
                                    }
                                    return Ok(());
                                }
                            }
                        } else {
                            Bytes::from(fixed)
                        }
                    }
                }
            }
        };
        let Some(start_re) = &t.block.multiline_start else {
            if line.is_empty() {
                return Ok(());
            }
            return self.record(t, line);
        };
        let starts = start_re.is_match(&line);
        if starts || t.pending.is_none() {
            self.emit_pending(t)?;
            if line.is_empty() {
                return Ok(());
            }
            t.pending = Some(Pending {
                data: BytesMut::from(&line[..]),
                start: line_start,
                last: Instant::now(),
                truncated: false,
            });
            return Ok(());
        }
        let max = t.block.max_record_bytes;
        let p = t.pending.as_mut().expect("checked above");
        p.last = Instant::now();
        if p.data.len() + 1 + line.len() <= max {
            p.data.extend_from_slice(b"\n");
            p.data.extend_from_slice(&line);
            return Ok(());
        }
        match t.block.oversized {
            Oversized::Split => {
                // The record is full: this line starts the next one.
                let len = (p.data.len() + 1 + line.len()) as u64;
                let start = p.start;
                self.oversized_line(t, len, start, Oversized::Split, true);
                self.emit_pending(t)?;
                t.pending = Some(Pending {
                    data: BytesMut::from(&line[..]),
                    start: line_start,
                    last: Instant::now(),
                    truncated: false,
                });
            }
            Oversized::Truncate => {
                let room = max.saturating_sub(p.data.len() + 1);
                if room > 0 {
                    let cut = char_boundary(&line, room);
                    p.data.extend_from_slice(b"\n");
                    p.data.extend_from_slice(&line[..cut]);
                }
                if !p.truncated {
                    p.truncated = true;
                    let (len, start) = ((p.data.len() + 1 + line.len()) as u64, p.start);
                    self.oversized_line(t, len, start, Oversized::Truncate, true);
                }
            }
        }
        Ok(())
    }

    /// Sends the multiline record in progress, if any.
    fn emit_pending(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        match t.pending.take() {
            Some(p) => self.record(t, p.data.freeze()),
            None => Ok(()),
        }
    }

    /// The file is finished: its last line without a newline and its multiline
    /// record in progress are records.
    fn finish_lines(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        self.lines(t, true)?;
        t.long_line = None;
        self.emit_pending(t)
    }

    /// Adds a record to the batch, sending the batch when it is full.
    fn record(&mut self, t: &mut Tailed, data: Bytes) -> Result<(), FileError> {
        let partition_key = match &t.block.partition_key {
            // One random key per batch: the batch goes to one shard, in order, and
            // is hashed once; batches spread over the shards.
            PartitionKey::Random => match t.batch.first() {
                Some(first) => first.partition_key.clone(),
                None => random_partition_key(),
            },
            PartitionKey::LineHash => format!("{:016x}", fnv1a(&data)),
            PartitionKey::FilePath => t.path_key.clone(),
            PartitionKey::JsonField(field) => match json_field(&data, field) {
                Some(k) if !k.is_empty() && k.len() <= MAX_KEY_BYTES => k,
                _ => {
                    t.counts.key_fallbacks += 1;
                    random_partition_key()
                }
            },
        };
        t.batch_bytes += data.len() + partition_key.len();
        t.batch.push(UserRecord {
            partition_key,
            explicit_hash_key: None,
            data,
        });
        if t.batch_bytes >= BATCH_BYTES {
            self.flush(t)?;
        }
        Ok(())
    }

    /// Spools the batch with the file's checkpoint (or the checkpoint alone, if the
    /// position moved without records).
    fn flush(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        // Counts go out even when nothing else moved (a line being truncated is
        // counted when it crosses the limit, before anything is spooled).
        let c = std::mem::take(&mut t.counts);
        let m = &self.metrics;
        if c.split > 0 {
            m.oversized(KIND, LineAction::Split, c.split);
        }
        if c.truncated > 0 {
            m.oversized(KIND, LineAction::Truncated, c.truncated);
        }
        if c.utf8 > 0 {
            let action = match t.block.invalid_utf8 {
                InvalidUtf8::Replace => LineAction::Replaced,
                _ => LineAction::Passed,
            };
            m.invalid_utf8(KIND, action, c.utf8);
        }
        if c.rejected_utf8 > 0 {
            m.invalid_utf8(KIND, LineAction::Rejected, c.rejected_utf8);
            m.rejected(KIND, RejectReason::InvalidUtf8, c.rejected_utf8);
        }
        if c.key_fallbacks > 0 {
            m.partition_key_fallback(KIND, c.key_fallbacks);
        }
        let pos = t.consumed();
        if t.batch.is_empty() && pos == t.committed {
            return Ok(());
        }
        let records = std::mem::take(&mut t.batch);
        t.batch_bytes = 0;
        let n = records.len() as u64;
        if n > 0 {
            m.received(KIND, n);
        }
        let cp = t.checkpoint(pos);
        self.sink
            .spool(&t.block.stream, records, &cp)
            .map_err(|e| FileError::spool(&t.path, e))?;
        t.committed = pos;
        Ok(())
    }
}

enum ReadEnd {
    Eof,
    Budget,
}

fn memchr(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf)
}

/// Where `read_from = "end"` starts: after the last newline near the end.
fn end_position(file: &File, size: u64) -> io::Result<u64> {
    let from = size.saturating_sub(END_LOOKBACK_BYTES);
    let mut tail = vec![0u8; (size - from) as usize];
    file.read_exact_at(&mut tail, from)?;
    Ok(match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => from + i as u64 + 1,
        None => size,
    })
}

/// The newest regular file in `near`'s directory for which `accept` holds.
fn find_file(
    near: &Path,
    mut accept: impl FnMut(&File, &std::fs::Metadata) -> bool,
) -> Option<(PathBuf, File)> {
    let dir = near.parent()?;
    let mut best: Option<(SystemTime, PathBuf, File)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // The handle's metadata: the file may have been replaced in between.
        let Ok(meta) = file.metadata() else { continue };
        if !accept(&file, &meta) {
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _, _)| mtime > *t) {
            best = Some((mtime, path, file));
        }
    }
    best.map(|(_, p, f)| (p, f))
}

/// The literal leading directory of a glob pattern, and how many path components
/// below it the pattern reaches (`None`: any number, `**`).
pub fn glob_base(pattern: &str) -> (PathBuf, Option<usize>) {
    let parts: Vec<&str> = pattern.split('/').collect();
    let first_glob = parts
        .iter()
        .position(|p| p.contains(['*', '?', '[', '{', '\\']))
        .unwrap_or(parts.len() - 1);
    let base = parts[..first_glob].join("/");
    let base = if base.is_empty() {
        "/".to_owned()
    } else {
        base
    };
    let rest = &parts[first_glob..];
    let depth = if rest.iter().any(|p| p.contains("**")) {
        None
    } else {
        Some(rest.len())
    };
    (PathBuf::from(base), depth)
}

/// Why a path the patterns match is not tailed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("it is a symbolic link and follow_symlinks is off")]
    Symlink,
    #[error("it is a symbolic link to {target:?}, which the block's patterns do not match")]
    TargetNotIncluded { target: PathBuf },
    #[error("it is or leads to {target:?}, under /proc, /sys or /dev, which are never tailed")]
    PseudoFs { target: PathBuf },
    #[error("it is a symbolic link that cannot be resolved: {error}")]
    Unresolved { error: String },
}

/// The file to open for `path` under `block`'s symlink policy: `path` itself, or
/// the canonical target of a link the block follows.
pub fn admit_path(path: &Path, block: &FileConfig) -> Result<PathBuf, Skip> {
    if is_pseudo_fs(path) {
        return Err(Skip::PseudoFs {
            target: path.to_owned(),
        });
    }
    let is_link = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if !is_link {
        return Ok(path.to_owned());
    }
    if !block.follow_symlinks {
        return Err(Skip::Symlink);
    }
    let target = std::fs::canonicalize(path).map_err(|e| Skip::Unresolved {
        error: e.to_string(),
    })?;
    if is_pseudo_fs(&target) {
        return Err(Skip::PseudoFs { target });
    }
    if !block.matches(&target) {
        return Err(Skip::TargetNotIncluded { target });
    }
    Ok(target)
}

/// Whether `path` is in one of the kernel's pseudo-filesystems (`/proc`, `/sys`,
/// `/dev`), which are never tailed: reading them can expose the agent's own
/// secrets (`/proc/self/environ`) or block forever.
pub fn is_pseudo_fs(path: &Path) -> bool {
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|root| path.starts_with(root))
}

/// Calls `f` with every file under `dir`, down to `depth` components (`None`: all).
/// Symbolic links to directories are not followed (no cycles).
fn walk(dir: &Path, depth: Option<usize>, f: &mut impl FnMut(&Path)) {
    if depth == Some(0) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, depth.map(|d| d - 1), f);
        } else {
            f(&path);
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
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
pub fn spawn(
    files: Vec<FileConfig>,
    producer: Producer,
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
        run(
            files,
            sink,
            producer.metrics().clone(),
            watcher,
            rx,
            overflow,
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

/// The tailer thread.
fn run(
    files: Vec<FileConfig>,
    sink: ProducerSink,
    metrics: Metrics,
    mut watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::Receiver<Wake>,
    overflow: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    use notify::Watcher as _;
    let interval = files
        .iter()
        .map(|f| f.rescan_interval)
        .min()
        .unwrap_or(Duration::from_secs(1));
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let mut add_watches =
        |tail: &Tail<ProducerSink>, watcher: &mut Option<notify::RecommendedWatcher>| {
            let Some(w) = watcher else { return };
            for (dir, recursive) in tail.watch_dirs() {
                if watched.contains(&dir) || !dir.is_dir() {
                    continue;
                }
                let mode = if recursive {
                    notify::RecursiveMode::Recursive
                } else {
                    notify::RecursiveMode::NonRecursive
                };
                match w.watch(&dir, mode) {
                    Ok(()) => {
                        watched.insert(dir);
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch a directory; relying on the periodic rescan")
                    }
                }
            }
        };
    let mut tail = loop {
        match Tail::start(files.clone(), sink.clone(), metrics.clone()) {
            Ok(t) => break t,
            Err(FileError::Stopped) => return,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "File source cannot start; retrying");
                if wait_or_stop(&rx, &shutdown, RETRY) {
                    return;
                }
            }
        }
    };
    add_watches(&tail, &mut watcher);
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
        let now = Instant::now();
        let deadline = tail
            .next_deadline()
            .map_or(next_rescan, |d| d.min(next_rescan));
        let timeout = if more {
            Duration::ZERO
        } else {
            deadline.saturating_duration_since(now)
        };
        let mut paths: HashSet<PathBuf> = HashSet::new();
        let mut rescan = false;
        let mut take = |w: Wake, paths: &mut HashSet<PathBuf>| match w {
            Wake::Paths(p) => paths.extend(p),
            Wake::Rescan => rescan = true,
            Wake::Stop => {}
        };
        match rx.recv_timeout(timeout) {
            Ok(w) => take(w, &mut paths),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
        }
        while let Ok(w) = rx.try_recv() {
            take(w, &mut paths);
        }
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
        add_watches(&tail, &mut watcher);
    }
    tracing::info!("File source stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    /// Records and checkpoints, written together as the spool does.
    #[derive(Default)]
    struct Mem {
        lines: Vec<Bytes>,
        keys: Vec<String>,
        checkpoints: BTreeMap<Vec<u8>, Vec<u8>>,
    }

    #[derive(Clone, Default)]
    struct MemSink(Arc<Mutex<Mem>>);

    impl Sink for MemSink {
        fn spool(
            &mut self,
            _: &str,
            records: Vec<UserRecord>,
            c: &Checkpoint,
        ) -> Result<(), ProduceError> {
            let mut m = self.0.lock().unwrap();
            for r in records {
                r.validate().unwrap();
                m.lines.push(r.data);
                m.keys.push(r.partition_key);
            }
            m.checkpoints.insert(c.name.clone(), c.value.clone());
            Ok(())
        }
        fn checkpoints(&mut self, _: &str) -> Result<Vec<Checkpoint>, ProduceError> {
            let m = self.0.lock().unwrap();
            Ok(m.checkpoints
                .iter()
                .map(|(name, value)| Checkpoint {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect())
        }
        fn remove_checkpoint(&mut self, _: &str, name: &[u8]) -> Result<(), ProduceError> {
            self.0.lock().unwrap().checkpoints.remove(name);
            Ok(())
        }
    }

    impl MemSink {
        fn lines(&self) -> Vec<String> {
            let m = self.0.lock().unwrap();
            m.lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect()
        }
        fn raw(&self) -> Vec<Bytes> {
            self.0.lock().unwrap().lines.clone()
        }
    }

    fn block(dir: &Path, extra: &str) -> FileConfig {
        let text = format!(
            "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\ninclude = [\"{}/*.log\"]\nrotate_wait_ms = 0\n{extra}",
            dir.display()
        );
        crate::config::parse(&text, Path::new("t.toml"))
            .unwrap()
            .files
            .remove(0)
    }

    fn append(path: &Path, data: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(data).unwrap();
    }

    fn start(dir: &Path, extra: &str, sink: &MemSink) -> Tail<MemSink> {
        Tail::start(vec![block(dir, extra)], sink.clone(), Metrics::new()).unwrap()
    }

    #[test]
    fn partial_lines_wait_for_their_newline_and_crlf_and_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(&path, b"one\r\n\ntwo\nthr");
        let sink = MemSink::default();
        let mut tail = start(dir.path(), "", &sink);
        tail.poll().unwrap();
        assert_eq!(sink.lines(), ["one", "two"]);
        append(&path, b"ee\n");
        tail.poll().unwrap();
        assert_eq!(sink.lines(), ["one", "two", "three"]);
        // Random keys: 16 hex digits.
        assert!(sink.0.lock().unwrap().keys.iter().all(|k| k.len() == 16));
    }

    #[test]
    fn restart_resumes_at_the_checkpoint_without_loss_or_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(&path, b"1\n2\n3");
        let sink = MemSink::default();
        let mut tail = start(dir.path(), "", &sink);
        tail.poll().unwrap();
        drop(tail);
        append(&path, b"\n4\n");
        // `read_from = "end"` only applies to files without a checkpoint.
        let mut tail = start(dir.path(), "read_from = \"end\"", &sink);
        tail.poll().unwrap();
        assert_eq!(sink.lines(), ["1", "2", "3", "4"]);
        // A new file found at start-up with read_from = end starts after its last
        // complete line; one created later starts at 0.
        drop(tail);
        append(&dir.path().join("b.log"), b"old\nhalf");
        let mut tail = start(dir.path(), "read_from = \"end\"", &sink);
        append(&dir.path().join("b.log"), b" line\n");
        append(&dir.path().join("c.log"), b"new\n");
        tail.poll().unwrap();
        let mut got = sink.lines();
        got.sort();
        assert_eq!(got, ["1", "2", "3", "4", "half line", "new"]);
    }

    #[test]
    fn multiline_records_join_until_the_next_start_or_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(
            &path,
            b"stray\n2024 first\n  at a\n  at b\n2024 second\n\n  at c\n",
        );
        let sink = MemSink::default();
        let mut tail = start(
            dir.path(),
            "multiline_start = '^\\d{4} '\nmultiline_timeout_ms = 200",
            &sink,
        );
        tail.poll().unwrap();
        assert_eq!(sink.lines(), ["stray", "2024 first\n  at a\n  at b"]);
        // The checkpoint stays before the record in progress.
        let cp = sink.0.lock().unwrap().checkpoints.values().next().cloned();
        let pos = Position::decode(&cp.unwrap()).unwrap().offset;
        assert_eq!(pos, "stray\n2024 first\n  at a\n  at b\n".len() as u64);
        std::thread::sleep(Duration::from_millis(250));
        tail.poll().unwrap();
        assert_eq!(sink.lines()[2], "2024 second\n\n  at c");
    }

    #[test]
    fn oversized_lines_are_split_streaming_or_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let big = "x".repeat(2500);
        append(&path, format!("a\n{big}\nb\n").as_bytes());
        let sink = MemSink::default();
        let metrics = Metrics::new();
        let mut tail = Tail::start(
            vec![block(dir.path(), "max_record_bytes = 1000")],
            sink.clone(),
            metrics.clone(),
        )
        .unwrap();
        tail.poll().unwrap();
        let lens: Vec<usize> = sink.raw().iter().map(|l| l.len()).collect();
        assert_eq!(lens, [1, 1000, 1000, 500, 1]);
        assert_eq!(metrics.oversized_count(KIND, LineAction::Split), 1);
        // A line longer than the buffer, arriving in pieces: memory stays bounded
        // and the pieces add up.
        let huge = vec![b'y'; 3 * READ_BYTES + 17];
        append(&path, &huge);
        tail.poll().unwrap();
        // Regression (issue 14, row 12): counted when it crossed the limit, not
        // when its newline came.
        assert_eq!(metrics.oversized_count(KIND, LineAction::Split), 2);
        append(&path, b"yy\nafter\n");
        tail.poll().unwrap();
        let got = sink.raw();
        let ys: usize = got[5..got.len() - 1].iter().map(|l| l.len()).sum();
        assert_eq!(ys, huge.len() + 2);
        assert!(got[5..got.len() - 1].iter().all(|l| l.len() <= 1000));
        assert_eq!(got.last().unwrap(), "after");
        assert_eq!(metrics.oversized_count(KIND, LineAction::Split), 2);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(&path, &vec![b'z'; 3 * READ_BYTES]);
        let sink = MemSink::default();
        let metrics = Metrics::new();
        let mut tail = Tail::start(
            vec![block(
                dir.path(),
                "max_record_bytes = 1000\noversized = \"truncate\"",
            )],
            sink.clone(),
            metrics.clone(),
        )
        .unwrap();
        tail.poll().unwrap();
        assert!(sink.raw().is_empty(), "truncated line sent before its end");
        assert_eq!(metrics.oversized_count(KIND, LineAction::Truncated), 1);
        append(&path, b"zzz\nnext\n");
        tail.poll().unwrap();
        let got = sink.raw();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), 1000);
        assert_eq!(got[1], "next");
        assert_eq!(metrics.oversized_count(KIND, LineAction::Truncated), 1);
    }

    /// Regression (issue 14, row 6): the read buffer was searched for a newline from
    /// its start after every read, so a line written in small pieces cost work
    /// quadratic in its length.
    #[test]
    fn a_line_written_in_small_pieces_is_searched_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(&path, b"");
        let sink = MemSink::default();
        let mut tail = start(dir.path(), "", &sink);
        tail.poll().unwrap();
        let line = vec![b'q'; 512 << 10];
        for piece in line.chunks(64) {
            append(&path, piece);
            tail.changed(&path).unwrap();
            while tail.service().unwrap() {}
        }
        append(&path, b"\nafter\n");
        tail.poll().unwrap();
        let lens: Vec<usize> = sink.raw().iter().map(|l| l.len()).collect();
        assert_eq!(lens, [line.len(), 5]);
        let input = (line.len() + 7) as u64;
        assert!(
            tail.scanned_bytes() <= input,
            "searched {} bytes for {input}",
            tail.scanned_bytes()
        );
    }

    /// Regression (issue 14, rows 10 and 11): a symbolic link in a watched
    /// directory was followed to a 0600 file outside the patterns and to
    /// `/proc/self/environ` (the agent's own secrets), with two WARNs per rescan.
    #[test]
    fn symlinks_are_skipped_or_followed_only_within_the_patterns() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let secret_dir = tempfile::tempdir().unwrap();
        let secret = secret_dir.path().join("secret.txt");
        append(&secret, b"top secret\n");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let shared = tempfile::tempdir().unwrap();
        let shared_log = shared.path().join("shared.log");
        append(&shared_log, b"shared line\n");
        append(&dir.path().join("plain.log"), b"plain line\n");
        symlink(&secret, dir.path().join("secret.log")).unwrap();
        symlink("/proc/self/environ", dir.path().join("environ.log")).unwrap();
        symlink(&shared_log, dir.path().join("shared.log")).unwrap();
        let config = |follow: bool| {
            let text = format!(
                "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\n\
                 include = [\"{}/*.log\", \"{}/*.log\"]\nfollow_symlinks = {follow}\n",
                dir.path().display(),
                shared.path().display()
            );
            crate::config::parse(&text, Path::new("t.toml"))
                .unwrap()
                .files
                .remove(0)
        };

        // Not following: only real files, each link skipped and logged once.
        let sink = MemSink::default();
        let metrics = Metrics::new();
        let mut tail = Tail::start(vec![config(false)], sink.clone(), metrics.clone()).unwrap();
        for _ in 0..3 {
            tail.poll().unwrap();
        }
        let mut got = sink.lines();
        got.sort();
        assert_eq!(got, ["plain line", "shared line"]);
        assert_eq!(metrics.file_event_count(FileEvent::Skipped), 3);
        // A link that goes and comes back is logged again.
        std::fs::remove_file(dir.path().join("environ.log")).unwrap();
        tail.poll().unwrap();
        symlink("/proc/self/environ", dir.path().join("environ.log")).unwrap();
        tail.poll().unwrap();
        tail.poll().unwrap();
        assert_eq!(metrics.file_event_count(FileEvent::Skipped), 4);
        drop(tail);

        // Following: only to a regular file the patterns match (the shared log, the
        // same file as its own path: tailed once), never outside them, never /proc.
        let sink = MemSink::default();
        let metrics = Metrics::new();
        let mut tail = Tail::start(vec![config(true)], sink.clone(), metrics.clone()).unwrap();
        tail.poll().unwrap();
        tail.poll().unwrap();
        let mut got = sink.lines();
        got.sort();
        assert_eq!(got, ["plain line", "shared line"]);
        assert_eq!(tail.open_files(), 2);
        assert_eq!(metrics.file_event_count(FileEvent::Skipped), 2);
        let cfg = config(true);
        assert_eq!(
            admit_path(&dir.path().join("environ.log"), &cfg),
            Err(Skip::PseudoFs {
                target: std::fs::canonicalize("/proc/self/environ").unwrap()
            })
        );
        assert!(matches!(
            admit_path(&dir.path().join("secret.log"), &cfg),
            Err(Skip::TargetNotIncluded { .. })
        ));
        assert_eq!(
            admit_path(&dir.path().join("shared.log"), &cfg),
            Ok(std::fs::canonicalize(&shared_log).unwrap())
        );
    }

    #[test]
    fn invalid_utf8_is_passed_replaced_or_rejected() {
        for (policy, expect, action) in [
            ("pass", b"a\xffb".to_vec(), LineAction::Passed),
            (
                "replace",
                "a\u{fffd}b".as_bytes().to_vec(),
                LineAction::Replaced,
            ),
            ("reject", Vec::new(), LineAction::Rejected),
        ] {
            let dir = tempfile::tempdir().unwrap();
            append(&dir.path().join("a.log"), b"a\xffb\nok\n");
            let sink = MemSink::default();
            let metrics = Metrics::new();
            let mut tail = Tail::start(
                vec![block(dir.path(), &format!("invalid_utf8 = \"{policy}\""))],
                sink.clone(),
                metrics.clone(),
            )
            .unwrap();
            tail.poll().unwrap();
            let got = sink.raw();
            if expect.is_empty() {
                assert_eq!(got, vec![Bytes::from("ok")], "{policy}");
                assert_eq!(metrics.rejected_count(KIND, RejectReason::InvalidUtf8), 1);
            } else {
                assert_eq!(
                    got,
                    vec![Bytes::from(expect), Bytes::from("ok")],
                    "{policy}"
                );
            }
            assert_eq!(metrics.invalid_utf8_count(KIND, action), 1, "{policy}");
        }
    }

    #[test]
    fn partition_keys_follow_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(
            &path,
            b"{\"user\":\"u-1\",\"n\":{\"x\":[1,2]}}\n{\"n\":1,\"user\":42}\n{\"other\":1}\nnot json\n",
        );
        let sink = MemSink::default();
        let metrics = Metrics::new();
        let mut tail = Tail::start(
            vec![block(
                dir.path(),
                "partition_key = { json_field = \"user\" }",
            )],
            sink.clone(),
            metrics.clone(),
        )
        .unwrap();
        tail.poll().unwrap();
        let keys = sink.0.lock().unwrap().keys.clone();
        assert_eq!(&keys[..2], ["u-1", "42"]);
        assert_eq!(keys[2].len(), 16);
        assert_eq!(metrics.partition_key_fallback_count(KIND), 2);

        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("a.log"), b"same\nsame\n");
        let sink = MemSink::default();
        let mut tail = start(dir.path(), "partition_key = \"line_hash\"", &sink);
        tail.poll().unwrap();
        let keys = sink.0.lock().unwrap().keys.clone();
        assert_eq!(keys[0], keys[1]);
        assert_eq!(keys[0], format!("{:016x}", fnv1a(b"same")));

        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("a.log"), b"x\n");
        let sink = MemSink::default();
        let mut tail = start(dir.path(), "partition_key = \"file_path\"", &sink);
        tail.poll().unwrap();
        let keys = sink.0.lock().unwrap().keys.clone();
        assert_eq!(keys[0], dir.path().join("a.log").display().to_string());

        // Random: one key per batch, a new one for the next batch.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(&path, b"1\n2\n3\n");
        let sink = MemSink::default();
        let mut tail = start(dir.path(), "", &sink);
        tail.poll().unwrap();
        append(&path, b"4\n5\n");
        tail.poll().unwrap();
        let keys = sink.0.lock().unwrap().keys.clone();
        assert_eq!(keys.len(), 5);
        assert!(keys.iter().all(|k| k.len() == 16));
        assert!(keys[..3].iter().all(|k| *k == keys[0]));
        assert_eq!(keys[3], keys[4]);
        assert_ne!(keys[0], keys[3]);
    }

    #[test]
    fn json_field_reads_top_level_scalars_only() {
        assert_eq!(json_field(br#"{"a":"x"}"#, "a"), Some("x".into()));
        assert_eq!(
            json_field(br#"{"b":{"a":"no"},"a":"yes"}"#, "a"),
            Some("yes".into())
        );
        assert_eq!(json_field(br#"{"a":1.5}"#, "a"), Some("1.5".into()));
        assert_eq!(json_field(br#"{"a":"\u00e9"}"#, "a"), Some("é".into()));
        assert_eq!(
            json_field(br#"{"a\u0062":"esc"}"#, "ab"),
            Some("esc".into())
        );
        assert_eq!(json_field(br#"{"a":null}"#, "a"), None);
        assert_eq!(json_field(br#"{"a":[1]}"#, "a"), None);
        assert_eq!(json_field(br#"[1,2]"#, "a"), None);
        assert_eq!(json_field(b"{\"a\":\"x\"", "a"), Some("x".into()));
        assert_eq!(json_field(b"\xff", "a"), None);
    }

    #[test]
    fn glob_bases_and_depths() {
        assert_eq!(glob_base("/var/log/*.log"), ("/var/log".into(), Some(1)));
        assert_eq!(glob_base("/var/log/app.log"), ("/var/log".into(), Some(1)));
        assert_eq!(glob_base("/var/*/x/*.log"), ("/var".into(), Some(3)));
        assert_eq!(glob_base("/var/log/**/*.log"), ("/var/log".into(), None));
        assert_eq!(glob_base("/*.log"), ("/".into(), Some(1)));
    }

    #[test]
    fn char_boundaries_keep_utf8_whole() {
        let s = "aé€".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(char_boundary(s, 2), 1);
        assert_eq!(char_boundary(s, 3), 3);
        assert_eq!(char_boundary(s, 4), 3);
        assert_eq!(char_boundary(s, 10), 6);
        assert_eq!(char_boundary(&[0x80; 10], 5), 5);
        assert_eq!(key_tail(&"é".repeat(200)).len(), 256);
    }

    #[test]
    fn checkpoint_value_round_trips() {
        let p = Position {
            offset: 1 << 40,
            fingerprint_len: 256,
            fingerprint: 0xdead_beef,
            path: "/var/log/ä.log".into(),
        };
        assert_eq!(Position::decode(&p.encode()), Some(p));
        assert_eq!(Position::decode(&[2, 0, 0]), None);
        let id = FileId { dev: 7, ino: 9 };
        assert_eq!(
            FileId::from_checkpoint_name(&id.checkpoint_name()),
            Some(id)
        );
    }

    #[test]
    fn copytruncate_reads_the_rest_from_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let first: String = (0..50)
            .map(|i| format!("first-{i:04}-{}\n", "p".repeat(20)))
            .collect();
        append(&path, first.as_bytes());
        let sink = MemSink::default();
        let metrics = Metrics::new();
        let mut tail =
            Tail::start(vec![block(dir.path(), "")], sink.clone(), metrics.clone()).unwrap();
        tail.poll().unwrap();
        // Written after the last read, then copied and truncated; the writer goes
        // on past the old position before the tailer looks again.
        append(&path, b"unread-1\nunread-2\n");
        std::fs::copy(&path, dir.path().join("a.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let second: String = (0..80)
            .map(|i| format!("second-{i:04}-{}\n", "q".repeat(20)))
            .collect();
        append(&path, second.as_bytes());
        tail.poll().unwrap();
        let got = sink.lines();
        assert_eq!(got.len(), 50 + 2 + 80, "{got:?}");
        assert_eq!(got[50], "unread-1");
        assert_eq!(got[51], "unread-2");
        assert!(got[52].starts_with("second-0000"));
        assert_eq!(metrics.file_event_count(FileEvent::Truncated), 1);
    }

    #[test]
    fn rotated_and_deleted_files_are_read_to_the_end_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(&path, b"1\n");
        let sink = MemSink::default();
        let mut tail = start(dir.path(), "", &sink);
        tail.poll().unwrap();
        // The writer appends to its handle after the rename, then a new file comes.
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        old.write_all(b"2\n3").unwrap();
        append(&path, b"4\n");
        tail.poll().unwrap();
        // The old file's partial last line is sent when it is closed.
        assert_eq!(sink.lines(), ["1", "2", "3", "4"]);
        assert_eq!(tail.open_files(), 1);
        assert_eq!(sink.0.lock().unwrap().checkpoints.len(), 1);
        // Deleted: read to the end from the open handle.
        let mut h = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        h.write_all(b"5\n").unwrap();
        tail.poll().unwrap();
        assert_eq!(sink.lines(), ["1", "2", "3", "4", "5"]);
        assert_eq!(tail.open_files(), 0);
        assert!(sink.0.lock().unwrap().checkpoints.is_empty());
    }

    #[test]
    fn checkpoints_of_gone_files_are_removed_and_files_rotated_while_stopped_are_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        append(&a, b"a1\n");
        append(&b, b"b1\n");
        let sink = MemSink::default();
        let mut tail = start(dir.path(), "", &sink);
        tail.poll().unwrap();
        drop(tail);
        assert_eq!(sink.0.lock().unwrap().checkpoints.len(), 2);
        // While stopped: a is rotated (and written once more), b deleted.
        append(&a, b"a2\n");
        std::fs::rename(&a, dir.path().join("a.log.1")).unwrap();
        append(&a, b"a3\n");
        std::fs::remove_file(&b).unwrap();
        let mut tail = start(dir.path(), "", &sink);
        tail.poll().unwrap();
        let mut got = sink.lines();
        got.sort();
        assert_eq!(got, ["a1", "a2", "a3", "b1"]);
        // Only the new a.log's checkpoint is left.
        assert_eq!(sink.0.lock().unwrap().checkpoints.len(), 1);
        assert_eq!(tail.open_files(), 1);
    }
}
