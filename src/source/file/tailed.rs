//! One tailed file, made of the parts that own its state: its [`Identity`]
//! (identity.rs), its [`Reader`] (reader.rs: the handle, the buffer and the
//! offsets), its [`Framer`] (framer.rs: what is between lines) and its [`Batch`]
//! (batch.rs: the records not yet spooled and the spooled checkpoint); plus when
//! it is to be read, drained or retried.
//!
//! State: a [`Tailed`] is owned by the tailer (tailer.rs), one per open file. Its
//! parts are private: the tailer, open.rs and recovery.rs call the methods below,
//! which lend the parts to each other for one step (read, frame, spool).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::FileConfig;
use crate::metrics::Metrics;

use super::batch::{Batch, Spooling};
use super::framer::Framer;
use super::identity::{FileId, Fingerprint, Identity};
use super::progress::Files;
use super::reader::Reader;
use super::{FileError, Sink};

/// How a read ended.
pub(super) enum ReadEnd {
    Eof,
    Budget,
}

/// One open file.
#[derive(Debug)]
pub(super) struct Tailed {
    block: Arc<FileConfig>,
    identity: Identity,
    reader: Reader,
    framer: Framer,
    batch: Batch,
    /// Read at the next service.
    dirty: bool,
    /// Rotated away or deleted: read to the end, then close. When it was noticed.
    draining: Option<Instant>,
    /// Last time a read returned data.
    grew: Instant,
    /// Not read again before this (after an error).
    retry_at: Option<Instant>,
}

impl Tailed {
    /// A file opened at `path` (found at `tailed_path`), carrying the checkpoint
    /// of `checkpoint_id`; positioned with [`start_at`](Self::start_at) next.
    /// `draining`: rotated away already.
    pub(super) fn new(
        block: Arc<FileConfig>,
        identity: Identity,
        file: File,
        draining: Option<Instant>,
        files: Files,
    ) -> Tailed {
        let mut framer = Framer::new(&block);
        framer.set_join(crate::source::parse::join_of(&block.format));
        Tailed {
            framer,
            batch: Batch::new(block.clone(), identity.path(), 0, files),
            identity,
            reader: Reader::new(file),
            block,
            dirty: true,
            draining,
            grew: Instant::now(),
            retry_at: None,
        }
    }

    pub(super) fn block(&self) -> &Arc<FileConfig> {
        &self.block
    }

    pub(super) fn stream(&self) -> &str {
        &self.block.stream
    }

    pub(super) fn id(&self) -> FileId {
        self.identity.id()
    }

    pub(super) fn checkpoint_id(&self) -> FileId {
        self.identity.checkpoint_id()
    }

    pub(super) fn path(&self) -> &Path {
        self.identity.path()
    }

    /// The included path it was found at.
    pub(super) fn tailed_path(&self) -> &Path {
        self.identity.tailed_path()
    }

    /// The file's size now (of the open handle).
    pub(super) fn size(&self) -> io::Result<u64> {
        self.reader.size()
    }

    /// Whether everything up to the end of the file is in the spool: read to
    /// the end, no partial line or record held back.
    pub(super) fn read_to_end(&self) -> io::Result<bool> {
        Ok(self.reader.at_eof() && self.committed() >= self.size()?)
    }

    pub(super) fn file(&self) -> &File {
        self.reader.file()
    }

    pub(super) fn fingerprint(&self) -> &Fingerprint {
        self.identity.fingerprint()
    }

    /// Offset of the next byte to read.
    pub(super) fn read_pos(&self) -> u64 {
        self.reader.read_pos()
    }

    /// The consumed offset the spool holds.
    pub(super) fn committed(&self) -> u64 {
        self.batch.committed()
    }

    /// Everything before this offset is in the spool, in the batch, or was skipped.
    pub(super) fn consumed(&self) -> u64 {
        self.framer.consumed(self.reader.start())
    }

    /// Bytes searched for newlines since the last call.
    pub(super) fn take_scanned(&mut self) -> u64 {
        self.reader.take_scanned()
    }

    /// The file was renamed to another included path: followed there.
    pub(super) fn renamed(&mut self, path: PathBuf) {
        self.batch.set_path(&path);
        self.identity.renamed(path);
        self.draining = None;
        self.dirty = true;
    }

