//! One memory budget for everything the sources hold of their clients' input:
//! partly read frames and lines, and the records decoded from them until they are
//! in the spool.
//!
//! Without it the memory of the socket source grows with its clients: 400
//! connections each sending the start of an 8 MiB frame made the agent reserve
//! 3.2 GiB, and a frame of 1.7 million tiny records took 250 MiB of decoded
//! records. With it a connection reserves bytes from the budget *before* it
//! allocates or decodes; when the budget is spent it waits (its client feels
//! backpressure), and a wait longer than [`WAIT_LIMIT`] ends the connection. A
//! frame that could never fit is refused at once. The budget is a semaphore of
//! bytes; what is charged is on `shardline_ingest_memory_bytes`.
//!
//! What is charged is an estimate of what the input costs in memory, kept on the
//! high side: the bytes buffered, plus for each decoded record
//! [`RECORD_OVERHEAD`] bytes, plus the data once more for the spool's copy.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Memory a decoded record takes beyond its data: the frame's record, the user
/// record it becomes, its partition key's allocation and the batch's vectors.
pub(crate) const RECORD_OVERHEAD: usize = 192;

/// Longest wait for budget; then the connection ends with an error (its client may
/// retry), so connections holding part of the budget cannot wait on each other
/// forever.
pub(crate) const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Why a charge could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BudgetError {
    #[error(
        "{want} bytes exceed the whole {max}-byte ingest memory budget (ingest.max_memory_bytes)"
    )]
    TooLarge { want: usize, max: usize },
    #[error("no room in the {max}-byte ingest memory budget (ingest.max_memory_bytes) for {want} bytes within {waited:?}")]
    Timeout {
        want: usize,
        max: usize,
        waited: Duration,
    },
}

/// The budget, shared by every source.
#[derive(Clone)]
pub(crate) struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    /// Longest wait for room ([`WAIT_LIMIT`]).
    wait_limit: Duration,
    /// One permit per byte not charged.
    free: Semaphore,
    metrics: Metrics,
}

impl Budget {
    pub(crate) fn new(max_bytes: usize, metrics: Metrics) -> Budget {
        Budget::with_wait_limit(max_bytes, metrics, WAIT_LIMIT)
    }

    /// A budget whose charges wait at most `wait_limit` for room.
    pub(crate) fn with_wait_limit(
        max_bytes: usize,
        metrics: Metrics,
        wait_limit: Duration,
    ) -> Budget {
        // Tokio's semaphore holds at most `usize::MAX >> 3` permits.
        let max = max_bytes.min(Semaphore::MAX_PERMITS);
        metrics.set_ingest_budget(max as u64, 0);
        Budget {
            inner: Arc::new(Inner {
                max,
                wait_limit,
                free: Semaphore::new(max),
                metrics,
            }),
        }
    }

    /// The budget's size.
    pub(crate) fn max(&self) -> usize {
        self.inner.max
    }

    /// Bytes charged now.
    pub(crate) fn charged(&self) -> usize {
        self.inner.max - self.inner.free.available_permits()
    }

    /// An empty charge against the budget.
    pub(crate) fn charge(&self) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
        }
    }

    fn report(&self) {
        self.inner
            .metrics
            .set_ingest_budget(self.inner.max as u64, self.charged() as u64);
    }
}

/// What one connection holds of the budget; given back when dropped.
pub(crate) struct Charge {
    budget: Budget,
    held: usize,
}

impl Charge {
    /// Bytes held.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Holds exactly `want` bytes: gives back what is above it, or waits (up to the
    /// budget's wait limit) for what is missing.
    pub(crate) async fn set(&mut self, want: usize) -> Result<(), BudgetError> {
        if want <= self.held {
            self.shrink_to(want);
            return Ok(());
        }
        let max = self.budget.max();
        if want > max {
            return Err(BudgetError::TooLarge { want, max });
        }
        let more = want - self.held;
        // `more` is at most the budget, which fits a u32 acquire in steps.
        let mut missing = more;
        while missing > 0 {
            let step = missing.min(u32::MAX as usize) as u32;
            let free = &self.budget.inner.free;
            let permit = match free.try_acquire_many(step) {
                Ok(p) => p,
                Err(_) => {
                    self.budget.inner.metrics.ingest_budget_waited();
                    let waited = self.budget.inner.wait_limit;
                    match tokio::time::timeout(waited, free.acquire_many(step)).await {
                        Ok(p) => p.expect("the budget's semaphore is never closed"),
                        Err(_) => {
                            self.budget.report();
                            return Err(BudgetError::Timeout { want, max, waited });
                        }
                    }
                }
            };
            permit.forget();
            self.held += step as usize;
            missing -= step as usize;
        }
        self.budget.report();
        Ok(())
    }

    /// Gives back what is held above `want`.
    pub(crate) fn shrink_to(&mut self, want: usize) {
        if want < self.held {
            self.budget.inner.free.add_permits(self.held - want);
            self.held = want;
            self.budget.report();
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_wait_for_room_and_give_it_back() {
        let metrics = Metrics::new();
        let budget = Budget::new(1000, metrics.clone());
        let mut a = budget.charge();
        let mut b = budget.charge();
        a.set(700).await.unwrap();
        assert_eq!(
            (budget.charged(), metrics.ingest_memory_bytes()),
            (700, 700)
        );
        // b waits for room until a shrinks.
        let waiting = tokio::spawn(async move {
            b.set(500).await.unwrap();
            b
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(metrics.ingest_budget_waits(), 1);
        a.shrink_to(400);
        let b = waiting.await.unwrap();
        assert_eq!((a.held(), b.held(), budget.charged()), (400, 500, 900));
        drop(b);
        drop(a);
        assert_eq!((budget.charged(), metrics.ingest_memory_bytes()), (0, 0));
    }

    #[tokio::test]
    async fn more_than_the_budget_is_refused_and_a_long_wait_ends() {
        let wait = Duration::from_millis(20);
        let budget = Budget::with_wait_limit(1000, Metrics::new(), wait);
        let mut a = budget.charge();
        assert_eq!(
            a.set(1001).await,
            Err(BudgetError::TooLarge {
                want: 1001,
                max: 1000
            })
        );
        a.set(1000).await.unwrap();
        let mut b = budget.charge();
        // Nothing gives room back: the wait ends at its limit.
        assert_eq!(
            b.set(1).await,
            Err(BudgetError::Timeout {
                want: 1,
                max: 1000,
                waited: wait
            })
        );
        assert_eq!((b.held(), budget.charged()), (0, 1000));
    }
}
