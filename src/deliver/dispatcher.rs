//! The dispatcher: one task per stream, a `select!` loop over its parts. It takes
//! batches from the stream's [`Outlet`], tracks them in the [`Ledger`], routes their
//! records through the [`Router`], starts requests when [`Pacing`] allows and a
//! connection slot is free, and settles their outcomes. It never waits on Kinesis:
//! requests run on worker tasks, and their outcomes come back as messages, so a
//! request that must be retried never holds a connection slot while it waits, and
//! its aggregates go back to the *front* of the queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dead_letter::{DeadLetter, Failure};
use super::kinesis::{EntryResult, ErrorClass, ErrorCode, KinesisError, SharedKinesis};
use super::ledger::Ledger;
use super::pacing::Pacing;
use super::router::{Placement, Ready, Router};
use super::{Context, DeliveryOptions, LOG_INTERVAL, MAX_BATCH_BYTES, MAX_BATCH_RECORDS};
use crate::aggregate::{encode_all, Aggregate, Pending};
use crate::intake::{Loaded, Outlet};
use crate::metrics::Metrics;
use crate::shard_map::ShardMap;

/// How often records waiting for a shard map are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// Pause after a failed spool read before the next attempt.
const READ_RETRY: Duration = Duration::from_secs(1);

/// The outcome of one request, back from a worker.
pub(super) struct Outcome {
    items: Vec<Ready>,
    result: Result<Vec<EntryResult>, KinesisError>,
}

/// What a response did to the shards it touched, gathered once per response.
#[derive(Default)]
struct Answer {
    delivered: u64,
    wrong_shard: u64,
    /// Records of aggregates that landed out of their shard's range.
    misrouted: Vec<Pending>,
    accepted_shards: HashSet<Arc<str>>,
    refused_shards: HashSet<Arc<str>>,
    /// The first refusal of the response: (code, message).
    refused: Option<(ErrorCode, String)>,
    retry: Vec<Ready>,
}

/// One stream's delivery loop and its parts.
pub(super) struct Dispatcher {
    stream: Arc<str>,
    kinesis: SharedKinesis,
    /// Connection slots, across all streams.
    permits: Arc<Semaphore>,
    options: DeliveryOptions,
    metrics: Metrics,
    /// Where permanent failures are reported (if anyone listens).
    failures: mpsc::Sender<Failure>,
    dead_letter: Option<Arc<DeadLetter>>,
    /// Batches in, acks out.
    outlet: Outlet,
    /// The latest shard map, from the refresh task.
    map_rx: watch::Receiver<Option<Arc<ShardMap>>>,
    /// Asks the refresh task for a new map now.
    refresh: Arc<Notify>,
    outcome_tx: mpsc::Sender<Outcome>,
    outcome_rx: mpsc::Receiver<Outcome>,
    /// Requests started and not yet settled.
    in_flight: usize,
    /// When a delivery problem was last logged (at most one per `LOG_INTERVAL`).
    last_problem_log: Option<Instant>,
    /// When records waiting for a shard map are next checked for expiry.
    next_sweep: Option<Instant>,
    router: Router,
    pacing: Pacing,
    ledger: Ledger,
}

impl Dispatcher {
    pub(super) fn new(
        outlet: Outlet,
        ctx: Context,
        map_rx: watch::Receiver<Option<Arc<ShardMap>>>,
        refresh: Arc<Notify>,
        outcome_capacity: usize,
    ) -> Dispatcher {
        let stream = outlet.stream().clone();
        let (outcome_tx, outcome_rx) = mpsc::channel(outcome_capacity);
        let ledger = Ledger::new(stream.clone(), outlet.acks(), ctx.options.max_record_age);
        Dispatcher {
            router: Router::new(ctx.options.linger, ctx.options.aggregation),
            pacing: Pacing::new(ctx.options.shard_rate_factor),
            ledger,
            stream,
            kinesis: ctx.kinesis,
            permits: ctx.permits,
            options: ctx.options,
            metrics: ctx.metrics,
            failures: ctx.failures,
            dead_letter: ctx.dead_letter,
            outlet,
            map_rx,
            refresh,
            outcome_tx,
            outcome_rx,
            in_flight: 0,
            last_problem_log: None,
            next_sweep: None,
        }
    }

    fn has_room(&self) -> bool {
        self.ledger.loaded_bytes() < self.options.max_inflight_bytes
    }

