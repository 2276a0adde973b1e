//! The `Producer` handle: the one way into the pipeline, for the agent's own sources
//! and for Rust programs that embed shardline.
//!
//! `put_batch` validates, writes the batch to the spool as one entry and hands it to
//! the stream's dispatcher; it returns once the records are in the spool. While the
//! spool is full it waits (backpressure) — sources that must not wait use
//! `try_put_batch`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::deliver::Intake;
use crate::metrics::Metrics;
use crate::record::{RecordError, UserRecord};
use crate::spool::{Spool, SpoolError};

/// Longest wait between two attempts while the spool is full (space is also
/// announced as soon as it is freed; this only bounds a missed wake-up).
const FULL_RETRY: Duration = Duration::from_millis(200);

/// Why records were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("record {index} of the batch is invalid: {source}")]
    InvalidRecord {
        index: usize,
        #[source]
        source: RecordError,
    },
    #[error("stream {0:?} is not configured")]
    UnknownStream(String),
    #[error("spool is full")]
    SpoolFull(#[source] SpoolError),
    #[error("producer is stopped")]
    Stopped,
    #[error("spool write failed")]
    Spool(#[source] SpoolError),
}

/// Handle to the pipeline; cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    intakes: HashMap<String, Intake>,
    default_stream: String,
    spool: Spool,
    metrics: Metrics,
    stopped: CancellationToken,
}

impl Producer {
    pub(crate) fn new(
        intakes: Vec<Intake>,
        default_stream: String,
        spool: Spool,
        metrics: Metrics,
        stopped: CancellationToken,
    ) -> Producer {
        Producer {
            inner: Arc::new(Inner {
                intakes: intakes
                    .into_iter()
                    .map(|i| (i.stream().to_string(), i))
                    .collect(),
                default_stream,
                spool,
                metrics,
                stopped,
            }),
        }
    }

    /// The default destination stream.
    pub fn default_stream(&self) -> &str {
        &self.inner.default_stream
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Spools one record for the default stream.
    pub async fn put(&self, record: UserRecord) -> Result<(), ProduceError> {
        self.put_batch(vec![record]).await
    }

    /// Spools a batch for the default stream.
    pub async fn put_batch(&self, records: Vec<UserRecord>) -> Result<(), ProduceError> {
        let stream = self.inner.default_stream.clone();
        self.put_batch_to(&stream, "producer", records).await
    }

    fn intake(&self, stream: &str, records: &[UserRecord]) -> Result<&Intake, ProduceError> {
        if self.inner.stopped.is_cancelled() {
            return Err(ProduceError::Stopped);
        }
        for (index, r) in records.iter().enumerate() {
            r.validate()
                .map_err(|source| ProduceError::InvalidRecord { index, source })?;
        }
        self.inner
            .intakes
            .get(stream)
            .ok_or_else(|| ProduceError::UnknownStream(stream.to_owned()))
    }

    /// Spools a batch for `stream` (as one spool entry), waiting while the spool is
    /// full. `source` labels the metrics.
    pub async fn put_batch_to(
        &self,
        stream: &str,
        source: &str,
        records: Vec<UserRecord>,
    ) -> Result<(), ProduceError> {
        if records.is_empty() {
            return Ok(());
        }
        let intake = self.intake(stream, &records)?;
        let n = records.len() as u64;
        let mut records = records;
        loop {
            // Registered before the attempt, so space freed in between is not missed.
            let freed = self.inner.spool.space_freed();
            match intake.push(records) {
                Ok(_) => break,
                Err(e) => match e.error {
                    SpoolError::Full { .. } => {
                        records = e.records;
                        tokio::select! {
                            _ = freed => {}
                            _ = tokio::time::sleep(FULL_RETRY) => {}
                            _ = self.inner.stopped.cancelled() => return Err(ProduceError::Stopped),
                        }
                    }
                    other => return Err(ProduceError::Spool(other)),
                },
            }
        }
        self.inner.metrics.spooled(source, n);
        Ok(())
    }

    /// Spools a batch for `stream` without waiting: a full spool is an error.
    pub fn try_put_batch_to(
        &self,
        stream: &str,
        source: &str,
        records: Vec<UserRecord>,
    ) -> Result<(), ProduceError> {
        if records.is_empty() {
            return Ok(());
        }
        let intake = self.intake(stream, &records)?;
        let n = records.len() as u64;
        intake.push(records).map_err(|e| match e.error {
            full @ SpoolError::Full { .. } => ProduceError::SpoolFull(full),
            other => ProduceError::Spool(other),
        })?;
        self.inner.metrics.spooled(source, n);
        Ok(())
    }
}
