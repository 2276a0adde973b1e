//! The Firehose side of the soak (`--destination firehose`): a PutRecordBatch
//! endpoint on 127.0.0.1 in this process, with its own fault switches. There is
//! no Firehose emulator to read back from, so the endpoint keeps what it accepts
//! the way `tally` reads a stream back: every line of every accepted record
//! counted by its id into a [`Tally`]. [`FirehoseEndpoint`] owns the switches
//! (`chaos` turns them on through `destination`) and that store, and tells, for
//! each duplicate, what left the copy before it unanswered.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::record::{parse_id, Source};
use crate::shared::Shared;
use crate::tally::Tally;

pub(crate) const DELIVERY_STREAM: &str = "soak";
/// The agent's `request_timeout_ms` in this mode: a late answer outlasts it.
pub(crate) const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// A slow answer: the records are stored at once, the answer comes this late
/// (under the agent's timeout).
const SLOW: Duration = Duration::from_secs(2);
/// A late answer: stored at once, answered after the agent gave up on it, which
/// retries records Firehose kept (the duplicates this fault must cause).
const LATE: Duration = Duration::from_millis(REQUEST_TIMEOUT_MS + 2_000);
/// A first copy accepted this long or less before a SIGKILL or SIGTERM is taken
/// to be a copy whose acknowledgement the stop kept from the spool.
const STOP_WINDOW: Duration = Duration::from_secs(10);

/// What to inject; `chaos` adds to the counts, the handler counts them down.
#[derive(Default)]
pub(crate) struct Faults {
    /// While set, every connection is cut: the endpoint is gone.
    outage: AtomicBool,
    /// Records refused with `ServiceUnavailableException` (throttling).
    throttle_records: AtomicU32,
    /// Records refused with `InternalFailure`.
    fail_records: AtomicU32,
    /// Requests answered with HTTP 500 `InternalFailure`, nothing stored.
    fail_requests: AtomicU32,
    /// Requests whose connection is cut before anything is stored.
    reset_requests: AtomicU32,
    /// Requests answered after [`SLOW`], and after [`LATE`].
    slow_requests: AtomicU32,
    late_requests: AtomicU32,
}

/// A count-down fault of [`Faults`], and how much one burst adds to it.
type Fault = (fn(&Faults) -> &AtomicU32, u32);

/// A burst of faults, injected every 20–40 s.
const BURST: [Fault; 6] = [
    (|f| &f.throttle_records, 4),
    (|f| &f.fail_records, 4),
    (|f| &f.fail_requests, 3),
    (|f| &f.reset_requests, 2),
    (|f| &f.slow_requests, 2),
    (|f| &f.late_requests, 1),
];

/// What the endpoint accepted.
#[derive(Default)]
struct Store {
    tally: Tally,
    /// Firehose records accepted.
    records: u64,
    /// Each accepted request: when, and whether its answer came late.
    batches: Vec<(Instant, bool)>,
    /// The accepted request of each id's first copy, by source and sequence.
    first: [Vec<u32>; 3],
}

/// The endpoint on 127.0.0.1.
pub(crate) struct FirehoseEndpoint {
    pub(crate) endpoint: String,
    faults: Arc<Faults>,
    store: Arc<Mutex<Store>>,
}

/// The handler's state.
#[derive(Clone)]
struct Served {
    faults: Arc<Faults>,
    store: Arc<Mutex<Store>>,
}

