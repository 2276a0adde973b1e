//! The end report: what the run measured, as a table and as JSON. [`Report`] is
//! built by `fleet` from the parts' results with [`Report::new`]; `main` prints
//! it and takes the exit status from [`Report::passed`]. The statistics (Jain's
//! index, percentiles, the capacity integral, ListShards per reshard) are small
//! functions here, each tested.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::agents::Usage;
use super::audit::Verdict;
use super::model::Reshard;
use super::tap::{AgentCounts, ListShardsCall, Totals};

/// Bytes per second a shard takes.
pub(crate) const SHARD_BYTES_PER_SEC: f64 = 1_048_576.0;
/// How long after a reshard its ListShards calls are counted (cut short by the
/// next reshard).
const RESHARD_WINDOW: Duration = Duration::from_secs(30);

/// Min, median and max of a sample.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(crate) struct Spread {
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// `min 1.00 median 2.00 max 3.00`, each with `unit`.
    fn text(&self, unit: &str) -> String {
        format!(
            "min {:.2}{unit}  median {:.2}{unit}  max {:.2}{unit}",
            self.min, self.median, self.max
        )
    }

    pub(crate) fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        Spread {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
        }
    }
}

/// Percentiles of the write-to-first-accept latency, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Latencies {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    /// Lines timed.
    pub(crate) lines: usize,
}

impl Latencies {
    /// From a sorted sample in microseconds.
    fn of(sorted_us: &[u64]) -> Latencies {
        let ms = |us: u64| us as f64 / 1000.0;
        Latencies {
            p50: ms(percentile(sorted_us, 0.5)),
            p99: ms(percentile(sorted_us, 0.99)),
            max: ms(sorted_us.last().copied().unwrap_or(0)),
            lines: sorted_us.len(),
        }
    }
}

/// ListShards calls in the window after one reshard.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ReshardCalls {
    pub(crate) kind: &'static str,
    pub(crate) window_s: f64,
    pub(crate) total: u64,
    pub(crate) refused: u64,
    /// Calls per agent (every agent, zeros too).
    pub(crate) per_agent: Spread,
}

/// ListShards calls of the agents.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ListShardsReport {
    pub(crate) total: u64,
    /// Refused with `LimitExceededException`.
    pub(crate) refused: u64,
    pub(crate) per_agent: Spread,
    pub(crate) per_reshard: Vec<ReshardCalls>,
}

/// The run's settings, as the report repeats them.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Settings {
    pub(crate) agents: usize,
    pub(crate) shards: i32,
    pub(crate) load: f64,
    pub(crate) secs: f64,
    pub(crate) line_bytes: usize,
    pub(crate) seed: u64,
    pub(crate) partition_key: String,
    pub(crate) latency_ms: f64,
    pub(crate) latency_p99_ms: f64,
    pub(crate) list_shards_tps: u32,
}

/// Everything the run measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) settings: Settings,
    /// Length of the load period (the drain excluded), seconds.
    pub(crate) load_s: f64,
    /// Bytes written to the agents' files during the load.
    pub(crate) offered_bytes: u64,
    /// ∫ open shards × 1 MiB/s dt over the load period.
    pub(crate) capacity_bytes: f64,
    /// Data + partition key bytes of entries accepted during the load period.
    pub(crate) accepted_bytes: u64,
    /// accepted_bytes / capacity_bytes.
    pub(crate) utilisation: f64,
    /// Entries during the load period, all agents.
    pub(crate) entries: AgentCounts,
    /// Throttled entries per accepted entry, load period.
    pub(crate) throttled_per_accepted: f64,
    /// Jain's index over per-agent accepted bytes, load period.
    pub(crate) jain: f64,
    /// Each agent's entries during the load period, by agent number.
    pub(crate) per_agent: Vec<AgentCounts>,
    /// From a line's write to its first accept (all lines).
    pub(crate) latency_ms: Latencies,
    pub(crate) list_shards: ListShardsReport,
    pub(crate) reshards: Vec<Reshard>,
    /// Per agent, read just before SIGTERM.
    pub(crate) cpu_secs: Spread,
    pub(crate) peak_rss_mib: Spread,
    /// Whether every written line was accepted in place before the drain timeout.
    pub(crate) drained: bool,
    pub(crate) drain_s: f64,
    /// Agents that failed a graceful stop (or exited on their own).
    pub(crate) failed_stops: usize,
    pub(crate) audit: Verdict,
}

/// What `fleet` hands the report.
pub(crate) struct Inputs<'a> {
    pub(crate) settings: Settings,
    pub(crate) load: (Instant, Instant),
    /// When the agents were told to stop: the last reshard's window ends there.
    pub(crate) stopped: Instant,
    pub(crate) offered_bytes: u64,
    pub(crate) reshards: &'a [Reshard],
    /// Counters when the load stopped.
    pub(crate) at_load_end: &'a Totals,
    pub(crate) latencies_us: &'a [u64],
    pub(crate) list_shards: &'a [ListShardsCall],
    pub(crate) usage: &'a [Usage],
    pub(crate) drained: bool,
    pub(crate) drain_s: f64,
    pub(crate) failed_stops: usize,
    pub(crate) audit: Verdict,
}

