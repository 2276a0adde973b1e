//! The load: two file writers (threads), each appending to its log file at a steady
//! rate and rotating it, and a framed-protocol client on the agent's socket (a
//! task). [`Load`] owns them from `start` to `stop` (both called by `main`); each
//! writer owns its file and sequence numbers, the socket client its connection and
//! the requests not answered yet. What they sent is counted in `Shared`: lines
//! written per file, the socket client's ledger.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shardline::testkit::frame::{self, Record, Request, Response, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::progress::say;
use crate::record::{record_data, Source};
use crate::shared::{Shared, SocketLedger, SocketState};

/// The running load.
pub(crate) struct Load {
    stop_files: Arc<AtomicBool>,
    file_loads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    stop_socket: CancellationToken,
    socket_load: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts `rate` records/s, a third each from the two log files in `logs` and
    /// from the socket at `socket`; the writers' seeds are drawn from `rng`.
    pub(crate) fn start(
        logs: &Path,
        socket: &Path,
        rate: u32,
        record_bytes: usize,
        state: &Shared,
        rng: &mut fastrand::Rng,
    ) -> Load {
        let per_source = (rate / 3).max(1);
        let stop_files = Arc::new(AtomicBool::new(false));
        let file_loads: Vec<_> = [Source::FileRename, Source::FileCopytruncate]
            .into_iter()
            .map(|source| {
                let load = FileLoad {
                    source,
                    dir: logs.to_owned(),
                    per_sec: per_source,
                    record_bytes,
                    stop: stop_files.clone(),
                    written: state.written[source as usize].clone(),
                    rotations: state.rotations[source as usize].clone(),
                    seed: rng.u64(..),
                };
                std::thread::spawn(move || load.run())
            })
            .collect();
        let stop_socket = CancellationToken::new();
        let socket_load = tokio::spawn(socket_load(
            socket.to_owned(),
            per_source,
            record_bytes,
            stop_socket.clone(),
            state.socket.clone(),
        ));
        Load {
            stop_files,
            file_loads,
            stop_socket,
            socket_load,
        }
    }

    /// Stops the writers and the socket client (which first waits for the answers
    /// the agent owes it).
    pub(crate) async fn stop(self) -> Result<(), String> {
        say!("load stopped");
        self.stop_files.store(true, Ordering::Relaxed);
        for l in self.file_loads {
            l.join()
                .map_err(|_| "a file writer panicked".to_owned())?
                .map_err(|e| format!("file writer: {e}"))?;
        }
        self.stop_socket.cancel();
        self.socket_load
            .await
            .map_err(|e| format!("the socket client panicked: {e}"))
    }
}

/// A writer appending lines to one log file at a steady rate and rotating it.
struct FileLoad {
    source: Source,
    dir: PathBuf,
    per_sec: u32,
    record_bytes: usize,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    rotations: Arc<AtomicU64>,
    seed: u64,
}

