//! The client side of the framed protocol, behind `shardline send`: reads lines,
//! sends them in batches, optionally asks for acks, and counts what came back.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::frame::{self, Record, Request, Response, Status};
use crate::record::random_partition_key;

/// Records per request: the PutRecords batch size, a good unit for acks too.
const BATCH_RECORDS: usize = 500;
/// Bytes per request, well under the frame limit.
const BATCH_BYTES: usize = 1024 * 1024;

/// Errors of `shardline send`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}")]
    Connect {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading input failed")]
    Input(#[source] std::io::Error),
    #[error("connection to the agent failed")]
    Connection(#[source] std::io::Error),
    #[error("the agent sent an unreadable answer: {0}")]
    Protocol(#[from] frame::FrameError),
}

/// What a send achieved.
#[derive(Debug, Default, Clone)]
pub struct SendReport {
    pub sent: u64,
    /// Records the agent acknowledged as durable.
    pub acknowledged: u64,
    /// Records the agent refused.
    pub refused: u64,
    /// The agent's error messages (status: message).
    pub errors: Vec<String>,
}

/// Sends every line of `input` to the agent at `socket` (empty lines skipped).
pub async fn send_lines(
    socket: &Path,
    partition_key: Option<&str>,
    ack: bool,
    mut input: impl AsyncBufRead + Unpin,
) -> Result<SendReport, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move { read_answers(&mut rd).await });
    let mut report = SendReport::default();
    let mut sizes = std::collections::HashMap::new();
    let mut out = BytesMut::new();
    let mut records = Vec::new();
    let mut bytes = 0;
    let mut id = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .await
            .map_err(ClientError::Input)?;
        if n > 0 {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if !line.is_empty() {
                bytes += line.len();
                records.push(Record {
                    partition_key: partition_key.map_or_else(random_partition_key, str::to_owned),
                    explicit_hash_key: None,
                    data: Bytes::copy_from_slice(&line),
                    record_id: None,
                });
            }
        }
        let full = records.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES;
        if (n == 0 || full) && !records.is_empty() {
            id += 1;
            sizes.insert(id, records.len() as u64);
            report.sent += records.len() as u64;
            frame::encode(
                &Request {
                    id,
                    records: std::mem::take(&mut records),
                    ack,
                    stream: None,
                },
                &mut out,
            );
            bytes = 0;
            wr.write_all(&out).await.map_err(ClientError::Connection)?;
            out.clear();
        }
        if n == 0 {
            break;
        }
    }
    // Closing our side tells the agent we are done; it answers what it owes, then
    // closes too.
    wr.shutdown().await.map_err(ClientError::Connection)?;
    let answers = reader.await.expect("reader task panicked")?;
    for a in answers {
        report.count(&a, sizes.get(&a.id).copied().unwrap_or(0));
    }
    Ok(report)
}

/// The agent's answers, until it closes the connection.
async fn read_answers(
    rd: &mut tokio::net::unix::OwnedReadHalf,
) -> Result<Vec<Response>, ClientError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut answers = Vec::new();
    loop {
        while let Some(r) = frame::decode::<Response>(&mut buf)? {
            answers.push(r);
        }
        if rd
            .read_buf(&mut buf)
            .await
            .map_err(ClientError::Connection)?
            == 0
        {
            return Ok(answers);
        }
    }
}

impl SendReport {
    /// Counts one answer to a request of `records` records.
    fn count(&mut self, a: &Response, records: u64) {
        match Status::try_from(a.status) {
            Ok(Status::Ok) => self.acknowledged += a.records as u64,
            other => {
                self.refused += records;
                let status =
                    other.map_or_else(|_| format!("status {}", a.status), |s| format!("{s:?}"));
                self.errors.push(format!("{status}: {}", a.message));
            }
        }
    }
}
