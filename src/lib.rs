//! shardline: a host agent that forwards log records to Amazon Kinesis Data Streams
//! and never loses one.
//!
//! # Embedding
//!
//! A Rust program sends records through a [`Producer`] (see [`producer`] for an
//! example): [`Producer::start`] with [`ProducerOptions`], `put` a [`UserRecord`],
//! await its [`Receipt`]; refused records come back as [`Failure`]s. The whole agent
//! (sources included) runs with [`agent::run`] on a [`Config`] from
//! [`config::load`]. Those items, and the option types they take, are re-exported
//! here. The documented modules are `agent`, `config`, `producer`, `record`,
//! `aggregate` (KPL aggregates, both ways), `metrics` and `status` (the endpoint's
//! client). Everything else is private to the crate; what the agent's own tests,
//! benches and examples drive directly is re-exported in [`testkit`], which is
//! not a stable interface.
//!
//! # Layout
//!
//! The modules follow the data flow; the spool write happens at intake, before a
//! record is handed to delivery:
//!
//! ```text
//!  source::file ─────┐                 intake ──(hand-over in memory, or spilled
//!  source::socket ───┼─► producer ──► │  and read back)──► deliver: one dispatcher
//!  source::journald ─┤                ▼                     per stream
//!  (embedder) ───────┘              spool (segments,         │ router: shard_map +
//!                                    checkpoints, acks)      │   aggregate per shard
//!                                     ▲                      │ pacing, ledger
//!                                     │                      ▼
//!                                     └──── acks ◄── workers ── PutRecords ──► Kinesis
//! ```
//!
//! - [`config`]: the TOML file, validated with every problem listed at once;
//!   `config::import` writes one from the Amazon Kinesis Agent's `agent.json`.
//! - [`record`]: user records, their limits and their hash keys.
//! - `source`: where records come from (`file`, tailed with its read position
//!   in the spool; `socket`; `journald`, with its journal cursor in the spool;
//!   `format`, the raw or json record a line becomes; `parse`, the presets,
//!   patterns and CSV readers that make a line the keys of a json record, and
//!   `shardline parse`).
//! - [`producer`]: the handle every source (and an embedding program) writes through.
//! - `intake`: the only door to the spool: the spool write and the
//!   hand-over-or-spill decision per stream, the checkpoint type sources speak,
//!   the durability wait of acked sockets, and the read-only `Backlog` that
//!   metrics, status, pacing and the watchdog read.
//! - `spool`: the write-ahead spool (CRC-framed segment files, a group commit that
//!   fdatasyncs, sled for the segment catalog); a record leaves it only once Kinesis
//!   took it.
//! - `shard_map`: open shards' hash key ranges, from ListShards.
//! - [`aggregate`]: the KPL aggregation format, both ways.
//! - `digest`: MD5 of many messages at once (a request's aggregates, a batch's
//!   partition keys), sixteen per vector register with AVX-512, eight with AVX2.
//! - `deliver`: dispatchers, PutRecords workers, retries, acks, resharding, and
//!   each stream's destination (region, endpoint, credentials, assumed role).
//! - [`metrics`]: Prometheus counters, and the spool's gauges.
//! - [`status`]: the HTTP endpoint (`/metrics`, `/status`, `/files`: each
//!   tailed file's read and delivered positions) and its client.
//! - `systemd`: readiness and watchdog notifications to systemd.
//! - `descriptors`: the file descriptor limit, checked against the config at
//!   start-up.
//! - [`agent`]: wires it all together and runs it until shutdown.
//! - [`testkit`]: the internals the agent's own tests, benches and examples
//!   drive; unstable.
//!
//! Who may import whom is held by tests (`tests/layout.rs`: sources never
//! name the spool or delivery, the spool names no stage above it, metrics and
//! status read the spool only through the backlog; `tests/cycles.rs`: no two
//! files import each other in a circle).

#![warn(unreachable_pub)]

pub mod agent;
pub mod aggregate;
mod allocator;
pub mod config;
mod deliver;
mod descriptors;
mod digest;
mod intake;
pub mod metrics;
pub mod producer;
pub mod record;
mod shard_map;
mod source;
mod spool;
pub mod status;
mod systemd;
pub mod testkit;

pub use agent::Agent;
pub use config::{Config, ConfigError};
pub use deliver::destination::{AssumeRole, Destination};
pub use deliver::firehose::Packing;
pub use deliver::kinesis::ClientOptions;
pub use deliver::proxy::ProxySetting;
pub use deliver::{DeliveryOptions, Failure, StreamDelivery};
pub use intake::redrive::{redrive, RedriveError, RedriveReport};
pub use intake::{DeliveryError, DeliveryResult};
pub use producer::{LifecycleError, ProduceError, Producer, ProducerOptions, Receipt};
pub use record::UserRecord;
pub use source::parse::try_it::{presets_table, try_lines, TryReport};
pub use source::socket::client::{send_lines, ClientError, SendReport};
pub use spool::survey::{
    check as check_spool, export as export_spool, inspect as inspect_spool, inspect_table,
    CheckReport, Exported, Finding, FindingKind, HeldCheckpoint, StreamSummary, SurveyError,
};
pub use spool::SpoolOptions;
