//! Opening a stream's directory: segment footers, a scan of the segment that
//! was open at a crash, the acks and the carried checkpoint table, checked
//! against the manifest: a segment missing, shorter than what was synced, or
//! damaged before its synced end is damage (reported with the records lost,
//! written to the damage report), never taken for a crash's torn tail.

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
    /// What the manifest says (`None`: no manifest, the facts are unknown).
    facts: Option<BTreeMap<u64, Fact>>,
    /// Damage before a segment's synced end; the records lost are counted once
    /// the acks are applied.
    suspects: Vec<Suspect>,
    /// Damage for the report.
    events: Vec<DamageEvent>,
    /// Segments the manifest lists and the directory lacks: forgotten once reported.
    missing: Vec<u64>,
    /// Damaged segments whose facts are recorded anew once reported (synced as
    /// they are now), so the next start does not report them again.
    restated: Vec<u64>,
}

/// Damage found in a segment the manifest knows.
struct Suspect {
    seq: u64,
    offset: u64,
    bytes: u64,
    what: &'static str,
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
        let (mut manifest, facts) = manifest::Manifest::load(&*storage, &dir, name)?;
        let known_last = facts.as_ref().and_then(|f| f.keys().next_back().copied());
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
                // Past a newest segment that is missing too: a number is never
                // used twice.
                next_seq: segs.last().copied().max(known_last).map_or(1, |s| s + 1),
                catalog: Vec::new(),
                dir_dirty: false,
                table_has: BTreeMap::new(),
                files: Default::default(),
            },
            found: Recovered::default(),
            max_id: 0,
            max_ckpt: 0,
            facts,
            suspects: Vec::new(),
            events: Vec::new(),
            missing: Vec::new(),
            restated: Vec::new(),
        };
        if l.facts.is_some() {
            l.report_missing_known(&segs);
        } else if let Some(catalog) = catalog {
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
        let mut records = 0u64;
        for (id, loc) in &l.state.entries {
            let unsent = u64::from(loc.count).saturating_sub(done_bits(l.state.progress.get(id)));
            records += unsent;
            if let Some(s) = l.state.segments.get_mut(&loc.seg) {
                s.unsent += unsent;
            }
        }
        l.count_losses();
        // The report is durable before the manifest forgets the missing
        // segments: a crash in between reports them again, never not at all.
        if report_damage(&*storage, damaged_dir, &l.events) {
            let mut records: Vec<(u64, Option<Fact>)> =
                l.missing.iter().map(|&q| (q, None)).collect();
            for &seq in &l.restated {
                let Some(seg) = l.state.segments.get(&seq) else {
                    continue;
                };
                let path = dir.join(seg_name(seq));
                let synced = storage.open(&path, false).and_then(|f| f.sync_data());
                if synced.is_ok() {
                    records.push((seq, Some(seg.fact())));
                }
            }
            if let Err(e) = manifest.record(&*storage, &records) {
                tracing::warn!(stream = name, error = %e,
                    "Updating the spool's manifest failed; the missing segments are reported again at the next start");
            }
        }
        let Loading {
            mut state,
            found,
            max_id,
            max_ckpt,
            ..
        } = l;
        for (seq, seg) in state.segments.iter_mut() {
            seg.fact = manifest.facts().get(seq).copied();
            // Synced (again) by the first commit, which records what the
            // manifest does not know yet: written before a crash, or by a
            // shardline without a manifest.
            if seg.fact.is_none_or(|f| f.data_len < seg.data_len) {
                seg.dirty = true;
                state.dir_dirty |= seg.fact.is_none();
            }
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
                manifest: Mutex::new(manifest),
                damaged_dir: damaged_dir.to_owned(),
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
            let path = self.dir.join(seg_name(*seq));
            tracing::error!(stream = self.name, segment = %path.display(),
                "A spool segment file is missing: the records it held are lost");
            self.events.push(DamageEvent {
                stream: self.name.to_owned(),
                path,
                records: None,
                what: "a segment file is missing",
            });
        }
    }

    /// Reports the segments the manifest lists that are gone, whatever their
    /// number and whether or not their ack file stayed: a removal is recorded
    /// before its unlink, so each of these was lost.
    fn report_missing_known(&mut self, segs: &BTreeSet<u64>) {
        let facts = self.facts.as_ref().expect("known");
        for (&seq, fact) in facts.iter().filter(|(q, _)| !segs.contains(q)) {
            self.missing.push(seq);
            let path = self.dir.join(seg_name(seq));
            if fact.unsent == 0 {
                tracing::warn!(stream = self.name, segment = %path.display(),
                    "A spool segment file is missing; it held no undelivered records");
                continue;
            }
            self.found.damaged_frames += 1;
            self.found.lost_records += fact.unsent;
            tracing::error!(stream = self.name, segment = %path.display(), records = fact.unsent,
                "A spool segment file is missing: the records it held are lost");
            self.events.push(DamageEvent {
                stream: self.name.to_owned(),
                path,
                records: Some(fact.unsent),
                what: "a segment file is missing",
            });
        }
    }

    /// Counts what the damage found before synced ends took: the records the
    /// manifest says the segment's frames held, less those read, at most those
    /// not delivered then.
    fn count_losses(&mut self) {
        let mut by_seg: BTreeMap<u64, Vec<&Suspect>> = BTreeMap::new();
        for s in &self.suspects {
            by_seg.entry(s.seq).or_default().push(s);
        }
        for (seq, list) in by_seg {
            let Some(fact) = self.facts.as_ref().and_then(|f| f.get(&seq)) else {
                continue;
            };
            let read = self.state.segments.get(&seq).map_or(0, |s| s.records);
            let lost = fact.records.saturating_sub(read).min(fact.unsent);
            let path = self.dir.join(seg_name(seq));
            let first = list[0];
            let bytes: u64 = list.iter().map(|s| s.bytes).sum();
            self.found.damaged_frames += list.len() as u64;
            self.found.lost_records += lost;
            self.restated.push(seq);
            tracing::error!(stream = self.name, segment = %path.display(), offset = first.offset,
                bytes, records = lost, damage = first.what,
                "Part of a spool segment that was synced is damaged or missing: the records it held are lost");
            self.events.push(DamageEvent {
                stream: self.name.to_owned(),
                path,
                records: Some(lost),
                what: first.what,
            });
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
                Some(scanned) => self.check_scan(seq, &path, fact, len, scanned),
                None => {
                    // Nothing readable: what it held is lost (as far as known).
                    let records = fact.map(|f| f.unsent);
                    self.found.damaged_frames += 1;
                    self.found.lost_records += records.unwrap_or(0);
                    tracing::error!(stream = self.name, segment = %path.display(), records,
                        "A spool segment has no readable frame; it is moved aside and its records are lost");
                    self.events.push(DamageEvent {
                        stream: self.name.to_owned(),
                        path: path.clone(),
                        records,
                        what: "a segment had no readable frame",
                    });
                    drop(file);
                    move_aside(self.storage, &path, self.damaged_dir);
                    if fact.is_some() {
                        self.missing.push(seq);
                    }
                    return Ok(());
                }
            },
        };
        if !read.header_ok {
            // Its entries are all there (found by their own frames); only the
            // segment's header is rewritten.
            self.found.damaged_frames += 1;
            tracing::warn!(stream = self.name, segment = %path.display(),
                "The header of a spool segment is damaged; its entries were read all the same and the header is rewritten");
            self.events.push(DamageEvent {
                stream: self.name.to_owned(),
                path: path.clone(),
                records: Some(0),
                what: "a segment header was damaged (its entries were kept)",
            });
            let head = frame::frame(&frame::header(frame::ROLE_SEGMENT, self.name, seq));
            let _ = file.write_at(0, &head);
            self.restated.push(seq);
        }
        let (placed, checkpoints) = read.found;
        let len = file.len().map_err(|e| io_err(&path, e))?;
        drop(file);
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
        Ok(())
    }

    /// Tells a scanned segment's damage from a crash's torn tail by the
    /// manifest's synced end: damage before it is lost records (counted once
    /// the acks are applied), bytes after it were never reported durable.
    fn check_scan(
        &mut self,
        seq: u64,
        path: &Path,
        fact: Option<Fact>,
        len: u64,
        scanned: Scanned,
    ) -> Read {
        let synced = fact.map(|f| f.data_len);
        let header_len =
            frame::frame(&frame::header(frame::ROLE_SEGMENT, self.name, seq)).len() as u64;
        for &(from, to) in &scanned.damaged {
            if from == 0 && !scanned.header_ok && to == header_len {
                // The header alone: reported by the caller.
                continue;
            }
            match synced {
                Some(end) if from >= end => {
                    tracing::warn!(stream = self.name, segment = %path.display(), offset = from, bytes = to - from,
                        "Skipped a torn frame written after the spool's last commit (never acknowledged as durable)");
                }
                Some(_) => self.suspects.push(Suspect {
                    seq,
                    offset: from,
                    bytes: to - from,
                    what: "a damaged frame was skipped",
                }),
                None => {
                    self.found.damaged_frames += 1;
                    tracing::error!(stream = self.name, segment = %path.display(), offset = from, bytes = to - from,
                        "A damaged frame in the spool was skipped: the records it held are lost");
                    self.events.push(DamageEvent {
                        stream: self.name.to_owned(),
                        path: path.to_owned(),
                        records: None,
                        what: "a damaged frame was skipped",
                    });
                }
            }
        }
        match synced {
            Some(end) if scanned.end < end => self.suspects.push(Suspect {
                seq,
                offset: scanned.end,
                bytes: end - scanned.end,
                what: "a segment ends before what was synced",
            }),
            Some(_) if scanned.end < len => {
                tracing::warn!(stream = self.name, segment = %path.display(), offset = scanned.end, bytes = len - scanned.end,
                    "Cut the torn end of a spool segment, written after the last commit (never acknowledged as durable)");
            }
            None if scanned.end < len => {
                tracing::warn!(stream = self.name, segment = %path.display(), offset = scanned.end, bytes = len - scanned.end,
                    "Cut the torn end of a spool segment open at a crash (no record says how far it was synced)");
            }
            _ => {}
        }
        Read {
            found: scanned.found,
            data_len: scanned.end,
            header_ok: scanned.header_ok,
        }
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

/// A segment read: its entries and checkpoints, where its frames end, and
/// whether its header was readable.
struct Read {
    found: Found,
    data_len: u64,
    header_ok: bool,
}

/// Reads a sealed segment's footer: `None` when it has none (or a bad one),
/// `Some(Err(version))` for a format this binary does not know. A damaged
/// header does not hide a good footer: the footer's own CRC vouches for it.
fn read_sealed(file: &dyn StoredFile, len: u64) -> Option<Result<Read, u8>> {
    let mut head = vec![0u8; len.min(4096) as usize];
    file.read_at(0, &mut head).ok()?;
    let first = frame::walk(&head, 0)
        .frames
        .first()
        .filter(|(at, _)| *at == 0)
        .and_then(|(_, b)| frame::parse_header(b));
    let header_ok = match first {
        Some((v, ..)) if v != frame::VERSION => return Some(Err(v)),
        Some((_, role, ..)) if role != frame::ROLE_SEGMENT => return None,
        Some(_) => true,
        None => false,
    };
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
    frame::parse_footer(body).map(|found| {
        Ok(Read {
            found,
            data_len: at,
            header_ok,
        })
    })
}

/// What a scan found.
struct Scanned {
    found: Found,
    /// Where the good frames end.
    end: u64,
    /// Byte ranges with no good frame, followed by a good frame.
    damaged: Vec<(u64, u64)>,
    header_ok: bool,
}

/// Scans a segment without a footer (the one open at a crash, or one whose end
/// is damaged): every good frame is taken, the end after the last one is cut
/// and a footer written. `None` when it holds no readable frame at all.
fn scan(path: &Path, file: &dyn StoredFile, len: u64) -> Result<Option<Scanned>, SpoolError> {
    let mut b = vec![0u8; len as usize];
    file.read_at(0, &mut b).map_err(|e| io_err(path, e))?;
    let w = frame::walk(&b, 0);
    let header_ok = match w.frames.first() {
        Some(&(0, body)) => match frame::parse_header(body) {
            Some((v, ..)) if v != frame::VERSION => {
                return Err(SpoolError::Version {
                    path: path.to_owned(),
                    version: v,
                })
            }
            Some((_, role, ..)) => role == frame::ROLE_SEGMENT,
            None => false,
        },
        _ => false,
    };
    let body_frames: Vec<(u64, &[u8])> = w
        .frames
        .iter()
        .copied()
        .filter(|(_, body)| {
            matches!(
                body.first(),
                Some(&frame::ENTRY) | Some(&frame::CHECKPOINT) | Some(&frame::FOOTER)
            )
        })
        .collect();
    if !header_ok
        && (body_frames.is_empty()
            || w.frames
                .first()
                .is_some_and(|(_, b)| b.first() == Some(&frame::HEADER)))
    {
        // Not a segment at all (another file's header), or nothing in it.
        return Ok(None);
    }
    let (mut placed, mut checkpoints) = (Vec::new(), BTreeMap::new());
    for &(offset, body) in &body_frames {
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
    let damaged = if header_ok {
        w.damaged
    } else {
        // A damaged first frame: from 0 to the first good one.
        let first = w.frames.first().map_or(w.end, |(at, _)| *at);
        let mut d = w.damaged;
        if first > 0 && d.first().is_none_or(|(from, _)| *from != 0) {
            d.insert(0, (0, first));
        }
        d
    };
    Ok(Some(Scanned {
        found: (placed, checkpoints),
        end: w.end,
        damaged,
        header_ok,
    }))
}
