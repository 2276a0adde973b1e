//! The backlog: the spool seen from outside, read-only.
//!
//! Those that only look at the spool hold a [`Backlog`]: the spool gauges
//! (`metrics`), `status`, the producer's pacing and its wait on a full spool,
//! and the service watchdog and the orphaned-stream warning (`agent`). It tells
//! how much waits, how old it is, whether writers are refused and whether the
//! group commits go through; it cannot append, read records back, retire or
//! close (that is intake's, its outlet's and the producer's). The producer makes
//! it when it opens the spool ([`Backlog::new`]) and hands it out
//! (`Producer::backlog`).

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::futures::Notified;

use crate::spool::{DamageReport, Refusing, Spool, SpoolError, WeakSpool};

/// What the spool holds, read-only; cheap to clone.
#[derive(Clone)]
pub struct Backlog {
    spool: Spool,
}

/// A [`Backlog`] that does not keep the spool open, for observers (the
/// metrics) that may outlive the producer.
#[derive(Clone)]
pub struct WeakBacklog(WeakSpool);

impl WeakBacklog {
    /// The backlog, while the spool is open.
    pub fn upgrade(&self) -> Option<Backlog> {
        self.0.upgrade().map(|spool| Backlog { spool })
    }
}

impl Backlog {
    /// The read-only view of `spool` (the producer, when it opens the spool).
    pub(crate) fn new(spool: Spool) -> Backlog {
        Backlog { spool }
    }

    /// Bytes of live entries held, in all streams.
    pub fn used_bytes(&self) -> u64 {
        self.spool.used_bytes()
    }

    /// Bytes of segment files, what counts against [`max_bytes`](Self::max_bytes).
    pub fn disk_bytes(&self) -> u64 {
        self.spool.disk_bytes()
    }

    /// Free bytes of the spool's filesystem, as last read (`None` in memory).
    pub fn disk_free_bytes(&self) -> Option<u64> {
        self.spool.disk_free_bytes()
    }

    /// Records held and not yet delivered, in all streams.
    pub fn records(&self) -> u64 {
        self.spool.records()
    }

    /// Most bytes of segment files the spool holds (`spool.max_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.spool.max_bytes()
    }

    /// Free space the spool leaves on its filesystem (`spool.min_free_bytes`).
    pub fn min_free_bytes(&self) -> u64 {
        self.spool.min_free_bytes()
    }

    /// Whether writers are refused room now (they wait, or are told so).
    pub fn refusing(&self) -> Option<Refusing> {
        self.spool.refusing()
    }

    /// Damaged frames found so far, and the records they held as far as known.
    pub fn damaged(&self) -> (u64, u64) {
        self.spool.damaged()
    }

    /// The damage report (`damaged/report`), until an operator deletes it.
    /// Blocking (a small file read).
    pub fn damage_report(&self) -> Option<DamageReport> {
        self.spool.damage_report()
    }

    /// How long the oldest record held has waited, over all streams; `None` when
    /// the spool is empty or memory-only.
    pub fn oldest_record_age(&self) -> Result<Option<Duration>, SpoolError> {
        self.spool.oldest_record_age()
    }

    /// Every stream the spool holds records of, with their count and the
    /// directory they are in (`None` in memory).
    pub fn held_streams(&self) -> Vec<(String, u64, Option<PathBuf>)> {
        self.spool.held_streams()
    }

    /// Whether the spool's group commits go through (the service watchdog is
    /// told only then). Blocking: call it from a blocking thread.
    pub fn heartbeat(&self) -> Result<(), SpoolError> {
        self.spool.heartbeat()
    }

    /// How long ago space was last freed (records delivered); `None` if never.
    pub fn since_freed(&self) -> Option<Duration> {
        self.spool.since_freed()
    }

    /// Waits until some space has been freed; the wait counts from the call.
    pub fn space_freed(&self) -> Notified<'_> {
        self.spool.space_freed()
    }

    /// A handle that does not keep the spool open.
    pub fn downgrade(&self) -> WeakBacklog {
        WeakBacklog(self.spool.downgrade())
    }
}
