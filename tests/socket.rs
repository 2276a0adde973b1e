//! The socket source: its framed protocol, datagrams, permissions and bad input.
//!
//! - [`frames`]: bad frames, a thousand connections, a flood of bad frames.
//! - [`limits`]: connection slots, idle connections, the ingest memory budget.
//! - [`access`]: socket files, file modes, peers by uid and group.
//! - [`delivery`]: datagrams, acked records after a SIGKILL, `shardline send`.
//!
//! This module holds the framed-protocol client they share: it owns no state,
//! each test owns its agent and socket.

mod access;
mod delivery;
mod frames;
mod limits;

use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shardline::testkit::frame::{self, Record, Request, Response, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A `[[socket]]` block with `framing = "frames"` at `path`, then `extra`.
fn frames_socket(path: &Path, extra: &str) -> String {
    format!(
        "[[socket]]\npath = \"{}\"\nframing = \"frames\"\n{extra}\n",
        path.display()
    )
}

/// A request of `(partition key, data)` records.
fn request(id: u64, records: Vec<(&str, &str)>, ack: bool) -> Request {
    Request {
        id,
        records: records
            .into_iter()
            .map(|(k, d)| Record {
                partition_key: k.into(),
                explicit_hash_key: None,
                data: Bytes::copy_from_slice(d.as_bytes()),
                record_id: None,
            })
            .collect(),
        ack,
        stream: None,
    }
}

/// Writes raw bytes, closes the write side, and reads every answer until the
/// agent closes.
async fn exchange(path: &Path, wire: &[u8]) -> Vec<Response> {
    let mut s = UnixStream::connect(path).await.unwrap();
    // The agent may close early on a fatal frame: a failed write is part of the test.
    let _ = s.write_all(wire).await;
    let _ = s.shutdown().await;
    let mut buf = BytesMut::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_buf_to_end(&mut buf)).await;
    let mut out = Vec::new();
    while let Some(r) = frame::decode::<Response>(&mut buf).unwrap() {
        out.push(r);
    }
    out
}

/// Reads until the peer closes.
trait ReadAll {
    async fn read_buf_to_end(&mut self, buf: &mut BytesMut) -> std::io::Result<()>;
}

impl ReadAll for UnixStream {
    async fn read_buf_to_end(&mut self, buf: &mut BytesMut) -> std::io::Result<()> {
        while self.read_buf(buf).await? > 0 {}
        Ok(())
    }
}

/// `req` as it goes on the wire.
fn encoded(req: &Request) -> Vec<u8> {
    let mut b = BytesMut::new();
    frame::encode(req, &mut b);
    b.to_vec()
}

/// An answer's status.
fn status(r: &Response) -> Status {
    Status::try_from(r.status).unwrap()
}
