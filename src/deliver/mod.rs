//! Delivery: from the spool to Kinesis and back to the spool as acks.
//!
//! One *dispatcher* task per stream owns everything about that stream's records in
//! memory: the shard map, one [`Aggregator`] per shard, the queue of sealed
//! aggregates, per-shard backoff and the delivery progress of every loaded spool
//! entry. It never waits on Kinesis: requests run on worker tasks, bounded across all
//! streams by `max_connections`, and their outcomes come back to the dispatcher as
//! messages. A request that must be retried therefore never holds a connection slot
//! while it waits, and its entries go back to the *front* of the queue.
//!
//! # Memory and the spool
//!
//! The spool is the queue; memory holds a window of it. A batch just written by a
//! source is handed over in memory while the dispatcher keeps up (`Intake::push`).
//! When the hand-over channel is full, or at start-up, the stream *spills*: new
//! batches go to the spool only, and the dispatcher reads them back in id order, as
//! far as `max_inflight_bytes` allows, until it has caught up. The switch between the
//! two paths happens under one lock with the appends, so no entry is loaded twice.
//! Replay after a restart is just the spilled path starting at id 0.
//!
//! # Acks
//!
//! A user record is retired only by a successful PutRecords entry that carried it;
//! a spool entry is deleted when all its records are retired, and a partly delivered
//! entry's progress bitmap is written in the same atomic batch, so a restart re-sends
//! only what was not accepted (up to one flush interval of acks, see [`crate::spool`]).
//!
//! # Resharding
//!
//! The shard map is refreshed on an interval, when a record's hash key falls outside
//! every known shard, and when a result names a shard other than the predicted one. A
//! changed map dissolves every aggregate not in flight and routes its records again;
//! aggregates in flight keep the generation of the map they were built with and are
//! dissolved if they come back failed.

pub mod kinesis;
pub mod proxy;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aggregate::{Aggregate, Aggregator, Encoded, Limits, Pending};
use crate::metrics::Metrics;
use crate::record::UserRecord;
use crate::shard_map::ShardMap;
use crate::spool::{Checkpoint, Entry, SpoolError, StreamSpool};
use kinesis::{EntryResult, ErrorClass, KinesisError, SharedKinesis};

/// Most entries in one PutRecords request (a Kinesis limit).
pub const MAX_BATCH_RECORDS: usize = 500;
/// Most bytes in one PutRecords request (a Kinesis limit).
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Batches handed over in memory per stream before the stream spills to the spool:
/// enough to absorb bursts of a few MiB without a spool read, small enough that the
/// channel itself is a negligible part of memory.
const INTAKE_CHANNEL_BATCHES: usize = 64;
/// Capacity of the channel that brings request outcomes back to a dispatcher. Each
/// worker sends exactly one message and holds a connection slot until then, so the
/// channel never needs more than `max_connections`; it is a floor.
const OUTCOME_CHANNEL_MIN: usize = 16;
/// Backoff after a failed request: first step and cap.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Cap of a shard's backoff: Kinesis counts a shard's writes in one-second
/// windows, so a throttled shard has room again within a second or so.
const SHARD_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Retry interval when the cause is outside the agent (credentials, missing stream).
const ENVIRONMENT_RETRY: Duration = Duration::from_secs(5);
/// How often records waiting for a shard map are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// How often the same kind of delivery problem is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of delivery.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    pub max_connections: usize,
    pub linger: Duration,
    pub aggregation: Limits,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub shard_refresh_interval: Duration,
    /// Most bytes of spool entries loaded into memory per stream.
    pub max_inflight_bytes: u64,
    /// Fraction of a shard's write limits (1 MiB/s, 1000 records/s) the per-shard
    /// rate limit allows; 0 turns the limit off.
    pub shard_rate_factor: f64,
    /// Records older than this are given up (dead-letter file) instead of retried;
    /// `None`: records wait as long as it takes.
    pub max_record_age: Option<Duration>,
}

/// A shard's write limits (Kinesis).
pub const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
pub const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
/// Burst a shard's token bucket holds, as time at the full rate: short, because
/// Kinesis counts a shard's writes in one-second windows and a burst on top of the
/// steady rate would cross the limit.
const BUCKET_BURST: f64 = 0.1;

/// A shard's token bucket: bytes and Kinesis records, refilled at the limited rate.
/// A request may take it below zero (an aggregate can be larger than the burst);
/// the shard then waits until it is back at zero.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    bytes: f64,
    records: f64,
    at: Instant,
}

impl Bucket {
    fn new(now: Instant, rate: (f64, f64)) -> Bucket {
        Bucket {
            bytes: rate.0 * BUCKET_BURST,
            records: rate.1 * BUCKET_BURST,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: (f64, f64)) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.bytes = (self.bytes + dt * rate.0).min(rate.0 * BUCKET_BURST);
        self.records = (self.records + dt * rate.1).min(rate.1 * BUCKET_BURST);
        self.at = now;
    }

    /// When the bucket will allow a record of `size` bytes (`None`: now). A record
    /// larger than the burst waits for a full bucket.
    fn ready_at(&self, size: usize, rate: (f64, f64)) -> Option<Instant> {
        let need_bytes = (size as f64).min(rate.0 * BUCKET_BURST);
        let wait_bytes = (need_bytes - self.bytes) / rate.0;
        let wait_records = (1.0 - self.records) / rate.1;
        let wait = wait_bytes.max(wait_records);
        (wait > 0.0).then(|| self.at + Duration::from_secs_f64(wait))
    }
}

/// A batch handed to a dispatcher.
struct Loaded {
    id: u64,
    bytes: u64,
    records: Vec<UserRecord>,
    /// The records' hash keys when the sender computed them (on its own thread, so
    /// the MD5s of many senders run in parallel); empty: computed at load.
    hash_keys: Vec<u128>,
    delivered: Option<Vec<u64>>,
    spooled_at_ms: u64,
}

impl From<Entry> for Loaded {
    fn from(e: Entry) -> Self {
        Loaded {
            id: e.id,
            bytes: e.bytes,
            records: e.records,
            hash_keys: Vec::new(),
            delivered: e.delivered,
            spooled_at_ms: e.spooled_at_ms,
        }
    }
}

#[derive(Debug)]
struct IntakeState {
    /// New batches go to the spool only; the dispatcher reads them back.
    spilling: bool,
    /// Next spool id the dispatcher reads while spilling.
    cursor: u64,
    /// Highest id spilled so far.
    last_spilled: u64,
}

/// The outcome a receipt resolves to.
pub type DeliveryResult = Result<(), DeliveryError>;

