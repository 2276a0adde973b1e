//! The agent's HTTP endpoint — `GET /metrics` (Prometheus text, from
//! [`Metrics::encode`](crate::metrics::Metrics::encode)), `GET /status` (a
//! JSON [`Status`]) and `GET /files` (a JSON [`FilesReport`], in `files.rs`) —
//! and the client side that `shardline status` and `shardline files` use.
//!
//! It is a few lines of hyper rather than a web framework: two fixed routes do not
//! need a router, and hyper is in the tree already through the AWS SDK. The status
//! is what an operator asks first: how much is waiting (records, bytes, the age of
//! the oldest), whether it moves (the delivery rate over the last minute) and, if
//! not, why (the last error). The rate is computed from the delivered counters
//! sampled every [`RATE_SAMPLE_INTERVAL`], so asking costs nothing.
//!
//! The agent binds the endpoint (`bind`) and spawns `serve`, which owns the
//! listener and the connections' admission (slots, eviction of idle ones) and
//! spawns one task per connection; a `View` holds what the answers are made
//! of. `report.rs` holds the [`Status`] document, also read by the client.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::producer::Producer;

mod files;
mod report;

pub use files::{
    command as files_command, fetch_files, judge, wait_delivered, FileState, FileStatus,
    FilesError, FilesReport, Target, Verdict, EXIT_NOT_TAILED, EXIT_TIMED_OUT,
};
pub use report::{
    DamageStatus, DestinationState, ErrorStatus, SourceStatus, SpoolStatus, Status, StreamStatus,
};

/// Most connections served at once: scrapers and `shardline status` are few, and
/// a flood must not take memory or descriptors from the pipeline. Past it a new
/// connection is closed at once rather than left waiting in the listen backlog, so
/// its client learns right away that the agent is there but busy.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest wait for a request's headers, so an idle or stuck client lets go of its
/// connection slot.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection, keep-alive included: requests take
/// milliseconds, and a client holding connections open cannot keep the slots.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Longest time a connection may finish its request once the agent stops.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often the delivered counters are sampled for the rate.
pub const RATE_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// The span the delivery rate is averaged over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Content type of `prometheus-client`'s text encoding (OpenMetrics text, which
/// Prometheus scrapes natively).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors of the endpoint and of its client.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot listen on {addr} for the metrics endpoint")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the agent at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the agent at {addr} within {} s", timeout.as_secs_f64())]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("request to the agent at {addr} failed")]
    Request {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("the agent at {addr} answered {status} to GET {path}")]
    Http {
        addr: SocketAddr,
        path: String,
        status: u16,
    },
    #[error("the status sent by the agent at {addr} cannot be read")]
    Decode {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
}

impl StatusError {
    /// Whether nothing listens at the address: the agent is not running (or not
    /// there).
    pub fn is_not_running(&self) -> bool {
        matches!(self, StatusError::Connect { .. })
    }

    /// Whether something listens but did not answer (in time, or at all): the agent
    /// runs but is stuck or busy.
    pub fn is_not_answering(&self) -> bool {
        matches!(
            self,
            StatusError::Timeout { .. } | StatusError::Request { .. }
        )
    }
}

/// What the endpoint reads from: the producer's metrics and spool.
pub(crate) struct View {
    producer: Producer,
    /// Each stream and its destination's description.
    streams: Vec<(String, String)>,
    started: Instant,
    rates: Mutex<RateWindow>,
    /// The tailed files' progress (`GET /files`).
    files: crate::source::file::Files,
}

/// Samples of the delivered counters (one per stream, in `View::streams` order).
struct RateWindow {
    samples: VecDeque<(Instant, Vec<u64>)>,
}

impl RateWindow {
    fn sample(&mut self, now: Instant, totals: Vec<u64>) {
        self.samples.push_back((now, totals));
        // Keep the newest sample at least RATE_WINDOW old as the window's start.
        while self.samples.len() > 1 && now.duration_since(self.samples[1].0) >= RATE_WINDOW {
            self.samples.pop_front();
        }
    }

