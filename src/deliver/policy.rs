//! What becomes of records that are not delivered as they are: the one place a
//! record leaves the spool without Kinesis taking it.
//!
//! - An entry Kinesis refused is retried, unless the refusal is for good
//!   ([`ErrorClass::Permanent`]): then an aggregate of several records is split so
//!   each record is tried alone, and a lone record is given up.
//! - A request refused as a whole is retried after the stream backs off; refused
//!   for good, each of its aggregates is sent again in a request of its own, to
//!   find the one Kinesis objects to.
//! - A record older than `max_record_age` is given up instead of being retried.
//! - A record larger than its stream's maximum record size is given up before it
//!   is sent.
//! - Giving up writes the records to the dead-letter file (fsynced), counts them
//!   (`shardline_records_failed_total`), reports them on the failure channel and
//!   acks them in the ledger, which retires them at its next commit. If the
//!   dead-letter file cannot be written, nothing is given up: the records stay
//!   spooled and are handed back.
//!
//! [`Policy`] owns the dead-letter file, the failure channel, the age limit and
//! its sweep timer, and the limit on how often problems are logged. Only the
//! stream's dispatcher holds it: it lends the [`Ledger`] for each call and applies
//! the verdict to its router and pacing, which the policy never touches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dead_letter::{DeadLetter, Failure};
use super::kinesis::{ErrorClass, ErrorCode, KinesisError};
use super::ledger::Ledger;
use super::router::Ready;
use super::LOG_INTERVAL;
use crate::aggregate::Pending;
use crate::metrics::Metrics;

/// How often records waiting for a shard map are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// What becomes of an aggregate refused for good.
#[derive(Debug)]
pub(super) enum Fate {
    /// It holds several records: each goes back to the front of the queue in an
    /// aggregate of its own, sent alone.
    Split(Ready),
    /// Given up: in the dead-letter file, counted, reported, and acked in the
    /// ledger (retired at its next commit).
    GaveUp,
    /// The dead-letter file could not be written: the records stay spooled. The
    /// stream pauses and they wait to be routed again.
    Kept(Vec<Pending>),
}

/// What to do with an aggregate whose entry Kinesis refused.
#[derive(Debug)]
pub(super) enum EntryVerdict {
    /// Send it again (its shard backs off).
    Retry(Ready),
    /// Refused for good.
    Final(Fate),
}

/// What to do with the aggregates of a request that failed as a whole.
#[derive(Debug)]
pub(super) enum RequestVerdict {
    /// The stream backs off as this class asks, and they go back to the queue.
    Retry(Vec<Ready>, ErrorClass),
    /// Refused for good: each goes back to the queue marked to be sent alone.
    SendAlone(Vec<Ready>),
    /// The one aggregate sent alone was refused for good.
    Final(Fate),
}

/// Records sorted by age: those to route, and expired ones that could not be
/// given up (they wait for a map, still spooled).
#[derive(Debug)]
pub(super) struct Sorted {
    /// Not expired: route them.
    pub(super) fresh: Vec<Pending>,
    /// Expired, but the dead-letter file could not be written.
    pub(super) kept: Vec<Pending>,
}

/// One stream's policy for refused and expired records.
pub(super) struct Policy {
    /// The stream's name, in logs, failures and metric labels.
    stream: Arc<str>,
    /// Refusal and failed-record counters, and the stream's health.
    metrics: Metrics,
    /// Where given-up records are written before they leave the spool; `None`:
    /// they are only logged and reported.
    dead_letter: Option<Arc<DeadLetter>>,
    /// Where given-up records are reported (if anyone listens).
    failures: mpsc::Sender<Failure>,
    /// Records older than this are given up instead of retried; `None`: never.
    max_record_age: Option<Duration>,
    /// When the records waiting for a shard map are next checked for expiry.
    next_sweep: Option<Instant>,
    /// When a delivery problem was last logged (at most one per `LOG_INTERVAL`).
    last_problem_log: Option<Instant>,
}

