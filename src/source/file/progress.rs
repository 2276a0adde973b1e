//! What became of each tailed file's bytes: how far it is read into the spool
//! and whether everything read has left the spool again, accepted by the
//! destination. `shardline files` reads it through the status endpoint; the
//! tailer reads it before it deletes a file (`delete_after_delivered`).
//!
//! # Why it is shaped this way
//!
//! A file's bytes reach the spool in batches, each written with the file's
//! checkpoint at the offset it reaches. Each batch is spooled with a delivery
//! receipt, which resolves when the last of its records leaves the spool: taken
//! by Kinesis or Firehose, or given up for good (refused, expired: written to
//! the dead-letter file), so that a file whose lines are refused still counts
//! as done. Lines skipped on purpose (empty, rejected as invalid UTF-8, the rest
//! of a truncated line) move the checkpoint without a record and are done at
//! once. A file's bytes are delivered up to the offset of the last batch whose
//! receipt, and every receipt before it, resolved.
//!
//! Receipts exist only for what this process spooled. A file resumed at a
//! checkpoint after a restart may have batches of the earlier run still in the
//! spool: those bytes count as delivered once no entry of an earlier run is
//! left in the stream's spool (its [`Gate`]). That is coarser than the file's
//! own batches, never wrong.
//!
//! State: a [`Files`] handle owns the progress of every file, by identity,
//! behind one lock: the tailer (its batches and passes) writes it, the status
//! endpoint reads it. It outlives a tailer (a reload starts another, which takes
//! over the progress of the files it finds again). A file that is closed stays
//! listed until everything read from it is delivered, then for
//! [`FORGET_AFTER`], so a script asking about a file rotated away a moment ago
//! learns it is done rather than that it is unknown.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot::error::TryRecvError;

use super::identity::FileId;
use super::{Gate, Receipt};

/// How long a closed file whose bytes are all delivered stays listed.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most closed files listed; the oldest closed go first past it.
const MAX_CLOSED: usize = 4096;

/// Where a file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Read as it grows, under an included path.
    Tailed,
    /// Rotated away or deleted: read to its end, then closed.
    Draining,
    /// Not read any more (read to its end after a rotation, deleted once
    /// delivered, or no longer included).
    Closed,
}

/// What a spool write of a file is waiting for.
#[derive(Debug)]
enum Wait {
    /// The position moved without records (or went back to read again).
    Moved,
    Receipt(Receipt),
    /// The dispatcher stopped first: the records stay spooled for the next run.
    Never,
}

/// One file's spool writes not known to be delivered yet.
#[derive(Default)]
pub(crate) struct Delivery {
    /// In order: the offset each write reaches and what it waits for.
    pending: VecDeque<(u64, Wait)>,
    /// Everything before this offset is delivered (or was never read).
    delivered_to: u64,
    /// Bytes an earlier run read: delivered once this opens.
    earlier: Option<Gate>,
}

impl Delivery {
    /// A file read from `start`; bytes before it were read by an earlier run
    /// (delivered once `earlier` opens), or skipped (`None`).
    pub(crate) fn new(start: u64, earlier: Option<Gate>) -> Delivery {
        Delivery {
            pending: VecDeque::new(),
            delivered_to: start,
            earlier,
        }
    }

    /// A spool write reaching `offset`, with the receipt of its records (`None`:
    /// a checkpoint alone).
    pub(crate) fn spooled(&mut self, offset: u64, receipt: Option<Receipt>) {
        let wait = receipt.map_or(Wait::Moved, Wait::Receipt);
        if matches!(wait, Wait::Moved) && self.pending.is_empty() {
            self.delivered_to = offset;
            return;
        }
        self.pending.push_back((offset, wait));
    }

    /// Takes the receipts that resolved, in order; returns whether everything
    /// spooled is delivered.
    pub(crate) fn poll(&mut self) -> bool {
        if self.earlier.as_ref().is_some_and(|open| open()) {
            self.earlier = None;
        }
        while let Some((offset, wait)) = self.pending.front_mut() {
            if let Wait::Receipt(rx) = wait {
                match rx.try_recv() {
                    Err(TryRecvError::Empty) => break,
                    // Refused for good counts as done: it is in the dead-letter
                    // file, and no retry will ever take it.
                    Ok(Ok(())) | Ok(Err(crate::DeliveryError::Rejected { .. })) => {}
                    Ok(Err(_)) | Err(TryRecvError::Closed) => {
                        *wait = Wait::Never;
                        break;
                    }
                }
            }
            if matches!(wait, Wait::Never) {
                break;
            }
            self.delivered_to = *offset;
            self.pending.pop_front();
        }
        self.is_done()
    }