impl FirehoseEndpoint {
    pub(crate) async fn start() -> Result<FirehoseEndpoint, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the Firehose endpoint: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("no address: {e}"))?;
        let served = Served {
            faults: Arc::default(),
            store: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(served.clone())
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("the Firehose endpoint stopped: {e}");
            }
        });
        Ok(FirehoseEndpoint {
            endpoint: format!("http://{addr}"),
            faults: served.faults,
            store: served.store,
        })
    }

    /// Adds a burst of faults and counts it in `state`.
    pub(crate) fn inject(&self, state: &Shared) {
        for (counter, n) in BURST {
            counter(&self.faults).fetch_add(n, Ordering::AcqRel);
        }
        let count = |a: &std::sync::atomic::AtomicU64, n: u32| {
            a.fetch_add(n.into(), Ordering::Relaxed);
        };
        count(&state.injected_throttles, BURST[0].1);
        count(&state.injected_failures, BURST[1].1);
        count(&state.injected_500s, BURST[2].1);
        count(&state.injected_resets, BURST[3].1);
        count(&state.injected_slow, BURST[4].1 + BURST[5].1);
    }

    pub(crate) fn outage(&self, on: bool) {
        self.faults.outage.store(on, Ordering::Release);
    }

    /// Ends every fault: the endpoint is reachable and accepts everything.
    pub(crate) fn restore(&self) {
        self.outage(false);
        for (counter, _) in BURST {
            counter(&self.faults).store(0, Ordering::Release);
        }
    }

    /// What was accepted: the tally of every line and the Firehose records.
    pub(crate) fn read_back(&self) -> (Tally, u64) {
        let store = self.store.lock().expect("not poisoned");
        (store.tally.clone(), store.records)
    }

    /// Why each duplicate was sent: the copy before it was in a request answered
    /// late, or accepted shortly before the agent was stopped (`stops`), or
    /// neither. Counts per cause.
    pub(crate) fn duplicate_causes(&self, stops: &[(Instant, &'static str)]) -> Vec<(String, u64)> {
        let store = self.store.lock().expect("not poisoned");
        let mut causes: std::collections::BTreeMap<String, u64> = Default::default();
        for source in Source::ALL {
            for (seq, batch) in store.first[source as usize].iter().enumerate() {
                let extra = store.tally.copies(source, seq as u64).saturating_sub(1);
                if extra == 0 {
                    continue;
                }
                let (at, late) = store.batches[*batch as usize];
                let stop = stops
                    .iter()
                    .find(|(t, _)| *t >= at && *t - at <= STOP_WINDOW);
                let cause = match (late, stop) {
                    (true, _) => "answered after the agent's timeout".to_owned(),
                    (false, Some((_, how))) => format!("accepted up to 10 s before a {how}"),
                    (false, None) => "UNEXPLAINED".to_owned(),
                };
                *causes.entry(cause).or_default() += u64::from(extra);
            }
        }
        causes.into_iter().collect()
    }
}

/// Takes one from a count-down fault: true if it was not yet at zero.
fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// Ends the connection without an answer (see `tests/util/faults.rs`).
fn cut_connection() -> ! {
    std::panic::resume_unwind(Box::new("injected connection reset"))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        serde_json::to_vec(&body).expect("json"),
    )
        .into_response()
}

/// Every request: the faults first, then PutRecordBatch.
async fn handle(State(s): State<Served>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let f = &s.faults;
    if f.outage.load(Ordering::Acquire) {
        cut_connection();
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target != "Firehose_20150804.PutRecordBatch" {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"__type": "UnknownOperationException"}),
        );
    }
    if take(&f.reset_requests) {
        cut_connection();
    }
    if take(&f.fail_requests) {
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"__type": "InternalFailure", "message": "injected"}),
        );
    }
    let delay = if take(&f.late_requests) {
        Some(LATE)
    } else {
        take(&f.slow_requests).then_some(SLOW)
    };
    let answer = put_record_batch(&s, &body, delay == Some(LATE));
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    answer
}

/// Answers each record: refused while a per-record fault lasts, else stored. A
/// request answered `late` takes no per-record fault: the agent would never see
/// the refusal.
fn put_record_batch(s: &Served, body: &[u8], late: bool) -> Response {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"__type": "SerializationException"}),
        );
    };
    let mut store = s.store.lock().expect("not poisoned");
    let batch = store.batches.len() as u32;
    store.batches.push((Instant::now(), late));
    let mut failed = 0;
    let answers: Vec<serde_json::Value> = request["Records"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|record| {
            let code = if !late && take(&s.faults.throttle_records) {
                "ServiceUnavailableException"
            } else if !late && take(&s.faults.fail_records) {
                "InternalFailure"
            } else {
                store.accept(record, batch);
                return serde_json::json!({"RecordId": format!("{:056}", store.records)});
            };
            failed += 1;
            serde_json::json!({"ErrorCode": code, "ErrorMessage": "injected"})
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({"FailedPutCount": failed, "Encrypted": false, "RequestResponses": answers}),
    )
}

impl Store {
    /// Stores one Firehose record: counts each of its lines.
    fn accept(&mut self, record: &serde_json::Value, batch: u32) {
        let data = base64::engine::general_purpose::STANDARD
            .decode(record["Data"].as_str().unwrap_or_default())
            .unwrap_or_default();
        self.records += 1;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.tally.note(line, true);
            if let Some((source, seq)) = parse_id(line) {
                let first = &mut self.first[source as usize];
                if first.len() <= seq as usize {
                    first.resize(seq as usize + 1, u32::MAX);
                }
                if first[seq as usize] == u32::MAX {
                    first[seq as usize] = batch;
                }
            }
        }
    }
}
