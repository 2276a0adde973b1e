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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{self, CheckpointRecord, Placed};
use super::index::CatalogEvent;
use super::storage::{Storage, StoredFile};
use super::{now_ms, Checkpoint, Entry, Space, SpoolError};
use crate::record::UserRecord;

/// A segment with no live entry and no append for this long is sealed and
/// removed (so a drained spool gives its disk back).
pub(crate) const ROLL_IDLE: Duration = Duration::from_secs(1);
/// A sealed segment whose live entries take less than 1/this of it is copied
/// forward (its live entries are written again to the open segment).
const COPY_FORWARD_RATIO: u64 = 4;
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
    file: Arc<dyn StoredFile>,
    /// Bytes of the file (what counts against `max_bytes`).
    len: u64,
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
    ack_file: Option<Arc<dyn StoredFile>>,
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
}

fn seg_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}
fn ack_name(seq: u64) -> String {
    format!("{seq:016x}.ack")
}
fn parse_seq(name: &str, ext: &str) -> Option<u64> {
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
    if dir.len() % 2 != 0 {
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

    /// Opens a stream's directory: reads segment footers (scanning the segments
    /// that have none), applies the acks, and loads the checkpoints.
    pub(super) fn recover(
        name: &str,
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        segment_bytes: u64,
        space: Arc<Space>,
        catalog: Option<&BTreeSet<u64>>,
        damaged_dir: &Path,
    ) -> Result<(StreamInner, Recovered), SpoolError> {
        let mut found = Recovered::default();
        let names = match storage.list(&dir) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&dir, e)),
        };
        let mut segs: BTreeSet<u64> = BTreeSet::new();
        let mut acks: BTreeSet<u64> = BTreeSet::new();
        for n in &names {
            if let Some(s) = parse_seq(n, ".seg") {
                segs.insert(s);
            } else if let Some(s) = parse_seq(n, ".ack") {
                acks.insert(s);
            } else if n.ends_with(".tmp") {
                let _ = storage.remove_file(&dir.join(n));
            }
        }
        if let Some(catalog) = catalog {
            for seq in catalog.difference(&segs) {
                if acks.contains(seq) || *seq >= segs.last().copied().unwrap_or(0) {
                    // An ack file without its segment is what a crash during a
                    // removal leaves; the newest segment may have been lost with
                    // nothing durable in it.
                    continue;
                }
                found.damaged_frames += 1;
                tracing::error!(stream = name, segment = %dir.join(seg_name(*seq)).display(),
                    "A spool segment file is missing: the records it held are lost");
            }
        }
        let mut state = State {
            open: None,
            segments: BTreeMap::new(),
            entries: BTreeMap::new(),
            progress: HashMap::new(),
            checkpoints: BTreeMap::new(),
            next_seq: segs.last().map_or(1, |s| s + 1),
            catalog: Vec::new(),
            dir_dirty: false,
            table_has: BTreeMap::new(),
        };
        let mut max_id = 0u64;
        let mut max_ckpt = 0u64;
        // The table carried forward.
        let table_path = dir.join(CHECKPOINT_FILE);
        if storage.exists(&table_path) {
            match read_whole(&*storage, &table_path).map(|b| {
                let w = frame::walk(&b, 0);
                let header = w.frames.first().and_then(|(_, b)| frame::parse_header(b));
                let table = w.frames.get(1).and_then(|(_, b)| frame::parse_table(b));
                (header, table)
            }) {
                Ok((Some((v, ..)), _)) if v != frame::VERSION => {
                    return Err(SpoolError::Version {
                        path: table_path,
                        version: v,
                    })
                }
                Ok((Some(_), Some(table))) => {
                    for c in table {
                        max_ckpt = max_ckpt.max(c.seq);
                        state.table_has.insert(c.name.clone(), c.seq);
                        keep_later(&mut state.checkpoints, c);
                    }
                }
                _ => {
                    found.damaged_frames += 1;
                    tracing::error!(stream = name, path = %table_path.display(),
                        "The spool's checkpoint table is damaged; files whose last batch was delivered start again from their newest readable checkpoint");
                    move_aside(&*storage, &table_path, damaged_dir);
                }
            }
        }
        for &seq in &segs {
            let path = dir.join(seg_name(seq));
            let file = storage.open(&path, false).map_err(|e| io_err(&path, e))?;
            let len = file.len().map_err(|e| io_err(&path, e))?;
            let (placed, checkpoints) = match read_sealed(&*file, len) {
                Some(Ok(found)) => found,
                Some(Err(version)) => return Err(SpoolError::Version { path, version }),
                None => match scan(name, &path, &*file, len, &mut found)? {
                    Some(found) => found,
                    None => {
                        found.damaged_frames += 1;
                        tracing::error!(stream = name, segment = %path.display(),
                            "A spool segment has no readable header; it is moved aside and its records are lost");
                        drop(file);
                        move_aside(&*storage, &path, damaged_dir);
                        continue;
                    }
                },
            };
            let len = file.len().map_err(|e| io_err(&path, e))?;
            let mut seg = Segment {
                file,
                len,
                live: 0,
                live_bytes: 0,
                sealed: true,
                dirty: false,
                names: checkpoints
                    .iter()
                    .map(|c| (c.name.clone(), c.seq))
                    .collect(),
                acks: Vec::new(),
                ack_file: None,
                ack_len: 0,
                ack_dirty: false,
            };
            for c in checkpoints {
                max_ckpt = max_ckpt.max(c.seq);
                keep_later(&mut state.checkpoints, c);
            }
            for p in placed {
                max_id = max_id.max(p.id);
                // An entry copied forward before a crash is in two segments: the
                // later copy is the one kept.
                if let Some(old) = state.entries.insert(
                    p.id,
                    Loc {
                        seg: seq,
                        offset: p.offset,
                        len: p.len,
                        count: p.count,
                        at_ms: p.at_ms,
                    },
                ) {
                    if let Some(s) = state.segments.get_mut(&old.seg) {
                        s.live -= 1;
                        s.live_bytes -= u64::from(old.len);
                    }
                }
                seg.live += 1;
                seg.live_bytes += u64::from(p.len);
            }
            state.segments.insert(seq, seg);
        }
        // Acks, in any order: they name entries by id.
        for &seq in &acks {
            let path = dir.join(ack_name(seq));
            if !state.segments.contains_key(&seq) {
                let _ = storage.remove_file(&path);
                continue;
            }
            let bytes = read_whole(&*storage, &path).map_err(|e| io_err(&path, e))?;
            let w = frame::walk(&bytes, 0);
            if !w.damaged.is_empty() {
                tracing::warn!(stream = name, path = %path.display(),
                    "Part of a spool ack file is damaged; the records it acknowledged are sent again");
            }
            for (i, (_, body)) in w.frames.iter().enumerate() {
                if i == 0 {
                    match frame::parse_header(body) {
                        Some((v, ..)) if v != frame::VERSION => {
                            return Err(SpoolError::Version { path, version: v })
                        }
                        _ => continue,
                    }
                }
                match frame::parse_ack(body) {
                    Some(frame::Ack::Done(ids)) => {
                        for id in ids {
                            if let Some(loc) = state.entries.remove(&id) {
                                state.progress.remove(&id);
                                if let Some(s) = state.segments.get_mut(&loc.seg) {
                                    s.live -= 1;
                                    s.live_bytes -= u64::from(loc.len);
                                }
                            }
                        }
                    }
                    Some(frame::Ack::Progress(id, bits)) if state.entries.contains_key(&id) => {
                        let p = state.progress.entry(id).or_default();
                        if p.len() < bits.len() {
                            p.resize(bits.len(), 0);
                        }
                        for (a, b) in p.iter_mut().zip(bits) {
                            *a |= b;
                        }
                    }
                    Some(frame::Ack::Progress(..)) => {}
                    None => {}
                }
            }
            // Later acks go to the end of what was read well.
            let s = state.segments.get_mut(&seq).expect("checked above");
            if w.end < bytes.len() as u64 {
                if let Ok(f) = storage.open(&path, false) {
                    let _ = f.set_len(w.end);
                }
            }
            s.ack_len = w.end;
            s.ack_file = storage.open(&path, false).ok();
            if s.ack_len == 0 {
                s.ack_file = None;
            }
        }
        let mut records = 0u64;
        for (id, loc) in &state.entries {
            let done: u32 = state
                .progress
                .get(id)
                .map_or(0, |p| p.iter().map(|w| w.count_ones()).sum());
            records += u64::from(loc.count.saturating_sub(done));
        }
        let disk_bytes: u64 = state.segments.values().map(|s| s.len).sum();
        space.disk_bytes.fetch_add(disk_bytes, Ordering::Relaxed);
        let live: u64 = state.segments.values().map(|s| s.live_bytes).sum();
        space.used_bytes.fetch_add(live, Ordering::Relaxed);
        space.records.fetch_add(records, Ordering::Relaxed);
        let inner = StreamInner {
            name: name.into(),
            next_id: AtomicU64::new(max_id + 1),
            checkpoint_seq: AtomicU64::new(max_ckpt + 1),
            space: space.clone(),
            disk: Some(Disk {
                dir,
                storage,
                segment_bytes,
                state: Mutex::new(state),
                space: space.clone(),
                acks_warned_ms: AtomicU64::new(0),
            }),
            records: AtomicU64::new(records),
        };
        Ok((inner, found))
    }
}

