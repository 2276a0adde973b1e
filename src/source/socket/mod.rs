//! Unix socket source, in three forms:
//!
//! - stream socket, `lines`: newline-delimited records, one per line, random
//!   partition keys;
//! - stream socket, `frames`: the length-prefixed protocol of [`frame`], where each
//!   record carries its own keys and a client can ask for an ack that is sent only
//!   once its records are durable in the spool;
//! - datagram socket: one datagram = one record (syslog-style producers).
//!
//! Each connection reads into one buffer and turns what a read produced into
//! batches (spool entries) of up to [`BATCH_BYTES`]; a record's data is a slice of
//! the read buffer, so nothing is copied between the socket and the spool encoder.
//! What a connection holds — its buffer, a frame in progress, decoded records — is
//! charged to the ingest memory [`Budget`] before it is allocated, so the sum over
//! all connections is bounded, not only each one. Bad input (an over-long line, an
//! invalid key, a broken frame) gets a clear error — to the client where the
//! protocol can carry it, to the log and to a counter (the log at most once per
//! [`LOG_INTERVAL`] and kind per socket: a client cannot flood it) — and everyone
//! else keeps flowing. Connections are bounded per socket and per uid, idle ones
//! are closed; when the spool is full, reads pause (or frames are refused, per
//! `on_full`).
//!
//! Who owns what: one socket's `Shared` holds its config, its producer, the
//! budget, its per-uid counts and its warnings; each connection owns its buffer
//! and charge (`lines_connection`, `framed.rs`, `datagrams`). The agent binds
//! ([`bind`]) and runs ([`serve`]) each socket. Records go through the
//! [`Producer`] only, never the spool: an ack waits on [`Producer::durable`].
//!
//! [`LOG_INTERVAL`]: crate::source::log_limit::LOG_INTERVAL

mod bind;
pub(crate) mod client;
#[cfg(test)]
mod conformance;
pub mod frame;
mod framed;
mod lines;
pub(crate) mod peer;
mod reader;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::net::{UnixDatagram, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Framing, Oversized, SocketConfig};
use crate::metrics::{LineAction, RejectReason, Source, SourceError};
use crate::producer::{Pace, ProduceError, Producer};
use crate::record::{random_partition_key, UserRecord, MAX_RECORD_BYTES};
use crate::source::budget::{Budget, BudgetError, Charge, RECORD_OVERHEAD};
use crate::source::format::{Cut, JsonFormatter};
use crate::source::log_limit::LogLimit;
use crate::source::record_id::Counter;
pub(crate) use bind::{bind, Bound};
use framed::frames_connection;
use lines::LineSplitter;
use reader::{Reader, Want, DRAIN_GRACE};

/// Source kind, as it appears in metrics.
pub(crate) const KIND: Source = Source::Socket;
/// A batch is cut at this many bytes: large enough for the spool's fast path (it
/// writes tens of KiB per entry far faster than single records), small enough to
/// keep per-connection memory low.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;
/// Size of one read.
const READ_BYTES: usize = 64 * 1024;
/// Most overhead of the records of one lines batch (a batch is cut there too):
/// lines of 96 bytes or more fill [`BATCH_BYTES`] first, so batches stay as large
/// as the spool likes; a flood of tiny lines cannot make a batch cost more.
const LINES_RECORDS_BYTES: usize = 2 * BATCH_BYTES;
/// Responses a frames connection may owe before it stops reading: enough for deep
/// pipelining, bounded so a client that never reads cannot grow memory.
const RESPONSE_QUEUE: usize = 1024;
/// Largest json record of a line or datagram: the Kinesis limit less the random
/// partition key (16 characters).
pub(crate) const JSON_RECORD_BYTES: usize = MAX_RECORD_BYTES - 16;

/// Errors of the socket source.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot bind socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("socket {path} is in use by another process")]
    InUse { path: PathBuf },
}

/// What every connection of one socket shares.
struct Shared {
    config: SocketConfig,
    producer: Producer,
    /// The ingest memory budget every source shares.
    budget: Budget,
    warnings: Warnings,
    /// Open connections per peer uid (`max_connections_per_uid`).
    per_uid: Mutex<HashMap<u32, usize>>,
    /// The json format of lines and datagrams (each connection has its own
    /// copy); `None`: raw.
    format: Option<JsonFormatter>,
}

/// The socket's warnings about bad input, each let through once per interval
/// whichever connection caused it.
#[derive(Default)]
struct Warnings {
    peer_refused: LogLimit,
    uid_limit: LogLimit,
    bad_frame: LogLimit,
    refused_records: LogLimit,
    truncated_frame: LogLimit,
    too_large: LogLimit,
    no_budget: LogLimit,
    spool_refused: LogLimit,
    truncated: LogLimit,
}

