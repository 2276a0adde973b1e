//! The end report: `main` hands [`report`] what the run left (`Shared`, the
//! [`Tally`] of the stream, the drain and the last stop) and gets the verdict. It
//! owns no state; it also reads the agent's JSON logs in the work directory for
//! their ERROR and WARN lines.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::kinesis::INITIAL_SHARDS;
use crate::record::Source;
use crate::shared::Shared;
use crate::tally::Tally;

/// What the run left for the report.
pub(crate) struct Report<'a> {
    pub(crate) state: &'a Shared,
    pub(crate) tally: &'a Tally,
    /// The records that carried the user records, and what they are called.
    pub(crate) records: u64,
    pub(crate) records_name: &'static str,
    /// Duplicates by cause, where the destination can tell (Firehose).
    pub(crate) duplicate_causes: Vec<(String, u64)>,
    pub(crate) drained: bool,
    pub(crate) drain_time: Duration,
    pub(crate) final_exit: Result<ExitStatus, String>,
    pub(crate) work: &'a Path,
}

/// What the tally found against what was sent.
struct Counts {
    sent: usize,
    lost: Vec<(Source, u64)>,
    /// Sent and delivered, but only in aggregates outside their shard's range.
    kcl_lost: usize,
    acked: u64,
    unconfirmed: u64,
    refused: u64,
    unconfirmed_delivered: usize,
    refused_delivered: usize,
    /// Ids in the stream that were never produced.
    never_sent: usize,
}

impl Counts {
    fn of(s: &Shared, t: &Tally) -> Counts {
        let (acked, unconfirmed, refused) = s.socket_counts();
        let sent = t.sent(s);
        let (unconfirmed_delivered, refused_delivered) = t.socket_delivered(s);
        Counts {
            sent: sent.len(),
            lost: t.lost(s),
            kcl_lost: t.kcl_lost(&sent),
            acked,
            unconfirmed,
            refused,
            unconfirmed_delivered,
            refused_delivered,
            never_sent: t.never_sent(s),
        }
    }
}

/// Prints the figures; true if the run passed.
pub(crate) fn report(r: &Report) -> bool {
    let s = r.state;
    let c = Counts::of(s, r.tally);
    let failed = s.metric("shardline_records_failed_total", None);
    println!();
    println!("soak results");
    print_records(r, &c);
    print_faults(s);
    print_agent(r, failed);
    let final_ok = print_end(r);

    let passed = c.lost.is_empty()
        && c.kcl_lost == 0
        && r.drained
        && final_ok
        && failed == 0
        && c.refused_delivered == 0
        && c.never_sent == 0
        && r.tally.unreadable() == 0
        && s.unexpected_exits.load(Ordering::Relaxed) == 0
        && s.failed_stops.load(Ordering::Relaxed) == 0;
    println!("  result          {}", if passed { "PASS" } else { "FAIL" });
    passed
}

/// Sent, delivered, lost and duplicated records.
fn print_records(r: &Report, c: &Counts) {
    let t = r.tally;
    let written = |src: Source| r.state.written[src as usize].load(Ordering::Relaxed);
    let (unconfirmed, unconfirmed_delivered) = (c.unconfirmed, c.unconfirmed_delivered);
    let (refused, refused_delivered) = (c.refused, c.refused_delivered);
    println!(
        "  sent            {} = files {} (rename {}, copytruncate {}) + socket {} acknowledged",
        c.sent,
        written(Source::FileRename) + written(Source::FileCopytruncate),
        written(Source::FileRename),
        written(Source::FileCopytruncate),
        c.acked
    );
    println!(
        "  unconfirmed     {unconfirmed} socket records without an answer ({unconfirmed_delivered} of them delivered)"
    );
    if refused > 0 {
        println!(
            "  refused         {refused} socket records ({refused_delivered} of them delivered)"
        );
    }
    println!(
        "  delivered       {} unique ids ({} user records in {} {})",
        t.delivered_unique(),
        t.delivered_total(),
        r.records,
        r.records_name
    );
    println!("  lost            {}", c.lost.len());
    for (src, seq) in c.lost.iter().take(20) {
        println!("                  {}-{seq:010}", src.tag());
    }
    println!("  duplicated      {}", t.duplicated());
    for (cause, n) in &r.duplicate_causes {
        println!("                  {n:>6} × {cause}");
    }
    println!(
        "  shard placement {} copies in aggregates a KCL consumer drops (a record outside the shard's range); \
         {} sent records with no copy it keeps",
        t.outside(),
        c.kcl_lost
    );
    if t.unreadable() > 0 || c.never_sent > 0 {
        println!(
            "  unexpected      {} records without an id, {} ids never sent",
            t.unreadable(),
            c.never_sent
        );
    }
}

