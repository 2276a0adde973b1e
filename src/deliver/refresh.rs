//! The shard map refresh task: one per stream, it lists the stream's shards at
//! start, on an interval, and whenever the dispatcher asks (a record outside every
//! known range, an entry that landed in an unexpected shard), and publishes the map.
//! Reloads are spread and coalesced so that a fleet of agents seeing one reshard
//! does not storm ListShards. At start, and every hour or so, it also reads
//! the stream's maximum record size (raised with UpdateMaxRecordSize), published
//! before the map so that records routed through a map are checked against it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::kinesis::{ErrorClass, ErrorCode, SharedKinesis};
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

/// The longest a reload asked for by the dispatcher is put off, per open shard:
/// every agent of a fleet sees a reshard within the same second, and the
/// stream's ListShards limit (1,000 calls a second) is shared by all of them.
/// A fleet's size follows its stream's: 20 ms per shard spreads ten agents per
/// shard to half the limit.
const SPREAD_PER_SHARD: Duration = Duration::from_millis(20);
/// Bounds of that spread: a small stream reloads within a second, a large one
/// within half a minute (records meanwhile keep going through the old map,
/// and only those sent where it is wrong wait for the new one).
const SPREAD_MIN: Duration = Duration::from_secs(1);
const SPREAD_MAX: Duration = Duration::from_secs(30);
/// The shortest gap between a reload and one asked for after it.
const MIN_GAP: Duration = Duration::from_secs(1);
/// Longest wait after ListShards was throttled (`LimitExceededException`).
const THROTTLED_MAX: Duration = Duration::from_secs(60);
/// How often the stream's maximum record size is read again (jittered by
/// ±50 %): DescribeStreamSummary's limit is 20 calls a second per account,
/// which ten thousand agents reading every ten minutes would use up; a raised
/// size is rare, and a restart reads it at once.
const SIZE_INTERVAL: Duration = Duration::from_secs(3600);

/// How long a reload asked for may be put off on a stream of `shards` shards.
pub(super) fn spread(shards: usize) -> Duration {
    SPREAD_PER_SHARD
        .saturating_mul(shards.min(u32::MAX as usize) as u32)
        .clamp(SPREAD_MIN, SPREAD_MAX)
}

/// `d` scaled by a random factor in `[1 - f, 1 + f]`.
fn jittered(d: Duration, f: f64) -> Duration {
    d.mul_f64(1.0 - f + 2.0 * f * fastrand::f64())
}

