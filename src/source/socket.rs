//! Unix stream socket source: newline-delimited records, one per line.
//!
//! Each connection reads into one bounded buffer and turns what a read produced into
//! one batch (one spool entry) of up to [`BATCH_BYTES`]. A line's data is a slice of
//! the read buffer, so nothing is copied between the socket and the spool encoder.
//! A line longer than `max_line_bytes` is refused with an error and a counter, and
//! the rest of the connection keeps flowing.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SocketConfig;
use crate::producer::{ProduceError, Producer};
use crate::record::{random_partition_key, UserRecord};

/// Source kind, as it appears in metrics.
pub const KIND: &str = "socket";
/// Most simultaneous client connections per socket; further clients wait in the
/// kernel's accept queue. Bounds memory to this many read buffers.
const MAX_CONNECTIONS: usize = 1024;
/// A batch is cut at this many bytes: large enough for the spool's fast path (it
/// writes tens of KiB per entry far faster than single records), small enough to
/// keep per-connection memory low.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Size of one read.
const READ_BYTES: usize = 64 * 1024;
/// Socket file mode: owner and group may write.
const SOCKET_MODE: u32 = 0o660;

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

/// Binds the socket, replacing a stale socket file left by a crashed run (but never
/// a file that is not a socket, nor a socket someone still listens on).
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let bind_err = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
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
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(bind_err)?;
    Ok(listener)
}

/// Serves one bound socket until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    config: SocketConfig,
    producer: Producer,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tracing::info!(path = %config.path.display(), stream = %config.stream, "Listening on socket");
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(path = %config.path.display(), error = %e, "Accepting a socket connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (config, producer, shutdown) = (config.clone(), producer.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, &config, &producer, &shutdown).await {
                tracing::debug!(path = %config.path.display(), error = %e, "Socket connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = std::fs::remove_file(&config.path);
}

/// Reads one client until it closes, or until shutdown (the batch in hand is spooled
/// first).
async fn connection(
    mut stream: UnixStream,
    config: &SocketConfig,
    producer: &Producer,
    shutdown: &CancellationToken,
) -> Result<(), ProduceError> {
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    let mut lines = LineSplitter::new(config.max_line_bytes);
    let metrics = producer.metrics().clone();
    loop {
        if buf.capacity() - buf.len() < READ_BYTES / 4 {
            buf.reserve(READ_BYTES);
        }
        let n = tokio::select! {
            _ = shutdown.cancelled() => 0,
            r = stream.read_buf(&mut buf) => r.unwrap_or(0),
        };
        let eof = n == 0;
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        loop {
            let line = lines.next_line(&mut buf, eof);
            let Some(line) = line else { break };
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
        .spool_batch(&config.stream, KIND, batch, None, None)
        .await
}

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
