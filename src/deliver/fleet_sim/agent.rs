//! One simulated agent: the real shard map refresh task and the real
//! [`Pacing`] (token buckets, learned shares, shard backoff), around a loop that
//! stands in for the router and the workers. Records arrive as batches of one
//! partition key each (a file source's default, one key per 64 KiB batch), each
//! batch one entry; requests carry up to 500 entries and 5 MiB, at most
//! `max_inflight` at a time; the stream judges each entry when the request
//! reaches it, half its latency after it is sent.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::model::{Model, SimKinesis};
use crate::deliver::pacing::Pacing;
use crate::deliver::refresh::{refresh_shard_map, Published};
use crate::metrics::Metrics;
use crate::shard_map::ShardMap;

/// Entries the loop considers for a request, from the front of its queue (the
/// dispatcher's memory window).
const WINDOW: usize = 512;
const MAX_ENTRIES: usize = 500;
const MAX_REQUEST_BYTES: u64 = 5 << 20;

/// What every agent shares.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) model: Arc<Mutex<Model>>,
    pub(super) metrics: Metrics,
    pub(super) shutdown: CancellationToken,
    /// Offered bytes per second per agent and open shard.
    pub(super) per_shard_rate: f64,
    pub(super) batch_bytes: u64,
    pub(super) load_end: Instant,
    pub(super) drain_end: Instant,
    pub(super) max_inflight: usize,
    pub(super) rate_factor: f64,
    pub(super) refresh_interval: Duration,
}

struct Entry {
    hash_key: u128,
    bytes: u64,
    born: Instant,
    /// The shard it is routed to, in the map of `generation`.
    shard: Arc<str>,
    generation: u64,
}

/// A request's answer: each entry and the shard that took it (`None`: throttled).
type Answer = Vec<(Entry, Option<Arc<str>>)>;

struct Agent {
    index: usize,
    shared: Shared,
    pacing: Pacing,
    map: Arc<ShardMap>,
    generation: u64,
    queue: VecDeque<Entry>,
    inflight: usize,
    next_arrival: Instant,
    asked: Arc<Notify>,
    answers: mpsc::UnboundedSender<Answer>,
}

/// Runs agent `index` from `start` until its queue is drained after the load
/// (or the drain's end); returns the entries it still held, and when it ended.
pub(super) async fn run(index: usize, start: Instant, shared: Shared) -> (usize, Instant) {
    tokio::time::sleep_until(start).await;
    let (map_tx, mut map_rx) = watch::channel(None);
    let (size_tx, _size_rx) = watch::channel(None);
    let asked = Arc::new(Notify::new());
    let kinesis = Arc::new(SimKinesis {
        agent: index,
        model: shared.model.clone(),
    });
    tokio::spawn(refresh_shard_map(
        Arc::from("fleet"),
        kinesis,
        shared.refresh_interval,
        Published {
            map: map_tx,
            max_record_bytes: size_tx,
        },
        asked.clone(),
        shared.metrics.clone(),
        shared.shutdown.clone(),
    ));
    let Ok(map) = map_rx.wait_for(|m| m.is_some()).await.map(|m| m.clone()) else {
        return (0, Instant::now());
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shards = shared.model.lock().unwrap().open_count();
    let period = shared.batch_bytes as f64 / (shared.per_shard_rate * shards as f64);
    let mut agent = Agent {
        index,
        pacing: Pacing::new(shared.rate_factor),
        map: map.expect("waited for a map"),
        generation: 0,
        queue: VecDeque::new(),
        inflight: 0,
        next_arrival: Instant::now() + Duration::from_secs_f64(period * fastrand::f64()),
        asked,
        answers: tx,
        shared,
    };
    loop {
        agent.send();
        let now = Instant::now();
        if now >= agent.shared.drain_end
            || (now >= agent.shared.load_end && agent.queue.is_empty() && agent.inflight == 0)
        {
            return (agent.queue.len(), now);
        }
        let wake = agent.next_wake(now);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => agent.arrive(),
            Some(answer) = rx.recv() => agent.settle(answer),
            Ok(()) = map_rx.changed() => {
                let map = map_rx.borrow_and_update().clone();
                if let Some(map) = map {
                    agent.new_map(map);
                }
            }
        }
    }
}

