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