    /// Forgets what was read past `pos` and reads again from there.
    pub(super) fn reset_to(&mut self, pos: u64) -> io::Result<()> {
        self.reader.reset_to(pos)?;
        self.framer.reset();
        self.batch.clear();
        self.batch.read_from(pos, self.reader.file());
        self.identity.fingerprint_mut().forget_from(pos);
        Ok(())
    }

    /// Starts reading at `pos`, the position the spool holds for it (or is about
    /// to): the fingerprint is what the file holds before it.
    pub(super) fn start_at(&mut self, pos: u64) -> io::Result<()> {
        *self.identity.fingerprint_mut() = Fingerprint::read(self.reader.file(), pos)?;
        self.reset_to(pos)?;
        self.batch.set_committed(pos);
        Ok(())
    }

    /// The fingerprint of the file this one is a copy of (read from the copy).
    pub(super) fn set_fingerprint(&mut self, fingerprint: Fingerprint) {
        *self.identity.fingerprint_mut() = fingerprint;
    }

    /// After an error: what was read past the spooled position is read again, not
    /// before `retry_at`.
    pub(super) fn rewind(&mut self, retry_at: Instant) -> io::Result<()> {
        self.retry_at = Some(retry_at);
        self.reset_to(self.batch.committed())
    }

    /// Writes the checkpoint at the committed position alone.
    pub(super) fn write_committed<S: Sink>(&self, sink: &mut S) -> Result<(), FileError> {
        self.batch.write_committed(sink, &self.identity)
    }

    /// After a truncation: the file is read again from its start, with a
    /// checkpoint there.
    pub(super) fn restart<S: Sink>(&mut self, sink: &mut S) -> Result<(), FileError> {
        self.reset_to(0).map_err(|source| FileError::Read {
            path: self.path().to_owned(),
            source,
        })?;
        self.batch.set_committed(0);
        self.write_committed(sink)
    }

    /// The file's size, if it was truncated under the reader (copytruncate): it
    /// is shorter than what was read, or its first bytes changed.
    pub(super) fn truncated(&self) -> io::Result<Option<u64>> {
        let size = self.reader.size()?;
        let mut truncated = size < self.reader.read_pos();
        let fingerprint = self.identity.fingerprint();
        if !truncated && !fingerprint.is_empty() {
            truncated = !fingerprint.matches(self.reader.file())?;
        }
        Ok(truncated.then_some(size))
    }

    // When to work.

    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether this pass reads the file (it was marked, or it drains); takes the
    /// mark.
    pub(super) fn take_work(&mut self) -> bool {
        let work = self.dirty || self.draining.is_some();
        self.dirty = false;
        work
    }

    /// False while a retry after an error is not due; once it is, the wait ends.
    pub(super) fn ready(&mut self, now: Instant) -> bool {
        if self.retry_at.is_some_and(|r| now < r) {
            return false;
        }
        self.retry_at = None;
        true
    }

    pub(super) fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    /// The file's path no longer names it: it is read to its end, then closed.
    pub(super) fn start_draining(&mut self, now: Instant) {
        self.draining = Some(now);
        self.dirty = true;
    }

    /// Draining, read to its end, and it did not grow for `rotate_wait`.
    pub(super) fn drained(&self) -> bool {
        let Some(since) = self.draining else {
            return false;
        };
        // Now, not the pass's start: a read may have just moved `grew`.
        self.reader.at_eof() && Instant::now() >= since.max(self.grew) + self.block.rotate_wait
    }

