//! Soak test: the real `shardline` binary, run as a child process, under minutes of
//! mixed load and faults, then a count of every record on the way back.
//!
//! ```text
//! cargo build --release --bin shardline --example soak
//! target/release/examples/soak --minutes 10
//! cargo run --release --example soak -- --minutes 2 --rate 3000 --seed 7
//! target/release/examples/soak --minutes 10 --destination firehose
//! ```
//!
//! - **Kinesis**: a `ferrokinesis` emulator in this process on 127.0.0.1, enforcing
//!   the shard write limits (1 MiB/s, 1000 records/s) like AWS, behind the test
//!   suite's fault layer (`tests/util/faults.rs`).
//! - **Firehose** (`--destination firehose`): instead of Kinesis, the agent's
//!   `[kinesis]` names a `delivery_stream` (records packed up to 64 KiB,
//!   `request_timeout_ms = 5000`) at a PutRecordBatch endpoint in this process,
//!   which stores every line it accepts by its id. Its faults replace the
//!   emulator's: each burst refuses records with `ServiceUnavailableException`
//!   (throttling) and `InternalFailure`, answers HTTP 500s, resets connections,
//!   answers two requests 2 s late and one after the agent's timeout (stored, so
//!   the agent sends it again: duplicates); outages, SIGKILLs and the SIGTERM
//!   follow the same schedule, reshards are left out. Each duplicate is explained
//!   by what happened to the copy before it: answered after the timeout, or
//!   accepted at most 10 s before a SIGKILL or SIGTERM (its acknowledgement did
//!   not reach the spool); any other is reported as unexplained.
//! - **Load** (`--rate` records/s, a third each): `logs/rename.log`, rotated by
//!   rename and create; `logs/copytruncate.log`, rotated by copytruncate (the writer
//!   copies and truncates between two writes, so logrotate's race cannot lose
//!   lines); both about every 30 s. And a framed-protocol client on the agent's
//!   socket asking for acks, one record in eight with an explicit hash key. Every
//!   record's data starts with a unique id: `fr-`, `fc-` or `so-` and a sequence
//!   number.
//! - **Faults**, from a schedule drawn from `--seed`: outages of 20–40 s (every
//!   connection to the endpoint cut), a reshard (UpdateShardCount between 2 and 5
//!   shards) every 1–2 min, SIGKILL of the agent every 1–2 min, one graceful
//!   SIGTERM restart half-way, and bursts of injected throttled entries, HTTP 500s
//!   and connection resets every 20–40 s. The agent's own rate limit is off by
//!   default (`--rate-factor 0`), so the emulator's limits throttle it whenever it
//!   drains a backlog.
//! - **End**: the load stops, the endpoint is restored, and once the agent's spool
//!   has stayed empty for 5 s every shard (closed ones too) is read from
//!   TRIM_HORIZON and the aggregates are taken apart.
//!
//! *Sent* counts a file line once it is written, and a socket record once the
//! agent acknowledged it (durable in the spool). Records of requests that got no
//! answer before a kill are *unconfirmed*: they may or may not arrive. *Lost* is a
//! sent record that never arrived; *duplicated* counts deliveries beyond a record's
//! first. Copies inside an aggregate that holds a record outside its shard's hash
//! key range are dropped whole by a KCL consumer: each sent record must also have
//! a copy it keeps. The exit status is 1 if a record was lost (or has no such copy),
//! if the spool did not drain within `--drain-secs`, or if the agent misbehaved
//! (exited on its own, dropped a record to the dead-letter file, or failed a
//! graceful stop). Progress lines carry the UTC time of day, to match the agent's
//! JSON logs (`--agent-log` sets their `RUST_LOG`).
//!
//! The agent is `SHARDLINE_BIN` if set, else the `shardline` binary beside the
//! `examples` directory this program was built into; under `cargo run` it is built
//! first with the same profile. The work directory (spool, logs, the agent's JSON
//! logs) is removed after a passing run, unless `--keep`.
//!
//! # Layout
//!
//! `main` (this file) parses the arguments, sets up the emulator, the config and
//! the first agent, and runs the phases in order: load and faults, drain, read
//! back, last stop, report. Each part owns its state and is called from here:
//!
//! - `progress`: the clock of the load and the `say!` progress lines (everyone).
//! - `destination`: the Kinesis emulator or the Firehose endpoint, whichever runs.
//! - `kinesis`: the emulator behind the fault layer and the soak's stream.
//! - `firehose`: the Firehose endpoint, its faults and what it accepted.
//! - `process`: how the agent is started, and one running agent process.
//! - `record`: where a record came from, its id and its data.
//! - `shared`: the counters the parts share while the run lasts.
//! - `load`: the file writers and the socket client, from start to stop.
//! - `observe`: scrapes of the agent's metrics and the progress line.
//! - `chaos`: the fault schedule and its application.
//! - `drain`: waiting for the spool to empty once the load stopped.
//! - `tally`: the stream read back, copies counted per record.
//! - `report`: the end report and the verdict.

