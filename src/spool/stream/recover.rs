//! Opening a stream's directory: segment footers, a scan of the segment that
//! was open at a crash, the acks and the carried checkpoint table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// What a recovery reads before the stream is built.
struct Loading<'a> {
    name: &'a str,
    dir: &'a Path,
    storage: &'a dyn Storage,
    damaged_dir: &'a Path,
    state: State,
    found: Recovered,
    max_id: u64,
    max_ckpt: u64,
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
        let mut l = Loading {
            name,
            dir: &dir,
            storage: &*storage,
            damaged_dir,
            state: State {
                open: None,
                segments: BTreeMap::new(),
                entries: BTreeMap::new(),
                progress: HashMap::new(),
                checkpoints: BTreeMap::new(),
                next_seq: segs.last().map_or(1, |s| s + 1),
                catalog: Vec::new(),
                dir_dirty: false,
                table_has: BTreeMap::new(),
            },
            found: Recovered::default(),
            max_id: 0,
            max_ckpt: 0,
        };
        if let Some(catalog) = catalog {
            l.report_missing(catalog, &segs, &acks);
        }
        l.load_table()?;
        for &seq in &segs {
            l.load_segment(seq)?;
        }
        // Acks, in any order: they name entries by id.
        for &seq in &acks {
            l.apply_acks(seq)?;
        }
        let Loading {
            state,
            found,
            max_id,
            max_ckpt,
            ..
        } = l;
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

impl Loading<'_> {
    /// Reports the catalogued segments that are gone (but for what a crash
    /// during a removal, or before the first sync, leaves).
    fn report_missing(
        &mut self,
        catalog: &BTreeSet<u64>,
        segs: &BTreeSet<u64>,
        acks: &BTreeSet<u64>,
    ) {
        for seq in catalog.difference(segs) {
            if acks.contains(seq) || *seq >= segs.last().copied().unwrap_or(0) {
                // An ack file without its segment is what a crash during a
                // removal leaves; the newest segment may have been lost with
                // nothing durable in it.
                continue;
            }
            self.found.damaged_frames += 1;
            tracing::error!(stream = self.name, segment = %self.dir.join(seg_name(*seq)).display(),
                "A spool segment file is missing: the records it held are lost");
        }
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
                    self.found.damaged_frames += 1;
                    tracing::error!(stream = self.name, path = %table_path.display(),
                        "The spool's checkpoint table is damaged; files whose last batch was delivered start again from their newest readable checkpoint");
                    move_aside(self.storage, &table_path, self.damaged_dir);
                }
            }
        }
        Ok(())
    }

    /// Loads one segment: its footer, or a scan when it has none.
    fn load_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(seg_name(seq));
        let file = self
            .storage
            .open(&path, false)
            .map_err(|e| io_err(&path, e))?;
        let len = file.len().map_err(|e| io_err(&path, e))?;
        let (placed, checkpoints) = match read_sealed(&*file, len) {
            Some(Ok(found)) => found,
            Some(Err(version)) => return Err(SpoolError::Version { path, version }),
            None => match scan(self.name, &path, &*file, len, &mut self.found)? {
                Some(found) => found,
                None => {
                    self.found.damaged_frames += 1;
                    tracing::error!(stream = self.name, segment = %path.display(),
                        "A spool segment has no readable header; it is moved aside and its records are lost");
                    drop(file);
                    move_aside(self.storage, &path, self.damaged_dir);
                    return Ok(());
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
        Ok(())
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
        s.ack_file = self.storage.open(&path, false).ok();
        if s.ack_len == 0 {
            s.ack_file = None;
        }
        Ok(())
    }
}

fn read_whole(storage: &dyn Storage, path: &Path) -> std::io::Result<Vec<u8>> {
    let f = storage.open(path, false)?;
    let mut b = vec![0u8; f.len()? as usize];
    f.read_at(0, &mut b)?;
    Ok(b)
}

/// Moves a damaged file into the spool's `damaged/` directory.
pub(in crate::spool) fn move_aside(storage: &dyn Storage, path: &Path, damaged_dir: &Path) {
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

type Found = (Vec<Placed>, Vec<CheckpointRecord>);

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
