//! Deleting one-shot files once they are delivered (`delete_after_delivered`).
//!
//! A file is deleted only when every rule below holds, checked in this order
//! (cheap ones first) at each pass of the tailer, and the path is checked again
//! right before the unlink:
//!
//! 1. its block asks for it, and the file is not draining (a file rotated away
//!    or deleted is no longer at its path: logrotate or its owner decides);
//! 2. it is read under its own identity (not a copy of a truncated file);
//! 3. its path never came to name another file or none while tailed (a path
//!    that rotates is a log's, not a one-shot file's);
//! 4. it is not empty, and it is read to its end: every byte is in the spool,
//!    no partial last line or multiline record held back;
//! 5. it was not modified for `rotate_wait_ms` (its mtime), the quiet period;
//! 6. every byte read from it has left the spool: accepted by the destination
//!    or refused for good and written to the dead-letter file, including what
//!    an earlier run of the agent read;
//! 7. its path still names this very file (device and inode), and it is a
//!    regular file, not a link;
//! 8. no other process holds it open for writing, as far as `/proc` tells
//!    (writers.rs); a file found so is looked at again only after
//!    [`WRITER_BACKOFF`].
//!
//! Then the path is unlinked; the open handle drains as after any deletion
//! (nothing is left to read) and the file's checkpoint goes when it closes.
//!
//! State: a [`Deletions`] is owned by the tailer (tailer.rs): the paths that
//! rotated and the files not to look at again before a time. The tailer calls
//! [`Deletions::delete_if_delivered`] with each open file after its pass.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::metrics::{FileEvent, Metrics};

use super::identity::FileId;
use super::progress::{Files, Stage};
use super::tailed::Tailed;
use super::writers::{writers, Writers};

/// Wait before a file found open for writing, or that could not be deleted, is
/// looked at again (the scan of `/proc` is not free).
pub(super) const WRITER_BACKOFF: Duration = Duration::from_secs(10);
/// How often the tailer wakes while a file waits to be deleted.
pub(super) const DELETE_POLL: Duration = Duration::from_secs(1);

/// Why a file is kept (for now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kept {
    NotAsked,
    Draining,
    Copy,
    PathRotated,
    Empty,
    NotReadToEnd,
    Written,
    NotDelivered,
    PathChanged,
    Writer { pid: u32 },
    Later,
}

/// The tailer's memory for deletions.
#[derive(Debug, Default)]
pub(super) struct Deletions {
    /// Included paths that came to name another file or none (a rotation).
    rotated: HashSet<PathBuf>,
    /// Files not looked at again before a time (a writer held them).
    not_before: HashMap<FileId, Instant>,
}

impl Deletions {
    /// `path` came to name another file, or none.
    pub(super) fn rotated(&mut self, path: &Path) {
        self.rotated.insert(path.to_owned());
    }

    /// Forgets files no longer open.
    pub(super) fn retain(&mut self, open: impl Fn(&FileId) -> bool) {
        self.not_before.retain(|id, _| open(id));
    }

    /// Deletes `t` if every rule allows it; returns whether it did.
    pub(super) fn delete_if_delivered(
        &mut self,
        t: &mut Tailed,
        progress: &Files,
        metrics: &Metrics,
        now: Instant,
    ) -> bool {
        match self.may_delete(t, progress, now) {
            Ok(()) => {}
            Err(Kept::Writer { pid }) => {
                tracing::debug!(path = %t.path().display(), pid, "Not deleting a delivered file: a process has it open for writing");
                return false;
            }
            Err(_) => return false,
        }
        if let Err(e) = std::fs::remove_file(t.path()) {
            tracing::warn!(path = %t.path().display(), error = %e, "Deleting a delivered file failed; trying again later");
            self.not_before.insert(t.id(), now + WRITER_BACKOFF);
            return false;
        }
        metrics.file_event(FileEvent::Deleted);
        tracing::info!(
            path = %t.path().display(),
            size = t.committed(),
            "Deleted a file read to its end, delivered in full and not written for rotate_wait_ms"
        );
        t.start_draining(now);
        progress.seen(t.checkpoint_id(), |s| s.stage = Stage::Draining);
        true
    }

