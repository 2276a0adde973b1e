//! One stream's spool: its segment files, the index of its live entries, its
//! acks and its checkpoint table.
//!
//! Writers append frames to the *open* segment under the stream's lock (one
//! write call per entry, into the page cache); the spool's flusher thread makes
//! them durable. Acks are buffered here and written to the segment's ack file by
//! the flusher. A segment is *sealed* when it reaches the roll size (a footer
//! lists its entries, so an open reads no entry) and removed once none of its
//! entries is live; a sealed segment whose few live entries pin it is copied
//! forward first.
//!
//! A [`StreamSpool`] owns one stream's [`State`] (segments, live entries,
//! progress, checkpoints) behind its lock, and its manifest. Who calls it: the
//! intake (`crate::intake`), the only door for writers and delivery, gets it from
//! `Spool::stream`; the spool's open (`spool/open.rs`) builds it with
//! `StreamInner::recover`; the commit thread (`spool/commit.rs`) runs its part of
//! each group commit. Nothing else reaches its files.
//!
//! - `recover/`: the open (footers, scans of the segment open at a crash, acks,
//!   the checkpoint table; `findings.rs` keeps the damage it finds and writes
//!   its report, `segment.rs` reads one segment file);
//! - `io.rs`: what writers, the reader and delivery call (append, read, retire,
//!   checkpoints);
//! - `commit.rs`: the stream's part of a group commit (acks, syncs, removals,
//!   copy-forward);
//! - `files.rs`: the few sealed segment and ack files kept open;
//! - `manifest.rs`: the durable facts of each segment (how far it was synced,
//!   what it held), so that damage is told from a crash's torn tail.

mod commit;
mod files;
mod io;
mod manifest;
mod recover;

pub(crate) use files::OPEN_FILES;
pub(super) use manifest::MANIFEST_FILE;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::damage::{self, DamageEvent};
use super::frame::{self, CheckpointRecord, Fact, Placed};
use super::index::CatalogEvent;
use super::storage::{create_dir_durable, Storage, StoredFile};
use super::{Space, SpoolError};

/// A segment with no live entry and no append for this long is sealed and
/// removed (so a drained spool gives its disk back).
pub(crate) const ROLL_IDLE: Duration = Duration::from_secs(1);
/// A sealed segment whose live entries take less than 1/this of it is copied
/// forward (its live entries are written again to the open segment).
const COPY_FORWARD_RATIO: u64 = 4;
/// A sealed segment written since the last sync is copied forward instead of
/// synced when less than 1/`MOVE_DELIVERED_RATIO` of it is live.
const MOVE_DELIVERED_RATIO: u64 = 8;
/// An open segment at least this fraction of `segment_bytes` long, less than a
/// quarter live, is rolled by the commit (see [`Disk::collect`]).
const ROLL_DELIVERED_FRACTION: u64 = 64;
/// Name of the carried-forward checkpoint table in a stream's directory.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoints";

/// The spool of one stream.
#[derive(Clone)]
pub struct StreamSpool {
    pub(super) inner: Arc<StreamInner>,
}

pub(super) struct StreamInner {
    pub(super) name: Arc<str>,
    next_id: AtomicU64,
    /// Sequence of checkpoint writes (a later one wins over an earlier one,
    /// wherever the two are stored).
    checkpoint_seq: AtomicU64,
    pub(super) space: Arc<Space>,
    /// `None` in memory-only mode.
    pub(super) disk: Option<Disk>,
    /// This stream's share of the space's counts.
    pub(super) records: AtomicU64,
}

pub(super) struct Disk {
    pub(super) dir: PathBuf,
    pub(super) storage: Arc<dyn Storage>,
    segment_bytes: u64,
    pub(super) state: Mutex<State>,
    space: Arc<Space>,
    /// When a failure to write acks was last logged (Unix milliseconds).
    acks_warned_ms: AtomicU64,
    /// The segments' durable facts; written by the group commit only.
    manifest: Mutex<manifest::Manifest>,
    /// The spool's `damaged/` directory (files moved aside, the damage report).
    damaged_dir: PathBuf,
}

/// Where a live entry is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
    count: u32,
    at_ms: u64,
}