/// Why records of a batch were not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("Kinesis refused a record for good ({code}: {message}); it was written to the dead-letter file")]
    Rejected { code: String, message: String },
    #[error(
        "not delivered before the producer stopped; the records stay spooled for the next start"
    )]
    NotDelivered,
}

/// Senders of delivery receipts, by spool entry.
#[derive(Default)]
struct Waiters {
    /// Lets the dispatcher skip the lock when nobody waits (the common case).
    count: AtomicUsize,
    /// `None` once the dispatcher has stopped.
    map: Mutex<Option<HashMap<u64, oneshot::Sender<DeliveryResult>>>>,
}

impl Waiters {
    fn new() -> Waiters {
        Waiters {
            count: AtomicUsize::new(0),
            map: Mutex::new(Some(HashMap::new())),
        }
    }

    fn add(&self, id: u64, tx: oneshot::Sender<DeliveryResult>) {
        match self.map.lock().expect("waiters lock poisoned").as_mut() {
            Some(map) => {
                map.insert(id, tx);
                self.count.fetch_add(1, Ordering::Release);
            }
            None => {
                let _ = tx.send(Err(DeliveryError::NotDelivered));
            }
        }
    }

    /// Drops the receipt of a batch that was not taken after all.
    /// Takes back the receipt of an entry that was not written after all.
    fn take(&self, id: u64) -> Option<oneshot::Sender<DeliveryResult>> {
        let removed = self
            .map
            .lock()
            .expect("waiters lock poisoned")
            .as_mut()
            .and_then(|m| m.remove(&id));
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::Release);
        }
        removed
    }

    /// The dispatcher stopped: every receipt still waiting learns its records were
    /// not delivered (they stay spooled).
    fn close(&self) {
        let waiting = self.map.lock().expect("waiters lock poisoned").take();
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(Err(DeliveryError::NotDelivered));
        }
    }

    fn resolve(&self, id: u64, result: DeliveryResult) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let removed = self
            .map
            .lock()
            .expect("waiters lock poisoned")
            .as_mut()
            .and_then(|m| m.remove(&id));
        if let Some(tx) = removed {
            self.count.fetch_sub(1, Ordering::Release);
            // The receipt may have been dropped: nobody waits any more.
            let _ = tx.send(result);
        }
    }
}

/// The way into one stream's pipeline: writes a batch to the spool and hands it to
/// the dispatcher.
#[derive(Clone)]
pub struct Intake {
    spool: StreamSpool,
    tx: mpsc::Sender<Loaded>,
    state: Arc<Mutex<IntakeState>>,
    wake: Arc<Notify>,
    waiters: Arc<Waiters>,
    flush: Arc<Notify>,
}

/// Why a batch was not taken.
#[derive(Debug)]
pub enum PushFailure {
    Spool(SpoolError),
    /// The dispatcher is gone (the producer stopped).
    Stopped,
}

/// A batch the pipeline did not take, with the reason.
#[derive(Debug)]
pub struct PushError {
    pub failure: PushFailure,
    pub records: Vec<UserRecord>,
    /// The receipt given with the records, for another attempt.
    pub receipt: Option<oneshot::Sender<DeliveryResult>>,
}

impl Intake {
    pub fn stream(&self) -> &Arc<str> {
        self.spool.name()
    }

    /// Seals every partial aggregate now instead of at the end of its linger.
    pub fn flush(&self) {
        self.flush.notify_one();
    }

    /// The stream's spool (for sources that keep checkpoints).
    pub fn spool(&self) -> &StreamSpool {
        &self.spool
    }

    /// Appends a batch of validated records to the spool and queues it for
    /// delivery; `receipt` is told when every record of it is delivered. Returns the
    /// spool entry id; on failure (a full spool) the records come back with the
    /// error.
    pub async fn push(
        &self,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
        checkpoint: Option<&Checkpoint>,
        pace: Option<Duration>,
    ) -> Result<u64, PushError> {
        if self.spool.is_memory_only() {
            // Nothing to read back from: the hand-over channel is the only queue,
            // and waiting on it is the backpressure.
            let loaded = self.in_memory(records);
            if let Some(tx) = receipt {
                self.waiters.add(loaded.id, tx);
            }
            let id = loaded.id;
            return match self.tx.send(loaded).await {
                Ok(()) => Ok(id),
                Err(mpsc::error::SendError(loaded)) => Err(PushError {
                    failure: PushFailure::Stopped,
                    records: loaded.records,
                    receipt: self.waiters.take(id),
                }),
            };
        }
        // A paced source (a file, whose data is safe where it is) waits a while for
        // room in the hand-over before its batch goes to the spool only: while
        // delivery keeps up, it reads at delivery's pace instead of copying the file
        // into the spool. Nothing is written before the wait, so dropping this
        // future (a stop) leaves no trace.
        let slot = match pace {
            Some(limit) if !self.is_spilling() => tokio::time::timeout(limit, self.tx.reserve())
                .await
                .ok()
                .and_then(Result::ok),
            _ => None,
        };
        self.push_spooled(records, receipt, checkpoint, slot)
    }

    fn is_spilling(&self) -> bool {
        self.state.lock().expect("intake lock poisoned").spilling
    }

    /// Like [`push`](Self::push), but never waits: in memory-only mode a full
    /// hand-over is reported as a full spool.
    pub fn try_push(
        &self,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
    ) -> Result<u64, PushError> {
        if !self.spool.is_memory_only() {
            return self.push_spooled(records, receipt, None, None);
        }
        let loaded = self.in_memory(records);
        let id = loaded.id;
        if let Some(tx) = receipt {
            self.waiters.add(id, tx);
        }
        match self.tx.try_send(loaded) {
            Ok(()) => Ok(id),
            Err(mpsc::error::TrySendError::Full(loaded)) => Err(PushError {
                failure: PushFailure::Spool(SpoolError::Full {
                    used: loaded.bytes,
                    max: 0,
                    needed: loaded.bytes,
                }),
                records: loaded.records,
                receipt: self.waiters.take(id),
            }),
            Err(mpsc::error::TrySendError::Closed(loaded)) => Err(PushError {
                failure: PushFailure::Stopped,
                records: loaded.records,
                receipt: self.waiters.take(id),
            }),
        }
    }

    /// A batch of the memory-only mode: an id, no spool write.
    fn in_memory(&self, records: Vec<UserRecord>) -> Loaded {
        let (id, bytes) = self
            .spool
            .append(&records)
            .expect("memory-only append cannot fail");
        Loaded {
            id,
            bytes,
            hash_keys: crate::record::hash_keys(&records),
            records,
            delivered: None,
            spooled_at_ms: crate::spool::now_ms(),
        }
    }