fn read_whole(storage: &dyn Storage, path: &Path) -> std::io::Result<Vec<u8>> {
    let f = storage.open(path, false)?;
    let mut b = vec![0u8; f.len()? as usize];
    f.read_at(0, &mut b)?;
    Ok(b)
}

/// Moves a damaged file into the spool's `damaged/` directory.
pub(super) fn move_aside(storage: &dyn Storage, path: &Path, damaged_dir: &Path) {
    let name = format!(
        "{}-{}-{}",
        now_ms(),
        path.parent()
            .and_then(|p| p.file_name())
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let moved = storage
        .create_dir_all(damaged_dir)
        .and_then(|()| storage.rename(path, &damaged_dir.join(name)));
    if let Err(e) = moved {
        tracing::error!(path = %path.display(), error = %e, "Moving a damaged spool file aside failed; it is removed");
        let _ = storage.remove_file(path);
    }
}

type Found = (Vec<Placed>, Vec<CheckpointRecord>);

/// Keeps the later of two records of one checkpoint (by sequence, not by place:
/// an entry copied forward carries its old checkpoint after newer ones).
fn keep_later(table: &mut BTreeMap<Vec<u8>, CheckpointRecord>, c: CheckpointRecord) {
    if table.get(&c.name).is_none_or(|old| old.seq < c.seq) {
        table.insert(c.name.clone(), c);
    }
}

/// Reads a sealed segment's footer: `None` when it has none (or a bad one),
/// `Some(Err(version))` for a format this binary does not know.
fn read_sealed(file: &dyn StoredFile, len: u64) -> Option<Result<Found, u8>> {
    let mut head = vec![0u8; len.min(4096) as usize];
    file.read_at(0, &mut head).ok()?;
    let first = frame::walk(&head, 0).frames.first().map(|(_, b)| *b)?;
    match frame::parse_header(first)? {
        (v, ..) if v != frame::VERSION => return Some(Err(v)),
        (_, role, ..) if role != frame::ROLE_SEGMENT => return None,
        _ => {}
    }
    if len < frame::TRAILER as u64 {
        return None;
    }
    let mut t = [0u8; frame::TRAILER];
    file.read_at(len - frame::TRAILER as u64, &mut t).ok()?;
    let at = frame::parse_trailer(&t)?;
    let flen = (len - frame::TRAILER as u64).checked_sub(at)?;
    let mut f = vec![0u8; flen as usize];
    file.read_at(at, &mut f).ok()?;
    let body = frame::check(&f)?;
    frame::parse_footer(body).map(Ok)
}

/// Scans a segment without a footer (the one open at a crash): every good
/// frame is taken, damage in the middle is reported, a torn tail is cut. `None`
/// when not even the header can be read.
fn scan(
    stream: &str,
    path: &Path,
    file: &dyn StoredFile,
    len: u64,
    found: &mut Recovered,
) -> Result<Option<Found>, SpoolError> {
    let mut b = vec![0u8; len as usize];
    file.read_at(0, &mut b).map_err(|e| io_err(path, e))?;
    let w = frame::walk(&b, 0);
    match w.frames.first().and_then(|(_, b)| frame::parse_header(b)) {
        Some((v, ..)) if v != frame::VERSION => {
            return Err(SpoolError::Version {
                path: path.to_owned(),
                version: v,
            })
        }
        Some((_, frame::ROLE_SEGMENT, ..)) if w.frames[0].0 == 0 => {}
        _ => return Ok(None),
    }
    for &(from, to) in &w.damaged {
        found.damaged_frames += 1;
        tracing::error!(stream, segment = %path.display(), offset = from, bytes = to - from,
            "A damaged frame in the spool was skipped: the records it held are lost");
    }
    let (mut placed, mut checkpoints) = (Vec::new(), BTreeMap::new());
    for &(offset, body) in &w.frames[1..] {
        match body.first() {
            Some(&frame::ENTRY) => {
                if let Some((head, _)) = frame::entry_head(body) {
                    placed.push(Placed {
                        id: head.id,
                        offset,
                        len: (frame::FRAME_HEADER + body.len()) as u32,
                        count: head.count,
                        at_ms: head.at_ms,
                    });
                    if let Some(c) = head.checkpoint {
                        keep_later(&mut checkpoints, c);
                    }
                }
            }
            Some(&frame::CHECKPOINT) => {
                if let Some(c) = frame::parse_checkpoint(body) {
                    keep_later(&mut checkpoints, c);
                }
            }
            _ => {}
        }
    }
    if w.end < len {
        tracing::warn!(stream, segment = %path.display(), offset = w.end, bytes = len - w.end,
            "Cut the torn end of the spool segment open at a crash (records never acknowledged as durable)");
        file.set_len(w.end).map_err(|e| io_err(path, e))?;
    }
    let checkpoints: Vec<CheckpointRecord> = checkpoints.into_values().collect();
    // Sealed now, so the next open reads its footer (best effort: on a full disk
    // it stays as it is and is scanned again).
    let body = frame::footer(&placed, &checkpoints);
    let mut tail = frame::frame(&body);
    tail.extend_from_slice(&frame::trailer(w.end));
    if file.write_at(w.end, &tail).is_err() {
        let _ = file.set_len(w.end);
    }
    Ok(Some((placed, checkpoints)))
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
        if let Err(e) = seg.file.write_at(offset, buf) {
            // Nothing of a failed write may stay: the next frame goes here.
            let _ = seg.file.set_len(offset);
            return Err(io_err(&self.dir.join(seg_name(seq)), e));
        }
        seg.len += buf.len() as u64;
        seg.dirty = true;
        open.last_append = Instant::now();
        Ok((seq, offset))
    }

    fn create_segment(&self, stream: &str, state: &mut State) -> Result<(), SpoolError> {
        let seq = state.next_seq;
        let path = self.dir.join(seg_name(seq));
        self.storage
            .create_dir_all(&self.dir)
            .map_err(|e| io_err(&self.dir, e))?;
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
                file,
                len: head.len() as u64,
                live: 0,
                live_bytes: 0,
                sealed: false,
                dirty: true,
                names: BTreeMap::new(),
                acks: Vec::new(),
                ack_file: None,
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
        match seg.file.write_at(seg.len, &tail) {
            Ok(()) => {
                seg.len += tail.len() as u64;
                seg.dirty = true;
                tail.len() as u64
            }
            Err(_) => {
                let _ = seg.file.set_len(seg.len);
                0
            }
        }
    }
}

