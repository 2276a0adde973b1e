//! Delivery: from the stream's intake to Kinesis, and back to the spool as acks.
//!
//! One *dispatcher* task per stream (`dispatcher`, started by [`spawn_stream`],
//! which the producer calls once per stream) is a `select!` loop over parts that
//! each own their state and are held by that dispatcher alone:
//!
//! - `router`: routing and aggregation per shard, and the queue of sealed
//!   aggregates;
//! - `pacing`: token buckets, stream and shard backoff, and when to wake up;
//!   each shard's bucket runs at the share of the shard this agent learned it may
//!   use (`share`: additive increase, multiplicative decrease on throttles);
//! - `ledger`: delivery progress of every loaded spool entry (ack, retire, give
//!   up, expiry), and the acks it writes back through intake;
//! - `policy`: what becomes of records Kinesis refuses or that grow too old
//!   (retry, split, give up to the dead-letter file and the failure channel):
//!   the one place records leave the spool undelivered;
//! - `workers`: the PutRecords requests in flight, their connection slots and the
//!   channel their outcomes come back on.
//!
//! Beside them:
//!
//! - `refresh`: the task that keeps a stream's shard map fresh;
//! - `dead_letter`: the file records refused for good are written to (shared by
//!   every stream's policy);
//! - [`kinesis`]: the Kinesis client, and the one place that classifies its errors;
//! - [`destination`]: each stream's region, endpoint, profile and assumed role;
//! - `clients`: the clients made from the destinations, chosen by stream name;
//! - [`redact`]: URLs and messages shown with their credentials hidden.
//!
//! Requests run on worker tasks, bounded across all streams by `max_connections`.
//!
//! # Resharding
//!
//! The shard map is refreshed on an interval, when a record's hash key falls outside
//! every known shard, and when a result names a shard other than the predicted one. A
//! changed map dissolves every aggregate not in flight and routes its records again;
//! aggregates in flight keep the generation of the map they were built with and are
//! dissolved if they come back failed.

mod aws;
pub(crate) mod clients;
mod dead_letter;
pub(crate) mod destination;
mod dispatcher;
pub(crate) mod firehose;
pub(crate) mod fleet_sim;
pub(crate) mod kinesis;
mod ledger;
mod pacing;
mod policy;
pub(crate) mod proxy;
pub(crate) mod redact;
mod refresh;
mod router;
mod share;
#[cfg(test)]
mod tests;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aggregate::Limits;
use crate::intake::Outlet;
use crate::metrics::Metrics;
use crate::shard_map::ShardMap;
use dispatcher::Dispatcher;
use kinesis::SharedKinesis;

pub(crate) use dead_letter::DeadLetter;
pub use dead_letter::Failure;

/// Most entries in one PutRecords request (a Kinesis limit).
pub(crate) const MAX_BATCH_RECORDS: usize = 500;
/// Most bytes in one PutRecords request of several records (a Kinesis limit).
/// A record larger than this (up to 10 MiB, on a stream raised with
/// UpdateMaxRecordSize) goes in a request of its own, which Kinesis takes up to
/// 10 MiB.
pub(crate) const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// How often the same kind of delivery problem is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of delivery.
#[derive(Debug, Clone, PartialEq)]
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
    /// How lines are packed for each Firehose stream (by its name inside the
    /// agent); a Firehose stream not listed gets the default packing.
    pub packing: Vec<(String, firehose::Packing)>,
    /// Whether Kinesis streams' records are KPL-aggregated; `false`: one user
    /// record per Kinesis record (`aggregation` then holds one record).
    pub aggregate: bool,
    /// Kinesis streams (by name inside the agent) that set `aggregate` for
    /// themselves.
    pub aggregate_streams: Vec<(String, bool)>,
    /// How Kinesis streams' records are packed and compressed (`None`: not).
    pub compression: Option<crate::aggregate::Packs>,
    /// Kinesis streams (by name inside the agent) that set it for themselves.
    pub compression_streams: Vec<(String, Option<crate::aggregate::Packs>)>,
    /// Streams (by name inside the agent) with delivery settings of their own
    /// (a `[[destination]]`'s, or `[kinesis]`'s for the default stream).
    pub overrides: Vec<(String, StreamDelivery)>,
}

/// What one destination sets for itself instead of `[delivery]`'s; `None`:
/// `[delivery]`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamDelivery {
    /// Longest a user record waits for its aggregate (Kinesis streams).
    pub linger: Option<Duration>,
    /// Fraction of each shard's write limits (Kinesis streams; 0: no limit).
    pub shard_rate_factor: Option<f64>,
    /// Records older than this are given up; `Some(None)`: never.
    pub max_record_age: Option<Option<Duration>>,
    /// Most bytes of spool entries loaded into memory for this stream.
    pub max_inflight_bytes: Option<u64>,
    /// This stream's own dead-letter file.
    pub dead_letter_path: Option<std::path::PathBuf>,
}