impl Agent {
    /// Starts requests while pacing lets entries go and connections are free.
    fn send(&mut self) {
        while self.inflight < self.shared.max_inflight {
            let now = Instant::now();
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut i = 0;
            while i < self.queue.len().min(WINDOW) && batch.len() < MAX_ENTRIES {
                let e = &self.queue[i];
                let blocked = self
                    .pacing
                    .shard_blocked_until(&e.shard, e.bytes as usize, now);
                if blocked.is_some() || bytes + e.bytes > MAX_REQUEST_BYTES {
                    i += 1;
                    continue;
                }
                let e = self.queue.remove(i).expect("in the queue");
                bytes += e.bytes;
                self.pacing
                    .take_tokens(e.shard.clone(), e.bytes as usize, now);
                batch.push(e);
            }
            if batch.is_empty() {
                return;
            }
            self.inflight += 1;
            let (model, tx, agent) = (self.shared.model.clone(), self.answers.clone(), self.index);
            tokio::spawn(async move {
                let latency = model.lock().unwrap().latency();
                tokio::time::sleep(latency / 2).await;
                let now = Instant::now();
                let answer: Answer = {
                    let mut m = model.lock().unwrap();
                    (batch.into_iter())
                        .map(|e| {
                            let took = m.judge(agent, e.hash_key, e.bytes, now);
                            (e, took)
                        })
                        .collect()
                };
                tokio::time::sleep(latency / 2).await;
                let _ = tx.send(answer);
            });
        }
    }

    /// The next arrival, or when a queued entry's shard lets it go.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = if self.next_arrival < self.shared.load_end {
            self.next_arrival
        } else {
            self.shared.drain_end
        };
        if self.inflight < self.shared.max_inflight {
            for e in self.queue.iter().take(WINDOW) {
                if let Some(t) = self
                    .pacing
                    .shard_blocked_until(&e.shard, e.bytes as usize, now)
                {
                    wake = wake.min(t);
                }
            }
        }
        wake.max(now + Duration::from_micros(100))
    }

    /// A batch arrives when it is due: its bytes at the agent's offered rate,
    /// which follows the stream's open shards.
    fn arrive(&mut self) {
        let now = Instant::now();
        if now < self.next_arrival || now >= self.shared.load_end {
            return;
        }
        let shards = self.shared.model.lock().unwrap().open_count();
        let rate = self.shared.per_shard_rate * shards as f64;
        let period = self.shared.batch_bytes as f64 / rate;
        self.next_arrival += Duration::from_secs_f64(period * (0.9 + 0.2 * fastrand::f64()));
        let hash_key = fastrand::u128(..);
        let shard = self.route(hash_key);
        self.queue.push_back(Entry {
            hash_key,
            bytes: self.shared.batch_bytes,
            born: now,
            shard,
            generation: self.generation,
        });
    }

    fn route(&self, hash_key: u128) -> Arc<str> {
        let i = self
            .map
            .lookup(hash_key)
            .expect("the simulated stream has no gaps");
        self.map.get(i).id.clone()
    }

    /// Settles an answer as the dispatcher does: shares and backoff learn from
    /// it, throttled entries go back to the front, a landing the map in use did
    /// not predict asks for a new map.
    fn settle(&mut self, answer: Answer) {
        self.inflight -= 1;
        let now = Instant::now();
        let (mut throttled, mut accepted) = (HashSet::new(), HashSet::new());
        let mut retry = Vec::new();
        let mut stale = false;
        let mut latencies = Vec::new();
        for (e, took) in answer {
            match took {
                Some(shard) => {
                    stale |= shard != e.shard && e.generation == self.generation;
                    latencies.push(now.duration_since(e.born).as_secs_f32() * 1000.0);
                    accepted.insert(e.shard);
                }
                None => {
                    throttled.insert(e.shard.clone());
                    retry.push(e);
                }
            }
        }
        {
            let mut m = self.shared.model.lock().unwrap();
            if m.measuring {
                m.tally.latencies_ms.extend(latencies);
            }
        }
        self.pacing.request_succeeded();
        self.pacing.shares_answered(&throttled, &accepted, now);
        self.pacing
            .shards_answered(throttled.clone(), &throttled, accepted, now);
        for e in retry.into_iter().rev() {
            self.queue.push_front(e);
        }
        if stale {
            self.asked.notify_one();
        }
    }

    /// A map from the refresh task: a changed one re-routes the queue.
    fn new_map(&mut self, map: Arc<ShardMap>) {
        if self.map.same_shards(&map) {
            return;
        }
        self.pacing.keep_shards(&map);
        self.map = map;
        self.generation += 1;
        for i in 0..self.queue.len() {
            let shard = self.route(self.queue[i].hash_key);
            let e = &mut self.queue[i];
            e.shard = shard;
            e.generation = self.generation;
        }
    }
}
