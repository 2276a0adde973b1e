//! A stream's part of a group commit: acks written, files synced, delivered
//! segments removed, pinned entries copied forward.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{
    ack_name, carry_needed, done_bits, io_err, keep_later, seg_len, seg_name, Disk, Loc, State,
    CHECKPOINT_FILE, COPY_FORWARD_RATIO, MOVE_DELIVERED_RATIO, ROLL_DELIVERED_FRACTION, ROLL_IDLE,
};
use crate::spool::frame::{self, CheckpointRecord, Fact, Placed};
use crate::spool::index::CatalogEvent;
use crate::spool::storage::StoredFile;
use crate::spool::{now_ms, Space, SpoolError};

/// A file a commit syncs: its path, and its handle when one is open.
type ToSync = (PathBuf, Option<Arc<dyn StoredFile>>);

/// What one group commit does for one stream, in three steps so that no lock is
/// held across an fsync: [`Disk::collect`], then [`Commit::sync`] (no lock),
/// then [`Disk::finish`].
pub(in crate::spool) struct Commit {
    /// Files to fdatasync, with their handle when one is open (the others are
    /// opened one at a time: a commit holds no descriptor per file).
    files: Vec<ToSync>,
    dir_dirty: bool,
    /// Segments to remove after the sync, and whether the checkpoint table must
    /// be carried forward first (then the table as of this commit).
    remove: Vec<u64>,
    /// Segments removed unsynced: written since the last sync, but every entry
    /// in them was delivered before this commit. Synced in `finish` after all
    /// if one has to stay.
    unsynced: Vec<(u64, ToSync)>,
    table: Option<Vec<CheckpointRecord>>,
    catalog: Vec<CatalogEvent>,
    /// What the manifest records once the sync went through: the segments
    /// synced, and those whose count of undelivered records changed.
    facts: Vec<(u64, Fact)>,
}

impl Disk {
    /// Takes what the commit must write and sync. Also seals an open segment
    /// idle with nothing live, and copies forward the live entries of a pinned
    /// sealed segment.
    pub(in crate::spool) fn collect(
        &self,
        stream: &str,
        space: &Space,
        copy_forward: bool,
    ) -> Commit {
        let mut state = self.lock();
        if copy_forward {
            self.copy_forward(stream, &mut state, space);
        }
        self.roll(stream, &mut state, space);
        self.move_delivered(stream, &mut state, space);
        let mut c = Commit {
            files: Vec::new(),
            dir_dirty: std::mem::take(&mut state.dir_dirty),
            remove: Vec::new(),
            unsynced: Vec::new(),
            table: None,
            catalog: std::mem::take(&mut state.catalog),
            facts: Vec::new(),
        };
        self.write_acks(stream, &mut state, true);
        c.dir_dirty |= std::mem::take(&mut state.dir_dirty);
        let State {
            segments, files, ..
        } = &mut *state;
        for (&seq, seg) in segments.iter_mut() {
            let goes = seg.sealed && seg.live == 0;
            let path = self.dir.join(seg_name(seq));
            if seg.sealed {
                // A sealed segment's file joins the few kept open.
                if let Some(f) = seg.file.take() {
                    files.put(&path, f);
                }
            }
            if seg.dirty {
                seg.dirty = false;
                let file = seg.file.clone().or_else(|| files.peek(&path));
                if goes {
                    c.unsynced.push((seq, (path, file)));
                } else {
                    c.files.push((path, file));
                    c.facts.push((seq, seg.fact()));
                }
            } else if let Some(f) = seg.fact.filter(|f| f.unsent != seg.unsent && !goes) {
                // Acks written in this commit: the count of what a loss of the
                // file would take goes down.
                c.facts.push((
                    seq,
                    Fact {
                        unsent: seg.unsent,
                        ..f
                    },
                ));
            }
            if seg.ack_dirty {
                seg.ack_dirty = false;
                let path = self.dir.join(ack_name(seq));
                let file = files.peek(&path);
                c.files.push((path, file));
            }
            if goes {
                c.remove.push(seq);
            }
        }
        if carry_needed(&state, &c.remove) {
            c.table = Some(carried_table(&state, &c.remove));
        }
        c
    }

