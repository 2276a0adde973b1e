//! The `Producer`: the pipeline behind one handle, for the agent's own sources and
//! for Rust programs that embed shardline.
//!
//! `put_batch` validates, writes the batch to the spool as one entry and hands it to
//! the stream's dispatcher; it returns once the records are in the spool (durable at
//! the next group commit) with a [`Receipt`] that resolves when Kinesis has accepted
//! every record of the batch. While the spool is full it waits (backpressure);
//! `try_put_batch_to` fails instead. Records Kinesis refuses for good come out of
//! [`Producer::failures`] with the records and the error code (and go to the
//! dead-letter file). [`Producer::shutdown`] drains.
//!
//! The producer owns the spool's lifetime (it opens and closes it) and one
//! intake per stream; every write goes through an intake, the only door to the
//! spool. Others get what they need by name: [`Producer::durable`] waits for the
//! group commit (the socket's acks), [`Producer::backlog`] is the spool seen
//! read-only (gauges, status, the watchdog), and sources speak the intake's
//! [`Checkpoint`].
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use shardline::producer::{Producer, ProducerOptions};
//! use shardline::UserRecord;
//!
//! let config = shardline::config::load("shardline.toml".as_ref())?;
//! let producer = Producer::start(ProducerOptions::from_config(&config)).await?;
//! let receipt = producer.put(UserRecord::new("user-42", "hello")).await?;
//! receipt.delivered().await?; // accepted by Kinesis
//! let report = producer.shutdown().await?;
//! println!("{} records left spooled", report.undelivered_records);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::deliver::firehose;
use crate::deliver::kinesis::{ClientOptions, SharedKinesis};
use crate::deliver::{self, Context, DeadLetter, DeliveryOptions, Failure};
use crate::intake::{self, DeliveryError, DeliveryResult, Intake, PushFailure};
pub use crate::intake::{Backlog, Checkpoint, WeakBacklog};
use crate::metrics::{Metrics, Source};
use crate::record::{RecordError, UserRecord};
/// The spool's errors and states, as the producer and its backlog report them.
pub use crate::spool::{DamageReport, Refusing, SpoolError};
use crate::spool::{Spool, SpoolOptions};

/// Longest wait between two attempts while the spool is full (space is also
/// announced as soon as it is freed; this only bounds a missed wake-up).
const FULL_RETRY: Duration = Duration::from_millis(200);

/// How a source whose data is safe where it is (a file: what is not read yet stays
/// in the file) keeps pace with delivery instead of copying itself into the spool.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Longest wait for delivery to take a batch in memory before it goes to the
    /// spool only.
    pub handover_wait: Duration,
    /// While the spool holds more than this and delivery is making progress, the
    /// source waits before it adds more.
    pub read_ahead_bytes: u64,
    /// Delivery counts as stalled (an outage, long throttling) when nothing was
    /// delivered for this long; then the source fills the spool at full speed, so
    /// rotation and deletion cannot take what it has not read yet.
    pub stalled_after: Duration,
}

impl Pace {
    /// For sources whose data lives only in the request (a socket, an embedding
    /// program): a short wait for room in the hand-over, so a batch that delivery
    /// is about to take is not written to the spool for waiting, read back and
    /// copied again; no read-ahead limit.
    pub const HANDOVER: Pace = Pace {
        handover_wait: Duration::from_millis(50),
        read_ahead_bytes: u64::MAX,
        stalled_after: Duration::ZERO,
    };
}
/// Permanent failures queued for [`Producer::failures`]; past this, they are only
/// in the dead-letter file and the log (they are rare: records are validated).
const FAILURE_CHANNEL: usize = 1024;
/// Source label of records put by an embedding program.
const SOURCE: Source = Source::Producer;