    /// Per-stream rates from the oldest sample to `totals` now.
    fn rates(&self, now: Instant, totals: &[u64]) -> Vec<f64> {
        let Some((t0, base)) = self.samples.front() else {
            return vec![0.0; totals.len()];
        };
        let secs = now.duration_since(*t0).as_secs_f64();
        totals
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let since = n.saturating_sub(base.get(i).copied().unwrap_or(0));
                if secs > 0.0 {
                    since as f64 / secs
                } else {
                    0.0
                }
            })
            .collect()
    }
}

impl View {
    pub(crate) fn new(
        producer: Producer,
        streams: Vec<(String, String)>,
        files: crate::source::file::Files,
    ) -> View {
        let view = View {
            producer,
            streams,
            started: Instant::now(),
            rates: Mutex::new(RateWindow {
                samples: VecDeque::new(),
            }),
            files,
        };
        view.sample_rates();
        view
    }

    fn delivered(&self) -> Vec<u64> {
        let metrics = self.producer.metrics();
        self.streams
            .iter()
            .map(|(s, _)| metrics.delivered_count(s))
            .collect()
    }

    fn sample_rates(&self) {
        let totals = self.delivered();
        self.rates
            .lock()
            .expect("rate window lock poisoned")
            .sample(Instant::now(), totals);
    }

    /// The status now.
    pub(crate) fn status(&self) -> Status {
        let now = Instant::now();
        let totals = self.delivered();
        let rates = self
            .rates
            .lock()
            .expect("rate window lock poisoned")
            .rates(now, &totals);
        let spool = self.producer.backlog();
        let oldest = match spool.oldest_record_age() {
            Ok(age) => age,
            Err(e) => {
                tracing::warn!(error = %e, "Reading the oldest spool record's age failed");
                None
            }
        };
        let metrics = self.producer.metrics();
        let streams: Vec<StreamStatus> = self
            .streams
            .iter()
            .zip(totals.iter().zip(&rates))
            .map(|((s, destination), (&n, &r))| {
                let health = metrics.destination(s);
                StreamStatus {
                    stream: s.clone(),
                    delivered_records_total: n,
                    delivery_rate_records_per_second: r,
                    destination: destination.clone(),
                    state: DestinationState::of(&health),
                    error: health.trouble().map(ErrorStatus::of),
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
            spool: SpoolStatus {
                records: spool.records(),
                bytes: spool.used_bytes(),
                max_bytes: spool.max_bytes(),
                oldest_record_age_seconds: oldest.map(|d| d.as_secs_f64()),
                segment_bytes: spool.disk_bytes(),
                disk_free_bytes: spool.disk_free_bytes(),
                min_free_bytes: spool.min_free_bytes(),
                damaged_frames: spool.damaged().0,
                refusing: spool.refusing().map(|r| r.as_str().to_owned()),
                damage: spool.damage_report().map(|d| DamageStatus {
                    path: d.path.display().to_string(),
                    events: d.events,
                    lost_records: d.lost_records,
                }),
            },
            delivered_records_total: totals.iter().sum(),
            delivery_rate_records_per_second: rates.iter().sum(),
            streams,
            last_error: metrics.last_error().as_ref().map(ErrorStatus::of),
            sources: metrics
                .sources()
                .into_iter()
                .map(|h| SourceStatus {
                    kind: h.kind.as_str().to_owned(),
                    name: h.name,
                    problem_age_seconds: h.problem.as_ref().map(|(_, at)| {
                        SystemTime::now()
                            .duration_since(*at)
                            .unwrap_or_default()
                            .as_secs_f64()
                    }),
                    problem: h.problem.map(|(p, _)| p),
                })
                .collect(),
        }
    }
}

/// Binds the endpoint's address (port 0 takes a free one); returns the listener
/// and the address it got.
pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StatusError> {
    let failed = |source| StatusError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// The connections being served, oldest first, so that a new one can take the
/// slot of the oldest that has no request in flight.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: VecDeque<Served>,
}

struct Served {
    id: u64,
    /// A request is being answered: not to be closed for a newcomer.
    busy: Arc<AtomicBool>,
    close: CancellationToken,
}

impl Connections {
    /// Asks the oldest connection with no request in flight to close; false
    /// when every one is busy.
    fn evict_idle(&self) -> bool {
        match self
            .open
            .iter()
            .find(|c| !c.busy.load(Ordering::Relaxed) && !c.close.is_cancelled())
        {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }

    /// Lists a connection now served; returns its id, the flag its requests
    /// set while answered, and the token that asks it to close.
    fn register(&mut self) -> (u64, Arc<AtomicBool>, CancellationToken) {
        let busy = Arc::new(AtomicBool::new(false));
        let close = CancellationToken::new();
        let id = self.next_id;
        self.next_id += 1;
        self.open.push_back(Served {
            id,
            busy: busy.clone(),
            close: close.clone(),
        });
        (id, busy, close)
    }
}

/// The endpoint's admission: the connection slots, the newcomers waiting for
/// an evicted connection's slot, and the connections served. Owned by
/// [`serve`] and shared with the connections it spawns, which give their slot
/// back and leave the list when they end.
struct Admission {
    slots: Arc<Semaphore>,
    /// Newcomers waiting for an evicted connection's slot: bounded too.
    waiting: Arc<Semaphore>,
    connections: Mutex<Connections>,
}

/// A newcomer's way in: a free slot, or a place among those waiting for the
/// slot of the connection it evicted.
enum Ticket {
    Slot(OwnedSemaphorePermit),
    Waiting(OwnedSemaphorePermit),
}

impl Admission {
    fn new() -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            waiting: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            connections: Mutex::new(Connections::default()),
        }
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a newcomer in: a free slot, or else the eviction of the oldest idle
    /// connection and a place among the waiting. `None` when every slot is
    /// busy answering, or too many wait: the connection is then closed at
    /// once, so the client learns right away that the agent is there but busy.
    fn admit(&self) -> Option<Ticket> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(Ticket::Slot(slot));
        }
        let evicted = self.connections().evict_idle();
        match self.waiting.clone().try_acquire_owned() {
            Ok(w) if evicted => Some(Ticket::Waiting(w)),
            _ => None,
        }
    }

