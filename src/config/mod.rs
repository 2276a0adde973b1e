//! The configuration file (TOML): parsed raw, then validated into the types the
//! agent uses, with every problem listed at once. `shardline validate` runs exactly
//! this.
//!
//! Every field's `///` comment is its user documentation; `config/shardline.toml`
//! shows them all with their defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::deliver::destination::Destination;
use crate::deliver::DeliveryOptions;
use crate::record::{MAX_LARGE_RECORD_BYTES, MAX_RECORD_BYTES};
use crate::spool::SpoolOptions;

mod arn;
mod checks;
mod deprecated;
mod destination;
mod env;
mod files;
mod import;
pub mod journald;
mod overrides;
pub mod parse;
mod paths;
mod quote;
mod raw;
#[cfg(test)]
mod reference;
mod snippets;
mod socket;
mod streams;
#[cfg(test)]
mod tests;
mod validate;

pub use import::{kinesis_agent, ImportError, Imported};
pub use journald::{JournaldConfig, Since};
pub(crate) use paths::{glob_base, is_pseudo_fs};
pub(crate) use raw::RawConfig;
pub use raw::{
    Framing, InvalidUtf8, JsonFormat, OnFull, Oversized, PartitionKey, ReadFrom, RecordFormat,
    SocketMode,
};

/// Keys every json record carries (and those `ec2_identity` adds); `fields` may
/// not use them.
pub const BUILT_IN_KEYS: [&str; 7] = [
    "message",
    "timestamp",
    "host",
    "source",
    "instance_id",
    "region",
    "az",
];

/// Largest file record: the Kinesis limit less 256 bytes, the longest partition key
/// the file source makes (it cuts a path or a JSON field to that).
pub const MAX_FILE_RECORD_BYTES: usize = MAX_RECORD_BYTES - 256;
/// Most `max_record_bytes` may be: the largest record of a stream raised to
/// 10 MiB, less the same 256 bytes.
pub const MAX_LARGE_FILE_RECORD_BYTES: usize = MAX_LARGE_RECORD_BYTES - 256;
/// Most a socket's `max_line_bytes` may be: the largest record of a stream
/// raised to 10 MiB, less a 16-character random partition key.
pub const MAX_LARGE_LINE_BYTES: usize = MAX_LARGE_RECORD_BYTES - 16;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub kinesis: KinesisConfig,
    /// Streams with a destination of their own (`[[destination]]`, or a stream
    /// named by an ARN of another region than `[kinesis]`'s), what they leave out
    /// filled in from `[kinesis]`.
    pub destinations: Vec<(String, Destination)>,
    /// Kinesis streams named by ARN: (key inside the agent, ARN). Requests name
    /// them by the ARN.
    pub stream_arns: Vec<(String, String)>,
    pub delivery: DeliveryOptions,
    pub dead_letter_path: PathBuf,
    pub spool: SpoolOptions,
    pub sockets: Vec<SocketConfig>,
    pub files: Vec<FileConfig>,
    pub journald: Vec<JournaldConfig>,
    pub metrics: MetricsConfig,
    pub ingest: IngestConfig,
    pub shutdown_timeout: Duration,
    /// A hint for each former spelling the file uses (the new spelling to
    /// write): `run` logs them at WARN, `validate` prints them.
    pub deprecated: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// Size of the sources' memory budget, in bytes.
    pub max_memory_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Where the metrics and status endpoint listens.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KinesisConfig {
    /// The default destination: a Kinesis data stream, or a Firehose stream
    /// (`firehose:NAME`).
    pub stream: String,
    /// How the default destination packs lines, when it is a Firehose stream.
    pub packing: Option<crate::deliver::firehose::Packing>,
    /// Whether the default destination's records are KPL-aggregated, when it
    /// sets its own (`[delivery]`'s `aggregate` otherwise).
    pub aggregate: Option<bool>,
    /// Its compression, when it sets its own.
    pub compression: Option<Option<crate::aggregate::Packs>>,
    /// The default stream's region, endpoint, credentials and role.
    pub destination: Destination,
    /// The default stream's own delivery settings.
    pub overrides: crate::deliver::StreamDelivery,
    pub request_timeout: Duration,
    pub proxy: crate::deliver::proxy::ProxySetting,
    pub no_proxy: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SocketConfig {
    /// The block's name in metrics and logs (`socket[0]`).
    pub block: String,
    pub path: PathBuf,
    pub mode: SocketMode,
    pub framing: Framing,
    pub stream: String,
    /// What a framed client may name in a request's `stream`, as it may name it
    /// (a stream's name, or its ARN when it was written as one), with the
    /// stream's key: the socket's own stream and its `streams`.
    pub streams: Vec<(String, String)>,
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
    pub format: RecordFormat,
    /// Every record gets an id (see [`FileConfig::record_id`]).
    pub record_id: bool,
}

/// A validated `[[file]]` block.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The block's name in metrics and logs (`file[0]`).
    pub block: String,
    /// The include patterns as written (their literal leading directories are
    /// watched).
    pub include: Vec<String>,
    /// The exclude patterns as written.
    pub exclude: Vec<String>,
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
    pub format: RecordFormat,
    /// Every record gets an id (in raw records, before the line; a line then
    /// has `record::RECORD_ID_ROOM` bytes less room).
    pub record_id: bool,
    /// Delete a file once it is read to its end, everything read is delivered
    /// and it was not written for `rotate_wait` (one-shot files).
    pub delete_after_delivered: bool,
}