pub(super) struct Segment {
    /// The open segment's file (and a sealed one's until the next commit);
    /// the others are opened through [`State::files`].
    file: Option<Arc<dyn StoredFile>>,
    /// Bytes of the file (what counts against `max_bytes`).
    len: u64,
    /// Where its frames end (before the footer of a sealed segment).
    data_len: u64,
    /// Entries and records written in its frames (copies included), and its
    /// records not yet delivered: what its manifest fact says at a commit.
    entries: u64,
    records: u64,
    unsent: u64,
    /// What the manifest says of it (`None`: nothing yet).
    fact: Option<Fact>,
    live: u32,
    live_bytes: u64,
    sealed: bool,
    /// Written since the last fdatasync.
    dirty: bool,
    /// The checkpoints it holds frames of, with the latest sequence number of
    /// each: removing it needs the table carried forward when it holds the latest
    /// record of one that no other place keeps, and a removal recorded in the
    /// table stays there while a segment still holds an older value.
    names: BTreeMap<Vec<u8>, u64>,
    /// Ack frames not written yet (a write failed: the commit tries again).
    acks: Vec<u8>,
    /// Bytes of its ack file (0: none yet).
    ack_len: u64,
    /// The ack file was written since the last fdatasync.
    ack_dirty: bool,
}

/// The open segment's extras.
struct Open {
    seq: u64,
    placed: Vec<Placed>,
    checkpoints: BTreeMap<Vec<u8>, CheckpointRecord>,
    last_append: Instant,
}

pub(super) struct State {
    open: Option<Open>,
    segments: BTreeMap<u64, Segment>,
    entries: BTreeMap<u64, Loc>,
    progress: HashMap<u64, Vec<u64>>,
    /// Every checkpoint's latest record (removals included, until carried).
    checkpoints: BTreeMap<Vec<u8>, CheckpointRecord>,
    next_seq: u64,
    /// Changes for the index, applied by the flusher.
    pub(super) catalog: Vec<CatalogEvent>,
    /// Files created since the last directory fsync.
    dir_dirty: bool,
    /// What the checkpoint file holds: name → sequence number.
    table_has: BTreeMap<Vec<u8>, u64>,
    /// Sealed segment and ack files open now (a bounded few).
    files: files::FileCache,
}

pub(super) fn seg_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}
pub(super) fn ack_name(seq: u64) -> String {
    format!("{seq:016x}.ack")
}
pub(super) fn parse_seq(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?;
    (stem.len() == 16)
        .then(|| u64::from_str_radix(stem, 16).ok())
        .flatten()
}

