//! A connection's reads: each one charged to the ingest memory budget before its
//! bytes are taken in, until the client closes, goes idle for
//! `idle_timeout_secs`, or the source stops.
//!
//! The connection waits for input first and charges the budget only then, so an
//! idle connection holds nothing but what it left unfinished.

use std::io;

use bytes::{BufMut, BytesMut};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use super::{Shared, KIND, READ_BYTES};
use crate::metrics::SourceError;
use crate::source::budget::{BudgetError, Charge};

/// Bytes a connection may still take in once its source stops: what clients had
/// already written is spooled, but a client that keeps writing cannot hold the stop.
const DRAIN_BYTES: usize = 1024 * 1024;

/// How long a stopping source waits for input its clients already sent (the
/// socket's readiness may not have been seen yet).
pub(super) const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// The read side of a connection (whole, or split from its writer).
pub(super) trait Readable {
    async fn readable(&self) -> io::Result<()>;
    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize>;
}

impl Readable for UnixStream {
    async fn readable(&self) -> io::Result<()> {
        UnixStream::readable(self).await
    }
    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        UnixStream::try_read_buf(self, buf)
    }
}

impl Readable for OwnedReadHalf {
    async fn readable(&self) -> io::Result<()> {
        OwnedReadHalf::readable(self).await
    }
    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        OwnedReadHalf::try_read_buf(self, buf)
    }
}

/// How much a read may take in.
pub(super) struct Want {
    /// What the connection holds of the budget while it reads and handles what it
    /// read.
    pub charge: usize,
    /// Capacity the buffer gets (at most `charge`): room for the read, or for the
    /// whole frame it is in.
    pub buffer: usize,
}

pub(super) struct Reader<'a> {
    shared: &'a Shared,
    /// Once the source stops: bytes read since.
    drained: Option<usize>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(shared: &'a Shared) -> Self {
        Reader {
            shared,
            drained: None,
        }
    }

    /// Reads at most [`READ_BYTES`] from the client into `buf`, once `charge` holds
    /// `want.charge`; 0 means the end. Once the source stops, only what is already
    /// waiting in the socket is read (up to [`DRAIN_BYTES`]), then the end. An
    /// error: the budget had no room in time (or never can have).
    pub(super) async fn read<R: Readable>(
        &mut self,
        stream: &R,
        buf: &mut BytesMut,
        charge: &mut Charge,
        want: Want,
        shutdown: &CancellationToken,
    ) -> Result<usize, BudgetError> {
        loop {
            match self.drained {
                None => {
                    let idle = self.shared.config.idle_timeout;
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            self.drained = Some(0);
                            continue;
                        }
                        r = tokio::time::timeout(idle, stream.readable()) => match r {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return Ok(0),
                            Err(_) => {
                                // What it sent is kept; the slot goes to someone else.
                                self.shared.producer.metrics().source_error(KIND, SourceError::IdleTimeout);
                                tracing::debug!(path = %self.shared.path(), idle = ?idle, "Closing an idle connection");
                                return Ok(0);
                            }
                        },
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            self.drained = Some(0);
                            continue;
                        }
                        r = charge.set(want.charge) => r?,
                    }
                }
                Some(so_far) => {
                    if so_far >= DRAIN_BYTES {
                        return Ok(0);
                    }
                    // Nothing more within the grace period, or an error: the end.
                    match tokio::time::timeout(DRAIN_GRACE, stream.readable()).await {
                        Ok(Ok(())) => {}
                        _ => return Ok(0),
                    }
                    match tokio::time::timeout(DRAIN_GRACE, charge.set(want.charge)).await {
                        Ok(r) => r?,
                        Err(_) => return Ok(0),
                    }
                }
            }
            let target = want.buffer.min(want.charge).max(buf.len() + 1);
            if buf.capacity() < target {
                buf.reserve(target - buf.len());
            }
            let room = (target - buf.len()).min(READ_BYTES);
            let n = match stream.try_read_buf(&mut (&mut *buf).limit(room)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => 0,
            };
            if let Some(so_far) = &mut self.drained {
                *so_far += n;
            }
            return Ok(n);
        }
    }
}
