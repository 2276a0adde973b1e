//! The simulated stream: shards with the Kinesis write limits counted in
//! one-second windows (as AWS and the emulator count them), ListShards limited
//! per stream, request latency drawn from a log-normal distribution, and the
//! tallies the report is made of. Each agent reaches it through a [`SimKinesis`],
//! which the agent's real shard map refresh task calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::deliver::kinesis::{BoxFuture, EntryResult, ErrorCode, Kinesis, KinesisError};
use crate::shard_map::Shard;

/// A shard's write limits.
const SHARD_BYTES: u64 = 1 << 20;
const SHARD_RECORDS: u32 = 1000;

/// How long after a reshard ListShards calls count as its: the longest spread
/// of a reload (30 s) and a margin, shorter than the refresh interval.
pub(super) const RESHARD_WINDOW: Duration = Duration::from_secs(45);

/// One shard of the simulated stream.
struct SimShard {
    shard: Shard,
    open: bool,
    window_start: Option<Instant>,
    bytes: u64,
    records: u32,
}

/// What the report counts.
#[derive(Default)]
pub(super) struct Tally {
    /// Bytes and entries accepted per agent while measured.
    pub(super) accepted_bytes: Vec<u64>,
    pub(super) accepted: u64,
    pub(super) throttled: u64,
    /// Milliseconds from an entry's arrival at its agent to its acceptance.
    pub(super) latencies_ms: Vec<f32>,
    /// ListShards calls per agent (all, and since the reshard), refused ones
    /// past the limit, and calls per whole second of simulated time.
    pub(super) list_calls: Vec<u32>,
    pub(super) list_calls_since_reshard: Vec<u32>,
    pub(super) list_limited: u64,
    pub(super) list_per_second: Vec<u32>,
    pub(super) describe_calls: u64,
    /// Open shards × seconds while measured (capacity in MiB).
    pub(super) capacity_shard_secs: f64,
}

/// The simulated stream and its tallies.
pub(super) struct Model {
    shards: Vec<SimShard>,
    /// The open shards' starting hash keys and indices, sorted.
    open: Vec<(u128, usize)>,
    started: Instant,
    list_limit: u32,
    list_window: (u64, u32),
    latency: (f64, f64),
    /// While ListShards calls are counted as the reshard's.
    reshard_window: Option<Instant>,
    pub(super) measuring: bool,
    pub(super) tally: Tally,
}

impl Model {
    pub(super) fn new(shards: usize, agents: usize, list_limit: u32, latency: (f64, f64)) -> Model {
        let shards = even_shards(shards, 0)
            .into_iter()
            .map(|shard| SimShard {
                shard,
                open: true,
                window_start: None,
                bytes: 0,
                records: 0,
            })
            .collect();
        let mut model = Model {
            shards,
            open: Vec::new(),
            started: Instant::now(),
            list_limit,
            list_window: (0, 0),
            latency,
            reshard_window: None,
            measuring: false,
            tally: Tally {
                accepted_bytes: vec![0; agents],
                list_calls: vec![0; agents],
                list_calls_since_reshard: vec![0; agents],
                ..Tally::default()
            },
        };
        model.index();
        model
    }

    fn index(&mut self) {
        self.open = (self.shards.iter().enumerate())
            .filter(|(_, s)| s.open)
            .map(|(i, s)| (s.shard.start, i))
            .collect();
        self.open.sort_unstable();
    }

    /// A request's latency: log-normal with the configured median and p99.
    pub(super) fn latency(&self) -> Duration {
        let (median, p99) = self.latency;
        let sigma = (p99 / median).ln() / 2.326;
        // Box-Muller: a standard normal from two uniforms.
        let (u1, u2) = (fastrand::f64().max(1e-12), fastrand::f64());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        Duration::from_secs_f64(median * (sigma * z).exp() / 1000.0)
    }

    pub(super) fn open_shards(&self) -> Vec<Shard> {
        self.shards
            .iter()
            .filter(|s| s.open)
            .map(|s| s.shard.clone())
            .collect()
    }

    pub(super) fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Splits every open shard in two at the middle of its range; ListShards
    /// calls of the next [`RESHARD_WINDOW`] count as the reshard's.
    pub(super) fn split_all(&mut self, now: Instant) {
        let mut next = self.shards.len();
        let mut children = Vec::new();
        for s in self.shards.iter_mut().filter(|s| s.open) {
            s.open = false;
            let mid = s.shard.start + (s.shard.end - s.shard.start) / 2;
            for (start, end) in [(s.shard.start, mid), (mid + 1, s.shard.end)] {
                children.push(SimShard {
                    shard: Shard {
                        id: shard_id(next),
                        start,
                        end,
                    },
                    open: true,
                    window_start: None,
                    bytes: 0,
                    records: 0,
                });
                next += 1;
            }
        }
        self.shards.extend(children);
        self.index();
        self.reshard_window = Some(now + RESHARD_WINDOW);
    }

