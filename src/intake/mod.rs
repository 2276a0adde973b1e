//! Intake: the only door to the spool, per stream. A batch is written to the
//! spool here and either handed over to the stream's dispatcher in memory or
//! *spilled*: left in the spool for the dispatcher to read back.
//!
//! The spool is the queue; memory holds a window of it. A batch just written by a
//! source is handed over in memory while the dispatcher keeps up
//! ([`Intake::push`]). When the hand-over channel is full, or at start-up, the
//! stream spills: new batches go to the spool only, and the dispatcher reads them
//! back in id order through its [`Outlet`], as far as its memory budget allows,
//! until it has caught up. The switch between the two paths is decided under one
//! lock ([`Shared`]) by both sides, so no entry is loaded twice and none is
//! skipped. Replay after a restart is just the spilled path starting at id 0. A
//! memory-only spool keeps nothing that could wait: it refuses a spill as full,
//! so the same path hands every batch over, and waiting for room in the
//! hand-over is the backpressure.
//!
//! Receipts are registered here, before the dispatcher can see an entry, and
//! resolved by delivery when the entry's last record is retired.
//!
//! # Who owns what, who calls it
//!
//! - [`Intake`] (this file): a stream's spool writes, the hand-over's sending
//!   side and the switch; called by the producer only (sources reach it through
//!   the producer).
//! - [`Outlet`] and [`Acks`] (`outlet.rs`): the dispatcher's side, the
//!   hand-over's receiving side, the reads of spilled entries and the way acks
//!   retire entries; called by `deliver` only.
//! - [`Receipts`] (`receipts.rs`): the waiting receipts, shared by both sides.
//! - [`Backlog`] (`backlog.rs`): the spool seen read-only, for metrics, status,
//!   pacing and the watchdog.
//! - [`Checkpoint`] (`checkpoint.rs`): the read position sources speak of,
//!   turned into the spool's at this door.
//! - `redrive/`: `shardline redrive`, a dead-letter file written back through
//!   the intakes once, with a checkpoint of its own (through the running
//!   agent's, or intakes opened on the spool when no agent holds it).

mod backlog;
mod checkpoint;
mod outlet;
mod receipts;
pub(crate) mod redrive;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::record::UserRecord;
use crate::spool::{Entry, SpoolError, StreamSpool};

/// The spool's clock (milliseconds since the Unix epoch), for delivery's
/// record ages.
pub(crate) use crate::spool::now_ms;
pub use backlog::{Backlog, WeakBacklog};
pub use checkpoint::Checkpoint;
pub(crate) use outlet::{Acks, Outlet};
pub(crate) use receipts::Receipts;
pub use receipts::{DeliveryError, DeliveryResult};

/// Batches handed over in memory per stream before the stream spills to the spool:
/// enough to absorb bursts of a few MiB without a spool read, small enough that the
/// channel itself is a negligible part of memory.
const HANDOVER_BATCHES: usize = 64;

/// A batch handed to a dispatcher.
pub(crate) struct Loaded {
    pub(crate) id: u64,
    pub(crate) bytes: u64,
    pub(crate) records: Vec<UserRecord>,
    /// The records' hash keys when the sender computed them (on its own thread, so
    /// the MD5s of many senders run in parallel); empty: computed at load.
    pub(crate) hash_keys: Vec<u128>,
    /// Records delivered before a restart (a bitmap), for entries read back.
    pub(crate) delivered: Option<Vec<u64>>,
    pub(crate) spooled_at_ms: u64,
}

impl From<Entry> for Loaded {
    fn from(e: Entry) -> Self {
        Loaded {
            id: e.id,
            bytes: e.bytes,
            records: e.records,
            hash_keys: Vec::new(),
            delivered: e.delivered,
            spooled_at_ms: e.spooled_at_ms,
        }
    }
}

/// Which path new batches take; shared by the intake and the outlet under one lock.
#[derive(Debug)]
struct Shared {
    /// New batches go to the spool only; the dispatcher reads them back.
    spilling: bool,
    /// Next spool id the dispatcher reads while spilling.
    cursor: u64,
    /// Highest id spilled so far.
    last_spilled: u64,
}

/// The switch of a stream whose spool keeps what waits; `None` for a
/// memory-only spool, which never spills (so there is nothing to decide).
type Switch = Option<Arc<Mutex<Shared>>>;

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().expect("intake lock poisoned")
}