/// Two blocks are the same when they were written the same: the compiled globs and
/// the multiline pattern are compared by their source text.
impl PartialEq for FileConfig {
    fn eq(&self, other: &FileConfig) -> bool {
        let pattern = |r: &Option<regex::bytes::Regex>| r.as_ref().map(|r| r.as_str().to_owned());
        self.include == other.include
            && self.exclude == other.exclude
            && self.stream == other.stream
            && self.read_from == other.read_from
            && self.partition_key == other.partition_key
            && pattern(&self.multiline_start) == pattern(&other.multiline_start)
            && self.multiline_timeout == other.multiline_timeout
            && self.max_record_bytes == other.max_record_bytes
            && self.oversized == other.oversized
            && self.invalid_utf8 == other.invalid_utf8
            && self.ignore_older == other.ignore_older
            && self.rescan_interval == other.rescan_interval
            && self.rotate_wait == other.rotate_wait
            && self.follow_symlinks == other.follow_symlinks
            && self.format == other.format
            && self.record_id == other.record_id
            && self.delete_after_delivered == other.delete_after_delivered
    }
}

/// Whether two spool sections are the same (every field: adding one to
/// [`SpoolOptions`] makes this fail to compile until it is compared too).
pub fn same_spool(a: &SpoolOptions, b: &SpoolOptions) -> bool {
    let SpoolOptions {
        dir,
        max_bytes,
        flush_interval_ms,
        cache_capacity_bytes,
        segment_bytes,
        min_free_bytes,
    } = a;
    (
        dir,
        max_bytes,
        flush_interval_ms,
        cache_capacity_bytes,
        segment_bytes,
        min_free_bytes,
    ) == (
        &b.dir,
        &b.max_bytes,
        &b.flush_interval_ms,
        &b.cache_capacity_bytes,
        &b.segment_bytes,
        &b.min_free_bytes,
    )
}

/// Checks `record_id_key` against the keys every json record has and the
/// block's `fields`.
pub(crate) fn check_record_id(
    field: &str,
    record_id: bool,
    key: &str,
    fields: &std::collections::BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    if !record_id {
        return;
    }
    if key.is_empty() {
        problems.push(format!("{field}.record_id_key is empty"));
    } else if BUILT_IN_KEYS.contains(&key) || fields.contains_key(key) {
        problems.push(format!(
            "{field}.record_id_key {key:?} collides with another key of the record"
        ));
    }
}

/// The record id's key when a block names none.
pub(crate) fn default_record_id_key() -> String {
    "record_id".into()
}

impl FileConfig {
    /// Whether this block tails `path`.
    pub fn matches(&self, path: &Path) -> bool {
        self.include_set.is_match(path) && !self.exclude_set.is_match(path)
    }
}

impl Config {
    /// The destination of `stream`.
    pub fn destination(&self, stream: &str) -> &Destination {
        self.destinations
            .iter()
            .find(|(s, _)| s == stream)
            .map_or(&self.kinesis.destination, |(_, d)| d)
    }

    /// Every stream with its destination's description, default first.
    pub fn stream_destinations(&self) -> Vec<(String, String)> {
        self.streams()
            .into_iter()
            .map(|s| {
                let d = self.destination(&s).describe();
                (s, d)
            })
            .collect()
    }

    /// Every destination stream, default first.
    pub fn streams(&self) -> Vec<String> {
        let mut out = vec![self.kinesis.stream.clone()];
        let sources = self.sockets.iter().map(|s| &s.stream);
        let sources = sources.chain(
            self.sockets
                .iter()
                .flat_map(|s| s.streams.iter().map(|(_, k)| k)),
        );
        let sources = sources.chain(self.files.iter().map(|f| &f.stream));
        let sources = sources.chain(self.journald.iter().map(|j| &j.stream));
        // A drained destination has no source but is delivered.
        for s in sources.chain(self.destinations.iter().map(|(s, _)| s)) {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
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

/// Reads and validates a config file, with the snippets of its `include_dir`
/// (`conf.d` beside it by default) merged in, in name order.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let text = read(path)?;
    let main = table(&text, path)?;
    let include_dir = main
        .get("include_dir")
        .and_then(|d| d.as_str())
        .map(PathBuf::from);
    let parts =
        snippets::files(&snippets::dir(path, include_dir.as_deref())).map_err(|message| {
            ConfigError::Parse {
                path: path.to_owned(),
                message,
            }
        })?;
    if parts.is_empty() {
        return parse(&text, path);
    }
    let (mut merged, mut origins, mut problems) = (toml::Table::new(), Vec::new(), Vec::new());
    snippets::merge(&mut merged, main, path, &mut origins, &mut problems);
    for part in parts {
        let table = table(&read(&part)?, &part)?;
        if table.contains_key("include_dir") {
            problems.push(format!(
                "include_dir is set in {}: only the main config file may set it",
                part.display()
            ));
        }
        snippets::merge(&mut merged, table, &part, &mut origins, &mut problems);
    }
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    };
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let deprecated = deprecated::hints(&merged);
    let raw = <RawConfig as serde::Deserialize>::deserialize(toml::Value::Table(merged)).map_err(
        |e| ConfigError::Parse {
            path: path.to_owned(),
            message: format!("{} (with its conf.d snippets)", e.to_string().trim_end()),
        },
    )?;
    let mut config = raw.validate().map_err(invalid)?;
    config.deprecated = deprecated;
    Ok(config)
}

/// One file's text as a table, its `${VAR}` references expanded.
fn table(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    let text = env::expand(text, |name| std::env::var(name).ok()).map_err(|problems| {
        ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// Parses and validates config text (`path` names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let text = &env::expand(text, |name| std::env::var(name).ok()).map_err(|problems| {
        ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }
    })?;
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let mut config = raw.validate().map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })?;
    // It read as a RawConfig, so it reads as a table.
    config.deprecated = toml::from_str(text).map_or_else(|_| Vec::new(), |t| deprecated::hints(&t));
    Ok(config)
}