/// Why records were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("record {index} of the batch is invalid: {source}")]
    InvalidRecord {
        index: usize,
        #[source]
        source: RecordError,
    },
    #[error("stream {0:?} is not configured")]
    UnknownStream(String),
    #[error("spool is full")]
    SpoolFull(#[source] SpoolError),
    #[error("producer is stopped")]
    Stopped,
    #[error("spool write failed")]
    Spool(#[source] SpoolError),
}

impl From<PushFailure> for ProduceError {
    fn from(f: PushFailure) -> Self {
        match f {
            PushFailure::Spool(full) if full.is_full() => ProduceError::SpoolFull(full),
            PushFailure::Spool(other) => ProduceError::Spool(other),
            PushFailure::Stopped => ProduceError::Stopped,
        }
    }
}

/// Why the producer could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("spool failed")]
    Spool(#[from] SpoolError),
}

/// Settings of a producer.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Destination streams; the first is the default one.
    pub streams: Vec<String>,
    pub client: ClientOptions,
    pub delivery: DeliveryOptions,
    pub spool: SpoolOptions,
    /// Where records refused for good are written; `None` keeps them only in the
    /// failure stream and the log.
    pub dead_letter_path: Option<PathBuf>,
    /// Longest drain at shutdown.
    pub shutdown_timeout: Duration,
}

impl ProducerOptions {
    pub fn from_config(config: &Config) -> ProducerOptions {
        ProducerOptions {
            streams: config.streams(),
            client: ClientOptions {
                destination: config.kinesis.destination.clone(),
                streams: config.destinations.clone(),
                stream_arns: config.stream_arns.clone(),
                request_timeout: Some(config.kinesis.request_timeout),
                proxy: config.kinesis.proxy.clone(),
                no_proxy: config.kinesis.no_proxy.clone(),
            },
            delivery: config.delivery.clone(),
            spool: config.spool.clone(),
            dead_letter_path: Some(config.dead_letter_path.clone()),
            shutdown_timeout: config.shutdown_timeout,
        }
    }
}

/// Resolves when every record of a batch has been accepted by Kinesis.
#[derive(Debug)]
pub struct Receipt {
    rx: oneshot::Receiver<DeliveryResult>,
}

impl Receipt {
    /// Waits for delivery. `Err(NotDelivered)` if the producer stopped first (the
    /// records stay spooled and go at the next start); `Err(Rejected)` if Kinesis
    /// refused one of them for good.
    pub async fn delivered(self) -> DeliveryResult {
        self.rx.await.unwrap_or(Err(DeliveryError::NotDelivered))
    }
}

/// What a shutdown left behind.
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    /// User records not delivered; they stay in the spool and are sent at the next
    /// start.
    pub undelivered_records: u64,
    /// Bytes of records left in the spool.
    pub spooled_bytes: u64,
}

/// Handle to the pipeline; cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    intakes: HashMap<String, Intake>,
    default_stream: String,
    /// Opened and closed here, written only through `intakes`.
    spool: Spool,
    /// The spool read-only: pacing, the full-spool wait, and whoever asks.
    backlog: Backlog,
    metrics: Metrics,
    /// Cancelled when intake closes.
    stopped: CancellationToken,
    /// Cancelled when the sources are told to stop: a put waiting for room in a
    /// full spool gives up (`Stopped`) instead of holding up the shutdown.
    no_waiting: CancellationToken,
    delivery: CancellationToken,
    drain_deadline: watch::Sender<Option<Instant>>,
    tasks: TaskTracker,
    dispatchers: Mutex<Option<Vec<tokio::task::JoinHandle<()>>>>,
    failures: Mutex<Option<mpsc::Receiver<Failure>>>,
    shutdown_timeout: Duration,
}

impl Producer {
    /// Starts a producer that talks to Kinesis through `aws-sdk-kinesis`.
    pub async fn start(options: ProducerOptions) -> Result<Producer, LifecycleError> {
        let kinesis = crate::deliver::clients::connect(&options.client, &options.streams).await;
        Self::start_with(options, kinesis).await
    }