impl Shared {
    fn path(&self) -> std::path::Display<'_> {
        self.config.path.display()
    }

    /// `n` lines or datagrams too long for the record limit once wrapped were
    /// truncated: counted, and logged at most once per interval.
    fn truncated(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.producer
            .metrics()
            .oversized(KIND, LineAction::Truncated, n);
        if let Some(suppressed) = self.warnings.truncated.check() {
            tracing::error!(
                path = %self.path(),
                error = %format!("line exceeds the {JSON_RECORD_BYTES}-byte record limit once wrapped as json"),
                suppressed,
                "Truncated a record"
            );
        }
    }

    /// Input found no room in the memory budget (the connection ends, or a frame
    /// that can never fit is skipped): counted, and logged at most once per
    /// interval.
    fn no_budget(&self, error: &BudgetError) {
        self.producer
            .metrics()
            .source_error(KIND, SourceError::NoBudget);
        if let Some(suppressed) = self.warnings.no_budget.check() {
            tracing::warn!(path = %self.path(), error = %error, suppressed, "Refused input: no room in the ingest memory budget");
        }
    }

    /// Takes one of `uid`'s connection slots, if it has one left.
    fn uid_slot(self: &Arc<Self>, uid: u32) -> Option<UidSlot> {
        let mut per_uid = self.per_uid.lock().expect("per-uid lock is never poisoned");
        let n = per_uid.entry(uid).or_insert(0);
        if *n >= self.config.max_connections_per_uid {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            shared: self.clone(),
            uid,
        })
    }
}

/// A connection let in: it holds its uid's slot while it lasts (none when the
/// kernel could not say who the peer is).
struct Admitted {
    _slot: Option<UidSlot>,
}

/// A connection's place in its uid's count, given back when it closes.
struct UidSlot {
    shared: Arc<Shared>,
    uid: u32,
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut per_uid = self
            .shared
            .per_uid
            .lock()
            .expect("per-uid lock is never poisoned");
        if let Some(n) = per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                per_uid.remove(&self.uid);
            }
        }
    }
}
/// Serves one bound socket until `shutdown`.
pub(crate) async fn serve(
    bound: Bound,
    config: SocketConfig,
    producer: Producer,
    budget: Budget,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    tracing::info!(
        path = %config.path.display(),
        stream = %config.stream,
        mode = ?config.mode,
        framing = ?config.framing,
        "Listening on socket"
    );
    let path = config.path.clone();
    let shared = Arc::new(Shared {
        producer,
        budget,
        warnings: Warnings::default(),
        per_uid: Mutex::new(HashMap::new()),
        format: JsonFormatter::for_source(
            &config.format,
            &config.path.to_string_lossy(),
            &config.block,
        ),
        config,
    });
    match bound {
        Bound::Stream(listener) => accept_loop(listener, shared, shutdown, tracker).await,
        Bound::Datagram(socket) => datagrams(socket, &shared, &shutdown).await,
    }
    let _ = std::fs::remove_file(&path);
}

async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    // Once stopping, connections already waiting in the accept queue are still
    // taken: their clients wrote before the stop, and what they wrote is spooled.
    let mut stopping = false;
    loop {
        let permit = if stopping {
            slots.clone().acquire_owned().await
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => { stopping = true; continue; }
                p = slots.clone().acquire_owned() => p,
            }
        }
        .expect("the connection semaphore is never closed");
        let accepted = if stopping {
            // A connection already queued, or none within the grace period.
            match tokio::time::timeout(DRAIN_GRACE, listener.accept()).await {
                Ok(a) => a,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => { stopping = true; continue; }
                a = listener.accept() => a,
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if stopping {
                    break;
                }
                tracing::warn!(path = %shared.path(), error = %e, "Accepting a socket connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = admit(&stream, &shared) else {
            continue;
        };
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let _admitted = admitted;
            let result = match shared.config.framing {
                Framing::Lines => lines_connection(stream, &shared, &shutdown).await,
                Framing::Frames => frames_connection(stream, &shared, &shutdown).await,
            };
            if let Err(e) = result {
                tracing::debug!(path = %shared.path(), error = %e, "Socket connection ended with an error");
            }
        });
    }
}