/// The faults applied and the files' rotations.
fn print_faults(s: &Shared) {
    let shards: Vec<String> = std::iter::once(INITIAL_SHARDS)
        .chain(
            s.shard_history
                .lock()
                .expect("not poisoned")
                .iter()
                .copied(),
        )
        .map(|n| n.to_string())
        .collect();
    println!(
        "  faults          {} SIGKILLs, {} SIGTERM restarts, {} outages ({} s), {} reshards ({}), \
         injected {} throttled entries, {} HTTP 500s, {} resets",
        s.kills.load(Ordering::Relaxed),
        s.terms.load(Ordering::Relaxed),
        s.outages.load(Ordering::Relaxed),
        s.outage_ms.load(Ordering::Relaxed) / 1000,
        s.reshards.load(Ordering::Relaxed),
        shards.join("→"),
        s.injected_throttles.load(Ordering::Relaxed),
        s.injected_500s.load(Ordering::Relaxed),
        s.injected_resets.load(Ordering::Relaxed),
    );
    let (failures, slow) = (
        s.injected_failures.load(Ordering::Relaxed),
        s.injected_slow.load(Ordering::Relaxed),
    );
    if failures + slow > 0 {
        println!(
            "                  {failures} InternalFailure records, {slow} slow or late answers"
        );
    }
    println!(
        "  file rotations  rename {}, copytruncate {}",
        s.rotations[0].load(Ordering::Relaxed),
        s.rotations[1].load(Ordering::Relaxed)
    );
}

/// The agent's own counters, request errors and log lines.
fn print_agent(r: &Report, failed: u64) {
    let s = r.state;
    let throttled = s.metric("shardline_throttles_total", None);
    println!(
        "  agent           {} runs; throttles {throttled}, misrouted {}, wrong-shard results {}, \
         shard map changes {}, retried {}, dead-lettered {failed}",
        s.incarnations.load(Ordering::Relaxed) + 1,
        s.metric("shardline_records_misrouted_total", None),
        s.metric("shardline_wrong_shard_results_total", None),
        s.metric("shardline_shard_map_changes_total", None),
        s.metric("shardline_records_retried_total", None),
    );
    for (what, family) in [
        ("request errors", "shardline_put_records_errors_total"),
        ("entry errors  ", "shardline_put_records_entry_errors_total"),
    ] {
        let by_label = s.metric_by_label(family);
        if !by_label.is_empty() {
            let list: Vec<String> = by_label
                .iter()
                .map(|(labels, n)| format!("{labels}: {n}"))
                .collect();
            println!("  {what}  {}", list.join(", "));
        }
    }
    let (errors, warnings, messages) = agent_log_summary(r.work);
    println!("  agent log       {errors} ERROR, {warnings} WARN lines");
    for (message, n) in messages.iter().take(12) {
        println!("                  {n:>6} × {message}");
    }
}

/// The drain and the last graceful stop; true if that stop succeeded.
fn print_end(r: &Report) -> bool {
    println!(
        "  drain           {} in {:.1} s after the load stopped",
        if r.drained {
            "spool empty"
        } else {
            "NOT FINISHED"
        },
        r.drain_time.as_secs_f64()
    );
    let final_ok = matches!(&r.final_exit, Ok(e) if e.success());
    println!("  final stop      {:?}", r.final_exit);
    final_ok
}

/// Counts the ERROR and WARN lines of every agent log in `work`, and the
/// messages of both, most frequent first.
fn agent_log_summary(work: &Path) -> (u64, u64, Vec<(String, u64)>) {
    let (mut errors, mut warnings) = (0, 0);
    let mut messages: HashMap<String, u64> = HashMap::new();
    let logs = std::fs::read_dir(work)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"));
    for entry in logs {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let level = v["level"].as_str().unwrap_or_default();
            match level {
                "ERROR" => errors += 1,
                "WARN" => warnings += 1,
                _ => continue,
            }
            let message = v["message"].as_str().unwrap_or_default();
            *messages.entry(format!("{level} {message}")).or_default() += 1;
        }
    }
    let mut messages: Vec<_> = messages.into_iter().collect();
    messages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (errors, warnings, messages)
}
