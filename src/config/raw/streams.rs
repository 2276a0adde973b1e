//! The stream sections as written: `[kinesis]`, each `[[destination]]` and
//! `[delivery]`, with their defaults (the default functions live in the parent).

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    default_aggregate, default_aggregation_max_bytes, default_aggregation_max_records,
    default_batch_max_bytes, default_batch_max_records, default_linger_ms, default_max_connections,
    default_max_inflight_bytes, default_request_timeout_ms, default_shard_refresh_interval_secs,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKinesis {
    /// Default destination for sources that do not name their own: a Kinesis
    /// data stream...
    pub stream: Option<String>,
    /// ...or a Firehose stream.
    pub delivery_stream: Option<String>,
    /// KPL aggregation of this Kinesis stream's records (default: `[delivery]`'s);
    /// `false`: one user record per Kinesis record. Only for a Kinesis stream.
    pub aggregate: Option<bool>,
    /// Compression of this Kinesis stream's user records (default:
    /// `[delivery]`'s): `"none"`, `"gzip"` or `"zstd"`; with it, the level and the
    /// pack size (unset: their defaults, not `[delivery]`'s).
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    pub compression_pack_bytes: Option<usize>,
    /// Several lines per Firehose record, each ending in a newline (default);
    /// `false`: one line per record. Only for a Firehose stream.
    pub packing: Option<bool>,
    /// Largest Firehose record, in bytes: 1..=1024000 (default 1024000).
    pub packing_max_bytes: Option<usize>,
    /// Longest a line waits for its Firehose record to fill, in milliseconds
    /// (default 1000).
    pub packing_linger_ms: Option<u64>,
    /// AWS region; when absent, the standard aws-config chain decides
    /// (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint override (an emulator, a VPC endpoint).
    pub endpoint: Option<String>,
    /// Profile of `~/.aws/credentials` / `~/.aws/config` to take credentials
    /// from; absent: the default chain (environment, profile, web identity,
    /// ECS, instance role).
    pub profile: Option<String>,
    /// IAM role to assume (with the credentials above) for writing:
    /// `arn:aws:iam::<account>:role/<name>`.
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
    /// Session name of the assumed role (what CloudTrail shows); default
    /// `shardline`.
    pub session_name: Option<String>,
    /// STS endpoint override; default: the region's STS.
    pub sts_endpoint: Option<String>,
    /// Time limit of one Kinesis request.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// HTTP(S) proxy URL, or `"none"`; absent: `HTTPS_PROXY` and friends.
    pub proxy: Option<String>,
    /// Hosts reached without the proxy (as `NO_PROXY`, which it replaces).
    pub no_proxy: Option<String>,
    /// This stream's own `max_buffered_time_ms` (a Kinesis stream; default:
    /// `[delivery]`'s).
    pub max_buffered_time_ms: Option<u64>,
    /// This stream's own `rate_limit_percent` (a Kinesis stream; default:
    /// `[delivery]`'s).
    pub rate_limit_percent: Option<f64>,
    /// This stream's own `max_record_age_secs`; 0: never give up, whatever
    /// `[delivery]` says.
    pub max_record_age_secs: Option<u64>,
    /// This stream's own dead-letter file (default: `[delivery]`'s).
    pub dead_letter_path: Option<PathBuf>,
    /// This stream's own `max_inflight_bytes` (default: `[delivery]`'s).
    pub max_inflight_bytes: Option<u64>,
}

