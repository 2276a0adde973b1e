//! What writers, the reader and delivery call: append, read, retire, and the
//! checkpoints.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{done_bits, io_err, seg_len, seg_name, Loc, StreamSpool};
use crate::record::UserRecord;
use crate::spool::damage::DamageEvent;
use crate::spool::frame::{self, CheckpointRecord, Placed};
use crate::spool::storage::StoredFile;
use crate::spool::{now_ms, Checkpoint, CheckpointRef, Entry, SpoolError};

impl StreamSpool {
    pub fn name(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// Whether records are kept in memory only.
    pub fn is_memory_only(&self) -> bool {
        self.inner.disk.is_none()
    }

    /// Writes a batch of records as one entry and returns its id and size. Fails
    /// with `SpoolError::Full` (or `SpoolError::DiskFull`) when there is no
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
        let bytes = self.write(id, records, checkpoint.map(CheckpointRef::from), waits)?;
        Ok((id, bytes))
    }

    /// Takes the next entry id, for a [`write`](Self::write) that may come later
    /// (ids order the entries; one taken and never written leaves a harmless gap).
    pub fn reserve_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes a batch of records as entry `id` (from [`reserve_id`](Self::reserve_id))
    /// with an optional checkpoint, and returns its size. Durable after the next
    /// group commit (`Spool::durable`). `waits`: the
    /// entry waits in the spool to be read back (a spill); memory-only, where
    /// nothing waits, refuses it as a full spool.
    pub fn write(
        &self,
        id: u64,
        records: &[UserRecord],
        checkpoint: Option<CheckpointRef<'_>>,
        waits: bool,
    ) -> Result<u64, SpoolError> {
        if waits && self.inner.disk.is_none() {
            let bytes = records.iter().map(|r| r.size() as u64).sum();
            return Err(SpoolError::Full {
                used: bytes,
                max: 0,
                needed: bytes,
            });
        }
        self.write_entry(id, records, checkpoint, true)
    }

    /// Writes an entry whatever the bounds (the migration of an old spool).
    pub(in crate::spool) fn write_unbounded(
        &self,
        records: &[UserRecord],
    ) -> Result<u64, SpoolError> {
        let id = self.reserve_id();
        self.write_entry(id, records, None, false)
    }

    fn write_entry(
        &self,
        id: u64,
        records: &[UserRecord],
        checkpoint: Option<CheckpointRef<'_>>,
        bounded: bool,
    ) -> Result<u64, SpoolError> {
        let Some(disk) = &self.inner.disk else {
            return Ok(records.iter().map(|r| r.size() as u64).sum());
        };
        let c = checkpoint.map(|c| CheckpointRecord {
            seq: self.inner.checkpoint_seq.fetch_add(1, Ordering::Relaxed),
            name: c.name.to_vec(),
            value: Some(c.value.to_vec()),
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
        seg.entries += 1;
        seg.records += u64::from(loc.count);
        seg.unsent += u64::from(loc.count);
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
                wanted.push((id, *loc, state.progress.get(&id).cloned()));
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        // One segment's file at a time (entries come mostly in segment order):
        // a large read holds no descriptor per segment.
        let mut current: Option<(u64, Option<Arc<dyn StoredFile>>)> = None;
        for (id, loc, delivered) in wanted {
            if current.as_ref().is_none_or(|(seq, _)| *seq != loc.seg) {
                drop(current.take());
                let opened = disk.seg_file(&mut disk.lock(), loc.seg);
                let file = match opened {
                    Ok(f) => Some(f),
                    // Gone from under the spool: its entries are reported lost.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io_err(&disk.dir.join(seg_name(loc.seg)), e)),
                };
                current = Some((loc.seg, file));
            }
            let file = current.as_ref().and_then(|(_, f)| f.as_ref());
            let mut buf = vec![0u8; loc.len as usize];
            let read = file
                .and_then(|f| f.read_at(loc.offset, &mut buf).ok())
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
        let path = disk.dir.join(seg_name(loc.seg));
        tracing::error!(stream = %self.inner.name,
            segment = %path.display(), offset = loc.offset, records = lost,
            "A damaged frame in the spool was skipped: the records it held are lost");
        disk.report(&[DamageEvent {
            stream: self.inner.name.to_string(),
            path,
            records: Some(lost),
            what: "a damaged frame was skipped",
        }]);
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
                    let delivered = done_bits(state.progress.remove(&id).as_ref());
                    let seg = state
                        .segments
                        .get_mut(&loc.seg)
                        .expect("live entries have segments");
                    seg.unsent = seg
                        .unsent
                        .saturating_sub(u64::from(loc.count).saturating_sub(delivered));
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
                let before = done_bits(state.progress.get(&id));
                state.progress.insert(id, bits.to_vec());
                let after = done_bits(state.progress.get(&id));
                let seg = state
                    .segments
                    .get_mut(&loc.seg)
                    .expect("live entries have segments");
                seg.unsent = (seg.unsent + before).saturating_sub(after);
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
    pub fn set_checkpoint<'a>(
        &self,
        checkpoint: impl Into<CheckpointRef<'a>>,
    ) -> Result<(), SpoolError> {
        let c = checkpoint.into();
        self.write_checkpoint(c.name.to_vec(), Some(c.value.to_vec()))
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

    /// The id the next entry will get (nothing is reserved).
    pub fn next_id(&self) -> u64 {
        self.inner.next_id.load(Ordering::Relaxed)
    }

    /// The lowest id of a live entry (one not retired yet); `None` when none is
    /// live, or in memory-only mode.
    pub fn oldest_live_id(&self) -> Option<u64> {
        let disk = self.inner.disk.as_ref()?;
        let state = disk.lock();
        state.entries.keys().next().copied()
    }

    /// Number of live entries held.
    pub fn entry_count(&self) -> usize {
        self.inner
            .disk
            .as_ref()
            .map_or(0, |d| d.lock().entries.len())
    }
}
