//! End-to-end benchmark: the real agent takes generated log lines from a source and
//! delivers them to a PutRecords endpoint in another process, and this program
//! reports lines/s, MiB/s, CPU seconds per GiB, peak RSS, spool bytes on disk and the
//! time until the spool is empty. The agent runs in this process and everything else
//! (the endpoint, the socket client) in child processes, so the CPU and memory
//! figures are the agent's alone.
//!
//! ```text
//! cargo run --release --example e2e -- [OPTIONS] [LINES] [LINE_BYTES] [SHARDS]
//! cargo run --release --example e2e -- 4000000 256 4     # 1 GiB of 256-byte lines
//! cargo run --release --example e2e -- 1000000 1024 4    # the 1 KiB variant
//! cargo run --release --example e2e -- --source socket --connections 4
//! cargo run --release --example e2e -- --endpoint emulator
//! cargo run --release --example e2e -- --destination firehose 2000000 256 4
//! cargo run --release --example e2e -- --backlog [--crash]
//! E2E_DELIVERY="max_inflight_bytes = 8388608" cargo run --release --example e2e
//! E2E_FORMAT=json cargo run --release --example e2e -- 2000000 256 4
//! E2E_PARSE=apache_combined cargo run --release --example e2e -- 2000000 200 4
//! E2E_LINES=apache E2E_FORMAT=json cargo run --release --example e2e -- 2000000 200 4
//! ```
//!
//! `LINES` lines (default 2,000,000; 10,000,000 with `--backlog`) of `LINE_BYTES`
//! bytes (default 256, the newline included; each line starts with its number) go
//! to a stream of `SHARDS` shards (default 4).
//!
//! # Sources (`--source`)
//!
//! - `file` (default): the lines are written to a file before the agent starts; the
//!   agent tails it (`[[file]]`, `read_from = "beginning"`).
//! - `socket`: the agent listens on a Unix stream socket in `lines` framing (one
//!   record per newline-delimited line, random partition keys, no answers), and a
//!   child process started after the agent sends the lines over `--connections`
//!   connections (default 1), each a contiguous share of them, as fast as the agent
//!   reads. Lines framing is what most log shippers speak; acked frames are measured
//!   by `benches/socket.rs`.
//!
//! `E2E_FORMAT` sets the source's record `format`: `raw` (default) or `json` (each
//! line wrapped in an object with `message`, `timestamp`, `host` and `source`). CPU
//! per GiB counts the line bytes either way, so the two compare directly.
//!
//! `E2E_PARSE` names a preset (`apache_combined`) and gives the source a parse
//! table with it: `[file.parse]` (or `[socket.parse]`) with `preset` and
//! `time_key = "time"`; the records are json (`E2E_FORMAT` does not apply). The
//! lines are then Apache combined access lines of exactly `LINE_BYTES` bytes
//! (160 at least; 200 is typical): client address, user, method, path, status,
//! size, referer and user agent varied per line, the line's number in the path
//! (every line is unique), a query string padding the line to its length.
//! `E2E_LINES=apache` makes the same lines without a parse table, to compare
//! with `E2E_FORMAT=json` and raw.
//!
//! `E2E_SOURCE` adds lines to the source block (`record_id = true`); with
//! `E2E_DELIVERY='compression = "zstd"'` (and `compression_pack_bytes`) the
//! Kinesis records are compressed.
//!
//! # Endpoints (`--endpoint`)
//!
//! - `ack` (default): a minimal PutRecords endpoint that parses each request (JSON)
//!   and accepts every entry, and answers ListShards with `SHARDS` even ranges: the
//!   agent's own ceiling.
//! - `emulator`: the `ferrokinesis` Kinesis emulator (in memory, no shard limits
//!   enforced) with a stream of `SHARDS` shards created before the agent starts.
//!
//! - with `--destination firehose`: the agent's `[kinesis]` names a
//!   `delivery_stream` (default packing; `E2E_PACKING` adds packing keys) and the
//!   endpoint is a minimal PutRecordBatch endpoint (JSON 1.1) that parses each
//!   request, base64-decodes every record, counts its lines (newlines) and
//!   accepts every record, one `RecordId` each. `SHARDS` does not apply. The
//!   run ends when the endpoint has counted every line; the report adds the
//!   Firehose records it received and the lines per record.
//!
//! Each runs in a child process (this program again), so its CPU is not counted.
//! The per-shard rate limit of the agent is off (`rate_limit_percent = 0`): neither
//! endpoint has shard limits.
//!
//! # Report
//!
//! The clock starts just before `Agent::start` and *delivered in* stops when the
//! agent has counted every line delivered (accepted by the endpoint); *spool empty
//! at* when the spool holds no record any more. CPU is this process's user + system
//! time from `Agent::start` to the stop, per GiB of line bytes; peak RSS is this
//! process's high-water mark (the file is written through an 8 KiB buffer before
//! the start); RSS samples are taken every 100 ms while lines are delivered; *spool
//! on disk* is the largest apparent size of the spool directory seen in those
//! samples; *first PutRecords* is when the endpoint received the first one.
//!
//! When the count of delivered lines (or, in phase 2 below, of records held) has
//! not moved for 60 s, the agent is taken for hung: every thread's backtrace is
//! printed (with gdb, when installed) and the program exits with status 3.
//!
//! # Backlog recovery (`--backlog`)
//!
//! File source and ack endpoint only. Phase 1: the real `shardline` binary (a child
//! process: `SHARDLINE_BIN`, or the one beside the `examples` directory this program
//! was built into; under `cargo run` it is built first with the same profile) tails
//! the file with its Kinesis endpoint down (a loopback port bound and closed again,
//! so connections are refused) until its spool holds every line (read from its
//! metrics endpoint), then holds them for `--hold-secs` (default 5). Reported: the
//! spool on disk (apparent and allocated bytes) vs the line bytes and vs the spool's
//! own count of entry bytes, RSS samples while filling and while holding, the fill
//! rate. The child is then stopped with SIGTERM (a clean stop: it seals its open
//! segment), or with `--crash` SIGKILLed (the next open scans the segment that was
//! open; the others are read from their footers). Phase 2: the ack
//! endpoint starts, the agent starts again in this process on the same spool and
//! file; reported: the time from `Agent::start` to its return (and the RSS then)
//! and to the first PutRecords the endpoint received, the drain rate (records/s and
//! MiB/s from the first PutRecords until the spool is empty), RSS samples while
//! draining, CPU per GiB and the time until the spool is empty.
//!
//! # Layout
//!
//! `main` (this file) picks the role: a child role (the endpoint, the emulator,
//! the socket client) or the benchmark itself, `deliver` or `backlog`. The parts:
//!
//! - `cli`: the command line.
//! - `config`: the agent's config and the stream's name.
//! - `lines`: the generated lines, written to a file or sent over the socket.
//! - `endpoint`: the endpoint child process, both its handle and its side.
//! - `firehose`: the Firehose ack endpoint, the child's side.
//! - `measure`: sampling periods, the hang watch, memory figures.
//! - `child`: the phase 1 agent process of `--backlog`.
//! - `deliver`: the default run and its report.
//! - `backlog`: `--backlog`, its two phases and their reports.

