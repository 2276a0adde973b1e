//! shardline: a host agent that forwards log records to Amazon Kinesis Data Streams
//! and never loses one.
//!
//! # Layout
//!
//! The modules follow the data flow:
//!
//! ```text
//!  source::file ─────┐
//!  source::socket ───┤
//!  source::journald ─┴► producer ─► spool (segments) ─► deliver (dispatcher per stream)
//!                                    ▲                   │ shard_map: hash key → shard
//!                                    │                   │ aggregate: KPL aggregates per shard
//!                                    │                   ▼
//!                                    └── acks ◄── worker pool ── PutRecords ──► Kinesis
//! ```
//!
//! - [`config`]: the TOML file, validated with every problem listed at once.
//! - [`record`]: user records, their limits and their hash keys.
//! - [`source`]: where records come from (`file`, tailed with its read position
//!   in the spool; `socket`; `journald`, with its journal cursor in the spool).
//! - [`producer`]: the handle every source (and an embedding program) writes through.
//! - [`spool`]: the write-ahead spool (CRC-framed segment files, a group commit that
//!   fdatasyncs, sled for the segment catalog); a record leaves it only once Kinesis
//!   took it.
//! - [`shard_map`]: open shards' hash key ranges, from ListShards.
//! - [`aggregate`]: the KPL aggregation format, both ways.
//! - [`deliver`]: dispatchers, PutRecords workers, retries, acks, resharding.
//! - [`metrics`]: Prometheus counters, and the spool's gauges.
//! - [`status`]: the HTTP endpoint (`/metrics`, `/status`) and its client.
//! - [`systemd`]: readiness and watchdog notifications to systemd.
//! - [`descriptors`]: the file descriptor limit, checked against the config at
//!   start-up.
//! - [`agent`]: wires it all together and runs it until shutdown.

pub mod agent;
pub mod aggregate;
pub mod allocator;
pub mod config;
pub mod deliver;
pub mod descriptors;
pub mod metrics;
pub mod producer;
pub mod record;
pub mod shard_map;
pub mod source;
pub mod spool;
pub mod status;
pub mod systemd;

pub use producer::{ProduceError, Producer};
pub use record::UserRecord;
