//! The dispatcher's side of intake: batches handed over in memory, entries read
//! back from the spool while the stream spills, and the way acks go back.
//!
//! An [`Outlet`] owns the receiving side of a stream's hand-over and the reading
//! half of its switch; [`Acks`] retires entries and resolves receipts. Both are
//! made by `intake::open` and used by the stream's dispatcher (`deliver`) only.

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use super::{lock, DeliveryResult, Loaded, Receipts, Switch};
use crate::spool::{SpoolError, StreamSpool};

/// Where a dispatcher takes its stream's batches from.
pub(crate) struct Outlet {
    spool: StreamSpool,
    rx: mpsc::Receiver<Loaded>,
    /// `None`: a memory-only spool, which never spills.
    switch: Switch,
    wake: Arc<Notify>,
    receipts: Arc<Receipts>,
    flush: Arc<Notify>,
}

/// What a dispatcher's select loop waits on, borrowed together.
pub(crate) struct Signals<'a> {
    /// Batches handed over in memory.
    pub(crate) handed_over: &'a mut mpsc::Receiver<Loaded>,
    /// A flush was asked for.
    pub(crate) flush: &'a Notify,
    /// Entries were spilled to the spool.
    pub(crate) spilled: &'a Notify,
}

impl Outlet {
    pub(super) fn new(
        spool: StreamSpool,
        rx: mpsc::Receiver<Loaded>,
        switch: Switch,
        wake: Arc<Notify>,
        receipts: Arc<Receipts>,
        flush: Arc<Notify>,
    ) -> Outlet {
        Outlet {
            spool,
            rx,
            switch,
            wake,
            receipts,
            flush,
        }
    }

    pub(crate) fn stream(&self) -> &Arc<str> {
        self.spool.name()
    }

    pub(crate) fn signals(&mut self) -> Signals<'_> {
        Signals {
            handed_over: &mut self.rx,
            flush: &self.flush,
            spilled: &self.wake,
        }
    }

    /// A batch already handed over, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Loaded> {
        self.rx.try_recv().ok()
    }

    /// The handle through which delivery retires entries and resolves receipts.
    pub(crate) fn acks(&self) -> Acks {
        Acks {
            spool: self.spool.clone(),
            receipts: self.receipts.clone(),
        }
    }

    /// Reads entries that were spilled to the spool (or left there by an earlier
    /// run), up to `budget` bytes; once it has caught up, later batches come in
    /// memory again. The other half of the decision is `Intake::take_in`.
    pub(crate) async fn read_spilled(&mut self, budget: u64) -> Result<Vec<Loaded>, SpoolError> {
        let Some(switch) = &self.switch else {
            return Ok(Vec::new());
        };
        let cursor = {
            let state = lock(switch);
            if !state.spilling {
                return Ok(Vec::new());
            }
            state.cursor
        };
        let spool = self.spool.clone();
        let (entries, next) =
            tokio::task::spawn_blocking(move || spool.read_from(cursor, budget, |_| false))
                .await
                .expect("spool read task panicked")?;
        let last_read = entries.last().map(|e| e.id);
        let mut state = lock(switch);
        match next {
            Some(next) => state.cursor = next,
            None => {
                let read_to = last_read
                    .unwrap_or(cursor.saturating_sub(1))
                    .max(cursor.saturating_sub(1));
                if state.last_spilled <= read_to {
                    // Caught up: later batches come in memory again. Decided under
                    // the lock that appends take, so none falls between the paths.
                    state.spilling = false;
                } else {
                    state.cursor = read_to + 1;
                }
            }
        }
        Ok(entries.into_iter().map(Loaded::from).collect())
    }
}

/// How delivery writes its progress back: spool entries retired, receipts resolved.
pub(crate) struct Acks {
    spool: StreamSpool,
    receipts: Arc<Receipts>,
}

impl Acks {
    /// Deletes the entries in `done` (id, bytes) and records the progress bitmaps
    /// of the partly delivered ones, in one atomic batch; `acked` user records
    /// count as delivered.
    pub(crate) fn retire(
        &self,
        done: &[(u64, u64)],
        partial: &[(u64, &[u64])],
        acked: u64,
    ) -> Result<(), SpoolError> {
        self.spool.retire(done, partial, acked)
    }

    pub(crate) fn resolve(&self, id: u64, result: DeliveryResult) {
        self.receipts.resolve(id, result);
    }

    /// The dispatcher stopped: receipts still waiting learn their records stay
    /// spooled.
    pub(crate) fn close(&self) {
        self.receipts.close();
    }
}