/// Keeps a stream's shard map fresh: at start, on an interval (jittered, so
/// agents started together do not stay in step), and whenever the dispatcher
/// asks. Asks are put off by a random part of [`spread`] and coalesced: every
/// ask made before a call is answered by it. A throttled call backs off,
/// doubling from the spread; asks do not cut a backoff short.
pub(super) async fn refresh_shard_map(
    stream: Arc<str>,
    kinesis: SharedKinesis,
    interval: Duration,
    tx: Published,
    asked: Arc<Notify>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut state = Reloads::default();
    let mut size_due = Instant::now();
    let mut size_warned = false;
    loop {
        if Instant::now() >= size_due {
            let read =
                read_max_record_bytes(&stream, &*kinesis, &tx.max_record_bytes, &mut size_warned)
                    .await;
            let every = if read {
                SIZE_INTERVAL
            } else {
                SIZE_INTERVAL / 2
            };
            size_due = Instant::now() + jittered(every, 0.5);
        }
        let called = Instant::now();
        let result = kinesis.list_shards(&stream).await;
        let failed = state.answered(&stream, result, &tx, &metrics);
        // Asks made before the call are answered by it.
        tokio::select! {
            biased;
            _ = asked.notified() => {}
            _ = std::future::ready(()) => {}
        }
        let wait = match failed {
            Some(wait) => wait,
            None => jittered(interval, 0.1),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = asked.notified(), if failed.is_none() => {
                let put_off = spread(state.shards).mul_f64(fastrand::f64());
                let at = (Instant::now() + put_off).max(called + MIN_GAP);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
        }
    }
}

/// What the refresh task remembers between calls.
#[derive(Default)]
struct Reloads {
    /// Open shards in the last map (0 before the first).
    shards: usize,
    /// Failed calls in a row.
    failures: u32,
    last_log: Option<Instant>,
}

impl Reloads {
    /// Publishes a map, or counts a failure; returns the wait after a failure.
    fn answered(
        &mut self,
        stream: &Arc<str>,
        result: Result<Vec<crate::shard_map::Shard>, super::kinesis::KinesisError>,
        tx: &Published,
        metrics: &Metrics,
    ) -> Option<Duration> {
        let map = result
            .map_err(|e| (e.code.clone(), e.to_string()))
            .and_then(|shards| {
                ShardMap::new(shards).map_err(|e| (ErrorCode::InvalidShardMap, e.to_string()))
            });
        match map {
            Ok(map) => {
                if self.failures > 0 {
                    tracing::info!(stream = %stream, shards = map.len(), "Shard map loaded after earlier failures");
                }
                self.failures = 0;
                self.shards = map.len();
                metrics.shard_map_refreshed(stream);
                metrics.note_ok(stream);
                // Sent even when unchanged: records held for a refresh go then.
                tx.map.send_replace(Some(Arc::new(map)));
                None
            }
            Err((code, e)) => {
                self.failures += 1;
                metrics.list_shards_failed(stream, code.as_str());
                metrics.note_error(stream, code.as_str(), code.trouble(), &e);
                let now = Instant::now();
                if self
                    .last_log
                    .is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL)
                {
                    self.last_log = Some(now);
                    tracing::warn!(stream = %stream, error = %e, "Listing shards failed; records stay spooled until it succeeds");
                }
                Some(self.backoff(&code))
            }
        }
    }

    /// The wait after the latest of `failures` failed calls: a throttled call
    /// (the stream's ListShards limit, shared by a fleet) waits long enough to
    /// spread a fleet's retries, doubling; others back off as requests do.
    fn backoff(&self, code: &ErrorCode) -> Duration {
        if code.class() == ErrorClass::Throttled {
            let base = spread(self.shards).max(2 * SPREAD_MIN);
            let step = base.saturating_mul(1 << (self.failures - 1).min(5));
            let cap = step.min(THROTTLED_MAX);
            cap / 2 + cap.mul_f64(fastrand::f64() / 2.0)
        } else {
            backoff_delay(self.failures.min(6)).max(BACKOFF_BASE)
        }
    }
}