    /// The spooled path: append (with the checkpoint) and hand over, or spill.
    /// `slot` is room in the hand-over already reserved.
    fn push_spooled(
        &self,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
        checkpoint: Option<&Checkpoint>,
        slot: Option<mpsc::Permit<'_, Loaded>>,
    ) -> Result<u64, PushError> {
        let mut state = self.state.lock().expect("intake lock poisoned");
        let slot = match slot {
            _ if state.spilling => None,
            Some(slot) => Some(slot),
            None => self.tx.try_reserve().ok(),
        };
        // The path is decided, and the id taken, under the lock: an entry handed
        // over always has a lower id than the first one of a later spill, so the
        // dispatcher never reads it back from the spool too.
        let id = self.spool.reserve_id();
        // Registered before the dispatcher can see the entry.
        if let Some(tx) = receipt {
            self.waiters.add(id, tx);
        }
        let failed = |error, records| {
            Err(PushError {
                failure: PushFailure::Spool(error),
                records,
                receipt: self.waiters.take(id),
            })
        };
        let Some(slot) = slot else {
            // Spilled entries are written under the lock, in id order: the
            // dispatcher reading them back never finds a gap it would skip. They
            // wait in the spool: stored for waiting (see the spool's chunks).
            if let Err(error) = self.spool.write(id, &records, checkpoint, true) {
                return failed(error, records);
            }
            state.last_spilled = id;
            if !state.spilling {
                state.spilling = true;
                state.cursor = id;
            }
            drop(state);
            self.wake.notify_one();
            return Ok(id);
        };
        drop(state);
        // Handed over: hashed and written outside the lock, so concurrent senders
        // run in parallel; the reserved slot keeps its place in the hand-over. (A
        // spilled batch is hashed when it is read back, not here.)
        let hash_keys = crate::record::hash_keys(&records);
        let bytes = match self.spool.write(id, &records, checkpoint, false) {
            Ok(bytes) => bytes,
            Err(error) => return failed(error, records),
        };
        slot.send(Loaded {
            id,
            bytes,
            hash_keys,
            records,
            delivered: None,
            spooled_at_ms: crate::spool::now_ms(),
        });
        Ok(id)
    }
}

/// A user record Kinesis refused for good, with the reason.
#[derive(Debug, Clone)]
pub struct Failure {
    pub stream: String,
    /// The user records of the refused Kinesis record.
    pub records: Vec<UserRecord>,
    /// Kinesis's error code.
    pub code: String,
    pub message: String,
}

/// The dead-letter file: records Kinesis refused for good, one JSON object per line
/// (`stream`, `partition_key`, `explicit_hash_key`, `data_base64`, `code`,
/// `message`, `time`). Written and fsynced before the records leave the spool.
pub struct DeadLetter {
    path: PathBuf,
    lock: Mutex<()>,
}

impl DeadLetter {
    pub fn new(path: PathBuf) -> DeadLetter {
        DeadLetter {
            path,
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn write(&self, f: &Failure) -> std::io::Result<()> {
        use base64::Engine as _;
        use std::io::Write as _;
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = Vec::new();
        for r in &f.records {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({
                    "stream": f.stream,
                    "partition_key": r.partition_key,
                    "explicit_hash_key": r.explicit_hash_key.map(|k| k.to_string()),
                    "data_base64": base64::engine::general_purpose::STANDARD.encode(&r.data),
                    "code": f.code,
                    "message": f.message,
                    "time": time,
                }),
            )?;
            out.push(b'\n');
        }
        let _guard = self.lock.lock().expect("dead-letter lock poisoned");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&out)?;
        file.sync_data()
    }
}

/// What every stream's dispatcher shares.
#[derive(Clone)]
pub struct Context {
    pub kinesis: SharedKinesis,
    /// Connection slots, across all streams (`max_connections`).
    pub permits: Arc<Semaphore>,
    pub options: DeliveryOptions,
    pub metrics: Metrics,
    /// Where permanent failures are reported (if anyone listens).
    pub failures: mpsc::Sender<Failure>,
    pub dead_letter: Option<Arc<DeadLetter>>,
    /// Cancelled when the producer stops: dispatchers flush and drain.
    pub shutdown: CancellationToken,
    /// Set when the producer stops: draining ends at this instant.
    pub drain_deadline: watch::Receiver<Option<Instant>>,
}

/// Starts the dispatcher of one stream and returns its intake.
pub fn spawn_stream(
    spool: StreamSpool,
    ctx: Context,
    tracker: &TaskTracker,
) -> (Intake, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(INTAKE_CHANNEL_BATCHES);
    let state = Arc::new(Mutex::new(IntakeState {
        spilling: true,
        cursor: 0,
        last_spilled: 0,
    }));
    let wake = Arc::new(Notify::new());
    let waiters = Arc::new(Waiters::new());
    let flush = Arc::new(Notify::new());
    let intake = Intake {
        spool: spool.clone(),
        tx,
        state: state.clone(),
        wake: wake.clone(),
        waiters: waiters.clone(),
        flush: flush.clone(),
    };
    let stream: Arc<str> = spool.name().clone();
    let (map_tx, map_rx) = watch::channel(None);
    let refresh = Arc::new(Notify::new());
    tracker.spawn(refresh_shard_map(
        stream.clone(),
        ctx.kinesis.clone(),
        ctx.options.shard_refresh_interval,
        map_tx,
        refresh.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    ));
    let outcome_capacity = ctx.options.max_connections.max(OUTCOME_CHANNEL_MIN);
    let (outcome_tx, outcome_rx) = mpsc::channel(outcome_capacity);
    let shutdown = ctx.shutdown.clone();
    let drain_deadline = ctx.drain_deadline.clone();
    let dispatcher = Dispatcher {
        stream,
        spool,
        kinesis: ctx.kinesis,
        permits: ctx.permits,
        options: ctx.options,
        metrics: ctx.metrics,
        failures: ctx.failures,
        dead_letter: ctx.dead_letter,
        rx,
        state,
        wake,
        waiters,
        flush,
        map_rx,
        refresh,
        outcome_tx,
        outcome_rx,
        tracked: HashMap::default(),
        loaded_bytes: 0,
        map: None,
        generation: 0,
        aggs: Vec::new(),
        open_since: Vec::new(),
        linger_deadline: None,
        unrouted: Vec::new(),
        held: Vec::new(),
        unverified: Vec::new(),
        ready: VecDeque::new(),
        shard_backoff: HashMap::new(),
        buckets: HashMap::new(),
        stream_backoff: None,
        in_flight: 0,
        last_problem_log: None,
        acked: 0,
        next_sweep: None,
    };
    let handle = tracker.spawn(dispatcher.run(shutdown, drain_deadline));
    (intake, handle)
}

/// Delivery progress of one loaded spool entry.
struct Track {
    remaining: u32,
    delivered: Vec<u64>,
    bytes: u64,
    /// Set when a record of the entry was refused for good.
    failure: Option<(String, String)>,
    spooled_at_ms: u64,
}

