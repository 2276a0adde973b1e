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
    /// The HTTP endpoint for metrics and status.
    #[serde(default)]
    pub metrics: RawMetrics,
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Directory of the spool database (created if missing).
    pub dir: Option<PathBuf>,
    /// Most bytes of records the spool holds; when full, sources wait.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Group commit interval: the spool is fsynced at most this often.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Memory for the spool's page cache.
    #[serde(default = "default_cache_capacity_bytes")]
    pub cache_capacity_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSocket {
    /// Path of the Unix stream socket; newline-delimited records.
    pub path: Option<PathBuf>,
    /// Destination stream (default: `kinesis.stream`).
    pub stream: Option<String>,
    /// Longest line accepted, in bytes; a longer line is refused with an error and
    /// counted. At most 1048576 minus the partition key.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address (`IP:port`) of the HTTP endpoint serving `GET /metrics` (Prometheus
    /// text) and `GET /status` (JSON); `shardline status` reads it from here. Port 0
    /// takes any free port. The endpoint has no authentication: keep it on loopback.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_metrics_listen(),
        }
    }
}

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
    256 * 1024
}
fn default_aggregation_max_records() -> usize {
    10_000
}
fn default_batch_max_records() -> usize {
    MAX_BATCH_RECORDS
}
fn default_batch_max_bytes() -> usize {
    MAX_BATCH_BYTES
}
fn default_shard_refresh_interval_secs() -> u64 {
    60
}
fn default_max_inflight_bytes() -> u64 {
    64 << 20
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
fn default_cache_capacity_bytes() -> u64 {
    32 << 20
}
/// Room left for a random partition key (16 characters) within the record limit.
fn default_max_line_bytes() -> usize {
    MAX_RECORD_BYTES - 16
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub kinesis: KinesisConfig,
    pub delivery: DeliveryOptions,
    pub dead_letter_path: PathBuf,
    pub spool: SpoolOptions,
    pub sockets: Vec<SocketConfig>,
    pub metrics: MetricsConfig,
    pub shutdown_timeout: Duration,
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
}

#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub path: PathBuf,
    pub stream: String,
    pub max_line_bytes: usize,
}

impl Config {
    /// Every destination stream, default first.
    pub fn streams(&self) -> Vec<String> {
        let mut out = vec![self.kinesis.stream.clone()];
        for s in &self.sockets {
            if !out.contains(&s.stream) {
                out.push(s.stream.clone());
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
                if s.dir.is_none() {
                    problems.push("spool.dir is missing".into());
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
                Some(s)
            }
        };
        let metrics_listen = match self.metrics.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "metrics.listen {:?} is not an IP address and port (like \"127.0.0.1:9717\")",
                    self.metrics.listen
                ));
                None
            }
        };
        if self.socket.is_empty() {
            problems.push("no sources: add at least one [[socket]]".into());
        }
        let default_stream = kinesis.as_ref().and_then(|k| k.stream.clone());
        let mut paths = HashSet::new();
        let mut sockets = Vec::new();
        for (i, s) in self.socket.iter().enumerate() {
            let field = format!("socket[{i}]");
            match &s.path {
                None => problems.push(format!("{field}.path is missing")),
                Some(p) => {
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
            if let (Some(path), Some(stream)) =
                (&s.path, s.stream.clone().or(default_stream.clone()))
            {
                sockets.push(SocketConfig {
                    path: path.clone(),
                    stream,
                    max_line_bytes: s.max_line_bytes,
                });
            }
        }
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
            },
            spool: SpoolOptions {
                dir: Some(spool_dir),
                max_bytes: s.max_bytes,
                flush_interval_ms: s.flush_interval_ms,
                cache_capacity_bytes: s.cache_capacity_bytes,
            },
            sockets,
            metrics: MetricsConfig {
                listen: metrics_listen.expect("checked above"),
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
}
