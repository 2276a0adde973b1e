//! The dispatcher: one task per stream, a `select!` loop over its parts. It takes
//! batches from the stream's [`Outlet`], tracks them in the [`Ledger`], routes their
//! records through the [`Router`], starts requests on its [`Workers`] when [`Pacing`]
//! allows and a connection slot is free, and settles their outcomes: accepted
//! entries are acked in the ledger, the others go to the [`Policy`], whose verdict
//! the dispatcher applies to its router and pacing. It never waits on Kinesis:
//! requests run on worker tasks and their outcomes come back as messages, so a
//! request that must be retried never holds a connection slot while it waits, and
//! its aggregates go back to the *front* of the queue.
//!
//! Only [`super::spawn_stream`] creates a dispatcher; it owns its parts and nothing
//! else reaches them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::kinesis::{EntryResult, ErrorClass, ErrorCode, KinesisError};
use super::ledger::Ledger;
use super::pacing::Pacing;
use super::policy::{EntryVerdict, Fate, Policy, RequestVerdict};
use super::router::{Placement, Ready, Router};
use super::workers::{Outcome, Workers};
use super::{Context, DeliveryOptions, MAX_BATCH_BYTES, MAX_BATCH_RECORDS};
use crate::aggregate::Pending;
use crate::intake::{Loaded, Outlet};
use crate::metrics::Metrics;
use crate::shard_map::ShardMap;

/// Pause after a failed spool read before the next attempt.
const READ_RETRY: Duration = Duration::from_secs(1);

/// What a response did to the shards it touched, gathered once per response.
#[derive(Default)]
struct Answer {
    /// User records accepted into the shard they belong to.
    delivered: u64,
    /// Entries that landed in a shard other than the predicted one.
    wrong_shard: u64,
    /// Whether a landing says the map in use is stale (the entry was built with
    /// it, or landed in a shard it does not know); landings of aggregates built
    /// with an older map are explained by the newer one.
    map_stale: bool,
    /// Records of aggregates that landed out of their shard's range.
    misrouted: Vec<Pending>,
    /// Shards (as predicted) that accepted an entry: their backoff ends.
    accepted_shards: HashSet<Arc<str>>,
    /// Shards (as predicted) that refused an entry to be retried: they back off.
    refused_shards: HashSet<Arc<str>>,
    /// Those of them that refused for throttling: they cut their share.
    throttled_shards: HashSet<Arc<str>>,
    /// The first refusal of the response: (code, message).
    refused: Option<(ErrorCode, String)>,
    /// Aggregates to send again, in their order.
    retry: Vec<Ready>,
}

/// One stream's delivery loop and its parts.
pub(super) struct Dispatcher {
    /// The stream's name, in logs and metric labels.
    stream: Arc<str>,
    /// The memory window and the request limits.
    options: DeliveryOptions,
    /// Delivered, retried and misrouted records, shard map changes, and the
    /// stream's health.
    metrics: Metrics,
    /// Batches in (handed over, or read back from the spool), and the signals
    /// that wake the loop.
    outlet: Outlet,
    /// The latest shard map, from the refresh task.
    map_rx: watch::Receiver<Option<Arc<ShardMap>>>,
    /// The stream's maximum record size, from the refresh task (`None`: not
    /// known, Kinesis judges).
    max_record_bytes: watch::Receiver<Option<usize>>,
    /// Asks the refresh task for a new map now.
    refresh: Arc<Notify>,
    /// Routing and aggregation per shard, and the queue of sealed aggregates.
    router: Router,
    /// When the stream and each of its shards may be sent to next.
    pacing: Pacing,
    /// Delivery progress of every loaded spool entry; writes the acks.
    ledger: Ledger,
    /// What becomes of refused and expired records.
    policy: Policy,
    /// The requests in flight and the channel their outcomes come back on.
    workers: Workers,
}