#[path = "../common/mod.rs"]
mod common;

#[path = "../../tests/util/faults.rs"]
mod faults;

mod chaos;
mod destination;
mod drain;
mod firehose;
mod kinesis;
mod load;
mod observe;
mod process;
mod progress;
mod record;
mod report;
mod shared;
mod tally;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::chaos::{schedule, Chaos, Fault};
use crate::destination::{Destination, DestinationKind};
use crate::drain::drain;
use crate::load::Load;
use crate::observe::{observe, scrape};
use crate::process::{AgentCommand, STOP_LIMIT};
use crate::report::{report, Report};
use crate::shared::Shared;

#[derive(Parser)]
#[command(about = "Soak test of the shardline agent against a faulty Kinesis emulator")]
struct Args {
    /// Where the agent delivers: the Kinesis emulator or a Firehose endpoint.
    #[arg(long, value_enum, default_value_t = DestinationKind::Kinesis)]
    destination: DestinationKind,
    /// Length of the load phase, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Records per second, all sources together (a third each).
    #[arg(long, default_value_t = 3000)]
    rate: u32,
    /// Bytes of each record's data.
    #[arg(long, default_value_t = 120)]
    record_bytes: usize,
    /// The agent's `delivery.rate_limit_percent` as a fraction (0.8 is 80 %); 0 turns its own rate limit off.
    #[arg(long, default_value_t = 0.0)]
    rate_factor: f64,
    /// Seed of the fault schedule (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Longest wait for the spool to empty once the load stopped, in seconds.
    #[arg(long, default_value_t = 300)]
    drain_secs: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 15)]
    progress_secs: u64,
    /// `RUST_LOG` of the agent.
    #[arg(long, default_value = "info")]
    agent_log: String,
    /// Keep the work directory even when the run passes.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The emulator takes any credentials; never reach for instance metadata. Set
    // before the runtime starts any thread.
    std::env::set_var("AWS_ACCESS_KEY_ID", "soak");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "soak");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_PROFILE");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(soak(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the soak in a new work directory, kept unless the run passed.
async fn soak(args: Args) -> Result<bool, String> {
    let bin = common::agent_binary()?;
    let work = tempfile::Builder::new()
        .prefix("shardline-soak-")
        .tempdir()
        .map_err(|e| format!("cannot create a work directory: {e}"))?;
    let keep = args.keep;
    let result = soak_in(args, &bin, work.path()).await;
    if matches!(result, Ok(true)) && !keep {
        drop(work);
    } else {
        println!("soak: work directory kept: {}", work.keep().display());
    }
    result
}

