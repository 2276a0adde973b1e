//! The files of a stream's sealed segments and acks, opened on demand and kept
//! open a few at a time.
//!
//! A descriptor per segment and per ack file ran the process out of them (with
//! 1 MiB segments and a soft limit of 1,024, at some 1,100 segments every
//! commit failed with EMFILE, and so did the next start). Only the open segment
//! holds its file; the others are opened when read, copied forward, acked or
//! synced, through this small cache, so a stream holds at most
//! [`OPEN_FILES`] of them whatever the spool's size. Running out anyway (other
//! parts of the process) empties the cache and tries once more.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::storage::{is_out_of_descriptors, Storage, StoredFile};

/// Files a stream keeps open besides its open segment and its manifest. Reads
/// go mostly to the oldest segments, acks to the ones being delivered: a few
/// cover both.
pub(crate) const OPEN_FILES: usize = 8;

#[derive(Default)]
pub(in crate::spool) struct FileCache {
    /// Least recently used first.
    open: VecDeque<(PathBuf, Arc<dyn StoredFile>)>,
}

impl FileCache {
    /// The file at `path`, opened if it is not (created when `create`).
    pub(in crate::spool) fn get(
        &mut self,
        storage: &dyn Storage,
        path: &Path,
        create: bool,
    ) -> io::Result<Arc<dyn StoredFile>> {
        if let Some(f) = self.take(path) {
            self.put(path, f.clone());
            return Ok(f);
        }
        let f = match storage.open(path, create) {
            Err(e) if is_out_of_descriptors(&e) => {
                // Ours go first: the spool must keep working.
                self.open.clear();
                storage.open(path, create)?
            }
            other => other?,
        };
        self.put(path, f.clone());
        Ok(f)
    }

    /// The file at `path` if it is open.
    pub(in crate::spool) fn peek(&self, path: &Path) -> Option<Arc<dyn StoredFile>> {
        self.open
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, f)| f.clone())
    }

    /// Keeps `file` open as the most recently used, closing the least recently
    /// used past the bound.
    pub(in crate::spool) fn put(&mut self, path: &Path, file: Arc<dyn StoredFile>) {
        self.take(path);
        if self.open.len() >= OPEN_FILES {
            self.open.pop_front();
        }
        self.open.push_back((path.to_owned(), file));
    }

    /// Closes the file at `path` (removed or moved).
    pub(in crate::spool) fn take(&mut self, path: &Path) -> Option<Arc<dyn StoredFile>> {
        let i = self.open.iter().position(|(p, _)| p == path)?;
        self.open.remove(i).map(|(_, f)| f)
    }
}