impl Policy {
    pub(super) fn new(
        stream: Arc<str>,
        metrics: Metrics,
        dead_letter: Option<Arc<DeadLetter>>,
        failures: mpsc::Sender<Failure>,
        max_record_age: Option<Duration>,
    ) -> Policy {
        Policy {
            stream,
            metrics,
            dead_letter,
            failures,
            max_record_age,
            next_sweep: None,
            last_problem_log: None,
        }
    }

    /// Kinesis refused the entry that carried `item`: counted, then retried or,
    /// refused for good, isolated.
    pub(super) fn entry_refused(
        &mut self,
        item: Ready,
        code: &ErrorCode,
        message: &str,
        ledger: &mut Ledger,
    ) -> EntryVerdict {
        let class = code.class();
        self.metrics.entry_failed(&self.stream, code.as_str());
        if class == ErrorClass::Throttled {
            self.metrics.throttled(&self.stream);
        }
        if class == ErrorClass::Permanent {
            return EntryVerdict::Final(self.isolate(item, code, message, ledger));
        }
        if class != ErrorClass::Throttled {
            self.log_problem(code, message);
        }
        EntryVerdict::Retry(item)
    }

    /// Notes a response's first refused entry in the stream's health (one per
    /// response, not per entry).
    pub(super) fn response_refused(&self, code: &ErrorCode, message: &str) {
        self.metrics
            .note_error(&self.stream, code.as_str(), code.trouble(), message);
    }

    /// A request failed as a whole: counted and logged, then retried after a
    /// backoff; refused for good, its aggregates are sent alone, and one already
    /// sent alone is isolated.
    pub(super) fn request_failed(
        &mut self,
        items: Vec<Ready>,
        e: &KinesisError,
        ledger: &mut Ledger,
    ) -> RequestVerdict {
        let class = e.code.class();
        self.metrics.request_failed(&self.stream, e.code.as_str());
        if class == ErrorClass::Throttled {
            self.metrics.throttled(&self.stream);
        }
        self.metrics
            .note_error(&self.stream, e.code.as_str(), e.code.trouble(), &e.message);
        self.log_problem(&e.code, &e.message);
        if class != ErrorClass::Permanent {
            return RequestVerdict::Retry(items, class);
        }
        if items.len() == 1 && items[0].alone {
            let item = items.into_iter().next().expect("one item");
            return RequestVerdict::Final(self.isolate(item, &e.code, &e.message, ledger));
        }
        let items = items
            .into_iter()
            .map(|mut i| {
                i.alone = true;
                i
            })
            .collect();
        RequestVerdict::SendAlone(items)
    }

    /// An aggregate refused for good: split if it holds several records, given up
    /// if it holds one.
    fn isolate(
        &mut self,
        item: Ready,
        code: &ErrorCode,
        message: &str,
        ledger: &mut Ledger,
    ) -> Fate {
        if item.agg.len() > 1 {
            return Fate::Split(item);
        }
        let kept = self.give_up(item.agg.into_records(), code, message, ledger);
        if kept.is_empty() {
            Fate::GaveUp
        } else {
            Fate::Kept(kept)
        }
    }

    /// Whether an aggregate holds a record older than `max_record_age` (it is then
    /// dissolved rather than retried).
    pub(super) fn holds_expired(&self, item: &Ready, ledger: &Ledger) -> bool {
        self.max_record_age.is_some() && item.agg.records().iter().any(|p| ledger.is_expired(p))
    }

    /// Gives up the records older than `max_record_age` (and commits the ledger if
    /// any was); returns the others to route, and those that could not be given up.
    pub(super) fn expire(&mut self, records: Vec<Pending>, ledger: &mut Ledger) -> Sorted {
        let Some(max) = self.max_record_age else {
            return Sorted {
                fresh: records,
                kept: Vec::new(),
            };
        };
        let (expired, fresh): (Vec<Pending>, Vec<Pending>) =
            records.into_iter().partition(|p| ledger.is_expired(p));
        let mut kept = Vec::new();
        if !expired.is_empty() {
            let message = format!(
                "not delivered within max_record_age_secs ({} s)",
                max.as_secs()
            );
            kept = self.give_up(expired, &ErrorCode::Expired, &message, ledger);
            ledger.commit();
        }
        Sorted { fresh, kept }
    }

