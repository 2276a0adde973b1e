//! Opening a stream's directory: segment footers, a scan of the segment that
//! was open at a crash, the acks and the carried checkpoint table, checked
//! against the manifest: a segment missing, shorter than what was synced, or
//! damaged before its synced end is damage (reported with the records lost,
//! written to the damage report), never taken for a crash's torn tail.
//!
//! [`StreamInner::recover`] is the only way in, called by the spool's open
//! (`spool/open.rs`) once per stream directory. It reads in steps, each a
//! method of [`Loading`], which owns what is read until the stream is built:
//! the manifest and the directory listing, the checkpoint table, each segment
//! (`segment.rs` reads one file, footer or scan), the acks; then the damage
//! ([`Findings`], `findings.rs`) is reported and the manifest brought up to
//! date.

mod findings;
mod segment;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use self::findings::Findings;
pub(in crate::spool) use self::segment::collect_frames;
use self::segment::{read_sealed, read_whole, scan, Read};
use super::manifest::Manifest;
use super::{
    ack_name, done_bits, io_err, keep_later, parse_seq, seg_name, Disk, Loc, Recovered, Segment,
    State, StreamInner, CHECKPOINT_FILE,
};
use crate::spool::frame::{self, Fact};
use crate::spool::storage::{create_dir_durable, Storage};
use crate::spool::{now_ms, Space, SpoolError};

/// What a recovery reads before the stream is built: the stream's state as
/// the files say, and the damage found on the way. Owned by
/// [`StreamInner::recover`] for the length of one open.
struct Loading<'a> {
    name: &'a str,
    dir: &'a Path,
    storage: &'a dyn Storage,
    damaged_dir: &'a Path,
    state: State,
    max_id: u64,
    max_ckpt: u64,
    /// What the manifest says (`None`: no manifest, the facts are unknown).
    facts: Option<BTreeMap<u64, Fact>>,
    /// What is wrong, for the log, the counters and the damage report.
    findings: Findings<'a>,
}

impl StreamInner {
    /// Opens a stream's directory: reads segment footers (scanning the segments
    /// that have none), applies the acks, and loads the checkpoints.
    pub(in crate::spool) fn recover(
        name: &str,
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        segment_bytes: u64,
        space: Arc<Space>,
        catalog: Option<&BTreeSet<u64>>,
        damaged_dir: &Path,
    ) -> Result<(StreamInner, Recovered), SpoolError> {
        let (segs, acks) = list_dir(&*storage, &dir)?;
        let (mut manifest, facts) = Manifest::load(&*storage, &dir, name)?;
        let mut l = Loading::new(name, &dir, &*storage, damaged_dir, facts, &segs);
        match &l.facts {
            Some(facts) => l.findings.missing_known(facts, &segs),
            None => {
                if let Some(catalog) = catalog {
                    l.findings.missing_catalogued(catalog, &segs, &acks);
                }
            }
        }
        l.load_table()?;
        for &seq in &segs {
            l.load_segment(seq)?;
        }
        // Acks, in any order: they name entries by id.
        for &seq in &acks {
            l.apply_acks(seq)?;
        }
        let records = l.count_unsent();
        l.findings.count_losses(l.facts.as_ref(), &l.state.segments);
        l.findings
            .report(&*storage, damaged_dir, &mut manifest, &l.state.segments);
        let Loading {
            mut state,
            findings,
            max_id,
            max_ckpt,
            ..
        } = l;
        let found = findings.found;
        adopt_facts(&mut state, &manifest);
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
                manifest: Mutex::new(manifest),
                damaged_dir: damaged_dir.to_owned(),
            }),
            records: AtomicU64::new(records),
        };
        Ok((inner, found))
    }
}

/// Takes the manifest's facts into each segment's state. A segment it does
/// not know, or knows shorter, is synced (again) by the first commit, which
/// records what the manifest does not know yet: written before a crash, or by
/// a shardline without a manifest.
fn adopt_facts(state: &mut State, manifest: &Manifest) {
    for (seq, seg) in state.segments.iter_mut() {
        seg.fact = manifest.facts().get(seq).copied();
        if seg.fact.is_none_or(|f| f.data_len < seg.data_len) {
            seg.dirty = true;
            state.dir_dirty |= seg.fact.is_none();
        }
    }
}