    /// Starts a producer with the given Kinesis client (tests and benches reach
    /// it through `testkit::start_producer`).
    pub(crate) async fn start_with(
        options: ProducerOptions,
        kinesis: SharedKinesis,
    ) -> Result<Producer, LifecycleError> {
        let spool_options = options.spool.clone();
        // Opening counts the bytes held, a scan: keep it off the async threads.
        let spool = tokio::task::spawn_blocking(move || Spool::open(&spool_options))
            .await
            .expect("spool open task panicked")?;
        let held = spool.used_bytes();
        if held > 0 {
            tracing::info!(
                bytes = held,
                "Spool holds undelivered records; replaying them"
            );
        }
        let backlog = Backlog::new(spool.clone());
        let metrics = Metrics::new();
        metrics.attach_spool(&backlog);
        let delivery = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (drain_deadline, drain_rx) = watch::channel(None);
        let (failures_tx, failures_rx) = mpsc::channel(FAILURE_CHANNEL);
        let ctx = Context {
            kinesis,
            permits: Arc::new(Semaphore::new(options.delivery.max_connections)),
            share: deliver::share(options.delivery.max_connections, options.streams.len()),
            options: options.delivery.clone(),
            metrics: metrics.clone(),
            failures: failures_tx,
            dead_letter: options
                .dead_letter_path
                .clone()
                .map(|p| Arc::new(DeadLetter::new(p))),
            shutdown: delivery.clone(),
            drain_deadline: drain_rx,
        };
        let mut intakes = HashMap::new();
        let mut dispatchers = Vec::new();
        for stream in &options.streams {
            let (intake, outlet) = intake::open(spool.stream(stream)?);
            let handle = deliver::spawn_stream(outlet, ctx.clone(), &tasks);
            intakes.insert(stream.clone(), intake);
            dispatchers.push(handle);
        }
        Ok(Producer {
            inner: Arc::new(Inner {
                intakes,
                default_stream: options.streams.first().cloned().unwrap_or_default(),
                spool,
                backlog,
                metrics,
                stopped: CancellationToken::new(),
                no_waiting: CancellationToken::new(),
                delivery,
                drain_deadline,
                tasks,
                dispatchers: Mutex::new(Some(dispatchers)),
                failures: Mutex::new(Some(failures_rx)),
                shutdown_timeout: options.shutdown_timeout,
            }),
        })
    }

    /// The default destination stream.
    pub fn default_stream(&self) -> &str {
        &self.inner.default_stream
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The spool seen read-only: what it holds, how old, whether writers are
    /// refused, whether its commits go through.
    pub fn backlog(&self) -> &Backlog {
        &self.inner.backlog
    }

    /// Waits until every record spooled before the call is durable (the group
    /// commit's fdatasync covers it): a durability ack to a socket client waits
    /// for this. Concurrent callers share one commit; memory-only returns at once.
    pub async fn durable(&self) -> Result<(), SpoolError> {
        self.inner.spool.durable().await
    }

    /// Each stream's intake, for a redrive (`intake::redrive`), which writes a
    /// checkpoint of its own with its records as a source does.
    pub(crate) fn intakes(&self) -> &HashMap<String, Intake> {
        &self.inner.intakes
    }

    /// The checkpoints kept for `stream` (sources read them at start-up).
    pub(crate) fn checkpoints(&self, stream: &str) -> Result<Vec<Checkpoint>, ProduceError> {
        let intake = self.intake(stream, &[])?;
        intake.checkpoints().map_err(ProduceError::Spool)
    }

    /// A test of whether every entry an earlier run of the agent left in
    /// `stream`'s spool has left it; `None` for a stream that is not configured.
    /// A source that resumed at a checkpoint knows by it when what it read
    /// before the restart is delivered.
    pub(crate) fn earlier_runs(
        &self,
        stream: &str,
    ) -> Option<impl Fn() -> bool + Send + Sync + 'static> {
        let intake = self.inner.intakes.get(stream)?.clone();
        Some(move || intake.earlier_runs_done())
    }

    /// Removes a checkpoint of `stream` (its source is gone).
    pub(crate) fn remove_checkpoint(&self, stream: &str, name: &[u8]) -> Result<(), ProduceError> {
        let intake = self.intake(stream, &[])?;
        intake.remove_checkpoint(name).map_err(ProduceError::Spool)
    }

    /// The stream of permanent delivery failures (each with its user records and
    /// the Kinesis error code). Can be taken once; later calls get `None`.
    pub fn failures(&self) -> Option<mpsc::Receiver<Failure>> {
        self.inner
            .failures
            .lock()
            .expect("failures lock poisoned")
            .take()
    }