    /// Seals the open segment when idle with nothing live, or when mostly
    /// delivered since it was last synced: then its few live entries are copied
    /// forward, and what was delivered before it was synced is never synced (nor
    /// written at all, when the segment goes before the kernel writes it back).
    fn roll(&self, stream: &str, state: &mut State, space: &Space) {
        let Some(open) = state.open.as_ref() else {
            return;
        };
        let seq = open.seq;
        let seg = &state.segments[&seq];
        let idle = open.last_append.elapsed() >= ROLL_IDLE && seg.live == 0;
        let delivered = seg.dirty
            && seg.len >= self.segment_bytes / ROLL_DELIVERED_FRACTION
            && seg.live_bytes * COPY_FORWARD_RATIO < seg.len;
        if idle || delivered {
            let added = self.seal(state);
            space.disk_bytes.fetch_add(added, Ordering::Relaxed);
        }
        if delivered && !idle {
            self.move_live(stream, state, space, seq);
        }
    }

    /// Copies forward the few live entries of sealed segments written since the
    /// last sync and nearly all delivered (less than an eighth live), as [`roll`]
    /// does for the open segment: the segment then goes unsynced, and the disk
    /// writes its live eighth instead of the whole segment. (Not up to a
    /// quarter, as for the open segment: with eight writers bursting, the kernel
    /// writes many sealed segments back before they go, and copies of up to a
    /// quarter added 17 % to the bytes written.) A segment rolled for its size
    /// just before a commit holds the records still on their way to Kinesis at
    /// its end; synced, all of it would be written.
    ///
    /// [`roll`]: Disk::roll
    fn move_delivered(&self, stream: &str, state: &mut State, space: &Space) {
        let open = state.open.as_ref().map(|o| o.seq);
        let mostly_delivered: Vec<u64> = state
            .segments
            .iter()
            .filter(|(&q, s)| {
                Some(q) != open
                    && s.sealed
                    && s.dirty
                    && s.live > 0
                    && s.live_bytes * MOVE_DELIVERED_RATIO < s.len
            })
            .map(|(&q, _)| q)
            .collect();
        self.move_all(stream, state, space, &mostly_delivered);
    }

