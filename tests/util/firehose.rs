//! A fault-injecting Amazon Data Firehose endpoint on loopback: it speaks
//! PutRecordBatch as aws-sdk-firehose sends it (JSON 1.1, `X-Amz-Target:
//! Firehose_20150804.PutRecordBatch`, base64 `Data`) and answers as a [`Plan`]
//! says: per-record failures, whole-request 500s and 503s, slow answers, cut
//! connections (before or after storing the records), everything refused, or a
//! delivery stream that does not exist. It keeps the records it accepted, in
//! arrival order with the request they came in, and what it did with every
//! request, so that a test can account for every duplicate.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the endpoint does; set at start, changed with [`FirehoseEndpoint::set_plan`]
/// while it runs. Probabilities are per request (per record for the record
/// failures), drawn from one seeded generator.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// A record is refused with `ServiceUnavailableException` (throttling).
    pub record_unavailable: f64,
    /// A record is refused with `InternalFailure`.
    pub record_internal: f64,
    /// The whole request is answered 500 `InternalFailure`.
    pub request_500: f64,
    /// The whole request is answered 503 `ServiceUnavailableException`.
    pub request_503: f64,
    /// The request is read, then its connection reset without an answer;
    /// nothing is stored.
    pub reset_before_store: f64,
    /// The request is read and its records stored (as an answer would say),
    /// then its connection reset without the answer: the client cannot know,
    /// and sends them again.
    pub reset_after_store: f64,
    /// Waited before answering (or resetting) each request.
    pub delay: Duration,
    /// The records are stored before the delay instead of after it: a client
    /// that gives up (or dies) while waiting for the answer leaves them stored.
    pub store_before_delay: bool,
    /// Every request is answered 500 `InternalFailure`: the endpoint is broken.
    pub refuse_all: bool,
    /// Every request is answered 400 `ResourceNotFoundException`.
    pub not_found: bool,
}

/// What the endpoint did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 200; of its records, `unavailable` refused one by one with
    /// ServiceUnavailableException and `internal` with InternalFailure.
    Answered { unavailable: usize, internal: usize },
    /// Answered 500 `InternalFailure`.
    InternalFailure,
    /// Answered 503 `ServiceUnavailableException`.
    ServiceUnavailable,
    /// Answered 400 `ResourceNotFoundException`.
    NotFound,
    /// Connection reset, nothing stored.
    ResetBeforeStore,
    /// `stored` records stored, then the connection reset.
    ResetAfterStore { stored: usize },
    /// Not a PutRecordBatch request (answered 400).
    Unknown,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its number, from 0, in arrival order.
    pub number: u64,
    pub target: String,
    pub delivery_stream: String,
    pub records: usize,
    pub outcome: Outcome,
    /// The client went away while the answer waited (with
    /// `store_before_delay`: after its records were stored).
    pub abandoned: bool,
}

/// One record stored, with the request it came in.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub request: u64,
    pub delivery_stream: String,
    pub data: Bytes,
}

/// Per-record error codes, as Firehose spells them on the wire.
#[derive(Debug, Clone, Copy)]
enum RecordError {
    ServiceUnavailable,
    Internal,
}

impl RecordError {
    fn code(self) -> &'static str {
        match self {
            RecordError::ServiceUnavailable => "ServiceUnavailableException",
            RecordError::Internal => "InternalFailure",
        }
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
    accepted: Vec<Accepted>,
}

struct Shared {
    plan: Mutex<Plan>,
    rng: Mutex<fastrand::Rng>,
    log: Mutex<Log>,
    /// Requests read and not yet answered (nor cut, nor dropped).
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().unwrap().f64() < p
    }
}

/// The endpoint, served on 127.0.0.1 from this process until dropped.
pub struct FirehoseEndpoint {
    pub endpoint: String,
    pub addr: std::net::SocketAddr,
    /// The generator's seed (`SHARDLINE_FAULT_SEED` repeats a run).
    pub seed: u64,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FirehoseEndpoint {
    pub async fn start(plan: Plan) -> FirehoseEndpoint {
        let seed = std::env::var("SHARDLINE_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            plan: Mutex::new(plan),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            log: Mutex::new(Log::default()),
            in_flight: Default::default(),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        FirehoseEndpoint {
            endpoint: format!("http://{addr}"),
            addr,
            seed,
            shared,
            task,
        }
    }

    pub fn plan(&self) -> Plan {
        self.shared.plan.lock().unwrap().clone()
    }

    pub fn set_plan(&self, plan: Plan) {
        *self.shared.plan.lock().unwrap() = plan;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.log.lock().unwrap().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.log.lock().unwrap().requests.len()
    }

    /// Every record stored so far, in arrival order.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.log.lock().unwrap().accepted.clone()
    }

    /// How many requests ended with an outcome `f` picks.
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        let log = self.shared.log.lock().unwrap();
        log.requests.iter().filter(|s| f(&s.outcome)).count()
    }

