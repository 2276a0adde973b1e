//! Unix socket source, in three forms:
//!
//! - stream socket, `lines`: newline-delimited records, one per line, random
//!   partition keys;
//! - stream socket, `frames`: the length-prefixed protocol of [`frame`], where each
//!   record carries its own keys and a client can ask for an ack that is sent only
//!   once its records are durable in the spool;
//! - datagram socket: one datagram = one record (syslog-style producers).
//!
//! Each connection reads into one bounded buffer and turns what a read produced into
//! one batch (one spool entry) of up to [`BATCH_BYTES`]; a record's data is a slice
//! of the read buffer, so nothing is copied between the socket and the spool
//! encoder. Bad input (an over-long line, an invalid key, a broken frame) gets a
//! clear error — to the client where the protocol can carry it, to the log and to a
//! counter — and everyone else keeps flowing. Connections are bounded per socket and
//! so is every buffer; when the spool is full, reads pause (or frames are refused,
//! per `on_full`).

pub mod client;
pub mod frame;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixDatagram, UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Framing, OnFull, SocketConfig, SocketMode};
use crate::producer::{Pace, ProduceError, Producer};
use crate::record::{parse_explicit_hash_key, random_partition_key, RecordError, UserRecord};
use frame::{Request, Response, Status};

/// Source kind, as it appears in metrics.
pub const KIND: &str = "socket";
/// A batch is cut at this many bytes: large enough for the spool's fast path (it
/// writes tens of KiB per entry far faster than single records), small enough to
/// keep per-connection memory low.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Size of one read.
const READ_BYTES: usize = 64 * 1024;
/// Responses a frames connection may owe before it stops reading: enough for deep
/// pipelining, bounded so a client that never reads cannot grow memory.
const RESPONSE_QUEUE: usize = 1024;

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

/// A bound socket, ready to serve.
pub enum Bound {
    Stream(UnixListener),
    Datagram(UnixDatagram),
}

/// Binds the socket of `config`, replacing a stale socket file left by a crashed
/// run (but never a file that is not a socket, nor a socket someone still listens
/// on), and sets its mode and owner.
pub fn bind(config: &SocketConfig) -> Result<Bound, SocketError> {
    let path = &config.path;
    let bind_err = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let live = match config.mode {
                SocketMode::Stream => std::os::unix::net::UnixStream::connect(path).is_ok(),
                SocketMode::Datagram => std::os::unix::net::UnixDatagram::unbound()
                    .and_then(|d| d.connect(path))
                    .is_ok(),
            };
            if live {
                return Err(SocketError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
    }
    let bound = match config.mode {
        SocketMode::Stream => Bound::Stream(UnixListener::bind(path).map_err(bind_err)?),
        SocketMode::Datagram => Bound::Datagram(UnixDatagram::bind(path).map_err(bind_err)?),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.file_mode))
        .map_err(bind_err)?;
    if config.owner.is_some() || config.group.is_some() {
        std::os::unix::fs::chown(path, config.owner, config.group).map_err(bind_err)?;
    }
    Ok(bound)
}

/// Whether a peer may connect, by its credentials.
pub fn peer_allowed(config: &SocketConfig, uid: u32, gid: u32) -> bool {
    (config.allow_uids.is_empty() && config.allow_gids.is_empty())
        || config.allow_uids.contains(&uid)
        || config.allow_gids.contains(&gid)
}

/// Serves one bound socket until `shutdown`.
pub async fn serve(
    bound: Bound,
    config: SocketConfig,
    producer: Producer,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let config = Arc::new(config);
    tracing::info!(
        path = %config.path.display(),
        stream = %config.stream,
        mode = ?config.mode,
        framing = ?config.framing,
        "Listening on socket"
    );
    match bound {
        Bound::Stream(listener) => {
            accept_loop(listener, config.clone(), producer, shutdown, tracker).await
        }
        Bound::Datagram(socket) => datagrams(socket, &config, &producer, &shutdown).await,
    }
    let _ = std::fs::remove_file(&config.path);
}

