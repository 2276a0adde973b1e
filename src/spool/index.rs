//! The spool's index in sled: the catalog of segment files.
//!
//! Segments are the truth about records; the catalog remembers which segment
//! files should exist, so one that disappeared (deleted by hand, lost with a
//! damaged filesystem) is reported instead of silently taken as delivered. It is
//! small, written by the spool's flusher thread only (one writer), flushed
//! synchronously and then fsynced by us (sled's own flush is `sync_file_range`),
//! never on the path that answers a socket client, and it never holds payload.
//! An index that cannot be opened is moved aside and rebuilt from the segments.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::frame::VERSION;

/// A change to the catalog, queued by writers and applied by the flusher.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CatalogEvent {
    Created(u64),
    Removed(u64),
}

pub(crate) struct Index {
    db: sled::Db,
    path: PathBuf,
}

fn key(stream: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 13);
    k.extend_from_slice(b"seg/");
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Index {
    pub(crate) fn open(path: &Path, cache_capacity: u64) -> Result<Index, sled::Error> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            // The flusher flushes it itself: no background flush on sled's pool.
            .flush_every_ms(None)
            .open()?;
        Ok(Index {
            db,
            path: path.to_owned(),
        })
    }

    /// The segments the catalog says `stream` has.
    pub(crate) fn segments(&self, stream: &str) -> Result<BTreeSet<u64>, sled::Error> {
        let mut prefix = b"seg/".to_vec();
        prefix.extend_from_slice(stream.as_bytes());
        prefix.push(0);
        let mut out = BTreeSet::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if let Some(seq) = k.get(prefix.len()..).and_then(|s| s.try_into().ok()) {
                out.insert(u64::from_be_bytes(seq));
            }
        }
        Ok(out)
    }

    pub(crate) fn apply(&self, stream: &str, events: &[CatalogEvent]) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for e in events {
            match *e {
                CatalogEvent::Created(seq) => batch.insert(key(stream, seq), &[VERSION]),
                CatalogEvent::Removed(seq) => batch.remove(key(stream, seq)),
            }
        }
        self.db.apply_batch(batch)
    }

    /// Replaces a stream's catalog with `segments` (after a rebuild).
    pub(crate) fn reset(&self, stream: &str, segments: &BTreeSet<u64>) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for seq in self.segments(stream)? {
            batch.remove(key(stream, seq));
        }
        for &seq in segments {
            batch.insert(key(stream, seq), &[VERSION]);
        }
        self.db.apply_batch(batch)
    }

    /// Flushes, then fsyncs sled's log file (sled's flush does not reach the disk
    /// cache). Called by the flusher thread only.
    pub(crate) fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush()?;
        if let Ok(f) = std::fs::File::open(self.path.join("db")) {
            f.sync_all()?;
        }
        Ok(())
    }
}