impl Report {
    pub(crate) fn new(i: Inputs<'_>) -> Report {
        let (start, end) = i.load;
        let capacity_bytes = capacity_bytes(i.settings.shards as usize, i.reshards, start, end);
        let entries = i.at_load_end.sum();
        let per_agent: Vec<f64> = i
            .at_load_end
            .agents
            .iter()
            .map(|a| a.accepted_bytes as f64)
            .collect();
        let agents = i.settings.agents;
        Report {
            load_s: end.duration_since(start).as_secs_f64(),
            offered_bytes: i.offered_bytes,
            capacity_bytes,
            accepted_bytes: entries.accepted_bytes,
            utilisation: entries.accepted_bytes as f64 / capacity_bytes.max(1.0),
            throttled_per_accepted: entries.throttled_entries as f64
                / entries.accepted_entries.max(1) as f64,
            entries,
            jain: jain(&per_agent),
            per_agent: i.at_load_end.agents.clone(),
            latency_ms: Latencies::of(i.latencies_us),
            list_shards: list_shards(i.list_shards, i.reshards, agents, i.stopped),
            reshards: i.reshards.to_vec(),
            cpu_secs: Spread::of(i.usage.iter().map(|u| u.cpu_secs).collect()),
            peak_rss_mib: Spread::of(
                i.usage
                    .iter()
                    .map(|u| u.peak_rss_bytes as f64 / 1_048_576.0)
                    .collect(),
            ),
            drained: i.drained,
            drain_s: i.drain_s,
            failed_stops: i.failed_stops,
            audit: i.audit,
            settings: i.settings,
        }
    }

    /// The report as a table.
    pub(crate) fn table(&self) -> String {
        let mut rows = self.load_rows();
        rows.extend(self.agent_rows());
        rows.extend(self.audit_rows());
        rows.iter()
            .map(|(k, v)| format!("  {k:<36} {v}\n"))
            .collect()
    }

    /// The settings and what the stream took during the load.
    fn load_rows(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        let mib = |b: f64| b / SHARD_BYTES_PER_SEC;
        let offered = mib(self.offered_bytes as f64);
        let e = &self.entries;
        let l = &self.latency_ms;
        vec![
            row(
                "run",
                format!(
                    "{} agents, {} shards, load {:.2}, {:.0} s, {}-byte lines, {}, seed {}",
                    s.agents, s.shards, s.load, s.secs, s.line_bytes, s.partition_key, s.seed
                ),
            ),
            row(
                "model",
                format!(
                    "latency median {} ms, p99 {} ms; ListShards {} per second",
                    s.latency_ms, s.latency_p99_ms, s.list_shards_tps
                ),
            ),
            row(
                "load period (drain excluded)",
                format!("{:.1} s", self.load_s),
            ),
            row(
                "offered",
                format!(
                    "{offered:.1} MiB ({:.2} MiB/s)",
                    offered / self.load_s.max(1e-9)
                ),
            ),
            row(
                "capacity (∫ open shards × 1 MiB/s)",
                format!("{:.1} MiB", mib(self.capacity_bytes)),
            ),
            row(
                "accepted (data + keys)",
                format!("{:.1} MiB", mib(self.accepted_bytes as f64)),
            ),
            row(
                "utilisation of capacity",
                format!("{:.1} %", self.utilisation * 100.0),
            ),
            row(
                "entries accepted / throttled",
                format!(
                    "{} / {} ({:.3} throttled per accepted; {} other failures, {} failed requests)",
                    e.accepted_entries,
                    e.throttled_entries,
                    self.throttled_per_accepted,
                    e.failed_entries,
                    e.failed_requests
                ),
            ),
            row(
                "fairness (Jain, accepted bytes)",
                format!("{:.4}", self.jain),
            ),
            row(
                "write → first accept",
                format!(
                    "p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms ({} lines)",
                    l.p50, l.p99, l.max, l.lines
                ),
            ),
        ]
    }

    /// ListShards calls and what the agents used.
    fn agent_rows(&self) -> Vec<(String, String)> {
        let ls = &self.list_shards;
        let mut rows = vec![row(
            "ListShards (agents)",
            format!(
                "{} calls, {} LimitExceeded; per agent {}",
                ls.total,
                ls.refused,
                ls.per_agent.text("")
            ),
        )];
        for (r, calls) in self.reshards.iter().zip(&ls.per_reshard) {
            rows.push(row(
                &format!(
                    "  after {} at {:.1} s ({:.0} s)",
                    r.kind, r.requested_s, calls.window_s
                ),
                format!(
                    "{} calls, {} refused; per agent {}",
                    calls.total,
                    calls.refused,
                    calls.per_agent.text("")
                ),
            ));
        }
        let spread =
            |f: fn(&AgentCounts) -> f64| Spread::of(self.per_agent.iter().map(f).collect());
        let accepted = spread(|a| a.accepted_bytes as f64 / SHARD_BYTES_PER_SEC);
        rows.push(row("accepted per agent (load)", accepted.text(" MiB")));
        let throttled = spread(|a| a.throttled_entries as f64);
        rows.push(row(
            "throttled entries per agent (load)",
            throttled.text(""),
        ));
        rows.push(row("CPU per agent", self.cpu_secs.text(" s")));
        rows.push(row("peak RSS per agent", self.peak_rss_mib.text(" MiB")));
        rows
    }