    /// Records refused one by one so far: (ServiceUnavailableException,
    /// InternalFailure).
    pub fn records_failed(&self) -> (usize, usize) {
        let log = self.shared.log.lock().unwrap();
        log.requests
            .iter()
            .fold((0, 0), |(u, i), s| match s.outcome {
                Outcome::Answered {
                    unavailable,
                    internal,
                } => (u + unavailable, i + internal),
                _ => (u, i),
            })
    }

    /// Requests being handled now: read, and neither answered nor cut.
    pub fn in_flight(&self) -> usize {
        self.shared
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The records stored by requests whose answer never reached the client
    /// (the connection cut after storing, or the client gone while the answer
    /// waited): the only ones the agent may rightly send twice.
    pub fn stored_unanswered(&self) -> Vec<Accepted> {
        let log = self.shared.log.lock().unwrap();
        let reset: std::collections::HashSet<u64> = log
            .requests
            .iter()
            .filter(|s| s.abandoned || matches!(s.outcome, Outcome::ResetAfterStore { .. }))
            .map(|s| s.number)
            .collect();
        log.accepted
            .iter()
            .filter(|a| reset.contains(&a.request))
            .cloned()
            .collect()
    }
}

impl Drop for FirehoseEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(serve(tcp, shared.clone()));
        while connections.try_join_next().is_some() {}
    }
}

/// Serves one connection until the client closes it or a request asks for it
/// to be cut.
async fn serve(tcp: tokio::net::TcpStream, shared: Arc<Shared>) {
    let fd = tcp.as_raw_fd();
    let cut = Arc::new(tokio::sync::Notify::new());
    let c = cut.clone();
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), c.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = &mut conn => {}
        _ = cut.notified() => reset_on_close(fd),
    }
    // Dropping the connection closes the socket: with a reset, if it was cut.
}

/// Makes the socket's close send a TCP reset (`SO_LINGER` of zero), as a
/// failing load balancer does.
fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the socket of the connection being served, which `serve`
    // still owns (it is dropped only after this returns); the option value is a
    // `struct linger` of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

type Answer = Response<Full<Bytes>>;

fn json(status: StatusCode, body: serde_json::Value) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap()
}

/// A whole-request error as the JSON 1.1 protocol carries it.
fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    let mut r = json(
        status,
        serde_json::json!({"__type": code, "message": format!("injected: {message}")}),
    );
    r.headers_mut()
        .insert("x-amzn-errortype", code.parse().unwrap());
    r
}

/// The parts of a PutRecordBatch body the endpoint needs.
struct Batch {
    delivery_stream: String,
    records: Vec<Bytes>,
}

fn parse_batch(body: &[u8]) -> Option<Batch> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let records = v["Records"]
        .as_array()?
        .iter()
        .map(|r| {
            base64::engine::general_purpose::STANDARD
                .decode(r["Data"].as_str()?)
                .ok()
                .map(Bytes::from)
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Batch {
        delivery_stream: v["DeliveryStreamName"].as_str()?.to_owned(),
        records,
    })
}