    /// Spools one record for the default stream.
    pub async fn put(&self, record: UserRecord) -> Result<Receipt, ProduceError> {
        self.put_batch(vec![record]).await
    }

    /// Spools a batch for the default stream.
    pub async fn put_batch(&self, records: Vec<UserRecord>) -> Result<Receipt, ProduceError> {
        let stream = self.inner.default_stream.clone();
        self.put_batch_to(&stream, records).await
    }

    /// Spools a batch for `stream`, as one spool entry, waiting while the spool is
    /// full.
    pub async fn put_batch_to(
        &self,
        stream: &str,
        records: Vec<UserRecord>,
    ) -> Result<Receipt, ProduceError> {
        let (tx, rx) = oneshot::channel();
        if records.is_empty() {
            let _ = tx.send(Ok(()));
        } else {
            self.inner.metrics.received(SOURCE, records.len() as u64);
            self.spool_batch(
                stream,
                SOURCE,
                records,
                Some(tx),
                None,
                Some(Pace::HANDOVER),
            )
            .await?;
        }
        Ok(Receipt { rx })
    }

    /// Spools a batch for `stream` without waiting: a full spool is an error.
    pub fn try_put_batch_to(
        &self,
        stream: &str,
        records: Vec<UserRecord>,
    ) -> Result<Receipt, ProduceError> {
        let (tx, rx) = oneshot::channel();
        if records.is_empty() {
            let _ = tx.send(Ok(()));
        } else {
            self.inner.metrics.received(SOURCE, records.len() as u64);
            self.try_spool_batch(stream, SOURCE, records, Some(tx))?;
        }
        Ok(Receipt { rx })
    }

    fn intake(&self, stream: &str, records: &[UserRecord]) -> Result<&Intake, ProduceError> {
        if self.inner.stopped.is_cancelled() {
            return Err(ProduceError::Stopped);
        }
        // A Firehose record holds the line and its newline.
        let limit = firehose::stream_name(stream).map_or(usize::MAX, |_| firehose::MAX_LINE_BYTES);
        for (index, r) in records.iter().enumerate() {
            r.validate()
                .map_err(|source| ProduceError::InvalidRecord { index, source })?;
            if r.data.len() > limit {
                let source = RecordError::TooLargeFor {
                    bytes: r.data.len(),
                    limit,
                    destination: "Firehose",
                };
                return Err(ProduceError::InvalidRecord { index, source });
            }
        }
        self.inner
            .intakes
            .get(stream)
            .ok_or_else(|| ProduceError::UnknownStream(stream.to_owned()))
    }

    /// Spools a batch (the path every source takes); `source` labels the metrics.
    /// A `checkpoint` is written in the same atomic batch as the records.
    pub(crate) async fn spool_batch(
        &self,
        stream: &str,
        source: Source,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
        checkpoint: Option<&Checkpoint>,
        pace: Option<Pace>,
    ) -> Result<(), ProduceError> {
        if records.is_empty() {
            if let Some(c) = checkpoint {
                let intake = self.intake(stream, &records)?;
                intake.set_checkpoint(c).map_err(ProduceError::Spool)?;
            }
            return Ok(());
        }
        let intake = self.intake(stream, &records)?;
        if let Some(pace) = pace {
            self.keep_pace(&pace).await?;
        }
        let n = records.len() as u64;
        let mut records = records;
        let mut receipt = receipt;
        loop {
            // Registered before the attempt, so space freed in between is not missed.
            let freed = self.inner.backlog.space_freed();
            match intake
                .push(
                    records,
                    receipt.take(),
                    checkpoint,
                    pace.map(|p| p.handover_wait),
                )
                .await
            {
                Ok(_) => break,
                Err(e) => match e.failure {
                    PushFailure::Spool(full) if full.is_full() => {
                        records = e.records;
                        receipt = e.receipt;
                        tokio::select! {
                            _ = freed => {}
                            _ = tokio::time::sleep(FULL_RETRY) => {}
                            _ = self.inner.stopped.cancelled() => return Err(ProduceError::Stopped),
                            _ = self.inner.no_waiting.cancelled() => return Err(ProduceError::Stopped),
                        }
                    }
                    PushFailure::Spool(other) => return Err(ProduceError::Spool(other)),
                    PushFailure::Stopped => return Err(ProduceError::Stopped),
                },
            }
        }
        self.inner.metrics.spooled(source, n);
        Ok(())
    }