async fn accept_loop(
    listener: UnixListener,
    config: Arc<SocketConfig>,
    producer: Producer,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
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
                tracing::warn!(path = %config.path.display(), error = %e, "Accepting a socket connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Ok(cred) = stream.peer_cred() {
            if !peer_allowed(&config, cred.uid(), cred.gid()) {
                producer.metrics().socket_error(KIND, "peer_refused");
                tracing::warn!(
                    path = %config.path.display(),
                    uid = cred.uid(),
                    gid = cred.gid(),
                    pid = ?cred.pid(),
                    "Refused a connection from a peer not in allow_uids/allow_gids"
                );
                continue;
            }
        }
        let (config, producer, shutdown) = (config.clone(), producer.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let result = match config.framing {
                Framing::Lines => lines_connection(stream, &config, &producer, &shutdown).await,
                Framing::Frames => frames_connection(stream, &config, &producer, &shutdown).await,
            };
            if let Err(e) = result {
                tracing::debug!(path = %config.path.display(), error = %e, "Socket connection ended with an error");
            }
        });
    }
}

/// Reads one lines client until it closes, or until shutdown (the batch in hand is
/// spooled first).
async fn lines_connection(
    mut stream: UnixStream,
    config: &SocketConfig,
    producer: &Producer,
    shutdown: &CancellationToken,
) -> Result<(), ProduceError> {
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    let mut drained = None;
    let mut lines = LineSplitter::new(config.max_line_bytes);
    let metrics = producer.metrics().clone();
    loop {
        if buf.capacity() - buf.len() < READ_BYTES / 4 {
            buf.reserve(READ_BYTES);
        }
        let n = read_or_drain(&mut stream, &mut buf, shutdown, &mut drained).await;
        let eof = n == 0;
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        while let Some(line) = lines.next_line(&mut buf, eof) {
            batch_bytes += line.len();
            batch.push(UserRecord {
                partition_key: random_partition_key(),
                explicit_hash_key: None,
                data: line,
            });
            if batch_bytes >= BATCH_BYTES {
                send(producer, config, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
        }
        if lines.rejected > 0 {
            metrics.rejected(KIND, "too_large", lines.rejected);
            if !lines.logged {
                lines.logged = true;
                tracing::error!(
                    path = %config.path.display(),
                    error = %format!(
                        "line of {} bytes exceeds the {}-byte line limit (max_line_bytes)",
                        lines.last_rejected_len, config.max_line_bytes
                    ),
                    "Refused a record; further refusals on this connection are only counted"
                );
            }
            lines.rejected = 0;
        }
        send(producer, config, batch).await?;
        if eof {
            return Ok(());
        }
    }
}

/// Bytes a connection may still take in once its source stops: what clients had
/// already written is spooled, but a client that keeps writing cannot hold the stop.
const DRAIN_BYTES: usize = 1024 * 1024;

/// Reads from a client; 0 means the end. Once the source stops, only what is
/// already waiting in the socket is read (up to [`DRAIN_BYTES`]), then the end.
async fn read_or_drain<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    shutdown: &CancellationToken,
    drained: &mut Option<usize>,
) -> usize {
    if drained.is_none() {
        tokio::select! {
            _ = shutdown.cancelled() => *drained = Some(0),
            r = stream.read_buf(buf) => return r.unwrap_or(0),
        }
    }
    let so_far = drained.get_or_insert(0);
    if *so_far >= DRAIN_BYTES {
        return 0;
    }
    // Nothing more within the grace period, or an error: the end.
    let n = match tokio::time::timeout(DRAIN_GRACE, stream.read_buf(buf)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    *so_far += n;
    n
}

/// How long a stopping source waits for input its clients already sent (the
/// socket's readiness may not have been seen yet).
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

async fn send(
    producer: &Producer,
    config: &SocketConfig,
    batch: Vec<UserRecord>,
) -> Result<(), ProduceError> {
    if batch.is_empty() {
        return Ok(());
    }
    producer.metrics().received(KIND, batch.len() as u64);
    producer
        .spool_batch(
            &config.stream,
            KIND,
            batch,
            None,
            None,
            Some(Pace::HANDOVER),
        )
        .await
}

/// What a frames connection owes its client, in request order.
enum Owed {
    /// Answer OK once the spool is durable.
    Ack { id: u64, records: u32 },
    /// Answer at once.
    Error(Response),
}

fn error_response(id: u64, status: Status, message: String) -> Response {
    Response {
        id,
        status: status as i32,
        message,
        records: 0,
    }
}

/// Turns a request's records into user records, or the error answer for it.
fn request_records(req: &mut Request) -> Result<Vec<UserRecord>, Response> {
    let mut out = Vec::with_capacity(req.records.len());
    for (i, r) in std::mem::take(&mut req.records).into_iter().enumerate() {
        let ehk = match r.explicit_hash_key.as_deref().map(parse_explicit_hash_key) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => {
                return Err(error_response(
                    req.id,
                    Status::InvalidRecord,
                    format!("record {i}: {e}"),
                ))
            }
        };
        let record = UserRecord {
            partition_key: r.partition_key,
            explicit_hash_key: ehk,
            data: r.data,
        };
        if let Err(e) = record.validate() {
            let status = match e {
                RecordError::TooLarge { .. } => Status::RecordTooLarge,
                _ => Status::InvalidRecord,
            };
            return Err(error_response(req.id, status, format!("record {i}: {e}")));
        }
        out.push(record);
    }
    Ok(out)
}

fn reject_reason(status: Status) -> &'static str {
    match status {
        Status::RecordTooLarge => "too_large",
        _ => "invalid_record",
    }
}