impl StreamDelivery {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == StreamDelivery::default()
    }

    /// `options` with what this sets in place of theirs.
    fn apply(&self, options: &mut DeliveryOptions) {
        if let Some(l) = self.linger {
            options.linger = l;
        }
        if let Some(f) = self.shard_rate_factor {
            options.shard_rate_factor = f;
        }
        if let Some(a) = self.max_record_age {
            options.max_record_age = a;
        }
        if let Some(b) = self.max_inflight_bytes {
            options.max_inflight_bytes = b;
        }
    }
}

impl DeliveryOptions {
    /// Whether the records of Kinesis stream `route` are aggregated.
    pub fn aggregates(&self, route: &str) -> bool {
        self.aggregate_streams
            .iter()
            .find(|(r, _)| r == route)
            .map_or(self.aggregate, |&(_, a)| a)
    }

    /// What stream `route` sets for itself.
    pub fn overrides_of(&self, route: &str) -> Option<&StreamDelivery> {
        self.overrides
            .iter()
            .find(|(r, _)| r == route)
            .map(|(_, o)| o)
    }

    /// How the records of Kinesis stream `route` are packed and compressed.
    pub fn packs(&self, route: &str) -> Option<crate::aggregate::Packs> {
        self.compression_streams
            .iter()
            .find(|(r, _)| r == route)
            .map_or(self.compression, |&(_, c)| c)
    }
}

/// What every stream's dispatcher shares; made by the producer, handed to
/// [`spawn_stream`] for each stream.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) kinesis: SharedKinesis,
    /// Connection slots, across all streams (`max_connections`).
    pub(crate) permits: Arc<Semaphore>,
    /// Most of those slots one stream may hold: the others always have one
    /// left, so a slow destination (Firehose timing out, say) cannot starve them.
    pub(crate) share: usize,
    pub(crate) options: DeliveryOptions,
    pub(crate) metrics: Metrics,
    /// Where permanent failures are reported (if anyone listens).
    pub(crate) failures: mpsc::Sender<Failure>,
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    /// Cancelled when the producer stops: dispatchers flush and drain.
    pub(crate) shutdown: CancellationToken,
    /// Set when the producer stops: draining ends at this instant.
    pub(crate) drain_deadline: watch::Receiver<Option<Instant>>,
}

/// Most connection slots one of `streams` streams may hold out of
/// `max_connections`: every other stream keeps one.
pub(crate) fn share(max_connections: usize, streams: usize) -> usize {
    max_connections
        .saturating_sub(streams.saturating_sub(1))
        .max(1)
}

/// Starts the dispatcher of one stream, reading from `outlet`, and its shard map
/// refresh task (a Firehose stream has a map of one shard, and no refresh).
pub(crate) fn spawn_stream(
    outlet: Outlet,
    mut ctx: Context,
    tracker: &TaskTracker,
) -> tokio::task::JoinHandle<()> {
    let (map_tx, map_rx) = watch::channel(None);
    let (size_tx, size_rx) = watch::channel(None);
    let refresh = Arc::new(Notify::new());
    if let Some(own) = ctx.options.overrides_of(outlet.stream()).cloned() {
        own.apply(&mut ctx.options);
        if let Some(path) = own.dead_letter_path {
            ctx.dead_letter = Some(Arc::new(DeadLetter::new(path)));
        }
    }
    if firehose::stream_name(outlet.stream()).is_some() {
        ctx.options = firehose::options(outlet.stream(), &ctx.options);
        let one = ShardMap::new(vec![firehose::shard()]).expect("one shard of every key");
        // Marked changed: the dispatcher takes it in its first turn.
        map_tx.send_replace(Some(Arc::new(one)));
    } else {
        if !ctx.options.aggregates(outlet.stream()) {
            // A lone user record is sent as itself (not KPL-encoded).
            ctx.options.aggregation.max_records = 1;
        }
        ctx.options.aggregation.packs = ctx.options.packs(outlet.stream());
        tracker.spawn(refresh::refresh_shard_map(
            outlet.stream().clone(),
            ctx.kinesis.clone(),
            ctx.options.shard_refresh_interval,
            refresh::Published {
                map: map_tx,
                max_record_bytes: size_tx,
            },
            refresh.clone(),
            ctx.metrics.clone(),
            ctx.shutdown.clone(),
        ));
    }
    let shutdown = ctx.shutdown.clone();
    let drain_deadline = ctx.drain_deadline.clone();
    let dispatcher = Dispatcher::new(outlet, ctx, (map_rx, size_rx), refresh);
    tracker.spawn(dispatcher.run(shutdown, drain_deadline))
}