impl Dispatcher {
    pub(super) fn new(
        outlet: Outlet,
        ctx: Context,
        (map_rx, max_record_bytes): (
            watch::Receiver<Option<Arc<ShardMap>>>,
            watch::Receiver<Option<usize>>,
        ),
        refresh: Arc<Notify>,
    ) -> Dispatcher {
        let stream = outlet.stream().clone();
        let options = ctx.options;
        let ledger = Ledger::new(stream.clone(), outlet.acks(), options.max_record_age);
        let policy = Policy::new(
            stream.clone(),
            ctx.metrics.clone(),
            ctx.dead_letter,
            ctx.failures,
            options.max_record_age,
        );
        let workers = Workers::new(
            stream.clone(),
            ctx.kinesis,
            ctx.permits,
            ctx.metrics.clone(),
            options.max_connections,
            ctx.share,
        );
        Dispatcher {
            router: Router::new(options.linger, options.aggregation),
            pacing: Pacing::new(options.shard_rate_factor),
            ledger,
            policy,
            workers,
            stream,
            options,
            metrics: ctx.metrics,
            outlet,
            map_rx,
            max_record_bytes,
            refresh,
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
                if self.drained(*drain_deadline.borrow()) {
                    break;
                }
            } else {
                self.prepare().await;
            }
            self.route_waiting();
            let now = Instant::now();
            let can_send = self.workers.has_room() && self.router.has_sendable(&self.pacing, now);
            let room = !draining && self.has_room();
            let wake_at = self.next_wake(now);
            let slot = self.workers.slot();
            // Requests in flight may outlast the drain: wake at its deadline.
            let drain_until = if draining {
                *drain_deadline.borrow()
            } else {
                None
            };
            let signals = self.outlet.signals();
            tokio::select! {
                biased;
                outcome = self.workers.next_outcome() => self.on_outcome(outcome),
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
                permit = slot, if can_send => self.send(permit),
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

    /// While draining: whether the loop ends, with nothing left to send or the
    /// drain's `deadline` passed.
    fn drained(&self, deadline: Option<Instant>) -> bool {
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        (self.router.queue_is_empty() && self.workers.in_flight() == 0) || out_of_time
    }

    /// Routes the records waiting for a map once it covers them, asks for a new
    /// map when a record fell in a gap, and starts the expiry sweep's timer while
    /// records wait.
    fn route_waiting(&mut self) {
        self.router.route_waiting();
        if self.router.take_stale() {
            self.refresh.notify_one();
        }
        self.policy
            .arm_sweep(self.router.has_waiting(), Instant::now);
    }

    /// Before waiting (not draining): reads spilled entries back while there is
    /// room, and seals everything when the window is full and nothing else holds
    /// it — a full window brings no more records to the open aggregates, and
    /// waiting out their linger would only stall (many shards share the window).
    /// While requests are in flight or aggregates queued, their answers bring
    /// room back and the open aggregates keep filling: a Firehose record (up to
    /// 1,000 KiB, an eighth of the default window) sealed at every full window
    /// left a third of the records a tenth full.
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
        if !self.has_room() && self.workers.in_flight() == 0 && self.router.queue_is_empty() {
            self.router.seal_all();
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let later = [self.pacing.stream_until(), self.policy.next_sweep()]
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
        if self.policy.sweep_due(now) && self.router.has_waiting() {
            // Records waiting for a shard map (a missing stream, say) expire too.
            let waiting = self.router.take_waiting();
            let sorted = self.policy.expire(waiting, &mut self.ledger);
            self.router.wait_for_map(sorted.kept);
            self.router.wait_for_map(sorted.fresh);
        }
        self.router.on_timer(now);
        self.pacing.on_timer(now);
    }

    fn load(&mut self, batch: Loaded) {
        let pending = self.ledger.track(batch);
        self.route_fresh(pending);
    }

    /// Routes records, after giving up those older than `max_record_age` and
    /// those larger than the stream takes.
    fn route_fresh(&mut self, records: Vec<Pending>) {
        let records = self.give_up_too_large(records);
        let sorted = self.policy.expire(records, &mut self.ledger);
        self.router.wait_for_map(sorted.kept);
        for p in sorted.fresh {
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
        self.workers.start(permit, items);
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let Outcome { items, result } = outcome;
        match result {
            Ok(results) => self.on_results(items, results),
            Err(e) => self.on_request_error(items, e),
        }
    }

    /// Settles a response: accepted entries are acked (or checked against the map
    /// when they landed in another shard), refused ones go to the policy.
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
        let now = Instant::now();
        self.pacing
            .shares_answered(&answer.throttled_shards, &answer.accepted_shards, now);
        self.pacing.shards_answered(
            answer.refused_shards,
            &answer.throttled_shards,
            answer.accepted_shards,
            now,
        );
        if let Some((code, message)) = answer.refused {
            self.policy.response_refused(&code, &message);
        }
        if answer.wrong_shard > 0 {
            self.metrics.wrong_shard(&self.stream, answer.wrong_shard);
        }
        if answer.map_stale {
            self.refresh.notify_one();
        }
        if !answer.misrouted.is_empty() {
            self.metrics
                .misrouted(&self.stream, answer.misrouted.len() as u64);
            self.policy.log_problem(
                &ErrorCode::WrongShard,
                "an aggregate landed in a shard whose range does not hold all its records; they are sent again after the shard map refresh",
            );
            if answer.map_stale {
                self.router.hold(answer.misrouted);
            } else {
                // Built with an older map: the one in use already knows where
                // they go.
                self.router.wait_for_map(answer.misrouted);
            }
        }
        self.metrics.delivered(&self.stream, answer.delivered);
        self.ledger.commit();
        self.requeue(answer.retry);
    }

    fn accepted(&mut self, item: Ready, shard_id: String, answer: &mut Answer) {
        if let Some(predicted) = self.router.shard_id(&item) {
            answer.accepted_shards.insert(predicted);
        }
        let placement = self.router.check_placement(&item, &shard_id);
        if placement != Placement::Expected {
            answer.wrong_shard += 1;
            answer.map_stale |= placement == Placement::Unknown || self.router.is_current(&item);
        }
        match placement {
            Placement::Expected | Placement::Elsewhere => {}
            Placement::OutOfRange => {
                // A KCL consumer drops this aggregate: send its records again,
                // through a fresh map.
                answer.misrouted.extend(item.agg.into_records());
                return;
            }
            Placement::Unknown => {
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
        match self
            .policy
            .entry_refused(item, &code, &message, &mut self.ledger)
        {
            EntryVerdict::Retry(item) => {
                if let Some(id) = self.router.shard_id(&item) {
                    if code.class() == ErrorClass::Throttled {
                        answer.throttled_shards.insert(id.clone());
                    }
                    answer.refused_shards.insert(id);
                }
                answer.retry.push(item);
            }
            EntryVerdict::Final(fate) => self.apply_fate(fate),
        }
        if answer.refused.is_none() {
            answer.refused = Some((code, message));
        }
    }

    /// A request failed as a whole: the policy's verdict is applied (a backoff
    /// and a retry, aggregates sent alone, or a lone one's fate).
    fn on_request_error(&mut self, items: Vec<Ready>, e: KinesisError) {
        match self.policy.request_failed(items, &e, &mut self.ledger) {
            RequestVerdict::Retry(items, class) => {
                self.pacing.request_failed(class, Instant::now());
                if class == ErrorClass::Environment {
                    self.refresh.notify_one();
                }
                self.requeue(items);
            }
            RequestVerdict::SendAlone(items) => self.requeue(items),
            RequestVerdict::Final(fate) => {
                self.apply_fate(fate);
                self.ledger.commit();
            }
        }
    }

    /// Applies what the policy decided for an aggregate refused for good.
    fn apply_fate(&mut self, fate: Fate) {
        match fate {
            Fate::Split(item) => self.router.split_alone(item),
            Fate::GaveUp => {}
            Fate::Kept(records) => {
                // The dead-letter file cannot be written: pause, and keep them.
                self.pacing.hold_stream(Instant::now());
                self.router.wait_for_map(records);
            }
        }
    }

    /// Puts failed aggregates back at the front of the queue, in their order; those
    /// built with an older shard map, or holding an expired record, are dissolved
    /// and routed again (the expired records given up).
    fn requeue(&mut self, items: Vec<Ready>) {
        let mut stale = Vec::new();
        for mut item in items.into_iter().rev() {
            let expired = self.policy.holds_expired(&item, &self.ledger);
            if !self.router.is_current(&item) || expired {
                stale.push(item);
                continue;
            }
            item.attempts += 1;
            self.metrics.retried(&self.stream, item.agg.len() as u64);
            self.router.push_front(item);
        }
        for item in stale {
            self.route_fresh(item.agg.into_records());
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
                self.policy.log_problem(
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

    /// Gives up the records larger than the stream's maximum record size, when
    /// it is known; returns the others. Those the dead-letter file could not
    /// take wait for the next map, still spooled.
    fn give_up_too_large(&mut self, records: Vec<Pending>) -> Vec<Pending> {
        let limit = *self.max_record_bytes.borrow();
        let Some(limit) = limit.filter(|&l| records.iter().any(|p| p.record.size() > l)) else {
            return records;
        };
        let sorted = self.policy.too_large(records, limit, &mut self.ledger);
        self.router.wait_for_map(sorted.kept);
        sorted.fresh
    }

    /// Takes a new shard map into use (after the records waiting for it are
    /// checked against the stream's maximum record size, read just before it).
    fn apply_map(&mut self, map: Arc<ShardMap>) {
        let waiting = self.router.take_waiting();
        let waiting = self.give_up_too_large(waiting);
        self.router.wait_for_map(waiting);
        self.verify_landings(&map);
        let shards = map.len();
        if self.router.apply_map(map.clone()) {
            self.pacing.keep_shards(&map);
            // A Firehose stream's one-shard map is made once, at start: no reshard.
            if super::firehose::stream_name(&self.stream).is_none() {
                self.metrics.shard_map_changed(&self.stream);
                tracing::info!(stream = %self.stream, shards, "Shard map changed");
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
