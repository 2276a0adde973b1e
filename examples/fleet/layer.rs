//! The layer in front of the emulator: what ferrokinesis does not model of
//! Kinesis, and the tap on what the agents asked and were answered. [`Gate`]
//! owns the layer's settings and its ListShards window; [`layer`] is the axum
//! middleware `model` wraps the emulator's router with. Requests not signed by
//! an agent's access key (`fleet-agent-NN`: the model's own client reshards and
//! reads back) pass untouched and uncounted.
//!
//! - Latency: every agent request waits a lognormal delay before it is handled
//!   (median and 99th percentile from the options).
//! - ListShards: at most `list_shards_tps` calls per one-second window (one
//!   stream in the model, so the limit is per stream, as AWS documents it);
//!   past it `400 LimitExceededException`, as AWS answers. Every call is logged
//!   with its time and agent.
//! - PutRecords: request and answer are read whole; each entry is counted as
//!   accepted (its data and partition key bytes), throttled
//!   (`ProvisionedThroughputExceededException`) or failed, and the lines inside
//!   accepted entries (aggregates taken apart with the crate's own decoder) go
//!   to the tap with whether their aggregate lies inside the range of the shard
//!   that stored it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use shardline::aggregate::{deaggregate, is_aggregated};

use super::line::{now_us, parse_line};
use super::tap::{ListShardsCall, PutOutcome, Tap};

/// The access key id of agent `n`: how the layer tells the agents apart.
pub(crate) fn access_key(n: usize) -> String {
    format!("{KEY_PREFIX}{n:02}")
}

const KEY_PREFIX: &str = "fleet-agent-";

/// A request delay drawn from a lognormal distribution.
#[derive(Debug)]
pub(crate) struct Latency {
    median_ms: f64,
    /// σ of the underlying normal: ln(p99 / median) / z(0.99).
    sigma: f64,
    rng: Mutex<fastrand::Rng>,
}

impl Latency {
    /// A median of `median_ms` and a 99th percentile of `p99_ms` (0: none),
    /// drawn from `seed`.
    pub(crate) fn new(median_ms: f64, p99_ms: f64, seed: u64) -> Latency {
        let sigma = if median_ms > 0.0 && p99_ms > median_ms {
            (p99_ms / median_ms).ln() / 2.326_348
        } else {
            0.0
        };
        Latency {
            median_ms,
            sigma,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        }
    }

    fn sample(&self) -> Duration {
        if self.median_ms <= 0.0 {
            return Duration::ZERO;
        }
        let (u1, u2) = {
            let mut rng = self.rng.lock().expect("no holder panics");
            (1.0 - rng.f64(), rng.f64())
        };
        // Box–Muller: one standard normal from two uniforms.
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        // Capped at four σ: a model, not a lottery.
        let ms = self.median_ms * (self.sigma * z.min(4.0)).exp();
        Duration::from_secs_f64(ms / 1000.0)
    }
}

/// The layer's settings and state.
pub(crate) struct Gate {
    pub(crate) tap: Arc<Tap>,
    latency: Latency,
    stream: String,
    list_shards_tps: u32,
    /// The current one-second window of ListShards calls: its start and count.
    window: Mutex<(Instant, u32)>,
    ranges: Ranges,
}

impl Gate {
    pub(crate) fn new(
        tap: Arc<Tap>,
        latency: Latency,
        stream: &str,
        list_shards_tps: u32,
        client: aws_sdk_kinesis::Client,
    ) -> Gate {
        Gate {
            tap,
            latency,
            stream: stream.to_owned(),
            list_shards_tps,
            window: Mutex::new((Instant::now(), 0)),
            ranges: Ranges {
                client,
                stream: stream.to_owned(),
                known: tokio::sync::Mutex::new(HashMap::new()),
            },
        }
    }

    /// Counts a ListShards call of `agent`; true if it is over the limit.
    fn over_list_shards_limit(&self, agent: usize) -> bool {
        let now = Instant::now();
        let refused = {
            let mut w = self.window.lock().expect("no holder panics");
            if now.duration_since(w.0) >= Duration::from_secs(1) {
                *w = (now, 0);
            }
            w.1 += 1;
            w.1 > self.list_shards_tps
        };
        self.tap.note_list_shards(ListShardsCall {
            at: now,
            agent: Some(agent),
            refused,
        });
        refused
    }

    fn limit_exceeded(&self) -> Response {
        let body = serde_json::json!({
            "__type": "LimitExceededException",
            "message": format!("Rate exceeded for stream {} under account 000000000000.", self.stream),
        });
        let mut r = Response::new(Body::from(body.to_string()));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        let h = r.headers_mut();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        h.insert(
            "x-amzn-ErrorType",
            HeaderValue::from_static("LimitExceededException"),
        );
        r
    }

    /// Passes a PutRecords request of `agent` on and taps request and answer.
    async fn put_records(&self, agent: usize, req: Request, next: Next) -> Response {
        let (parts, body) = req.into_parts();
        let Ok(input) = axum::body::to_bytes(body, usize::MAX).await else {
            return next.run(Request::from_parts(parts, Body::empty())).await;
        };
        let response = next
            .run(Request::from_parts(parts, Body::from(input.clone())))
            .await;
        let (parts, body) = response.into_parts();
        let output = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let now = now_us();
        match parts.status.is_success() {
            true => match self.outcome(agent, &input, &output).await {
                Some(outcome) => self.tap.note_put(&outcome, now),
                None => self.tap.note_failed_request(agent),
            },
            false => self.tap.note_failed_request(agent),
        }
        Response::from_parts(parts, Body::from(output))
    }