    /// The rules, in order; `Err` names the first that keeps the file.
    fn may_delete(&mut self, t: &Tailed, progress: &Files, now: Instant) -> Result<(), Kept> {
        let block = t.block();
        if !block.delete_after_delivered {
            return Err(Kept::NotAsked);
        }
        if t.is_draining() {
            return Err(Kept::Draining);
        }
        if t.id() != t.checkpoint_id() {
            return Err(Kept::Copy);
        }
        if self.rotated.contains(t.path()) {
            return Err(Kept::PathRotated);
        }
        if self.not_before.get(&t.id()).is_some_and(|&at| now < at) {
            return Err(Kept::Later);
        }
        let meta = t.file().metadata().map_err(|_| Kept::NotReadToEnd)?;
        if meta.len() == 0 {
            return Err(Kept::Empty);
        }
        if !t.read_to_end().unwrap_or(false) {
            return Err(Kept::NotReadToEnd);
        }
        let quiet = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age >= block.rotate_wait);
        if !quiet {
            return Err(Kept::Written);
        }
        if !progress.delivered(t.checkpoint_id()) {
            return Err(Kept::NotDelivered);
        }
        let at_path = std::fs::symlink_metadata(t.path())
            .ok()
            .filter(|m| m.file_type().is_file())
            .map(|m| FileId::of(&m));
        if at_path != Some(t.id()) {
            return Err(Kept::PathChanged);
        }
        if let Writers::Found { pid } = writers(Path::new("/proc"), t.id()) {
            self.not_before.insert(t.id(), now + WRITER_BACKOFF);
            return Err(Kept::Writer { pid });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tokio::sync::oneshot;

    use crate::config::FileConfig;
    use crate::metrics::Metrics;
    use crate::producer::{Checkpoint, ProduceError};
    use crate::record::UserRecord;
    use crate::DeliveryResult;

    use super::super::memory::MemorySink;
    use super::super::tailer::Tail;
    use super::super::{Receipt, Sink};

    /// A sink whose batches are delivered when the test says so.
    #[derive(Clone, Default)]
    struct Held {
        memory: MemorySink,
        receipts: Arc<Mutex<Vec<oneshot::Sender<DeliveryResult>>>>,
    }

    impl Held {
        fn deliver_all(&self) {
            for tx in self.receipts.lock().unwrap().drain(..) {
                tx.send(Ok(())).unwrap();
            }
        }
    }

    impl Sink for Held {
        fn spool(
            &mut self,
            stream: &str,
            records: Vec<UserRecord>,
            c: &Checkpoint,
        ) -> Result<Option<Receipt>, ProduceError> {
            let empty = records.is_empty();
            self.memory.spool(stream, records, c)?;
            if empty {
                return Ok(None);
            }
            let (tx, rx) = oneshot::channel();
            self.receipts.lock().unwrap().push(tx);
            Ok(Some(rx))
        }
        fn checkpoints(&mut self, stream: &str) -> Result<Vec<Checkpoint>, ProduceError> {
            self.memory.checkpoints(stream)
        }
        fn remove_checkpoint(&mut self, stream: &str, name: &[u8]) -> Result<(), ProduceError> {
            self.memory.remove_checkpoint(stream, name)
        }
    }

    fn parse(dir: &std::path::Path, extra: &str) -> Result<FileConfig, String> {
        let text = format!(
            "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\ninclude = [\"{}/*.json\"]\n{extra}",
            dir.display()
        );
        crate::config::parse(&text, std::path::Path::new("t.toml"))
            .map(|mut c| c.files.remove(0))
            .map_err(|e| e.to_string())
    }

    fn append(path: &std::path::Path, data: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(data).unwrap();
    }

    #[test]
    fn a_file_goes_only_once_read_to_its_end_delivered_and_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        append(&path, b"{\"n\":1}\n{\"n\":2");
        let block = parse(
            dir.path(),
            "delete_after_delivered = true\nrotate_wait_ms = 200",
        )
        .unwrap();
        let sink = Held::default();
        let mut tail = Tail::start(vec![block], sink.clone(), Metrics::new()).unwrap();
        tail.poll().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Quiet and delivered, but its last line has no newline yet.
        sink.deliver_all();
        tail.poll().unwrap();
        assert!(path.exists());
        // Ended: read, not yet delivered.
        append(&path, b"}\n");
        tail.poll().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        tail.poll().unwrap();
        assert!(path.exists());
        assert_eq!(sink.memory.lines(), ["{\"n\":1}", "{\"n\":2}"]);
        // Delivered, but written a moment ago.
        sink.deliver_all();
        append(&path, b"{\"n\":3}\n");
        tail.poll().unwrap();
        sink.deliver_all();
        tail.poll().unwrap();
        assert!(path.exists(), "deleted before its quiet period");
        std::thread::sleep(std::time::Duration::from_millis(300));
        tail.poll().unwrap();
        assert!(!path.exists(), "read, delivered and quiet: deleted");
        assert_eq!(sink.memory.lines().len(), 3);
    }

    #[test]
    fn nothing_is_deleted_at_a_path_that_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        append(&path, b"old\n");
        let block = parse(
            dir.path(),
            "delete_after_delivered = true\nrotate_wait_ms = 50",
        )
        .unwrap();
        let sink = Held::default();
        let mut tail = Tail::start(vec![block], sink.clone(), Metrics::new()).unwrap();
        tail.poll().unwrap();
        // A new file at the path: a log that rotates, not a one-shot file.
        std::fs::rename(&path, dir.path().join("a.json.1")).unwrap();
        append(&path, b"new\n");
        tail.poll().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        sink.deliver_all();
        tail.poll().unwrap();
        assert!(path.exists() && dir.path().join("a.json.1").exists());
    }

    #[test]
    fn validate_refuses_deletion_where_it_would_lose_lines_or_take_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let e = parse(
            dir.path(),
            "delete_after_delivered = true\nread_from = \"end\"",
        )
        .unwrap_err();
        assert!(e.contains("read_from = \"end\""), "{e}");
        let text = "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\ninclude = [\"/var/log/syslog\"]\ndelete_after_delivered = true\n";
        let e = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap_err();
        assert!(
            e.to_string().contains("\"/var/log/syslog\" names one file"),
            "{e}"
        );
        let e = parse(
            dir.path(),
            "delete_after_delivered = true\nrotate_wait_ms = 0",
        )
        .unwrap_err();
        assert!(e.contains("rotate_wait_ms of at least 1"), "{e}");
        assert!(parse(dir.path(), "delete_after_delivered = true").is_ok());
    }
}
