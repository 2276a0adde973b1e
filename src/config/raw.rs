//! The configuration file as written: what serde reads, with the defaults.

use std::path::PathBuf;

use serde::Deserialize;

use super::journald::RawJournald;
use super::MAX_FILE_RECORD_BYTES;
use crate::deliver::MAX_BATCH_RECORDS;
use crate::record::MAX_RECORD_BYTES;

mod streams;

pub(crate) use streams::{RawDelivery, RawDestination, RawKinesis};

/// The file as written. Every key of every section is listed, with its type,
/// default and meaning, in docs/configuration.md; `reference.rs` holds that page
/// and `config/shardline.toml` to these types.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Where records go.
    pub kinesis: Option<RawKinesis>,
    /// Streams written in another region or account, or as another role.
    #[serde(default)]
    pub destination: Vec<RawDestination>,
    /// How records are batched and sent.
    #[serde(default)]
    pub delivery: RawDelivery,
    /// The write-ahead spool.
    pub spool: Option<RawSpool>,
    /// Unix socket sources.
    #[serde(default)]
    pub socket: Vec<RawSocket>,
    /// Tailed files.
    #[serde(default)]
    pub file: Vec<RawFile>,
    /// Journal readers (`journald.rs` beside this file documents the keys).
    #[serde(default)]
    pub journald: Vec<RawJournald>,
    /// The HTTP endpoint for metrics and status.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Memory the sources may hold of their clients' input.
    #[serde(default)]
    pub ingest: RawIngest,
    /// Longest graceful shutdown: sources stop, partial aggregates are flushed and
    /// in-flight requests may finish for this long; what is left stays spooled.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Directory of config snippets (`*.toml`, merged in name order); relative
    /// to the config file's directory. Default: `conf.d` beside the config file.
    /// Only the main file may set it.
    pub include_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpool {
    /// Directory of the spool (created if missing, mode 0700).
    pub dir: Option<PathBuf>,
    /// Most bytes of segment files the spool holds; when full, sources wait.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Group commit interval: the spool is fdatasynced at least this often (and at
    /// once when a socket client waits for a durability ack).
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Memory for the page cache of the spool's index (sled).
    #[serde(default = "default_cache_capacity_bytes")]
    pub cache_capacity_bytes: u64,
    /// Size at which a segment file is sealed and the next one started (at most
    /// an eighth of `max_bytes`).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Free space left on the spool's filesystem: below it the spool counts as
    /// full (sources wait), so the spool never takes the host's last bytes.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSocket {
    /// Path of the Unix socket.
    pub path: Option<PathBuf>,
    /// `stream` (connections) or `datagram` (one datagram = one record).
    #[serde(default)]
    pub mode: SocketMode,
    /// For stream sockets: `lines` (newline-delimited records) or `frames` (the
    /// length-prefixed protocol with per-record keys and acks, see docs/protocol.md).
    #[serde(default)]
    pub framing: Framing,
    /// Destination Kinesis data stream (default: `[kinesis]`'s destination).
    pub stream: Option<String>,
    /// Destination Firehose stream, instead of a Kinesis `stream`.
    pub delivery_stream: Option<String>,
    /// With `framing = "frames"`: further Kinesis streams (names or ARNs) a
    /// client may name in a request's `stream`; a request without one goes to
    /// the socket's own stream.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Largest record (line or datagram) accepted, in bytes; a longer one is
    /// refused with an error and counted (`oversized = "reject"`). Default
    /// 1048560, a 1 MiB record less the partition key; at most 10485744, for a
    /// stream raised to 10 MiB records. Formerly `max_line_bytes`.
    #[serde(default = "default_max_line_bytes", alias = "max_line_bytes")]
    pub max_record_bytes: usize,
    /// What happens to a longer line or datagram: `"reject"` (refused, the client
    /// told, counted), the only policy of a socket (a client's record is never cut
    /// behind its back).
    pub oversized: Option<String>,
    /// Partition key of each line or datagram: `"random"` (16 hex digits per
    /// record, also written `"random_per_record"`); a framed client sends its
    /// own.
    pub partition_key: Option<RawPartitionKey>,
    /// Permissions of the socket file: 3 or 4 octal digits (`"0660"`).
    #[serde(default = "default_file_mode")]
    pub file_mode: String,
    /// Owner of the socket file (user name or uid); default: the agent's user.
    pub owner: Option<String>,
    /// Group of the socket file (group name or gid); default: the agent's group.
    pub group: Option<String>,
    /// Only peers with one of these uids may connect (stream sockets; checked with
    /// SO_PEERCRED). Empty with `allow_gids` empty: anyone who can open the file.
    #[serde(default)]
    pub allow_uids: Vec<u32>,
    /// Only peers in one of these groups, primary or supplementary, may connect
    /// (stream sockets; checked with SO_PEERGROUPS).
    #[serde(default)]
    pub allow_gids: Vec<u32>,
    /// Most simultaneous connections; further clients wait in the accept queue.
    #[serde(default = "default_socket_max_connections")]
    pub max_connections: usize,
    /// Most simultaneous connections of one peer uid (stream sockets), so that one
    /// user cannot hold every slot; a further one is closed at once, logged and
    /// counted.
    #[serde(default = "default_max_connections_per_uid")]
    pub max_connections_per_uid: usize,
    /// A connection that sends nothing for this long is closed (stream sockets;
    /// what it sent is kept), so idle clients do not hold slots and descriptors.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// When the spool is full: `wait` (stop reading: clients feel backpressure) or
    /// `refuse` (answer `SPOOL_FULL`; frames only, lines and datagrams always wait).
    #[serde(default)]
    pub on_full: OnFull,
    /// Record format: `"raw"` (the line as it is) or `"json"` (an object with the
    /// line as `message` plus `timestamp`, `host` and `source`; see docs/sources.md).
    #[serde(default)]
    pub format: FormatName,
    /// With `format = "json"`: static string fields added to every record as
    /// top-level keys (`fields = { env = "prod" }`); not `message`, `timestamp`,
    /// `host` or `source`.
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
    /// With `format = "json"`: a line that already is a JSON object gets the keys
    /// added to it (keys the line has win) instead of being nested as `message`;
    /// a line that is not one is wrapped as usual.
    /// An id per record, the same in every copy of it (see the README, "What
    /// consumers see"): under `record_id_key` in json records, before the
    /// line and a space in raw ones.
    #[serde(default)]
    pub record_id: bool,
    /// The key of the record id in json records.
    #[serde(default = "super::default_record_id_key")]
    pub record_id_key: String,
    #[serde(default)]
    pub json_merge: bool,
    /// With `format = "json"`: add the EC2 instance's `instance_id`, `region` and
    /// `az`, read once at start from the instance metadata service (IMDSv2).
    #[serde(default)]
    pub ec2_identity: bool,
    /// With `format = "json"` (or a `parse` table): new names for top-level keys
    /// of the record, added or parsed (`{ timestamp = "@timestamp", message =
    /// "log" }`); a key renamed to `""` is left out.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// With `format = "json"`: how `timestamp` is written: `rfc3339` (UTC,
    /// milliseconds), `epoch_s`, `epoch_ms`, `epoch_us` (numbers) or a strftime
    /// format (UTC). None: `rfc3339`.
    pub timestamp_format: Option<String>,
    /// Reads each line into the keys of a json record (implies `format =
    /// "json"`); see docs/parsing.md.
    pub parse: Option<super::parse::RawParse>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketMode {
    #[default]
    Stream,
    Datagram,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    #[default]
    Lines,
    Frames,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    #[default]
    Wait,
    Refuse,
}

pub(super) fn default_file_mode() -> String {
    "0660".into()
}
pub(super) fn default_socket_max_connections() -> usize {
    1024
}
/// A quarter of the default `max_connections`: a few busy users fit, one cannot
/// take them all.
pub(super) fn default_max_connections_per_uid() -> usize {
    256
}
/// Five minutes: far longer than a live client's pause between writes.
pub(super) fn default_idle_timeout_secs() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    /// Glob patterns of the files to tail, absolute paths. `*`, `?` and `[...]` do
    /// not cross `/`; `**` does. Each names a directory before its first wildcard
    /// (`/**` would walk the whole filesystem), outside /proc, /sys and /dev.
    /// Required.
    #[serde(default)]
    pub include: Vec<String>,
    /// Glob patterns of files never tailed, even when included.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Destination Kinesis data stream (default: `[kinesis]`'s destination).
    pub stream: Option<String>,
    /// Destination Firehose stream, instead of a Kinesis `stream`.
    pub delivery_stream: Option<String>,
    /// Where to start in a file that has no checkpoint and is already there when the
    /// agent starts: `"beginning"` or `"end"`. A file that appears later is always
    /// read from its beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Partition key of each record: `"random_per_batch"` (16 hex digits per
    /// batch of lines read together, up to 64 KiB; formerly `"random"`),
    /// `"random_per_record"`, `"line_hash"` (a hash of the record, so equal
    /// lines go to one shard), `"file_path"` (every line of a file to one shard),
    /// or `{ field = "name" }` (the top-level field of a JSON line; random when
    /// the field is missing; formerly `json_field`).
    #[serde(default)]
    pub partition_key: RawPartitionKey,
    /// Regular expression that matches the first line of a record; a line that does
    /// not match is appended (after a `\n`) to the record before it. None: every
    /// line is a record.
    pub multiline_start: Option<String>,
    /// A multiline record is sent once no line was added to it for this long.
    #[serde(default = "default_multiline_timeout_ms")]
    pub multiline_timeout_ms: u64,
    /// Largest record (line), in bytes. Default 1048320: the 1 MiB record limit
    /// less the longest partition key this source makes (256 bytes); at most
    /// 10485504, for a stream raised to 10 MiB records.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// What happens to a longer line: `"split"` (into records of
    /// `max_record_bytes`) or `"truncate"` (its first `max_record_bytes` are sent,
    /// the rest dropped). Either way it is logged and counted.
    #[serde(default)]
    pub oversized: Oversized,
    /// What happens to a line that is not valid UTF-8: `"pass"` (sent as it is),
    /// `"replace"` (invalid bytes become U+FFFD) or `"reject"` (not sent). Either way
    /// it is logged and counted.
    #[serde(default)]
    pub invalid_utf8: InvalidUtf8,
    /// Files not modified for this long are not opened (until they are modified).
    /// None: no age limit.
    pub ignore_older_secs: Option<u64>,
    /// How often the include globs are walked again and every open file is checked
    /// for rotation and new data, besides the inotify events (the fallback when
    /// events are missed, as on network filesystems).
    #[serde(default = "default_rescan_interval_ms")]
    pub rescan_interval_ms: u64,
    /// A rotated or deleted file is read until it has not grown for this long, then
    /// closed (a writer may still append to its old handle for a while).
    #[serde(default = "default_rotate_wait_ms")]
    pub rotate_wait_ms: u64,
    /// Whether a symbolic link the patterns match is followed. Off: links are
    /// skipped (logged once). On: a link is followed only to a regular file that
    /// the block's patterns also match, never into /proc, /sys or /dev.
    #[serde(default)]
    pub follow_symlinks: bool,
    /// Delete each file once it is read to its end, every line read from it has
    /// been delivered (or refused for good and dead-lettered) and it was not
    /// written for `rotate_wait_ms`: for one-shot files dropped in a directory,
    /// never for a log that a program keeps writing (see docs/operations.md for
    /// the rules that keep it safe).
    #[serde(default)]
    pub delete_after_delivered: bool,
    /// Record format: `"raw"` (the line as it is) or `"json"` (an object with the
    /// line as `message` plus `timestamp`, `host` and `source`; see docs/sources.md).
    #[serde(default)]
    pub format: FormatName,
    /// With `format = "json"`: static string fields added to every record as
    /// top-level keys (`fields = { env = "prod" }`); not `message`, `timestamp`,
    /// `host` or `source`.
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
    /// With `format = "json"`: a line that already is a JSON object gets the keys
    /// added to it (keys the line has win) instead of being nested as `message`;
    /// a line that is not one is wrapped as usual.
    /// An id per record, the same in every copy of it (see the README, "What
    /// consumers see"): under `record_id_key` in json records, before the
    /// line and a space in raw ones.
    #[serde(default)]
    pub record_id: bool,
    /// The key of the record id in json records.
    #[serde(default = "super::default_record_id_key")]
    pub record_id_key: String,
    #[serde(default)]
    pub json_merge: bool,
    /// With `format = "json"`: add the EC2 instance's `instance_id`, `region` and
    /// `az`, read once at start from the instance metadata service (IMDSv2).
    #[serde(default)]
    pub ec2_identity: bool,
    /// With `format = "json"` (or a `parse` table): new names for top-level keys
    /// of the record, added or parsed (`{ timestamp = "@timestamp", message =
    /// "log" }`); a key renamed to `""` is left out.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// With `format = "json"`: how `timestamp` is written: `rfc3339` (UTC,
    /// milliseconds), `epoch_s`, `epoch_ms`, `epoch_us` (numbers) or a strftime
    /// format (UTC). None: `rfc3339`.
    pub timestamp_format: Option<String>,
    /// Reads each line into the keys of a json record (implies `format =
    /// "json"`); see docs/parsing.md.
    pub parse: Option<super::parse::RawParse>,
}