#[path = "../common/mod.rs"]
mod common;

mod backlog;
mod child;
mod cli;
mod config;
mod deliver;
mod endpoint;
mod firehose;
mod lines;
mod measure;

use std::path::Path;

use clap::Parser;

use crate::cli::{Args, DestinationKind, EndpointKind, SourceKind};
use crate::endpoint::{exit_with_parent, serve_emulator, serve_endpoint};
use crate::firehose::serve_firehose;
use crate::lines::send_lines;

fn main() {
    // The allocator settings the binary's `main` applies.
    shardline::agent::tune_allocator();
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    // The child processes: this program again, in another role.
    let raw: Vec<String> = std::env::args().collect();
    match raw.get(1).map(String::as_str) {
        Some("--serve-endpoint") => {
            exit_with_parent();
            return serve_endpoint(raw[2].parse().expect("shard count"));
        }
        Some("--serve-emulator") => {
            exit_with_parent();
            return serve_emulator(raw[2].parse().expect("shard count"));
        }
        Some("--serve-firehose") => {
            exit_with_parent();
            return serve_firehose();
        }
        Some("--send-lines") => {
            return send_lines(
                Path::new(&raw[2]),
                raw[3].parse().expect("line count"),
                raw[4].parse().expect("line size"),
                raw[5].parse().expect("connection count"),
            )
        }
        _ => {}
    }
    let args = Args::parse();
    if args.line_bytes < 16 {
        eprintln!("e2e: LINE_BYTES must be at least 16 (a line starts with its number)");
        std::process::exit(2);
    }
    if args.backlog && (args.source != SourceKind::File || args.endpoint != EndpointKind::Ack) {
        eprintln!("e2e: --backlog runs with the file source and the ack endpoint only");
        std::process::exit(2);
    }
    if args.destination == DestinationKind::Firehose && args.endpoint != EndpointKind::Ack {
        eprintln!("e2e: --destination firehose runs with the ack endpoint only");
        std::process::exit(2);
    }
    if args.backlog {
        backlog::run(&args);
    } else {
        deliver::run(&args);
    }
}
