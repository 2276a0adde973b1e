//! The agent's HTTP endpoint — `GET /metrics` (Prometheus text, from
//! [`Metrics::encode`](crate::metrics::Metrics::encode)) and `GET /status` (a
//! JSON [`Status`]) — and the client side that `shardline status` uses.
//!
//! It is a few lines of hyper rather than a web framework: two fixed routes do not
//! need a router, and hyper is in the tree already through the AWS SDK. The status
//! is what an operator asks first: how much is waiting (records, bytes, the age of
//! the oldest), whether it moves (the delivery rate over the last minute) and, if
//! not, why (the last error). The rate is computed from the delivered counters
//! sampled every [`RATE_SAMPLE_INTERVAL`], so asking costs nothing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::producer::Producer;

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

/// What `GET /status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The agent's version.
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: f64,
    pub spool: SpoolStatus,
    /// User records accepted by Kinesis since the agent started, all streams.
    pub delivered_records_total: u64,
    /// User records accepted per second over the last minute, all streams.
    pub delivery_rate_records_per_second: f64,
    pub streams: Vec<StreamStatus>,
    /// The most recent delivery problem, if there was one since the start.
    pub last_error: Option<ErrorStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolStatus {
    /// User records waiting for Kinesis.
    pub records: u64,
    /// Bytes they take in the spool.
    pub bytes: u64,
    /// `spool.max_bytes`: sources wait once `bytes` reaches it.
    pub max_bytes: u64,
    /// How long the oldest waiting record has waited (to within a second); `None`
    /// when nothing waits, or for a memory-only spool.
    pub oldest_record_age_seconds: Option<f64>,
    /// Bytes of the spool's segment files (what counts against `max_bytes`).
    #[serde(default)]
    pub segment_bytes: u64,
    /// Free bytes of the spool's filesystem (`None` for a memory-only spool).
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    /// `spool.min_free_bytes`: below it the spool is full.
    #[serde(default)]
    pub min_free_bytes: u64,
    /// Damaged spool frames or files found since the start (their records are lost).
    #[serde(default)]
    pub damaged_frames: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub stream: String,
    pub delivered_records_total: u64,
    pub delivery_rate_records_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorStatus {
    pub stream: String,
    /// Kinesis's error code, or `Transport` / `Timeout` for a request that got no
    /// answer.
    pub code: String,
    pub message: String,
    pub age_seconds: f64,
}

/// What the endpoint reads from: the producer's metrics and spool.
pub(crate) struct View {
    producer: Producer,
    streams: Vec<String>,
    started: Instant,
    rates: Mutex<RateWindow>,
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
    pub(crate) fn new(producer: Producer, streams: Vec<String>) -> View {
        let view = View {
            producer,
            streams,
            started: Instant::now(),
            rates: Mutex::new(RateWindow {
                samples: VecDeque::new(),
            }),
        };
        view.sample_rates();
        view
    }

    fn delivered(&self) -> Vec<u64> {
        let metrics = self.producer.metrics();
        self.streams
            .iter()
            .map(|s| metrics.delivered_count(s))
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
        let spool = self.producer.spool();
        let oldest = match spool.oldest_record_age() {
            Ok(age) => age,
            Err(e) => {
                tracing::warn!(error = %e, "Reading the oldest spool record's age failed");
                None
            }
        };
        let streams: Vec<StreamStatus> = self
            .streams
            .iter()
            .zip(totals.iter().zip(&rates))
            .map(|(s, (&n, &r))| StreamStatus {
                stream: s.clone(),
                delivered_records_total: n,
                delivery_rate_records_per_second: r,
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
            },
            delivered_records_total: totals.iter().sum(),
            delivery_rate_records_per_second: rates.iter().sum(),
            streams,
            last_error: self.producer.metrics().last_error().map(|e| ErrorStatus {
                stream: e.stream,
                code: e.code,
                message: e.message,
                age_seconds: SystemTime::now()
                    .duration_since(e.at)
                    .unwrap_or_default()
                    .as_secs_f64(),
            }),
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

/// Serves the endpoint until `shutdown`; connections are spawned on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    view: Arc<View>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Every slot is taken: closed at once (see MAX_CONNECTIONS).
            drop(stream);
            continue;
        };
        let view = view.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(respond(&view, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
            }
        });
    }
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
    if !matches!(path, "/metrics" | "/status") {
        return response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: this endpoint serves GET /metrics and GET /status\n",
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
    let mut body =
        serde_json::to_vec_pretty(&view.status()).expect("a status always serialises to JSON");
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

/// `1.5 KiB`, `3.0 GiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `42s`, `3m 05s`, `2h 10m`, `3d 4h`.
fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

impl Status {
    /// The status as `shardline status` prints it for a person.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = &self.spool;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "shardline {}, pid {}, up {}",
            self.version,
            self.pid,
            human_duration(self.uptime_seconds)
        );
        self.render_spool(&mut out);
        let oldest = match (s.oldest_record_age_seconds, s.records) {
            (Some(age), _) => human_duration(age),
            (None, 0) => "none".into(),
            (None, _) => "unknown".into(),
        };
        let _ = writeln!(out, "oldest unsent:  {oldest}");
        let _ = writeln!(
            out,
            "delivery:       {:.1} records/s over the last minute, {} delivered since start",
            self.delivery_rate_records_per_second, self.delivered_records_total
        );
        if self.streams.len() > 1 {
            for st in &self.streams {
                let _ = writeln!(
                    out,
                    "  {:<14}{:.1} records/s, {} delivered",
                    st.stream, st.delivery_rate_records_per_second, st.delivered_records_total
                );
            }
        }
        match &self.last_error {
            None => {
                let _ = writeln!(out, "last error:     none");
            }
            Some(e) => {
                let _ = writeln!(
                    out,
                    "last error:     {} ago, stream {}: {}: {}",
                    human_duration(e.age_seconds),
                    e.stream,
                    e.code,
                    e.message
                );
            }
        }
        out
    }

    /// The backlog, disk and damage lines.
    fn render_spool(&self, out: &mut String) {
        let s = &self.spool;
        // Segment files are what counts against max_bytes.
        let used = if s.max_bytes > 0 {
            s.segment_bytes as f64 * 100.0 / s.max_bytes as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "backlog:        {} records, {} ({used:.1}% of the {} spool{})",
            s.records,
            human_bytes(s.bytes),
            human_bytes(s.max_bytes),
            if s.segment_bytes >= s.max_bytes {
                ", FULL: sources are waiting"
            } else {
                ""
            }
        );
        if let Some(free) = s.disk_free_bytes {
            let _ = writeln!(
                out,
                "spool disk:     {} in segment files, {} free on its filesystem{}",
                human_bytes(s.segment_bytes),
                human_bytes(free),
                if free < s.min_free_bytes {
                    " (below spool.min_free_bytes: DISK FULL, sources are waiting)"
                } else {
                    ""
                }
            );
        }
        if s.damaged_frames > 0 {
            let _ = writeln!(
                out,
                "spool damage:   {} damaged frames or files skipped (their records are lost; see the log)",
                s.damaged_frames
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn status() -> Status {
        Status {
            version: "1.2.3".into(),
            pid: 42,
            uptime_seconds: 3725.0,
            spool: SpoolStatus {
                records: 1200,
                bytes: 3 << 20,
                max_bytes: 8 << 30,
                oldest_record_age_seconds: Some(75.4),
                segment_bytes: 4 << 20,
                disk_free_bytes: Some(10 << 30),
                min_free_bytes: 64 << 20,
                damaged_frames: 0,
            },
            delivered_records_total: 9000,
            delivery_rate_records_per_second: 150.25,
            streams: vec![
                StreamStatus {
                    stream: "logs".into(),
                    delivered_records_total: 8000,
                    delivery_rate_records_per_second: 150.25,
                },
                StreamStatus {
                    stream: "audit".into(),
                    delivered_records_total: 1000,
                    delivery_rate_records_per_second: 0.0,
                },
            ],
            last_error: Some(ErrorStatus {
                stream: "audit".into(),
                code: "ResourceNotFoundException".into(),
                message: "Stream audit under account 1 not found.".into(),
                age_seconds: 4.0,
            }),
        }
    }

    #[test]
    fn render_shows_backlog_rate_and_last_error() {
        let text = status().render();
        for needle in [
            "shardline 1.2.3, pid 42, up 1h 02m",
            "backlog:        1200 records, 3.0 MiB (0.0% of the 8.0 GiB spool)",
            "spool disk:     4.0 MiB in segment files, 10.0 GiB free on its filesystem",
            "oldest unsent:  1m 15s",
            "delivery:       150.2 records/s over the last minute, 9000 delivered since start",
            "  audit         0.0 records/s, 1000 delivered",
            "last error:     4s ago, stream audit: ResourceNotFoundException: Stream audit under account 1 not found.",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        let mut full = status();
        full.spool.segment_bytes = full.spool.max_bytes;
        full.spool.disk_free_bytes = Some(1 << 20);
        full.spool.damaged_frames = 2;
        full.spool.oldest_record_age_seconds = None;
        full.last_error = None;
        let text = full.render();
        assert!(text.contains("FULL: sources are waiting"), "{text}");
        assert!(text.contains("DISK FULL"), "{text}");
        assert!(text.contains("2 damaged frames"), "{text}");
        assert!(text.contains("oldest unsent:  unknown"), "{text}");
        assert!(text.contains("last error:     none"), "{text}");
    }

    #[test]
    fn status_round_trips_through_json() {
        let s = status();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