/// The way into one stream's pipeline: writes a batch to the spool and hands it to
/// the dispatcher. Owns the stream's spool writes; the producer holds one per
/// stream and is its only caller.
#[derive(Clone)]
pub(crate) struct Intake {
    spool: StreamSpool,
    tx: mpsc::Sender<Loaded>,
    switch: Switch,
    /// Tells the outlet that spilled entries wait in the spool.
    wake: Arc<Notify>,
    receipts: Arc<Receipts>,
    /// Asks the dispatcher to seal its partial aggregates now.
    flush: Arc<Notify>,
    /// The first entry id of this run: entries below it were spooled by an
    /// earlier run of the agent.
    first_id: u64,
}

/// Why a batch was not taken.
#[derive(Debug)]
pub(crate) enum PushFailure {
    Spool(SpoolError),
    /// The dispatcher is gone (the producer stopped).
    Stopped,
}

/// A batch the pipeline did not take, with the reason.
#[derive(Debug)]
pub(crate) struct PushError {
    pub(crate) failure: PushFailure,
    pub(crate) records: Vec<UserRecord>,
    /// The receipt given with the records, for another attempt.
    pub(crate) receipt: Option<oneshot::Sender<DeliveryResult>>,
}

/// Opens the intake of one stream and the outlet its dispatcher reads from. A
/// stream whose spool keeps entries starts spilling: whatever an earlier run
/// left in the spool is read back first. A memory-only one has nothing to read
/// back.
pub(crate) fn open(spool: StreamSpool) -> (Intake, Outlet) {
    let (tx, rx) = mpsc::channel(HANDOVER_BATCHES);
    let switch = (!spool.is_memory_only()).then(|| {
        Arc::new(Mutex::new(Shared {
            spilling: true,
            cursor: 0,
            last_spilled: 0,
        }))
    });
    let wake = Arc::new(Notify::new());
    let receipts = Arc::new(Receipts::new());
    let flush = Arc::new(Notify::new());
    let intake = Intake {
        spool: spool.clone(),
        tx,
        switch: switch.clone(),
        wake: wake.clone(),
        receipts: receipts.clone(),
        flush: flush.clone(),
        first_id: spool.next_id(),
    };
    let outlet = Outlet::new(spool, rx, switch, wake, receipts, flush);
    (intake, outlet)
}

impl Intake {
    /// Asks the dispatcher to seal every partial aggregate now instead of at the
    /// end of its linger.
    pub(crate) fn flush(&self) {
        self.flush.notify_one();
    }

    /// Whether every entry an earlier run of the agent left in the stream's
    /// spool has left it (delivered, dead-lettered or given up): entries of this
    /// run resolve their receipts, those of an earlier run have none.
    pub(crate) fn earlier_runs_done(&self) -> bool {
        self.spool
            .oldest_live_id()
            .is_none_or(|id| id >= self.first_id)
    }

    /// The checkpoints kept in the stream's spool (sources read them at start-up).
    pub(crate) fn checkpoints(&self) -> Result<Vec<Checkpoint>, SpoolError> {
        let stored = self.spool.checkpoints()?;
        Ok(stored.into_iter().map(Checkpoint::from).collect())
    }