    /// Gives up the records larger than `limit`, the stream's maximum record size
    /// (and commits the ledger if any was); returns the others to route, and
    /// those that could not be given up.
    pub(super) fn too_large(
        &mut self,
        records: Vec<Pending>,
        limit: usize,
        ledger: &mut Ledger,
    ) -> Sorted {
        let (large, fresh): (Vec<Pending>, Vec<Pending>) =
            records.into_iter().partition(|p| p.record.size() > limit);
        let mut kept = Vec::new();
        for p in large {
            let message = format!(
                "record of {} bytes exceeds the {limit}-byte maximum record size of stream {:?} (MaxRecordSizeInKiB {}); raise it with UpdateMaxRecordSize, or lower the source's max_record_bytes or max_line_bytes",
                p.record.size(),
                self.stream,
                limit / 1024
            );
            kept.extend(self.give_up(vec![p], &ErrorCode::TooLarge, &message, ledger));
        }
        ledger.commit();
        Sorted { fresh, kept }
    }

    /// Starts the expiry sweep's timer when records wait for a shard map (a
    /// missing stream, say) and an age limit applies. The clock is read only
    /// then: this runs at every turn of the dispatcher's loop.
    pub(super) fn arm_sweep(&mut self, records_waiting: bool, now: impl FnOnce() -> Instant) {
        if self.max_record_age.is_some() && records_waiting && self.next_sweep.is_none() {
            self.next_sweep = Some(now() + EXPIRY_SWEEP);
        }
    }

