//! The registered metric families, in two groups: what the sources count and
//! what delivery counts. Each field is registered under the name and help text
//! beside it (`_total` is added to counters by the encoder).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use super::labels::{
    BlockLabels, CodeLabels, FileEventLabels, LineLabels, ParseLabels, RejectLabels,
    SourceErrorLabels, SourceLabels, StreamLabels,
};
use super::{latency_histogram, packing_histogram};

/// Registers `metric` and returns it (the registry keeps a clone).
fn reg<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// What the sources count.
#[derive(Debug)]
pub(super) struct SourceMetrics {
    pub(super) received: Family<SourceLabels, Counter>,
    pub(super) rejected: Family<RejectLabels, Counter>,
    pub(super) source_errors: Family<SourceErrorLabels, Counter>,
    pub(super) spooled: Family<SourceLabels, Counter>,
    pub(super) oversized: Family<LineLabels, Counter>,
    pub(super) invalid_utf8: Family<LineLabels, Counter>,
    pub(super) key_fallbacks: Family<SourceLabels, Counter>,
    pub(super) parsed: Family<BlockLabels, Counter>,
    pub(super) parse_errors: Family<ParseLabels, Counter>,
    pub(super) file_events: Family<FileEventLabels, Counter>,
    pub(super) ingest_memory: Gauge,
    pub(super) ingest_memory_max: Gauge,
    pub(super) ingest_waits: Counter,
    pub(super) journald_restarts: Counter,
}

impl SourceMetrics {
    pub(super) fn register(r: &mut Registry) -> SourceMetrics {
        SourceMetrics {
            received: reg(r, "shardline_records_received", "User records received from sources", Default::default()),
            rejected: reg(r, "shardline_records_rejected", "User records refused at intake as invalid (too large, bad key); not spooled", Default::default()),
            source_errors: reg(r, "shardline_source_errors", "Protocol errors and refused peers at the sources (bad or truncated frames, peers not allowed)", Default::default()),
            spooled: reg(r, "shardline_records_spooled", "User records written to the spool", Default::default()),
            oversized: reg(r, "shardline_lines_oversized", "Lines longer than the record limit, split into several records or truncated", Default::default()),
            invalid_utf8: reg(r, "shardline_lines_invalid_utf8", "Lines that are not valid UTF-8, passed as they are, replaced or rejected", Default::default()),
            key_fallbacks: reg(r, "shardline_partition_key_fallbacks", "Records that got a random partition key because their key field was missing", Default::default()),
            parsed: reg(r, "shardline_lines_parsed", "Lines a block's parser read into a record", Default::default()),
            parse_errors: reg(r, "shardline_parse_errors", "Lines a block's parser could not read (or read with a field that did not convert or a time that could not be read), by reason and what was done", Default::default()),
            file_events: reg(r, "shardline_file_events", "Tailed files opened, replaced, removed, truncated and closed", Default::default()),
            ingest_memory: reg(r, "shardline_ingest_memory_bytes", "Bytes of the ingest memory budget charged by partly read input and decoded records", Default::default()),
            ingest_memory_max: reg(r, "shardline_ingest_memory_max_bytes", "The ingest memory budget (ingest.max_memory_bytes)", Default::default()),
            ingest_waits: reg(r, "shardline_ingest_memory_waits", "Times a connection waited for room in the ingest memory budget", Default::default()),
            journald_restarts: reg(r, "shardline_journald_restarts", "Times a journald source started journalctl again after it ended", Default::default()),
        }
    }
}

/// What delivery counts, per stream.
#[derive(Debug)]
pub(super) struct DeliveryMetrics {
    pub(super) delivered: Family<StreamLabels, Counter>,
    pub(super) requests: Family<StreamLabels, Counter>,
    pub(super) request_bytes: Family<StreamLabels, Counter>,
    pub(super) request_errors: Family<CodeLabels, Counter>,
    pub(super) entry_errors: Family<CodeLabels, Counter>,
    pub(super) retried: Family<StreamLabels, Counter>,
    pub(super) failed: Family<StreamLabels, Counter>,
    pub(super) wrong_shard: Family<StreamLabels, Counter>,
    pub(super) misrouted: Family<StreamLabels, Counter>,
    pub(super) shard_map_refreshes: Family<StreamLabels, Counter>,
    pub(super) list_shards_errors: Family<CodeLabels, Counter>,
    pub(super) shard_map_changes: Family<StreamLabels, Counter>,
    pub(super) latency: Family<StreamLabels, Histogram, fn() -> Histogram>,
    pub(super) throttles: Family<StreamLabels, Counter>,
    pub(super) lines_per_record: Family<StreamLabels, Histogram, fn() -> Histogram>,
}

impl DeliveryMetrics {
    pub(super) fn register(r: &mut Registry) -> DeliveryMetrics {
        DeliveryMetrics {
            delivered: reg(r, "shardline_records_delivered", "User records accepted by Kinesis or Firehose", Default::default()),
            requests: reg(r, "shardline_put_records_requests", "PutRecords requests sent (Firehose streams: PutRecordBatch)", Default::default()),
            request_bytes: reg(r, "shardline_put_records_bytes", "Bytes of Kinesis records (data plus partition keys) sent in PutRecords requests, and of Firehose records in PutRecordBatch requests", Default::default()),
            request_errors: reg(r, "shardline_put_records_errors", "PutRecords requests that failed as a whole, by error code", Default::default()),
            entry_errors: reg(r, "shardline_put_records_entry_errors", "PutRecords entries refused, by error code", Default::default()),
            retried: reg(r, "shardline_records_retried", "User records queued again after a failed request or entry", Default::default()),
            failed: reg(r, "shardline_records_failed", "User records Kinesis or Firehose refused for good, moved to the dead-letter file", Default::default()),
            wrong_shard: reg(r, "shardline_wrong_shard_results", "Accepted entries that landed in a shard other than the predicted one", Default::default()),
            misrouted: reg(r, "shardline_records_misrouted", "User records sent again because their aggregate landed in a shard whose range does not hold them", Default::default()),
            shard_map_refreshes: reg(r, "shardline_shard_map_refreshes", "Successful ListShards refreshes", Default::default()),
            list_shards_errors: reg(r, "shardline_list_shards_errors", "ListShards requests that failed (or answered no usable map), by error code", Default::default()),
            shard_map_changes: reg(r, "shardline_shard_map_changes", "Shard map changes (reshards) taken into use", Default::default()),
            latency: reg(r, "shardline_put_records_duration_seconds", "PutRecords (Firehose: PutRecordBatch) request latency", Family::new_with_constructor(latency_histogram as fn() -> Histogram)),
            throttles: reg(r, "shardline_throttles", "Requests and entries refused for throttling (Kinesis: ProvisionedThroughputExceededException and others; Firehose: ServiceUnavailableException)", Default::default()),
            lines_per_record: reg(r, "shardline_firehose_records_per_record", "User records (lines) packed into each Firehose record sent", Family::new_with_constructor(packing_histogram as fn() -> Histogram)),
        }
    }
}