    fn is_done(&self) -> bool {
        self.earlier.is_none() && self.pending.is_empty()
    }

    /// Every byte before this offset is delivered (0 while what an earlier run
    /// read is not known to be).
    pub(crate) fn delivered_to(&self) -> u64 {
        if self.earlier.is_some() {
            0
        } else {
            self.delivered_to
        }
    }
}

/// A file as the tailer last saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) stream: String,
    /// Where it is read now.
    pub(crate) path: PathBuf,
    /// The included path it was found at.
    pub(crate) tailed_path: PathBuf,
    pub(crate) stage: Stage,
    /// Its size when last looked at.
    pub(crate) size: u64,
    /// Everything before this offset is in the spool (or was skipped).
    pub(crate) read: u64,
}

/// One file's progress, as `shardline files` shows it.
#[derive(Debug, Clone)]
pub(crate) struct FileProgress {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) seen: Seen,
    /// Every byte before this offset is delivered.
    pub(crate) delivered_to: u64,
    /// Every byte read is delivered.
    pub(crate) delivered: bool,
    /// Spool writes still waiting for delivery.
    pub(crate) pending_batches: usize,
}

struct Tracked {
    seen: Seen,
    delivery: Delivery,
    /// When it was closed.
    closed_at: Option<Instant>,
}

/// The progress of every tailed file, shared by the tailer and the status
/// endpoint; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Files(Arc<Mutex<BTreeMap<FileId, Tracked>>>);

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").finish_non_exhaustive()
    }
}

impl Files {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<FileId, Tracked>> {
        // Every change is a few assignments: a panic cannot leave it half done.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A tailer starts: the files it does not open again are closed.
    pub(super) fn begin(&self) {
        let now = Instant::now();
        for t in self.lock().values_mut() {
            if t.closed_at.is_none() {
                t.seen.stage = Stage::Closed;
                t.closed_at = Some(now);
            }
        }
    }

    /// The tailer opened `id` at `start`. A file listed already (read by an
    /// earlier tailer of this process) keeps its progress; `earlier` gates the
    /// bytes before `start` that an earlier run read.
    pub(super) fn open(&self, id: FileId, seen: Seen, start: u64, earlier: Option<Gate>) {
        let mut files = self.lock();
        match files.get_mut(&id) {
            Some(t) => {
                t.seen = seen;
                t.closed_at = None;
            }
            None => {
                files.insert(
                    id,
                    Tracked {
                        seen,
                        delivery: Delivery::new(start, earlier),
                        closed_at: None,
                    },
                );
            }
        }
    }

    /// A spool write of `id` reaching `offset`.
    pub(super) fn spooled(&self, id: FileId, offset: u64, receipt: Option<Receipt>) {
        if let Some(t) = self.lock().get_mut(&id) {
            t.delivery.spooled(offset, receipt);
            t.seen.read = offset;
        }
    }

    /// What the tailer sees of `id` now.
    pub(super) fn seen(&self, id: FileId, update: impl FnOnce(&mut Seen)) {
        if let Some(t) = self.lock().get_mut(&id) {
            update(&mut t.seen);
        }
    }

    /// The tailer closed `id`.
    pub(super) fn closed(&self, id: FileId) {
        if let Some(t) = self.lock().get_mut(&id) {
            t.seen.stage = Stage::Closed;
            t.closed_at = Some(Instant::now());
        }
    }

    /// Whether every byte read from `id` is delivered.
    pub(super) fn delivered(&self, id: FileId) -> bool {
        self.lock().get_mut(&id).is_some_and(|t| t.delivery.poll())
    }

