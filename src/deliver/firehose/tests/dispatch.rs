//! A Firehose stream's dispatcher, end to end inside delivery: lines packed into
//! records, a throttled record retried alone, a refused record split into its
//! lines, and receipts that resolve only once every record made of a spool entry
//! was accepted. The client answers as PutRecordBatch does (no shard ids), from a
//! script of per-record refusals.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aggregate::Encoded;
use crate::deliver::firehose::{self, Packing};
use crate::deliver::kinesis::{BoxFuture, EntryResult, ErrorCode, Kinesis, KinesisError};
use crate::deliver::{spawn_stream, Context, DeadLetter, DeliveryOptions, Failure};
use crate::intake::{DeliveryError, DeliveryResult, Intake};
use crate::metrics::Metrics;
use crate::record::UserRecord;
use crate::shard_map::Shard;
use crate::spool::{Spool, SpoolOptions};

/// A Firehose that refuses records by a script and keeps what it accepted.
#[derive(Default)]
struct Scripted {
    /// Per record, in the order they arrive: `Some(code)` refuses it.
    refusals: Mutex<VecDeque<Option<&'static str>>>,
    /// Accepted records' data, in arrival order.
    accepted: Mutex<Vec<Vec<u8>>>,
    /// Records per request.
    requests: Mutex<Vec<usize>>,
    list_calls: Mutex<u32>,
    /// How long each answer takes (requests stay in flight meanwhile).
    delay: Duration,
}

impl Kinesis for Scripted {
    fn list_shards<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        *self.list_calls.lock().unwrap() += 1;
        Box::pin(async { Ok(Vec::new()) })
    }

    fn put_records<'a>(
        &'a self,
        stream: &'a str,
        entries: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        assert_eq!(stream, "firehose:web");
        self.requests.lock().unwrap().push(entries.len());
        let results = entries
            .into_iter()
            .map(|e| {
                assert!(e.partition_key.is_empty(), "a Firehose record has no key");
                match self.refusals.lock().unwrap().pop_front().flatten() {
                    Some(code) => EntryResult::Failed {
                        code: ErrorCode::kinesis(code),
                        message: format!("{code} (scripted)"),
                    },
                    None => {
                        self.accepted.lock().unwrap().push(e.data.to_vec());
                        EntryResult::Accepted {
                            shard_id: String::new(),
                        }
                    }
                }
            })
            .collect();
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(results)
        })
    }
}

struct Harness {
    firehose: Arc<Scripted>,
    intake: Intake,
    metrics: Metrics,
    _failures: mpsc::Receiver<Failure>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    _drain: watch::Sender<Option<Instant>>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start(packing: Packing, refusals: Vec<Option<&'static str>>) -> Harness {
        let firehose = Scripted {
            refusals: Mutex::new(refusals.into()),
            ..Default::default()
        };
        Harness::with(firehose, packing, crate::deliver::tests::options()).await
    }

    /// A harness whose Firehose answers after `delay`, with an in-flight window of
    /// `window` bytes.
    async fn windowed(packing: Packing, window: u64, delay: Duration) -> Harness {
        let firehose = Scripted {
            delay,
            ..Default::default()
        };
        let mut options = crate::deliver::tests::options();
        options.max_inflight_bytes = window;
        Harness::with(firehose, packing, options).await
    }

    async fn with(firehose: Scripted, packing: Packing, mut options: DeliveryOptions) -> Harness {
        let firehose = Arc::new(firehose);
        options.packing = vec![(firehose::route("web"), packing)];
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = Spool::open(&SpoolOptions::default()).expect("memory spool");
        let stream = spool.stream("firehose:web").expect("stream");
        let (intake, outlet) = crate::intake::open(stream);
        let (failures_tx, failures) = mpsc::channel(16);
        let (drain_tx, drain_rx) = watch::channel(None);
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let ctx = Context {
            kinesis: firehose.clone(),
            permits: Arc::new(Semaphore::new(options.max_connections)),
            share: options.max_connections,
            options,
            metrics: metrics.clone(),
            failures: failures_tx,
            dead_letter: Some(Arc::new(DeadLetter::new(dir.path().join("dead.jsonl")))),
            shutdown: shutdown.clone(),
            drain_deadline: drain_rx,
        };
        let tracker = TaskTracker::new();
        spawn_stream(outlet, ctx, &tracker);
        Harness {
            firehose,
            intake,
            metrics,
            _failures: failures,
            shutdown,
            tracker,
            _drain: drain_tx,
            dir,
        }
    }

    async fn put(&self, lines: std::ops::Range<u32>) -> oneshot::Receiver<DeliveryResult> {
        let records = lines
            .map(|i| UserRecord::new(format!("k{i}"), format!("line {i}")))
            .collect();
        let (tx, rx) = oneshot::channel();
        self.intake
            .push(records, Some(tx), None, None)
            .await
            .expect("pushed");
        rx
    }

