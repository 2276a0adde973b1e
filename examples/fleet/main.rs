//! A fleet of real `shardline` agents sharing one modelled Kinesis stream: how
//! much of the stream's capacity they get, how fairly they share it, how much
//! they are throttled, how many ListShards calls a reshard costs, and that
//! nothing is lost.
//!
//! ```text
//! cargo build --release --bin shardline --example fleet
//! target/release/examples/fleet --agents 32 --shards 4 --secs 300 --load 1.5
//! SHARDLINE_BIN=target/debug/shardline cargo run --example fleet -- --agents 8 --shards 2 --secs 60
//! target/release/examples/fleet --json > fleet.json
//! ```
//!
//! # The model (this process, 127.0.0.1 only)
//!
//! - **Shard write limits**: `ferrokinesis` with `enforce_limits`: each shard
//!   counts its writes in one-second windows, 1 MiB and 1,000 records, and
//!   refuses entries past them with a per-entry
//!   `ProvisionedThroughputExceededException`, as AWS does.
//! - **Latency**: every agent request waits a delay drawn from a lognormal
//!   distribution (`--latency-ms` median, `--latency-p99-ms` 99th percentile).
//! - **ListShards limit**: `--list-shards-tps` calls per one-second window for
//!   the stream (AWS documents 1,000 per second per data stream); past it
//!   `400 LimitExceededException` with `x-amzn-ErrorType`, as AWS answers.
//! - **Reshards under load**: SplitShard of the widest shard at a third of the
//!   run, MergeShards of the narrowest adjacent pair (the split's two children)
//!   at two thirds; with keys spread evenly, the split's children each get half
//!   the load of the others, so while they are open at most 90 % of a 4-shard
//!   stream's capacity can be used (4.5 of 5 MiB/s); the stream is
//!   `UPDATING` for 1 s, then the shards change (the agents learn the new ranges
//!   from ListShards).
//! - Not modelled: the account-wide limits of the control plane
//!   (DescribeStream and the rest), network loss, request signing (any key is
//!   taken; each agent's access key id, `fleet-agent-NN`, only tells them apart).
//!
//! # The fleet
//!
//! `--agents` agent processes (the binary is `--bin`, else `SHARDLINE_BIN`, else
//! `target/release/shardline`), each with its own spool and config, tail one
//! file each with the file source's default `partition_key` (`--partition-key`
//! to change it) and the agent's default pacing. One writer thread appends
//! lines of `--line-bytes` to those files at `--load` times the starting
//! capacity, split evenly; every line carries its agent, its sequence number
//! and its write time. After `--secs` of load the writer stops; once the tap
//! has seen every line accepted inside its shard's range (or after
//! `--drain-secs`) the agents get SIGTERM, and every shard (closed parents too)
//! is read back and audited by content the way a KCL consumer reads it: an
//! aggregate with a record outside its shard's range is dropped whole.
//!
//! # The report
//!
//! Utilisation (accepted bytes over ∫ open shards × 1 MiB/s dt, both over the
//! load period, the drain excluded), throttled entries per accepted entry (load
//! period), Jain's index over per-agent accepted bytes (load period), p50/p99
//! from a line's write to its first accept, ListShards calls per agent and in
//! the 30 s after each reshard, CPU seconds and peak RSS per agent (read just
//! before SIGTERM), lost and duplicated lines. The exit status is 1 if a line
//! was lost or an agent failed to stop cleanly. `fleet.rs` holds the run; this
//! file parses the arguments and prints the report.

#[path = "../common/emulator.rs"]
mod emulator;
#[path = "fleet.rs"]
mod fleet;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The example's arguments: the run's options and where the agent is.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    options: fleet::Options,
    /// The agent binary (default: `SHARDLINE_BIN`, else target/release/shardline).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Keep the work directory (configs, spools, logs, input files).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The model's own client signs with these; nothing may reach for instance
    // metadata. Set before the runtime starts any thread.
    std::env::set_var("AWS_ACCESS_KEY_ID", "fleet-model");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "fleet");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_PROFILE");
    let bin = args
        .bin
        .or_else(|| std::env::var_os("SHARDLINE_BIN").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/release/shardline"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let work = match tempfile::Builder::new()
        .prefix("shardline-fleet-")
        .tempdir()
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("fleet: cannot create a work directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(fleet::run(&args.options, &bin, work.path()));
    let passed = matches!(&result, Ok(r) if r.passed());
    if args.keep || !passed {
        eprintln!("fleet: work directory kept: {}", work.keep().display());
    }
    match result {
        Ok(report) => {
            if args.options.json {
                let json = serde_json::to_string_pretty(&report).expect("the report serialises");
                println!("{json}");
            } else {
                print!("{}", report.table());
                println!("  verdict: {}", if passed { "PASS" } else { "FAIL" });
            }
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("fleet: {e}");
            ExitCode::FAILURE
        }
    }
}
