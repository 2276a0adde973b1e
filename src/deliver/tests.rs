//! The dispatcher driven with paused time, against the ferrokinesis emulator's
//! store called in-process (no sockets, so virtual time is the only clock the
//! requests see). A thin fault layer refuses entries the way a throttled shard
//! does, as the integration tests' HTTP layer does.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ferrokinesis::actions::{self, Operation};
use ferrokinesis::store::{Store, StoreOptions};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::kinesis::{BoxFuture, EntryResult, ErrorCode, Kinesis, KinesisError};
use super::{
    spawn_stream, Context, DeadLetter, DeliveryOptions, Failure, MAX_BATCH_BYTES, MAX_BATCH_RECORDS,
};
use crate::aggregate::{Encoded, Format, Limits};
use crate::intake::{DeliveryError, DeliveryResult, Intake};
use crate::metrics::Metrics;
use crate::record::UserRecord;
use crate::shard_map::Shard;
use crate::spool::{Spool, SpoolOptions};

const STREAM: &str = "s";

/// One PutRecords request as the emulator saw it.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    /// Per entry: the shard it landed in, or the error code.
    results: Vec<Result<String, String>>,
}

/// The emulator's store behind the [`Kinesis`] trait.
struct Emulated {
    store: Store,
    /// Entries still to refuse with `ProvisionedThroughputExceededException`.
    throttle_entries: AtomicU32,
    list_calls: AtomicU32,
    calls: Mutex<Vec<Call>>,
}

fn error(operation: &'static str, e: ferrokinesis::error::KinesisErrorResponse) -> KinesisError {
    KinesisError {
        operation,
        code: ErrorCode::kinesis(&e.body.error_type),
        message: e.body.message.clone().unwrap_or_default(),
    }
}

impl Emulated {
    async fn call(
        &self,
        op: Operation,
        data: Value,
    ) -> Result<Value, ferrokinesis::error::KinesisErrorResponse> {
        actions::dispatch(&self.store, op, data)
            .await
            .map(|v| v.unwrap_or(Value::Null))
    }

    async fn create(&self, shards: u32) {
        self.call(
            Operation::CreateStream,
            json!({"StreamName": STREAM, "ShardCount": shards}),
        )
        .await
        .expect("create stream");
        self.wait_active().await;
    }

    /// Waits, in real time, for the stream to be usable again.
    async fn wait_active(&self) {
        loop {
            let status = self
                .call(
                    Operation::DescribeStreamSummary,
                    json!({"StreamName": STREAM}),
                )
                .await
                .expect("describe stream");
            if status["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
            tokio::task::yield_now().await;
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Kinesis for Emulated {
    fn list_shards<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        Box::pin(async move {
            self.list_calls.fetch_add(1, Ordering::SeqCst);
            let out = self
                .call(Operation::ListShards, json!({"StreamName": stream}))
                .await
                .map_err(|e| error("ListShards", e))?;
            let mut shards = Vec::new();
            for s in out["Shards"].as_array().expect("shards") {
                if !s["SequenceNumberRange"]["EndingSequenceNumber"].is_null() {
                    continue;
                }
                let key = |k: &str| {
                    s["HashKeyRange"][k]
                        .as_str()
                        .unwrap()
                        .parse::<u128>()
                        .unwrap()
                };
                shards.push(Shard {
                    id: s["ShardId"].as_str().unwrap().into(),
                    start: key("StartingHashKey"),
                    end: key("EndingHashKey"),
                });
            }
            Ok(shards)
        })
    }

    fn put_records<'a>(
        &'a self,
        stream: &'a str,
        entries: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        Box::pin(async move {
            let mut results = Vec::new();
            let mut sent = Vec::new();
            for e in entries {
                let refuse = self
                    .throttle_entries
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refuse {
                    results.push(Some(Err(
                        "ProvisionedThroughputExceededException".to_owned()
                    )));
                    continue;
                }
                results.push(None);
                sent.push(json!({
                    "Data": base64::engine::general_purpose::STANDARD.encode(&e.data),
                    "PartitionKey": e.partition_key,
                    "ExplicitHashKey": e.explicit_hash_key,
                }));
            }
            let answered = if sent.is_empty() {
                Vec::new()
            } else {
                let out = self
                    .call(
                        Operation::PutRecords,
                        json!({"StreamName": stream, "Records": sent}),
                    )
                    .await
                    .map_err(|e| error("PutRecords", e))?;
                out["Records"].as_array().expect("records").clone()
            };
            let mut answered = answered.into_iter();
            let results: Vec<Result<String, String>> = results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        let a = answered.next().expect("one result per entry");
                        match a["ErrorCode"].as_str() {
                            Some(code) => Err(code.to_owned()),
                            None => Ok(a["ShardId"].as_str().unwrap().to_owned()),
                        }
                    })
                })
                .collect();
            self.calls.lock().unwrap().push(Call {
                at: Instant::now(),
                results: results.clone(),
            });
            Ok(results
                .into_iter()
                .map(|r| match r {
                    Ok(shard_id) => EntryResult::Accepted { shard_id },
                    Err(code) => EntryResult::Failed {
                        message: format!("{code} (emulated)"),
                        code: ErrorCode::kinesis(&code),
                    },
                })
                .collect())
        })
    }
}

