//! A fleet simulated in virtual time: thousands of agents on one stream of
//! hundreds of shards, more than one machine can run as processes. Time is
//! tokio's paused clock, so a simulated second costs only the events in it.
//!
//! Real code: each agent's [`Pacing`](super::pacing) (token buckets at its learned
//! share of each shard, shard backoff) and its shard map refresh task (spread and
//! coalesced reloads, ListShards backoff, the maximum record size read), with the
//! shard map itself. Simulated: the stream (per-shard write limits in one-second
//! windows, ListShards limited per stream, log-normal request latency; see
//! `model`), and the router and workers, replaced by a loop that sends batches of
//! one partition key as single entries (`agent`).

mod agent;
mod model;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use model::Model;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub agents: usize,
    pub shards: usize,
    /// Offered load, as a multiple of the stream's capacity (which the
    /// offered load follows through the reshard).
    pub load: f64,
    /// Seconds of load after the last agent started.
    pub secs: u64,
    /// Seconds after the last agent started when every shard splits in two.
    pub reshard_at: Option<u64>,
    /// Agents start spread over this many seconds (a rolling start).
    pub start_spread_secs: u64,
    /// Bytes of one batch (one entry).
    pub batch_bytes: u64,
    /// Request latency: median and p99, in milliseconds.
    pub latency_ms: (f64, f64),
    /// ListShards calls the stream takes per second.
    pub list_shards_tps: u32,
    /// The agents' `rate_limit_percent`.
    pub rate_limit_percent: f64,
    /// Requests in flight per agent.
    pub max_inflight: usize,
    /// The agents' `shard_refresh_interval_secs`.
    pub refresh_interval_secs: u64,
    pub seed: u64,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            agents: 1000,
            shards: 100,
            load: 1.5,
            secs: 120,
            reshard_at: Some(60),
            start_spread_secs: 20,
            batch_bytes: 64 << 10,
            latency_ms: (20.0, 80.0),
            list_shards_tps: 1000,
            rate_limit_percent: 80.0,
            max_inflight: 8,
            refresh_interval_secs: 60,
            seed: 1,
        }
    }
}

/// What a simulation measured, over the load after every agent started.
#[derive(Debug, Clone)]
pub struct FleetReport {
    pub spec: FleetSpec,
    pub shards_after: usize,
    /// Accepted bytes over the stream's capacity (open shards × 1 MiB/s).
    pub accepted_fraction: f64,
    /// Throttled entries per accepted entry.
    pub throttled_per_accepted: f64,
    /// Jain's index of per-agent accepted bytes.
    pub jain: f64,
    /// From a batch's arrival at its agent to its acceptance.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub list_shards_total: u64,
    /// Calls in the 45 s after the reshard, per agent: most and mean.
    pub list_shards_reshard_max: u32,
    pub list_shards_reshard_mean: f64,
    /// Most calls in one second, and calls refused past the limit.
    pub list_shards_peak_per_sec: u32,
    pub list_shards_limited: u64,
    pub describe_calls: u64,
    /// Entries still queued when the drain ended (0: all accepted), and how
    /// long the drain took (the backlog an overload leaves, sent once the load
    /// stops).
    pub entries_left: usize,
    pub drain_secs: f64,
    /// Real seconds the simulation took.
    pub wall_secs: f64,
}

/// Runs a simulation. It must run on a runtime whose clock is paused (tokio's
/// `start_paused`), where it costs only the events in it, not their time; the
/// caller seeds `fastrand` for a repeatable run and fills in `wall_secs`.
pub async fn simulate(spec: FleetSpec) -> FleetReport {
    run(spec).await
}

async fn run(spec: FleetSpec) -> FleetReport {
    let model = Arc::new(Mutex::new(Model::new(
        spec.shards,
        spec.agents,
        spec.list_shards_tps,
        spec.latency_ms,
    )));
    let t0 = Instant::now();
    let all_started = t0 + Duration::from_secs(spec.start_spread_secs);
    let load_end = all_started + Duration::from_secs(spec.secs);
    let shared = agent::Shared {
        model: model.clone(),
        metrics: Metrics::new(),
        shutdown: CancellationToken::new(),
        per_shard_rate: spec.load * (1 << 20) as f64 / spec.agents as f64,
        batch_bytes: spec.batch_bytes,
        load_end,
        drain_end: load_end + Duration::from_secs((10 * spec.secs).max(600)),
        max_inflight: spec.max_inflight,
        rate_factor: spec.rate_limit_percent / 100.0,
        refresh_interval: Duration::from_secs(spec.refresh_interval_secs),
    };
    let agents: Vec<_> = (0..spec.agents)
        .map(|i| {
            let start = t0 + Duration::from_secs(spec.start_spread_secs).mul_f64(fastrand::f64());
            tokio::spawn(agent::run(i, start, shared.clone()))
        })
        .collect();
    tokio::spawn(control(
        model.clone(),
        all_started,
        load_end,
        spec.reshard_at,
    ));
    let (mut left, mut last) = (0, load_end);
    for a in agents {
        let (held, ended) = a.await.expect("an agent ran");
        left += held;
        last = last.max(ended);
    }
    shared.shutdown.cancel();
    let m = model.lock().unwrap();
    let mut report = report(spec, &m, left);
    report.drain_secs = last.duration_since(load_end).as_secs_f64();
    report
}

