//! Recovery from truncation and from what happened while the agent was stopped:
//! a file truncated under the reader (copytruncate) is read on from its copy,
//! then from its start; at start-up, checkpoints that matched no included file
//! are settled (a file rotated while stopped is finished, a copy is read, the
//! checkpoint of a file that is gone is removed).
//!
//! State: none of its own; these are steps of the tailer (tailer.rs) on its
//! indexes of open files and its start-up checkpoints. Callers: tailer.rs (each
//! service pass checks for truncation; start-up settles checkpoints) and open.rs
//! (a file that no longer matches its checkpoint).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::metrics::FileEvent;

use super::checkpoint::Position;
use super::identity::{find_file, read_head, FileId, Fingerprint, Identity};
use super::tailed::Tailed;
use super::tailer::Tail;
use super::{FileError, Sink};

impl<S: Sink> Tail<S> {
    /// Notices a truncation (copytruncate) and recovers what can be recovered.
    pub(super) fn check_truncation(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        let truncated = t.truncated().map_err(|source| FileError::Read {
            path: t.path().to_owned(),
            source,
        })?;
        let Some(size) = truncated else {
            return Ok(());
        };
        self.metrics.file_event(FileEvent::Truncated);
        tracing::warn!(
            path = %t.path().display(),
            position = t.read_pos(),
            size,
            "File was truncated (copytruncate); reading it again from the start"
        );
        let (committed, own_id) = (t.committed(), t.id());
        let copy = if t.fingerprint().is_empty() {
            None
        } else {
            let fingerprint = t.fingerprint();
            find_file(t.path(), |c, meta| {
                let id = FileId::of(meta);
                id != own_id
                    && meta.len() > committed
                    && !self.by_id.contains_key(&id)
                    && fingerprint.matches(c).unwrap_or(false)
            })
        };
        match copy {
            Some((copy_path, copy)) => self.drain_copy(t, copy, &copy_path, committed),
            None => {
                tracing::warn!(
                    path = %t.path().display(),
                    position = t.read_pos(),
                    "No copy of the truncated file was found: lines written after the last read and before the truncation, if any, are lost"
                );
                t.restart(&mut self.sink)
            }
        }
    }

    /// A file was truncated while the agent was stopped: reads what its copy (if
    /// there is one) holds past the checkpoint, under the file's checkpoint.
    pub(super) fn read_copy_of(&mut self, t: &mut Tailed, p: &Position) -> Result<bool, FileError> {
        if p.fingerprint_len == 0 {
            return Ok(false);
        }
        let len = p.fingerprint_len as usize;
        let copy = find_file(t.path(), |c, meta| {
            FileId::of(meta) != t.id()
                && meta.len() >= p.offset
                && !self.by_id.contains_key(&FileId::of(meta))
                && p.same_start(c)
        });
        if let Some((copy_path, copy)) = copy {
            let head = read_head(&copy, len.min(p.offset as usize)).unwrap_or_default();
            t.set_fingerprint(Fingerprint::from_head(head));
            self.drain_copy(t, copy, &copy_path, p.offset)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads `copy` from `from` to its end as the content of `t`, then points `t`
    /// at offset 0 of its own file with a checkpoint there.
    fn drain_copy(
        &mut self,
        t: &mut Tailed,
        copy: File,
        copy_path: &Path,
        from: u64,
    ) -> Result<(), FileError> {
        tracing::info!(
            path = %t.path().display(),
            copy = %copy_path.display(),
            from,
            "Reading the rest of a truncated file from its copy"
        );
        t.read_copy(copy, copy_path, from, &mut self.sink, &self.metrics)?;
        t.restart(&mut self.sink)
    }

    /// Start-up: checkpoints of files that were not found under an included path.
    pub(super) fn settle_unmatched(&mut self) -> Result<(), FileError> {
        let stored: Vec<((String, FileId), Position)> = self.stored.drain().collect();
        for ((stream, id), p) in stored {
            let block = self
                .blocks
                .iter()
                .position(|b| b.stream == stream && b.matches(&p.path));
            let Some(block) = block else {
                tracing::info!(
                    path = %p.path.display(),
                    stream = %stream,
                    "Removing the checkpoint of a file that is no longer tailed"
                );
                self.remove_checkpoint(&stream, id)?;
                continue;
            };
            self.settle(block, &stream, id, &p)?;
        }
        Ok(())
    }

    /// Start-up: the checkpoint `p` of file `id`, of a block that still includes
    /// its path, where no file was found.
    fn settle(
        &mut self,
        block: usize,
        stream: &str,
        id: FileId,
        p: &Position,
    ) -> Result<(), FileError> {
        let found = find_file(&p.path, |_, meta| FileId::of(meta) == id);
        match found {
            Some((path, file)) if path != p.path => {
                // Rotated while the agent was stopped: finish it. If it no
                // longer starts as it did, it was truncated (or is a new file on
                // the same inode) and is read from the start.
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                let verified = size >= p.offset && p.same_start(&file);
                self.open_draining(block, id, path, file, p, verified)
            }
            None if p.fingerprint_len > 0 => {
                // Truncated (copytruncate) and then deleted while the agent was
                // stopped: what was not read is in the copy, if there is one.
                let copy = find_file(&p.path, |f, meta| {
                    let other = FileId::of(meta);
                    !self.by_id.contains_key(&other) && meta.len() >= p.offset && p.same_start(f)
                });
                match copy {
                    Some((path, file)) => self.open_draining(block, id, path, file, p, true),
                    None => {
                        tracing::info!(path = %p.path.display(), stream = %stream, "Removing the checkpoint of a file that is gone");
                        self.remove_checkpoint(stream, id)
                    }
                }
            }
            _ => {
                tracing::info!(
                    path = %p.path.display(),
                    stream = %stream,
                    "Removing the checkpoint of a file that is gone or no longer tailed"
                );
                self.remove_checkpoint(stream, id)
            }
        }
    }

    /// Opens a file rotated (or copied) while the agent was stopped, to read it to
    /// its end from the checkpoint (from its start, or its copy, if it no longer
    /// matches) and close it.
    fn open_draining(
        &mut self,
        block: usize,
        id: FileId,
        path: PathBuf,
        file: File,
        p: &Position,
        verified: bool,
    ) -> Result<(), FileError> {
        tracing::info!(
            path = %path.display(),
            was = %p.path.display(),
            position = if verified { p.offset } else { 0 },
            "File was rotated while the agent was stopped; reading it to the end"
        );
        let now = Instant::now();
        let read_err = |source| FileError::Read {
            path: path.clone(),
            source,
        };
        let own = FileId::of(&file.metadata().map_err(read_err)?);
        let identity = Identity::new(own, id, path.clone(), p.path.clone());
        let mut t = Tailed::new(
            self.blocks[block].clone(),
            identity,
            file,
            Some(now),
            self.progress.clone(),
        );
        t.start_at(p.offset).map_err(read_err)?;
        self.track(&t, true);
        if !verified {
            self.metrics.file_event(FileEvent::Truncated);
            tracing::warn!(
                path = %path.display(),
                position = p.offset,
                "Rotated file no longer matches its checkpoint (truncated while the agent was stopped); reading it from the start"
            );
            if !self.read_copy_of(&mut t, p)? {
                t.restart(&mut self.sink)?;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(own, seq);
        self.files.insert(seq, t);
        Ok(())
    }
}
