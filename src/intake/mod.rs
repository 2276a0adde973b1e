//! Intake: the way into one stream's pipeline. A batch is written to the spool
//! here and either handed over to the stream's dispatcher in memory or *spilled*:
//! left in the spool for the dispatcher to read back.
//!
//! The spool is the queue; memory holds a window of it. A batch just written by a
//! source is handed over in memory while the dispatcher keeps up
//! ([`Intake::push`]). When the hand-over channel is full, or at start-up, the
//! stream spills: new batches go to the spool only, and the dispatcher reads them
//! back in id order through its [`Outlet`], as far as its memory budget allows,
//! until it has caught up. The switch between the two paths is decided under one
//! lock ([`Shared`]) by both sides, so no entry is loaded twice and none is
//! skipped. Replay after a restart is just the spilled path starting at id 0.
//!
//! Receipts are registered here, before the dispatcher can see an entry, and
//! resolved by delivery when the entry's last record is retired.

mod outlet;
mod receipts;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::record::UserRecord;
use crate::spool::{Checkpoint, Entry, SpoolError, StreamSpool};

/// The spool's clock (milliseconds since the Unix epoch), for delivery's
/// record ages.
pub(crate) use crate::spool::now_ms;
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

/// The way into one stream's pipeline: writes a batch to the spool and hands it to
/// the dispatcher.
#[derive(Clone)]
pub(crate) struct Intake {
    spool: StreamSpool,
    tx: mpsc::Sender<Loaded>,
    state: Arc<Mutex<Shared>>,
    /// Tells the outlet that spilled entries wait in the spool.
    wake: Arc<Notify>,
    receipts: Arc<Receipts>,
    /// Asks the dispatcher to seal its partial aggregates now.
    flush: Arc<Notify>,
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

/// Opens the intake of one stream and the outlet its dispatcher reads from. The
/// stream starts spilling: whatever an earlier run left in the spool is read back
/// first.
pub(crate) fn open(spool: StreamSpool) -> (Intake, Outlet) {
    let (tx, rx) = mpsc::channel(HANDOVER_BATCHES);
    let state = Arc::new(Mutex::new(Shared {
        spilling: true,
        cursor: 0,
        last_spilled: 0,
    }));
    let wake = Arc::new(Notify::new());
    let receipts = Arc::new(Receipts::new());
    let flush = Arc::new(Notify::new());
    let intake = Intake {
        spool: spool.clone(),
        tx,
        state: state.clone(),
        wake: wake.clone(),
        receipts: receipts.clone(),
        flush: flush.clone(),
    };
    let outlet = Outlet::new(spool, rx, state, wake, receipts, flush);
    (intake, outlet)
}

impl Intake {
    /// Asks the dispatcher to seal every partial aggregate now instead of at the
    /// end of its linger.
    pub(crate) fn flush(&self) {
        self.flush.notify_one();
    }

    /// The checkpoints kept in the stream's spool (sources read them at start-up).
    pub(crate) fn checkpoints(&self) -> Result<Vec<Checkpoint>, SpoolError> {
        self.spool.checkpoints()
    }

    /// Stores a checkpoint without records (a source that read nothing new).
    pub(crate) fn set_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), SpoolError> {
        self.spool.set_checkpoint(checkpoint)
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
        if self.spool.is_memory_only() {
            // Nothing to read back from: the hand-over channel is the only queue,
            // and waiting on it is the backpressure.
            let loaded = self.in_memory(records);
            if let Some(tx) = receipt {
                self.receipts.add(loaded.id, tx);
            }
            let id = loaded.id;
            return match self.tx.send(loaded).await {
                Ok(()) => Ok(id),
                Err(mpsc::error::SendError(loaded)) => Err(PushError {
                    failure: PushFailure::Stopped,
                    records: loaded.records,
                    receipt: self.receipts.take(id),
                }),
            };
        }
        // A paced source (a file, whose data is safe where it is) waits a while for
        // room in the hand-over before its batch goes to the spool only: while
        // delivery keeps up, it reads at delivery's pace instead of copying the file
        // into the spool. Nothing is written before the wait, so dropping this
        // future (a stop) leaves no trace.
        let slot = match pace {
            Some(limit) if !self.is_spilling() => tokio::time::timeout(limit, self.tx.reserve())
                .await
                .ok()
                .and_then(Result::ok),
            _ => None,
        };
        self.push_spooled(records, receipt, checkpoint, slot)
    }

    fn is_spilling(&self) -> bool {
        self.state.lock().expect("intake lock poisoned").spilling
    }

    /// Like [`push`](Self::push), but never waits: in memory-only mode a full
    /// hand-over is reported as a full spool.
    pub(crate) fn try_push(
        &self,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
    ) -> Result<u64, PushError> {
        if !self.spool.is_memory_only() {
            return self.push_spooled(records, receipt, None, None);
        }
        let loaded = self.in_memory(records);
        let id = loaded.id;
        if let Some(tx) = receipt {
            self.receipts.add(id, tx);
        }
        match self.tx.try_send(loaded) {
            Ok(()) => Ok(id),
            Err(mpsc::error::TrySendError::Full(loaded)) => Err(PushError {
                failure: PushFailure::Spool(SpoolError::Full {
                    used: loaded.bytes,
                    max: 0,
                    needed: loaded.bytes,
                }),
                records: loaded.records,
                receipt: self.receipts.take(id),
            }),
            Err(mpsc::error::TrySendError::Closed(loaded)) => Err(PushError {
                failure: PushFailure::Stopped,
                records: loaded.records,
                receipt: self.receipts.take(id),
            }),
        }
    }

    /// A batch of the memory-only mode: an id, no spool write.
    fn in_memory(&self, records: Vec<UserRecord>) -> Loaded {
        let (id, bytes) = self
            .spool
            .append(&records)
            .expect("memory-only append cannot fail");
        Loaded {
            id,
            bytes,
            hash_keys: crate::record::hash_keys(&records),
            records,
            delivered: None,
            spooled_at_ms: crate::spool::now_ms(),
        }
    }

    /// The spooled path: append (with the checkpoint) and hand over, or spill.
    /// `slot` is room in the hand-over already reserved. The other half of the
    /// decision is [`Outlet::read_spilled`].
    fn push_spooled(
        &self,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
        checkpoint: Option<&Checkpoint>,
        slot: Option<mpsc::Permit<'_, Loaded>>,
    ) -> Result<u64, PushError> {
        let mut state = self.state.lock().expect("intake lock poisoned");
        let slot = match slot {
            _ if state.spilling => None,
            Some(slot) => Some(slot),
            None => self.tx.try_reserve().ok(),
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
        let Some(slot) = slot else {
            // Spilled entries are written under the lock, in id order: the
            // dispatcher reading them back never finds a gap it would skip. They
            // wait in the spool: stored for waiting (see the spool's chunks).
            if let Err(error) = self.spool.write(id, &records, checkpoint, true) {
                return failed(error, records);
            }
            state.last_spilled = id;
            if !state.spilling {
                state.spilling = true;
                state.cursor = id;
            }
            drop(state);
            self.wake.notify_one();
            return Ok(id);
        };
        drop(state);
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
            spooled_at_ms: crate::spool::now_ms(),
        });
        Ok(id)
    }
}
