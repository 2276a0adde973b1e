//! The fleet run, shared by the example (`main.rs`) and its integration test
//! (`tests/fleet.rs`), both of which include this file with `#[path]` beside
//! the emulator's module (`examples/common/emulator.rs`, which each of them
//! already has: the parent provides it as `emulator`): the options
//! ([`Options`]), and [`run`], which plays the phases in order: model, agents,
//! load with a split and a merge, drain, stop, read back, report.
//!
//! Each part owns its state and is called from here:
//!
//! - `line`: a line's id (agent, sequence number, write time) and its format.
//! - `tap`: what the model saw: entries accepted and throttled, each line's
//!   first accept, ListShards calls.
//! - `layer`: the middleware in front of the emulator: latency, the ListShards
//!   limit, the PutRecords tap.
//! - `model`: the emulator behind the layer, its stream and the reshards.
//! - `agents`: the agent processes.
//! - `writer`: the thread that appends the lines.
//! - `audit`: the stream read back and audited by content.
//! - `report`: the numbers, as a table and as JSON.

mod agents;
mod audit;
mod layer;
mod line;
mod model;
mod report;
mod tap;
mod writer;

use std::path::Path;
use std::time::{Duration, Instant};

use super::emulator;

use agents::{Agent, Usage};
use layer::Latency;
use model::{Model, Reshard};
pub(crate) use report::Report;
use report::{Inputs, Settings, SHARD_BYTES_PER_SEC};
use writer::Writer;

/// How long a stopped agent may take to exit (its shutdown limit and a margin).
const STOP_LIMIT: Duration = Duration::from_secs(45);

/// A file source's partition key setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PartitionKey {
    /// One random key per batch of lines read together (the default).
    RandomPerBatch,
    /// One random key per line.
    RandomPerRecord,
}

impl PartitionKey {
    /// The config's spelling.
    fn config_value(self) -> &'static str {
        match self {
            PartitionKey::RandomPerBatch => "random_per_batch",
            PartitionKey::RandomPerRecord => "random_per_record",
        }
    }
}

/// The run's options.
#[derive(Clone, Debug, clap::Parser)]
#[command(about = "A fleet of shardline agents sharing one modelled Kinesis stream")]
pub(crate) struct Options {
    /// Agent processes.
    #[arg(long, default_value_t = 32)]
    pub(crate) agents: usize,
    /// Shards of the stream at the start.
    #[arg(long, default_value_t = 4)]
    pub(crate) shards: i32,
    /// Offered load as a multiple of the starting capacity (shards × 1 MiB/s),
    /// split evenly over the agents.
    #[arg(long, default_value_t = 1.5)]
    pub(crate) load: f64,
    /// Seconds of load (a split at a third, a merge at two thirds).
    #[arg(long, default_value_t = 300.0)]
    pub(crate) secs: f64,
    /// Bytes of each line, its newline included.
    #[arg(long, default_value_t = 1024)]
    pub(crate) line_bytes: usize,
    /// Seed of the model's latency draws (default: from the clock).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// The file sources' partition key.
    #[arg(long, value_enum, default_value_t = PartitionKey::RandomPerBatch)]
    pub(crate) partition_key: PartitionKey,
    /// Median latency of every request, in milliseconds (0: none).
    #[arg(long, default_value_t = 20.0)]
    pub(crate) latency_ms: f64,
    /// 99th percentile latency of every request, in milliseconds.
    #[arg(long, default_value_t = 80.0)]
    pub(crate) latency_p99_ms: f64,
    /// ListShards calls per second the stream takes (AWS: 1000).
    #[arg(long, default_value_t = 1000)]
    pub(crate) list_shards_tps: u32,
    /// Longest wait, once the load stopped, for every line to be accepted
    /// (0: 120 s plus the load's seconds times its multiple of capacity, time
    /// enough for the backlog an overload leaves).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) drain_secs: f64,
    /// Seconds between progress lines (0: none).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) progress_secs: f64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

impl Options {
    fn settings(&self, seed: u64) -> Settings {
        Settings {
            agents: self.agents,
            shards: self.shards,
            load: self.load,
            secs: self.secs,
            line_bytes: self.line_bytes,
            seed,
            partition_key: self.partition_key.config_value().to_owned(),
            latency_ms: self.latency_ms,
            latency_p99_ms: self.latency_p99_ms,
            list_shards_tps: self.list_shards_tps,
        }
    }

    /// Lines per second each agent's file gets.
    fn lines_per_sec(&self) -> f64 {
        self.load * f64::from(self.shards) * SHARD_BYTES_PER_SEC
            / self.agents as f64
            / self.line_bytes as f64
    }

    fn check(&self) -> Result<(), String> {
        if self.agents == 0 || self.agents >= line::MAX_AGENTS {
            return Err(format!(
                "--agents {} is not in 1..{}",
                self.agents,
                line::MAX_AGENTS
            ));
        }
        if self.shards < 1
            || self.line_bytes <= line::ID_BYTES
            || self.secs <= 0.0
            || self.load <= 0.0
        {
            return Err(
                "--shards, --secs, --load must be positive and --line-bytes above 34".into(),
            );
        }
        Ok(())
    }
}

/// Prints a progress line to stderr.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("fleet: {}", format_args!($($arg)*)) };
}

