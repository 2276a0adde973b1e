//! The shard map refresh task: one per stream, it lists the stream's shards at
//! start, on an interval, and whenever the dispatcher asks (a record outside every
//! known range, an entry that landed in an unexpected shard), and publishes the map.
//! Each time it also reads the stream's maximum record size (raised with
//! UpdateMaxRecordSize), published before the map so that records routed through
//! a map are checked against a limit as fresh as it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::kinesis::{ErrorCode, SharedKinesis};
use super::pacing::{backoff_delay, BACKOFF_BASE};
use super::LOG_INTERVAL;
use crate::metrics::Metrics;
use crate::shard_map::ShardMap;

/// Where the refresh task publishes what it reads.
pub(super) struct Published {
    /// The shard map.
    pub(super) map: watch::Sender<Option<Arc<ShardMap>>>,
    /// The stream's maximum record size in bytes; `None` while unknown (not
    /// read yet, or DescribeStreamSummary refused or said nothing): then Kinesis
    /// alone judges a record's size.
    pub(super) max_record_bytes: watch::Sender<Option<usize>>,
}

/// Keeps a stream's shard map fresh: at start, on an interval, and whenever the
/// dispatcher asks.
pub(super) async fn refresh_shard_map(
    stream: Arc<str>,
    kinesis: SharedKinesis,
    interval: Duration,
    tx: Published,
    asked: Arc<Notify>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    let mut last_log: Option<Instant> = None;
    let mut size_warned = false;
    loop {
        read_max_record_bytes(&stream, &*kinesis, &tx.max_record_bytes, &mut size_warned).await;
        let result = kinesis.list_shards(&stream).await;
        let wait = match result
            .map_err(|e| (e.code.clone(), e.to_string()))
            .and_then(|shards| {
                ShardMap::new(shards).map_err(|e| (ErrorCode::InvalidShardMap, e.to_string()))
            }) {
            Ok(map) => {
                if failures > 0 {
                    tracing::info!(stream = %stream, shards = map.len(), "Shard map loaded after earlier failures");
                }
                failures = 0;
                metrics.shard_map_refreshed(&stream);
                metrics.note_ok(&stream);
                // Sent even when unchanged: records held for a refresh go then.
                tx.map.send_replace(Some(Arc::new(map)));
                interval
            }
            Err((code, e)) => {
                failures += 1;
                metrics.list_shards_failed(&stream, code.as_str());
                metrics.note_error(&stream, code.as_str(), code.trouble(), &e);
                let now = Instant::now();
                if last_log.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
                    last_log = Some(now);
                    tracing::warn!(stream = %stream, error = %e, "Listing shards failed; records stay spooled until it succeeds");
                }
                backoff_delay(failures.min(6)).max(BACKOFF_BASE)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = asked.notified() => {
                // Coalesce bursts of requests.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads the stream's maximum record size and publishes it when it changed. A
/// failure (a policy without `kinesis:DescribeStreamSummary`, say) keeps the
/// last value and is logged once, at WARN: nothing is lost, Kinesis then judges
/// each record's size itself.
async fn read_max_record_bytes(
    stream: &str,
    kinesis: &dyn super::kinesis::Kinesis,
    tx: &watch::Sender<Option<usize>>,
    warned: &mut bool,
) {
    match kinesis.max_record_bytes(stream).await {
        Ok(Some(bytes)) => {
            if *tx.borrow() != Some(bytes) {
                tracing::info!(stream = %stream, max_record_bytes = bytes, "Stream's maximum record size read");
                tx.send_replace(Some(bytes));
            }
        }
        Ok(None) => {}
        Err(e) => {
            if !*warned {
                *warned = true;
                tracing::warn!(stream = %stream, error = %e, "Reading the stream's maximum record size failed; records over 1 MiB are sent and Kinesis accepts or refuses them");
            }
        }
    }
}