/// Measures from the last agent's start to the end of the load, counting the
/// capacity each second, and splits every shard at the reshard.
async fn control(model: Arc<Mutex<Model>>, from: Instant, to: Instant, reshard_at: Option<u64>) {
    tokio::time::sleep_until(from).await;
    model.lock().unwrap().measuring = true;
    let reshard = reshard_at.map(|s| from + Duration::from_secs(s));
    let mut tick = tokio::time::interval_at(from, Duration::from_secs(1));
    loop {
        let now = tick.tick().await;
        let mut m = model.lock().unwrap();
        if now >= to {
            m.measuring = false;
            return;
        }
        if reshard == Some(now) {
            m.split_all(now);
        }
        m.end_reshard_window(now);
        m.tally.capacity_shard_secs += m.open_count() as f64;
    }
}

fn report(spec: FleetSpec, m: &Model, entries_left: usize) -> FleetReport {
    let t = &m.tally;
    let accepted: u64 = t.accepted_bytes.iter().sum();
    let capacity = t.capacity_shard_secs * (1 << 20) as f64;
    let mut lat = t.latencies_ms.clone();
    lat.sort_unstable_by(f32::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&v| v as f64)
    };
    let since = &t.list_calls_since_reshard;
    FleetReport {
        shards_after: m.open_count(),
        accepted_fraction: accepted as f64 / capacity,
        throttled_per_accepted: t.throttled as f64 / t.accepted.max(1) as f64,
        jain: jain(&t.accepted_bytes),
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        list_shards_total: t.list_calls.iter().map(|&c| c as u64).sum(),
        list_shards_reshard_max: since.iter().copied().max().unwrap_or(0),
        list_shards_reshard_mean: since.iter().sum::<u32>() as f64 / since.len().max(1) as f64,
        list_shards_peak_per_sec: t.list_per_second.iter().copied().max().unwrap_or(0),
        list_shards_limited: t.list_limited,
        describe_calls: t.describe_calls,
        entries_left,
        drain_secs: 0.0,
        wall_secs: 0.0,
        spec,
    }
}

/// Jain's fairness index: 1 when all are equal, 1/n when one has everything.
pub fn jain(xs: &[u64]) -> f64 {
    let sum: f64 = xs.iter().map(|&x| x as f64).sum();
    let squares: f64 = xs.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

impl std::fmt::Display for FleetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.spec;
        writeln!(
            f,
            "agents {}  shards {} -> {}  load {:.2}x  {} s measured  (simulated in {:.1} s)",
            s.agents, s.shards, self.shards_after, s.load, s.secs, self.wall_secs
        )?;
        writeln!(
            f,
            "accepted of capacity     {:6.1} %",
            self.accepted_fraction * 100.0
        )?;
        writeln!(
            f,
            "throttled per accepted   {:6.3}",
            self.throttled_per_accepted
        )?;
        writeln!(f, "fairness (Jain)          {:6.3}", self.jain)?;
        writeln!(
            f,
            "latency p50 / p99        {:.0} / {:.0} ms",
            self.latency_p50_ms, self.latency_p99_ms
        )?;
        writeln!(
            f,
            "ListShards after reshard {:.2} per agent (most {}), limited {}, peak {}/s, total {}",
            self.list_shards_reshard_mean,
            self.list_shards_reshard_max,
            self.list_shards_limited,
            self.list_shards_peak_per_sec,
            self.list_shards_total
        )?;
        writeln!(f, "DescribeStreamSummary    {}", self.describe_calls)?;
        write!(
            f,
            "drain                    {:.0} s, {} entries left",
            self.drain_secs, self.entries_left
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small fleet through a reshard: every entry is taken in the end, the
    /// load overruns the stream so most of it is used, every agent gets a
    /// part, and each agent lists the shards a few times at most for the reshard.
    #[tokio::test(start_paused = true)]
    async fn a_small_simulated_fleet_uses_its_stream_and_lists_few_times() {
        fastrand::seed(7);
        let report = simulate(FleetSpec {
            agents: 40,
            shards: 4,
            secs: 40,
            reshard_at: Some(20),
            start_spread_secs: 5,
            ..FleetSpec::default()
        })
        .await;
        assert_eq!(report.entries_left, 0, "{report}");
        assert_eq!(report.shards_after, 8);
        assert!(report.accepted_fraction > 0.7, "{report}");
        assert!(report.jain > 0.8, "{report}");
        assert!(report.list_shards_reshard_max <= 3, "{report}");
        assert_eq!(report.list_shards_limited, 0);
        assert_eq!(report.describe_calls, 40);
    }

    #[test]
    fn jain_is_one_for_equal_parts_and_one_over_n_for_one_taker() {
        assert!((jain(&[5, 5, 5, 5]) - 1.0).abs() < 1e-12);
        assert!((jain(&[9, 0, 0]) - 1.0 / 3.0).abs() < 1e-12);
    }
}