/// Reads the stream's maximum record size and publishes it when it changed. A
/// failure (a policy without `kinesis:DescribeStreamSummary`, say) keeps the
/// last value and is logged once, at WARN: nothing is lost, Kinesis then judges
/// each record's size itself.
/// Returns whether it was read.
async fn read_max_record_bytes(
    stream: &str,
    kinesis: &dyn super::kinesis::Kinesis,
    tx: &watch::Sender<Option<usize>>,
    warned: &mut bool,
) -> bool {
    match kinesis.max_record_bytes(stream).await {
        Ok(Some(bytes)) => {
            if *tx.borrow() != Some(bytes) {
                tracing::info!(stream = %stream, max_record_bytes = bytes, "Stream's maximum record size read");
                tx.send_replace(Some(bytes));
            }
            true
        }
        Ok(None) => true,
        Err(e) => {
            if !*warned {
                *warned = true;
                tracing::warn!(stream = %stream, error = %e, "Reading the stream's maximum record size failed; records over 1 MiB are sent and Kinesis accepts or refuses them");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::deliver::kinesis::{BoxFuture, EntryResult, Kinesis, KinesisError};
    use crate::shard_map::Shard;

    /// A stream of four shards whose ListShards takes 20 ms and refuses the
    /// first `refuse` calls as throttled; it notes when each call came.
    #[derive(Default)]
    struct Counted {
        calls: Mutex<Vec<Instant>>,
        refuse: Mutex<u32>,
        sizes: Mutex<u32>,
    }

    impl Kinesis for Counted {
        fn list_shards<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
            Box::pin(async move {
                self.calls.lock().unwrap().push(Instant::now());
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut refuse = self.refuse.lock().unwrap();
                if *refuse > 0 {
                    *refuse -= 1;
                    return Err(KinesisError {
                        operation: "ListShards",
                        code: ErrorCode::kinesis("LimitExceededException"),
                        message: "Rate exceeded".into(),
                    });
                }
                let quarter = u128::MAX / 4;
                Ok((0..4u128)
                    .map(|i| Shard {
                        id: Arc::from(format!("shardId-{i}")),
                        start: quarter * i + i.min(1),
                        end: if i == 3 { u128::MAX } else { quarter * (i + 1) },
                    })
                    .collect())
            })
        }

        fn max_record_bytes<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<usize>, KinesisError>> {
            *self.sizes.lock().unwrap() += 1;
            Box::pin(async { Ok(Some(1 << 20)) })
        }

        fn put_records<'a>(
            &'a self,
            _: &'a str,
            _: Vec<crate::aggregate::Encoded>,
        ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
            unreachable!("the refresh task only lists shards")
        }
    }

    /// Starts the refresh task (interval 60 s) and waits for its first map.
    async fn start(kinesis: Arc<Counted>) -> (Arc<Notify>, CancellationToken) {
        let asked = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let (map, mut map_rx) = watch::channel(None);
        let (max_record_bytes, _) = watch::channel(None);
        tokio::spawn(refresh_shard_map(
            Arc::from("logs"),
            kinesis,
            Duration::from_secs(60),
            Published {
                map,
                max_record_bytes,
            },
            asked.clone(),
            Metrics::new(),
            shutdown.clone(),
        ));
        map_rx.wait_for(|m| m.is_some()).await.unwrap();
        (asked, shutdown)
    }

    fn calls(k: &Counted) -> usize {
        k.calls.lock().unwrap().len()
    }

    #[test]
    fn a_reload_is_spread_over_more_time_on_a_larger_stream() {
        assert_eq!(spread(4), SPREAD_MIN);
        assert_eq!(spread(100), Duration::from_secs(2));
        assert_eq!(spread(1000), Duration::from_secs(20));
        assert_eq!(spread(100_000), SPREAD_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_asks_makes_one_call_within_the_spread() {
        let k = Arc::new(Counted::default());
        let (asked, shutdown) = start(k.clone()).await;
        assert_eq!(calls(&k), 1);
        let asked_at = Instant::now();
        for _ in 0..100 {
            asked.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        let at = k.calls.lock().unwrap().clone();
        assert_eq!(at.len(), 2, "{at:?}");
        assert!(at[1] >= at[0] + MIN_GAP && at[1] <= asked_at + SPREAD_MIN + MIN_GAP);
        // Asks made before that call were answered by it: none is left over.
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(calls(&k), 2);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn reloads_on_the_interval_are_jittered_and_the_size_is_read_rarely() {
        let k = Arc::new(Counted::default());
        let (asked, shutdown) = start(k.clone()).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        let at = k.calls.lock().unwrap().clone();
        let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        assert!(gaps.len() >= 4, "{gaps:?}");
        assert!(gaps.iter().all(|&g| (54.0..=66.1).contains(&g)), "{gaps:?}");
        assert!(
            gaps.iter().any(|&g| (g - gaps[0]).abs() > 0.01),
            "not jittered: {gaps:?}"
        );
        // Asked reloads do not read the maximum record size again.
        for _ in 0..5 {
            asked.notify_one();
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        assert_eq!(*k.sizes.lock().unwrap(), 1);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_call_backs_off_doubling_and_asks_do_not_cut_it_short() {
        let k = Arc::new(Counted::default());
        let (asked, shutdown) = start(k.clone()).await;
        *k.refuse.lock().unwrap() = 3;
        // Asks all through the backoffs (at least 1 + 2 + 4 s): they hold
        // anyway, and the call that loads answers them all.
        for _ in 0..60 {
            asked.notify_one();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        let at = k.calls.lock().unwrap().clone();
        // The first map, three refused calls, then the one that loads.
        assert_eq!(at.len(), 5, "{at:?}");
        let gaps: Vec<Duration> = at[1..].windows(2).map(|w| w[1] - w[0]).collect();
        // Backoff from 2 s (half of it at least, with jitter), doubling: at least
        // 1 s, 2 s, 4 s.
        for (i, g) in gaps.iter().enumerate() {
            assert!(*g >= Duration::from_secs(1 << i), "gap {i}: {g:?}");
        }
        shutdown.cancel();
    }
}