    /// The drain and the audit.
    fn audit_rows(&self) -> Vec<(String, String)> {
        let a = &self.audit;
        let drain = if self.drained {
            "complete"
        } else {
            "TIMED OUT"
        };
        vec![
            row("drain", format!("{drain} in {:.1} s", self.drain_s)),
            row("lines written", a.written.to_string()),
            row("lost (never kept by a consumer)", a.lost.to_string()),
            row(
                "duplicates",
                format!(
                    "{} ({:.4} % of written)",
                    a.duplicates,
                    a.duplicate_fraction * 100.0
                ),
            ),
            row("copies in dropped aggregates", a.dropped_copies.to_string()),
            row("unexpected records", a.unexpected.to_string()),
            row("failed agent stops", self.failed_stops.to_string()),
        ]
    }

    /// Nothing lost, and every agent stopped cleanly.
    pub(crate) fn passed(&self) -> bool {
        self.audit.lost == 0 && self.failed_stops == 0
    }
}

/// One row of the table.
fn row(key: &str, value: String) -> (String, String) {
    (key.to_owned(), value)
}

/// Jain's fairness index, (Σx)² / (n·Σx²): 1 when all are equal, 1/n when one
/// takes everything.
pub(crate) fn jain(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let squares: f64 = x.iter().map(|v| v * v).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (x.len() as f64 * squares)
}

/// The `q` quantile of a sorted sample (nearest rank).
pub(crate) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// ∫ open shards × 1 MiB/s dt from `start` to `end`; the shard count changes
/// when a reshard's stream turned active again.
pub(crate) fn capacity_bytes(
    shards: usize,
    reshards: &[Reshard],
    start: Instant,
    end: Instant,
) -> f64 {
    let mut total = 0.0;
    let (mut at, mut open) = (start, shards);
    for r in reshards
        .iter()
        .filter(|r| r.active > start && r.active < end)
    {
        total += r.active.duration_since(at).as_secs_f64() * open as f64;
        (at, open) = (r.active, r.open_shards_after);
    }
    total += end.saturating_duration_since(at).as_secs_f64() * open as f64;
    total * SHARD_BYTES_PER_SEC
}

/// The agents' ListShards calls: all, and in the window after each reshard (to
/// `stopped` at most).
fn list_shards(
    calls: &[ListShardsCall],
    reshards: &[Reshard],
    agents: usize,
    stopped: Instant,
) -> ListShardsReport {
    let by_agent = |from: Instant, to: Instant| {
        let mut n = vec![0u64; agents];
        let (mut total, mut refused) = (0, 0);
        for c in calls.iter().filter(|c| c.at >= from && c.at < to) {
            if let Some(a) = c.agent.filter(|a| *a < agents) {
                n[a] += 1;
                total += 1;
                refused += u64::from(c.refused);
            }
        }
        (
            total,
            refused,
            Spread::of(n.into_iter().map(|v| v as f64).collect()),
        )
    };
    let far = Instant::now() + Duration::from_secs(86_400);
    let earliest = calls
        .iter()
        .map(|c| c.at)
        .min()
        .unwrap_or_else(Instant::now);
    let (total, refused, per_agent) = by_agent(earliest, far);
    let per_reshard = reshards
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let mut to = (r.requested + RESHARD_WINDOW).min(stopped);
            if let Some(next) = reshards.get(k + 1) {
                to = to.min(next.requested);
            }
            let (total, refused, per_agent) = by_agent(r.requested, to);
            ReshardCalls {
                kind: r.kind,
                window_s: to.duration_since(r.requested).as_secs_f64(),
                total,
                refused,
                per_agent,
            }
        })
        .collect();
    ListShardsReport {
        total,
        refused,
        per_agent,
        per_reshard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_is_one_for_equal_shares_and_one_over_n_for_one_taker() {
        assert!((jain(&[5.0, 5.0, 5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[8.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn capacity_follows_the_open_shards() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let reshard = |s, open| Reshard {
            kind: "split",
            requested_s: 0.0,
            active_s: 0.0,
            open_shards_after: open,
            requested: at(s),
            active: at(s),
        };
        let c = capacity_bytes(2, &[reshard(10, 3), reshard(20, 2)], t0, at(30));
        assert_eq!(c, (20.0 + 30.0 + 20.0) * SHARD_BYTES_PER_SEC);
    }
}
