//! Opening a file found at an included path: following a rename, leaving a file
//! too old alone, opening the handle safely, and starting at the checkpoint (if
//! it still matches), where the file was ignored, or where `read_from` says.
//!
//! State: none of its own; these are steps of the tailer (tailer.rs) on its
//! indexes of open files, called from its rescans, from the paths inotify names
//! and when a path comes to name another file.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{FileConfig, ReadFrom};
use crate::metrics::FileEvent;

use super::checkpoint::Position;
use super::identity::{end_position, FileId, Identity};
use super::tailed::Tailed;
use super::tailer::Tail;
use super::{FileError, Sink};

impl<S: Sink> Tail<S> {
    /// Opens `path` for `block` unless it is open already. Returns its identity.
    pub(super) fn discover(
        &mut self,
        path: &Path,
        block: usize,
    ) -> Result<Option<FileId>, FileError> {
        let Some(target) = self.admit(path, block) else {
            return Ok(None);
        };
        let meta = match std::fs::metadata(&target) {
            Ok(m) if m.is_file() => m,
            _ => return Ok(None),
        };
        let id = FileId::of(&meta);
        if let Some(&seq) = self.by_id.get(&id) {
            self.follow_rename(seq, id, path);
            return Ok(Some(id));
        }
        let config = self.blocks[block].clone();
        let stored = if self.starting {
            self.stored.remove(&(config.stream.clone(), id))
        } else {
            None
        };
        if self.ignore_if_old(&config, &meta, id, &stored) {
            return Ok(Some(id));
        }
        let Some((file, meta)) = self.open_handle(path, &target)? else {
            return Ok(None);
        };
        // The handle's identity wins over the path's (it may have been replaced in
        // between).
        let id = FileId::of(&meta);
        if self.by_id.contains_key(&id) {
            return Ok(Some(id));
        }
        self.start_tailing(path, config, file, meta.len(), id, stored)?;
        Ok(Some(id))
    }

    /// An open file found at another path: if its old path no longer names it, it
    /// was renamed to another included name (same file, same position).
    fn follow_rename(&mut self, seq: u64, id: FileId, path: &Path) {
        let t = self.files.get_mut(&seq).expect("by_id names open files");
        if t.path() == path {
            return;
        }
        let old_still_there = std::fs::metadata(t.path())
            .map(|m| FileId::of(&m) == id)
            .unwrap_or(false);
        if old_still_there {
            return;
        }
        if self.by_path.get(t.path()) == Some(&seq) {
            self.by_path.remove(t.path());
        }
        tracing::info!(from = %t.path().display(), to = %path.display(), "Tailed file was renamed; following it");
        t.renamed(path.to_owned());
        self.by_path.insert(path.to_owned(), seq);
    }

    /// Whether the file is older than `ignore_older` and is not opened; remembers
    /// where it would start if it is modified later.
    fn ignore_if_old(
        &mut self,
        config: &FileConfig,
        meta: &Metadata,
        id: FileId,
        stored: &Option<Position>,
    ) -> bool {
        let Some(limit) = config.ignore_older else {
            return false;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if age <= limit {
            return false;
        }
        if !self.ignored.contains_key(&id) {
            let pos = match (stored, self.starting, config.read_from) {
                (Some(p), _, _) if p.offset <= meta.len() => p.offset,
                (None, true, ReadFrom::End) => meta.len(),
                _ => 0,
            };
            if stored.is_some() {
                // Keep its checkpoint: the file is there, only idle.
                self.stored.remove(&(config.stream.clone(), id));
            }
            self.ignored.insert(id, pos);
        }
        true
    }

    /// Opens the file to tail and reads its metadata from the handle; `None` if it
    /// cannot be opened (logged once) or is not a regular file.
    fn open_handle(
        &mut self,
        path: &Path,
        target: &Path,
    ) -> Result<Option<(File, Metadata)>, FileError> {
        // Not through a link that appeared since `admit`, and never blocking on a
        // FIFO that replaced the file.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(target)
        {
            Ok(f) => f,
            Err(e) => {
                if self.skipped.insert(path.to_owned()) {
                    tracing::warn!(path = %path.display(), error = %e, "Cannot open a file to tail; trying again at each rescan, logged once");
                }
                return Ok(None);
            }
        };
        let meta = file.metadata().map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Ok(None);
        }
        self.skipped.remove(path);
        Ok(Some((file, meta)))
    }

    /// Starts tailing an opened file at its checkpoint (if it still matches), where
    /// it was ignored, or where `read_from` says.
    fn start_tailing(
        &mut self,
        path: &Path,
        config: Arc<FileConfig>,
        file: File,
        size: u64,
        id: FileId,
        stored: Option<Position>,
    ) -> Result<(), FileError> {
        let read_err = |source| FileError::Read {
            path: path.to_owned(),
            source,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let identity = Identity::new(id, id, path.to_owned(), path.to_owned());
        let mut t = Tailed::new(config.clone(), identity, file, None, self.progress.clone());
        // Before anything is spooled: a checkpoint found at start-up means an
        // earlier run may have left some of the file in the spool.
        self.track(&t, stored.is_some());
        let ignored_at = self.ignored.remove(&id);
        let (pos, resumed) = match stored {
            Some(p) => {
                if p.matches(t.file(), size).map_err(read_err)? {
                    (p.offset, true)
                } else {
                    self.metrics.file_event(FileEvent::Truncated);
                    tracing::warn!(
                        path = %path.display(),
                        position = p.offset,
                        size,
                        "File no longer matches its checkpoint (truncated while the agent was stopped, or a new file on a reused inode); reading it from the start"
                    );
                    let _ = self.read_copy_of(&mut t, &p)?;
                    (0, false)
                }
            }
            None => match ignored_at {
                Some(pos) if pos <= size => (pos, false),
                _ if self.starting && config.read_from == ReadFrom::End => {
                    (end_position(t.file(), size).unwrap_or(size), false)
                }
                _ => (0, false),
            },
        };
        t.start_at(pos).map_err(read_err)?;
        if resumed {
            self.progress.spooled(id, pos, None);
        } else {
            t.write_committed(&mut self.sink)?;
        }
        self.metrics.file_event(FileEvent::Opened);
        tracing::info!(
            path = %path.display(),
            position = pos,
            resumed,
            stream = %config.stream,
            "Tailing file"
        );
        self.by_id.insert(id, seq);
        self.by_path.insert(path.to_owned(), seq);
        self.files.insert(seq, t);
        Ok(())
    }
}