/// Serves one frames client: a reader spools requests in order, a writer answers
/// them in order, acks after the spool's group commit.
async fn frames_connection(
    stream: UnixStream,
    config: &SocketConfig,
    producer: &Producer,
    shutdown: &CancellationToken,
) -> Result<(), ProduceError> {
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Owed>(RESPONSE_QUEUE);
    let writer = tokio::spawn(answer(wr, rx, producer.clone()));
    let metrics = producer.metrics().clone();
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    let mut drained = None;
    'read: loop {
        if buf.capacity() - buf.len() < READ_BYTES / 4 {
            buf.reserve(READ_BYTES);
        }
        let n = read_or_drain(&mut rd, &mut buf, shutdown, &mut drained).await;
        loop {
            let mut req: Request = match frame::decode(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    metrics.socket_error(KIND, "bad_frame");
                    tracing::warn!(path = %config.path.display(), error = %e, "Refused a bad frame");
                    let fatal = !e.recoverable();
                    let _ = tx
                        .send(Owed::Error(error_response(
                            0,
                            Status::BadFrame,
                            e.to_string(),
                        )))
                        .await;
                    if fatal {
                        break 'read;
                    }
                    continue;
                }
            };
            let n_records = req.records.len();
            metrics.received(KIND, n_records as u64);
            let owed = match request_records(&mut req) {
                Err(resp) => {
                    let status = Status::try_from(resp.status).unwrap_or(Status::InvalidRecord);
                    metrics.rejected(KIND, reject_reason(status), n_records as u64);
                    tracing::warn!(path = %config.path.display(), error = %resp.message, "Refused a frame's records");
                    Owed::Error(resp)
                }
                Ok(records) => {
                    let n = records.len() as u32;
                    let result = match config.on_full {
                        OnFull::Wait => {
                            producer
                                .spool_batch(
                                    &config.stream,
                                    KIND,
                                    records,
                                    None,
                                    None,
                                    Some(Pace::HANDOVER),
                                )
                                .await
                        }
                        OnFull::Refuse => {
                            producer.try_spool_batch(&config.stream, KIND, records, None)
                        }
                    };
                    match result {
                        Ok(()) if req.ack => Owed::Ack {
                            id: req.id,
                            records: n,
                        },
                        Ok(()) => continue,
                        Err(e) => {
                            let status = match e {
                                ProduceError::SpoolFull(_) => Status::SpoolFull,
                                ProduceError::Stopped => Status::ShuttingDown,
                                _ => Status::Internal,
                            };
                            Owed::Error(error_response(req.id, status, e.to_string()))
                        }
                    }
                }
            };
            if tx.send(owed).await.is_err() {
                break 'read; // the client stopped reading answers
            }
        }
        if n == 0 {
            if !buf.is_empty() {
                metrics.socket_error(KIND, "truncated_frame");
                tracing::warn!(
                    path = %config.path.display(),
                    error = %format!("connection closed inside a frame ({} bytes pending)", buf.len()),
                    "Dropped a truncated frame"
                );
            }
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// Writes a frames connection's answers in order; acks wait for the spool's group
/// commit that covers them.
async fn answer(
    mut wr: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Owed>,
    producer: Producer,
) {
    let mut out = BytesMut::new();
    while let Some(owed) = rx.recv().await {
        let resp = match owed {
            Owed::Error(r) => r,
            Owed::Ack { id, records } => match producer.spool().durable().await {
                Ok(()) => Response {
                    id,
                    status: Status::Ok as i32,
                    message: String::new(),
                    records,
                },
                Err(e) => error_response(id, Status::Internal, e.to_string()),
            },
        };
        frame::encode(&resp, &mut out);
        // Answers that are ready go out together.
        if rx.is_empty() || out.len() >= READ_BYTES {
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
    let _ = wr.write_all(&out).await;
    let _ = wr.shutdown().await;
}

/// Serves a datagram socket: each datagram is one record.
async fn datagrams(
    socket: UnixDatagram,
    config: &SocketConfig,
    producer: &Producer,
    shutdown: &CancellationToken,
) {
    // One more byte than accepted: a datagram that fills it is too long.
    let mut buf = vec![0u8; config.max_line_bytes + 1];
    let metrics = producer.metrics().clone();
    let mut logged = false;
    let mut last_spool_warn: Option<std::time::Instant> = None;
    loop {
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut rejected = 0u64;
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
                    batch_bytes += n;
                    batch.push(UserRecord {
                        partition_key: random_partition_key(),
                        explicit_hash_key: None,
                        data: bytes::Bytes::copy_from_slice(&buf[..n]),
                    });
                }
                Err(e) => {
                    tracing::warn!(path = %config.path.display(), error = %e, "Receiving a datagram failed");
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
            metrics.rejected(KIND, "too_large", rejected);
            if !logged {
                logged = true;
                tracing::error!(
                    path = %config.path.display(),
                    error = %format!("datagram exceeds the {}-byte limit (max_line_bytes)", config.max_line_bytes),
                    "Refused a record; further refusals on this socket are only counted"
                );
            }
        }
        let n = batch.len() as u64;
        match send(producer, config, batch).await {
            Ok(()) => {}
            Err(ProduceError::Stopped) => {
                tracing::debug!("Datagram source stopped");
                return;
            }
            Err(e) => {
                // A datagram has no sender to tell: it is counted and dropped, and
                // the source goes on (a WARN per interval, not per datagram).
                metrics.rejected(KIND, "spool_error", n);
                let now = std::time::Instant::now();
                if last_spool_warn.is_none_or(|t| now.duration_since(t) >= SPOOL_WARN_INTERVAL) {
                    last_spool_warn = Some(now);
                    tracing::warn!(path = %config.path.display(), error = %e, records = n,
                        "The spool refused datagrams; they are dropped and counted (shardline_records_rejected_total, reason spool_error)");
                }
            }
        }
    }
}

/// Least time between two warnings about datagrams the spool refused.
const SPOOL_WARN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Splits a read buffer into lines, refusing those over the limit.
struct LineSplitter {
    max: usize,
    /// Inside an over-long line: drop bytes until its newline.
    discarding: bool,
    rejected: u64,
    last_rejected_len: usize,
    /// Length of the over-long line seen so far.
    discarded: usize,
    logged: bool,
}

impl LineSplitter {
    fn new(max: usize) -> Self {
        LineSplitter {
            max,
            discarding: false,
            rejected: 0,
            last_rejected_len: 0,
            discarded: 0,
            logged: false,
        }
    }

    /// The next complete, non-empty line (without `\n` or `\r\n`); at EOF a final
    /// line without a newline counts too.
    fn next_line(&mut self, buf: &mut BytesMut, eof: bool) -> Option<bytes::Bytes> {
        loop {
            let newline = buf.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.discarded += i;
                        buf.advance(i + 1);
                        self.discarding = false;
                        self.reject(self.discarded);
                        continue;
                    }
                    None => {
                        self.discarded += buf.len();
                        buf.clear();
                        if eof {
                            self.discarding = false;
                            self.reject(self.discarded);
                        }
                        return None;
                    }
                }
            }
            let end = match newline {
                Some(i) => i,
                None if eof && !buf.is_empty() => buf.len(),
                None => {
                    if buf.len() > self.max {
                        // Already too long and still growing.
                        self.discarding = true;
                        self.discarded = 0;
                        continue;
                    }
                    return None;
                }
            };
            let mut line = buf.split_to(end);
            if !buf.is_empty() {
                buf.advance(1); // the newline
            }
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.len() > self.max {
                self.reject(line.len());
                continue;
            }
            if line.is_empty() {
                continue;
            }
            return Some(line.freeze());
        }
    }

    fn reject(&mut self, len: usize) {
        self.rejected += 1;
        self.last_rejected_len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> (Vec<String>, u64) {
        let mut s = LineSplitter::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            buf.extend_from_slice(c);
            let eof = i == chunks.len() - 1;
            while let Some(l) = s.next_line(&mut buf, eof) {
                out.push(String::from_utf8(l.to_vec()).unwrap());
            }
        }
        (out, s.rejected)
    }

    fn socket(uids: Vec<u32>, gids: Vec<u32>) -> SocketConfig {
        SocketConfig {
            path: "/x".into(),
            mode: SocketMode::Stream,
            framing: Framing::Frames,
            stream: "s".into(),
            max_line_bytes: 10,
            file_mode: 0o660,
            owner: None,
            group: None,
            allow_uids: uids,
            allow_gids: gids,
            max_connections: 1,
            on_full: OnFull::Wait,
        }
    }

    #[test]
    fn peer_credentials_decide_access() {
        assert!(peer_allowed(&socket(vec![], vec![]), 1000, 1000));
        let c = socket(vec![0, 1000], vec![]);
        assert!(peer_allowed(&c, 1000, 5));
        assert!(!peer_allowed(&c, 65534, 65534));
        let c = socket(vec![], vec![4]);
        assert!(peer_allowed(&c, 1234, 4));
        assert!(!peer_allowed(&c, 1234, 5));
    }

    #[test]
    fn lines_across_reads_and_crlf() {
        let (lines, rejected) = split(&[b"ab", b"c\r\nde\n\n", b"f"], 10);
        assert_eq!(lines, vec!["abc", "de", "f"]);
        assert_eq!(rejected, 0);
    }

    #[test]
    fn long_lines_are_refused_and_the_rest_flows() {
        let (lines, rejected) = split(&[b"ok\n0123456789", b"0123\nafter\n", b"x"], 10);
        assert_eq!(lines, vec!["ok", "after", "x"]);
        assert_eq!(rejected, 1);
        let (lines, rejected) = split(&[b"01234567890\nz\n"], 10);
        assert_eq!(lines, vec!["z"]);
        assert_eq!(rejected, 1);
        let (lines, rejected) = split(&[b"0123456789"], 10);
        assert_eq!(lines, vec!["0123456789"]);
        assert_eq!(rejected, 0);
    }
}