/// Whether a new connection's peer may stay: it is allowed, and its uid has a
/// connection slot left (which it holds while connected). A refusal is logged and
/// counted.
fn admit(stream: &UnixStream, shared: &Arc<Shared>) -> Option<Admitted> {
    let config = &shared.config;
    let metrics = shared.producer.metrics();
    let peer = match peer::Peer::of(stream) {
        Ok(p) => p,
        // Without credentials only an open socket admits it, and no uid counts it.
        Err(_) => {
            let open = config.allow_uids.is_empty() && config.allow_gids.is_empty();
            return open.then_some(Admitted { _slot: None });
        }
    };
    let refusal = match peer::allowed(config, &peer, || peer::groups(stream, &peer)) {
        Ok(true) => None,
        Ok(false) => Some(None),
        Err(e) => Some(Some(e)),
    };
    if let Some(error) = refusal {
        metrics.source_error(KIND, SourceError::PeerRefused);
        if let Some(suppressed) = shared.warnings.peer_refused.check() {
            match error {
                None => tracing::warn!(
                    path = %shared.path(),
                    uid = peer.uid,
                    gid = peer.gid,
                    pid = ?peer.pid,
                    suppressed,
                    "Refused a connection from a peer not in allow_uids/allow_gids"
                ),
                Some(e) => tracing::warn!(
                    path = %shared.path(),
                    uid = peer.uid,
                    gid = peer.gid,
                    pid = ?peer.pid,
                    error = %e,
                    suppressed,
                    "Refused a connection: its peer's groups cannot be read"
                ),
            }
        }
        return None;
    }
    match shared.uid_slot(peer.uid) {
        Some(slot) => Some(Admitted { _slot: Some(slot) }),
        None => {
            metrics.source_error(KIND, SourceError::UidLimit);
            if let Some(suppressed) = shared.warnings.uid_limit.check() {
                tracing::warn!(
                    path = %shared.path(),
                    uid = peer.uid,
                    pid = ?peer.pid,
                    error = %format!(
                        "uid {} already has {} connections (max_connections_per_uid)",
                        peer.uid, config.max_connections_per_uid
                    ),
                    suppressed,
                    "Refused a connection"
                );
            }
            None
        }
    }
}