/// Counts a request in flight for as long as its handler lives (a handler
/// dropped because its client went away counts out too), and marks a logged
/// request whose handler was dropped before it answered as abandoned.
struct InFlight {
    shared: Arc<Shared>,
    /// The request's number once logged, until it is answered (or cut).
    waiting: Option<u64>,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> InFlight {
        shared
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight {
            shared: shared.clone(),
            waiting: None,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.waiting {
            self.shared.log.lock().unwrap().requests[n as usize].abandoned = true;
        }
        self.shared
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What to do with a request.
enum Decision {
    /// Answer with `answer`, storing nothing.
    Refuse { outcome: Outcome, answer: Answer },
    /// Cut the connection, storing nothing.
    ResetBeforeStore,
    /// Store the records without an error; then answer, or cut the connection.
    Store {
        errors: Vec<Option<RecordError>>,
        then_reset: bool,
    },
}

async fn handle(
    shared: Arc<Shared>,
    cut: Arc<tokio::sync::Notify>,
    req: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut in_flight = InFlight::enter(&shared);
    // The whole request is read first, whatever happens to it.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let plan = shared.plan.lock().unwrap().clone();
    if !plan.store_before_delay {
        tokio::time::sleep(plan.delay).await;
    }
    let batch = parse_batch(&body).filter(|_| target == "Firehose_20150804.PutRecordBatch");
    let decision = match &batch {
        None => Decision::Refuse {
            outcome: Outcome::Unknown,
            answer: error(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                &target,
            ),
        },
        Some(batch) => decide(&shared, &plan, batch),
    };
    let (number, answer) = note(&shared, target, batch.as_ref(), decision);
    if plan.store_before_delay {
        in_flight.waiting = Some(number);
        tokio::time::sleep(plan.delay).await;
        in_flight.waiting = None;
    }
    match answer {
        Some(a) => Ok(a),
        None => {
            // `serve` drops the connection with a reset; this answer never comes.
            cut.notify_one();
            std::future::pending().await
        }
    }
}

/// Stores what `decision` accepts and logs the request; returns its number
/// and the answer (`None`: cut the connection).
fn note(
    shared: &Shared,
    target: String,
    batch: Option<&Batch>,
    decision: Decision,
) -> (u64, Option<Answer>) {
    let mut log = shared.log.lock().unwrap();
    let number = log.requests.len() as u64;
    let (outcome, answer) = match decision {
        Decision::Refuse { outcome, answer } => (outcome, Some(answer)),
        Decision::ResetBeforeStore => (Outcome::ResetBeforeStore, None),
        Decision::Store { errors, then_reset } => {
            let batch = batch.expect("only a parsed batch is stored");
            for (data, e) in batch.records.iter().zip(&errors) {
                if e.is_none() {
                    log.accepted.push(Accepted {
                        request: number,
                        delivery_stream: batch.delivery_stream.clone(),
                        data: data.clone(),
                    });
                }
            }
            let count = |code: RecordError| {
                errors
                    .iter()
                    .filter(|e| e.is_some_and(|e| e.code() == code.code()))
                    .count()
            };
            let unavailable = count(RecordError::ServiceUnavailable);
            let internal = count(RecordError::Internal);
            if then_reset {
                let stored = errors.len() - unavailable - internal;
                (Outcome::ResetAfterStore { stored }, None)
            } else {
                let outcome = Outcome::Answered {
                    unavailable,
                    internal,
                };
                (outcome, Some(results(&errors)))
            }
        }
    };
    log.requests.push(Seen {
        number,
        target,
        delivery_stream: batch.map(|b| b.delivery_stream.clone()).unwrap_or_default(),
        records: batch.map_or(0, |b| b.records.len()),
        outcome,
        abandoned: false,
    });
    (number, answer)
}

/// What to do with a well-formed PutRecordBatch, as the plan draws it.
fn decide(shared: &Shared, plan: &Plan, batch: &Batch) -> Decision {
    let refuse = |outcome, status, code, message: &str| Decision::Refuse {
        outcome,
        answer: error(status, code, message),
    };
    if plan.not_found {
        let msg = format!("Firehose {} not found", batch.delivery_stream);
        return refuse(
            Outcome::NotFound,
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            &msg,
        );
    }
    if plan.refuse_all || shared.roll(plan.request_500) {
        return refuse(
            Outcome::InternalFailure,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "request failed",
        );
    }
    if shared.roll(plan.request_503) {
        return refuse(
            Outcome::ServiceUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "slow down",
        );
    }
    if shared.roll(plan.reset_before_store) {
        return Decision::ResetBeforeStore;
    }
    let errors = batch
        .records
        .iter()
        .map(|_| {
            if shared.roll(plan.record_unavailable) {
                Some(RecordError::ServiceUnavailable)
            } else if shared.roll(plan.record_internal) {
                Some(RecordError::Internal)
            } else {
                None
            }
        })
        .collect();
    Decision::Store {
        errors,
        then_reset: shared.roll(plan.reset_after_store),
    }
}

/// The 200 answer: a RecordId for each stored record, the error of each other.
fn results(errors: &[Option<RecordError>]) -> Answer {
    let responses: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| match e {
            None => serde_json::json!({"RecordId": format!("{:032x}", fastrand::u128(..))}),
            Some(e) => serde_json::json!({
                "ErrorCode": e.code(),
                "ErrorMessage": format!("injected: {}", e.code()),
            }),
        })
        .collect();
    let failed = errors.iter().filter(|e| e.is_some()).count();
    json(
        StatusCode::OK,
        serde_json::json!({
            "FailedPutCount": failed,
            "Encrypted": false,
            "RequestResponses": responses,
        }),
    )
}