/// The segment and ack files of a stream's directory (left-over temp files are
/// removed).
fn list_dir(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<(BTreeSet<u64>, BTreeSet<u64>), SpoolError> {
    let names = match storage.list(dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut segs = BTreeSet::new();
    let mut acks = BTreeSet::new();
    for n in &names {
        if let Some(s) = parse_seq(n, ".seg") {
            segs.insert(s);
        } else if let Some(s) = parse_seq(n, ".ack") {
            acks.insert(s);
        } else if n.ends_with(".tmp") {
            let _ = storage.remove_file(&dir.join(n));
        }
    }
    Ok((segs, acks))
}

impl<'a> Loading<'a> {
    /// Nothing read yet. Segment numbers go on past the newest segment on disk
    /// and past a newest one the manifest lists that is missing too: a number
    /// is never used twice.
    fn new(
        name: &'a str,
        dir: &'a Path,
        storage: &'a dyn Storage,
        damaged_dir: &'a Path,
        facts: Option<BTreeMap<u64, Fact>>,
        segs: &BTreeSet<u64>,
    ) -> Loading<'a> {
        let known_last = facts.as_ref().and_then(|f| f.keys().next_back().copied());
        Loading {
            name,
            dir,
            storage,
            damaged_dir,
            state: State {
                open: None,
                segments: BTreeMap::new(),
                entries: BTreeMap::new(),
                progress: HashMap::new(),
                checkpoints: BTreeMap::new(),
                next_seq: segs.last().copied().max(known_last).map_or(1, |s| s + 1),
                catalog: Vec::new(),
                dir_dirty: false,
                table_has: BTreeMap::new(),
                files: Default::default(),
            },
            max_id: 0,
            max_ckpt: 0,
            facts,
            findings: Findings::new(name, dir),
        }
    }

    /// Counts the records not delivered yet, in all and per segment.
    fn count_unsent(&mut self) -> u64 {
        let mut records = 0u64;
        for (id, loc) in &self.state.entries {
            let unsent =
                u64::from(loc.count).saturating_sub(done_bits(self.state.progress.get(id)));
            records += unsent;
            if let Some(s) = self.state.segments.get_mut(&loc.seg) {
                s.unsent += unsent;
            }
        }
        records
    }

    /// Loads the checkpoint table carried forward, if any.
    fn load_table(&mut self) -> Result<(), SpoolError> {
        let table_path = self.dir.join(CHECKPOINT_FILE);
        if self.storage.exists(&table_path) {
            match read_whole(self.storage, &table_path).map(|b| {
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
                        self.max_ckpt = self.max_ckpt.max(c.seq);
                        self.state.table_has.insert(c.name.clone(), c.seq);
                        keep_later(&mut self.state.checkpoints, c);
                    }
                }
                _ => {
                    self.findings.table_damaged(&table_path);
                    move_aside(self.storage, &table_path, self.damaged_dir);
                }
            }
        }
        Ok(())
    }

    /// Loads one segment: its footer, or a scan when it has none.
    fn load_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(seg_name(seq));
        let fact = self.facts.as_ref().and_then(|f| f.get(&seq)).copied();
        let file = self
            .storage
            .open(&path, false)
            .map_err(|e| io_err(&path, e))?;
        let len = file.len().map_err(|e| io_err(&path, e))?;
        let read = match read_sealed(&*file, len) {
            Some(Ok(read)) => read,
            Some(Err(version)) => return Err(SpoolError::Version { path, version }),
            None => match scan(&path, &*file, len)? {
                Some(scanned) => {
                    self.findings.scanned(seq, &path, fact, len, &scanned);
                    Read::from(scanned)
                }
                None => {
                    // Nothing readable: what it held is lost (as far as known).
                    self.findings.unreadable(seq, &path, fact);
                    drop(file);
                    move_aside(self.storage, &path, self.damaged_dir);
                    return Ok(());
                }
            },
        };
        if !read.header_ok {
            // Its entries are all there (found by their own frames); only the
            // segment's header is rewritten.
            self.findings.header_damaged(seq, &path);
            let head = frame::frame(&frame::header(frame::ROLE_SEGMENT, self.name, seq));
            let _ = file.write_at(0, &head);
        }
        let len = file.len().map_err(|e| io_err(&path, e))?;
        drop(file);
        self.place(seq, len, read);
        Ok(())
    }

    /// Takes a segment read into the state: the segment, its checkpoints and
    /// its entries.
    fn place(&mut self, seq: u64, len: u64, read: Read) {
        let (placed, checkpoints) = read.found;
        let mut seg = Segment {
            file: None,
            len,
            data_len: read.data_len,
            entries: placed.len() as u64,
            records: placed.iter().map(|p| u64::from(p.count)).sum(),
            unsent: 0,
            fact: None,
            live: 0,
            live_bytes: 0,
            sealed: true,
            dirty: !read.header_ok,
            names: checkpoints
                .iter()
                .map(|c| (c.name.clone(), c.seq))
                .collect(),
            acks: Vec::new(),
            ack_len: 0,
            ack_dirty: false,
        };
        for c in checkpoints {
            self.max_ckpt = self.max_ckpt.max(c.seq);
            keep_later(&mut self.state.checkpoints, c);
        }
        for p in placed {
            self.max_id = self.max_id.max(p.id);
            // An entry copied forward before a crash is in two segments: the
            // later copy is the one kept.
            if let Some(old) = self.state.entries.insert(
                p.id,
                Loc {
                    seg: seq,
                    offset: p.offset,
                    len: p.len,
                    count: p.count,
                    at_ms: p.at_ms,
                },
            ) {
                if let Some(s) = self.state.segments.get_mut(&old.seg) {
                    s.live -= 1;
                    s.live_bytes -= u64::from(old.len);
                }
            }
            seg.live += 1;
            seg.live_bytes += u64::from(p.len);
        }
        self.state.segments.insert(seq, seg);
    }

    /// Applies one ack file (DONE ids and progress bitmaps).
    fn apply_acks(&mut self, seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(ack_name(seq));
        if !self.state.segments.contains_key(&seq) {
            let _ = self.storage.remove_file(&path);
            return Ok(());
        }
        let bytes = read_whole(self.storage, &path).map_err(|e| io_err(&path, e))?;
        let w = frame::walk(&bytes, 0);
        if !w.damaged.is_empty() {
            tracing::warn!(stream = self.name, path = %path.display(),
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
                        if let Some(loc) = self.state.entries.remove(&id) {
                            self.state.progress.remove(&id);
                            if let Some(s) = self.state.segments.get_mut(&loc.seg) {
                                s.live -= 1;
                                s.live_bytes -= u64::from(loc.len);
                            }
                        }
                    }
                }
                Some(frame::Ack::Progress(id, bits)) if self.state.entries.contains_key(&id) => {
                    let p = self.state.progress.entry(id).or_default();
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
        let s = self.state.segments.get_mut(&seq).expect("checked above");
        if w.end < bytes.len() as u64 {
            if let Ok(f) = self.storage.open(&path, false) {
                let _ = f.set_len(w.end);
            }
        }
        s.ack_len = w.end;
        Ok(())
    }
}

/// Moves a damaged file into the spool's `damaged/` directory.
fn move_aside(storage: &dyn Storage, path: &Path, damaged_dir: &Path) {
    let name = format!(
        "{}-{}-{}",
        now_ms(),
        path.parent()
            .and_then(|p| p.file_name())
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let moved = create_dir_durable(storage, damaged_dir)
        .and_then(|()| storage.rename(path, &damaged_dir.join(name)));
    if let Err(e) = moved {
        tracing::error!(path = %path.display(), error = %e, "Moving a damaged spool file aside failed; it is removed");
        let _ = storage.remove_file(path);
    }
}