/// Runs the fleet of `bin` agents in `work` and reports.
pub(crate) async fn run(opts: &Options, bin: &Path, work: &Path) -> Result<Report, String> {
    opts.check()?;
    let seed = opts.seed.unwrap_or_else(line::now_us);
    let latency = Latency::new(opts.latency_ms, opts.latency_p99_ms, seed);
    let model = Model::start(opts.agents, opts.shards, latency, opts.list_shards_tps).await?;
    say!(
        "{} agents ({}), {} shards at {}, load {:.2} × capacity for {:.0} s, seed {seed}",
        opts.agents,
        bin.display(),
        opts.shards,
        model.endpoint,
        opts.load,
        opts.secs
    );
    let mut agents = start_agents(opts, bin, work, &model).await?;

    let inputs = agents.iter().map(|a| a.input.clone()).collect();
    let writer = Writer::start(inputs, opts.lines_per_sec(), opts.line_bytes);
    let load_start = Instant::now();
    let reshards = load_phase(opts, &model, &writer, load_start).await?;
    let written = writer.stop()?;
    let load_end = Instant::now();
    let at_load_end = model.tap.totals();
    say!(
        "load stopped: {} lines written",
        written.iter().sum::<u64>()
    );

    let drain_limit = match opts.drain_secs {
        0.0 => 120.0 + opts.secs * opts.load,
        s => s,
    };
    let drained = drain(&model, &written, Duration::from_secs_f64(drain_limit)).await;
    let drain_s = load_end.elapsed().as_secs_f64();
    let usage: Vec<Usage> = agents.iter().map(Agent::usage).collect();
    let stopped = Instant::now();
    let failed_stops = stop_agents(&mut agents).await;
    say!("agents stopped; reading the stream back");
    let audit = audit::read_back(&model.client).await?;
    let latencies_us = model.tap.latencies_us();
    Ok(Report::new(Inputs {
        settings: opts.settings(seed),
        load: (load_start, load_end),
        stopped,
        offered_bytes: written.iter().sum::<u64>() * opts.line_bytes as u64,
        reshards: &reshards,
        at_load_end: &at_load_end,
        latencies_us: &latencies_us,
        list_shards: &model.tap.list_shards(),
        usage: &usage,
        drained,
        drain_s,
        failed_stops,
        audit: audit.verdict(&written),
    }))
}

/// Starts every agent and waits until each is ready.
async fn start_agents(
    opts: &Options,
    bin: &Path,
    work: &Path,
    model: &Model,
) -> Result<Vec<Agent>, String> {
    let key = opts.partition_key.config_value();
    let mut agents = (0..opts.agents)
        .map(|i| Agent::spawn(bin, work, i, &model.endpoint, key))
        .collect::<Result<Vec<_>, _>>()?;
    for a in &mut agents {
        a.ready().await?;
    }
    say!("{} agents ready", agents.len());
    Ok(agents)
}

/// The load period: a split at a third, a merge at two thirds, progress lines.
async fn load_phase(
    opts: &Options,
    model: &Model,
    writer: &Writer,
    start: Instant,
) -> Result<Vec<Reshard>, String> {
    let run = Duration::from_secs_f64(opts.secs);
    let mut reshards = Vec::new();
    let mut next_progress = progress_interval(opts).map(|p| start + p);
    for (k, at) in [(1u32, run / 3), (2, run * 2 / 3), (3, run)] {
        let due = start + at;
        while Instant::now() < due {
            let wake = next_progress.map_or(due, |p| p.min(due));
            tokio::time::sleep_until(wake.into()).await;
            if let (Some(p), Some(every)) = (next_progress, progress_interval(opts)) {
                if Instant::now() >= p {
                    progress(model, writer, start);
                    next_progress = Some(p + every);
                }
            }
        }
        let reshard = match k {
            1 => model.split(start).await?,
            2 => model.merge(start).await?,
            _ => break,
        };
        say!(
            "{} at {:.1} s, active at {:.1} s: {} open shards",
            reshard.kind,
            reshard.requested_s,
            reshard.active_s,
            reshard.open_shards_after
        );
        reshards.push(reshard);
    }
    Ok(reshards)
}

fn progress_interval(opts: &Options) -> Option<Duration> {
    (opts.progress_secs > 0.0).then(|| Duration::from_secs_f64(opts.progress_secs))
}

fn progress(model: &Model, writer: &Writer, start: Instant) {
    let t = model.tap.totals().sum();
    let written: u64 = writer
        .written
        .iter()
        .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let secs = start.elapsed().as_secs_f64();
    say!(
        "{secs:>6.0} s: {written} lines written, {} placed; accepted {:.2} MiB/s, {} throttled entries",
        model.tap.placed(),
        t.accepted_bytes as f64 / SHARD_BYTES_PER_SEC / secs.max(1.0),
        t.throttled_entries
    );
}

/// Waits until the tap saw every written line accepted in place; false if not
/// within `limit`.
async fn drain(model: &Model, written: &[u64], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let total: u64 = written.iter().sum();
    let mut next_line = Instant::now() + Duration::from_secs(10);
    loop {
        if model.tap.all_placed(written) {
            return true;
        }
        if Instant::now() > deadline {
            say!(
                "drain timed out: {} of {total} lines placed",
                model.tap.placed()
            );
            return false;
        }
        if Instant::now() > next_line {
            say!("draining: {} of {total} lines placed", model.tap.placed());
            next_line += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERMs every agent and waits for them; returns how many did not stop
/// cleanly (or had exited before).
async fn stop_agents(agents: &mut [Agent]) -> usize {
    let early: Vec<bool> = agents.iter_mut().map(|a| a.exited().is_some()).collect();
    for a in agents.iter() {
        a.terminate();
    }
    let mut failed = 0;
    for (a, early) in agents.iter_mut().zip(early) {
        if early {
            say!("agent {} had exited before the end", a.index);
            failed += 1;
        } else if !a.stopped(STOP_LIMIT).await {
            say!("agent {} did not stop cleanly", a.index);
            failed += 1;
        }
    }
    failed
}
