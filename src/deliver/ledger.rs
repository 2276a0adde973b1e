//! The ledger of entry progress: which user records of each loaded spool entry
//! were delivered (or given up), how many bytes of the spool are in memory, and
//! when an entry's records have waited too long.
//!
//! A user record is retired only by a successful PutRecords entry that carried it
//! (or when it is given up); a spool entry is deleted when all its records are
//! retired, and a partly delivered entry's progress bitmap is written in the same
//! atomic batch, so a restart re-sends only what was not accepted (up to one flush
//! interval of acks, see [`crate::spool`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::kinesis::ErrorCode;
use crate::aggregate::{KeyHash, Pending};
use crate::intake::{Acks, DeliveryError, Loaded};

/// Delivery progress of one loaded spool entry.
struct Track {
    /// Records not yet retired.
    remaining: u32,
    /// Bitmap of retired records.
    delivered: Vec<u64>,
    bytes: u64,
    /// Set when a record of the entry was refused for good: (code, message).
    failure: Option<(String, String)>,
    spooled_at_ms: u64,
}

/// Progress of every loaded entry of one stream, and the acks not yet written.
pub(super) struct Ledger {
    stream: Arc<str>,
    acks: Acks,
    /// Records older than this are given up; `None`: never.
    max_record_age: Option<Duration>,
    tracked: HashMap<u64, Track, KeyHash>,
    /// Bytes of the loaded entries (the memory window of the spool).
    loaded_bytes: u64,
    /// User records retired since the last commit.
    acked: u64,
    /// Entries whose every record is retired since the last commit: (id, bytes).
    done: Vec<(u64, u64)>,
    /// Entries partly retired since the last commit.
    partial: Vec<u64>,
}

impl Ledger {
    pub(super) fn new(stream: Arc<str>, acks: Acks, max_record_age: Option<Duration>) -> Ledger {
        Ledger {
            stream,
            acks,
            max_record_age,
            tracked: HashMap::default(),
            loaded_bytes: 0,
            acked: 0,
            done: Vec::new(),
            partial: Vec::new(),
        }
    }

    pub(super) fn loaded_bytes(&self) -> u64 {
        self.loaded_bytes
    }

    /// Starts tracking a loaded entry; returns its records not delivered yet. An
    /// entry delivered in full before a restart (only its delete was lost) is
    /// retired at once.
    pub(super) fn track(&mut self, batch: Loaded) -> Vec<Pending> {
        let Loaded {
            id,
            bytes,
            records,
            hash_keys,
            delivered,
            spooled_at_ms,
        } = batch;
        let n = records.len();
        // Read back from the spool: hashed here.
        let hash_keys = if hash_keys.len() == n {
            hash_keys
        } else {
            crate::record::hash_keys(&records)
        };
        let mut bits = delivered.unwrap_or_default();
        bits.resize(n.div_ceil(64), 0);
        let done = |i: usize| bits[i / 64] & (1 << (i % 64)) != 0;
        let mut pending = Vec::with_capacity(n);
        for (i, r) in records.into_iter().enumerate() {
            if !done(i) {
                pending.push(Pending {
                    entry: id,
                    index: i as u32,
                    hash_key: hash_keys[i],
                    record: r,
                });
            }
        }
        if pending.is_empty() {
            self.acks.resolve(id, Ok(()));
            if let Err(e) = self.acks.retire(&[(id, bytes)], &[], 0) {
                tracing::error!(stream = %self.stream, error = %e, "Deleting a delivered spool entry failed");
            }
            return pending;
        }
        self.tracked.insert(
            id,
            Track {
                remaining: pending.len() as u32,
                delivered: bits,
                bytes,
                failure: None,
                spooled_at_ms,
            },
        );
        self.loaded_bytes += bytes;
        pending
    }

    /// Whether a record has waited longer than `max_record_age`.
    pub(super) fn is_expired(&self, p: &Pending) -> bool {
        let (Some(max), Some(t)) = (self.max_record_age, self.tracked.get(&p.entry)) else {
            return false;
        };
        crate::intake::now_ms().saturating_sub(t.spooled_at_ms) > max.as_millis() as u64
    }

    /// Notes why a record of the entry was refused for good (the first reason
    /// counts); the entry's receipt reports it.
    pub(super) fn refused(&mut self, entry: u64, code: &ErrorCode, message: &str) {
        if let Some(t) = self.tracked.get_mut(&entry) {
            t.failure
                .get_or_insert_with(|| (code.to_string(), message.to_owned()));
        }
    }

    /// Marks one user record delivered (or given up); written at the next
    /// [`commit`](Self::commit).
    pub(super) fn ack(&mut self, entry: u64, index: u32) {
        let Some(t) = self.tracked.get_mut(&entry) else {
            return;
        };
        let (w, b) = (index as usize / 64, index % 64);
        if t.delivered[w] & (1 << b) != 0 {
            return;
        }
        t.delivered[w] |= 1 << b;
        t.remaining -= 1;
        self.acked += 1;
        if t.remaining == 0 {
            self.done.push((entry, t.bytes));
        } else {
            self.partial.push(entry);
        }
    }

