//! The batch of one open file: the records read since the last spool write, what
//! happened to its lines meanwhile (counts), and the checkpoint that is in the
//! spool (`committed`).
//!
//! State: a [`Batch`] is owned by its file's `Tailed` (tailed.rs). It turns each
//! record's data into a [`UserRecord`] (partition key, json format) and is sent
//! with [`Batch::spool`], which writes its records and the checkpoint at the
//! consumed offset in one spool write. Callers: tailed.rs, and the framer through
//! [`Spooling`], its [`Emit`] (a full batch is sent at once).
//!
//! Invariant: the checkpoint written with a batch is the consumed offset at the
//! moment it is cut, so it covers exactly the lines whose records were given so
//! far: never a byte still in the reader's buffer or held by the framer, never
//! one whose record is not in this or an earlier write. `committed` moves only
//! when the sink took the write.

use std::mem;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{FileConfig, InvalidUtf8, Oversized, PartitionKey};
use crate::metrics::{LineAction, Metrics, RejectReason};
use crate::record::{random_partition_key, UserRecord};
use crate::source::format::{host_name, Cut, JsonFormatter};
use crate::source::record_id;

use super::checkpoint::checkpoint;
use super::framer::Emit;
use super::identity::{fnv1a, Identity};
use super::keys::{json_field, key_tail};
use super::progress::Files;
use super::{FileError, Sink, BATCH_BYTES, KIND, MAX_KEY_BYTES};

/// Counts gathered since the last spool write and emitted with it.
#[derive(Debug, Default)]
struct Counts {
    split: u64,
    truncated: u64,
    utf8: u64,
    rejected_utf8: u64,
    key_fallbacks: u64,
}

/// The records of one file not yet spooled, and its spooled position.
#[derive(Debug)]
pub(super) struct Batch {
    block: Arc<FileConfig>,
    records: Vec<UserRecord>,
    /// Data and key bytes of `records`.
    bytes: usize,
    counts: Counts,
    /// The consumed offset in the spool: the last checkpoint written.
    committed: u64,
    /// Partition key for `file_path`.
    path_key: String,
    /// The block's json format for this path; `None`: raw.
    format: Option<JsonFormatter>,
    /// Record ids: the file's origin (computed at its first record), the id of
    /// the last record and its position, and which piece of that line it was.
    ids: Option<Ids>,
    /// Where each spool write and its receipt are told (`shardline files`).
    files: Files,
}

/// The record ids of a file (`record_id = true`).
#[derive(Debug, Default)]
struct Ids {
    origin: Option<String>,
    id: Vec<u8>,
    at: u64,
    piece: usize,
    prefixer: record_id::Prefixer,
}

impl Batch {
    /// An empty batch of a file at `path` whose checkpoint in the spool is at
    /// `committed`.
    pub(super) fn new(block: Arc<FileConfig>, path: &Path, committed: u64, files: Files) -> Batch {
        let mut batch = Batch {
            block: block.clone(),
            records: Vec::new(),
            bytes: 0,
            counts: Counts::default(),
            committed,
            path_key: String::new(),
            format: None,
            ids: block.record_id.then(Ids::default),
            files,
        };
        batch.set_path(path);
        batch
    }

    /// The file is read at `path` now: its key and json source follow it.
    pub(super) fn set_path(&mut self, path: &Path) {
        self.path_key = key_tail(&path.to_string_lossy());
        let old = self.format.take();
        self.format = JsonFormatter::for_source(
            &self.block.format,
            &path.to_string_lossy(),
            &self.block.block,
        );
        if let (Some(new), Some(old)) = (self.format.as_mut(), old) {
            new.keep_state_of(old);
        }
    }

    /// The file is read from `pos`: a CSV parser whose columns the file's first
    /// line names reads that line again from the start, or is given it now.
    pub(super) fn read_from(&mut self, pos: u64, file: &std::fs::File) {
        let Some(format) = self.format.as_mut() else {
            return;
        };
        if pos == 0 {
            // A file read from its start again (truncated) may begin with
            // another line: its origin is taken again.
            if let Some(ids) = self.ids.as_mut() {
                ids.origin = None;
            }
            format.forget_header();
        } else if format.wants_header() {
            if let Some(line) = first_line(file) {
                format.set_header(&line);
            }
        }
    }

    /// The consumed offset the spool holds for this file.
    pub(super) fn committed(&self) -> u64 {
        self.committed
    }

    /// The spool holds a checkpoint at `offset` (written alone, or the one a
    /// reset goes back to).
    pub(super) fn set_committed(&mut self, offset: u64) {
        self.committed = offset;
    }