async fn soak_in(args: Args, bin: &Path, work: &Path) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let run = Duration::from_secs_f64(args.minutes * 60.0);
    let mut rng = fastrand::Rng::with_seed(seed);
    let destination = Destination::start(args.destination).await?;
    let plan = destination.plan(schedule(run, &mut rng));

    let logs = work.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {logs:?}: {e}"))?;
    let socket = work.join("ingest.sock");
    let config = write_config(&args, &destination, work, &socket, &logs)?;
    print_header(&args, seed, bin, &destination, work, &plan);

    let state = Arc::new(Shared::default());
    let command = AgentCommand {
        bin: bin.to_owned(),
        config,
        work: work.to_owned(),
        log_filter: args.agent_log.clone(),
    };
    let mut agent = command.spawn(0)?;
    let addr = agent.ready().await?;
    *state.agent.lock().expect("not poisoned") = Some((0, addr));

    // The load and the faults.
    let started = progress::start_clock();
    let load = Load::start(
        &logs,
        &socket,
        args.rate,
        args.record_bytes,
        &state,
        &mut rng,
    );
    let observer = tokio::spawn(observe(
        state.clone(),
        Duration::from_secs(args.progress_secs),
    ));
    let mut chaos = Chaos::new(&destination, &state, &command, rng);
    let mut agent = chaos.run(plan, started, started + run, agent).await?;

    // The end: stop the load, restore the endpoint, drain.
    load.stop().await?;
    destination.restore();
    let load_stopped = std::time::Instant::now();
    let drain_limit = Duration::from_secs(args.drain_secs);
    let drained = drain(&mut agent, &state, drain_limit, work).await?;
    let drain_time = load_stopped.elapsed();
    observer.abort();
    scrape(&state).await;
    let (tally, records, duplicate_causes) = destination.read_back(&state, drained).await?;

    // A last graceful stop, which must succeed.
    agent.signal("TERM")?;
    let final_exit = agent.wait_exit(STOP_LIMIT).await;
    *state.agent.lock().expect("not poisoned") = None;

    Ok(report(&Report {
        state: &state,
        tally: &tally,
        records,
        records_name: destination.records_name(),
        duplicate_causes,
        drained,
        drain_time,
        final_exit,
        work,
    }))
}

/// Writes the agent's config into `work`: the destination's stream, a frames
/// socket and the log files; returns its path.
fn write_config(
    args: &Args,
    destination: &Destination,
    work: &Path,
    socket: &Path,
    logs: &Path,
) -> Result<PathBuf, String> {
    let config = work.join("shardline.toml");
    std::fs::write(
        &config,
        format!(
            "[kinesis]\n{}region = \"us-east-1\"\nendpoint = \"{}\"\n\
             [delivery]\nrate_limit_percent = {}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\n[[socket]]\npath = \"{}\"\nframing = \"frames\"\n\
             [[file]]\ninclude = [\"{}/*.log\"]\n",
            destination.config_lines(),
            destination.endpoint(),
            args.rate_factor * 100.0,
            work.join("spool").display(),
            socket.display(),
            logs.display()
        ),
    )
    .map_err(|e| format!("cannot write the config: {e}"))?;
    Ok(config)
}

/// The run's settings and its fault schedule.
fn print_header(
    args: &Args,
    seed: u64,
    bin: &Path,
    destination: &Destination,
    work: &Path,
    plan: &[(Duration, Fault)],
) {
    println!(
        "soak: {:.1} min, {} records/s of {} bytes, seed {seed}, agent {}",
        args.minutes,
        args.rate,
        args.record_bytes,
        bin.display()
    );
    println!(
        "soak: {} at {}, work directory {}",
        match destination {
            Destination::Kinesis { .. } => "Kinesis emulator",
            Destination::Firehose(_) => "Firehose endpoint",
        },
        destination.endpoint(),
        work.display()
    );
    println!("soak: fault schedule:");
    for (at, fault) in plan {
        println!("  {:>5.0}s  {fault:?}", at.as_secs_f64());
    }
}