/// A `[[destination]]` block: one stream's own region, endpoint, credentials
/// profile and role. What it leaves out comes from `[kinesis]`, except the role
/// (a destination without `role_arn` assumes none) and the endpoint when the
/// block names its own region.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDestination {
    /// The Kinesis data stream (sources name it in their `stream`)...
    pub stream: Option<String>,
    /// ...or the Firehose stream (sources name it in their `delivery_stream`).
    pub delivery_stream: Option<String>,
    /// KPL aggregation of this Kinesis stream's records (default: `[delivery]`'s);
    /// `false`: one user record per Kinesis record. Only for a Kinesis stream.
    pub aggregate: Option<bool>,
    /// Compression of this Kinesis stream's user records (default:
    /// `[delivery]`'s): `"none"`, `"gzip"` or `"zstd"`; with it, the level and the
    /// pack size (unset: their defaults, not `[delivery]`'s).
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    pub compression_pack_bytes: Option<usize>,
    /// Several lines per Firehose record, each ending in a newline (default);
    /// `false`: one line per record. Only for a Firehose stream.
    pub packing: Option<bool>,
    /// Largest Firehose record, in bytes: 1..=1024000 (default 1024000).
    pub packing_max_bytes: Option<usize>,
    /// Longest a line waits for its Firehose record to fill, in milliseconds
    /// (default 1000).
    pub packing_linger_ms: Option<u64>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub profile: Option<String>,
    /// IAM role to assume (with the credentials above) for writing:
    /// `arn:aws:iam::<account>:role/<name>`.
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
    /// Session name of the assumed role (what CloudTrail shows); default
    /// `shardline`.
    pub session_name: Option<String>,
    /// STS endpoint override; default: the region's STS.
    pub sts_endpoint: Option<String>,
    /// No source writes this stream any more: deliver what the spool still
    /// holds for it (records spooled before a source was removed or renamed).
    #[serde(default)]
    pub drain: bool,
    /// This is the default destination, for sources that name none (instead
    /// of `[kinesis]`, which is its shorthand).
    #[serde(default)]
    pub default: bool,
    /// This stream's own `max_buffered_time_ms` (a Kinesis stream; default:
    /// `[delivery]`'s).
    pub max_buffered_time_ms: Option<u64>,
    /// This stream's own `rate_limit_percent` (a Kinesis stream; default:
    /// `[delivery]`'s).
    pub rate_limit_percent: Option<f64>,
    /// This stream's own `max_record_age_secs`; 0: never give up, whatever
    /// `[delivery]` says.
    pub max_record_age_secs: Option<u64>,
    /// This stream's own dead-letter file (default: `[delivery]`'s).
    pub dead_letter_path: Option<PathBuf>,
    /// This stream's own `max_inflight_bytes` (default: `[delivery]`'s).
    pub max_inflight_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelivery {
    /// Most concurrent PutRecords requests, across all streams
    /// (kinesis-producer: `MaxConnections`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest time a user record waits for its aggregate to fill before it is sent
    /// (KPL: `RecordMaxBufferedTime`; kinesis-producer: `FlushInterval`; formerly
    /// `linger_ms`).
    #[serde(default = "default_linger_ms", alias = "linger_ms")]
    pub max_buffered_time_ms: u64,
    /// Largest aggregate, in bytes of Kinesis record, at most 1048576
    /// (kinesis-producer: `AggregateBatchSize`).
    #[serde(default = "default_aggregation_max_bytes")]
    pub aggregation_max_bytes: usize,
    /// Most user records in one aggregate (kinesis-producer: `AggregateBatchCount`).
    #[serde(default = "default_aggregation_max_records")]
    pub aggregation_max_records: usize,
    /// KPL aggregation of Kinesis streams' records (default `true`); `false`: one
    /// user record per Kinesis record, for consumers that do not deaggregate.
    /// `[kinesis]` and `[[destination]]` may set their stream's own.
    #[serde(default = "default_aggregate")]
    pub aggregate: bool,
    /// Compression of each Kinesis stream's user records: `"none"`, `"gzip"`
    /// or `"zstd"` (consumers deaggregate, then decompress).
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Level of `compression` (gzip 0..=9, default 6; zstd 1..=22, default 3).
    pub compression_level: Option<i32>,
    /// Lines packed (newline-separated) into one compressed user record, up to
    /// this many bytes before compression; 0: each record alone.
    #[serde(default)]
    pub compression_pack_bytes: usize,
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
    /// Percent of each shard's write limits (1 MiB/s and 1000 records/s) that
    /// delivery uses, so that throttling is rare in the first place; 0 < p <=
    /// 100, or 0 for no limit (an endpoint without shard limits). Default 80
    /// (KPL: `RateLimit`, default 150).
    pub rate_limit_percent: Option<f64>,
    /// The former spelling of `rate_limit_percent`, as a fraction (0.8 is 80).
    pub shard_rate_factor: Option<f64>,
    /// Give up records not delivered this long after they were spooled: they go to
    /// the dead-letter file with a clear log line. Default: never (records wait in
    /// the spool as long as it takes).
    pub max_record_age_secs: Option<u64>,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            max_connections: default_max_connections(),
            max_buffered_time_ms: default_linger_ms(),
            aggregation_max_bytes: default_aggregation_max_bytes(),
            aggregation_max_records: default_aggregation_max_records(),
            aggregate: default_aggregate(),
            compression: default_compression(),
            compression_level: None,
            compression_pack_bytes: 0,
            batch_max_records: default_batch_max_records(),
            batch_max_bytes: default_batch_max_bytes(),
            shard_refresh_interval_secs: default_shard_refresh_interval_secs(),
            max_inflight_bytes: default_max_inflight_bytes(),
            dead_letter_path: None,
            rate_limit_percent: None,
            shard_rate_factor: None,
            max_record_age_secs: None,
        }
    }
}

fn default_compression() -> String {
    "none".into()
}