    /// What a PutRecords request and its answer say (none if unreadable).
    async fn outcome(&self, agent: usize, input: &[u8], output: &[u8]) -> Option<PutOutcome> {
        let input: PutInput = serde_json::from_slice(input).ok()?;
        let output: PutOutput = serde_json::from_slice(output).ok()?;
        let mut outcome = PutOutcome {
            agent,
            ..Default::default()
        };
        for (entry, result) in input.records.iter().zip(&output.records) {
            match (&result.error_code, &result.shard_id) {
                (Some(code), _) if code == "ProvisionedThroughputExceededException" => {
                    outcome.throttled_entries += 1;
                }
                (None, Some(shard)) => self.accepted(entry, shard, &mut outcome).await?,
                _ => outcome.failed_entries += 1,
            }
        }
        Some(outcome)
    }

    /// Counts one accepted entry stored in `shard` and the lines inside it.
    async fn accepted(
        &self,
        entry: &InputEntry<'_>,
        shard: &str,
        out: &mut PutOutcome,
    ) -> Option<()> {
        let data = base64::engine::general_purpose::STANDARD
            .decode(entry.data.as_bytes())
            .ok()?;
        out.accepted_entries += 1;
        out.accepted_bytes += (data.len() + entry.partition_key.len()) as u64;
        let ehk = match &entry.explicit_hash_key {
            Some(k) => Some(k.parse::<u128>().ok()?),
            None => None,
        };
        let data = bytes::Bytes::from(data);
        let users = deaggregate(&entry.partition_key, ehk, &data).ok()?;
        // Kinesis itself places a plain record; an aggregate is placed by the
        // producer, and a KCL consumer drops it whole if one record is outside.
        let placed = !is_aggregated(&data) || {
            let range = self.ranges.of(shard).await;
            range.is_some_and(|(lo, hi)| users.iter().all(|u| (lo..=hi).contains(&u.hash_key())))
        };
        out.lines.extend(
            users
                .iter()
                .filter_map(|u| parse_line(&u.data))
                .map(|id| (id, placed)),
        );
        Some(())
    }
}

/// The hash key range of each shard, learnt from ListShards (the model's own
/// client) when a shard not seen before stores an entry.
struct Ranges {
    client: aws_sdk_kinesis::Client,
    stream: String,
    known: tokio::sync::Mutex<HashMap<String, (u128, u128)>>,
}

impl Ranges {
    async fn of(&self, shard: &str) -> Option<(u128, u128)> {
        let mut known = self.known.lock().await;
        if let Some(r) = known.get(shard) {
            return Some(*r);
        }
        let listed = self
            .client
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .ok()?;
        for s in listed.shards() {
            let Some(r) = s.hash_key_range() else {
                continue;
            };
            if let (Ok(lo), Ok(hi)) = (r.starting_hash_key().parse(), r.ending_hash_key().parse()) {
                known.insert(s.shard_id().to_owned(), (lo, hi));
            }
        }
        known.get(shard).copied()
    }
}

/// The part of a PutRecords request the tap reads.
#[derive(serde::Deserialize)]
struct PutInput<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<InputEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct InputEntry<'a> {
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
    #[serde(rename = "PartitionKey", borrow)]
    partition_key: Cow<'a, str>,
    #[serde(rename = "ExplicitHashKey", default, borrow)]
    explicit_hash_key: Option<Cow<'a, str>>,
}

/// The part of a PutRecords answer the tap reads.
#[derive(serde::Deserialize)]
struct PutOutput {
    #[serde(rename = "Records")]
    records: Vec<OutputEntry>,
}

#[derive(serde::Deserialize)]
struct OutputEntry {
    #[serde(rename = "ShardId", default)]
    shard_id: Option<String>,
    #[serde(rename = "ErrorCode", default)]
    error_code: Option<String>,
}

/// The operations the layer tells apart (`X-Amz-Target`).
#[derive(PartialEq, Eq)]
enum Operation {
    PutRecords,
    ListShards,
    Other,
}

fn operation(headers: &HeaderMap) -> Operation {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match target.rsplit('.').next() {
        Some("PutRecords") => Operation::PutRecords,
        Some("ListShards") => Operation::ListShards,
        _ => Operation::Other,
    }
}

/// The agent whose access key signed a request (`Credential=<key>/…`).
fn agent_of(headers: &HeaderMap) -> Option<usize> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?;
    let key = scope.split('/').next()?;
    key.strip_prefix(KEY_PREFIX)?.parse().ok()
}

/// The middleware: delay, limit and tap the agents' requests.
pub(crate) async fn layer(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let Some(agent) = agent_of(req.headers()) else {
        return next.run(req).await;
    };
    tokio::time::sleep(gate.latency.sample()).await;
    match operation(req.headers()) {
        Operation::ListShards if gate.over_list_shards_limit(agent) => gate.limit_exceeded(),
        Operation::PutRecords => gate.put_records(agent, req, next).await,
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signer_of_a_request_is_read_from_its_credential_scope() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=fleet-agent-07/20261207/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        assert_eq!(agent_of(&h), Some(7));
        assert_eq!(access_key(7), "fleet-agent-07");
    }

    #[test]
    fn the_latency_has_its_median_and_tail() {
        let l = Latency::new(20.0, 80.0, 7);
        let mut v: Vec<f64> = (0..20_000)
            .map(|_| l.sample().as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        let (p50, p99) = (v[10_000], v[19_800]);
        assert!((17.0..23.0).contains(&p50), "median {p50}");
        assert!((65.0..95.0).contains(&p99), "p99 {p99}");
    }
}