    /// The slot a ticket gives: at once, or once the evicted connection gives
    /// its slot back within its close grace (one mid-request is cut off at its
    /// end). `None` when it does not in time.
    async fn slot(&self, ticket: Ticket) -> Option<OwnedSemaphorePermit> {
        match ticket {
            Ticket::Slot(slot) => Some(slot),
            Ticket::Waiting(_waiting) => {
                let wait = CLOSE_GRACE + Duration::from_secs(1);
                match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(slot)) => Some(slot),
                    _ => None,
                }
            }
        }
    }
}

/// Serves the endpoint until `shutdown`; connections are spawned on `tracker`.
///
/// At most [`MAX_CONNECTIONS`] are served. When every slot is taken, a newcomer
/// closes the oldest connection that waits idle (no request in flight) and takes
/// its slot: a client that opens connections and sends nothing cannot keep a
/// scraper or `shardline status` out, since they send their request at once and
/// are then the newest.
pub(crate) async fn serve(
    listener: TcpListener,
    view: Arc<View>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let admission = Arc::new(Admission::new());
    let mut sample = tokio::time::interval(RATE_SAMPLE_INTERVAL);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sample.tick() => {
                view.sample_rates();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "Accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(ticket) = admission.admit() else {
            drop(stream);
            continue;
        };
        tracker.spawn(serve_connection(
            stream,
            ticket,
            admission.clone(),
            view.clone(),
            shutdown.clone(),
        ));
    }
}

