//! Delivery receipts: registered at intake, before the dispatcher can see the
//! entry, and resolved when the entry's last record is retired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The outcome a receipt resolves to.
pub type DeliveryResult = Result<(), DeliveryError>;

/// Why records of a batch were not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("The destination (Kinesis or Firehose) refused a record for good ({code}: {message}); it was written to the dead-letter file")]
    Rejected { code: String, message: String },
    #[error(
        "not delivered before the producer stopped; the records stay spooled for the next start"
    )]
    NotDelivered,
}

/// Senders of delivery receipts, by spool entry.
#[derive(Default)]
pub(crate) struct Receipts {
    /// Lets the dispatcher skip the lock when nobody waits (the common case).
    count: AtomicUsize,
    /// `None` once the dispatcher has stopped.
    map: Mutex<Option<HashMap<u64, oneshot::Sender<DeliveryResult>>>>,
}

impl Receipts {
    pub(crate) fn new() -> Receipts {
        Receipts {
            count: AtomicUsize::new(0),
            map: Mutex::new(Some(HashMap::new())),
        }
    }

    pub(crate) fn add(&self, id: u64, tx: oneshot::Sender<DeliveryResult>) {
        match self.map.lock().expect("receipts lock poisoned").as_mut() {
            Some(map) => {
                map.insert(id, tx);
                self.count.fetch_add(1, Ordering::Release);
            }
            None => {
                let _ = tx.send(Err(DeliveryError::NotDelivered));
            }
        }
    }

    /// Takes back the receipt of an entry that was not written after all.
    pub(crate) fn take(&self, id: u64) -> Option<oneshot::Sender<DeliveryResult>> {
        let removed = self
            .map
            .lock()
            .expect("receipts lock poisoned")
            .as_mut()
            .and_then(|m| m.remove(&id));
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::Release);
        }
        removed
    }

    /// The dispatcher stopped: every receipt still waiting learns its records were
    /// not delivered (they stay spooled).
    pub(crate) fn close(&self) {
        let waiting = self.map.lock().expect("receipts lock poisoned").take();
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(Err(DeliveryError::NotDelivered));
        }
    }

    pub(crate) fn resolve(&self, id: u64, result: DeliveryResult) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let removed = self
            .map
            .lock()
            .expect("receipts lock poisoned")
            .as_mut()
            .and_then(|m| m.remove(&id));
        if let Some(tx) = removed {
            self.count.fetch_sub(1, Ordering::Release);
            // The receipt may have been dropped: nobody waits any more.
            let _ = tx.send(result);
        }
    }
}
