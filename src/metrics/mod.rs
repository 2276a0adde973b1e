//! Counters and histograms of the pipeline, in Prometheus form
//! (`prometheus-client`).
//!
//! Names follow `shardline_<thing>_<unit>` (`_total` is added to counters by the
//! exposition); labels are bounded: stream, source kind, a rejection reason or a
//! Kinesis error code — never a path or an error message. Everything is counted per
//! batch, not per record.
//!
//! The spool gauges (`shardline_spool_bytes`, `shardline_spool_records`,
//! `shardline_spool_oldest_record_age_seconds`, `shardline_spool_max_bytes`) are
//! read from the spool's [`Backlog`] at each scrape by a collector, so they are never stale
//! and cost nothing between scrapes. The last delivery error is kept here too, for
//! the status endpoint only: an error message is not a bounded label.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::intake::{Backlog, WeakBacklog};

mod families;
mod health;
mod labels;
mod process;

use families::{DeliveryMetrics, SourceMetrics};
pub use health::{DestinationHealth, LastError, SourceHealth, Trouble};
pub use labels::{
    BlockLabels, CodeLabels, FileEvent, FileEventLabels, LineAction, LineLabels, ParseLabels,
    RejectLabels, RejectReason, Source, SourceError, SourceErrorLabels, SourceLabels, StreamLabels,
};

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn packing_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    ])
}

struct Inner {
    registry: Registry,
    sources: SourceMetrics,
    delivery: DeliveryMetrics,
    /// The spool the gauges read, set once it is open; weak, so metrics kept
    /// after the agent stopped do not keep the database open.
    spool: Arc<OnceLock<WeakBacklog>>,
    last_error: Mutex<Option<LastError>>,
    /// Each stream's last answer and last problem.
    destinations: Mutex<HashMap<String, DestinationHealth>>,
    /// Each running source's state, in the order they started.
    source_health: Mutex<Vec<SourceHealth>>,
}

/// Reads the spool gauges at each scrape.
struct SpoolCollector {
    spool: Arc<OnceLock<WeakBacklog>>,
}

impl std::fmt::Debug for SpoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolCollector")
            .field(
                "open",
                &self.spool.get().and_then(WeakBacklog::upgrade).is_some(),
            )
            .finish()
    }
}

fn encode_gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for SpoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(spool) = self.spool.get().and_then(WeakBacklog::upgrade) else {
            return Ok(());
        };
        encode_gauge(
            &mut encoder,
            "shardline_spool_bytes",
            "Bytes of undelivered records held in the spool",
            spool.used_bytes(),
        )?;
        encode_gauge(
            &mut encoder,
            "shardline_spool_records",
            "User records held in the spool, not yet accepted by Kinesis",
            spool.records(),
        )?;
        encode_gauge(
            &mut encoder,
            "shardline_spool_max_bytes",
            "Most bytes of records the spool holds (spool.max_bytes); sources wait past it",
            spool.max_bytes(),
        )?;
        encode_gauge(
            &mut encoder,
            "shardline_spool_segment_bytes",
            "Bytes of the spool's segment files (what counts against spool.max_bytes)",
            spool.disk_bytes(),
        )?;
        if let Some(free) = spool.disk_free_bytes() {
            encode_gauge(
                &mut encoder,
                "shardline_spool_disk_free_bytes",
                "Free bytes of the spool's filesystem; below spool.min_free_bytes the spool is full",
                free,
            )?;
        }
        {
            let damaged = ConstCounter::new(spool.damaged().0);
            let metric = encoder.encode_descriptor(
                "shardline_spool_damaged_frames",
                "Damaged spool frames or files found (reported, skipped; their records are lost)",
                None,
                damaged.metric_type(),
            )?;
            damaged.encode(metric)?;
            let lost = ConstCounter::new(spool.damaged().1);
            let metric = encoder.encode_descriptor(
                "shardline_spool_lost_records",
                "User records lost to spool damage found since the start (a missing segment, a segment cut short, a damaged frame); see damaged/report",
                None,
                lost.metric_type(),
            )?;
            lost.encode(metric)?;
        }
        match spool.oldest_record_age() {
            Ok(age) => encode_gauge(
                &mut encoder,
                "shardline_spool_oldest_record_age_seconds",
                "Time the oldest record in the spool has waited (0 when empty), to within a second",
                age.unwrap_or_default().as_secs_f64(),
            )?,
            // Leaving the gauge out tells the scraper the value is unknown.
            Err(e) => {
                tracing::warn!(error = %e, "Reading the oldest spool record's age failed")
            }
        }
        Ok(())
    }
}