pub(super) fn options() -> DeliveryOptions {
    DeliveryOptions {
        max_connections: 4,
        linger: Duration::from_millis(10),
        aggregation: Limits {
            max_bytes: 1 << 20,
            max_records: 1000,
            format: Format::Kpl,
            packs: None,
        },
        batch_max_records: MAX_BATCH_RECORDS,
        batch_max_bytes: MAX_BATCH_BYTES,
        shard_refresh_interval: Duration::from_secs(60),
        max_inflight_bytes: 64 << 20,
        shard_rate_factor: 0.0,
        max_record_age: None,
        packing: Vec::new(),
        aggregate: true,
        aggregate_streams: Vec::new(),
        compression: None,
        compression_streams: Vec::new(),
        overrides: Vec::new(),
    }
}

/// One stream's dispatcher on a memory-only spool.
struct Harness {
    kinesis: Arc<Emulated>,
    intake: Intake,
    metrics: Metrics,
    failures: mpsc::Receiver<Failure>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    _drain: watch::Sender<Option<Instant>>,
    dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the dispatcher; `shards: None` leaves the stream missing.
    async fn start(shards: Option<u32>, options: DeliveryOptions) -> Harness {
        let store = Store::new(StoreOptions {
            create_stream_ms: 0,
            update_stream_ms: 0,
            ..StoreOptions::default()
        });
        let kinesis = Arc::new(Emulated {
            store,
            throttle_entries: AtomicU32::new(0),
            list_calls: AtomicU32::new(0),
            calls: Mutex::new(Vec::new()),
        });
        if let Some(n) = shards {
            kinesis.create(n).await;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = Spool::open(&SpoolOptions::default()).expect("memory spool");
        let (intake, outlet) = crate::intake::open(spool.stream(STREAM).expect("stream"));
        let (failures_tx, failures) = mpsc::channel(16);
        let (drain_tx, drain_rx) = watch::channel(None);
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let ctx = Context {
            kinesis: kinesis.clone(),
            permits: Arc::new(Semaphore::new(options.max_connections)),
            share: options.max_connections,
            options,
            metrics: metrics.clone(),
            failures: failures_tx,
            dead_letter: Some(Arc::new(DeadLetter::new(
                dir.path().join("dead-letter.jsonl"),
            ))),
            shutdown: shutdown.clone(),
            drain_deadline: drain_rx,
        };
        let tracker = TaskTracker::new();
        spawn_stream(outlet, ctx, &tracker);
        Harness {
            kinesis,
            intake,
            metrics,
            failures,
            shutdown,
            tracker,
            _drain: drain_tx,
            dir,
        }
    }

    async fn put(&self, records: Vec<UserRecord>) -> oneshot::Receiver<DeliveryResult> {
        let (tx, rx) = oneshot::channel();
        self.intake
            .push(records, Some(tx), None, None)
            .await
            .expect("pushed");
        rx
    }

    /// Lets virtual time run in small steps until `done` holds.
    async fn until(&self, what: &str, mut done: impl FnMut(&Harness) -> bool) {
        for _ in 0..100_000 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never happened: {what}");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn record(i: u32, hash_key: u128) -> UserRecord {
    let mut r = UserRecord::new(format!("k{i}"), format!("record {i}"));
    r.explicit_hash_key = Some(hash_key);
    r
}

#[tokio::test]
async fn an_open_aggregate_is_sent_when_its_linger_ends() {
    let mut options = options();
    options.linger = Duration::from_millis(500);
    let h = Harness::start(Some(1), options).await;
    tokio::time::pause();
    h.until("the first map", |h| {
        h.kinesis.list_calls.load(Ordering::SeqCst) > 0
    })
    .await;
    let start = Instant::now();
    let receipt = h.put(vec![record(0, 1)]).await;
    h.until("a request", |h| !h.kinesis.calls().is_empty())
        .await;
    let calls = h.kinesis.calls();
    let waited = calls[0].at - start;
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(510),
        "sent after {waited:?}, linger is 500 ms"
    );
    assert_eq!(receipt.await.unwrap(), Ok(()));
    assert_eq!(h.metrics.delivered_count(STREAM), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_flush_seals_before_the_linger_ends() {
    let mut options = options();
    options.linger = Duration::from_secs(3600);
    let h = Harness::start(Some(1), options).await;
    tokio::time::pause();
    h.until("the first map", |h| {
        h.kinesis.list_calls.load(Ordering::SeqCst) > 0
    })
    .await;
    let receipt = h.put(vec![record(0, 1), record(1, 2)]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.kinesis.calls().is_empty(), "sent before its linger");
    h.intake.flush();
    assert_eq!(receipt.await.unwrap(), Ok(()));
    let calls = h.kinesis.calls();
    assert_eq!(calls.len(), 1);
    // Two user records, one aggregate.
    assert_eq!(calls[0].results.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_throttled_shard_waits_out_its_window_each_time() {
    let h = Harness::start(Some(1), options()).await;
    tokio::time::pause();
    h.kinesis.throttle_entries.store(3, Ordering::SeqCst);
    let receipt = h.put(vec![record(0, 1)]).await;
    assert_eq!(receipt.await.unwrap(), Ok(()));
    let calls = h.kinesis.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    for c in &calls[..3] {
        assert_eq!(
            c.results,
            vec![Err("ProvisionedThroughputExceededException".to_owned())]
        );
    }
    assert!(calls[3].results[0].is_ok());
    // A throttled shard's one-second window is full: each retry waits half a
    // window to a whole one, jittered.
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(500) && *gap <= Duration::from_millis(1005),
            "gaps {gaps:?}"
        );
    }
    assert_eq!(
        h.metrics
            .read("shardline_records_retried_total", &[("stream", STREAM)]),
        3
    );
    assert_eq!(h.metrics.delivered_count(STREAM), 1);
    h.stop().await;
}

#[tokio::test]
async fn records_are_routed_again_after_the_shard_map_changes() {
    let mut options = options();
    options.linger = Duration::from_secs(5);
    options.shard_refresh_interval = Duration::from_secs(1);
    let h = Harness::start(Some(1), options).await;
    h.until("the first map", |h| {
        h.kinesis.list_calls.load(Ordering::SeqCst) > 0
    })
    .await;
    tokio::time::pause();
    let half = 1u128 << 127;
    let records: Vec<UserRecord> = (0..20)
        .map(|i| record(i, if i % 2 == 0 { 5 } else { half + 5 }))
        .collect();
    let receipt = h.put(records).await;
    // Aggregated for the one shard, waiting out the linger; the shard splits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.kinesis
        .call(
            Operation::SplitShard,
            json!({
                "StreamName": STREAM,
                "ShardToSplit": "shardId-000000000000",
                "NewStartingHashKey": half.to_string(),
            }),
        )
        .await
        .expect("split");
    h.kinesis.wait_active().await;
    assert_eq!(receipt.await.unwrap(), Ok(()));
    // The first map, then the split one.
    assert_eq!(
        h.metrics
            .read("shardline_shard_map_changes_total", &[("stream", STREAM)]),
        2
    );
    let landed: Vec<String> = h
        .kinesis
        .calls()
        .into_iter()
        .flat_map(|c| c.results)
        .map(|r| r.expect("accepted"))
        .collect();
    // One aggregate per child shard, none into the closed parent.
    let mut shards = landed.clone();
    shards.sort();
    shards.dedup();
    assert_eq!(landed.len(), 2, "{landed:?}");
    assert_eq!(shards.len(), 2, "{landed:?}");
    assert!(
        !shards.contains(&"shardId-000000000000".to_owned()),
        "{landed:?}"
    );
    assert_eq!(
        h.metrics
            .read("shardline_records_misrouted_total", &[("stream", STREAM)]),
        0
    );
    assert_eq!(h.metrics.delivered_count(STREAM), 20);
    h.stop().await;
}

#[tokio::test]
async fn records_waiting_for_a_missing_stream_expire_to_the_dead_letter_file() {
    let mut options = options();
    options.max_record_age = Some(Duration::from_millis(1));
    let mut h = Harness::start(None, options).await;
    tokio::time::pause();
    let receipt = h.put(vec![record(7, 1)]).await;
    // Spool times are wall-clock: let the record grow older than its limit.
    std::thread::sleep(Duration::from_millis(5));
    let failure = h.failures.recv().await.expect("a failure");
    assert_eq!(failure.code, ErrorCode::Expired);
    assert_eq!(failure.records.len(), 1);
    assert_eq!(&failure.records[0].data[..], b"record 7");
    match receipt.await.unwrap() {
        Err(DeliveryError::Rejected { code, .. }) => assert_eq!(code, "Expired"),
        other => panic!("receipt resolved to {other:?}"),
    }
    let dead =
        std::fs::read_to_string(h.dir.path().join("dead-letter.jsonl")).expect("dead letters");
    let line: Value = serde_json::from_str(dead.lines().next().expect("a line")).unwrap();
    assert_eq!(line["code"], "Expired");
    assert_eq!(line["partition_key"], "k7");
    assert_eq!(dead.lines().count(), 1);
    assert_eq!(
        h.metrics
            .read("shardline_records_failed_total", &[("stream", STREAM)]),
        1
    );
    assert!(h.kinesis.calls().is_empty());
    h.stop().await;
}