/// Reads one lines client until it closes, goes idle, or until shutdown (the batch
/// in hand is spooled first).
async fn lines_connection(
    stream: UnixStream,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(), ProduceError> {
    let config = &shared.config;
    let mut buf = BytesMut::new();
    let mut reader = Reader::new(shared);
    let mut charge = shared.budget.charge();
    let mut lines = LineSplitter::new(config.max_line_bytes);
    let mut format = shared.format.clone();
    let mut ids = config.record_id.then(|| Counter::new(&config.block));
    let metrics = shared.producer.metrics().clone();
    loop {
        // The bytes held and read, the spool's copy of their data, and the
        // records of one batch (cut before their overhead passes
        // LINES_RECORDS_BYTES).
        let want = Want {
            charge: 2 * (buf.len() + READ_BYTES) + LINES_RECORDS_BYTES,
            buffer: buf.len() + READ_BYTES,
        };
        let n = match reader
            .read(&stream, &mut buf, &mut charge, want, shutdown)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                // The end, as if the client had closed: what it sent is kept.
                shared.no_budget(&e);
                0
            }
        };
        let eof = n == 0;
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut truncated = 0;
        while let Some(line) = lines.next_line(&mut buf, eof) {
            let (bytes, cut) = push_line(&mut format, &mut ids, line, &mut batch);
            batch_bytes += bytes;
            truncated += u64::from(cut);
            if batch_bytes >= BATCH_BYTES || batch.len() * RECORD_OVERHEAD >= LINES_RECORDS_BYTES {
                send(shared, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
        }
        if lines.rejected > 0 {
            metrics.rejected(KIND, RejectReason::TooLarge, lines.rejected);
            if let Some(suppressed) = shared.warnings.too_large.check() {
                tracing::error!(
                    path = %shared.path(),
                    error = %format!(
                        "line of at least {} bytes exceeds the {}-byte line limit (max_record_bytes)",
                        lines.last_rejected_len, config.max_line_bytes
                    ),
                    suppressed,
                    "Refused a record"
                );
            }
            lines.rejected = 0;
        }
        shared.truncated(truncated);
        if let Some(f) = format.as_mut() {
            f.report(&metrics);
        }
        send(shared, batch).await?;
        if eof {
            return Ok(());
        }
        release(&mut buf, &mut charge, 0);
    }
}

/// After a read is handled, the connection keeps only the budget for what it left
/// unfinished (at least `keep` bytes), and no large buffer it does not use.
fn release(buf: &mut BytesMut, charge: &mut Charge, keep: usize) {
    if buf.is_empty() && buf.capacity() > 2 * READ_BYTES {
        *buf = BytesMut::new();
    }
    charge.shrink_to(keep.max(buf.len()));
}

/// Adds the record of a line or datagram to `batch`, in `format` (`None`: raw);
/// returns its size and whether it had to be truncated to fit once wrapped.
fn push_line(
    format: &mut Option<JsonFormatter>,
    ids: &mut Option<Counter>,
    line: bytes::Bytes,
    batch: &mut Vec<UserRecord>,
) -> (usize, bool) {
    let partition_key = random_partition_key();
    let Some(format) = format else {
        let line = match ids {
            Some(ids) => ids.prefix_next(&line),
            None => line,
        };
        let n = line.len();
        batch.push(UserRecord {
            partition_key,
            explicit_hash_key: None,
            data: line,
        });
        return (n, false);
    };
    if let Some(ids) = ids {
        format.set_id(ids.next_id());
    }
    let mut n = 0;
    // A socket has no `oversized` setting: a line that only overflows once
    // escaped keeps its head, the way an over-long frame is never split.
    let cut = format.format(&line, JSON_RECORD_BYTES, Oversized::Truncate, |data| {
        n += data.len();
        batch.push(UserRecord {
            partition_key: partition_key.clone(),
            explicit_hash_key: None,
            data,
        });
    });
    (n, cut != Cut::None)
}

async fn send(shared: &Shared, batch: Vec<UserRecord>) -> Result<(), ProduceError> {
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len() as u64;
    shared.producer.metrics().received(KIND, n);
    let result = shared
        .producer
        .spool_batch(
            &shared.config.stream,
            KIND,
            batch,
            None,
            None,
            Some(Pace::HANDOVER),
        )
        .await;
    if let Err(ProduceError::Stopped) = &result {
        lost_at_shutdown(shared, n);
    }
    result
}

/// Records read from a client that has no answer to wait for (lines,
/// datagrams), which the agent could not spool before it stopped (the spool was
/// full): they are lost, and said so.
fn lost_at_shutdown(shared: &Shared, n: u64) {
    shared
        .producer
        .metrics()
        .rejected(KIND, RejectReason::ShuttingDown, n);
    tracing::error!(path = %shared.path(), records = n,
        "Records read from the socket could not be spooled before the agent stopped (the spool is full); they are lost (shardline_records_rejected_total, reason shutting_down)");
}

/// Serves a datagram socket: each datagram is one record.
async fn datagrams(socket: UnixDatagram, shared: &Shared, shutdown: &CancellationToken) {
    let config = &shared.config;
    // One more byte than accepted: a datagram that fills it is too long.
    let mut buf = vec![0u8; config.max_line_bytes + 1];
    let mut format = shared.format.clone();
    let mut ids = config.record_id.then(|| Counter::new(&config.block));
    let metrics = shared.producer.metrics().clone();
    loop {
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut rejected = 0u64;
        let mut truncated = 0u64;
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv(&mut buf) => r,
        };
        let mut next = Some(n);
        while let Some(r) = next {
            match r {
                Ok(n) if n > config.max_line_bytes => {
                    rejected += 1;
                }
                Ok(0) => {}
                Ok(n) => {
                    let line = bytes::Bytes::copy_from_slice(&buf[..n]);
                    let (bytes, cut) = push_line(&mut format, &mut ids, line, &mut batch);
                    batch_bytes += bytes;
                    truncated += u64::from(cut);
                }
                Err(e) => {
                    tracing::warn!(path = %shared.path(), error = %e, "Receiving a datagram failed");
                }
            }
            // Take whatever else is waiting into the same batch.
            next = if batch_bytes < BATCH_BYTES {
                match socket.try_recv(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    other => Some(other),
                }
            } else {
                None
            };
        }
        if rejected > 0 {
            metrics.rejected(KIND, RejectReason::TooLarge, rejected);
            if let Some(suppressed) = shared.warnings.too_large.check() {
                tracing::error!(
                    path = %shared.path(),
                    error = %format!("datagram exceeds the {}-byte limit (max_record_bytes)", config.max_line_bytes),
                    suppressed,
                    "Refused a record"
                );
            }
        }
        shared.truncated(truncated);
        if let Some(f) = format.as_mut() {
            f.report(&metrics);
        }
        let n = batch.len() as u64;
        match send(shared, batch).await {
            Ok(()) => {}
            Err(ProduceError::Stopped) => {
                // Reported by `send`.
                tracing::debug!("Datagram source stopped");
                return;
            }
            Err(e) => {
                // A datagram has no sender to tell: it is counted and dropped, and
                // the source goes on (a WARN per interval, not per datagram).
                metrics.rejected(KIND, RejectReason::SpoolError, n);
                if let Some(suppressed) = shared.warnings.spool_refused.check() {
                    tracing::warn!(path = %shared.path(), error = %e, records = n, suppressed,
                        "The spool refused datagrams; they are dropped and counted (shardline_records_rejected_total, reason spool_error)");
                }
            }
        }
    }
}
