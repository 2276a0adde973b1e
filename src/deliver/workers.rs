//! The worker side of one stream's delivery: PutRecords requests run on worker
//! tasks, each holding a connection slot (`max_connections`, shared by every
//! stream) until its outcome is back on this part's channel.
//!
//! [`Workers`] owns the client, the channel the outcomes come back on and the
//! count of requests in flight. Only the stream's dispatcher holds it: it waits on
//! [`Workers::slot`] and [`Workers::next_outcome`] in its `select!`, starts a
//! request with [`Workers::start`] and settles each [`Outcome`] itself. No worker
//! waits to retry: a failed request comes back like any other, and the dispatcher
//! decides.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::kinesis::{EntryResult, KinesisError, SharedKinesis};
use super::router::Ready;
use crate::aggregate::{encode_all, Aggregate, Format};
use crate::metrics::Metrics;

/// Capacity of the channel that brings request outcomes back to a dispatcher. Each
/// worker sends exactly one message and holds a connection slot until then, so the
/// channel never needs more than `max_connections`; it is a floor.
const OUTCOME_CHANNEL_MIN: usize = 16;

/// The outcome of one request, back from a worker: the aggregates it carried, in
/// the order they were sent, and Kinesis's answer (one result per aggregate) or
/// the error of the whole request.
pub(super) struct Outcome {
    pub(super) items: Vec<Ready>,
    pub(super) result: Result<Vec<EntryResult>, KinesisError>,
}

/// One stream's requests in flight and the way their outcomes come back.
pub(super) struct Workers {
    /// The stream the requests go to (and the label of their metrics).
    stream: Arc<str>,
    /// The client every worker sends with.
    kinesis: SharedKinesis,
    /// Connection slots, across all streams (`max_connections`).
    permits: Arc<Semaphore>,
    /// Where each request's size and latency are counted.
    metrics: Metrics,
    /// Given to each worker, to bring its outcome back.
    tx: mpsc::Sender<Outcome>,
    /// Outcomes of finished requests, read by [`next_outcome`](Self::next_outcome).
    rx: mpsc::Receiver<Outcome>,
    /// Requests started and whose outcome has not been taken yet.
    in_flight: usize,
    /// Most requests of this stream in flight at once (its share of the slots).
    share: usize,
}

impl Workers {
    pub(super) fn new(
        stream: Arc<str>,
        kinesis: SharedKinesis,
        permits: Arc<Semaphore>,
        metrics: Metrics,
        max_connections: usize,
        share: usize,
    ) -> Workers {
        let (tx, rx) = mpsc::channel(max_connections.max(OUTCOME_CHANNEL_MIN));
        Workers {
            stream,
            kinesis,
            permits,
            metrics,
            tx,
            rx,
            in_flight: 0,
            share,
        }
    }

    /// Requests started and not settled yet.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether this stream may start another request (it holds less than its
    /// share of the slots).
    pub(super) fn has_room(&self) -> bool {
        self.in_flight < self.share
    }

