//! Space accounting: what is held, what the files take, the disk's free space,
//! and what is written but not yet synced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::commit::CommitState;
use super::{SpoolError, SpoolOptions};

/// Space accounting, shared by all streams.
pub(crate) struct Space {
    pub(super) max_bytes: u64,
    pub(super) min_free_bytes: u64,
    /// Bytes of live entries in all streams (what is held).
    pub(super) used_bytes: AtomicU64,
    /// Bytes of segment files (what counts against `max_bytes`).
    pub(super) disk_bytes: AtomicU64,
    /// Free bytes of the filesystem, as last read, less what was written since.
    pub(super) disk_free: AtomicU64,
    /// Records not yet delivered, in all streams.
    pub(super) records: AtomicU64,
    /// Writes so far (the group commit's clock).
    pub(super) writes: AtomicU64,
    /// Woken whenever space is freed.
    pub(super) freed: Notify,
    /// When space was last freed (Unix milliseconds; 0: never).
    pub(super) freed_at_ms: AtomicU64,
    /// Damaged frames found, and the records they held.
    pub(super) damaged_frames: AtomicU64,
    pub(super) lost_records: AtomicU64,
    /// Bytes written since the commit that last covered them. Writers wait
    /// past `unsynced_limit`: a writer faster than the disk can sync would
    /// otherwise push every commit (and the removal of delivered segments, and
    /// what a power loss takes) further behind.
    pub(super) unsynced: AtomicU64,
    pub(super) unsynced_limit: u64,
    /// The commit thread, asked for a commit by a writer that waits.
    pub(super) commit: std::sync::OnceLock<Arc<CommitState>>,
    /// The last write refused for space: when (Unix ms; 0 once a write went
    /// in since) and why. A write needs room for itself above
    /// `min_free_bytes`, so writers can wait while the free space is still
    /// above the reserve: this says so.
    pub(super) refused_at_ms: AtomicU64,
    pub(super) refused_disk: std::sync::atomic::AtomicBool,
}

/// Why writers are refused room now, as far as the last attempts tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusing {
    /// The spool's files reached `max_bytes`.
    SpoolFull,
    /// The filesystem has no room above `min_free_bytes` for the next write.
    DiskFull,
}

impl Refusing {
    /// As `status` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusing::SpoolFull => "spool_full",
            Refusing::DiskFull => "disk_full",
        }
    }
}

/// A refusal older than this without another one says nothing of now: the
/// writer that was refused has given up, or space came back.
const REFUSAL_FRESH_MS: u64 = 10_000;

impl Space {
    /// Takes room for `len` bytes, or says why there is none.
    pub(super) fn reserve(&self, len: u64) -> Result<(), SpoolError> {
        let used = self.disk_bytes.fetch_add(len, Ordering::AcqRel);
        if used + len > self.max_bytes {
            self.disk_bytes.fetch_sub(len, Ordering::AcqRel);
            self.refused(false);
            return Err(SpoolError::Full {
                used,
                max: self.max_bytes,
                needed: len,
            });
        }
        let free = self.disk_free.load(Ordering::Relaxed);
        if free < self.min_free_bytes.saturating_add(len) {
            self.disk_bytes.fetch_sub(len, Ordering::AcqRel);
            self.refused(true);
            return Err(SpoolError::DiskFull {
                free,
                reserve: self.min_free_bytes,
                needed: len,
            });
        }
        let unsynced = self.unsynced.load(Ordering::Relaxed);
        if unsynced > self.unsynced_limit {
            self.disk_bytes.fetch_sub(len, Ordering::AcqRel);
            if let Some(c) = self.commit.get() {
                c.ask();
            }
            return Err(SpoolError::Behind {
                unsynced,
                limit: self.unsynced_limit,
            });
        }
        self.disk_free.fetch_sub(len, Ordering::Relaxed);
        if self.refused_at_ms.load(Ordering::Relaxed) != 0 {
            self.refused_at_ms.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    fn refused(&self, disk: bool) {
        self.refused_disk.store(disk, Ordering::Relaxed);
        self.refused_at_ms.store(super::now_ms(), Ordering::Relaxed);
    }

    /// Whether writers are being refused room now.
    pub(super) fn refusing(&self) -> Option<Refusing> {
        let at = self.refused_at_ms.load(Ordering::Relaxed);
        if at == 0 || super::now_ms().saturating_sub(at) > REFUSAL_FRESH_MS {
            return None;
        }
        Some(if self.refused_disk.load(Ordering::Relaxed) {
            Refusing::DiskFull
        } else {
            Refusing::SpoolFull
        })
    }

    pub(super) fn unreserve(&self, len: u64) {
        self.disk_bytes.fetch_sub(len, Ordering::AcqRel);
        self.disk_free.fetch_add(len, Ordering::Relaxed);
    }
}

pub(super) fn new_space(options: &SpoolOptions) -> Space {
    Space {
        max_bytes: options.max_bytes,
        min_free_bytes: options.min_free_bytes,
        used_bytes: AtomicU64::new(0),
        disk_bytes: AtomicU64::new(0),
        disk_free: AtomicU64::new(u64::MAX / 2),
        records: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        freed: Notify::new(),
        freed_at_ms: AtomicU64::new(0),
        damaged_frames: AtomicU64::new(0),
        lost_records: AtomicU64::new(0),
        unsynced: AtomicU64::new(0),
        unsynced_limit: segment_bytes(options),
        commit: std::sync::OnceLock::new(),
        refused_at_ms: AtomicU64::new(0),
        refused_disk: std::sync::atomic::AtomicBool::new(false),
    }
}

/// The size at which segments roll: `segment_bytes`, at most an eighth of
/// `max_bytes`, at least 4 KiB.
pub(super) fn segment_bytes(options: &SpoolOptions) -> u64 {
    options
        .segment_bytes
        .min(options.max_bytes / 8)
        .max(4 << 10)
}