/// A sealed aggregate waiting to be sent (or sent again).
struct Ready {
    agg: Aggregate,
    encoded: Option<Encoded>,
    /// Shard it was built for, in `map` (of `generation`).
    shard: usize,
    map: Option<Arc<ShardMap>>,
    generation: u64,
    attempts: u32,
    /// Send in a request of its own: a request with it was refused as a whole for
    /// good, and the culprit is being isolated.
    alone: bool,
}

#[derive(Clone, Copy)]
struct Backoff {
    until: Instant,
    attempts: u32,
}

/// Where an accepted entry landed.
enum Placement {
    /// In the shard it was built for.
    Expected,
    /// In another shard whose range holds all its records (a stale map).
    Elsewhere,
    /// In a shard whose range does not hold all its records.
    OutOfRange,
    /// In a shard neither map knows (it was just made by a reshard): checked
    /// against the next map.
    Unknown,
}

/// The outcome of one request, back from a worker.
struct Outcome {
    items: Vec<Ready>,
    result: Result<Vec<EntryResult>, KinesisError>,
}

struct Dispatcher {
    stream: Arc<str>,
    spool: StreamSpool,
    kinesis: SharedKinesis,
    permits: Arc<Semaphore>,
    options: DeliveryOptions,
    metrics: Metrics,
    failures: mpsc::Sender<Failure>,
    dead_letter: Option<Arc<DeadLetter>>,
    rx: mpsc::Receiver<Loaded>,
    state: Arc<Mutex<IntakeState>>,
    wake: Arc<Notify>,
    waiters: Arc<Waiters>,
    flush: Arc<Notify>,
    map_rx: watch::Receiver<Option<Arc<ShardMap>>>,
    refresh: Arc<Notify>,
    outcome_tx: mpsc::Sender<Outcome>,
    outcome_rx: mpsc::Receiver<Outcome>,

    tracked: HashMap<u64, Track, crate::aggregate::KeyHash>,
    loaded_bytes: u64,
    map: Option<Arc<ShardMap>>,
    generation: u64,
    aggs: Vec<Aggregator>,
    open_since: Vec<Option<Instant>>,
    linger_deadline: Option<Instant>,
    /// Records waiting for a shard map that covers their hash key.
    unrouted: Vec<Pending>,
    /// Records to send again once the next shard map refresh has answered.
    held: Vec<Pending>,
    /// Aggregates accepted by a shard no map knew, by that shard: delivered if the
    /// next map gives it a range that holds them all, sent again otherwise.
    unverified: Vec<(String, Vec<Pending>)>,
    ready: VecDeque<Ready>,
    shard_backoff: HashMap<Arc<str>, Backoff>,
    buckets: HashMap<Arc<str>, Bucket>,
    stream_backoff: Option<Backoff>,
    in_flight: usize,
    last_problem_log: Option<Instant>,
    /// User records acked since the last spool commit.
    acked: u64,
    /// When records waiting for a shard map are next checked for expiry.
    next_sweep: Option<Instant>,
}

fn backoff_delay(attempts: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempts.min(16));
    let capped = exp.min(BACKOFF_MAX);
    // Full jitter in [capped/2, capped]: spreads retries of many shards apart.
    capped / 2 + capped.mul_f64(fastrand::f64() / 2.0)
}

