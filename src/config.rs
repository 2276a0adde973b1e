//! The configuration file (TOML): parsed raw, then validated into the types the
//! agent uses, with every problem listed at once. `shardline validate` runs exactly
//! this.
//!
//! Every field's `///` comment is its user documentation; `config/shardline.toml`
//! shows them all with their defaults.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::aggregate::Limits;
use crate::deliver::{DeliveryOptions, MAX_BATCH_BYTES, MAX_BATCH_RECORDS};
use crate::record::MAX_RECORD_BYTES;
use crate::source::journald::config::{self as journald, JournaldConfig, RawJournald};
use crate::spool::SpoolOptions;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where records go.
    pub kinesis: Option<RawKinesis>,
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
    /// Journal readers (`src/source/journald/config.rs` documents the keys).
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKinesis {
    /// Default destination stream for sources that do not name their own.
    pub stream: Option<String>,
    /// AWS region; when absent, the standard aws-config chain decides
    /// (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override (an emulator, a VPC endpoint).
    pub endpoint: Option<String>,
    /// Time limit of one Kinesis request.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// HTTP(S) proxy URL, or `"none"`; absent: `HTTPS_PROXY` and friends.
    pub proxy: Option<String>,
    /// Hosts reached without the proxy (as `NO_PROXY`, which it replaces).
    pub no_proxy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// Most concurrent PutRecords requests, across all streams
    /// (kinesis-producer: `MaxConnections`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest time a user record waits for its aggregate to fill before it is sent
    /// (kinesis-producer: `FlushInterval`).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Largest aggregate, in bytes of Kinesis record, at most 1048576
    /// (kinesis-producer: `AggregateBatchSize`).
    #[serde(default = "default_aggregation_max_bytes")]
    pub aggregation_max_bytes: usize,
    /// Most user records in one aggregate (kinesis-producer: `AggregateBatchCount`).
    #[serde(default = "default_aggregation_max_records")]
    pub aggregation_max_records: usize,
    /// Most Kinesis records in one PutRecords request, at most 500
    /// (kinesis-producer: `BatchCount`).
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// Most bytes in one PutRecords request, at most 5242880
    /// (kinesis-producer: `BatchSize`).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// How often the shard map is reloaded with ListShards; it is also reloaded at
    /// once when results show it is stale (kinesis-producer: `ShardRefreshInterval`).
    #[serde(default = "default_shard_refresh_interval_secs")]
    pub shard_refresh_interval_secs: u64,
    /// Most bytes of spooled records held in memory per stream for delivery; the rest
    /// waits in the spool (kinesis-producer: `BacklogCount`, in bytes).
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: u64,
    /// File (JSON lines) that receives records Kinesis refuses for good, before
    /// they leave the spool. Default: `dead-letter.ndjson` in the spool directory.
    pub dead_letter_path: Option<PathBuf>,
    /// Fraction of each shard's write limits (1 MiB/s and 1000 records/s) that
    /// delivery uses, so that throttling is rare in the first place; 0 < f <= 1, or 0
    /// for no limit (an endpoint without shard limits).
    #[serde(default = "default_shard_rate_factor")]
    pub shard_rate_factor: f64,
    /// Give up records not delivered this long after they were spooled: they go to
    /// the dead-letter file with a clear log line. Default: never (records wait in
    /// the spool as long as it takes).
    pub max_record_age_secs: Option<u64>,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            max_connections: default_max_connections(),
            linger_ms: default_linger_ms(),
            aggregation_max_bytes: default_aggregation_max_bytes(),
            aggregation_max_records: default_aggregation_max_records(),
            batch_max_records: default_batch_max_records(),
            batch_max_bytes: default_batch_max_bytes(),
            shard_refresh_interval_secs: default_shard_refresh_interval_secs(),
            max_inflight_bytes: default_max_inflight_bytes(),
            dead_letter_path: None,
            shard_rate_factor: default_shard_rate_factor(),
            max_record_age_secs: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
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
pub struct RawSocket {
    /// Path of the Unix socket.
    pub path: Option<PathBuf>,
    /// `stream` (connections) or `datagram` (one datagram = one record).
    #[serde(default)]
    pub mode: SocketMode,
    /// For stream sockets: `lines` (newline-delimited records) or `frames` (the
    /// length-prefixed protocol with per-record keys and acks, see the README).
    #[serde(default)]
    pub framing: Framing,
    /// Destination stream (default: `kinesis.stream`).
    pub stream: Option<String>,
    /// Longest line or datagram accepted, in bytes; a longer one is refused with an
    /// error and counted. At most 1048576 minus the partition key.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
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

fn default_file_mode() -> String {
    "0660".into()
}
fn default_socket_max_connections() -> usize {
    1024
}
/// A quarter of the default `max_connections`: a few busy users fit, one cannot
/// take them all.
fn default_max_connections_per_uid() -> usize {
    256
}
/// Five minutes: far longer than a live client's pause between writes.
fn default_idle_timeout_secs() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Glob patterns of the files to tail, absolute paths. `*`, `?` and `[...]` do
    /// not cross `/`; `**` does. Each names a directory before its first wildcard
    /// (`/**` would walk the whole filesystem), outside /proc, /sys and /dev.
    /// Required.
    #[serde(default)]
    pub include: Vec<String>,
    /// Glob patterns of files never tailed, even when included.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Destination stream (default: `kinesis.stream`).
    pub stream: Option<String>,
    /// Where to start in a file that has no checkpoint and is already there when the
    /// agent starts: `"beginning"` or `"end"`. A file that appears later is always
    /// read from its beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Partition key of each record: `"random"` (16 hex digits), `"line_hash"` (a
    /// hash of the record, so equal lines go to one shard), `"file_path"` (every
    /// line of a file to one shard), or `{ json_field = "name" }` (the top-level
    /// field of a JSON line; random when the field is missing).
    #[serde(default)]
    pub partition_key: RawPartitionKey,
    /// Regular expression that matches the first line of a record; a line that does
    /// not match is appended (after a `\n`) to the record before it. None: every
    /// line is a record.
    pub multiline_start: Option<String>,
    /// A multiline record is sent once no line was added to it for this long.
    #[serde(default = "default_multiline_timeout_ms")]
    pub multiline_timeout_ms: u64,
    /// Largest record (line), in bytes. At most 1048320: the Kinesis record limit
    /// less the longest partition key this source makes (256 bytes).
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

/// `partition_key` as written: a name, or `{ json_field = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPartitionKey {
    Named(String),
    Field(RawJsonField),
}

impl Default for RawPartitionKey {
    fn default() -> Self {
        RawPartitionKey::Named("random".into())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJsonField {
    /// Name of the top-level field of a JSON line whose value is the partition key.
    pub json_field: String,
}

/// How a file record's partition key is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKey {
    Random,
    LineHash,
    FilePath,
    JsonField(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
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
pub struct RawIngest {
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
fn default_ingest_max_memory_bytes() -> u64 {
    64 << 20
}

/// The smallest ingest budget: a maximum-size line with a read and a batch.
pub const MIN_INGEST_MEMORY_BYTES: u64 = 4 << 20;

fn default_metrics_listen() -> String {
    "127.0.0.1:9717".into()
}

fn default_shutdown_timeout_secs() -> u64 {
    30
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_max_connections() -> usize {
    24
}
fn default_linger_ms() -> u64 {
    100
}
fn default_aggregation_max_bytes() -> usize {
    // The KPL's and kinesis-producer's default: small enough that aggregate
    // buffers come from the allocator's heap, not fresh pages.
    51_200
}
fn default_aggregation_max_records() -> usize {
    10_000
}
fn default_batch_max_records() -> usize {
    MAX_BATCH_RECORDS
}
/// 1 MiB: one full record fits; larger requests only hold more memory (the body
/// is built whole, as JSON) for the same throughput.
fn default_batch_max_bytes() -> usize {
    1 << 20
}
fn default_shard_refresh_interval_secs() -> u64 {
    60
}
/// 8 MiB: enough for ~160 MiB/s at 50 ms per request; records, their aggregates
/// and request bodies are each about this size in memory.
fn default_max_inflight_bytes() -> u64 {
    8 << 20
}
fn default_shard_rate_factor() -> f64 {
    0.8
}
fn default_spool_max_bytes() -> u64 {
    8 << 30
}
fn default_flush_interval_ms() -> u64 {
    200
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_min_free_bytes() -> u64 {
    64 << 20
}
fn default_cache_capacity_bytes() -> u64 {
    4 << 20
}
/// Room left for a random partition key (16 characters) within the record limit.
fn default_max_line_bytes() -> usize {
    MAX_RECORD_BYTES - 16
}
/// Room left for the longest partition key a file source makes.
fn default_max_record_bytes() -> usize {
    MAX_FILE_RECORD_BYTES
}
fn default_multiline_timeout_ms() -> u64 {
    1000
}
fn default_rescan_interval_ms() -> u64 {
    1000
}
fn default_rotate_wait_ms() -> u64 {
    5000
}

/// Largest file record: the Kinesis limit less 256 bytes, the longest partition key
/// the file source makes (it cuts a path or a JSON field to that).
pub const MAX_FILE_RECORD_BYTES: usize = MAX_RECORD_BYTES - 256;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub kinesis: KinesisConfig,
    pub delivery: DeliveryOptions,
    pub dead_letter_path: PathBuf,
    pub spool: SpoolOptions,
    pub sockets: Vec<SocketConfig>,
    pub files: Vec<FileConfig>,
    pub journald: Vec<JournaldConfig>,
    pub metrics: MetricsConfig,
    pub ingest: IngestConfig,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Size of the sources' memory budget, in bytes.
    pub max_memory_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where the metrics and status endpoint listens.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct KinesisConfig {
    pub stream: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub request_timeout: Duration,
    pub proxy: crate::deliver::proxy::ProxySetting,
    pub no_proxy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub path: PathBuf,
    pub mode: SocketMode,
    pub framing: Framing,
    pub stream: String,
    pub max_line_bytes: usize,
    pub file_mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    pub idle_timeout: Duration,
    pub on_full: OnFull,
}

/// A validated `[[file]]` block.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The include patterns as written (their literal leading directories are
    /// watched).
    pub include: Vec<String>,
    pub include_set: globset::GlobSet,
    pub exclude_set: globset::GlobSet,
    pub stream: String,
    pub read_from: ReadFrom,
    pub partition_key: PartitionKey,
    pub multiline_start: Option<regex::bytes::Regex>,
    pub multiline_timeout: Duration,
    pub max_record_bytes: usize,
    pub oversized: Oversized,
    pub invalid_utf8: InvalidUtf8,
    pub ignore_older: Option<Duration>,
    pub rescan_interval: Duration,
    pub rotate_wait: Duration,
    pub follow_symlinks: bool,
}

impl FileConfig {
    /// Whether this block tails `path`.
    pub fn matches(&self, path: &Path) -> bool {
        self.include_set.is_match(path) && !self.exclude_set.is_match(path)
    }
}

impl Config {
    /// Every destination stream, default first.
    pub fn streams(&self) -> Vec<String> {
        let mut out = vec![self.kinesis.stream.clone()];
        let sources = self.sockets.iter().map(|s| &s.stream);
        let sources = sources.chain(self.files.iter().map(|f| &f.stream));
        for s in sources.chain(self.journald.iter().map(|j| &j.stream)) {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
}

/// Compiles glob patterns as the file source matches them: `*` stays within one
/// path component.
fn glob_set(
    patterns: &[String],
    field: &str,
    problems: &mut Vec<String>,
) -> Option<globset::GlobSet> {
    let mut builder = globset::GlobSetBuilder::new();
    let mut ok = true;
    for p in patterns {
        if !p.starts_with('/') {
            problems.push(format!("{field} pattern {p:?} is not an absolute path"));
            ok = false;
            continue;
        }
        match globset::GlobBuilder::new(p).literal_separator(true).build() {
            Ok(g) => {
                builder.add(g);
            }
            Err(e) => {
                problems.push(format!(
                    "{field} pattern {p:?} is not a valid glob: {}",
                    e.kind()
                ));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    match builder.build() {
        Ok(set) => Some(set),
        Err(e) => {
            problems.push(format!("{field} patterns cannot be compiled: {e}"));
            None
        }
    }
}

/// Checks one `[[file]]` block.
fn validate_file(
    i: usize,
    f: RawFile,
    default_stream: Option<&String>,
    problems: &mut Vec<String>,
) -> Option<FileConfig> {
    let field = format!("file[{i}]");
    let before = problems.len();
    if f.include.is_empty() {
        problems.push(format!(
            "{field}.include is missing (a list of glob patterns)"
        ));
    }
    let include_set = glob_set(&f.include, &format!("{field}.include"), problems);
    for p in f.include.iter().filter(|p| p.starts_with('/')) {
        check_include_base(p, &format!("{field}.include"), problems);
    }
    let exclude_set = glob_set(&f.exclude, &format!("{field}.exclude"), problems);
    if let Some(stream) = &f.stream {
        check_stream_name(stream, &format!("{field}.stream"), problems);
    }
    let partition_key = match f.partition_key {
        RawPartitionKey::Named(n) => match n.as_str() {
            "random" => Some(PartitionKey::Random),
            "line_hash" => Some(PartitionKey::LineHash),
            "file_path" => Some(PartitionKey::FilePath),
            _ => {
                problems.push(format!(
                    "{field}.partition_key {n:?} is not one of \"random\", \"line_hash\", \"file_path\" or {{ json_field = \"...\" }}"
                ));
                None
            }
        },
        RawPartitionKey::Field(RawJsonField { json_field }) => {
            if json_field.is_empty() {
                problems.push(format!("{field}.partition_key.json_field is empty"));
            }
            Some(PartitionKey::JsonField(json_field))
        }
    };
    let multiline_start = match f.multiline_start.as_deref().map(regex::bytes::Regex::new) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            problems.push(format!(
                "{field}.multiline_start {:?} is not a valid regular expression: {}",
                f.multiline_start.as_deref().unwrap_or_default(),
                e.to_string().lines().last().unwrap_or_default().trim()
            ));
            None
        }
    };
    if f.multiline_timeout_ms == 0 {
        problems.push(format!("{field}.multiline_timeout_ms must be at least 1"));
    }
    if f.max_record_bytes == 0 || f.max_record_bytes > MAX_FILE_RECORD_BYTES {
        problems.push(format!(
            "{field}.max_record_bytes {} is outside 1..={MAX_FILE_RECORD_BYTES} (the record limit less a 256-byte partition key)",
            f.max_record_bytes
        ));
    }
    if f.rescan_interval_ms == 0 {
        problems.push(format!("{field}.rescan_interval_ms must be at least 1"));
    }
    if problems.len() > before {
        return None;
    }
    Some(FileConfig {
        include: f.include,
        include_set: include_set?,
        exclude_set: exclude_set?,
        stream: f.stream.or(default_stream.cloned())?,
        read_from: f.read_from,
        partition_key: partition_key?,
        multiline_start,
        multiline_timeout: Duration::from_millis(f.multiline_timeout_ms),
        max_record_bytes: f.max_record_bytes,
        oversized: f.oversized,
        invalid_utf8: f.invalid_utf8,
        ignore_older: f.ignore_older_secs.map(Duration::from_secs),
        rescan_interval: Duration::from_millis(f.rescan_interval_ms),
        rotate_wait: Duration::from_millis(f.rotate_wait_ms),
        follow_symlinks: f.follow_symlinks,
    })
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), Problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Resolves a user or group (name or number) with the system's database file.
fn lookup_id(db: &str, name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = std::fs::read_to_string(db).map_err(|e| format!("cannot read {db}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(id)
        })
        .next()
        .ok_or_else(|| format!("no such entry in {db}"))
}

/// A permission written in octal: 3 or 4 digits 0-7 (`"0660"`, `"640"`), nothing
/// else (`u32::from_str_radix` alone would take `"+777"`).
fn parse_mode(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix('0')
        .filter(|d| d.len() == 3)
        .unwrap_or(text);
    if digits.len() != 3 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// Paths are absolute: a relative one would depend on the directory the agent
/// happens to start in.
fn check_absolute(path: &Path, field: &str, problems: &mut Vec<String>) {
    if !path.is_absolute() {
        problems.push(format!("{field} {path:?} is not an absolute path"));
    }
}

/// Include patterns must name a directory before their first wildcard, outside the
/// kernel's pseudo-filesystems: `/**` or `/*` would walk (and tail) everything.
fn check_include_base(pattern: &str, field: &str, problems: &mut Vec<String>) {
    let (base, _) = crate::source::file::glob_base(pattern);
    if base == Path::new("/") {
        problems.push(format!(
            "{field} pattern {pattern:?} has no directory before its first wildcard: it would walk the whole filesystem"
        ));
    } else if crate::source::file::is_pseudo_fs(&base) {
        problems.push(format!(
            "{field} pattern {pattern:?} is under /proc, /sys or /dev, which are never tailed"
        ));
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates config text (`path` names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    raw.validate().map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Kinesis stream names: 1–128 characters of `a-zA-Z0-9_.-`.
fn check_stream_name(name: &str, field: &str, problems: &mut Vec<String>) {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        problems.push(format!(
            "{field} {name:?} is not a valid stream name (1-128 characters of a-z, A-Z, 0-9, '_', '.', '-')"
        ));
    }
}

impl RawConfig {
    /// Checks everything and lists every problem.
    pub fn validate(self) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let kinesis = match self.kinesis {
            None => {
                problems.push("[kinesis] section is missing (it names the stream)".into());
                None
            }
            Some(k) => {
                match &k.stream {
                    None => problems.push("kinesis.stream is missing".into()),
                    Some(s) => check_stream_name(s, "kinesis.stream", &mut problems),
                }
                if let Some(e) = &k.endpoint {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        problems.push(format!(
                            "kinesis.endpoint {e:?} is not an http:// or https:// URL"
                        ));
                    }
                }
                if k.request_timeout_ms == 0 {
                    problems.push("kinesis.request_timeout_ms must be above 0".into());
                }
                if let Err(e) = crate::deliver::proxy::ProxySetting::parse(k.proxy.as_deref()) {
                    problems.push(format!("kinesis.proxy: {e}"));
                }
                Some(k)
            }
        };
        let d = &self.delivery;
        if d.max_connections == 0 {
            problems.push("delivery.max_connections must be at least 1".into());
        }
        if d.aggregation_max_bytes == 0 || d.aggregation_max_bytes > MAX_RECORD_BYTES {
            problems.push(format!(
                "delivery.aggregation_max_bytes {} is outside 1..={MAX_RECORD_BYTES}",
                d.aggregation_max_bytes
            ));
        }
        if d.aggregation_max_records == 0 {
            problems.push("delivery.aggregation_max_records must be at least 1".into());
        }
        if d.batch_max_records == 0 || d.batch_max_records > MAX_BATCH_RECORDS {
            problems.push(format!(
                "delivery.batch_max_records {} is outside 1..={MAX_BATCH_RECORDS}",
                d.batch_max_records
            ));
        }
        if d.batch_max_bytes < MAX_RECORD_BYTES || d.batch_max_bytes > MAX_BATCH_BYTES {
            problems.push(format!(
                "delivery.batch_max_bytes {} is outside {MAX_RECORD_BYTES}..={MAX_BATCH_BYTES}",
                d.batch_max_bytes
            ));
        }
        if d.shard_refresh_interval_secs == 0 {
            problems.push("delivery.shard_refresh_interval_secs must be at least 1".into());
        }
        if !(d.shard_rate_factor >= 0.0 && d.shard_rate_factor <= 1.0) {
            problems.push(format!(
                "delivery.shard_rate_factor {} is outside 0..=1",
                d.shard_rate_factor
            ));
        }
        if d.max_record_age_secs == Some(0) {
            problems.push("delivery.max_record_age_secs must be at least 1 (or left out)".into());
        }
        if let Some(p) = &d.dead_letter_path {
            check_absolute(p, "delivery.dead_letter_path", &mut problems);
        }
        if d.max_inflight_bytes < MAX_RECORD_BYTES as u64 {
            problems.push(format!(
                "delivery.max_inflight_bytes {} is below one record ({MAX_RECORD_BYTES})",
                d.max_inflight_bytes
            ));
        }
        let spool = match self.spool {
            None => {
                problems.push("[spool] section is missing (it names the spool directory)".into());
                None
            }
            Some(s) => {
                match &s.dir {
                    None => problems.push("spool.dir is missing".into()),
                    Some(d) => check_absolute(d, "spool.dir", &mut problems),
                }
                if s.max_bytes < 2 * MAX_RECORD_BYTES as u64 {
                    problems.push(format!(
                        "spool.max_bytes {} is below two maximum-size records ({})",
                        s.max_bytes,
                        2 * MAX_RECORD_BYTES
                    ));
                }
                if s.flush_interval_ms == 0 {
                    problems.push("spool.flush_interval_ms must be at least 1".into());
                }
                if s.segment_bytes < 1 << 20 {
                    problems.push(format!(
                        "spool.segment_bytes {} is below 1 MiB (1048576)",
                        s.segment_bytes
                    ));
                }
                Some(s)
            }
        };
        let metrics_listen = match self.metrics.listen.parse::<SocketAddr>() {
            Ok(a) if !a.ip().is_loopback() && !self.metrics.allow_remote => {
                problems.push(format!(
                    "metrics.listen {:?} is not a loopback address; the endpoint has no authentication (set metrics.allow_remote = true to serve it beyond this host)",
                    self.metrics.listen
                ));
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "metrics.listen {:?} is not an IP address and port (like \"127.0.0.1:9717\")",
                    self.metrics.listen
                ));
                None
            }
        };
        if self.ingest.max_memory_bytes < MIN_INGEST_MEMORY_BYTES {
            problems.push(format!(
                "ingest.max_memory_bytes {} is below {MIN_INGEST_MEMORY_BYTES} (a maximum-size line with its read and batch)",
                self.ingest.max_memory_bytes
            ));
        }
        if self.socket.is_empty() && self.file.is_empty() && self.journald.is_empty() {
            problems
                .push("no sources: add at least one [[socket]], [[file]] or [[journald]]".into());
        }
        let default_stream = kinesis.as_ref().and_then(|k| k.stream.clone());
        let mut paths = HashSet::new();
        let mut sockets = Vec::new();
        for (i, s) in self.socket.iter().enumerate() {
            let field = format!("socket[{i}]");
            match &s.path {
                None => problems.push(format!("{field}.path is missing")),
                Some(p) => {
                    check_absolute(p, &format!("{field}.path"), &mut problems);
                    if !paths.insert(p.clone()) {
                        problems.push(format!("{field}.path {p:?} is used by another socket"));
                    }
                }
            }
            if let Some(stream) = &s.stream {
                check_stream_name(stream, &format!("{field}.stream"), &mut problems);
            }
            if s.max_line_bytes == 0 || s.max_line_bytes > MAX_RECORD_BYTES - 16 {
                problems.push(format!(
                    "{field}.max_line_bytes {} is outside 1..={} (the record limit less a 16-character partition key)",
                    s.max_line_bytes,
                    MAX_RECORD_BYTES - 16
                ));
            }
            let file_mode = match parse_mode(&s.file_mode) {
                Some(m) => Some(m),
                None => {
                    problems.push(format!(
                        "{field}.file_mode {:?} is not an octal permission such as \"0660\"",
                        s.file_mode
                    ));
                    None
                }
            };
            let owner = s.owner.as_deref().and_then(|o| {
                lookup_id("/etc/passwd", o)
                    .map_err(|e| problems.push(format!("{field}.owner {o:?}: {e}")))
                    .ok()
            });
            let group = s.group.as_deref().and_then(|g| {
                lookup_id("/etc/group", g)
                    .map_err(|e| problems.push(format!("{field}.group {g:?}: {e}")))
                    .ok()
            });
            if s.mode == SocketMode::Datagram {
                if s.framing == Framing::Frames {
                    problems.push(format!(
                        "{field}: framing = \"frames\" needs mode = \"stream\""
                    ));
                }
                if !s.allow_uids.is_empty() || !s.allow_gids.is_empty() {
                    problems.push(format!(
                        "{field}: allow_uids/allow_gids need mode = \"stream\" (a datagram has no peer credentials)"
                    ));
                }
            }
            if s.max_connections == 0 {
                problems.push(format!("{field}.max_connections must be at least 1"));
            }
            if s.max_connections_per_uid == 0 {
                problems.push(format!(
                    "{field}.max_connections_per_uid must be at least 1"
                ));
            }
            if s.idle_timeout_secs == 0 {
                problems.push(format!("{field}.idle_timeout_secs must be at least 1"));
            }
            if let (Some(path), Some(stream), Some(file_mode)) = (
                &s.path,
                s.stream.clone().or(default_stream.clone()),
                file_mode,
            ) {
                sockets.push(SocketConfig {
                    path: path.clone(),
                    mode: s.mode,
                    framing: s.framing,
                    stream,
                    max_line_bytes: s.max_line_bytes,
                    file_mode,
                    owner,
                    group,
                    allow_uids: s.allow_uids.clone(),
                    allow_gids: s.allow_gids.clone(),
                    max_connections: s.max_connections,
                    max_connections_per_uid: s.max_connections_per_uid,
                    idle_timeout: Duration::from_secs(s.idle_timeout_secs),
                    on_full: s.on_full,
                });
            }
        }
        let mut files = Vec::new();
        for (i, f) in self.file.into_iter().enumerate() {
            if let Some(f) = validate_file(i, f, default_stream.as_ref(), &mut problems) {
                files.push(f);
            }
        }
        let mut journald_blocks = Vec::new();
        for (i, j) in self.journald.into_iter().enumerate() {
            if let Some(stream) = &j.stream {
                check_stream_name(stream, &format!("journald[{i}].stream"), &mut problems);
            }
            journald_blocks.extend(journald::validate(
                i,
                j,
                default_stream.as_ref(),
                &mut problems,
            ));
        }
        journald::check_names(&journald_blocks, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let k = kinesis.expect("checked above");
        let s = spool.expect("checked above");
        let d = self.delivery;
        let spool_dir = s.dir.expect("checked above");
        Ok(Config {
            dead_letter_path: d
                .dead_letter_path
                .unwrap_or_else(|| spool_dir.join("dead-letter.ndjson")),
            kinesis: KinesisConfig {
                stream: k.stream.expect("checked above"),
                region: k.region,
                endpoint: k.endpoint,
                request_timeout: Duration::from_millis(k.request_timeout_ms),
                proxy: crate::deliver::proxy::ProxySetting::parse(k.proxy.as_deref())
                    .expect("checked above"),
                no_proxy: k.no_proxy,
            },
            delivery: DeliveryOptions {
                max_connections: d.max_connections,
                linger: Duration::from_millis(d.linger_ms),
                aggregation: Limits {
                    max_bytes: d.aggregation_max_bytes,
                    max_records: d.aggregation_max_records,
                },
                batch_max_records: d.batch_max_records,
                batch_max_bytes: d.batch_max_bytes,
                shard_refresh_interval: Duration::from_secs(d.shard_refresh_interval_secs),
                max_inflight_bytes: d.max_inflight_bytes,
                shard_rate_factor: d.shard_rate_factor,
                max_record_age: d.max_record_age_secs.map(Duration::from_secs),
            },
            spool: SpoolOptions {
                dir: Some(spool_dir),
                max_bytes: s.max_bytes,
                flush_interval_ms: s.flush_interval_ms,
                cache_capacity_bytes: s.cache_capacity_bytes,
                segment_bytes: s.segment_bytes,
                min_free_bytes: s.min_free_bytes,
            },
            sockets,
            files,
            journald: journald_blocks,
            metrics: MetricsConfig {
                listen: metrics_listen.expect("checked above"),
            },
            ingest: IngestConfig {
                max_memory_bytes: usize::try_from(self.ingest.max_memory_bytes)
                    .unwrap_or(usize::MAX),
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    const MINIMAL: &str = r#"
        [kinesis]
        stream = "logs"
        [spool]
        dir = "/tmp/x"
        [[socket]]
        path = "/tmp/a.sock"
        [[socket]]
        path = "/tmp/b.sock"
        stream = "other"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = check(MINIMAL).unwrap();
        assert_eq!(c.sockets[0].stream, "logs");
        assert_eq!(c.sockets[1].stream, "other");
        assert_eq!(c.streams(), vec!["logs", "other"]);
        assert_eq!(c.delivery.max_connections, 24);
        assert_eq!(c.delivery.batch_max_records, 500);
        assert_eq!(c.metrics.listen, "127.0.0.1:9717".parse().unwrap());
    }

    #[test]
    fn metrics_listen_must_be_an_address() {
        let c = check(&format!("{MINIMAL}\n[metrics]\nlisten = \"[::1]:0\"\n")).unwrap();
        assert_eq!(c.metrics.listen, "[::1]:0".parse().unwrap());
        let e = check(&format!("{MINIMAL}\n[metrics]\nlisten = \"localhost\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.listen \"localhost\""), "{e}");
        let e = check(&format!("{MINIMAL}\n[metrics]\nport = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("dir = \"/tmp/x\"", "dir = \"/tmp/x\"\nmax_bites = 3");
        let e = check(&text).unwrap_err().to_string();
        assert!(e.contains("max_bites"), "{e}");
    }

    #[test]
    fn every_problem_is_listed() {
        let e = check(
            r#"
            [kinesis]
            region = "us-east-1"
            [delivery]
            batch_max_records = 501
            [spool]
            max_bytes = 10
            [[socket]]
            stream = "bad name"
        "#,
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &e else {
            panic!("{e}");
        };
        let all = problems.join("\n");
        for needle in [
            "kinesis.stream is missing",
            "batch_max_records 501",
            "spool.dir is missing",
            "spool.max_bytes 10",
            "socket[0].path is missing",
            "socket[0].stream \"bad name\"",
        ] {
            assert!(all.contains(needle), "{needle:?} not in\n{all}");
        }
        assert_eq!(problems.len(), 6, "{all}");
    }

    #[test]
    fn file_block_gets_defaults_and_its_stream() {
        let c = check(
            r#"
            [kinesis]
            stream = "logs"
            [spool]
            dir = "/tmp/x"
            [[file]]
            include = ["/var/log/app/*.log"]
            [[file]]
            include = ["/var/log/**/*.json"]
            exclude = ["/var/log/private/**"]
            stream = "json"
            read_from = "end"
            partition_key = { json_field = "user" }
            multiline_start = '^\d{4}-'
            oversized = "truncate"
            invalid_utf8 = "replace"
            ignore_older_secs = 86400
        "#,
        )
        .unwrap();
        assert!(c.sockets.is_empty());
        assert_eq!(c.streams(), vec!["logs", "json"]);
        let (a, b) = (&c.files[0], &c.files[1]);
        assert_eq!(a.stream, "logs");
        assert_eq!(a.read_from, ReadFrom::Beginning);
        assert_eq!(a.partition_key, PartitionKey::Random);
        assert_eq!(a.max_record_bytes, MAX_FILE_RECORD_BYTES);
        assert_eq!(a.oversized, Oversized::Split);
        assert_eq!(a.invalid_utf8, InvalidUtf8::Pass);
        assert!(a.matches(Path::new("/var/log/app/x.log")));
        assert!(
            !a.matches(Path::new("/var/log/app/sub/x.log")),
            "* crossed a /"
        );
        assert_eq!(b.partition_key, PartitionKey::JsonField("user".into()));
        assert!(b.matches(Path::new("/var/log/a/b/c.json")));
        assert!(!b.matches(Path::new("/var/log/private/c.json")));
        assert!(b
            .multiline_start
            .as_ref()
            .unwrap()
            .is_match(b"2024-01-01 x"));
        assert_eq!(b.ignore_older, Some(Duration::from_secs(86400)));
    }

    #[test]
    fn every_file_problem_is_listed() {
        let e = check(
            r#"
            [kinesis]
            stream = "logs"
            [spool]
            dir = "/tmp/x"
            [[file]]
            include = ["relative/*.log", "/a/[z.log"]
            partition_key = "shard"
            multiline_start = "("
            max_record_bytes = 1048576
            [[file]]
            stream = "bad name"
        "#,
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &e else {
            panic!("{e}");
        };
        let all = problems.join("\n");
        for needle in [
            "file[0].include pattern \"relative/*.log\" is not an absolute path",
            "file[0].include pattern \"/a/[z.log\" is not a valid glob",
            "file[0].partition_key \"shard\"",
            "file[0].multiline_start \"(\"",
            "file[0].max_record_bytes 1048576",
            "file[1].include is missing",
            "file[1].stream \"bad name\"",
        ] {
            assert!(all.contains(needle), "{needle:?} not in\n{all}");
        }
        assert_eq!(problems.len(), 7, "{all}");
    }

    #[test]
    fn no_sources_is_a_problem() {
        let e = check("[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no sources: add at least one [[socket]], [[file]] or [[journald]]"),
            "{e}"
        );
    }
}