    /// The file is read again from another offset: the records not spooled are
    /// dropped (they are read again).
    pub(super) fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }

    /// Adds the record of a line (in the json format, the records: a line that
    /// overflows once wrapped is cut per `oversized`, and counted). Returns
    /// whether the batch is full.
    /// `at`: where the line ends in the file, its record id's position.
    pub(super) fn push(&mut self, data: Bytes, at: u64, identity: &Identity) -> bool {
        let partition_key = self.partition_key(&data);
        if let Some(ids) = self.ids.as_mut() {
            ids.next(identity, at);
        }
        match self.format.as_mut() {
            None => {
                let data = match self.ids.as_mut() {
                    Some(ids) => ids.prefixer.prefixed(&ids.id, ids.piece, &data),
                    None => data,
                };
                self.bytes += data.len() + partition_key.len();
                self.records.push(UserRecord {
                    partition_key,
                    explicit_hash_key: None,
                    data,
                });
            }
            Some(format) => {
                let (records, bytes) = (&mut self.records, &mut self.bytes);
                let (max, oversized) = (self.block.max_record_bytes, self.block.oversized);
                if let Some(ids) = &self.ids {
                    format.set_id(&ids.id);
                }
                let cut = format.format(&data, max, oversized, |data| {
                    *bytes += data.len() + partition_key.len();
                    records.push(UserRecord {
                        partition_key: partition_key.clone(),
                        explicit_hash_key: None,
                        data,
                    });
                });
                match cut {
                    Cut::None => {}
                    Cut::Split => self.counts.split += 1,
                    Cut::Truncated => self.counts.truncated += 1,
                }
            }
        }
        self.bytes >= BATCH_BYTES
    }

    /// The key of a line's record: the line's, not its wrapping's, so equal
    /// lines hash alike.
    fn partition_key(&mut self, data: &[u8]) -> String {
        match &self.block.partition_key {
            // One random key per batch: the batch goes to one shard, in order, and
            // is hashed once; batches spread over the shards.
            PartitionKey::Random => match self.records.first() {
                Some(first) => first.partition_key.clone(),
                None => random_partition_key(),
            },
            PartitionKey::RandomPerRecord => random_partition_key(),
            PartitionKey::LineHash => format!("{:016x}", fnv1a(data)),
            PartitionKey::FilePath => self.path_key.clone(),
            PartitionKey::JsonField(field) => match json_field(data, field) {
                Some(k) if !k.is_empty() && k.len() <= MAX_KEY_BYTES => k,
                _ => {
                    self.counts.key_fallbacks += 1;
                    random_partition_key()
                }
            },
        }
    }

    /// Spools the records with the checkpoint at `consumed` (or the checkpoint
    /// alone, if the position moved without records); the counts go to `metrics`
    /// even when nothing else moved.
    pub(super) fn spool<S: Sink>(
        &mut self,
        sink: &mut S,
        metrics: &Metrics,
        identity: &Identity,
        consumed: u64,
    ) -> Result<(), FileError> {
        // A line being truncated is counted when it crosses the limit, before
        // anything is spooled.
        self.emit_counts(metrics);
        if self.records.is_empty() && consumed == self.committed {
            return Ok(());
        }
        let records = mem::take(&mut self.records);
        self.bytes = 0;
        let n = records.len() as u64;
        if n > 0 {
            metrics.received(KIND, n);
        }
        let cp = checkpoint(identity, consumed);
        let receipt = sink
            .spool(&self.block.stream, records, &cp)
            .map_err(|e| FileError::spool(identity.path(), e))?;
        self.files
            .spooled(identity.checkpoint_id(), consumed, receipt);
        self.committed = consumed;
        Ok(())
    }

    /// Writes the checkpoint at the committed position alone.
    pub(super) fn write_committed<S: Sink>(
        &self,
        sink: &mut S,
        identity: &Identity,
    ) -> Result<(), FileError> {
        let cp = checkpoint(identity, self.committed);
        let receipt = sink
            .spool(&self.block.stream, Vec::new(), &cp)
            .map_err(|e| FileError::spool(identity.path(), e))?;
        self.files
            .spooled(identity.checkpoint_id(), self.committed, receipt);
        Ok(())
    }

    fn emit_counts(&mut self, m: &Metrics) {
        let c = mem::take(&mut self.counts);
        if c.split > 0 {
            m.oversized(KIND, LineAction::Split, c.split);
        }
        if c.truncated > 0 {
            m.oversized(KIND, LineAction::Truncated, c.truncated);
        }
        if c.utf8 > 0 {
            let action = match self.block.invalid_utf8 {
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
        if let Some(f) = self.format.as_mut() {
            f.report(m);
        }
    }
}

impl Ids {
    /// Sets the id of a record of the line ending at `at`: a record at the
    /// same position as the last is the next piece of a cut line.
    fn next(&mut self, identity: &Identity, at: u64) {
        let origin = self.origin.get_or_insert_with(|| file_origin(identity));
        if at == self.at && !self.id.is_empty() {
            self.piece += 1;
            return;
        }
        self.at = at;
        self.piece = 0;
        record_id::write(&mut self.id, origin, at);
    }
}

/// A file's origin: the host, the file's device and inode (the original's, for
/// a copy of a truncated file) and its first line (at most 64 bytes of it), so
/// a new file that reuses an inode gets another.
fn file_origin(identity: &Identity) -> String {
    let id = identity.checkpoint_id();
    let head = identity.fingerprint().bytes();
    let head = &head[..head.len().min(64)];
    let first = head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head, |end| &head[..end]);
    record_id::origin(&[
        host_name().as_bytes(),
        &id.dev.to_le_bytes(),
        &id.ino.to_le_bytes(),
        first,
    ])
}