/// A stream's directory name: its name in hex (any stream name is a safe path).
pub(super) fn dir_name(stream: &str) -> String {
    stream.bytes().map(|b| format!("{b:02x}")).collect()
}
pub(super) fn stream_of_dir(dir: &str) -> Option<String> {
    if !dir.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..dir.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(dir.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn io_err(path: &Path, e: std::io::Error) -> SpoolError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        SpoolError::NoSpace {
            path: path.to_owned(),
        }
    } else {
        SpoolError::File {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// What an open found, for the log and the counters.
#[derive(Default)]
pub(super) struct Recovered {
    pub damaged_frames: u64,
    pub lost_records: u64,
}

impl StreamInner {
    pub(super) fn memory(name: &str, space: Arc<Space>) -> StreamInner {
        StreamInner {
            name: name.into(),
            next_id: AtomicU64::new(1),
            checkpoint_seq: AtomicU64::new(1),
            space,
            disk: None,
            records: AtomicU64::new(0),
        }
    }
}

impl Disk {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a frame to the open segment (creating one if needed).
    fn append(
        &self,
        stream: &str,
        state: &mut State,
        buf: &[u8],
    ) -> Result<(u64, u64), SpoolError> {
        if state.open.is_none() {
            self.create_segment(stream, state)?;
        }
        let open = state.open.as_mut().expect("created above");
        let seq = open.seq;
        let seg = state
            .segments
            .get_mut(&seq)
            .expect("the open segment is listed");
        let offset = seg.len;
        let file = seg.file.as_ref().expect("the open segment holds its file");
        if let Err(e) = file.write_at(offset, buf) {
            // Nothing of a failed write may stay: the next frame goes here.
            let _ = file.set_len(offset);
            return Err(io_err(&self.dir.join(seg_name(seq)), e));
        }
        seg.len += buf.len() as u64;
        seg.data_len = seg.len;
        seg.dirty = true;
        open.last_append = Instant::now();
        Ok((seq, offset))
    }

    fn create_segment(&self, stream: &str, state: &mut State) -> Result<(), SpoolError> {
        let seq = state.next_seq;
        let path = self.dir.join(seg_name(seq));
        create_dir_durable(&*self.storage, &self.dir).map_err(|e| io_err(&self.dir, e))?;
        let file = self
            .storage
            .open(&path, true)
            .map_err(|e| io_err(&path, e))?;
        let head = frame::frame(&frame::header(frame::ROLE_SEGMENT, stream, seq));
        if let Err(e) = file.write_at(0, &head) {
            drop(file);
            let _ = self.storage.remove_file(&path);
            return Err(io_err(&path, e));
        }
        state.next_seq += 1;
        self.space
            .disk_bytes
            .fetch_add(head.len() as u64, Ordering::Relaxed);
        state.segments.insert(
            seq,
            Segment {
                file: Some(file),
                len: head.len() as u64,
                data_len: head.len() as u64,
                entries: 0,
                records: 0,
                unsent: 0,
                fact: None,
                live: 0,
                live_bytes: 0,
                sealed: false,
                dirty: true,
                names: BTreeMap::new(),
                acks: Vec::new(),
                ack_len: 0,
                ack_dirty: false,
            },
        );
        state.open = Some(Open {
            seq,
            placed: Vec::new(),
            checkpoints: BTreeMap::new(),
            last_append: Instant::now(),
        });
        state.dir_dirty = true;
        state.catalog.push(CatalogEvent::Created(seq));
        Ok(())
    }

    /// Writes the open segment's footer and makes it sealed. Returns the bytes
    /// the footer added.
    fn seal(&self, state: &mut State) -> u64 {
        let Some(open) = state.open.take() else {
            return 0;
        };
        let seg = state
            .segments
            .get_mut(&open.seq)
            .expect("the open segment is listed");
        seg.sealed = true;
        let checkpoints: Vec<CheckpointRecord> = open.checkpoints.into_values().collect();
        let mut tail = frame::frame(&frame::footer(&open.placed, &checkpoints));
        tail.extend_from_slice(&frame::trailer(seg.len));
        // A footer that cannot be written (full disk) only costs a scan at the
        // next open.
        let file = seg.file.as_ref().expect("the open segment holds its file");
        match file.write_at(seg.len, &tail) {
            Ok(()) => {
                seg.len += tail.len() as u64;
                seg.dirty = true;
                tail.len() as u64
            }
            Err(_) => {
                let _ = file.set_len(seg.len);
                0
            }
        }
    }
}

/// Appends `events` to the spool's damage report; false (and logged) when it
/// cannot be written, so that what it would forget is kept for the next try.
fn report_damage(storage: &dyn Storage, damaged_dir: &Path, events: &[DamageEvent]) -> bool {
    match damage::record(storage, damaged_dir, events) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(path = %damaged_dir.join(damage::REPORT_FILE).display(), error = %e,
                "Writing the spool's damage report failed; the damage is in the log only");
            false
        }
    }
}

impl Disk {
    /// A segment's file: the open segment's own, or one opened on demand.
    fn seg_file(&self, state: &mut State, seq: u64) -> std::io::Result<Arc<dyn StoredFile>> {
        if let Some(f) = state.segments.get(&seq).and_then(|s| s.file.clone()) {
            return Ok(f);
        }
        state
            .files
            .get(&*self.storage, &self.dir.join(seg_name(seq)), false)
    }

    /// See [`report_damage`].
    fn report(&self, events: &[DamageEvent]) -> bool {
        report_damage(&*self.storage, &self.damaged_dir, events)
    }
}

/// Keeps the later of two records of one checkpoint (by sequence, not by place:
/// an entry copied forward carries its old checkpoint after newer ones).
pub(super) fn keep_later(table: &mut BTreeMap<Vec<u8>, CheckpointRecord>, c: CheckpointRecord) {
    if table.get(&c.name).is_none_or(|old| old.seq < c.seq) {
        table.insert(c.name.clone(), c);
    }
}

/// Whether removing the segments `remove` would lose the latest record of a
/// checkpoint: it is in one of them, and neither a segment that stays nor the
/// checkpoint file holds it. (A removal with no older value left anywhere needs
/// no record at all.)
fn carry_needed(state: &State, remove: &[u64]) -> bool {
    let mut names: BTreeSet<&Vec<u8>> = BTreeSet::new();
    for q in remove {
        names.extend(state.segments[q].names.keys());
    }
    names.into_iter().any(|name| {
        let Some(latest) = state.checkpoints.get(name) else {
            return false;
        };
        let kept = state
            .segments
            .iter()
            .filter(|(q, _)| !remove.contains(q))
            .filter_map(|(_, s)| s.names.get(name))
            .chain(state.table_has.get(name))
            .max();
        match kept {
            Some(&seq) => seq < latest.seq,
            None => latest.value.is_some(),
        }
    })
}

/// Records of an entry already delivered, by its progress bitmap.
fn done_bits(progress: Option<&Vec<u64>>) -> u64 {
    progress.map_or(0, |p| p.iter().map(|w| u64::from(w.count_ones())).sum())
}

impl Segment {
    /// What a commit that synced it up to now records of it.
    fn fact(&self) -> Fact {
        Fact {
            data_len: self.data_len,
            entries: self.entries,
            records: self.records,
            unsent: self.unsent,
        }
    }
}

fn seg_len(state: &State, seq: u64) -> u64 {
    state.segments.get(&seq).map_or(0, |s| s.len)
}
