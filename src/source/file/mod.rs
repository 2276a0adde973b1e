//! File tailing source: the files matched by each `[[file]]` block's globs, read as
//! they grow, across rotation, with the read position stored in the same atomic
//! spool write as the records read up to it.
//!
//! # Why it is shaped this way
//!
//! **Exactly-once from a file into the spool.** A file's checkpoint (its read
//! position) is written by `Producer::spool_batch` in the *same* spool frame as
//! the records read up to it. After a crash the spool holds either both or neither, so
//! the file is read again from exactly the first byte that did not reach the spool.
//! The position is a *consumed* offset: the end of the last line that went into a
//! spooled record (or was deliberately skipped). A partial last line (no newline
//! yet), a multiline record still collecting lines, a line being truncated, and a
//! line whose records are not all in the batch yet (a batch that fills while a
//! line is split, or with the record a multiline start line ends) are all *after*
//! it, so they are read again after a crash, never lost or doubled.
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
//!
//! # Layout
//!
//! Each file is a part that owns its state, or a step of the tailer; no file
//! reaches into another's fields:
//!
//! - `tailer.rs`: [`Tail`], the loop over every open file. Owns the open files and
//!   their indexes (by identity, by path), the files ignored for their age, the
//!   checkpoints read at start-up and the skipped paths. Driven by `runner.rs`,
//!   tests and tools.
//! - `open.rs` (opening a file found at a path) and `recovery.rs` (truncation,
//!   files rotated or truncated while the agent was stopped): steps of the tailer,
//!   with no state of their own.
//! - `tailed.rs`: `Tailed`, one open file: the four parts below, private, and when
//!   it is read, drained or retried. Owned by the tailer, which calls its methods.
//! - `identity.rs`: `Identity`, a file's device and inode, the checkpoint it
//!   carries, its paths and the fingerprint of its first bytes; finding a file
//!   again.
//! - `reader.rs`: `Reader`, the handle, the read buffer and the offsets; the only
//!   code that moves an offset (reading, taking lines, seeking on a reset).
//! - `framer/`: `Framer`, what is between lines (a multiline record collecting
//!   lines, a line being truncated or split) and the line policies; takes bytes
//!   from the reader and gives records with the consumed offset they reach.
//! - `batch.rs`: `Batch`, the records not yet spooled, their counts and the
//!   spooled checkpoint; written to the sink with the checkpoint at the consumed
//!   offset, so a checkpoint covers exactly the lines of the records before it.
//! - `checkpoint.rs`: `Position`, a checkpoint's value. `keys.rs`: partition keys.
//!   `discovery.rs`: which paths are tailed. `memory.rs`: [`MemorySink`].
//!   `runner.rs`: the thread, and the producer as a [`Sink`].
//! - `progress.rs`: [`Files`], each file's progress into the spool and out of
//!   it (the receipts of its batches), shared with the status endpoint
//!   (`shardline files`). `cleanup.rs`: `delete_after_delivered`, a step of the
//!   tailer, and its rules; `writers.rs`: whether another process has a file
//!   open for writing.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::metrics::Source;
use crate::producer::{Checkpoint, ProduceError};
use crate::record::UserRecord;

mod batch;
mod checkpoint;
mod cleanup;
mod discovery;
mod framer;
mod identity;
mod keys;
mod memory;
mod open;
mod progress;
mod reader;
mod recovery;
mod runner;
mod tailed;
mod tailer;
#[cfg(test)]
mod tests;
mod writers;

pub use memory::MemorySink;
pub(crate) use progress::{FileProgress, Files, Stage};
pub(crate) use runner::spawn;
pub use tailer::Tail;

/// Source kind, as it appears in metrics.
pub(crate) const KIND: Source = Source::File;
/// Bytes of a file's start that make its fingerprint.
pub(crate) const FINGERPRINT_BYTES: usize = 256;
/// Size of one read.
pub(crate) const READ_BYTES: usize = 128 * 1024;
/// A batch (one spool entry) is cut at this many bytes, like the socket source's.
pub(crate) const BATCH_BYTES: usize = super::socket::BATCH_BYTES;
/// Most bytes read from one file before the others get a turn.
pub(crate) const READ_BUDGET_BYTES: u64 = 8 << 20;
/// inotify events queued for the tailer thread; past this they are dropped and a
/// rescan is scheduled (events are hints, the rescan finds everything).
pub(crate) const EVENT_CHANNEL: usize = 4096;
/// Longest partition key this source makes, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 256;
/// `read_from = "end"` starts after the last newline within this many bytes of the
/// end, so a half-written last line is not sent as a fragment.
const END_LOOKBACK_BYTES: u64 = 64 * 1024;
/// Wait before reading a file again after a read or spool error.
const RETRY: Duration = Duration::from_secs(1);
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
/// may block (a full spool); an empty `records` writes the checkpoint alone. It
/// returns the receipt that resolves when the records have left the spool
/// (`None`: nothing to wait for, as in memory).
pub trait Sink {
    fn spool(
        &mut self,
        stream: &str,
        records: Vec<UserRecord>,
        checkpoint: &Checkpoint,
    ) -> Result<Option<Receipt>, ProduceError>;
    fn checkpoints(&mut self, stream: &str) -> Result<Vec<Checkpoint>, ProduceError>;
    fn remove_checkpoint(&mut self, stream: &str, name: &[u8]) -> Result<(), ProduceError>;
    /// Whether what an earlier run of the agent spooled for `stream` has left
    /// the spool (`None`: nothing of an earlier run can be there).
    fn earlier_runs(&mut self, _stream: &str) -> Option<Gate> {
        None
    }
}

/// The receipt of a batch's records, resolved when they have left the spool.
pub(crate) type Receipt = tokio::sync::oneshot::Receiver<crate::DeliveryResult>;
/// Whether every entry an earlier run left in a stream's spool has left it.
pub(crate) type Gate = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// An error with its causes, for the log.
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