/// `format` as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FormatName {
    #[default]
    Raw,
    Json,
}

/// How a line becomes a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RecordFormat {
    /// The line as it is.
    #[default]
    Raw,
    Json(JsonFormat),
}

/// The `json` format's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonFormat {
    /// Static fields, in key order.
    pub fields: Vec<(String, String)>,
    /// Merge a JSON object line instead of nesting it.
    pub merge: bool,
    /// Add the EC2 instance identity.
    pub ec2_identity: bool,
    /// Keys renamed (to `""`: left out), in key order.
    pub rename: Vec<(String, String)>,
    /// How `timestamp` is written.
    pub timestamp_format: super::parse::TimeFormat,
    /// The line's parser, if any.
    pub parse: Option<std::sync::Arc<super::parse::ParseConfig>>,
    /// The key of the record id (`record_id = true`); `None`: no id.
    pub id_key: Option<String>,
}

/// Where to start in a file found at start-up without a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// What to do with a line longer than `max_record_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversized {
    #[default]
    Split,
    Truncate,
}

/// What to do with a line that is not valid UTF-8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidUtf8 {
    #[default]
    Pass,
    Replace,
    Reject,
}

/// `partition_key` as written: a name, or `{ field = "..." }`. Anything else
/// is kept as written, so that `validate` can name it among the other problems.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPartitionKey {
    Named(KeyName),
    Field(RawJsonField),
    Unknown(toml::Value),
}