    pub(super) fn end_reshard_window(&mut self, now: Instant) {
        if self.reshard_window.is_some_and(|end| now >= end) {
            self.reshard_window = None;
        }
    }

    /// Judges one entry of `bytes` with `hash_key` arriving now: the id of the
    /// shard that took it, or `None` if that shard's window is full.
    pub(super) fn judge(
        &mut self,
        agent: usize,
        hash_key: u128,
        bytes: u64,
        now: Instant,
    ) -> Option<Arc<str>> {
        let at = self.open.partition_point(|&(start, _)| start <= hash_key) - 1;
        let s = &mut self.shards[self.open[at].1];
        if s.window_start
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            s.window_start = Some(now);
            s.bytes = 0;
            s.records = 0;
        }
        let fits = s.bytes + bytes <= SHARD_BYTES && s.records < SHARD_RECORDS;
        let measuring = self.measuring;
        if fits {
            s.bytes += bytes;
            s.records += 1;
        }
        let id = s.shard.id.clone();
        if measuring {
            if fits {
                self.tally.accepted += 1;
                self.tally.accepted_bytes[agent] += bytes;
            } else {
                self.tally.throttled += 1;
            }
        }
        fits.then_some(id)
    }

    /// Counts a ListShards call; `false`: past the stream's limit this second.
    fn list_call(&mut self, agent: usize, now: Instant) -> bool {
        let second = now.duration_since(self.started).as_secs();
        if self.list_window.0 != second {
            self.list_window = (second, 0);
        }
        let second = second as usize;
        if self.tally.list_per_second.len() <= second {
            self.tally.list_per_second.resize(second + 1, 0);
        }
        self.tally.list_per_second[second] += 1;
        self.tally.list_calls[agent] += 1;
        if self.reshard_window.is_some() {
            self.tally.list_calls_since_reshard[agent] += 1;
        }
        self.list_window.1 += 1;
        let within = self.list_window.1 <= self.list_limit;
        if !within {
            self.tally.list_limited += 1;
        }
        within
    }
}

/// `n` shards splitting the hash key space evenly, ids from `first`.
fn even_shards(n: usize, first: usize) -> Vec<Shard> {
    let step = u128::MAX / n as u128;
    (0..n)
        .map(|i| Shard {
            id: shard_id(first + i),
            start: step * i as u128,
            end: if i + 1 == n {
                u128::MAX
            } else {
                step * (i as u128 + 1) - 1
            },
        })
        .collect()
}

fn shard_id(n: usize) -> Arc<str> {
    Arc::from(format!("shardId-{n:012}"))
}

/// One agent's way to the simulated stream: ListShards and
/// DescribeStreamSummary, as its refresh task calls them. PutRecords is
/// simulated by the agent loop itself (sizes only, no bytes).
pub(super) struct SimKinesis {
    pub(super) agent: usize,
    pub(super) model: Arc<Mutex<Model>>,
}

impl Kinesis for SimKinesis {
    fn list_shards<'a>(
        &'a self,
        _stream: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        Box::pin(async move {
            let latency = self.model.lock().unwrap().latency();
            tokio::time::sleep(latency / 2).await;
            let answer = {
                let mut m = self.model.lock().unwrap();
                if m.list_call(self.agent, Instant::now()) {
                    Ok(m.open_shards())
                } else {
                    Err(KinesisError {
                        operation: "ListShards",
                        code: ErrorCode::kinesis("LimitExceededException"),
                        message: "Rate exceeded for stream".into(),
                    })
                }
            };
            tokio::time::sleep(latency / 2).await;
            answer
        })
    }

    fn max_record_bytes<'a>(
        &'a self,
        _stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<usize>, KinesisError>> {
        Box::pin(async move {
            self.model.lock().unwrap().tally.describe_calls += 1;
            Ok(Some(1 << 20))
        })
    }

    fn put_records<'a>(
        &'a self,
        _stream: &'a str,
        _entries: Vec<crate::aggregate::Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        Box::pin(async {
            Err(KinesisError {
                operation: "PutRecords",
                code: ErrorCode::InvalidResponse,
                message: "the simulation judges entries in the agent loop".into(),
            })
        })
    }
}