    /// Writes the acks since the last commit to the spool (one atomic batch) and
    /// resolves the receipts of the entries now retired.
    pub(super) fn commit(&mut self) {
        let done = std::mem::take(&mut self.done);
        let mut partial = std::mem::take(&mut self.partial);
        for &(id, bytes) in &done {
            if let Some(t) = self.tracked.remove(&id) {
                let result = match t.failure {
                    None => Ok(()),
                    Some((code, message)) => Err(DeliveryError::Rejected { code, message }),
                };
                self.acks.resolve(id, result);
            }
            self.loaded_bytes -= bytes;
        }
        partial.sort_unstable();
        partial.dedup();
        let partial: Vec<(u64, &[u64])> = partial
            .iter()
            .filter_map(|id| self.tracked.get(id).map(|t| (*id, t.delivered.as_slice())))
            .collect();
        let acked = std::mem::take(&mut self.acked);
        if let Err(e) = self.acks.retire(&done, &partial, acked) {
            // The records were delivered; at worst they are sent again after a
            // restart.
            tracing::error!(stream = %self.stream, error = %e, "Recording delivered records in the spool failed");
        }
    }

    /// The dispatcher stopped: receipts still waiting learn their records stay
    /// spooled.
    pub(super) fn close(&self) {
        self.acks.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::{DeliveryResult, Intake, Outlet};
    use crate::record::UserRecord;
    use crate::spool::{Spool, SpoolOptions};
    use tokio::sync::oneshot;

    fn stream() -> (Intake, Outlet, Ledger) {
        let spool = Spool::open(&SpoolOptions::default()).expect("memory spool");
        let (intake, outlet) = crate::intake::open(spool.stream("s").expect("stream"));
        let ledger = Ledger::new("s".into(), outlet.acks(), Some(Duration::from_secs(3600)));
        (intake, outlet, ledger)
    }

    fn load(
        intake: &Intake,
        outlet: &mut Outlet,
        n: usize,
    ) -> (Loaded, oneshot::Receiver<DeliveryResult>) {
        let records = (0..n)
            .map(|i| UserRecord::new(format!("k{i}"), "x"))
            .collect();
        let (tx, rx) = oneshot::channel();
        intake.try_push(records, Some(tx)).expect("handed over");
        (outlet.try_recv().expect("a batch"), rx)
    }

    #[test]
    fn an_entry_is_retired_when_its_last_record_is_acked() {
        let (intake, mut outlet, mut ledger) = stream();
        let (batch, mut receipt) = load(&intake, &mut outlet, 3);
        let bytes = batch.bytes;
        let pending = ledger.track(batch);
        assert_eq!(pending.len(), 3);
        assert_eq!(ledger.loaded_bytes(), bytes);
        ledger.ack(pending[0].entry, 0);
        ledger.ack(pending[0].entry, 0); // twice: counted once
        ledger.ack(pending[0].entry, 2);
        ledger.commit();
        assert!(receipt.try_recv().is_err(), "resolved with a record left");
        assert_eq!(ledger.loaded_bytes(), bytes);
        ledger.ack(pending[0].entry, 1);
        ledger.commit();
        assert_eq!(receipt.try_recv().unwrap(), Ok(()));
        assert_eq!(ledger.loaded_bytes(), 0);
    }

    #[test]
    fn a_refused_record_makes_the_receipt_report_it() {
        let (intake, mut outlet, mut ledger) = stream();
        let (batch, receipt) = load(&intake, &mut outlet, 2);
        let pending = ledger.track(batch);
        let entry = pending[0].entry;
        ledger.refused(entry, &ErrorCode::kinesis("ValidationException"), "too big");
        ledger.ack(entry, 0);
        ledger.ack(entry, 1);
        ledger.commit();
        assert_eq!(
            receipt.blocking_recv().unwrap(),
            Err(DeliveryError::Rejected {
                code: "ValidationException".into(),
                message: "too big".into()
            })
        );
    }

    #[test]
    fn records_delivered_before_a_restart_are_not_loaded_again() {
        let (intake, mut outlet, mut ledger) = stream();
        let (mut batch, _receipt) = load(&intake, &mut outlet, 3);
        batch.delivered = Some(vec![0b101]);
        let pending = ledger.track(batch);
        let indexes: Vec<u32> = pending.iter().map(|p| p.index).collect();
        assert_eq!(indexes, [1]);
        let (mut batch, receipt) = load(&intake, &mut outlet, 2);
        batch.delivered = Some(vec![0b11]);
        assert!(ledger.track(batch).is_empty());
        assert_eq!(receipt.blocking_recv().unwrap(), Ok(()));
    }

    #[test]
    fn only_records_older_than_the_limit_expire() {
        let (intake, mut outlet, mut ledger) = stream();
        let (mut batch, _receipt) = load(&intake, &mut outlet, 1);
        let fresh = ledger.track(batch_clone(&batch));
        assert!(!ledger.is_expired(&fresh[0]));
        batch.id += 1000;
        batch.spooled_at_ms -= 2 * 3600 * 1000;
        let old = ledger.track(batch);
        assert!(ledger.is_expired(&old[0]));
    }

    fn batch_clone(b: &Loaded) -> Loaded {
        Loaded {
            id: b.id,
            bytes: b.bytes,
            records: b.records.clone(),
            hash_keys: b.hash_keys.clone(),
            delivered: b.delivered.clone(),
            spooled_at_ms: b.spooled_at_ms,
        }
    }
}
