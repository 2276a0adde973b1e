//! The framed protocol's connections: a reader spools requests in order, a writer
//! answers them in order, acks once the producer says the records are durable
//! ([`Producer::durable`], the spool's group commit).
//!
//! Owns nothing past one connection: its buffer, its budget charge and the
//! answers it owes. Called by the socket's accept loop (`frames_connection`).

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Request, Response, Status};
use super::reader::{Reader, Want};
use super::{release, Shared, KIND, READ_BYTES, RESPONSE_QUEUE};
use crate::config::OnFull;
use crate::metrics::{RejectReason, SourceError};
use crate::producer::{Pace, ProduceError, Producer};
use crate::record::{parse_explicit_hash_key, RecordError, UserRecord};
use crate::source::budget::{BudgetError, Charge, RECORD_OVERHEAD};
use crate::source::record_id::{self, Counter};

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
pub(super) fn request_records(
    req: &mut Request,
    mut ids: Option<&mut Counter>,
) -> Result<Vec<UserRecord>, Response> {
    let mut out = Vec::with_capacity(req.records.len());
    for (i, r) in std::mem::take(&mut req.records).into_iter().enumerate() {
        let invalid =
            |e: String| error_response(req.id, Status::InvalidRecord, format!("record {i}: {e}"));
        let data = match (ids.as_deref_mut(), &r.record_id) {
            (None, _) => r.data,
            (Some(_), Some(id)) => {
                record_id::check_client_id(id).map_err(invalid)?;
                record_id::prefixed(id.as_bytes(), 0, &r.data)
            }
            (Some(c), None) => c.prefix_next(&r.data),
        };
        let ehk = match r.explicit_hash_key.as_deref().map(parse_explicit_hash_key) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => return Err(invalid(e.to_string())),
        };
        let record = UserRecord {
            partition_key: r.partition_key,
            explicit_hash_key: ehk,
            data,
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

/// The key of the stream a request's records go to: the socket's own, or one
/// its `streams` allow (by name, or by ARN where it was written as one).
fn request_stream<'a>(
    config: &'a crate::config::SocketConfig,
    req: &Request,
) -> Result<&'a str, Response> {
    let Some(name) = req.stream.as_deref() else {
        return Ok(&config.stream);
    };
    match config.streams.iter().find(|(n, _)| n == name) {
        Some((_, key)) => Ok(key),
        None => Err(error_response(
            req.id,
            Status::InvalidRecord,
            format!(
                "stream {:?} is not one this socket may write to (its own, or one in its `streams`)",
                crate::record::excerpt(name)
            ),
        )),
    }
}

fn reject_reason(status: Status) -> RejectReason {
    match status {
        Status::RecordTooLarge => RejectReason::TooLarge,
        _ => RejectReason::InvalidRecord,
    }
}

/// What the reader does next with the bytes it holds.
enum Step<T> {
    /// Go on with this.
    Go(T),
    /// The frame was skipped; look at the next one.
    Skip,
    /// Nothing more to do until the next read.
    Read,
    /// The connection ends.
    Stop,
}