    /// When the expiry sweep is due.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Whether the records waiting for a map are to be checked for expiry now
    /// (then [`expire`](Self::expire) them); the timer starts again at the next
    /// [`arm_sweep`](Self::arm_sweep).
    pub(super) fn sweep_due(&mut self, now: Instant) -> bool {
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.next_sweep = None;
            return true;
        }
        false
    }

    /// Gives records up for good: writes them to the dead-letter file (fsynced),
    /// reports them on the failure channel, and acks them in the ledger (retired
    /// at its next commit). If the dead-letter file cannot be written they stay
    /// spooled and are returned.
    fn give_up(
        &mut self,
        records: Vec<Pending>,
        code: &ErrorCode,
        message: &str,
        ledger: &mut Ledger,
    ) -> Vec<Pending> {
        let failure = Failure {
            stream: self.stream.to_string(),
            records: records.iter().map(|p| p.record.clone()).collect(),
            code: code.clone(),
            message: message.to_owned(),
        };
        if let Some(dl) = &self.dead_letter {
            if let Err(e) = dl.write(&failure) {
                tracing::error!(
                    stream = %self.stream,
                    path = %dl.path().display(),
                    error = %e,
                    "Writing records to the dead-letter file failed; they stay spooled"
                );
                return records;
            }
        }
        tracing::error!(
            stream = %self.stream,
            code = code.as_str(),
            error = message,
            records = failure.records.len(),
            dead_letter = ?self.dead_letter.as_ref().map(|d| d.path().display().to_string()),
            "Gave up records; they were moved to the dead-letter file"
        );
        self.metrics
            .failed(&self.stream, failure.records.len() as u64);
        for p in &records {
            ledger.refused(p.entry, code, message);
            ledger.ack(p.entry, p.index);
        }
        // Nobody listening, or a slow listener: the dead-letter file has it.
        let _ = self.failures.try_send(failure);
        Vec::new()
    }

    /// Logs a delivery problem the records survive (they stay spooled), at most
    /// once per `LOG_INTERVAL`.
    pub(super) fn log_problem(&mut self, code: &ErrorCode, message: &str) {
        let now = Instant::now();
        if self
            .last_problem_log
            .is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL)
        {
            self.last_problem_log = Some(now);
            tracing::warn!(
                stream = %self.stream,
                code = code.as_str(),
                error = message,
                "The destination refused records; they stay spooled and are retried"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::aggregate::{Aggregator, Format, Limits};
    use crate::intake::{DeliveryError, DeliveryResult, Intake, Outlet};
    use crate::record::UserRecord;
    use crate::spool::{Spool, SpoolOptions};

    const HOUR: Duration = Duration::from_secs(3600);

    /// A stream on a memory spool, its ledger, and a policy writing to a
    /// dead-letter file in a temp dir (or, `unwritable`, under a plain file).
    struct Setup {
        intake: Intake,
        outlet: Outlet,
        ledger: Ledger,
        policy: Policy,
        metrics: Metrics,
        failures: mpsc::Receiver<Failure>,
        dead_letter: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    fn setup(max_record_age: Option<Duration>, unwritable: bool) -> Setup {
        let spool = Spool::open(&SpoolOptions::default()).expect("memory spool");
        let (intake, outlet) = crate::intake::open(spool.stream("s").expect("stream"));
        let ledger = Ledger::new("s".into(), outlet.acks(), max_record_age);
        let dir = tempfile::tempdir().expect("temp dir");
        let parent = if unwritable {
            let file = dir.path().join("a-file");
            std::fs::write(&file, b"").expect("a plain file");
            file
        } else {
            dir.path().to_path_buf()
        };
        let dead_letter = parent.join("dead-letter.jsonl");
        let metrics = Metrics::new();
        let (tx, failures) = mpsc::channel(4);
        let policy = Policy::new(
            "s".into(),
            metrics.clone(),
            Some(Arc::new(DeadLetter::new(dead_letter.clone()))),
            tx,
            max_record_age,
        );
        Setup {
            intake,
            outlet,
            ledger,
            policy,
            metrics,
            failures,
            dead_letter,
            _dir: dir,
        }
    }

    impl Setup {
        /// Spools `n` records (spooled `age` ago) and tracks them in the ledger.
        fn load(
            &mut self,
            n: usize,
            age: Duration,
        ) -> (Vec<Pending>, oneshot::Receiver<DeliveryResult>) {
            let records = (0..n)
                .map(|i| UserRecord::new(format!("k{i}"), format!("record {i}")))
                .collect();
            let (tx, rx) = oneshot::channel();
            self.intake
                .try_push(records, Some(tx))
                .expect("handed over");
            let mut batch = self.outlet.try_recv().expect("a batch");
            batch.spooled_at_ms -= age.as_millis() as u64;
            (self.ledger.track(batch), rx)
        }

        fn counter(&self, name: &str) -> u64 {
            self.metrics.read(name, &[("stream", "s")])
        }

        fn dead_letters(&self) -> Vec<serde_json::Value> {
            std::fs::read_to_string(&self.dead_letter)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect()
        }
    }

    fn ready(records: Vec<Pending>, alone: bool) -> Ready {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_records: 1000,
            format: Format::Kpl,
            packs: None,
        };
        let mut agg = Aggregator::new();
        for p in records {
            agg.try_add(p, &limits).expect("room in the aggregate");
        }
        Ready {
            agg: agg.take(),
            shard: 0,
            map: None,
            generation: 0,
            attempts: 0,
            alone,
        }
    }

    fn invalid() -> ErrorCode {
        ErrorCode::kinesis("ValidationException")
    }

    fn request_error(code: ErrorCode) -> KinesisError {
        KinesisError {
            operation: "PutRecords",
            code,
            message: "refused".into(),
        }
    }

    #[test]
    fn a_record_refused_for_good_goes_to_the_dead_letter_file_and_leaves_the_spool() {
        let mut s = setup(None, false);
        let (pending, mut receipt) = s.load(1, Duration::ZERO);
        let verdict =
            s.policy
                .entry_refused(ready(pending, false), &invalid(), "too big", &mut s.ledger);
        assert!(
            matches!(verdict, EntryVerdict::Final(Fate::GaveUp)),
            "{verdict:?}"
        );
        assert!(receipt.try_recv().is_err(), "retired only at the commit");
        s.ledger.commit();
        assert_eq!(
            receipt.try_recv().unwrap(),
            Err(DeliveryError::Rejected {
                code: "ValidationException".into(),
                message: "too big".into()
            })
        );
        assert_eq!(s.ledger.loaded_bytes(), 0, "the entry left the spool");
        let lines = s.dead_letters();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["code"], "ValidationException");
        assert_eq!(lines[0]["partition_key"], "k0");
        let failure = s.failures.try_recv().expect("reported");
        assert_eq!(failure.records.len(), 1);
        assert_eq!(failure.code, invalid());
        assert_eq!(s.counter("shardline_records_failed_total"), 1);
        assert_eq!(s.counter("shardline_put_records_entry_errors_total"), 1);
    }

    #[test]
    fn an_aggregate_refused_for_good_is_split_to_find_the_culprit() {
        let mut s = setup(None, false);
        let (pending, mut receipt) = s.load(3, Duration::ZERO);
        let verdict =
            s.policy
                .entry_refused(ready(pending, false), &invalid(), "too big", &mut s.ledger);
        match verdict {
            EntryVerdict::Final(Fate::Split(item)) => assert_eq!(item.agg.len(), 3),
            other => panic!("{other:?}"),
        }
        s.ledger.commit();
        assert!(receipt.try_recv().is_err(), "nothing given up yet");
        assert!(s.dead_letters().is_empty());
        assert_eq!(s.counter("shardline_records_failed_total"), 0);
    }

    #[test]
    fn a_throttled_or_transient_refusal_is_retried_and_nothing_is_given_up() {
        let mut s = setup(None, false);
        for code in ["ProvisionedThroughputExceededException", "InternalFailure"] {
            let (pending, mut receipt) = s.load(1, Duration::ZERO);
            let code = ErrorCode::kinesis(code);
            let verdict =
                s.policy
                    .entry_refused(ready(pending, false), &code, "later", &mut s.ledger);
            assert!(matches!(verdict, EntryVerdict::Retry(_)), "{verdict:?}");
            s.ledger.commit();
            assert!(receipt.try_recv().is_err(), "still spooled");
        }
        assert!(s.dead_letters().is_empty());
        assert!(s.failures.try_recv().is_err());
        assert_eq!(s.counter("shardline_records_failed_total"), 0);
        assert_eq!(s.counter("shardline_put_records_entry_errors_total"), 2);
    }

    #[test]
    fn an_unwritable_dead_letter_file_keeps_the_records_spooled() {
        let mut s = setup(None, true);
        let (pending, mut receipt) = s.load(1, Duration::ZERO);
        let verdict =
            s.policy
                .entry_refused(ready(pending, false), &invalid(), "too big", &mut s.ledger);
        match verdict {
            EntryVerdict::Final(Fate::Kept(records)) => assert_eq!(records.len(), 1),
            other => panic!("{other:?}"),
        }
        s.ledger.commit();
        assert!(receipt.try_recv().is_err(), "still spooled");
        assert!(s.ledger.loaded_bytes() > 0);
        assert!(s.failures.try_recv().is_err(), "not reported");
        assert_eq!(s.counter("shardline_records_failed_total"), 0);
    }

    #[test]
    fn expired_records_are_given_up_and_reported_and_fresh_ones_returned() {
        let mut s = setup(Some(HOUR), false);
        let (old, old_receipt) = s.load(2, 2 * HOUR);
        let (young, mut young_receipt) = s.load(1, Duration::ZERO);
        let young_entry = young[0].entry;
        let all: Vec<Pending> = old.into_iter().chain(young).collect();
        let sorted = s.policy.expire(all, &mut s.ledger);
        assert_eq!(sorted.fresh.len(), 1);
        assert_eq!(sorted.fresh[0].entry, young_entry);
        assert!(sorted.kept.is_empty());
        match old_receipt.blocking_recv().unwrap() {
            Err(DeliveryError::Rejected { code, .. }) => assert_eq!(code, "Expired"),
            other => panic!("receipt resolved to {other:?}"),
        }
        assert!(young_receipt.try_recv().is_err());
        let failure = s.failures.try_recv().expect("reported");
        assert_eq!(failure.code, ErrorCode::Expired);
        assert_eq!(failure.records.len(), 2);
        assert_eq!(s.dead_letters().len(), 2);
        assert_eq!(s.counter("shardline_records_failed_total"), 2);
    }

    #[test]
    fn without_an_age_limit_nothing_expires() {
        let mut s = setup(None, false);
        let (old, _receipt) = s.load(2, 2 * HOUR);
        let item = ready(old.clone(), false);
        assert!(!s.policy.holds_expired(&item, &s.ledger));
        let sorted = s.policy.expire(old, &mut s.ledger);
        assert_eq!(sorted.fresh.len(), 2);
        s.policy.arm_sweep(true, Instant::now);
        assert_eq!(s.policy.next_sweep(), None);
    }

    #[test]
    fn an_aggregate_holding_an_expired_record_is_seen() {
        let mut s = setup(Some(HOUR), false);
        let (old, _r1) = s.load(1, 2 * HOUR);
        let (young, _r2) = s.load(1, Duration::ZERO);
        assert!(!s
            .policy
            .holds_expired(&ready(young.clone(), false), &s.ledger));
        let both = young.into_iter().chain(old).collect();
        assert!(s.policy.holds_expired(&ready(both, false), &s.ledger));
    }

    #[test]
    fn the_expiry_sweep_is_due_a_second_after_records_start_waiting() {
        let mut s = setup(Some(HOUR), false);
        let now = Instant::now();
        s.policy.arm_sweep(false, || now);
        assert_eq!(s.policy.next_sweep(), None, "nothing waits");
        s.policy.arm_sweep(true, || now);
        s.policy.arm_sweep(true, || now + EXPIRY_SWEEP / 2);
        assert_eq!(s.policy.next_sweep(), Some(now + EXPIRY_SWEEP));
        assert!(!s.policy.sweep_due(now));
        assert!(s.policy.sweep_due(now + EXPIRY_SWEEP));
        assert_eq!(s.policy.next_sweep(), None);
        assert!(!s.policy.sweep_due(now + EXPIRY_SWEEP));
    }

    #[test]
    fn a_failed_request_is_retried_with_its_class() {
        let mut s = setup(None, false);
        let (pending, _receipt) = s.load(1, Duration::ZERO);
        let e = request_error(ErrorCode::kinesis("ResourceNotFoundException"));
        match s
            .policy
            .request_failed(vec![ready(pending, false)], &e, &mut s.ledger)
        {
            RequestVerdict::Retry(items, class) => {
                assert_eq!(items.len(), 1);
                assert_eq!(class, ErrorClass::Environment);
            }
            other => panic!("{other:?}"),
        }
        let errors = s.metrics.read(
            "shardline_put_records_errors_total",
            &[("stream", "s"), ("code", "ResourceNotFoundException")],
        );
        assert_eq!(errors, 1);
    }

    #[test]
    fn a_request_refused_for_good_sends_each_aggregate_alone_then_gives_up_the_culprit() {
        let mut s = setup(None, false);
        let (a, _ra) = s.load(1, Duration::ZERO);
        let (b, mut rb) = s.load(1, Duration::ZERO);
        let e = request_error(invalid());
        let items = vec![ready(a, false), ready(b, false)];
        let alone = match s.policy.request_failed(items, &e, &mut s.ledger) {
            RequestVerdict::SendAlone(items) => items,
            other => panic!("{other:?}"),
        };
        assert_eq!(alone.len(), 2);
        assert!(alone.iter().all(|i| i.alone));
        assert!(s.dead_letters().is_empty());
        let culprit = alone.into_iter().nth(1).expect("two items");
        let verdict = s.policy.request_failed(vec![culprit], &e, &mut s.ledger);
        assert!(
            matches!(verdict, RequestVerdict::Final(Fate::GaveUp)),
            "{verdict:?}"
        );
        s.ledger.commit();
        assert!(matches!(
            rb.try_recv(),
            Ok(Err(DeliveryError::Rejected { .. }))
        ));
        assert_eq!(s.dead_letters().len(), 1);
        assert_eq!(s.counter("shardline_records_failed_total"), 1);
    }
}