    /// When there is timed work next: a multiline record to send, a drained file
    /// to close, a retry.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let multiline = self.framer.multiline_deadline();
        let close = self
            .draining
            .map(|d| d.max(self.grew) + self.block.rotate_wait);
        [multiline, close, self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    // Reading.

    /// Reads until the end of the file or `budget` bytes, framing each read;
    /// full batches are spooled on the way.
    pub(super) fn read<S: Sink>(
        &mut self,
        sink: &mut S,
        metrics: &Metrics,
        budget: u64,
        now: Instant,
    ) -> Result<ReadEnd, FileError> {
        let mut total = 0u64;
        loop {
            if total >= budget {
                self.reader.stopped_early();
                return Ok(ReadEnd::Budget);
            }
            let n = self
                .reader
                .fill(self.identity.fingerprint_mut())
                .map_err(|source| FileError::Read {
                    path: self.identity.path().to_owned(),
                    source,
                })?;
            if n == 0 {
                return Ok(ReadEnd::Eof);
            }
            self.grew = now;
            total += n as u64;
            let (framer, reader, mut out) = self.parts(sink, metrics);
            framer.lines(reader, &mut out, false)?;
        }
    }

    /// Reads `copy` (of `copy_path`) from `from` to its end as this file's content,
    /// spooled under this file's checkpoint; then reads this file's own handle
    /// again (positioned by the caller).
    pub(super) fn read_copy<S: Sink>(
        &mut self,
        copy: File,
        copy_path: &Path,
        from: u64,
        sink: &mut S,
        metrics: &Metrics,
    ) -> Result<(), FileError> {
        let own = self.reader.replace_file(copy);
        let result = self.read_to_end_from(from, copy_path, sink, metrics);
        self.reader.replace_file(own);
        result
    }

    fn read_to_end_from<S: Sink>(
        &mut self,
        from: u64,
        path: &Path,
        sink: &mut S,
        metrics: &Metrics,
    ) -> Result<(), FileError> {
        self.reset_to(from).map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.batch.set_committed(from);
        while let ReadEnd::Budget = self.read(sink, metrics, u64::MAX, Instant::now())? {}
        self.finish(sink, metrics)?;
        self.spool(sink, metrics)
    }

    /// Sends the multiline record in progress if its time is up; returns whether
    /// it did.
    pub(super) fn emit_multiline_due<S: Sink>(
        &mut self,
        sink: &mut S,
        metrics: &Metrics,
        now: Instant,
    ) -> Result<bool, FileError> {
        let (framer, reader, mut out) = self.parts(sink, metrics);
        framer.emit_multiline_due(reader, &mut out, now)
    }

    /// The file is finished: its last line without a newline and its multiline
    /// record in progress are records.
    pub(super) fn finish<S: Sink>(
        &mut self,
        sink: &mut S,
        metrics: &Metrics,
    ) -> Result<(), FileError> {
        let (framer, reader, mut out) = self.parts(sink, metrics);
        framer.finish(reader, &mut out)
    }

    /// Spools the batch with the checkpoint at the consumed offset (or the
    /// checkpoint alone, if the position moved without records).
    pub(super) fn spool<S: Sink>(
        &mut self,
        sink: &mut S,
        metrics: &Metrics,
    ) -> Result<(), FileError> {
        let consumed = self.consumed();
        self.batch.spool(sink, metrics, &self.identity, consumed)
    }

    /// The framer and the reader, and the batch as the framer's output: lent to
    /// each other for one framing step.
    fn parts<'a, S: Sink>(
        &'a mut self,
        sink: &'a mut S,
        metrics: &'a Metrics,
    ) -> (&'a mut Framer, &'a mut Reader, Spooling<'a, S>) {
        let out = Spooling {
            batch: &mut self.batch,
            sink,
            metrics,
            identity: &self.identity,
        };
        (&mut self.framer, &mut self.reader, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::{Checkpoint, ProduceError};
    use crate::record::UserRecord;

    use super::super::checkpoint::Position;

    fn block(extra: &str) -> Arc<FileConfig> {
        let text = format!(
            "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\ninclude = [\"/none/*.log\"]\n{extra}"
        );
        Arc::new(
            crate::config::parse(&text, Path::new("t.toml"))
                .unwrap()
                .files
                .remove(0),
        )
    }

    /// A sink that checks every write: its checkpoint is exactly the end of the
    /// file bytes whose records it holds, `lines_per` records covering `bytes_per`
    /// file bytes (a record's lines are sent whole, or not at all).
    struct Exact {
        records_per: u64,
        bytes_per: u64,
        records: u64,
        data: Vec<u8>,
        writes: u64,
    }

    impl Exact {
        fn new(records_per: u64, bytes_per: u64) -> Exact {
            Exact {
                records_per,
                bytes_per,
                records: 0,
                data: Vec::new(),
                writes: 0,
            }
        }
    }

    impl Sink for Exact {
        fn spool(
            &mut self,
            _: &str,
            records: Vec<UserRecord>,
            checkpoint: &Checkpoint,
        ) -> Result<Option<crate::source::file::Receipt>, ProduceError> {
            self.records += records.len() as u64;
            self.data.extend(records.iter().flat_map(|r| r.data.iter()));
            let at = Position::decode(&checkpoint.value).unwrap().offset;
            let whole = self.records / self.records_per;
            assert_eq!(at, whole * self.bytes_per, "after {} records", self.records);
            self.writes += 1;
            Ok(None)
        }
        fn checkpoints(&mut self, _: &str) -> Result<Vec<Checkpoint>, ProduceError> {
            Ok(Vec::new())
        }
        fn remove_checkpoint(&mut self, _: &str, _: &[u8]) -> Result<(), ProduceError> {
            Ok(())
        }
    }

    fn tailed(block: Arc<FileConfig>, data: &[u8]) -> (tempfile::TempDir, Tailed) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        let id = FileId::of(&file.metadata().unwrap());
        let identity = Identity::new(id, id, path.clone(), path);
        let mut t = Tailed::new(block, identity, file, None, Files::default());
        t.start_at(0).unwrap();
        (dir, t)
    }

    /// Reads everything there is, as a service pass does.
    fn read_all(t: &mut Tailed, sink: &mut Exact) {
        let m = Metrics::new();
        while let ReadEnd::Budget = t.read(sink, &m, 1 << 20, Instant::now()).unwrap() {}
        t.spool(sink, &m).unwrap();
    }

    #[test]
    fn each_batch_checkpoint_covers_exactly_the_lines_of_its_records() {
        // Batches fill in the middle of reads.
        let line = format!("{}\n", "l".repeat(999));
        let (_dir, mut t) = tailed(block(""), line.repeat(300).as_bytes());
        let mut sink = Exact::new(1, 1000);
        read_all(&mut t, &mut sink);
        assert_eq!((sink.records, t.committed()), (300, 300_000));
        assert!(sink.writes > 3, "{} writes", sink.writes);
    }

    #[test]
    fn a_batch_filled_inside_a_split_line_stops_its_checkpoint_before_the_line() {
        // Three records per line: a batch fills after a line's first or second.
        let line = format!("{}\n", "s".repeat(2500));
        let (_dir, mut t) = tailed(
            block("max_record_bytes = 1000"),
            line.repeat(100).as_bytes(),
        );
        let mut sink = Exact::new(3, 2501);
        read_all(&mut t, &mut sink);
        assert_eq!((sink.records, t.committed()), (300, 250_100));
    }

    #[test]
    fn a_batch_filled_by_a_multiline_record_stops_its_checkpoint_before_the_next() {
        // The record before a start line is sent when that line comes: a batch
        // filled then must not cover the start line.
        let record = format!("2024 {}\n  at {}\n", "m".repeat(495), "n".repeat(494));
        let block = block("multiline_start = '^\\d{4} '\nmultiline_timeout_ms = 3600000");
        let (_dir, mut t) = tailed(block, record.repeat(200).as_bytes());
        let mut sink = Exact::new(1, record.len() as u64);
        read_all(&mut t, &mut sink);
        // The last record is still collecting lines: before it.
        assert_eq!(sink.records, 199);
        assert_eq!(t.committed(), 199 * record.len() as u64);
        t.finish(&mut sink, &Metrics::new()).unwrap();
        t.spool(&mut sink, &Metrics::new()).unwrap();
        assert_eq!(t.committed(), 200 * record.len() as u64);
    }

    #[test]
    fn a_file_resumed_at_its_checkpoint_gives_the_rest_once() {
        let line = format!("{}\n", "r".repeat(99));
        let data = line.repeat(2000);
        let (dir, mut t) = tailed(block(""), data.as_bytes());
        let mut sink = Exact::new(1, 100);
        read_all(&mut t, &mut sink);
        let checkpoint = 1234 * 100;
        // Another start, at an earlier checkpoint: what follows it, once.
        let path = dir.path().join("a.log");
        let file = File::open(&path).unwrap();
        let id = t.id();
        let identity = Identity::new(id, id, path.clone(), path);
        let mut again = Tailed::new(block(""), identity, file, None, Files::default());
        again.start_at(checkpoint).unwrap();
        assert_eq!(
            (again.committed(), again.consumed()),
            (checkpoint, checkpoint)
        );
        let mut rest = Exact::new(1, 100);
        rest.records = 1234;
        read_all(&mut again, &mut rest);
        assert_eq!(rest.records, 2000);
        assert_eq!(rest.data.len(), (2000 - 1234) * 99);
        // copytruncate: the file shrinks under the reader.
        std::fs::write(dir.path().join("a.log"), b"x\n").unwrap();
        assert_eq!(again.truncated().unwrap(), Some(2));
    }
}