/// Serves one frames client: a reader spools requests in order, a writer answers
/// them in order, acks after the spool's group commit.
pub(super) async fn frames_connection(
    stream: UnixStream,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(), ProduceError> {
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Owed>(RESPONSE_QUEUE);
    let writer = tokio::spawn(answer(wr, rx, shared.producer.clone()));
    let mut buf = BytesMut::new();
    let mut reader = Reader::new(shared);
    let mut charge = shared.budget.charge();
    let mut ids = (shared.config.record_id).then(|| Counter::new(&shared.config.block));
    let mut stopping = false;
    'read: loop {
        // The bytes held and read, or the whole frame in progress once its header
        // came: it is charged (and given room) before its bytes are taken in.
        let pending = frame::pending_len(&buf).unwrap_or(0);
        let room = pending.max(buf.len() + READ_BYTES);
        let want = Want {
            charge: room,
            buffer: room,
        };
        let n = match reader
            .read(&rd, &mut buf, &mut charge, want, shutdown)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                shared.no_budget(&e);
                let status = match e {
                    BudgetError::TooLarge { .. } => Status::BadFrame,
                    BudgetError::Timeout { .. } => Status::Internal,
                };
                let _ = tx
                    .send(Owed::Error(error_response(0, status, e.to_string())))
                    .await;
                break 'read;
            }
        };
        loop {
            match charge_frame(shared, &mut buf, &mut charge, &tx).await {
                Step::Go(()) => {}
                Step::Skip => continue,
                Step::Read => break,
                Step::Stop => break 'read,
            }
            let req = match decode_frame(shared, &mut buf, &tx).await {
                Step::Go(req) => req,
                Step::Skip => continue,
                Step::Read => break,
                Step::Stop => break 'read,
            };
            let Some(owed) = spool_request(shared, req, ids.as_mut()).await else {
                continue;
            };
            if tx.send(owed).await.is_err() {
                break 'read; // the client stopped reading answers
            }
        }
        if n == 0 {
            // The drain of a stop ended: the rest is refused below.
            stopping = shutdown.is_cancelled();
            if !buf.is_empty() && !stopping {
                truncated_frame(shared, buf.len());
            }
            break;
        }
        // A frame in progress keeps its whole charge (its room is reserved): given
        // back and charged again at each read, it would queue behind every other
        // connection once per read.
        let in_progress = frame::pending_len(&buf).unwrap_or(0);
        release(&mut buf, &mut charge, in_progress);
    }
    if stopping {
        refuse_rest(shared, &rd, &mut buf, &mut charge, &tx).await;
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// A complete frame: decoding it and the spool's copy of its data are charged
/// before they are paid. A frame that can never fit is skipped (and answered); a
/// wait that timed out ends the connection.
async fn charge_frame(
    shared: &Shared,
    buf: &mut BytesMut,
    charge: &mut Charge,
    tx: &mpsc::Sender<Owed>,
) -> Step<()> {
    let Some(len) = frame::pending_len(buf).filter(|&l| l <= buf.len()) else {
        return Step::Go(());
    };
    let records = frame::count_records(&buf[..len]);
    let need = buf.len() + len + records * RECORD_OVERHEAD;
    if need <= charge.held() {
        return Step::Go(());
    }
    let Err(e) = charge.set(need).await else {
        return Step::Go(());
    };
    shared.no_budget(&e);
    let message = format!("frame of {len} bytes with {records} records: {e}");
    let timeout = matches!(e, BudgetError::Timeout { .. });
    let status = if timeout {
        Status::Internal
    } else {
        Status::BadFrame
    };
    let _ = tx
        .send(Owed::Error(error_response(0, status, message)))
        .await;
    if timeout {
        return Step::Stop;
    }
    // It cannot fit however long it waits: skipped, and the connection goes on.
    bytes::Buf::advance(buf, len);
    Step::Skip
}

/// Decodes the next frame, if complete; a bad one is counted and answered, and
/// ends the connection unless the stream can be read past it.
async fn decode_frame(
    shared: &Shared,
    buf: &mut BytesMut,
    tx: &mpsc::Sender<Owed>,
) -> Step<Request> {
    match frame::decode(buf) {
        Ok(Some(r)) => Step::Go(r),
        Ok(None) => Step::Read,
        Err(e) => {
            let metrics = shared.producer.metrics();
            metrics.source_error(KIND, SourceError::BadFrame);
            if let Some(suppressed) = shared.warnings.bad_frame.check() {
                tracing::warn!(path = %shared.path(), error = %e, suppressed, "Refused a bad frame");
            }
            let fatal = !e.recoverable();
            let _ = tx
                .send(Owed::Error(error_response(
                    0,
                    Status::BadFrame,
                    e.to_string(),
                )))
                .await;
            if fatal {
                Step::Stop
            } else {
                Step::Skip
            }
        }
    }
}

/// Spools a request's records; returns what the client is owed for it (`None`:
/// nothing, it asked for no ack).
async fn spool_request(
    shared: &Shared,
    mut req: Request,
    ids: Option<&mut Counter>,
) -> Option<Owed> {
    let (config, producer) = (&shared.config, &shared.producer);
    let metrics = producer.metrics();
    let n_records = req.records.len();
    metrics.received(KIND, n_records as u64);
    let stream = match request_stream(config, &req) {
        Ok(stream) => stream,
        Err(resp) => {
            metrics.rejected(KIND, RejectReason::InvalidRecord, n_records as u64);
            if let Some(suppressed) = shared.warnings.refused_records.check() {
                tracing::warn!(path = %shared.path(), error = %resp.message, suppressed, "Refused a frame's records");
            }
            return Some(Owed::Error(resp));
        }
    };
    let records = match request_records(&mut req, ids) {
        Ok(records) => records,
        Err(resp) => {
            let status = Status::try_from(resp.status).unwrap_or(Status::InvalidRecord);
            metrics.rejected(KIND, reject_reason(status), n_records as u64);
            if let Some(suppressed) = shared.warnings.refused_records.check() {
                tracing::warn!(path = %shared.path(), error = %resp.message, suppressed, "Refused a frame's records");
            }
            return Some(Owed::Error(resp));
        }
    };
    let n = records.len() as u32;
    let result = match config.on_full {
        OnFull::Wait => {
            producer
                .spool_batch(stream, KIND, records, None, None, Some(Pace::HANDOVER))
                .await
        }
        OnFull::Refuse => producer.try_spool_batch(stream, KIND, records, None),
    };
    match result {
        Ok(()) if req.ack => Some(Owed::Ack {
            id: req.id,
            records: n,
        }),
        Ok(()) => None,
        Err(e) => {
            let status = match e {
                ProduceError::SpoolFull(_) => Status::SpoolFull,
                ProduceError::Stopped => Status::ShuttingDown,
                // Too large for the destination (a Firehose stream's limit).
                ProduceError::InvalidRecord { ref source, .. } => {
                    let status = match source {
                        RecordError::TooLarge { .. } | RecordError::TooLargeFor { .. } => {
                            Status::RecordTooLarge
                        }
                        _ => Status::InvalidRecord,
                    };
                    metrics.rejected(KIND, reject_reason(status), n as u64);
                    status
                }
                _ => Status::Internal,
            };
            Some(Owed::Error(error_response(req.id, status, e.to_string())))
        }
    }
}

/// How long a stopping agent goes on answering `SHUTTING_DOWN` to a client that
/// keeps sending, at most.
const REFUSE_FOR: Duration = Duration::from_secs(2);
/// A client that sends nothing for this long while the agent stops is done.
const REFUSE_QUIET: Duration = Duration::from_secs(1);

/// Once the agent stops and what was waiting has been spooled, what the client
/// still sends is not: each whole frame is answered `SHUTTING_DOWN` (its records
/// are surely not in the spool, so the client may send them again without
/// doubt) until the client closes its side (as a client does at its first
/// `SHUTTING_DOWN`), goes quiet for [`REFUSE_QUIET`], or [`REFUSE_FOR`] passes.
/// Whatever it sent after that gets no answer.
async fn refuse_rest(
    shared: &Shared,
    rd: &tokio::net::unix::OwnedReadHalf,
    buf: &mut BytesMut,
    charge: &mut Charge,
    tx: &mpsc::Sender<Owed>,
) {
    let deadline = tokio::time::Instant::now() + REFUSE_FOR;
    loop {
        while let Some(len) = frame::pending_len(buf).filter(|&l| l <= buf.len()) {
            let (id, records) = (
                frame::request_id(&buf[..len]),
                frame::count_records(&buf[..len]),
            );
            bytes::Buf::advance(buf, len);
            let metrics = shared.producer.metrics();
            metrics.rejected(KIND, RejectReason::ShuttingDown, records as u64);
            let message =
                "the agent is stopping: this request was not spooled; send it again".into();
            if tx
                .send(Owed::Error(error_response(
                    id,
                    Status::ShuttingDown,
                    message,
                )))
                .await
                .is_err()
            {
                return;
            }
        }
        // The frame in progress, if it can be read whole at all, and room to read.
        let pending = frame::pending_len(buf).unwrap_or(0);
        if pending > frame::MAX_FRAME_BYTES + 4 {
            return;
        }
        let room = pending.max(buf.len() + READ_BYTES);
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ready = async {
            charge.set(room).await.ok()?;
            rd.readable().await.ok()
        };
        if wait.is_zero()
            || tokio::time::timeout(wait.min(REFUSE_QUIET), ready)
                .await
                .ok()
                .flatten()
                .is_none()
        {
            return;
        }
        let free = room - buf.len();
        buf.reserve(free);
        match rd.try_read_buf(&mut (&mut *buf).limit(free)) {
            Ok(0) => {
                if !buf.is_empty() {
                    truncated_frame(shared, buf.len());
                }
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The client closed the connection inside a frame.
fn truncated_frame(shared: &Shared, pending: usize) {
    shared
        .producer
        .metrics()
        .source_error(KIND, SourceError::TruncatedFrame);
    if let Some(suppressed) = shared.warnings.truncated_frame.check() {
        tracing::warn!(
            path = %shared.path(),
            error = %format!("connection closed inside a frame ({pending} bytes pending)"),
            suppressed,
            "Dropped a truncated frame"
        );
    }
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
            Owed::Ack { id, records } => match producer.durable().await {
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
