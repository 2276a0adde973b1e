//! A fleet larger than one machine runs, simulated: thousands of agents on one
//! stream of hundreds of shards, on tokio's paused clock.
//!
//! ```text
//! cargo run --release --example fleet_sim                                # 1,000 agents, 100 shards
//! cargo run --release --example fleet_sim -- --agents 10000 --shards 1000
//! cargo run --release --example fleet_sim -- --agents 32 --shards 4 --load 0.5
//! ```
//!
//! Each agent runs the agent's own pacing (token buckets at the share of each
//! shard it learns from its throttles, shard backoff) and its own shard map
//! refresh task (reloads spread over the fleet and coalesced, ListShards
//! backoff); the stream is simulated: per-shard write limits in one-second
//! windows, ListShards limited per stream (`--list-shards-tps`, AWS documents
//! 1,000), log-normal request latency. Records arrive at each agent as batches
//! of one partition key (`--batch-kib`, 64: a file source's default), at
//! `--load` times the stream's capacity split evenly over the agents. Agents
//! start spread over `--start-spread` seconds; `--reshard-at` seconds after the
//! last one started, every shard splits in two (the offered load follows the
//! capacity); the load runs `--secs`, then every agent drains its queue.
//!
//! The report: accepted bytes over capacity, throttled entries per accepted one,
//! Jain's fairness index over the agents' accepted bytes, latency from a batch's
//! arrival to its acceptance, ListShards calls per agent in the 45 s after the
//! reshard (and the peak per second, and calls refused past the limit),
//! DescribeStreamSummary calls, and entries left after the drain.

use std::time::Instant;

use clap::Parser;
use shardline::testkit::{simulate, FleetSpec};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    #[arg(long, default_value_t = 100)]
    shards: usize,
    /// Offered load, times the stream's capacity.
    #[arg(long, default_value_t = 1.5)]
    load: f64,
    #[arg(long, default_value_t = 120)]
    secs: u64,
    /// Seconds into the load when every shard splits (0: no reshard).
    #[arg(long, default_value_t = 60)]
    reshard_at: u64,
    #[arg(long, default_value_t = 20)]
    start_spread: u64,
    #[arg(long, default_value_t = 64)]
    batch_kib: u64,
    #[arg(long, default_value_t = 20.0)]
    latency_ms: f64,
    #[arg(long, default_value_t = 80.0)]
    latency_p99_ms: f64,
    #[arg(long, default_value_t = 1000)]
    list_shards_tps: u32,
    #[arg(long, default_value_t = 80.0)]
    rate_limit_percent: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() {
    let a = Args::parse();
    let spec = FleetSpec {
        agents: a.agents,
        shards: a.shards,
        load: a.load,
        secs: a.secs,
        reshard_at: (a.reshard_at > 0).then_some(a.reshard_at),
        start_spread_secs: a.start_spread,
        batch_bytes: a.batch_kib << 10,
        latency_ms: (a.latency_ms, a.latency_p99_ms),
        list_shards_tps: a.list_shards_tps,
        rate_limit_percent: a.rate_limit_percent,
        seed: a.seed,
        ..FleetSpec::default()
    };
    fastrand::seed(spec.seed);
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let mut report = runtime.block_on(simulate(spec));
    report.wall_secs = started.elapsed().as_secs_f64();
    println!("{report}");
}