    /// Every accepted line, in order of arrival.
    fn lines(&self) -> Vec<String> {
        let accepted = self.firehose.accepted.lock().unwrap();
        let text: String = accepted
            .iter()
            .map(|d| String::from_utf8(d.clone()).expect("utf-8"))
            .collect();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "each line ends in a newline"
        );
        text.lines().map(str::to_owned).collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn packing(max_bytes: usize) -> Packing {
    Packing {
        enabled: true,
        max_bytes,
        linger: Duration::from_millis(5),
    }
}

fn expected(lines: std::ops::Range<u32>) -> Vec<String> {
    lines.map(|i| format!("line {i}")).collect()
}

async fn delivered(rx: oneshot::Receiver<DeliveryResult>) -> DeliveryResult {
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("the receipt resolves")
        .expect("the receipt is sent")
}

#[tokio::test]
async fn lines_are_packed_into_one_record_without_list_shards() {
    let h = Harness::start(packing(firehose::MAX_RECORD_BYTES), Vec::new()).await;
    let receipt = h.put(0..300).await;
    assert!(delivered(receipt).await.is_ok());
    assert_eq!(h.lines(), expected(0..300));
    assert_eq!(
        *h.firehose.requests.lock().unwrap(),
        [1],
        "one record, one request"
    );
    assert_eq!(*h.firehose.list_calls.lock().unwrap(), 0, "no ListShards");
    let packed = h.metrics.encode();
    assert!(
        packed.contains("shardline_firehose_records_per_record_sum{stream=\"firehose:web\"} 300"),
        "{packed}"
    );
    h.stop().await;
}

#[tokio::test]
async fn one_line_per_record_when_packing_is_off() {
    let off = Packing {
        enabled: false,
        ..packing(firehose::MAX_RECORD_BYTES)
    };
    let h = Harness::start(off, Vec::new()).await;
    assert!(delivered(h.put(0..20).await).await.is_ok());
    assert_eq!(h.lines(), expected(0..20));
    assert_eq!(h.firehose.accepted.lock().unwrap().len(), 20);
    h.stop().await;
}

/// Records of 10 lines each ("line N\n" is 7-9 bytes): the second of the first
/// request is throttled, then the first of the retry fails internally. The
/// receipt waits for both retries; every line arrives once.
#[tokio::test]
async fn refused_records_are_retried_alone_and_the_receipt_waits_for_them() {
    let refusals = vec![
        None,
        Some("ServiceUnavailableException"),
        None,
        Some("InternalFailure"),
    ];
    let h = Harness::start(packing(90), refusals).await;
    let receipt = h.put(0..30).await;
    assert!(delivered(receipt).await.is_ok());
    let mut lines = h.lines();
    lines.sort_by_key(|l| l[5..].parse::<u32>().unwrap());
    assert_eq!(lines, expected(0..30), "every line once");
    let requests = h.firehose.requests.lock().unwrap().clone();
    assert!(
        requests.len() >= 3,
        "the refused records went again: {requests:?}"
    );
    let throttles = h
        .metrics
        .read("shardline_throttles_total", &[("stream", "firehose:web")]);
    assert_eq!(throttles, 1);
    h.stop().await;
}

/// A record refused for good is split into its lines; the one line refused
/// again alone goes to the dead-letter file, and the others are delivered.
#[tokio::test]
async fn a_record_refused_for_good_is_split_and_only_its_bad_line_is_given_up() {
    let refusals = vec![
        Some("InvalidArgumentException"),
        None,
        Some("InvalidArgumentException"),
    ];
    let h = Harness::start(packing(firehose::MAX_RECORD_BYTES), refusals).await;
    let receipt = h.put(0..5).await;
    match delivered(receipt).await {
        Err(DeliveryError::Rejected { code, .. }) => assert_eq!(code, "InvalidArgumentException"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Split: line 0 accepted, line 1 refused alone, lines 2-4 accepted.
    assert_eq!(h.lines(), ["line 0", "line 2", "line 3", "line 4"]);
    let dead = std::fs::read_to_string(h.dir.path().join("dead.jsonl")).expect("dead letters");
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(dead.contains("firehose:web"), "{dead}");
    h.stop().await;
}

/// Regression: a full in-flight window sealed the open record at once, also
/// while requests were in flight whose answers would bring room back; with
/// records a sizeable part of the window, most were sent part full (`e2e`: a
/// third of the 1,000 KiB records held under a tenth of their lines). Lines come
/// in many small spool entries into a window of a few records, answers take
/// 20 ms: every record but the last is full.
#[tokio::test]
async fn a_full_window_does_not_cut_the_open_record_while_requests_are_in_flight() {
    let max_bytes = 1000;
    let packed = Packing {
        linger: Duration::from_millis(300),
        ..packing(max_bytes)
    };
    let h = Harness::windowed(packed, 8 << 10, Duration::from_millis(20)).await;
    let mut receipts = Vec::new();
    for i in 0..60 {
        receipts.push(h.put(i * 50..(i + 1) * 50).await);
    }
    for r in receipts {
        assert!(delivered(r).await.is_ok());
    }
    let mut lines = h.lines();
    lines.sort_by_key(|l| l[5..].parse::<u32>().unwrap());
    assert_eq!(lines, expected(0..3000), "every line once");
    let sizes: Vec<usize> = h
        .firehose
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    let (last, full) = sizes.split_last().expect("records");
    // "line NNNN\n" is at most 10 bytes: a full record has no room for another.
    assert!(
        full.iter().all(|n| *n > max_bytes - 10),
        "records cut short: {sizes:?} (last {last})"
    );
    h.stop().await;
}
