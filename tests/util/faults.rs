//! A fault-injecting layer in front of the emulator's handler: it sees every request
//! between the agent and the emulator and can answer in the emulator's place with
//! faults the emulator cannot make itself.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;

/// What to inject; change it while the agent runs. Tests own it through
/// `Emulator::faults` and set it; only [`layer`] reads it.
#[derive(Default)]
pub struct Faults {
    /// PutRecords requests to answer with HTTP 500 `InternalFailure` (counts down).
    pub fail_requests: AtomicU32,
    /// A request carrying a user record whose data contains this marker is refused
    /// as a whole with 400 `ValidationException`.
    pub poison: Mutex<Option<Vec<u8>>>,
    /// PutRecords entries to refuse with `ProvisionedThroughputExceededException`
    /// (counts down); they are taken out of the request before it reaches the
    /// emulator, as Kinesis does not store a throttled entry.
    pub throttle_entries: AtomicU32,
    /// Delay before each PutRecords request is handled.
    pub delay_ms: AtomicU64,
    /// PutRecords requests whose connection is cut before they reach the emulator
    /// (counts down): the client sees a reset, nothing is stored.
    pub reset_requests: AtomicU32,
    /// While set, every request's connection is cut: the endpoint is gone.
    pub outage: AtomicBool,
    /// Accepted PutRecords entries whose reported ShardId is swapped for another
    /// shard's (counts down): the records are stored where they belong, but the
    /// answer says otherwise.
    pub wrong_shard: AtomicU32,
    /// PutRecords requests seen.
    pub put_records: AtomicU64,
    /// `access key id/region` of every PutRecords request's credential scope, in
    /// order: who signed it, for which region (only the agent sends PutRecords).
    pub signers: Mutex<Vec<String>>,
}

/// `AKID/region` from a SigV4 `Authorization` header
/// (`Credential=AKID/date/region/service/aws4_request`).
pub fn signer(authorization: &str) -> Option<String> {
    let scope = authorization.split("Credential=").nth(1)?;
    let scope = scope.split([',', ' ']).next()?;
    let parts: Vec<&str> = scope.split('/').collect();
    Some(format!("{}/{}", parts.first()?, parts.get(2)?))
}

/// Ends the connection without an answer: the task serving it dies, and the client
/// sees the connection closed under its request.
fn cut_connection() -> ! {
    std::panic::resume_unwind(Box::new("injected connection reset"))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(&body).unwrap()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn entry_data(entry: &serde_json::Value) -> Bytes {
    base64::engine::general_purpose::STANDARD
        .decode(entry["Data"].as_str().unwrap_or_default())
        .unwrap_or_default()
        .into()
}

/// Takes one from a count-down fault: true if it was not yet at zero.
fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// Counts a PutRecords request and notes who signed it.
fn note_put_records(faults: &Faults, req: &Request) {
    faults.put_records.fetch_add(1, Ordering::Relaxed);
    if let Some(who) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(signer)
    {
        faults.signers.lock().unwrap().push(who);
    }
}

/// The refusal of a request that carries the poison marker, if it does.
fn poisoned(faults: &Faults, request: &serde_json::Value) -> Option<Response> {
    let marker = faults.poison.lock().unwrap().clone()?;
    for e in request["Records"].as_array().unwrap() {
        let data = entry_data(e);
        let users = shardline::aggregate::deaggregate("p", None, &data).unwrap();
        if users.iter().any(|u| contains(&u.data, &marker)) {
            return Some(json_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"__type": "ValidationException", "message": "injected: record refused"}),
            ));
        }
    }
    None
}

/// Which of `entries` entries are throttled: the first ones, while the count
/// lasts.
fn throttle(faults: &Faults, entries: usize) -> Vec<bool> {
    let mut throttled = vec![false; entries];
    for t in throttled.iter_mut() {
        if take(&faults.throttle_entries) {
            *t = true;
        } else {
            break;
        }
    }
    throttled
}

/// Sends the entries that are not throttled on to the emulator. Returns its
/// per-entry results, or (as `Err`) its response when it is to be passed back as
/// it is: a failure, or nothing to change in it.
async fn forward_unthrottled(
    faults: &Faults,
    parts: axum::http::request::Parts,
    mut request: serde_json::Value,
    throttled: &[bool],
    next: Next,
) -> Result<Vec<serde_json::Value>, Response> {
    let entries = request["Records"].as_array().unwrap().clone();
    let kept: Vec<serde_json::Value> = entries
        .iter()
        .zip(throttled)
        .filter(|(_, t)| !**t)
        .map(|(e, _)| e.clone())
        .collect();
    let throttled_count = throttled.iter().filter(|t| **t).count();
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    request["Records"] = serde_json::Value::Array(kept);
    let forwarded = Request::from_parts(parts, Body::from(serde_json::to_vec(&request).unwrap()));
    let response = next.run(forwarded).await;
    let swap = faults.wrong_shard.load(Ordering::Acquire) > 0;
    if (throttled_count == 0 && !swap) || !response.status().is_success() {
        return Err(response);
    }
    let (_, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    Ok(v["Records"].as_array().unwrap().clone())
}

/// The answer for the whole request: throttled entries refused, the emulator's
/// results for the others (with a shard swapped while `wrong_shard` lasts).
fn merge_results(
    faults: &Faults,
    throttled: &[bool],
    upstream_results: Vec<serde_json::Value>,
) -> Response {
    let mut upstream = upstream_results.into_iter();
    let mut failed = 0;
    let results: Vec<serde_json::Value> = throttled
        .iter()
        .map(|t| {
            if *t {
                failed += 1;
                serde_json::json!({
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "injected: rate exceeded for shard"
                })
            } else {
                let mut r = upstream.next().unwrap();
                if r.get("ErrorCode").is_some() {
                    failed += 1;
                } else if take(&faults.wrong_shard) {
                    let id = r["ShardId"].as_str().unwrap_or_default().to_owned();
                    let other = if id.ends_with('0') {
                        format!("{}1", &id[..id.len() - 1])
                    } else {
                        format!("{}0", &id[..id.len() - 1])
                    };
                    r["ShardId"] = serde_json::Value::String(other);
                }
                r
            }
        })
        .collect();
    json_response(
        StatusCode::OK,
        serde_json::json!({"FailedRecordCount": failed, "Records": results}),
    )
}

/// The middleware: passes every request on to the emulator, or answers in its
/// place as [`Faults`] says. Installed by `Emulator::serve`; the only reader of
/// the faults a test sets.
pub async fn layer(State(faults): State<Arc<Faults>>, req: Request, next: Next) -> Response {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if faults.outage.load(Ordering::Acquire) {
        cut_connection();
    }
    if !target.ends_with(".PutRecords") {
        return next.run(req).await;
    }
    note_put_records(&faults, &req);
    let delay = faults.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if take(&faults.reset_requests) {
        cut_connection();
    }
    if take(&faults.fail_requests) {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"__type": "InternalFailure", "message": "injected"}),
        );
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    if let Some(refused) = poisoned(&faults, &request) {
        return refused;
    }
    // Take throttled entries out; answer for them after the emulator answered the rest.
    let throttled = throttle(&faults, request["Records"].as_array().unwrap().len());
    match forward_unthrottled(&faults, parts, request, &throttled, next).await {
        Ok(upstream) => merge_results(&faults, &throttled, upstream),
        Err(response) => response,
    }
}