impl FileLoad {
    fn run(self) -> std::io::Result<()> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let path = self.dir.join(self.source.file_name());
        let mut file = open_append(&path)?;
        let started = Instant::now();
        let mut next_rotation = Duration::from_secs(rng.u64(25..=35));
        let mut seq = 0u64;
        let mut buf = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let due = (started.elapsed().as_secs_f64() * f64::from(self.per_sec)) as u64;
            buf.clear();
            let first = seq;
            while seq < due {
                buf.extend_from_slice(&record_data(self.source, seq, self.record_bytes));
                buf.push(b'\n');
                seq += 1;
            }
            if !buf.is_empty() {
                file.write_all(&buf)?;
                self.written.fetch_add(seq - first, Ordering::Relaxed);
            }
            if started.elapsed() >= next_rotation {
                self.rotate(&path, &mut file)?;
                next_rotation += Duration::from_secs(rng.u64(25..=35));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Rotates the file at `path`, written through `file`: by rename and create,
    /// or by copy and truncate.
    fn rotate(&self, path: &Path, file: &mut std::fs::File) -> std::io::Result<()> {
        let n = self.rotations.fetch_add(1, Ordering::Relaxed) + 1;
        let rotated = self.dir.join(format!("{}.{n}", self.source.file_name()));
        match self.source {
            Source::FileRename => {
                std::fs::rename(path, &rotated)?;
                *file = open_append(path)?;
            }
            _ => {
                std::fs::copy(path, &rotated)?;
                file.set_len(0)?;
            }
        }
        Ok(())
    }
}

fn open_append(p: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

/// Requests sent and not answered yet, in order: (id, first seq, records).
type Pending = Arc<Mutex<VecDeque<(u64, u64, u64)>>>;

/// The framed-protocol client: a request of `per_sec / 10` records every 100 ms,
/// each asking for an ack, pipelined; reconnects whenever the agent goes away.
/// Records of a request are marked acknowledged or refused when its answer comes.
async fn socket_load(
    path: PathBuf,
    per_sec: u32,
    record_bytes: usize,
    stop: CancellationToken,
    ledger: Arc<SocketLedger>,
) {
    let mut client = SocketClient {
        per_request: (per_sec / 10).max(1) as u64,
        record_bytes,
        seq: 0,
        id: 0,
        rng: fastrand::Rng::new(),
        ledger,
    };
    while !stop.is_cancelled() {
        let Ok(stream) = UnixStream::connect(&path).await else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        };
        if client.connection(stream, &stop).await {
            return;
        }
    }
}

/// The socket client's numbering of requests and records, kept across
/// connections.
struct SocketClient {
    per_request: u64,
    record_bytes: usize,
    /// The next record's sequence number.
    seq: u64,
    /// The last request's id.
    id: u64,
    rng: fastrand::Rng,
    ledger: Arc<SocketLedger>,
}

impl SocketClient {
    /// Sends requests over `stream` until it breaks or `stop` (then true).
    async fn connection(&mut self, stream: UnixStream, stop: &CancellationToken) -> bool {
        let (rd, mut wr) = stream.into_split();
        let pending = Pending::default();
        let mut reader = tokio::spawn(read_answers(rd, pending.clone(), self.ledger.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = BytesMut::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Closing our side asks the agent to answer what it owes and close.
                    let _ = wr.shutdown().await;
                    let _ = tokio::time::timeout(Duration::from_secs(30), &mut reader).await;
                    return true;
                }
                _ = &mut reader => break,
                _ = tick.tick() => {
                    frame::encode(&self.next_request(&pending), &mut out);
                    let written = wr.write_all(&out).await;
                    out.clear();
                    if written.is_err() {
                        break;
                    }
                }
            }
        }
        // The connection is gone (the agent stopped or was killed): what was not
        // answered stays unconfirmed.
        reader.abort();
        false
    }

    /// The next request, its records entered in the ledger as unconfirmed and
    /// the request in `pending`.
    fn next_request(&mut self, pending: &Pending) -> Request {
        let (seq, n) = (self.seq, self.per_request);
        self.id += 1;
        let records: Vec<Record> = (seq..seq + n)
            .map(|s| Record {
                partition_key: format!("{:016x}", self.rng.u64(..)),
                explicit_hash_key: (s % 8 == 0).then(|| self.rng.u128(..).to_string()),
                data: Bytes::from(record_data(Source::Socket, s, self.record_bytes)),
                record_id: None,
            })
            .collect();
        self.ledger
            .states
            .lock()
            .expect("not poisoned")
            .resize((seq + n) as usize, SocketState::Unconfirmed);
        pending
            .lock()
            .expect("not poisoned")
            .push_back((self.id, seq, n));
        self.seq += n;
        Request {
            id: self.id,
            records,
            ack: true,
            stream: None,
        }
    }
}

/// Reads the answers of one connection and marks the records of each request.
async fn read_answers(mut rd: OwnedReadHalf, pending: Pending, ledger: Arc<SocketLedger>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        // An unreadable answer ends the connection's accounting: what it covers
        // stays unconfirmed.
        while let Some(answer) = frame::decode::<Response>(&mut buf).ok().flatten() {
            let Some((sent_id, first, n)) = pending.lock().expect("not poisoned").pop_front()
            else {
                return;
            };
            let state = if answer.id == sent_id
                && matches!(Status::try_from(answer.status), Ok(Status::Ok))
            {
                SocketState::Acknowledged
            } else {
                SocketState::Refused
            };
            let mut states = ledger.states.lock().expect("not poisoned");
            for s in &mut states[first as usize..(first + n) as usize] {
                *s = state;
            }
        }
        if !matches!(rd.read_buf(&mut buf).await, Ok(n) if n > 0) {
            return;
        }
    }
}
