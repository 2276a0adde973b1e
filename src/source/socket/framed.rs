//! The framed protocol's connections: a reader spools requests in order, a writer
//! answers them in order, acks after the spool's group commit.

use super::*;

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

fn reject_reason(status: Status) -> RejectReason {
    match status {
        Status::RecordTooLarge => RejectReason::TooLarge,
        _ => RejectReason::InvalidRecord,
    }
}

/// Serves one frames client: a reader spools requests in order, a writer answers
/// them in order, acks after the spool's group commit.
pub(super) async fn frames_connection(
    stream: UnixStream,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(), ProduceError> {
    let (config, producer) = (&shared.config, &shared.producer);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Owed>(RESPONSE_QUEUE);
    let writer = tokio::spawn(answer(wr, rx, producer.clone()));
    let metrics = producer.metrics().clone();
    let mut buf = BytesMut::new();
    let mut reader = Reader::new(shared);
    let mut charge = shared.budget.charge();
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
            // A complete frame: decoding it and the spool's copy of its data are
            // charged before they are paid.
            if let Some(len) = frame::pending_len(&buf).filter(|&l| l <= buf.len()) {
                let records = frame::count_records(&buf[..len]);
                let need = buf.len() + len + records * RECORD_OVERHEAD;
                if need > charge.held() {
                    if let Err(e) = charge.set(need).await {
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
                            break 'read;
                        }
                        // It cannot fit however long it waits: skipped, and the
                        // connection goes on.
                        bytes::Buf::advance(&mut buf, len);
                        continue;
                    }
                }
            }
            let mut req: Request = match frame::decode(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
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
                    if let Some(suppressed) = shared.warnings.refused_records.check() {
                        tracing::warn!(path = %shared.path(), error = %resp.message, suppressed, "Refused a frame's records");
                    }
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
                metrics.source_error(KIND, SourceError::TruncatedFrame);
                if let Some(suppressed) = shared.warnings.truncated_frame.check() {
                    tracing::warn!(
                        path = %shared.path(),
                        error = %format!("connection closed inside a frame ({} bytes pending)", buf.len()),
                        suppressed,
                        "Dropped a truncated frame"
                    );
                }
            }
            break;
        }
        // A frame in progress keeps its whole charge (its room is reserved): given
        // back and charged again at each read, it would queue behind every other
        // connection once per read.
        let in_progress = frame::pending_len(&buf).unwrap_or(0);
        release(&mut buf, &mut charge, in_progress);
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
