//! A sink that keeps what the tailer writes in memory: for driving the tailer
//! alone (its unit tests, the model test, tools), without a spool.
//!
//! State: a [`MemorySink`] owns the records and checkpoints written to it (its
//! clones share them). Callers: the tailer's tests (here and tests/file.rs),
//! through `Tail::start`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::producer::{Checkpoint, ProduceError};
use crate::record::UserRecord;

use super::{Receipt, Sink};

/// What a [`MemorySink`] holds.
#[derive(Debug, Default)]
pub struct Memory {
    /// Every record written, in order.
    pub records: Vec<UserRecord>,
    /// The checkpoints, by name, each written with the records read up to it.
    pub checkpoints: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes left before the sink refuses with `Stopped`, as a kill stops the
    /// agent (`None`: no limit).
    pub writes_left: Option<usize>,
}

/// Records and checkpoints written together, as the spool does, in memory. Clones
/// share the same memory.
#[derive(Clone, Debug, Default)]
pub struct MemorySink(Arc<Mutex<Memory>>);

impl MemorySink {
    /// What the sink holds, locked.
    pub fn lock(&self) -> MutexGuard<'_, Memory> {
        // A panic while the lock was held was a test's failure, already reported.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The data of every record written.
    pub fn data(&self) -> Vec<Bytes> {
        self.lock().records.iter().map(|r| r.data.clone()).collect()
    }

    /// The data of every record written, as text (invalid UTF-8 replaced).
    pub fn lines(&self) -> Vec<String> {
        self.lock()
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect()
    }

    /// The partition key of every record written.
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .records
            .iter()
            .map(|r| r.partition_key.clone())
            .collect()
    }
}

impl Sink for MemorySink {
    fn spool(
        &mut self,
        _: &str,
        records: Vec<UserRecord>,
        c: &Checkpoint,
    ) -> Result<Option<Receipt>, ProduceError> {
        for (index, r) in records.iter().enumerate() {
            r.validate()
                .map_err(|source| ProduceError::InvalidRecord { index, source })?;
        }
        let mut m = self.lock();
        if let Some(left) = &mut m.writes_left {
            if *left == 0 {
                return Err(ProduceError::Stopped);
            }
            *left -= 1;
        }
        m.records.extend(records);
        m.checkpoints.insert(c.name.clone(), c.value.clone());
        // Nothing leaves memory: what it holds counts as delivered.
        Ok(None)
    }

    fn checkpoints(&mut self, _: &str) -> Result<Vec<Checkpoint>, ProduceError> {
        Ok(self
            .lock()
            .checkpoints
            .iter()
            .map(|(name, value)| Checkpoint {
                name: name.clone(),
                value: value.clone(),
            })
            .collect())
    }

    fn remove_checkpoint(&mut self, _: &str, name: &[u8]) -> Result<(), ProduceError> {
        self.lock().checkpoints.remove(name);
        Ok(())
    }
}