/// The first line of `file` (at most 64 KiB of it), without its newline.
fn first_line(file: &std::fs::File) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let n = file.read_at(&mut buf, 0).ok()?;
    let line = &buf[..n];
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(n);
    let line = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
    Some(String::from_utf8_lossy(line).into_owned())
}

/// The framer's records going into a file's batch, which is spooled through the
/// tailer's sink as soon as it is full. Lent for one framing call.
pub(super) struct Spooling<'a, S> {
    pub(super) batch: &'a mut Batch,
    pub(super) sink: &'a mut S,
    pub(super) metrics: &'a Metrics,
    pub(super) identity: &'a Identity,
}

impl<S: Sink> Emit for Spooling<'_, S> {
    #[inline]
    fn record(&mut self, data: Bytes, consumed: u64) -> Result<(), FileError> {
        if self.batch.push(data, consumed, self.identity) {
            self.batch
                .spool(self.sink, self.metrics, self.identity, consumed)?;
        }
        Ok(())
    }

    fn oversized(&mut self, action: Oversized) {
        match action {
            Oversized::Split => self.batch.counts.split += 1,
            Oversized::Truncate => self.batch.counts.truncated += 1,
        }
    }

    fn invalid_utf8(&mut self, rejected: bool) {
        if rejected {
            self.batch.counts.rejected_utf8 += 1;
        } else {
            self.batch.counts.utf8 += 1;
        }
    }

    fn path(&self) -> &Path {
        self.identity.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use super::super::checkpoint::Position;
    use super::super::identity::FileId;
    use super::super::memory::MemorySink;

    fn block() -> Arc<FileConfig> {
        let text = "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\ninclude = [\"/none/*.log\"]\n";
        Arc::new(
            crate::config::parse(text, Path::new("t.toml"))
                .unwrap()
                .files
                .remove(0),
        )
    }

    fn identity() -> Identity {
        let id = FileId { dev: 1, ino: 2 };
        Identity::new(
            id,
            id,
            PathBuf::from("/none/a.log"),
            PathBuf::from("/none/a.log"),
        )
    }

    fn spooled_at(sink: &MemorySink) -> Option<u64> {
        let m = sink.lock();
        let value = m.checkpoints.values().next()?;
        Some(Position::decode(value).unwrap().offset)
    }

    #[test]
    fn the_checkpoint_goes_with_the_records_and_moves_only_when_spooled() {
        let (sink, metrics, identity) = (MemorySink::default(), Metrics::new(), identity());
        let mut batch = Batch::new(block(), identity.path(), 0, Files::default());
        assert!(!batch.push(Bytes::from("one"), 4, &identity));
        assert!(!batch.push(Bytes::from("two"), 8, &identity));
        batch
            .spool(&mut sink.clone(), &metrics, &identity, 8)
            .unwrap();
        assert_eq!(
            (sink.lines(), spooled_at(&sink)),
            (vec!["one".into(), "two".into()], Some(8))
        );
        assert_eq!(batch.committed(), 8);
        // Nothing new, same position: no write.
        sink.lock().writes_left = Some(0);
        batch
            .spool(&mut sink.clone(), &metrics, &identity, 8)
            .unwrap();
        // A refused write leaves the committed position where it was.
        batch.push(Bytes::from("three"), 14, &identity);
        let refused = batch.spool(&mut sink.clone(), &metrics, &identity, 14);
        assert!(matches!(refused, Err(FileError::Stopped)));
        assert_eq!((batch.committed(), spooled_at(&sink)), (8, Some(8)));
        // A reset drops the records; the position alone moves (a skipped line).
        sink.lock().writes_left = None;
        batch.clear();
        batch
            .spool(&mut sink.clone(), &metrics, &identity, 9)
            .unwrap();
        assert_eq!((sink.lines().len(), spooled_at(&sink)), (2, Some(9)));
    }

    #[test]
    fn a_full_batch_is_spooled_with_the_offset_of_the_record_that_filled_it() {
        let (mut sink, metrics, identity) = (MemorySink::default(), Metrics::new(), identity());
        let mut batch = Batch::new(block(), identity.path(), 0, Files::default());
        let line = Bytes::from(vec![b'f'; 1000]);
        let mut out = Spooling {
            batch: &mut batch,
            sink: &mut sink,
            metrics: &metrics,
            identity: &identity,
        };
        let mut given = 0;
        while spooled_at(out.sink).is_none() {
            given += 1;
            out.record(line.clone(), given * 1001).unwrap();
        }
        // Exactly the records given, with the offset the last of them reached.
        assert_eq!(out.sink.data().len() as u64, given);
        assert_eq!(spooled_at(out.sink), Some(given * 1001));
        assert!(given * 1016 >= BATCH_BYTES as u64);
        out.record(line, (given + 1) * 1001).unwrap();
        assert_eq!(batch.committed(), given * 1001);
        assert_eq!(batch.records.len(), 1);
    }
}