    pub(super) async fn run(
        mut self,
        shutdown: CancellationToken,
        mut drain_deadline: watch::Receiver<Option<Instant>>,
    ) {
        let mut draining = false;
        let mut map_open = true;
        loop {
            if !draining && shutdown.is_cancelled() {
                draining = true;
                self.router.seal_all();
            }
            if draining {
                let deadline = *drain_deadline.borrow();
                let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
                if (self.router.queue_is_empty() && self.in_flight == 0) || out_of_time {
                    break;
                }
            } else {
                self.prepare().await;
            }
            self.router.route_waiting();
            if self.router.take_stale() {
                self.refresh.notify_one();
            }
            if self.options.max_record_age.is_some()
                && self.router.has_waiting()
                && self.next_sweep.is_none()
            {
                self.next_sweep = Some(Instant::now() + EXPIRY_SWEEP);
            }
            let now = Instant::now();
            let can_send = self.router.has_sendable(&self.pacing, now);
            let room = !draining && self.has_room();
            let wake_at = self.next_wake(now);
            let permits = self.permits.clone();
            // Requests in flight may outlast the drain: wake at its deadline.
            let drain_until = if draining {
                *drain_deadline.borrow()
            } else {
                None
            };
            let signals = self.outlet.signals();
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
                Some(batch) = signals.handed_over.recv(), if room => self.load(batch),
                _ = signals.flush.notified() => {
                    // Take in what was handed over before the flush was asked for.
                    while let Some(batch) = self.outlet.try_recv() {
                        self.load(batch);
                    }
                    self.router.seal_all();
                }
                _ = signals.spilled.notified(), if room => {}
                _ = sleep_until_opt(wake_at) => self.on_timer(),
            }
        }
        self.ledger.close();
    }

    /// Before waiting (not draining): reads spilled entries back while there is
    /// room, and seals everything when the window is full — a full window brings
    /// no more records to the open aggregates, and waiting out their linger would
    /// only stall (many shards share the window).
    async fn prepare(&mut self) {
        if self.has_room() {
            let budget = self.options.max_inflight_bytes - self.ledger.loaded_bytes();
            match self.outlet.read_spilled(budget).await {
                Ok(batches) => {
                    for batch in batches {
                        self.load(batch);
                    }
                }
                Err(e) => {
                    tracing::error!(stream = %self.stream, error = %e, "Reading the spool failed");
                    tokio::time::sleep(READ_RETRY).await;
                }
            }
        }
        if !self.has_room() {
            self.router.seal_all();
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let later = [self.pacing.stream_until(), self.next_sweep]
            .into_iter()
            .flatten()
            .filter(|&t| t > now);
        self.router
            .linger_deadline()
            .into_iter()
            .chain(later)
            .chain(self.router.next_unblocked(&self.pacing, now))
            .min()
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.next_sweep = None;
            self.sweep_expired();
        }
        self.router.on_timer(now);
        self.pacing.on_timer(now);
    }

    fn load(&mut self, batch: Loaded) {
        let pending = self.ledger.track(batch);
        for p in self.drop_expired(pending) {
            self.router.route(p);
        }
    }

    /// Takes a batch of sendable aggregates off the front of the queue and starts a
    /// request for it.
    fn send(&mut self, permit: OwnedSemaphorePermit) {
        let max_records = self.options.batch_max_records.min(MAX_BATCH_RECORDS);
        let max_bytes = self.options.batch_max_bytes.min(MAX_BATCH_BYTES);
        let items =
            self.router
                .take_batch(&mut self.pacing, Instant::now(), max_records, max_bytes);
        if items.is_empty() {
            return;
        }
        self.in_flight += 1;
        tokio::spawn(put_records(
            self.kinesis.clone(),
            self.stream.clone(),
            self.metrics.clone(),
            self.outcome_tx.clone(),
            permit,
            items,
        ));
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        self.in_flight -= 1;
        let Outcome { items, result } = outcome;
        match result {
            Ok(results) => self.on_results(items, results),
            Err(e) => self.on_request_error(items, e),
        }
    }

    /// Settles a response: accepted entries are acked (or checked against the map
    /// when they landed in another shard), refused ones retried or given up.
    fn on_results(&mut self, items: Vec<Ready>, results: Vec<EntryResult>) {
        self.pacing.request_succeeded();
        self.metrics.note_ok(&self.stream);
        let mut answer = Answer::default();
        for (item, res) in items.into_iter().zip(results) {
            match res {
                EntryResult::Accepted { shard_id } => self.accepted(item, shard_id, &mut answer),
                EntryResult::Failed { code, message } => {
                    self.refused(item, code, message, &mut answer)
                }
            }
        }
        self.pacing.shards_answered(
            answer.refused_shards,
            answer.accepted_shards,
            Instant::now(),
        );
        if let Some((code, message)) = answer.refused {
            // One per response, not per entry.
            self.metrics
                .note_error(&self.stream, code.as_str(), code.trouble(), &message);
        }
        if answer.wrong_shard > 0 {
            self.metrics.wrong_shard(&self.stream, answer.wrong_shard);
            self.refresh.notify_one();
        }
        if !answer.misrouted.is_empty() {
            self.metrics
                .misrouted(&self.stream, answer.misrouted.len() as u64);
            self.log_problem(
                &ErrorCode::WrongShard,
                "an aggregate landed in a shard whose range does not hold all its records; they are sent again after the shard map refresh",
            );
            self.router.hold(answer.misrouted);
        }
        self.metrics.delivered(&self.stream, answer.delivered);
        self.ledger.commit();
        self.requeue(answer.retry);
    }

    fn accepted(&mut self, item: Ready, shard_id: String, answer: &mut Answer) {
        if let Some(predicted) = self.router.shard_id(&item) {
            answer.accepted_shards.insert(predicted);
        }
        match self.router.check_placement(&item, &shard_id) {
            Placement::Expected => {}
            Placement::Elsewhere => answer.wrong_shard += 1,
            Placement::OutOfRange => {
                // A KCL consumer drops this aggregate: send its records again,
                // through a fresh map.
                answer.wrong_shard += 1;
                answer.misrouted.extend(item.agg.into_records());
                return;
            }
            Placement::Unknown => {
                answer.wrong_shard += 1;
                self.router.unverified(shard_id, item.agg.into_records());
                return;
            }
        }
        answer.delivered += item.agg.len() as u64;
        for p in item.agg.records() {
            self.ledger.ack(p.entry, p.index);
        }
    }

    fn refused(&mut self, item: Ready, code: ErrorCode, message: String, answer: &mut Answer) {
        let class = code.class();
        self.metrics.entry_failed(&self.stream, code.as_str());
        if class == ErrorClass::Permanent {
            self.isolate(item, &code, &message);
        } else {
            if let Some(id) = self.router.shard_id(&item) {
                answer.refused_shards.insert(id);
            }
            if class != ErrorClass::Throttled {
                self.log_problem(&code, &message);
            }
            answer.retry.push(item);
        }
        if answer.refused.is_none() {
            answer.refused = Some((code, message));
        }
    }

    /// A request failed as a whole: the stream backs off and the aggregates go
    /// back to the queue; a permanent refusal sends each aggregate alone to find
    /// the record it objects to.
    fn on_request_error(&mut self, items: Vec<Ready>, e: KinesisError) {
        let class = e.code.class();
        self.metrics.request_failed(&self.stream, e.code.as_str());
        self.metrics
            .note_error(&self.stream, e.code.as_str(), e.code.trouble(), &e.message);
        if class == ErrorClass::Permanent {
            self.log_problem(&e.code, &e.message);
            if items.len() == 1 && items[0].alone {
                let item = items.into_iter().next().expect("one item");
                self.isolate(item, &e.code, &e.message);
                self.ledger.commit();
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
        self.pacing.request_failed(class, Instant::now());
        self.log_problem(&e.code, &e.message);
        if class == ErrorClass::Environment {
            self.refresh.notify_one();
        }
        self.requeue(items);
    }

    /// An aggregate Kinesis refused for good: an aggregate of several records is
    /// split so each is tried alone; a lone record is a permanent failure — it goes
    /// to the dead-letter file and the failure stream, and leaves the spool.
    fn isolate(&mut self, item: Ready, code: &ErrorCode, message: &str) {
        if item.agg.len() > 1 {
            self.router.split_alone(item);
            return;
        }
        let kept = self.give_up(item.agg.into_records(), code, message);
        if !kept.is_empty() {
            self.pacing.hold_stream(Instant::now());
            self.router.wait_for_map(kept);
        }
    }

    /// Gives records up for good: writes them to the dead-letter file (fsynced),
    /// reports them on the failure stream, and retires them from the spool (at the
    /// next commit). If the dead-letter file cannot be written they stay spooled
    /// and are returned.
    fn give_up(&mut self, records: Vec<Pending>, code: &ErrorCode, message: &str) -> Vec<Pending> {
        let failure = Failure {
            stream: self.stream.to_string(),
            records: records.iter().map(|p| p.record.clone()).collect(),
            code: code.clone(),
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
            code = code.as_str(),
            error = message,
            records = failure.records.len(),
            dead_letter = ?self.dead_letter.as_ref().map(|d| d.path().display().to_string()),
            "Gave up records; they were moved to the dead-letter file"
        );
        self.metrics
            .failed(&self.stream, failure.records.len() as u64);
        for p in &records {
            self.ledger.refused(p.entry, code, message);
            self.ledger.ack(p.entry, p.index);
        }
        // Nobody listening, or a slow listener: the dead-letter file has it.
        let _ = self.failures.try_send(failure);
        Vec::new()
    }

    fn log_problem(&mut self, code: &ErrorCode, message: &str) {
        let now = Instant::now();
        if self
            .last_problem_log
            .is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL)
        {
            self.last_problem_log = Some(now);
            tracing::warn!(
                stream = %self.stream,
                code = code.as_str(),
                error = message,
                "Kinesis refused records; they stay spooled and are retried"
            );
        }
    }

    /// Puts failed aggregates back at the front of the queue, in their order; those
    /// built with an older shard map, or holding an expired record, are dissolved
    /// and routed again (the expired records given up).
    fn requeue(&mut self, items: Vec<Ready>) {
        let mut stale = Vec::new();
        for mut item in items.into_iter().rev() {
            let expired = self.options.max_record_age.is_some()
                && item.agg.records().iter().any(|p| self.ledger.is_expired(p));
            if !self.router.is_current(&item) || expired {
                stale.push(item);
                continue;
            }
            item.attempts += 1;
            self.metrics.retried(&self.stream, item.agg.len() as u64);
            self.router.push_front(item);
        }
        for item in stale {
            for p in self.drop_expired(item.agg.into_records()) {
                self.router.route(p);
            }
        }
    }

    /// Gives up the records older than `max_record_age` (dead-letter file) and
    /// returns the rest.
    fn drop_expired(&mut self, records: Vec<Pending>) -> Vec<Pending> {
        let Some(max) = self.options.max_record_age else {
            return records;
        };
        let (expired, fresh): (Vec<Pending>, Vec<Pending>) =
            records.into_iter().partition(|p| self.ledger.is_expired(p));
        if !expired.is_empty() {
            let message = format!(
                "not delivered within max_record_age_secs ({} s)",
                max.as_secs()
            );
            let kept = self.give_up(expired, &ErrorCode::Expired, &message);
            self.ledger.commit();
            self.router.wait_for_map(kept);
        }
        fresh
    }

    /// Expires the records waiting for a shard map (a missing stream, say).
    fn sweep_expired(&mut self) {
        if self.options.max_record_age.is_some() && self.router.has_waiting() {
            let waiting = self.router.take_waiting();
            let fresh = self.drop_expired(waiting);
            self.router.wait_for_map(fresh);
        }
    }

    /// Settles the aggregates that landed in shards no map knew, with the map
    /// that now does: those inside their shard's range are delivered, the others
    /// (or all, if the map still does not know the shard) go back to be sent.
    fn verify_landings(&mut self, map: &ShardMap) {
        let mut delivered = 0u64;
        for (shard, records) in self.router.take_unverified() {
            let fits = map.position(&shard).is_some_and(|i| {
                let range = map.get(i);
                records.iter().all(|p| range.contains(p.hash_key))
            });
            if fits {
                delivered += records.len() as u64;
                for p in &records {
                    self.ledger.ack(p.entry, p.index);
                }
            } else {
                self.metrics.misrouted(&self.stream, records.len() as u64);
                self.log_problem(
                    &ErrorCode::WrongShard,
                    "an aggregate landed in a shard whose range does not hold all its records; they are sent again",
                );
                self.router.hold(records);
            }
        }
        if delivered > 0 {
            self.metrics.delivered(&self.stream, delivered);
        }
        self.ledger.commit();
    }

    /// Takes a new shard map into use.
    fn apply_map(&mut self, map: Arc<ShardMap>) {
        self.verify_landings(&map);
        let shards = map.len();
        if self.router.apply_map(map) {
            self.metrics.shard_map_changed(&self.stream);
            tracing::info!(stream = %self.stream, shards, "Shard map changed");
            self.pacing.forget_shards();
        }
    }
}

/// A worker: sends one PutRecords request and brings its outcome back to the
/// dispatcher, holding a connection slot until then.
async fn put_records(
    kinesis: SharedKinesis,
    stream: Arc<str>,
    metrics: Metrics,
    tx: mpsc::Sender<Outcome>,
    permit: OwnedSemaphorePermit,
    items: Vec<Ready>,
) {
    let _permit = permit;
    // Encoding (and its MD5) runs here, on the worker, so requests are hashed
    // in parallel, and the aggregates of one request several at once. The
    // encoded bytes go to the client, not kept for a retry: a retry encodes
    // again, and a request in flight holds one copy of its aggregates, not two.
    let aggs: Vec<&Aggregate> = items.iter().map(|i| &i.agg).collect();
    let entries = encode_all(&aggs);
    let bytes = entries.iter().map(|e| e.size() as u64).sum();
    let started = std::time::Instant::now();
    let result = kinesis.put_records(&stream, entries).await;
    metrics.observe_request(&stream, bytes, started.elapsed(), result.is_ok());
    // The dispatcher outlives its workers unless the agent is stopping, in
    // which case the records stay spooled.
    let _ = tx.send(Outcome { items, result }).await;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