    /// A free connection slot, once there is one. The future borrows nothing, so
    /// the dispatcher's `select!` waits on it beside [`next_outcome`](Self::next_outcome).
    pub(super) fn slot(&self) -> impl Future<Output = OwnedSemaphorePermit> + Send + 'static {
        let permits = self.permits.clone();
        async move {
            permits
                .acquire_owned()
                .await
                .expect("the connection semaphore is never closed")
        }
    }

    /// Starts a request for `items` on a worker task, which holds `permit` until
    /// its outcome is sent back.
    pub(super) fn start(&mut self, permit: OwnedSemaphorePermit, items: Vec<Ready>) {
        self.in_flight += 1;
        tokio::spawn(put_records(
            self.kinesis.clone(),
            self.stream.clone(),
            self.metrics.clone(),
            self.tx.clone(),
            permit,
            items,
        ));
    }

    /// The next outcome of a request started here. Cancel-safe: an outcome is
    /// counted out of flight only when it is returned.
    pub(super) async fn next_outcome(&mut self) -> Outcome {
        let outcome = self
            .rx
            .recv()
            .await
            .expect("Workers holds a sender, so the channel never closes");
        self.in_flight -= 1;
        outcome
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
    for agg in aggs.iter().filter(|a| a.format() == Format::Lines) {
        metrics.packed(&stream, agg.len());
    }
    let started = std::time::Instant::now();
    let result = kinesis.put_records(&stream, entries).await;
    metrics.observe_request(&stream, bytes, started.elapsed(), result.is_ok());
    // The dispatcher outlives its workers unless the agent is stopping, in
    // which case the records stay spooled.
    let _ = tx.send(Outcome { items, result }).await;
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::aggregate::{Aggregator, Encoded, Limits, Pending};
    use crate::deliver::kinesis::{BoxFuture, ErrorCode, Kinesis};
    use crate::record::UserRecord;
    use crate::shard_map::Shard;

    /// A Kinesis that answers each request with the next scripted answer, once
    /// `gate` lets it, and remembers the partition keys of what it was sent.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<Vec<EntryResult>, KinesisError>>>,
        sent: Mutex<Vec<Vec<String>>>,
        gate: Option<Arc<Notify>>,
    }

    impl Kinesis for Scripted {
        fn list_shards<'a>(
            &'a self,
            _stream: &'a str,
        ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn put_records<'a>(
            &'a self,
            _stream: &'a str,
            entries: Vec<Encoded>,
        ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
            Box::pin(async move {
                let keys = entries.iter().map(|e| e.partition_key.clone()).collect();
                self.sent.lock().unwrap().push(keys);
                if let Some(gate) = &self.gate {
                    gate.notified().await;
                }
                self.answers
                    .lock()
                    .unwrap()
                    .pop_front()
                    .expect("a scripted answer")
            })
        }
    }

    fn item(key: &str) -> Ready {
        let mut one = Aggregator::new();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_records: 1,
            format: Format::Kpl,
            packs: None,
        };
        one.try_add(Pending::new(1, 0, UserRecord::new(key, "data")), &limits)
            .expect("an empty aggregator takes a record");
        Ready {
            agg: one.take(),
            shard: 0,
            map: None,
            generation: 0,
            attempts: 0,
            alone: false,
        }
    }

    fn accepted() -> EntryResult {
        EntryResult::Accepted {
            shard_id: "shardId-000000000000".into(),
        }
    }

    fn workers(kinesis: Arc<Scripted>, slots: usize) -> (Workers, Arc<Semaphore>, Metrics) {
        let permits = Arc::new(Semaphore::new(slots));
        let metrics = Metrics::new();
        let w = Workers::new(
            "s".into(),
            kinesis,
            permits.clone(),
            metrics.clone(),
            slots,
            slots,
        );
        (w, permits, metrics)
    }

    #[tokio::test]
    async fn a_request_holds_its_slot_until_its_outcome_is_back() {
        let gate = Arc::new(Notify::new());
        let kinesis = Arc::new(Scripted {
            gate: Some(gate.clone()),
            ..Scripted::default()
        });
        kinesis
            .answers
            .lock()
            .unwrap()
            .push_back(Ok(vec![accepted(), accepted()]));
        let (mut w, permits, metrics) = workers(kinesis.clone(), 1);
        let permit = w.slot().await;
        w.start(permit, vec![item("a"), item("b")]);
        assert_eq!(w.in_flight(), 1);
        assert_eq!(permits.available_permits(), 0);
        gate.notify_one();
        let outcome = w.next_outcome().await;
        assert_eq!(w.in_flight(), 0);
        assert_eq!(permits.available_permits(), 1, "the slot is free again");
        let results = outcome.result.expect("answered");
        assert_eq!(results.len(), 2);
        let keys: Vec<&str> = outcome
            .items
            .iter()
            .map(|i| i.agg.records()[0].record.partition_key.as_str())
            .collect();
        assert_eq!(keys, ["a", "b"], "the aggregates come back in their order");
        assert_eq!(*kinesis.sent.lock().unwrap(), [vec!["a", "b"]]);
        let requests = metrics.read("shardline_put_records_requests_total", &[("stream", "s")]);
        assert_eq!(requests, 1);
    }

    #[tokio::test]
    async fn a_failed_request_comes_back_with_its_aggregates() {
        let kinesis = Arc::new(Scripted::default());
        kinesis.answers.lock().unwrap().push_back(Err(KinesisError {
            operation: "PutRecords",
            code: ErrorCode::Transport,
            message: "connection reset".into(),
        }));
        let (mut w, permits, _metrics) = workers(kinesis, 2);
        let permit = w.slot().await;
        w.start(permit, vec![item("a")]);
        let outcome = w.next_outcome().await;
        let e = outcome.result.expect_err("the request failed");
        assert_eq!(e.code, ErrorCode::Transport);
        assert_eq!(outcome.items.len(), 1);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(permits.available_permits(), 2);
    }

    #[tokio::test]
    async fn outcomes_of_several_requests_are_each_taken_once() {
        let kinesis = Arc::new(Scripted::default());
        for _ in 0..3 {
            kinesis
                .answers
                .lock()
                .unwrap()
                .push_back(Ok(vec![accepted()]));
        }
        let (mut w, _permits, _metrics) = workers(kinesis.clone(), 3);
        for key in ["a", "b", "c"] {
            let permit = w.slot().await;
            w.start(permit, vec![item(key)]);
        }
        assert_eq!(w.in_flight(), 3);
        let mut keys = Vec::new();
        for _ in 0..3 {
            let outcome = w.next_outcome().await;
            keys.push(
                outcome.items[0].agg.records()[0]
                    .record
                    .partition_key
                    .clone(),
            );
        }
        keys.sort();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(kinesis.sent.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_stream_holds_at_most_its_share_of_the_slots() {
        assert_eq!(crate::deliver::share(24, 1), 24);
        assert_eq!(
            crate::deliver::share(24, 3),
            22,
            "two other streams keep one each"
        );
        assert_eq!(crate::deliver::share(2, 5), 1, "never less than one");
        let gate = Arc::new(Notify::new());
        let kinesis = Arc::new(Scripted {
            gate: Some(gate.clone()),
            ..Scripted::default()
        });
        kinesis
            .answers
            .lock()
            .unwrap()
            .push_back(Ok(vec![accepted()]));
        let permits = Arc::new(Semaphore::new(4));
        let mut w = Workers::new("s".into(), kinesis, permits.clone(), Metrics::new(), 4, 1);
        assert!(w.has_room());
        let permit = w.slot().await;
        w.start(permit, vec![item("a")]);
        assert!(!w.has_room(), "its one share is in flight");
        assert_eq!(
            permits.available_permits(),
            3,
            "the others' slots stay free"
        );
        gate.notify_one();
        w.next_outcome().await;
        assert!(w.has_room());
    }
}