    /// Every file listed, by identity; closed files delivered long ago are
    /// forgotten on the way.
    pub(crate) fn snapshot(&self) -> Vec<FileProgress> {
        let now = Instant::now();
        let mut files = self.lock();
        let mut out = Vec::with_capacity(files.len());
        for (id, t) in files.iter_mut() {
            let delivered = t.delivery.poll();
            out.push(FileProgress {
                dev: id.dev,
                ino: id.ino,
                seen: t.seen.clone(),
                delivered_to: t.delivery.delivered_to(),
                delivered,
                pending_batches: t.delivery.pending.len(),
            });
        }
        forget(&mut files, now);
        out
    }
}

/// Drops the closed files delivered more than [`FORGET_AFTER`] ago, and the
/// oldest closed ones past [`MAX_CLOSED`].
fn forget(files: &mut BTreeMap<FileId, Tracked>, now: Instant) {
    files.retain(|_, t| match t.closed_at {
        Some(at) => !(t.delivery.is_done() && now.duration_since(at) >= FORGET_AFTER),
        None => true,
    });
    let mut closed: Vec<(Instant, FileId)> = files
        .iter()
        .filter_map(|(id, t)| t.closed_at.map(|at| (at, *id)))
        .collect();
    if closed.len() > MAX_CLOSED {
        closed.sort();
        for (_, id) in &closed[..closed.len() - MAX_CLOSED] {
            files.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeliveryResult;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::oneshot;

    fn receipt() -> (oneshot::Sender<DeliveryResult>, Receipt) {
        oneshot::channel()
    }

    #[test]
    fn bytes_are_delivered_up_to_the_first_batch_still_waiting() {
        let mut d = Delivery::new(0, None);
        let (tx1, rx1) = receipt();
        let (tx2, rx2) = receipt();
        d.spooled(100, Some(rx1));
        d.spooled(250, Some(rx2));
        // Skipped lines after a waiting batch wait with it.
        d.spooled(260, None);
        assert!(!d.poll());
        assert_eq!(d.delivered_to(), 0);
        // The second resolves first: nothing past the first is known yet.
        tx2.send(Ok(())).unwrap();
        assert!(!d.poll());
        assert_eq!(d.delivered_to(), 0);
        tx1.send(Ok(())).unwrap();
        assert!(d.poll());
        assert_eq!(d.delivered_to(), 260);
        // A position moved with nothing waiting is delivered at once.
        d.spooled(300, None);
        assert!(d.poll());
        assert_eq!(d.delivered_to(), 300);
    }

    #[test]
    fn refused_records_count_as_done_but_a_stopped_dispatcher_never_does() {
        let mut d = Delivery::new(0, None);
        let (tx1, rx1) = receipt();
        d.spooled(10, Some(rx1));
        tx1.send(Err(crate::DeliveryError::Rejected {
            code: "ValidationException".into(),
            message: "no".into(),
        }))
        .unwrap();
        assert!(d.poll());
        let (tx2, rx2) = receipt();
        d.spooled(20, Some(rx2));
        tx2.send(Err(crate::DeliveryError::NotDelivered)).unwrap();
        assert!(!d.poll());
        assert!(!d.poll());
        assert_eq!(d.delivered_to(), 10);
        // A receipt dropped unresolved is no delivery either.
        let mut d = Delivery::new(0, None);
        d.spooled(5, Some(receipt().1));
        assert!(!d.poll());
    }

    #[test]
    fn bytes_an_earlier_run_read_wait_for_its_entries() {
        let open = Arc::new(AtomicBool::new(false));
        let gate = open.clone();
        let mut d = Delivery::new(500, Some(Arc::new(move || gate.load(Ordering::Relaxed))));
        d.spooled(600, None);
        assert!(!d.poll());
        assert_eq!(d.delivered_to(), 0);
        open.store(true, Ordering::Relaxed);
        assert!(d.poll());
        assert_eq!(d.delivered_to(), 600);
    }

    #[test]
    fn a_file_read_again_from_its_start_waits_for_what_it_held_before() {
        // copytruncate: the checkpoint goes back to 0 behind a waiting batch.
        let mut d = Delivery::new(0, None);
        let (tx, rx) = receipt();
        d.spooled(1000, Some(rx));
        d.spooled(0, None);
        d.spooled(40, None);
        assert!(!d.poll());
        tx.send(Ok(())).unwrap();
        assert!(d.poll());
        assert_eq!(d.delivered_to(), 40);
    }

    fn seen(stage: Stage) -> Seen {
        Seen {
            stream: "s".into(),
            path: "/l/a.log".into(),
            tailed_path: "/l/a.log".into(),
            stage,
            size: 10,
            read: 10,
        }
    }

    #[test]
    fn a_closed_file_stays_listed_until_delivered_and_a_reload_keeps_progress() {
        let files = Files::default();
        let id = FileId { dev: 1, ino: 2 };
        files.open(id, seen(Stage::Tailed), 0, None);
        let (tx, rx) = receipt();
        files.spooled(id, 10, Some(rx));
        // A reload: the new tailer finds the file again and keeps its receipts.
        files.begin();
        assert_eq!(files.snapshot()[0].seen.stage, Stage::Closed);
        files.open(id, seen(Stage::Tailed), 10, None);
        assert!(!files.delivered(id));
        files.closed(id);
        assert_eq!(files.snapshot().len(), 1);
        tx.send(Ok(())).unwrap();
        let snap = files.snapshot();
        assert!(snap[0].delivered);
        assert_eq!((snap[0].dev, snap[0].ino, snap[0].delivered_to), (1, 2, 10));
        // Long after: forgotten.
        let mut map = files.lock();
        forget(&mut map, Instant::now() + FORGET_AFTER);
        assert!(map.is_empty());
    }
}