    /// Stores a checkpoint without records (a source that read nothing new).
    pub(crate) fn set_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), SpoolError> {
        self.spool.set_checkpoint(checkpoint.as_stored())
    }

    /// Removes a checkpoint (its source is gone).
    pub(crate) fn remove_checkpoint(&self, name: &[u8]) -> Result<(), SpoolError> {
        self.spool.remove_checkpoint(name)
    }

    /// Appends a batch of validated records to the spool and queues it for
    /// delivery; `receipt` is told when every record of it is delivered. Returns the
    /// spool entry id; on failure (a full spool) the records come back with the
    /// error.
    pub(crate) async fn push(
        &self,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
        checkpoint: Option<&Checkpoint>,
        pace: Option<Duration>,
    ) -> Result<u64, PushError> {
        let slot = self.room(pace).await;
        self.take_in(records, receipt, checkpoint, slot)
    }

    /// Room in the hand-over, waited for before anything is written: dropping
    /// the push (a stop) leaves no trace.
    async fn room(&self, pace: Option<Duration>) -> Option<mpsc::Permit<'_, Loaded>> {
        match (&self.switch, pace) {
            // Nothing can wait in the spool: the hand-over is the only queue, and
            // waiting for room in it is the backpressure.
            (None, _) => self.tx.reserve().await.ok(),
            // A paced source (a file, whose data is safe where it is) waits a
            // while for room before its batch goes to the spool only: while
            // delivery keeps up, it reads at delivery's pace instead of copying
            // the file into the spool.
            (Some(shared), Some(limit)) if !lock(shared).spilling => {
                tokio::time::timeout(limit, self.tx.reserve())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            _ => None,
        }
    }

    #[cfg(test)]
    fn is_spilling(&self) -> bool {
        self.switch.as_deref().is_some_and(|s| lock(s).spilling)
    }

    /// Like [`push`](Self::push), but never waits: a full hand-over spills, and
    /// a memory-only spool refuses the spill as full.
    pub(crate) fn try_push(
        &self,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
    ) -> Result<u64, PushError> {
        self.take_in(records, receipt, None, None)
    }

    /// Room in the hand-over for a batch now, decided under the switch's lock
    /// (`switch`): none while the stream spills. `Err`: the batch has nowhere to
    /// go (the dispatcher is gone and the spool keeps nothing).
    fn slot<'a>(
        &'a self,
        switch: Option<&Shared>,
        reserved: Option<mpsc::Permit<'a, Loaded>>,
    ) -> Result<Option<mpsc::Permit<'a, Loaded>>, ()> {
        if switch.is_some_and(|s| s.spilling) {
            return Ok(None);
        }
        if reserved.is_some() {
            return Ok(reserved);
        }
        match self.tx.try_reserve() {
            Ok(slot) => Ok(Some(slot)),
            Err(TrySendError::Closed(())) if switch.is_none() => Err(()),
            Err(_) => Ok(None),
        }
    }

    /// The one path: the id and the path (hand over or spill) decided under the
    /// switch's lock, the spool write (with the checkpoint), the hand-over.
    /// `slot` is room in the hand-over already reserved. The other half of the
    /// decision is [`Outlet::read_spilled`].
    fn take_in(
        &self,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
        checkpoint: Option<&Checkpoint>,
        slot: Option<mpsc::Permit<'_, Loaded>>,
    ) -> Result<u64, PushError> {
        let switch = self.switch.as_deref().map(lock);
        let Ok(slot) = self.slot(switch.as_deref(), slot) else {
            return Err(PushError {
                failure: PushFailure::Stopped,
                records,
                receipt,
            });
        };
        // The path is decided, and the id taken, under the lock: an entry handed
        // over always has a lower id than the first one of a later spill, so the
        // dispatcher never reads it back from the spool too.
        let id = self.spool.reserve_id();
        // Registered before the dispatcher can see the entry.
        if let Some(tx) = receipt {
            self.receipts.add(id, tx);
        }
        let failed = |error, records| {
            Err(PushError {
                failure: PushFailure::Spool(error),
                records,
                receipt: self.receipts.take(id),
            })
        };
        let checkpoint = checkpoint.map(Checkpoint::as_stored);
        let Some(slot) = slot else {
            // Spilled entries are written under the lock, in id order: the
            // dispatcher reading them back never finds a gap it would skip. A
            // memory-only spool refuses them (full).
            if let Err(error) = self.spool.write(id, &records, checkpoint, true) {
                return failed(error, records);
            }
            let mut state = switch.expect("only a spool that keeps what waits takes a spill");
            state.last_spilled = id;
            if !state.spilling {
                state.spilling = true;
                state.cursor = id;
            }
            drop(state);
            self.wake.notify_one();
            return Ok(id);
        };
        drop(switch);
        // Handed over: hashed and written outside the lock, so concurrent senders
        // run in parallel; the reserved slot keeps its place in the hand-over. (A
        // spilled batch is hashed when it is read back, not here.)
        let hash_keys = crate::record::hash_keys(&records);
        let bytes = match self.spool.write(id, &records, checkpoint, false) {
            Ok(bytes) => bytes,
            Err(error) => return failed(error, records),
        };
        slot.send(Loaded {
            id,
            bytes,
            hash_keys,
            records,
            delivered: None,
            spooled_at_ms: now_ms(),
        });
        Ok(id)
    }
}