impl StreamSpool {
    pub fn name(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// Whether records are kept in memory only.
    pub fn is_memory_only(&self) -> bool {
        self.inner.disk.is_none()
    }

    /// Writes a batch of records as one entry and returns its id and size. Fails
    /// with [`SpoolError::Full`] (or [`SpoolError::DiskFull`]) when there is no
    /// room for it. In memory-only mode it only assigns the id.
    pub fn append(&self, records: &[UserRecord]) -> Result<(u64, u64), SpoolError> {
        self.append_with_checkpoint(records, None, false)
    }

    /// Like [`append`](Self::append), and writes a checkpoint in the same frame:
    /// records and a source's read position are one atomic write. `_waits` (the
    /// entry will wait in the spool) no longer changes how it is stored.
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
    /// with an optional checkpoint, and returns its size. Durable after the next
    /// group commit ([`Spool::durable`](super::Spool::durable)).
    pub fn write(
        &self,
        id: u64,
        records: &[UserRecord],
        checkpoint: Option<&Checkpoint>,
        _waits: bool,
    ) -> Result<u64, SpoolError> {
        self.write_entry(id, records, checkpoint, true)
    }

    /// Writes an entry whatever the bounds (the migration of an old spool).
    pub(super) fn write_unbounded(&self, records: &[UserRecord]) -> Result<u64, SpoolError> {
        let id = self.reserve_id();
        self.write_entry(id, records, None, false)
    }

    fn write_entry(
        &self,
        id: u64,
        records: &[UserRecord],
        checkpoint: Option<&Checkpoint>,
        bounded: bool,
    ) -> Result<u64, SpoolError> {
        let Some(disk) = &self.inner.disk else {
            return Ok(records.iter().map(|r| r.size() as u64).sum());
        };
        let c = checkpoint.map(|c| CheckpointRecord {
            seq: self.inner.checkpoint_seq.fetch_add(1, Ordering::Relaxed),
            name: c.name.clone(),
            value: Some(c.value.clone()),
        });
        let at_ms = now_ms();
        let buf = frame::entry(id, at_ms, records, c.as_ref());
        let len = buf.len() as u64;
        let space = &self.inner.space;
        if bounded {
            space.reserve(len)?;
        } else {
            space.disk_bytes.fetch_add(len, Ordering::AcqRel);
        }
        let mut state = disk.lock();
        let (seq, offset) = match disk.append(&self.inner.name, &mut state, &buf) {
            Ok(at) => at,
            Err(e) => {
                drop(state);
                space.unreserve(len);
                return Err(e);
            }
        };
        let loc = Loc {
            seg: seq,
            offset,
            len: len as u32,
            count: records.len() as u32,
            at_ms,
        };
        state.entries.insert(id, loc);
        let seg = state.segments.get_mut(&seq).expect("just written");
        seg.live += 1;
        seg.live_bytes += len;
        if let Some(c) = &c {
            seg.names.insert(c.name.clone(), c.seq);
        }
        let open = state.open.as_mut().expect("just written");
        open.placed.push(Placed {
            id,
            offset,
            len: len as u32,
            count: loc.count,
            at_ms,
        });
        if let Some(c) = c {
            open.checkpoints.insert(c.name.clone(), c.clone());
            state.checkpoints.insert(c.name.clone(), c);
        }
        if seg_len(&state, seq) >= disk.segment_bytes {
            let added = disk.seal(&mut state);
            space.disk_bytes.fetch_add(added, Ordering::Relaxed);
        }
        drop(state);
        let n = records.len() as u64;
        space.records.fetch_add(n, Ordering::Relaxed);
        space.used_bytes.fetch_add(len, Ordering::Relaxed);
        space.unsynced.fetch_add(len, Ordering::Release);
        self.inner.records.fetch_add(n, Ordering::Relaxed);
        space.writes.fetch_add(1, Ordering::Release);
        Ok(len)
    }

    /// Reads up to `max_bytes` of entries (at least one, if any) with ids `>= from`,
    /// in id order, skipping the ids for which `skip` is true. An entry whose frame
    /// is damaged is reported, counted and dropped. Blocking: call it from a
    /// blocking thread.
    pub fn read_from(
        &self,
        from: u64,
        max_bytes: u64,
        skip: impl Fn(u64) -> bool,
    ) -> Result<(Vec<Entry>, Option<u64>), SpoolError> {
        let Some(disk) = &self.inner.disk else {
            return Ok((Vec::new(), None));
        };
        let mut wanted = Vec::new();
        let mut next = None;
        {
            let state = disk.lock();
            let mut total = 0u64;
            for (&id, loc) in state.entries.range(from..) {
                if skip(id) {
                    continue;
                }
                if total >= max_bytes && !wanted.is_empty() {
                    next = Some(id);
                    break;
                }
                total += u64::from(loc.len);
                let file = state.segments[&loc.seg].file.clone();
                wanted.push((id, *loc, file, state.progress.get(&id).cloned()));
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        for (id, loc, file, delivered) in wanted {
            let mut buf = vec![0u8; loc.len as usize];
            let read = file
                .read_at(loc.offset, &mut buf)
                .ok()
                .and_then(|()| frame::check(&buf).map(|b| b.len()))
                .and_then(|body_len| {
                    let body =
                        Bytes::from(buf).slice(frame::FRAME_HEADER..frame::FRAME_HEADER + body_len);
                    frame::entry_records(&body)
                })
                .filter(|(head, _)| head.id == id);
            match read {
                Some((head, records)) => out.push(Entry {
                    id,
                    bytes: u64::from(loc.len),
                    records,
                    delivered,
                    spooled_at_ms: head.at_ms,
                }),
                None => self.drop_damaged(id, &loc),
            }
        }
        Ok((out, next))
    }

    /// An entry that cannot be read back: reported, counted, retired.
    fn drop_damaged(&self, id: u64, loc: &Loc) {
        let Some(disk) = &self.inner.disk else {
            return;
        };
        let lost = {
            let state = disk.lock();
            let done: u32 = state
                .progress
                .get(&id)
                .map_or(0, |p| p.iter().map(|w| w.count_ones()).sum());
            u64::from(loc.count.saturating_sub(done))
        };
        tracing::error!(stream = %self.inner.name,
            segment = %disk.dir.join(seg_name(loc.seg)).display(), offset = loc.offset, records = lost,
            "A damaged frame in the spool was skipped: the records it held are lost");
        self.inner
            .space
            .damaged_frames
            .fetch_add(1, Ordering::Relaxed);
        self.inner
            .space
            .lost_records
            .fetch_add(lost, Ordering::Relaxed);
        let _ = self.retire(&[(id, u64::from(loc.len))], &[], lost);
    }

    /// Records the outcome of deliveries: `done` entries (id, bytes) are retired,
    /// `partial` entries get their progress bitmap stored; `records` user records
    /// were delivered (or given up) in all. Made durable by the next group commit;
    /// an ack lost in a crash only means those records are sent again.
    pub fn retire(
        &self,
        done: &[(u64, u64)],
        partial: &[(u64, &[u64])],
        records: u64,
    ) -> Result<(), SpoolError> {
        let space = &self.inner.space;
        space.records.fetch_sub(records, Ordering::Relaxed);
        self.inner.records.fetch_sub(records, Ordering::Relaxed);
        let Some(disk) = &self.inner.disk else {
            return Ok(());
        };
        if done.is_empty() && partial.is_empty() {
            return Ok(());
        }
        let mut freed = 0u64;
        {
            let mut state = disk.lock();
            let mut by_seg: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for &(id, _) in done {
                if let Some(loc) = state.entries.remove(&id) {
                    state.progress.remove(&id);
                    let seg = state
                        .segments
                        .get_mut(&loc.seg)
                        .expect("live entries have segments");
                    seg.live -= 1;
                    seg.live_bytes -= u64::from(loc.len);
                    freed += u64::from(loc.len);
                    by_seg.entry(loc.seg).or_default().push(id);
                }
            }
            for (seq, ids) in by_seg {
                let seg = state.segments.get_mut(&seq).expect("listed above");
                frame::push_frame(&mut seg.acks, &frame::done(&ids));
            }
            for &(id, bits) in partial {
                let Some(loc) = state.entries.get(&id).copied() else {
                    continue;
                };
                state.progress.insert(id, bits.to_vec());
                let seg = state
                    .segments
                    .get_mut(&loc.seg)
                    .expect("live entries have segments");
                frame::push_frame(&mut seg.acks, &frame::progress(id, bits));
            }
            // Into the page cache now, as the records were: a crash of the
            // process then sends again only what was in flight. The commit
            // makes them durable.
            disk.write_acks(&self.inner.name, &mut state, false);
        }
        if freed > 0 {
            space.used_bytes.fetch_sub(freed, Ordering::AcqRel);
            space.freed_at_ms.store(now_ms(), Ordering::Relaxed);
            space.freed.notify_waiters();
        }
        Ok(())
    }

    /// How long this stream's oldest record has waited.
    pub fn oldest_record_age(&self) -> Result<Option<Duration>, SpoolError> {
        let Some(disk) = &self.inner.disk else {
            return Ok(None);
        };
        let state = disk.lock();
        // Ids follow the order of writes but for entries written concurrently
        // (a few milliseconds apart): the first few hold the oldest.
        let oldest = state.entries.values().take(64).map(|l| l.at_ms).min();
        Ok(oldest.map(|ms| Duration::from_millis(now_ms().saturating_sub(ms))))
    }

    /// Writes a checkpoint alone (a position that moved without records, such as
    /// past refused lines).
    pub fn set_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), SpoolError> {
        self.write_checkpoint(checkpoint.name.clone(), Some(checkpoint.value.clone()))
    }

    /// Removes a checkpoint (its source is gone).
    pub fn remove_checkpoint(&self, name: &[u8]) -> Result<(), SpoolError> {
        self.write_checkpoint(name.to_vec(), None)
    }

    fn write_checkpoint(&self, name: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), SpoolError> {
        let Some(disk) = &self.inner.disk else {
            return Ok(());
        };
        let c = CheckpointRecord {
            seq: self.inner.checkpoint_seq.fetch_add(1, Ordering::Relaxed),
            name,
            value,
        };
        let buf = frame::frame(&frame::checkpoint(&c));
        let len = buf.len() as u64;
        // Checkpoints are small and must go through on a full spool: a file
        // source records positions past refused lines. Only the disk can refuse.
        let mut state = disk.lock();
        let (seq, _) = disk.append(&self.inner.name, &mut state, &buf)?;
        self.inner
            .space
            .disk_bytes
            .fetch_add(len, Ordering::Relaxed);
        self.inner.space.unsynced.fetch_add(len, Ordering::Release);
        state
            .segments
            .get_mut(&seq)
            .expect("just written")
            .names
            .insert(c.name.clone(), c.seq);
        let open = state.open.as_mut().expect("just written");
        open.checkpoints.insert(c.name.clone(), c.clone());
        state.checkpoints.insert(c.name.clone(), c);
        drop(state);
        self.inner.space.writes.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Every checkpoint of this stream.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, SpoolError> {
        let Some(disk) = &self.inner.disk else {
            return Ok(Vec::new());
        };
        let state = disk.lock();
        Ok(state
            .checkpoints
            .values()
            .filter_map(|c| {
                c.value.as_ref().map(|v| Checkpoint {
                    name: c.name.clone(),
                    value: v.clone(),
                })
            })
            .collect())
    }

    /// Number of live entries held.
    pub fn entry_count(&self) -> usize {
        self.inner
            .disk
            .as_ref()
            .map_or(0, |d| d.lock().entries.len())
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

fn seg_len(state: &State, seq: u64) -> u64 {
    state.segments.get(&seq).map_or(0, |s| s.len)
}

/// What one group commit does for one stream, in three steps so that no lock is
/// held across an fsync: [`Disk::collect`], then [`Commit::sync`] (no lock),
/// then [`Disk::finish`].
pub(super) struct Commit {
    files: Vec<Arc<dyn StoredFile>>,
    dir_dirty: bool,
    /// Segments to remove after the sync, and whether the checkpoint table must
    /// be carried forward first (then the table as of this commit).
    remove: Vec<u64>,
    /// Segments removed unsynced: written since the last sync, but every entry
    /// in them was delivered before this commit. Synced in `finish` after all
    /// if one has to stay.
    unsynced: Vec<(u64, Arc<dyn StoredFile>)>,
    table: Option<Vec<CheckpointRecord>>,
    catalog: Vec<CatalogEvent>,
}

impl Disk {
    /// Takes what the commit must write and sync. Also seals an open segment
    /// idle with nothing live, and copies forward the live entries of a pinned
    /// sealed segment.
    pub(super) fn collect(&self, stream: &str, space: &Space, copy_forward: bool) -> Commit {
        let mut state = self.lock();
        if copy_forward {
            self.copy_forward(stream, &mut state, space);
        }
        let idle = state.open.as_ref().is_some_and(|o| {
            o.last_append.elapsed() >= ROLL_IDLE && state.segments[&o.seq].live == 0
        });
        if idle {
            let added = self.seal(&mut state);
            space.disk_bytes.fetch_add(added, Ordering::Relaxed);
        }
        // An open segment mostly delivered since it was last synced is sealed
        // and its few live entries copied forward: what was delivered before it
        // was synced is then never synced (nor written at all, when the segment
        // goes before the kernel writes it back).
        let roll = state.open.as_ref().is_some_and(|o| {
            let seg = &state.segments[&o.seq];
            seg.dirty
                && seg.len >= self.segment_bytes / ROLL_DELIVERED_FRACTION
                && seg.live_bytes * COPY_FORWARD_RATIO < seg.len
        });
        if roll {
            let seq = state.open.as_ref().expect("checked").seq;
            let added = self.seal(&mut state);
            space.disk_bytes.fetch_add(added, Ordering::Relaxed);
            self.move_live(stream, &mut state, space, seq);
        }
        let mut c = Commit {
            files: Vec::new(),
            dir_dirty: std::mem::take(&mut state.dir_dirty),
            remove: Vec::new(),
            unsynced: Vec::new(),
            table: None,
            catalog: std::mem::take(&mut state.catalog),
        };
        self.write_acks(stream, &mut state, true);
        c.dir_dirty |= std::mem::take(&mut state.dir_dirty);
        for (&seq, seg) in state.segments.iter_mut() {
            let goes = seg.sealed && seg.live == 0;
            if seg.dirty {
                seg.dirty = false;
                if goes {
                    c.unsynced.push((seq, seg.file.clone()));
                } else {
                    c.files.push(seg.file.clone());
                }
            }
            if seg.ack_dirty {
                seg.ack_dirty = false;
                c.files.extend(seg.ack_file.clone());
            }
            if goes {
                c.remove.push(seq);
            }
        }
        if carry_needed(&state, &c.remove) {
            // A removal is kept while a segment that stays may hold an older value
            // of that checkpoint (else the older value would come back); the
            // others are dropped with the segments that recorded them.
            let staying: BTreeSet<&Vec<u8>> = state
                .segments
                .iter()
                .filter(|(q, _)| !c.remove.contains(q))
                .flat_map(|(_, s)| s.names.keys())
                .collect();
            c.table = Some(
                state
                    .checkpoints
                    .values()
                    .filter(|r| r.value.is_some() || staying.contains(&r.name))
                    .cloned()
                    .collect(),
            );
        }
        c
    }

    /// Fsyncs what the commit covers (no lock held).
    pub(super) fn sync(&self, c: &Commit) -> Result<(), SpoolError> {
        for f in &c.files {
            f.sync_data().map_err(|e| io_err(&self.dir, e))?;
        }
        if c.dir_dirty {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| io_err(&self.dir, e))?;
        }
        Ok(())
    }

    /// Writes the ack frames waiting in each segment to its ack file (created
    /// on first use). A write that fails keeps them for the commit's turn, where
    /// `drop_failed` gives them up: after a crash those records are sent again,
    /// nothing is lost, and a full disk does not stop the commit.
    fn write_acks(&self, stream: &str, state: &mut State, drop_failed: bool) {
        let mut created = false;
        for (&seq, seg) in state.segments.iter_mut() {
            if seg.acks.is_empty() || (seg.sealed && seg.live == 0) {
                // A segment about to go needs no acks.
                if seg.sealed && seg.live == 0 {
                    seg.acks.clear();
                }
                continue;
            }
            let path = self.dir.join(ack_name(seq));
            if seg.ack_file.is_none() {
                let head = frame::frame(&frame::header(frame::ROLE_ACKS, stream, seq));
                let opened = self.storage.open(&path, true).and_then(|f| {
                    f.write_at(0, &head)?;
                    Ok(f)
                });
                match opened {
                    Ok(f) => {
                        seg.ack_file = Some(f);
                        seg.ack_len = head.len() as u64;
                        created = true;
                    }
                    Err(e) => {
                        let _ = self.storage.remove_file(&path);
                        if drop_failed {
                            seg.acks.clear();
                            self.warn_acks(stream, &path, &e);
                        }
                        continue;
                    }
                }
            }
            let file = seg.ack_file.as_ref().expect("opened above");
            match file.write_at(seg.ack_len, &seg.acks) {
                Ok(()) => {
                    seg.ack_len += seg.acks.len() as u64;
                    seg.acks.clear();
                    seg.ack_dirty = true;
                }
                Err(e) => {
                    let _ = file.set_len(seg.ack_len);
                    if drop_failed {
                        seg.acks.clear();
                        self.warn_acks(stream, &path, &e);
                    }
                }
            }
        }
        state.dir_dirty |= created;
    }

    /// After the sync: carries the checkpoint table forward if a removal needs
    /// it, removes the segments with nothing live. Returns the bytes freed on
    /// disk.
    pub(super) fn finish(
        &self,
        stream: &str,
        c: Commit,
    ) -> Result<(u64, Vec<CatalogEvent>), SpoolError> {
        let mut catalog = c.catalog;
        if c.remove.is_empty() {
            return Ok((0, catalog));
        }
        let unsynced = c.unsynced;
        let mut remove = c.remove;
        if let Some(table) = &c.table {
            match self.write_table(stream, table) {
                Ok(()) => {
                    self.lock().table_has = table.iter().map(|r| (r.name.clone(), r.seq)).collect();
                }
                Err(e) if e.is_full() => {
                    // No room for the checkpoint file (a disk filled by others):
                    // the segments whose checkpoints nothing else keeps stay; the
                    // others go, which frees room for it.
                    let state = self.lock();
                    remove.retain(|q| !carry_needed(&state, &[*q]));
                }
                Err(e) => return Err(e),
            }
        }
        let mut freed = 0u64;
        let mut removed = Vec::new();
        {
            let mut state = self.lock();
            for seq in remove {
                // Still nothing live (a copy-forward cannot add entries to a
                // sealed segment, so this holds; checked anyway).
                if state
                    .segments
                    .get(&seq)
                    .is_some_and(|s| s.live == 0 && s.sealed)
                {
                    let seg = state.segments.remove(&seq).expect("checked");
                    freed += seg.len;
                    removed.push(seq);
                }
            }
        }
        for &seq in &removed {
            let _ = self.storage.remove_file(&self.dir.join(ack_name(seq)));
            match self.storage.remove_file(&self.dir.join(seg_name(seq))) {
                Ok(()) => catalog.push(CatalogEvent::Removed(seq)),
                Err(e) => {
                    tracing::warn!(stream, error = %e, "Removing a delivered spool segment failed")
                }
            }
        }
        // One left unsynced that stays after all (no room for the checkpoint
        // table) is synced now, before the commit is published: its checkpoints
        // count.
        for (seq, file) in &unsynced {
            if !removed.contains(seq) {
                file.sync_data().map_err(|e| io_err(&self.dir, e))?;
            }
        }
        if !removed.is_empty() {
            let _ = self.storage.sync_dir(&self.dir);
        }
        Ok((freed, catalog))
    }

    /// Warns that acks could not be written, once a minute at most.
    fn warn_acks(&self, stream: &str, path: &Path, e: &std::io::Error) {
        let now = now_ms();
        let last = self.acks_warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .acks_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(stream, path = %path.display(), error = %e,
                "Writing spool acks failed (full disk?); after a crash those records are sent again");
        }
    }

    /// Writes the checkpoint table (temp file, fdatasync, rename, directory fsync).
    fn write_table(&self, stream: &str, table: &[CheckpointRecord]) -> Result<(), SpoolError> {
        let tmp = self.dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let path = self.dir.join(CHECKPOINT_FILE);
        let _ = self.storage.remove_file(&tmp);
        let f = self.storage.open(&tmp, true).map_err(|e| io_err(&tmp, e))?;
        let mut b = frame::frame(&frame::header(frame::ROLE_CHECKPOINTS, stream, 0));
        frame::push_frame(&mut b, &frame::table(table));
        f.write_at(0, &b).map_err(|e| io_err(&tmp, e))?;
        f.sync_data().map_err(|e| io_err(&tmp, e))?;
        self.storage
            .rename(&tmp, &path)
            .map_err(|e| io_err(&path, e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| io_err(&self.dir, e))
    }

    /// Copies the live entries of sealed segments that they pin (less than a
    /// quarter of the segment live) to the open segment, so a slow shard holds
    /// its own records, not the segments around them. Only the older half of
    /// the sealed segments is considered: the newest are still draining.
    fn copy_forward(&self, stream: &str, state: &mut State, space: &Space) {
        let sealed: Vec<u64> = state
            .segments
            .iter()
            .filter(|(_, s)| s.sealed && s.live > 0)
            .map(|(&q, _)| q)
            .collect();
        let older = &sealed[..sealed.len() / 2];
        for &seq in older {
            let seg = &state.segments[&seq];
            if seg.live_bytes * COPY_FORWARD_RATIO >= seg.len {
                continue;
            }
            if !self.move_live(stream, state, space, seq) {
                return;
            }
        }
    }

    /// Copies the live entries of sealed segment `seq` to the open segment (one
    /// is opened if needed). False if the open segment cannot be written (a full
    /// disk): what is not copied stays where it is.
    fn move_live(&self, stream: &str, state: &mut State, space: &Space, seq: u64) -> bool {
        let seg = &state.segments[&seq];
        let file = seg.file.clone();
        let ids: Vec<(u64, Loc)> = state
            .entries
            .iter()
            .filter(|(_, l)| l.seg == seq)
            .map(|(&id, l)| (id, *l))
            .collect();
        for (id, loc) in ids {
            let mut buf = vec![0u8; loc.len as usize];
            if file.read_at(loc.offset, &mut buf).is_err() || frame::check(&buf).is_none() {
                // Left where it is: the reader reports it.
                continue;
            }
            let Ok((new_seq, offset)) = self.append(stream, state, &buf) else {
                return false;
            };
            space
                .disk_bytes
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            space
                .unsynced
                .fetch_add(buf.len() as u64, Ordering::Release);
            let new = Loc {
                seg: new_seq,
                offset,
                ..loc
            };
            state.entries.insert(id, new);
            let old = state.segments.get_mut(&seq).expect("listed");
            old.live -= 1;
            old.live_bytes -= u64::from(loc.len);
            let progress = state.progress.get(&id).cloned();
            // The copy carries its entry's (old) checkpoint: the new segment
            // holds a value of it, and its footer says so.
            let copied = frame::check(&buf)
                .and_then(frame::entry_head)
                .and_then(|(head, _)| head.checkpoint);
            let to = state.segments.get_mut(&new_seq).expect("just written");
            to.live += 1;
            to.live_bytes += u64::from(loc.len);
            if let Some(c) = &copied {
                let seq = to.names.entry(c.name.clone()).or_insert(c.seq);
                *seq = (*seq).max(c.seq);
            }
            if let Some(bits) = progress {
                frame::push_frame(&mut to.acks, &frame::progress(id, &bits));
            }
            if let Some(open) = state.open.as_mut() {
                open.placed.push(Placed {
                    id,
                    offset,
                    len: loc.len,
                    count: loc.count,
                    at_ms: loc.at_ms,
                });
                if let Some(c) = copied {
                    keep_later(&mut open.checkpoints, c);
                }
            }
            if seg_len(state, new_seq) >= self.segment_bytes {
                let added = self.seal(state);
                space.disk_bytes.fetch_add(added, Ordering::Relaxed);
            }
        }
        true
    }

    /// After a failed commit: every file is synced again by the next one (the
    /// failed one may have left some unsynced).
    pub(super) fn mark_dirty(&self) {
        let mut state = self.lock();
        for seg in state.segments.values_mut() {
            seg.dirty = true;
            seg.ack_dirty |= seg.ack_file.is_some();
        }
        state.dir_dirty = true;
    }

    /// Seals the open segment (a clean stop), so the next open reads footers only.
    pub(super) fn seal_open(&self, space: &Space) {
        let mut state = self.lock();
        let added = self.seal(&mut state);
        space.disk_bytes.fetch_add(added, Ordering::Relaxed);
    }

    /// The sequence numbers of the segments held.
    pub(super) fn segment_seqs(&self) -> BTreeSet<u64> {
        self.lock().segments.keys().copied().collect()
    }

    /// Bytes of this stream's files on disk (segments and acks).
    pub(super) fn size_on_disk(&self) -> u64 {
        let state = self.lock();
        state.segments.values().map(|s| s.len + s.ack_len).sum()
    }
}