    /// Fsyncs what the commit covers (no lock held).
    pub(in crate::spool) fn sync(&self, c: &Commit) -> Result<(), SpoolError> {
        for (path, f) in &c.files {
            let f = match f {
                Some(f) => f.clone(),
                None => match self.storage.open(path, false) {
                    Ok(f) => f,
                    // Removed from under the spool: the next open reports it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(path, e)),
                },
            };
            f.sync_data().map_err(|e| io_err(path, e))?;
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
    pub(super) fn write_acks(&self, stream: &str, state: &mut State, drop_failed: bool) {
        let mut created = false;
        let State {
            segments, files, ..
        } = &mut *state;
        for (&seq, seg) in segments.iter_mut() {
            if seg.acks.is_empty() || (seg.sealed && seg.live == 0) {
                // A segment about to go needs no acks.
                if seg.sealed && seg.live == 0 {
                    seg.acks.clear();
                }
                continue;
            }
            let path = self.dir.join(ack_name(seq));
            let new = seg.ack_len == 0;
            let head = frame::frame(&frame::header(frame::ROLE_ACKS, stream, seq));
            let opened = files.get(&*self.storage, &path, new).and_then(|f| {
                if new {
                    f.write_at(0, &head)?;
                }
                Ok(f)
            });
            let file = match opened {
                Ok(f) => {
                    if new {
                        seg.ack_len = head.len() as u64;
                        created = true;
                    }
                    f
                }
                Err(e) => {
                    if new {
                        files.take(&path);
                        let _ = self.storage.remove_file(&path);
                    }
                    if drop_failed {
                        seg.acks.clear();
                        self.warn_acks(stream, &path, &e);
                    }
                    continue;
                }
            };
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
    pub(in crate::spool) fn finish(
        &self,
        stream: &str,
        c: Commit,
    ) -> Result<(u64, Vec<CatalogEvent>), SpoolError> {
        let mut catalog = c.catalog;
        let mut remove = c.remove;
        if remove.is_empty() {
            self.record_facts(stream, &c.facts, &[])?;
            return Ok((0, catalog));
        }
        if let Some(table) = &c.table {
            self.carry_table(stream, table, &mut remove)?;
        }
        {
            let state = self.lock();
            // Still nothing live (a copy-forward cannot add entries to a sealed
            // segment, so this holds; checked anyway).
            remove.retain(|seq| {
                state
                    .segments
                    .get(seq)
                    .is_some_and(|s| s.live == 0 && s.sealed)
            });
        }
        // The removals are durable in the manifest before the unlinks: a power
        // cut between the two must not make a delivered segment a lost one.
        self.record_facts(stream, &c.facts, &remove)?;
        let (freed, removed) = self.unlink(stream, remove, &mut catalog);
        self.sync_kept(c.unsynced, &removed)?;
        if !removed.is_empty() {
            let _ = self.storage.sync_dir(&self.dir);
        }
        Ok((freed, catalog))
    }

    /// Writes the checkpoint table a removal needs. On a full disk (filled by
    /// others) the segments whose checkpoints nothing else keeps stay: they
    /// leave `remove`; the others go, which frees room for it.
    fn carry_table(
        &self,
        stream: &str,
        table: &[CheckpointRecord],
        remove: &mut Vec<u64>,
    ) -> Result<(), SpoolError> {
        match self.write_table(stream, table) {
            Ok(()) => {
                self.lock().table_has = table.iter().map(|r| (r.name.clone(), r.seq)).collect();
                Ok(())
            }
            Err(e) if e.is_full() => {
                let state = self.lock();
                remove.retain(|q| !carry_needed(&state, &[*q]));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets the segments `remove` and unlinks their files (ack file first);
    /// the catalog hears of each segment file gone. Returns the bytes freed on
    /// disk and the segments removed.
    fn unlink(
        &self,
        stream: &str,
        remove: Vec<u64>,
        catalog: &mut Vec<CatalogEvent>,
    ) -> (u64, Vec<u64>) {
        let mut freed = 0u64;
        let mut removed = Vec::new();
        {
            let mut state = self.lock();
            for seq in remove {
                if let Some(seg) = state.segments.remove(&seq) {
                    freed += seg.len;
                    removed.push(seq);
                    state.files.take(&self.dir.join(seg_name(seq)));
                    state.files.take(&self.dir.join(ack_name(seq)));
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
        (freed, removed)
    }

    /// Syncs a segment left unsynced that stays after all (no room for the
    /// checkpoint table), before the commit is published: its checkpoints
    /// count.
    fn sync_kept(&self, unsynced: Vec<(u64, ToSync)>, removed: &[u64]) -> Result<(), SpoolError> {
        for (seq, (path, file)) in unsynced {
            if !removed.contains(&seq) {
                let file = match file {
                    Some(f) => f,
                    None => self
                        .storage
                        .open(&path, false)
                        .map_err(|e| io_err(&path, e))?,
                };
                file.sync_data().map_err(|e| io_err(&path, e))?;
            }
        }
        Ok(())
    }

    /// Records in the manifest what this commit made durable (after its sync)
    /// and the segments about to be removed (before their unlink). A full disk
    /// does not stop the commit: the facts stay unknown, and a removal goes on
    /// unrecorded (a power cut before the next record may then report the
    /// removed segment missing, a false alarm rather than a stuck spool).
    fn record_facts(
        &self,
        stream: &str,
        facts: &[(u64, Fact)],
        removed: &[u64],
    ) -> Result<(), SpoolError> {
        let records: Vec<(u64, Option<Fact>)> = {
            let state = self.lock();
            let known = |seq: &u64| state.segments.get(seq).is_some_and(|s| s.fact.is_some());
            facts
                .iter()
                .filter(|(seq, _)| state.segments.contains_key(seq))
                .map(|&(seq, f)| (seq, Some(f)))
                .chain(removed.iter().filter(|q| known(q)).map(|&seq| (seq, None)))
                .collect()
        };
        if records.is_empty() {
            return Ok(());
        }
        let recorded = self
            .manifest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&*self.storage, &records);
        match recorded {
            Ok(()) => {
                let mut state = self.lock();
                for &(seq, f) in facts {
                    if let Some(seg) = state.segments.get_mut(&seq) {
                        seg.fact = Some(f);
                    }
                }
                Ok(())
            }
            Err(e) if e.is_full() => {
                if self.may_warn() {
                    tracing::warn!(stream, error = %e,
                        "Writing the spool's manifest failed (full disk); damage found before it is written again may go unreported");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Warns that acks could not be written, once a minute at most.
    fn warn_acks(&self, stream: &str, path: &Path, e: &std::io::Error) {
        if self.may_warn() {
            tracing::warn!(stream, path = %path.display(), error = %e,
                "Writing spool acks failed (full disk?); after a crash those records are sent again");
        }
    }

    /// Whether a warning about a full disk may be logged now (once a minute).
    fn may_warn(&self) -> bool {
        let now = now_ms();
        let last = self.acks_warned_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 60_000
            && self
                .acks_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
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
        let pinned: Vec<u64> = sealed[..sealed.len() / 2]
            .iter()
            .copied()
            .filter(|seq| {
                let seg = &state.segments[seq];
                seg.live_bytes * COPY_FORWARD_RATIO < seg.len
            })
            .collect();
        self.move_all(stream, state, space, &pinned);
    }

    /// [`Disk::move_live`] for each of `seqs`, until one cannot be written.
    fn move_all(&self, stream: &str, state: &mut State, space: &Space, seqs: &[u64]) {
        for &seq in seqs {
            if !self.move_live(stream, state, space, seq) {
                return;
            }
        }
    }

    /// Copies the live entries of sealed segment `seq` to the open segment (one
    /// is opened if needed). False if the open segment cannot be written (a full
    /// disk): what is not copied stays where it is.
    fn move_live(&self, stream: &str, state: &mut State, space: &Space, seq: u64) -> bool {
        let Ok(file) = self.seg_file(state, seq) else {
            // Left where it is: the reader reports it.
            return true;
        };
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
            let progress = state.progress.get(&id).cloned();
            let unsent = u64::from(loc.count).saturating_sub(done_bits(progress.as_ref()));
            let old = state.segments.get_mut(&seq).expect("listed");
            old.live -= 1;
            old.live_bytes -= u64::from(loc.len);
            old.unsent = old.unsent.saturating_sub(unsent);
            // The copy carries its entry's (old) checkpoint: the new segment
            // holds a value of it, and its footer says so.
            let copied = frame::check(&buf)
                .and_then(frame::entry_head)
                .and_then(|(head, _)| head.checkpoint);
            let to = state.segments.get_mut(&new_seq).expect("just written");
            to.live += 1;
            to.live_bytes += u64::from(loc.len);
            to.entries += 1;
            to.records += u64::from(loc.count);
            to.unsent += unsent;
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
    pub(in crate::spool) fn mark_dirty(&self) {
        let mut state = self.lock();
        for seg in state.segments.values_mut() {
            seg.dirty = true;
            seg.ack_dirty |= seg.ack_len > 0;
        }
        state.dir_dirty = true;
    }

    /// Seals the open segment (a clean stop), so the next open reads footers only.
    pub(in crate::spool) fn seal_open(&self, space: &Space) {
        let mut state = self.lock();
        let added = self.seal(&mut state);
        space.disk_bytes.fetch_add(added, Ordering::Relaxed);
    }

    /// The sequence numbers of the segments held.
    pub(in crate::spool) fn segment_seqs(&self) -> BTreeSet<u64> {
        self.lock().segments.keys().copied().collect()
    }

    /// Bytes of this stream's files on disk (segments and acks).
    pub(in crate::spool) fn size_on_disk(&self) -> u64 {
        let state = self.lock();
        state.segments.values().map(|s| s.len + s.ack_len).sum()
    }
}

/// The checkpoint table to carry forward before removing `remove`. A removal
/// is kept while a segment that stays may hold an older value of that checkpoint
/// (else the older value would come back); the others are dropped with the
/// segments that recorded them.
fn carried_table(state: &State, remove: &[u64]) -> Vec<CheckpointRecord> {
    let staying: BTreeSet<&Vec<u8>> = state
        .segments
        .iter()
        .filter(|(q, _)| !remove.contains(q))
        .flat_map(|(_, s)| s.names.keys())
        .collect();
    state
        .checkpoints
        .values()
        .filter(|r| r.value.is_some() || staying.contains(&r.name))
        .cloned()
        .collect()
}