    /// Waits while the spool holds more than the read-ahead and delivery is
    /// making progress (see [`Pace`]).
    async fn keep_pace(&self, pace: &Pace) -> Result<(), ProduceError> {
        let backlog = &self.inner.backlog;
        loop {
            let freed = backlog.space_freed();
            let progressing = backlog
                .since_freed()
                .is_some_and(|since| since < pace.stalled_after);
            if backlog.used_bytes() <= pace.read_ahead_bytes || !progressing {
                return Ok(());
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(FULL_RETRY) => {}
                _ = self.inner.stopped.cancelled() => return Err(ProduceError::Stopped),
                // Shutting down: no more pacing; the write goes in if there is room.
                _ = self.inner.no_waiting.cancelled() => return Ok(()),
            }
        }
    }

    /// From now on a put that finds the spool full fails with `Stopped` at once
    /// instead of waiting for room: the agent calls it when it stops its sources,
    /// so a full spool cannot hold up the shutdown. Puts that fit still go in.
    pub(crate) fn stop_waiting(&self) {
        self.inner.no_waiting.cancel();
    }

    /// Sends every partial aggregate now, without waiting for `max_buffered_time_ms` (the
    /// kinesis-producer's `Flush`). Records still in the spool only are sent as
    /// they are read back.
    pub fn flush(&self) {
        for intake in self.inner.intakes.values() {
            intake.flush();
        }
    }

    /// Spools a batch without waiting (for sources that refuse when the spool is
    /// full); `source` labels the metrics.
    pub(crate) fn try_spool_batch(
        &self,
        stream: &str,
        source: Source,
        records: Vec<UserRecord>,
        receipt: Option<oneshot::Sender<DeliveryResult>>,
    ) -> Result<(), ProduceError> {
        if records.is_empty() {
            return Ok(());
        }
        let intake = self.intake(stream, &records)?;
        let n = records.len() as u64;
        intake
            .try_push(records, receipt)
            .map_err(|e| ProduceError::from(e.failure))?;
        self.inner.metrics.spooled(source, n);
        Ok(())
    }

    /// Stops intake (later puts fail with `Stopped`), seals partial aggregates, lets
    /// in-flight and queued requests finish for up to the shutdown timeout, and
    /// flushes the spool. What was not delivered stays spooled for the next start.
    /// Later calls return an empty report.
    pub async fn shutdown(&self) -> Result<ShutdownReport, LifecycleError> {
        self.inner.stopped.cancel();
        let Some(dispatchers) = self
            .inner
            .dispatchers
            .lock()
            .expect("dispatchers lock poisoned")
            .take()
        else {
            return Ok(ShutdownReport::default());
        };
        let deadline = Instant::now() + self.inner.shutdown_timeout;
        let _ = self.inner.drain_deadline.send(Some(deadline));
        self.inner.delivery.cancel();
        let mut report = ShutdownReport::default();
        for d in dispatchers {
            // What it loaded and did not send stays in the spool's count.
            let _ = d.await;
        }
        self.inner.tasks.close();
        // Requests still in flight past the deadline are abandoned; their records
        // stay spooled.
        let _ = tokio::time::timeout_at(deadline, self.inner.tasks.wait()).await;
        // The dispatchers are gone: nothing retires any more, and the sources have
        // stopped (a late append only makes the summary fail its check).
        self.inner.spool.close().await?;
        report.spooled_bytes = self.inner.spool.used_bytes();
        report.undelivered_records = self.inner.spool.records();
        tracing::info!(
            undelivered_records = report.undelivered_records,
            spooled_bytes = report.spooled_bytes,
            "Producer stopped; undelivered records stay spooled for the next start"
        );
        Ok(report)
    }
}