impl Default for RawPartitionKey {
    fn default() -> Self {
        RawPartitionKey::Named(KeyName::RandomPerBatch)
    }
}

/// The partition keys a file or socket block can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeyName {
    /// 16 random hex digits: per batch in files (deprecated there), per record
    /// elsewhere.
    Random,
    /// 16 random hex digits per batch of lines read together.
    RandomPerBatch,
    /// 16 random hex digits per record.
    RandomPerRecord,
    /// A hash of the line.
    LineHash,
    /// The file's path.
    FilePath,
}

impl KeyName {
    /// Every name, as written in the config.
    pub(crate) const ALL: [(&'static str, KeyName); 5] = [
        ("random", KeyName::Random),
        ("random_per_batch", KeyName::RandomPerBatch),
        ("random_per_record", KeyName::RandomPerRecord),
        ("line_hash", KeyName::LineHash),
        ("file_path", KeyName::FilePath),
    ];
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJsonField {
    /// Name of the top-level field of a JSON line (of a journal entry, in
    /// `[[journald]]`) whose value is the partition key; formerly `json_field`.
    #[serde(alias = "json_field")]
    pub field: String,
}

/// How a file record's partition key is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKey {
    /// One random key per batch of lines read together.
    Random,
    /// One random key per record.
    RandomPerRecord,
    LineHash,
    FilePath,
    JsonField(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    /// Address (`IP:port`) of the HTTP endpoint serving `GET /metrics` (Prometheus
    /// text) and `GET /status` (JSON); `shardline status` reads it from here. Port 0
    /// takes any free port. The endpoint has no authentication: keep it on loopback.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    /// Allow `listen` on an address other than loopback. The endpoint has no
    /// authentication, so anyone who can reach it reads the metrics and status:
    /// off unless asked for.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_metrics_listen(),
            allow_remote: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngest {
    /// Most bytes the socket sources hold of their clients' input at once: partly
    /// read frames and lines, and records decoded from them until they are in the
    /// spool. A connection that finds it spent waits (its client feels
    /// backpressure); a frame that needs more than all of it is refused.
    #[serde(default = "default_ingest_max_memory_bytes")]
    pub max_memory_bytes: u64,
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            max_memory_bytes: default_ingest_max_memory_bytes(),
        }
    }
}

/// 64 MiB: a host agent's share of memory; enough for several maximum-size
/// frames at once.
pub(super) fn default_ingest_max_memory_bytes() -> u64 {
    64 << 20
}

/// The smallest ingest budget: a maximum-size line with a read and a batch.
pub(super) const MIN_INGEST_MEMORY_BYTES: u64 = 4 << 20;

pub(super) fn default_metrics_listen() -> String {
    "127.0.0.1:9717".into()
}

pub(super) fn default_shutdown_timeout_secs() -> u64 {
    30
}
pub(super) fn default_request_timeout_ms() -> u64 {
    30_000
}
pub(super) fn default_max_connections() -> usize {
    24
}
pub(super) fn default_linger_ms() -> u64 {
    100
}
pub(super) fn default_aggregation_max_bytes() -> usize {
    // The KPL's and kinesis-producer's default: small enough that aggregate
    // buffers come from the allocator's heap, not fresh pages.
    51_200
}
fn default_aggregate() -> bool {
    true
}

pub(super) fn default_aggregation_max_records() -> usize {
    10_000
}
pub(super) fn default_batch_max_records() -> usize {
    MAX_BATCH_RECORDS
}
/// 1 MiB: one full record fits; larger requests only hold more memory (the body
/// is built whole, as JSON) for the same throughput.
pub(super) fn default_batch_max_bytes() -> usize {
    1 << 20
}
pub(super) fn default_shard_refresh_interval_secs() -> u64 {
    60
}
/// 8 MiB: enough for ~160 MiB/s at 50 ms per request; records, their aggregates
/// and request bodies are each about this size in memory.
pub(super) fn default_max_inflight_bytes() -> u64 {
    8 << 20
}
/// Percent of a shard's write limits delivery uses when the config sets none.
pub(super) const DEFAULT_RATE_LIMIT_PERCENT: f64 = 80.0;
pub(super) fn default_spool_max_bytes() -> u64 {
    8 << 30
}
pub(super) fn default_flush_interval_ms() -> u64 {
    200
}
pub(super) fn default_segment_bytes() -> u64 {
    64 << 20
}
pub(super) fn default_min_free_bytes() -> u64 {
    64 << 20
}
pub(super) fn default_cache_capacity_bytes() -> u64 {
    4 << 20
}
/// Room left for a random partition key (16 characters) within the record limit.
pub(super) fn default_max_line_bytes() -> usize {
    MAX_RECORD_BYTES - 16
}
/// Room left for the longest partition key a file source makes.
pub(super) fn default_max_record_bytes() -> usize {
    MAX_FILE_RECORD_BYTES
}
pub(super) fn default_multiline_timeout_ms() -> u64 {
    1000
}
pub(super) fn default_rescan_interval_ms() -> u64 {
    1000
}
pub(super) fn default_rotate_wait_ms() -> u64 {
    5000
}