impl Dispatcher {
    async fn run(
        mut self,
        shutdown: CancellationToken,
        mut drain_deadline: watch::Receiver<Option<Instant>>,
    ) {
        let mut draining = false;
        let mut map_open = true;
        loop {
            if !draining && shutdown.is_cancelled() {
                draining = true;
                self.seal_all();
            }
            if draining {
                let deadline = *drain_deadline.borrow();
                let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
                if (self.ready.is_empty() && self.in_flight == 0) || out_of_time {
                    break;
                }
            }
            // Read spilled entries back while there is room.
            if !draining && self.loaded_bytes < self.options.max_inflight_bytes {
                if let Err(e) = self.read_spilled().await {
                    tracing::error!(stream = %self.stream, error = %e, "Reading the spool failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            // A full window brings no more records to the open aggregates: waiting
            // out their linger would only stall (many shards share the window).
            if !draining && self.loaded_bytes >= self.options.max_inflight_bytes {
                self.seal_all();
            }
            self.dispatch();
            if self.options.max_record_age.is_some()
                && !self.unrouted.is_empty()
                && self.next_sweep.is_none()
            {
                self.next_sweep = Some(Instant::now() + EXPIRY_SWEEP);
            }
            let can_send = self.has_sendable();
            let room = !draining && self.loaded_bytes < self.options.max_inflight_bytes;
            let wake_at = self.next_wake();
            let permits = self.permits.clone();
            // Requests in flight may outlast the drain: wake at its deadline.
            let drain_until = if draining {
                *drain_deadline.borrow()
            } else {
                None
            };
            tokio::select! {
                biased;
                Some(outcome) = self.outcome_rx.recv() => self.on_outcome(outcome),
                _ = shutdown.cancelled(), if !draining => {}
                _ = drain_deadline.changed(), if draining => {}
                _ = sleep_until_opt(drain_until) => {}
                changed = self.map_rx.changed(), if map_open => {
                    map_open = changed.is_ok();
                    if map_open {
                        let map = self.map_rx.borrow_and_update().clone();
                        if let Some(map) = map {
                            self.apply_map(map);
                        }
                    }
                }
                permit = permits.acquire_owned(), if can_send => {
                    let permit = permit.expect("the connection semaphore is never closed");
                    self.send(permit);
                }
                Some(batch) = self.rx.recv(), if room => self.load(batch),
                _ = self.flush.notified() => {
                    // Take in what was handed over before the flush was asked for.
                    while let Ok(batch) = self.rx.try_recv() {
                        self.load(batch);
                    }
                    self.seal_all();
                }
                _ = self.wake.notified(), if room => {}
                _ = sleep_until_opt(wake_at) => self.on_timer(),
            }
        }
        self.waiters.close();
    }

    /// Reads entries that were spilled to the spool (or left there by an earlier
    /// run), up to the memory budget.
    async fn read_spilled(&mut self) -> Result<(), SpoolError> {
        let cursor = {
            let state = self.state.lock().expect("intake lock poisoned");
            if !state.spilling {
                return Ok(());
            }
            state.cursor
        };
        let budget = self.options.max_inflight_bytes - self.loaded_bytes;
        let spool = self.spool.clone();
        let (entries, next) =
            tokio::task::spawn_blocking(move || spool.read_from(cursor, budget, |_| false))
                .await
                .expect("spool read task panicked")?;
        let last_read = entries.last().map(|e| e.id);
        for e in entries {
            self.load(e.into());
        }
        let mut state = self.state.lock().expect("intake lock poisoned");
        match next {
            Some(next) => state.cursor = next,
            None => {
                let read_to = last_read
                    .unwrap_or(cursor.saturating_sub(1))
                    .max(cursor.saturating_sub(1));
                if state.last_spilled <= read_to {
                    // Caught up: later batches come in memory again. Decided under
                    // the lock that appends take, so none falls between the paths.
                    state.spilling = false;
                } else {
                    state.cursor = read_to + 1;
                }
            }
        }
        Ok(())
    }

    fn load(&mut self, batch: Loaded) {
        let Loaded {
            id,
            bytes,
            records,
            hash_keys,
            delivered,
            spooled_at_ms,
        } = batch;
        let n = records.len();
        // Read back from the spool: hashed here.
        let hash_keys = if hash_keys.len() == n {
            hash_keys
        } else {
            crate::record::hash_keys(&records)
        };
        let mut bits = delivered.unwrap_or_default();
        bits.resize(n.div_ceil(64), 0);
        let done = |i: usize| bits[i / 64] & (1 << (i % 64)) != 0;
        let mut remaining = 0u32;
        let mut pending = Vec::with_capacity(n);
        for (i, r) in records.into_iter().enumerate() {
            if !done(i) {
                remaining += 1;
                let hash_key = hash_keys[i];
                pending.push(Pending {
                    entry: id,
                    index: i as u32,
                    hash_key,
                    record: r,
                });
            }
        }
        if remaining == 0 {
            self.waiters.resolve(id, Ok(()));
            // Everything was delivered before a restart; only the delete was lost.
            if let Err(e) = self.spool.retire(&[(id, bytes)], &[], 0) {
                tracing::error!(stream = %self.stream, error = %e, "Deleting a delivered spool entry failed");
            }
            return;
        }
        self.tracked.insert(
            id,
            Track {
                remaining,
                delivered: bits,
                bytes,
                failure: None,
                spooled_at_ms,
            },
        );
        self.loaded_bytes += bytes;
        let pending = self.drop_expired(pending);
        for p in pending {
            self.route(p);
        }
    }

    fn route(&mut self, p: Pending) {
        let Some(map) = &self.map else {
            self.unrouted.push(p);
            return;
        };
        let Some(shard) = map.lookup(p.hash_key) else {
            // A gap in the map: it is stale.
            self.unrouted.push(p);
            self.refresh.notify_one();
            return;
        };
        let limits = self.options.aggregation;
        let agg = &mut self.aggs[shard];
        match agg.try_add(p, &limits) {
            Ok(()) => {}
            Err(p) => {
                self.seal(shard);
                self.aggs[shard]
                    .try_add(p, &limits)
                    .expect("an empty aggregator takes any valid record");
            }
        }
        if self.aggs[shard].len() >= limits.max_records {
            self.seal(shard);
        } else if self.open_since[shard].is_none() {
            let now = Instant::now();
            self.open_since[shard] = Some(now);
            let deadline = now + self.options.linger;
            self.linger_deadline = Some(self.linger_deadline.map_or(deadline, |d| d.min(deadline)));
        }
    }

    fn seal(&mut self, shard: usize) {
        self.open_since[shard] = None;
        let agg = self.aggs[shard].take();
        if agg.is_empty() {
            return;
        }
        self.ready.push_back(Ready {
            agg,
            encoded: None,
            shard,
            map: self.map.clone(),
            generation: self.generation,
            attempts: 0,
            alone: false,
        });
    }

    fn seal_all(&mut self) {
        for shard in 0..self.aggs.len() {
            self.seal(shard);
        }
        self.linger_deadline = None;
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.next_sweep = None;
            self.sweep_expired();
        }
        if self.linger_deadline.is_some_and(|d| d <= now) {
            let linger = self.options.linger;
            let mut next: Option<Instant> = None;
            for shard in 0..self.aggs.len() {
                if let Some(since) = self.open_since[shard] {
                    if since + linger <= now {
                        self.seal(shard);
                    } else {
                        next = Some(next.map_or(since + linger, |n| n.min(since + linger)));
                    }
                }
            }
            self.linger_deadline = next;
        }
        if self.stream_backoff.is_some_and(|b| b.until <= now) {
            // Keep the attempt count until a request succeeds; only the wait ends.
            if let Some(b) = &mut self.stream_backoff {
                b.until = now;
            }
        }
    }

    fn rate(&self) -> (f64, f64) {
        let f = self.options.shard_rate_factor;
        (SHARD_BYTES_PER_SEC * f, SHARD_RECORDS_PER_SEC * f)
    }

    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut wake = self.linger_deadline;
        let mut consider = |t: Instant| {
            if t > now {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        if let Some(b) = self.stream_backoff {
            consider(b.until);
        }
        if let Some(t) = self.next_sweep {
            consider(t);
        }
        if !self.nothing_blocks() {
            for item in &self.ready {
                if let Some(t) = self.blocked_until(item, now) {
                    consider(t);
                }
            }
        }
        wake
    }

    /// No shard is backing off and no rate limit applies: every queued aggregate is
    /// sendable, and the queue need not be searched.
    fn nothing_blocks(&self) -> bool {
        self.shard_backoff.is_empty() && self.options.shard_rate_factor <= 0.0
    }

    fn shard_id(&self, item: &Ready) -> Option<Arc<str>> {
        let map = self.map.as_ref()?;
        (item.generation == self.generation).then(|| map.get(item.shard).id.clone())
    }

    /// Until when the item's shard cannot take it (backoff or rate limit).
    fn blocked_until(&self, item: &Ready, now: Instant) -> Option<Instant> {
        let id = self.shard_id(item)?;
        let backoff = self
            .shard_backoff
            .get(&id)
            .map(|b| b.until)
            .filter(|&u| u > now);
        let limited = self.options.shard_rate_factor > 0.0;
        let bucket = self.buckets.get(&id).filter(|_| limited).and_then(|b| {
            let mut b = *b;
            b.refill(now, self.rate());
            b.ready_at(item.agg.size(), self.rate())
        });
        match (backoff, bucket) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_blocked(&self, item: &Ready, now: Instant) -> bool {
        self.blocked_until(item, now).is_some()
    }

    /// Takes the item's bytes and one record from its shard's bucket.
    fn take_tokens(&mut self, item: &Ready, now: Instant) {
        if self.options.shard_rate_factor <= 0.0 {
            return;
        }
        let Some(id) = self.shard_id(item) else {
            return;
        };
        let rate = self.rate();
        let b = self
            .buckets
            .entry(id)
            .or_insert_with(|| Bucket::new(now, rate));
        b.refill(now, rate);
        b.bytes -= item.agg.size() as f64;
        b.records -= 1.0;
    }

    fn has_sendable(&self) -> bool {
        let now = Instant::now();
        if self.stream_backoff.is_some_and(|b| b.until > now) {
            return false;
        }
        if self.nothing_blocks() {
            return !self.ready.is_empty();
        }
        self.ready.iter().any(|r| !self.is_blocked(r, now))
    }

    /// Nothing to do here but keep the queue moving: sealing happens on the linger
    /// timer and when aggregates fill.
    fn dispatch(&mut self) {
        if self.map.is_some() && !self.unrouted.is_empty() && self.map_covers_unrouted() {
            let unrouted = std::mem::take(&mut self.unrouted);
            for p in unrouted {
                self.route(p);
            }
        }
    }

    fn map_covers_unrouted(&self) -> bool {
        let map = self.map.as_ref().expect("checked by the caller");
        self.unrouted
            .iter()
            .all(|p| map.lookup(p.hash_key).is_some())
    }

    /// Takes a batch of sendable aggregates off the front of the queue and starts a
    /// request for it.
    fn send(&mut self, permit: OwnedSemaphorePermit) {
        let now = Instant::now();
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut skipped = VecDeque::new();
        let max_records = self.options.batch_max_records.min(MAX_BATCH_RECORDS);
        let max_bytes = self.options.batch_max_bytes.min(MAX_BATCH_BYTES);
        while let Some(item) = self.ready.pop_front() {
            if self.is_blocked(&item, now) {
                skipped.push_back(item);
                continue;
            }
            let size = item.agg.size();
            if !items.is_empty()
                && (item.alone || items.len() >= max_records || bytes + size > max_bytes)
            {
                self.ready.push_front(item);
                break;
            }
            let alone = item.alone;
            bytes += size;
            self.take_tokens(&item, now);
            items.push(item);
            if alone {
                break;
            }
        }
        // Blocked items keep their place at the front.
        while let Some(item) = skipped.pop_back() {
            self.ready.push_front(item);
        }
        if items.is_empty() {
            return;
        }
        self.in_flight += 1;
        let kinesis = self.kinesis.clone();
        let stream = self.stream.clone();
        let tx = self.outcome_tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut items = items;
            // Encoding (and its MD5) runs here, on the worker, so aggregates of
            // different shards are hashed in parallel.
            for item in &mut items {
                if item.encoded.is_none() {
                    item.encoded = Some(item.agg.encode());
                }
            }
            let entries: Vec<Encoded> = items
                .iter()
                .map(|i| i.encoded.clone().expect("encoded above"))
                .collect();
            let bytes = entries.iter().map(|e| e.size() as u64).sum();
            let started = std::time::Instant::now();
            let result = kinesis.put_records(&stream, &entries).await;
            metrics.observe_request(&stream, bytes, started.elapsed(), &result);
            // The dispatcher outlives its workers unless the agent is stopping, in
            // which case the records stay spooled.
            let _ = tx.send(Outcome { items, result }).await;
        });
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        self.in_flight -= 1;
        let Outcome { items, result } = outcome;
        match result {
            Ok(results) => {
                self.stream_backoff = None;
                let mut retry = Vec::new();
                let mut done = Vec::new();
                let mut partial = Vec::new();
                let mut delivered = 0u64;
                let mut wrong_shard = 0u64;
                let mut misrouted = Vec::new();
                let mut accepted_shards = std::collections::HashSet::new();
                let mut refused_shards = std::collections::HashSet::new();
                let mut refused: Option<(String, String)> = None;
                for (item, res) in items.into_iter().zip(results) {
                    match res {
                        EntryResult::Accepted { shard_id } => {
                            if let Some(predicted) = self.shard_id(&item) {
                                accepted_shards.insert(predicted);
                            }
                            match self.check_placement(&item, &shard_id) {
                                Placement::Expected => {}
                                Placement::Elsewhere => wrong_shard += 1,
                                Placement::OutOfRange => {
                                    // A KCL consumer drops this aggregate: send its
                                    // records again, through a fresh map.
                                    wrong_shard += 1;
                                    misrouted.extend(item.agg.into_records());
                                    continue;
                                }
                                Placement::Unknown => {
                                    wrong_shard += 1;
                                    self.unverified.push((shard_id, item.agg.into_records()));
                                    continue;
                                }
                            }
                            delivered += item.agg.len() as u64;
                            for p in item.agg.records() {
                                self.ack(p.entry, p.index, &mut done, &mut partial);
                            }
                        }
                        EntryResult::Failed { code, message } => {
                            let class = ErrorClass::of(&code);
                            self.metrics.entry_failed(&self.stream, &code);
                            if refused.is_none() {
                                refused = Some((code.clone(), message.clone()));
                            }
                            if class == ErrorClass::Permanent {
                                self.isolate(item, &code, &message, &mut done, &mut partial);
                                continue;
                            }
                            if let Some(id) = self.shard_id(&item) {
                                refused_shards.insert(id);
                            }
                            if class != ErrorClass::Throttled {
                                self.log_problem(&code, &message);
                            }
                            retry.push(item);
                        }
                    }
                }
                // Once per shard and response: a shard that refused entries backs
                // off (throttling needs it, and an internal failure retried at once
                // would only spin); one that took all of them starts over. A shard
                // that took some and refused others is at its limit, not failing:
                // it waits the shortest step, without growing.
                let now = Instant::now();
                for id in refused_shards {
                    let took_some = accepted_shards.remove(&id);
                    let b = self.shard_backoff.entry(id).or_insert(Backoff {
                        until: now,
                        attempts: 0,
                    });
                    if took_some {
                        b.attempts = 0;
                    }
                    b.until = now + backoff_delay(b.attempts).min(SHARD_BACKOFF_MAX);
                    b.attempts += 1;
                }
                for id in accepted_shards {
                    if self.shard_backoff.get(&id).is_some_and(|b| b.until <= now) {
                        self.shard_backoff.remove(&id);
                    }
                }
                if let Some((code, message)) = refused {
                    // One per response, not per entry.
                    self.metrics.note_error(&self.stream, &code, &message);
                }
                if wrong_shard > 0 {
                    self.metrics.wrong_shard(&self.stream, wrong_shard);
                    self.refresh.notify_one();
                }
                if !misrouted.is_empty() {
                    self.metrics.misrouted(&self.stream, misrouted.len() as u64);
                    self.log_problem(
                        "WrongShard",
                        "an aggregate landed in a shard whose range does not hold all its records; they are sent again after the shard map refresh",
                    );
                    // Held until the refresh answers: routed through the stale map
                    // they would land wrong again.
                    self.held.extend(misrouted);
                }
                self.metrics.delivered(&self.stream, delivered);
                self.commit_acks(done, partial);
                self.requeue(retry);
            }
            Err(e) => {
                let class = ErrorClass::of(&e.code);
                self.metrics.request_failed(&self.stream, &e.code);
                self.metrics.note_error(&self.stream, &e.code, &e.message);
                if class == ErrorClass::Permanent {
                    // Kinesis refused the request as a whole for good: find the
                    // record it objects to by sending every aggregate alone.
                    self.log_problem(&e.code, &e.message);
                    if items.len() == 1 && items[0].alone {
                        let item = items.into_iter().next().expect("one item");
                        let (mut done, mut partial) = (Vec::new(), Vec::new());
                        self.isolate(item, &e.code, &e.message, &mut done, &mut partial);
                        self.commit_acks(done, partial);
                    } else {
                        let items = items
                            .into_iter()
                            .map(|mut i| {
                                i.alone = true;
                                i
                            })
                            .collect();
                        self.requeue(items);
                    }
                    return;
                }
                let attempts = self.stream_backoff.map_or(0, |b| b.attempts);
                let delay = match class {
                    ErrorClass::Environment => ENVIRONMENT_RETRY,
                    _ => backoff_delay(attempts),
                };
                self.stream_backoff = Some(Backoff {
                    until: Instant::now() + delay,
                    attempts: attempts + 1,
                });
                self.log_problem(&e.code, &e.message);
                if matches!(class, ErrorClass::Environment) {
                    self.refresh.notify_one();
                }
                self.requeue(items);
            }
        }
    }

    /// An aggregate Kinesis refused for good: an aggregate of several records is
    /// split so each is tried alone; a lone record is a permanent failure — it goes
    /// to the dead-letter file and the failure stream, and leaves the spool.
    fn isolate(
        &mut self,
        item: Ready,
        code: &str,
        message: &str,
        done: &mut Vec<(u64, u64)>,
        partial: &mut Vec<u64>,
    ) {
        if item.agg.len() > 1 {
            let limits = Limits {
                max_bytes: usize::MAX,
                max_records: 1,
            };
            for p in item.agg.into_records().into_iter().rev() {
                let mut one = Aggregator::new();
                one.try_add(p, &limits)
                    .expect("an empty aggregator takes any record");
                self.ready.push_front(Ready {
                    agg: one.take(),
                    encoded: None,
                    shard: item.shard,
                    map: item.map.clone(),
                    generation: item.generation,
                    attempts: item.attempts,
                    alone: true,
                });
            }
            return;
        }
        let records = item.agg.into_records();
        let kept = self.give_up(records, code, message, done, partial);
        if !kept.is_empty() {
            self.stream_backoff = Some(Backoff {
                until: Instant::now() + ENVIRONMENT_RETRY,
                attempts: 1,
            });
            self.unrouted.extend(kept);
        }
    }

    /// Gives records up for good: writes them to the dead-letter file (fsynced),
    /// reports them on the failure stream, and retires them from the spool. If the
    /// dead-letter file cannot be written they stay spooled and are returned.
    fn give_up(
        &mut self,
        records: Vec<Pending>,
        code: &str,
        message: &str,
        done: &mut Vec<(u64, u64)>,
        partial: &mut Vec<u64>,
    ) -> Vec<Pending> {
        let failure = Failure {
            stream: self.stream.to_string(),
            records: records.iter().map(|p| p.record.clone()).collect(),
            code: code.to_owned(),
            message: message.to_owned(),
        };
        if let Some(dl) = &self.dead_letter {
            if let Err(e) = dl.write(&failure) {
                tracing::error!(
                    stream = %self.stream,
                    path = %dl.path().display(),
                    error = %e,
                    "Writing records to the dead-letter file failed; they stay spooled"
                );
                return records;
            }
        }
        tracing::error!(
            stream = %self.stream,
            code,
            error = message,
            records = failure.records.len(),
            dead_letter = ?self.dead_letter.as_ref().map(|d| d.path().display().to_string()),
            "Gave up records; they were moved to the dead-letter file"
        );
        self.metrics
            .failed(&self.stream, failure.records.len() as u64);
        for p in &records {
            if let Some(t) = self.tracked.get_mut(&p.entry) {
                t.failure
                    .get_or_insert_with(|| (code.to_owned(), message.to_owned()));
            }
            self.ack(p.entry, p.index, done, partial);
        }
        // Nobody listening, or a slow listener: the dead-letter file has it.
        let _ = self.failures.try_send(failure);
        Vec::new()
    }

    /// Where an accepted entry landed, against where its records belong.
    fn check_placement(&self, item: &Ready, actual: &str) -> Placement {
        let Some(built_for) = &item.map else {
            return Placement::Expected;
        };
        if actual.is_empty() || *built_for.get(item.shard).id == *actual {
            return Placement::Expected;
        }
        // Kinesis routed a lone record by its own key: it is where it belongs.
        if item.agg.len() == 1 {
            return Placement::Elsewhere;
        }
        let range = built_for
            .position(actual)
            .map(|i| built_for.get(i).clone())
            .or_else(|| {
                let map = self.map.as_ref()?;
                map.position(actual).map(|i| map.get(i).clone())
            });
        match range {
            Some(shard)
                if item
                    .agg
                    .records()
                    .iter()
                    .all(|p| shard.contains(p.hash_key)) =>
            {
                Placement::Elsewhere
            }
            Some(_) => Placement::OutOfRange,
            None => Placement::Unknown,
        }
    }

    fn log_problem(&mut self, code: &str, message: &str) {
        let now = Instant::now();
        if self
            .last_problem_log
            .is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL)
        {
            self.last_problem_log = Some(now);
            tracing::warn!(
                stream = %self.stream,
                code,
                error = message,
                "Kinesis refused records; they stay spooled and are retried"
            );
        }
    }

    /// Puts failed aggregates back at the front of the queue, in their order; those
    /// built with an older shard map are dissolved and routed again.
    fn requeue(&mut self, items: Vec<Ready>) {
        let mut stale = Vec::new();
        for mut item in items.into_iter().rev() {
            let expired = self.options.max_record_age.is_some()
                && item.agg.records().iter().any(|p| self.is_expired(p));
            if item.generation != self.generation || expired {
                stale.push(item);
                continue;
            }
            item.attempts += 1;
            self.metrics.retried(&self.stream, item.agg.len() as u64);
            self.ready.push_front(item);
        }
        for item in stale {
            for p in self.drop_expired(item.agg.into_records()) {
                self.route(p);
            }
        }
    }

    fn is_expired(&self, p: &Pending) -> bool {
        let (Some(max), Some(t)) = (self.options.max_record_age, self.tracked.get(&p.entry)) else {
            return false;
        };
        crate::spool::now_ms().saturating_sub(t.spooled_at_ms) > max.as_millis() as u64
    }

    /// Gives up the records older than `max_record_age` (dead-letter file) and
    /// returns the rest.
    fn drop_expired(&mut self, records: Vec<Pending>) -> Vec<Pending> {
        let Some(max) = self.options.max_record_age else {
            return records;
        };
        let (expired, fresh): (Vec<Pending>, Vec<Pending>) =
            records.into_iter().partition(|p| self.is_expired(p));
        if !expired.is_empty() {
            let (mut done, mut partial) = (Vec::new(), Vec::new());
            let message = format!(
                "not delivered within max_record_age_secs ({} s)",
                max.as_secs()
            );
            let kept = self.give_up(expired, "Expired", &message, &mut done, &mut partial);
            self.commit_acks(done, partial);
            self.unrouted.extend(kept);
        }
        fresh
    }

    /// Expires the records waiting for a shard map (a missing stream, say).
    fn sweep_expired(&mut self) {
        if self.options.max_record_age.is_some() && !self.unrouted.is_empty() {
            let waiting = std::mem::take(&mut self.unrouted);
            let fresh = self.drop_expired(waiting);
            self.unrouted.extend(fresh);
        }
    }

    /// Marks one user record delivered (or given up).
    fn ack(&mut self, entry: u64, index: u32, done: &mut Vec<(u64, u64)>, partial: &mut Vec<u64>) {
        let Some(t) = self.tracked.get_mut(&entry) else {
            return;
        };
        let (w, b) = (index as usize / 64, index % 64);
        if t.delivered[w] & (1 << b) != 0 {
            return;
        }
        t.delivered[w] |= 1 << b;
        t.remaining -= 1;
        self.acked += 1;
        if t.remaining == 0 {
            done.push((entry, t.bytes));
        } else {
            partial.push(entry);
        }
    }

    fn commit_acks(&mut self, done: Vec<(u64, u64)>, mut partial: Vec<u64>) {
        for &(id, bytes) in &done {
            if let Some(t) = self.tracked.remove(&id) {
                let result = match t.failure {
                    None => Ok(()),
                    Some((code, message)) => Err(DeliveryError::Rejected { code, message }),
                };
                self.waiters.resolve(id, result);
            }
            self.loaded_bytes -= bytes;
        }
        partial.sort_unstable();
        partial.dedup();
        let partial: Vec<(u64, &[u64])> = partial
            .iter()
            .filter_map(|id| self.tracked.get(id).map(|t| (*id, t.delivered.as_slice())))
            .collect();
        let acked = std::mem::take(&mut self.acked);
        if let Err(e) = self.spool.retire(&done, &partial, acked) {
            // The records were delivered; at worst they are sent again after a
            // restart.
            tracing::error!(stream = %self.stream, error = %e, "Recording delivered records in the spool failed");
        }
    }

    /// Settles the aggregates that landed in shards no map knew, with the map
    /// that now does: those inside their shard's range are delivered, the others
    /// (or all, if the map still does not know the shard) go back to be sent.
    fn verify_landings(&mut self, map: &ShardMap) {
        let (mut done, mut partial) = (Vec::new(), Vec::new());
        let mut delivered = 0u64;
        for (shard, records) in std::mem::take(&mut self.unverified) {
            let fits = map.position(&shard).is_some_and(|i| {
                let range = map.get(i);
                records.iter().all(|p| range.contains(p.hash_key))
            });
            if fits {
                delivered += records.len() as u64;
                for p in &records {
                    self.ack(p.entry, p.index, &mut done, &mut partial);
                }
            } else {
                self.metrics.misrouted(&self.stream, records.len() as u64);
                self.log_problem(
                    "WrongShard",
                    "an aggregate landed in a shard whose range does not hold all its records; they are sent again",
                );
                self.held.extend(records);
            }
        }
        if delivered > 0 {
            self.metrics.delivered(&self.stream, delivered);
        }
        self.commit_acks(done, partial);
    }

    /// Takes a new shard map into use.
    fn apply_map(&mut self, map: Arc<ShardMap>) {
        self.verify_landings(&map);
        if let Some(old) = &self.map {
            if old.same_shards(&map) {
                for p in std::mem::take(&mut self.held) {
                    self.route(p);
                }
                return;
            }
        }
        self.metrics.shard_map_changed(&self.stream);
        tracing::info!(stream = %self.stream, shards = map.len(), "Shard map changed");
        // Dissolve everything not in flight and route it again.
        let mut records = std::mem::take(&mut self.unrouted);
        records.append(&mut self.held);
        for agg in &mut self.aggs {
            records.extend(agg.take().into_records());
        }
        for item in std::mem::take(&mut self.ready) {
            records.extend(item.agg.into_records());
        }
        self.generation += 1;
        self.aggs = (0..map.len()).map(|_| Aggregator::new()).collect();
        self.open_since = vec![None; map.len()];
        self.linger_deadline = None;
        self.shard_backoff.clear();
        self.buckets.clear();
        self.map = Some(map);
        // Keep the original order: entries of lower ids go first.
        records.sort_by_key(|p| (p.entry, p.index));
        for p in records {
            self.route(p);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Keeps a stream's shard map fresh: at start, on an interval, and whenever the
/// dispatcher asks.
async fn refresh_shard_map(
    stream: Arc<str>,
    kinesis: SharedKinesis,
    interval: Duration,
    tx: watch::Sender<Option<Arc<ShardMap>>>,
    asked: Arc<Notify>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    let mut last_log: Option<Instant> = None;
    loop {
        let result = kinesis.list_shards(&stream).await;
        let wait = match result
            .map_err(|e| (e.code.clone(), e.to_string()))
            .and_then(|shards| {
                ShardMap::new(shards).map_err(|e| ("InvalidShardMap".to_owned(), e.to_string()))
            }) {
            Ok(map) => {
                if failures > 0 {
                    tracing::info!(stream = %stream, shards = map.len(), "Shard map loaded after earlier failures");
                }
                failures = 0;
                metrics.shard_map_refreshed(&stream);
                // Sent even when unchanged: records held for a refresh go then.
                tx.send_replace(Some(Arc::new(map)));
                interval
            }
            Err((code, e)) => {
                failures += 1;
                metrics.note_error(&stream, &code, &e);
                let now = Instant::now();
                if last_log.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
                    last_log = Some(now);
                    tracing::warn!(stream = %stream, error = %e, "Listing shards failed; records stay spooled until it succeeds");
                }
                backoff_delay(failures.min(6)).max(BACKOFF_BASE)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = asked.notified() => {
                // Coalesce bursts of requests.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