/// The agent's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn stream(s: &str) -> StreamLabels {
    StreamLabels { stream: s.into() }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let sources = SourceMetrics::register(&mut registry);
        let delivery = DeliveryMetrics::register(&mut registry);
        let spool = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(SpoolCollector {
            spool: spool.clone(),
        }));
        registry.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                sources,
                delivery,
                spool,
                last_error: Mutex::new(None),
                destinations: Mutex::new(HashMap::new()),
                source_health: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A journald source started journalctl again.
    pub fn journald_restarted(&self) {
        self.inner.sources.journald_restarts.inc();
    }

    /// journalctl restarts so far (for tests and status).
    pub fn journald_restarts(&self) -> u64 {
        self.inner.sources.journald_restarts.get()
    }

    /// Gives the spool gauges their spool (once; later calls are ignored).
    pub fn attach_spool(&self, backlog: &Backlog) {
        let _ = self.inner.spool.set(backlog.downgrade());
    }

    /// Remembers a delivery problem for the status endpoint (call once per failed
    /// request or batch of entries, not per record).
    pub fn note_error(&self, stream: &str, code: &str, trouble: Trouble, message: &str) {
        let error = LastError {
            stream: stream.to_owned(),
            code: code.to_owned(),
            trouble,
            message: message.to_owned(),
            at: SystemTime::now(),
        };
        self.inner
            .destinations
            .lock()
            .expect("destinations lock poisoned")
            .entry(stream.to_owned())
            .or_default()
            .last_error = Some(error.clone());
        *self
            .inner
            .last_error
            .lock()
            .expect("last error lock poisoned") = Some(error);
    }

    /// Remembers that Kinesis accepted a request of `stream`.
    pub fn note_ok(&self, stream: &str) {
        let now = SystemTime::now();
        let mut d = self
            .inner
            .destinations
            .lock()
            .expect("destinations lock poisoned");
        match d.get_mut(stream) {
            Some(h) => h.last_ok = Some(now),
            None => {
                d.insert(
                    stream.to_owned(),
                    DestinationHealth {
                        last_ok: Some(now),
                        last_error: None,
                    },
                );
            }
        }
    }

    /// A source runs (again): `problem` clears.
    pub fn source_up(&self, kind: Source, name: &str) {
        self.set_source(kind, name, None);
    }

    /// A source is held by a problem until it reports itself up.
    pub fn source_down(&self, kind: Source, name: &str, problem: String) {
        self.set_source(kind, name, Some((problem, SystemTime::now())));
    }

    /// A source was stopped (a reload removed it).
    pub fn source_removed(&self, kind: Source, name: &str) {
        self.inner
            .source_health
            .lock()
            .expect("source health lock poisoned")
            .retain(|h| !(h.kind == kind && h.name == name));
    }

    fn set_source(&self, kind: Source, name: &str, problem: Option<(String, SystemTime)>) {
        let mut all = self
            .inner
            .source_health
            .lock()
            .expect("source health lock poisoned");
        match all.iter_mut().find(|h| h.kind == kind && h.name == name) {
            Some(h) => h.problem = problem,
            None => all.push(SourceHealth {
                kind,
                name: name.to_owned(),
                problem,
            }),
        }
    }

    /// Every source's state.
    pub fn sources(&self) -> Vec<SourceHealth> {
        self.inner
            .source_health
            .lock()
            .expect("source health lock poisoned")
            .clone()
    }

    /// The most recent delivery problem, if any.
    pub fn last_error(&self) -> Option<LastError> {
        self.inner
            .last_error
            .lock()
            .expect("last error lock poisoned")
            .clone()
    }

    /// A stream's destination as delivery last found it.
    pub fn destination(&self, stream: &str) -> DestinationHealth {
        self.inner
            .destinations
            .lock()
            .expect("destinations lock poisoned")
            .get(stream)
            .cloned()
            .unwrap_or_default()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The value of metric `name` as a scrape reads it (`shardline_records_spooled_total`,
    /// say), summed over the series whose labels include every pair of `labels`;
    /// 0 if there is none yet. For tests, benches and tools: what an operator sees.
    pub fn read(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let text = self.encode();
        let mut total = 0.0;
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                continue;
            }
            let has = |(k, v): &(&str, &str)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            };
            if labels.iter().all(has) {
                total += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        total as u64
    }

    pub fn received(&self, source: Source, n: u64) {
        self.inner
            .sources
            .received
            .get_or_create(&SourceLabels { source })
            .inc_by(n);
    }

    pub fn rejected(&self, source: Source, reason: RejectReason, n: u64) {
        self.inner
            .sources
            .rejected
            .get_or_create(&RejectLabels { source, reason })
            .inc_by(n);
    }

    pub fn source_error(&self, source: Source, kind: SourceError) {
        self.inner
            .sources
            .source_errors
            .get_or_create(&SourceErrorLabels { source, kind })
            .inc();
    }

    pub fn spooled(&self, source: Source, n: u64) {
        self.inner
            .sources
            .spooled
            .get_or_create(&SourceLabels { source })
            .inc_by(n);
    }

    pub fn delivered(&self, s: &str, n: u64) {
        if n > 0 {
            self.inner
                .delivery
                .delivered
                .get_or_create(&stream(s))
                .inc_by(n);
        }
    }

    pub fn observe_request(&self, s: &str, bytes: u64, elapsed: Duration, answered: bool) {
        let labels = stream(s);
        self.inner.delivery.requests.get_or_create(&labels).inc();
        self.inner
            .delivery
            .request_bytes
            .get_or_create(&labels)
            .inc_by(bytes);
        if answered {
            self.inner
                .delivery
                .latency
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
        }
    }

    /// A ListShards request of stream `s` failed with `code`.
    pub fn list_shards_failed(&self, s: &str, code: &str) {
        self.inner
            .delivery
            .list_shards_errors
            .get_or_create(&CodeLabels {
                stream: s.into(),
                code: code.into(),
            })
            .inc();
    }

    pub fn request_failed(&self, s: &str, code: &str) {
        self.inner
            .delivery
            .request_errors
            .get_or_create(&CodeLabels {
                stream: s.into(),
                code: code.into(),
            })
            .inc();
    }

    pub fn entry_failed(&self, s: &str, code: &str) {
        self.inner
            .delivery
            .entry_errors
            .get_or_create(&CodeLabels {
                stream: s.into(),
                code: code.into(),
            })
            .inc();
    }

    /// A request or an entry of stream `s` was refused for throttling.
    pub fn throttled(&self, s: &str) {
        self.inner
            .delivery
            .throttles
            .get_or_create(&stream(s))
            .inc();
    }

    /// A Firehose record of stream `s` was sent with `lines` lines in it.
    pub fn packed(&self, s: &str, lines: usize) {
        self.inner
            .delivery
            .lines_per_record
            .get_or_create(&stream(s))
            .observe(lines as f64);
    }

    pub fn retried(&self, s: &str, n: u64) {
        self.inner
            .delivery
            .retried
            .get_or_create(&stream(s))
            .inc_by(n);
    }

    pub fn failed(&self, s: &str, n: u64) {
        self.inner
            .delivery
            .failed
            .get_or_create(&stream(s))
            .inc_by(n);
    }

    pub fn wrong_shard(&self, s: &str, n: u64) {
        self.inner
            .delivery
            .wrong_shard
            .get_or_create(&stream(s))
            .inc_by(n);
    }

    pub fn misrouted(&self, s: &str, n: u64) {
        self.inner
            .delivery
            .misrouted
            .get_or_create(&stream(s))
            .inc_by(n);
    }

    pub fn shard_map_refreshed(&self, s: &str) {
        self.inner
            .delivery
            .shard_map_refreshes
            .get_or_create(&stream(s))
            .inc();
    }

    pub fn shard_map_changed(&self, s: &str) {
        self.inner
            .delivery
            .shard_map_changes
            .get_or_create(&stream(s))
            .inc();
    }

    /// Records delivered to `stream` so far.
    pub fn delivered_count(&self, s: &str) -> u64 {
        self.inner
            .delivery
            .delivered
            .get_or_create(&stream(s))
            .get()
    }

    /// `n` lines of `source` longer than the record limit were split or truncated.
    pub fn oversized(&self, source: Source, action: LineAction, n: u64) {
        self.inner
            .sources
            .oversized
            .get_or_create(&LineLabels { source, action })
            .inc_by(n);
    }

    /// `n` lines of `source` were not valid UTF-8 (`action`: what was done).
    pub fn invalid_utf8(&self, source: Source, action: LineAction, n: u64) {
        self.inner
            .sources
            .invalid_utf8
            .get_or_create(&LineLabels { source, action })
            .inc_by(n);
    }

    /// `n` records of `source` got a random key for want of their key field.
    pub fn partition_key_fallback(&self, source: Source, n: u64) {
        self.inner
            .sources
            .key_fallbacks
            .get_or_create(&SourceLabels { source })
            .inc_by(n);
    }

    /// `n` lines of `block` parsed.
    pub fn parsed(&self, block: &str, n: u64) {
        let labels = BlockLabels {
            block: block.to_owned(),
        };
        self.inner.sources.parsed.get_or_create(&labels).inc_by(n);
    }

    /// `n` lines of `block` its parser could not read for `reason`, and what
    /// was done with them (`action`).
    pub fn parse_errors(&self, block: &str, reason: &str, action: &str, n: u64) {
        let labels = ParseLabels {
            block: block.to_owned(),
            reason: reason.to_owned(),
            action: action.to_owned(),
        };
        self.inner
            .sources
            .parse_errors
            .get_or_create(&labels)
            .inc_by(n);
    }

    /// A tailed file event.
    pub fn file_event(&self, event: FileEvent) {
        self.inner
            .sources
            .file_events
            .get_or_create(&FileEventLabels { event })
            .inc();
    }

    /// Lines split or truncated so far (for tests and status).
    #[cfg(test)]
    pub fn oversized_count(&self, source: Source, action: LineAction) -> u64 {
        self.inner
            .sources
            .oversized
            .get_or_create(&LineLabels { source, action })
            .get()
    }

    /// Invalid UTF-8 lines so far (for tests and status).
    #[cfg(test)]
    pub fn invalid_utf8_count(&self, source: Source, action: LineAction) -> u64 {
        self.inner
            .sources
            .invalid_utf8
            .get_or_create(&LineLabels { source, action })
            .get()
    }

    /// Partition key fallbacks so far (for tests and status).
    #[cfg(test)]
    pub fn partition_key_fallback_count(&self, source: Source) -> u64 {
        self.inner
            .sources
            .key_fallbacks
            .get_or_create(&SourceLabels { source })
            .get()
    }

    /// File events so far (for tests and status).
    /// The ingest memory budget: its size and the bytes charged now.
    pub fn set_ingest_budget(&self, max: u64, charged: u64) {
        self.inner.sources.ingest_memory_max.set(max as i64);
        self.inner.sources.ingest_memory.set(charged as i64);
    }

    /// A connection waits for room in the ingest memory budget.
    pub fn ingest_budget_waited(&self) {
        self.inner.sources.ingest_waits.inc();
    }

    /// Bytes of the ingest memory budget charged now (tests and status).
    pub fn ingest_memory_bytes(&self) -> u64 {
        self.inner.sources.ingest_memory.get().max(0) as u64
    }

    /// Waits for room in the ingest memory budget so far (tests).
    pub fn ingest_budget_waits(&self) -> u64 {
        self.inner.sources.ingest_waits.get()
    }
}