/// Serves one connection once it has its slot, until it ends, is evicted
/// while idle, outlives [`CONNECTION_LIFETIME`] or the agent stops; then it
/// leaves the list and gives its slot back.
async fn serve_connection(
    stream: TcpStream,
    ticket: Ticket,
    admission: Arc<Admission>,
    view: Arc<View>,
    shutdown: CancellationToken,
) {
    let Some(_slot) = admission.slot(ticket).await else {
        return;
    };
    let (id, busy, close) = admission.connections().register();
    let service = hyper::service::service_fn(move |req| {
        let view = view.clone();
        let flag = busy.clone();
        async move {
            flag.store(true, Ordering::Relaxed);
            let r = respond(&view, &req);
            flag.store(false, Ordering::Relaxed);
            Ok::<_, Infallible>(r)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = close.cancelled() => {
            // Idle, by choice of the eviction: closes at once.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
    }
    admission.connections().open.retain(|c| c.id != id);
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        content_type
            .parse()
            .expect("the content types used here are valid header values"),
    );
    r
}

fn respond(view: &View, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/status" | "/files") {
        return response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: this endpoint serves GET /metrics, GET /status and GET /files\n",
        );
    }
    if req.method() != Method::GET {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is allowed\n",
        );
        r.headers_mut()
            .insert(ALLOW, "GET".parse().expect("a valid header value"));
        return r;
    }
    if path == "/metrics" {
        return response(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            view.producer.metrics().encode(),
        );
    }
    let mut body = if path == "/files" {
        let files = view.files.snapshot();
        let report = FilesReport {
            files: files.into_iter().map(FileStatus::of).collect(),
        };
        serde_json::to_vec_pretty(&report).expect("a files report always serialises to JSON")
    } else {
        serde_json::to_vec_pretty(&view.status()).expect("a status always serialises to JSON")
    };
    body.push(b'\n');
    response(StatusCode::OK, "application/json", body)
}

/// `GET path` on the agent at `addr`: the status code and the body.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), StatusError> {
    tokio::time::timeout(timeout, get_inner(addr, path))
        .await
        .map_err(|_| StatusError::Timeout { addr, timeout })?
}

async fn get_inner(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), StatusError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| StatusError::Connect { addr, source })?;
    let failed = |source| StatusError::Request { addr, source };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    // Drives the connection; it ends when `sender` is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|_| StatusError::Http {
            addr,
            path: path.to_owned(),
            status: 0,
        })?;
    let response = sender.send_request(request).await.map_err(failed)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(failed)?
        .to_bytes();
    Ok((status, body))
}

/// Asks the agent at `addr` for its status.
pub async fn fetch(addr: SocketAddr, timeout: Duration) -> Result<Status, StatusError> {
    let (status, body) = get(addr, "/status", timeout).await?;
    if status != 200 {
        return Err(StatusError::Http {
            addr,
            path: "/status".into(),
            status,
        });
    }
    serde_json::from_slice(&body).map_err(|source| StatusError::Decode { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_evicts_the_oldest_idle_connection_and_is_refused_when_all_are_busy() {
        let admission = Admission::new();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            match admission.admit() {
                Some(Ticket::Slot(slot)) => held.push(slot),
                _ => panic!("a free slot is taken at once"),
            }
        }
        let served: Vec<_> = (0..3).map(|_| admission.connections().register()).collect();
        // The oldest is answering a request: the next oldest goes.
        served[0].1.store(true, Ordering::Relaxed);
        assert!(matches!(admission.admit(), Some(Ticket::Waiting(_))));
        let closing: Vec<bool> = served.iter().map(|(_, _, c)| c.is_cancelled()).collect();
        assert_eq!(closing, vec![false, true, false]);
        served[2].1.store(true, Ordering::Relaxed);
        assert!(admission.admit().is_none());
    }

    #[test]
    fn rate_is_averaged_over_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow {
            samples: VecDeque::new(),
        };
        w.sample(t0, vec![0, 10]);
        w.sample(t0 + Duration::from_secs(5), vec![50, 10]);
        let r = w.rates(t0 + Duration::from_secs(10), &[100, 10]);
        assert_eq!(r, vec![10.0, 0.0]);
        // Samples older than the window go, but one at least RATE_WINDOW old stays.
        for i in 1..=20u64 {
            w.sample(t0 + Duration::from_secs(5 * i), vec![10 * i, 10]);
        }
        let start = w.samples.front().unwrap().0;
        let now = t0 + Duration::from_secs(100);
        assert!(now.duration_since(start) >= RATE_WINDOW);
        assert!(now.duration_since(start) < RATE_WINDOW + RATE_SAMPLE_INTERVAL);
    }
}
