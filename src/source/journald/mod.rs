//! The journald source: entries of the systemd journal, read through
//! `journalctl -o json --follow`, sent as records.
//!
//! **Exactly-once from the journal into the spool.** The journal cursor of the
//! last entry read is the block's checkpoint, written by
//! `Producer::spool_batch` in the *same* spool frame as the records made of the
//! entries up to it (the file source's path). After a crash the spool holds either
//! both or neither, and `journalctl --after-cursor` starts at the first entry that
//! did not reach the spool. Entries a block does not select move the cursor too; a
//! batch of only those writes its checkpoint alone, at most once per
//! [`CHECKPOINT_INTERVAL`].
//!
//! **A child process, not a library.** `journalctl` is how the journal's own
//! project reads it (file format, rotation, vacuuming, other machines' journals,
//! `--directory`); Vector's journald source does the same. A reader thread turns
//! its standard output into lines on a bounded channel, so a full spool holds
//! journalctl back instead of growing memory. A journalctl that exits is started
//! again from the last spooled cursor after a backoff and counted
//! (`shardline_journald_restarts_total`).
//!

mod cursor;
pub(crate) mod entry;
mod journalctl;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::cursor::encode_cursor;
pub(crate) use self::cursor::{checkpoint_name, decode_cursor, CursorError};
use self::entry::Entry;
pub(crate) use self::journalctl::{command, tail_command};
use self::journalctl::{log_stderr, parse_tail_cursor, read_lines, Gate, Line, Running};
use super::log_limit::LogLimit;
pub(crate) use crate::config::journald::{JournaldConfig, Since};
use crate::metrics::{LineAction, RejectReason, Source as SourceKind, SourceError};
use crate::producer::Checkpoint;
use crate::producer::{Pace, ProduceError, Producer};
use crate::record::UserRecord;
use crate::source::format::{Cut, JsonFormatter};
use crate::source::record_id::LastOrigin;

/// Source kind, as it appears in metrics.
pub(crate) const KIND: SourceKind = SourceKind::Journald;
/// A batch (one spool entry) is cut at this many bytes, like the other sources'.
pub(crate) const BATCH_BYTES: usize = super::socket::BATCH_BYTES;
/// ... or at this many records.
pub(crate) const BATCH_RECORDS: usize = 1000;
/// Longest wait for more entries before a batch is spooled.
pub(crate) const LINGER: Duration = Duration::from_millis(50);
/// Longest wait before a cursor moved only by entries the block does not select
/// is written (entries re-read after a crash within it are not selected either).
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Lines of journalctl's output in flight between the reader thread and the
/// batching task: enough to cover a batch...
const LINES_CHANNEL: usize = 1024;
/// ... and at most this many bytes of them (one line is let through whatever
/// its size): what a stalled spool lets journalctl's output take in memory.
pub(crate) const BUFFER_BYTES: usize = 4 << 20;
/// Longest line (entry) of journalctl's output read; the rest of a longer one is
/// not kept, the entry is skipped and counted (journald itself keeps entries far
/// smaller unless configured not to).
pub(crate) const MAX_LINE_BYTES: usize = 8 << 20;
/// First wait before journalctl is started again; doubles up to
/// [`RESTART_MAX`], and starts over once a run lasted [`RESTART_RESET`].
pub(crate) const RESTART_MIN: Duration = Duration::from_millis(500);
pub(crate) const RESTART_MAX: Duration = Duration::from_secs(30);
pub(crate) const RESTART_RESET: Duration = Duration::from_secs(60);
/// Longest wait at shutdown for the batch in hand to reach the spool (if it does
/// not, it is read again at the next start).
const STOP_FLUSH: Duration = Duration::from_secs(2);
/// Lines of journalctl's standard error logged per run.
pub(super) const STDERR_LINES: usize = 20;
/// The journal stays in the journal until vacuumed: pace it like a file.
const PACE: Pace = Pace {
    handover_wait: Duration::from_millis(500),
    read_ahead_bytes: 64 << 20,
    stalled_after: Duration::from_secs(5),
};

/// `since = "now"` on a first start: the journal's last entry becomes the
/// checkpoint at once, so a restart before anything new was read goes on from
/// there instead of from a later "now" (which would skip what came between).
/// `None` (an empty journal, journalctl failing): `--since=now`.
async fn anchor_now(config: &JournaldConfig, producer: &Producer, name: &[u8]) -> Option<String> {
    let mut command = tail_command(config);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the journalctl tail task does not panic");
    let cursor = match output {
        Ok(out) => parse_tail_cursor(&out.stdout)?,
        Err(e) => {
            tracing::warn!(name = %config.name, error = %e, "journalctl cannot tell the journal's last entry; starting from now");
            return None;
        }
    };
    let checkpoint = Checkpoint {
        name: name.to_vec(),
        value: encode_cursor(&cursor),
    };
    if let Err(e) = producer
        .spool_batch(
            &config.stream,
            KIND,
            Vec::new(),
            None,
            Some(&checkpoint),
            None,
        )
        .await
    {
        tracing::warn!(name = %config.name, error = %e, "Writing the journal's starting point failed; it is written with the first entries read");
    }
    Some(cursor)
}

/// Starts the source of one `[[journald]]` block.
pub(crate) fn spawn(
    config: JournaldConfig,
    producer: Producer,
    stop: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(async move {
        let name = config.name.clone();
        let metrics = producer.metrics().clone();
        if let Err(e) = run(config, producer, stop).await {
            tracing::error!(name = %name, error = %e, "The journald source stopped; no journal entries are read");
            metrics.source_down(KIND, &name, format!("stopped: {e}"));
        }
    });
}

/// Why the source cannot run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournaldError {
    #[error("reading the checkpoints of stream {stream:?} failed")]
    Checkpoints {
        stream: String,
        #[source]
        source: ProduceError,
    },
    #[error("the checkpoint of journald block {name:?} cannot be used")]
    Cursor {
        name: String,
        #[source]
        source: CursorError,
    },
}

/// How a run of journalctl ended.
enum Outcome {
    Stopped,
    /// journalctl exited, could not start, or its output could not be spooled.
    Ended(String),
}

async fn run(
    config: JournaldConfig,
    producer: Producer,
    stop: CancellationToken,
) -> Result<(), JournaldError> {
    let name = checkpoint_name(&config.name);
    let checkpoints = match producer.checkpoints(&config.stream) {
        Ok(c) => c,
        Err(ProduceError::Stopped) => return Ok(()),
        Err(source) => {
            return Err(JournaldError::Checkpoints {
                stream: config.stream.clone(),
                source,
            })
        }
    };
    let mut cursor = match checkpoints.into_iter().find(|c| c.name == name) {
        None => None,
        Some(c) => Some(
            decode_cursor(&c.value).map_err(|source| JournaldError::Cursor {
                name: config.name.clone(),
                source,
            })?,
        ),
    };
    if cursor.is_none() && config.since == Since::Now {
        cursor = anchor_now(&config, &producer, &name).await;
    }
    tracing::info!(
        name = %config.name,
        stream = %config.stream,
        cursor = cursor.as_deref().unwrap_or("none"),
        "Journald source started"
    );
    let format = JsonFormatter::for_source(&config.parse_format, &config.name, &config.block);
    let mut source = Source {
        format,
        name,
        cursor,
        warnings: LogLimit::default(),
        config,
        producer,
        stop,
        id: Vec::new(),
        origins: LastOrigin::default(),
    };
    let mut backoff = RESTART_MIN;
    loop {
        let started = Instant::now();
        let why = match source.follow().await {
            Outcome::Stopped => return Ok(()),
            Outcome::Ended(why) => why,
        };
        if started.elapsed() >= RESTART_RESET {
            backoff = RESTART_MIN;
        }
        source.producer.metrics().journald_restarted();
        source
            .producer
            .metrics()
            .source_down(KIND, &source.config.name, why.clone());
        tracing::warn!(
            name = %source.config.name,
            reason = %why,
            restart_in_ms = backoff.as_millis() as u64,
            "journalctl ended; it is started again from the last spooled entry"
        );
        tokio::select! {
            _ = source.stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_MAX);
    }
}

/// The records read since the last spool write, and the cursor after them.
#[derive(Default)]
struct Batch {
    records: Vec<UserRecord>,
    bytes: usize,
    cursor: Option<String>,
    /// When the first entry of this batch was read.
    since: Option<Instant>,
    oversized: Vec<&'static str>,
    key_fallbacks: u64,
    too_large: u64,
}

impl Batch {
    fn full(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.records.len() >= BATCH_RECORDS
    }

    /// When it is spooled even if no more entries come.
    fn deadline(&self) -> Option<Instant> {
        let wait = if self.records.is_empty() {
            CHECKPOINT_INTERVAL
        } else {
            LINGER
        };
        self.since.map(|s| s + wait)
    }
}

struct Source {
    config: JournaldConfig,
    producer: Producer,
    stop: CancellationToken,
    /// Checkpoint name.
    name: Vec<u8>,
    /// The cursor of the last entry whose records are in the spool.
    cursor: Option<String>,
    warnings: LogLimit,
    /// With a parse table: its formatter (`MESSAGE` parsed into a json record).
    format: Option<JsonFormatter>,
    /// With `record_id`: the id of the entry being read, and its journal's origin.
    id: Vec<u8>,
    origins: LastOrigin,
}

impl Source {
    /// Runs journalctl from the cursor until it ends or the source stops.
    async fn follow(&mut self) -> Outcome {
        let mut command = command(&self.config, self.cursor.as_deref());
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    name = %self.config.name,
                    journalctl = %self.config.journalctl.display(),
                    error = %e,
                    "journalctl cannot be started; no journal entries are read until it can"
                );
                return Outcome::Ended(format!(
                    "starting {} failed: {e}",
                    self.config.journalctl.display()
                ));
            }
        };
        self.producer.metrics().source_up(KIND, &self.config.name);
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            unreachable!("the command pipes both")
        };
        let child = Arc::new(Mutex::new(child));
        let _running = Running {
            child: child.clone(),
        };
        let (tx, mut rx) = mpsc::channel(LINES_CHANNEL);
        let name = self.config.name.clone();
        std::thread::spawn(move || log_stderr(err, name));
        let gate = Arc::new(Gate::default());
        std::thread::spawn(move || read_lines(out, child, tx, gate));
        let mut batch = Batch::default();
        loop {
            let deadline = batch.deadline();
            let line = tokio::select! {
                biased;
                _ = self.stop.cancelled() => {
                    let _ = tokio::time::timeout(STOP_FLUSH, self.spool(&mut batch)).await;
                    return Outcome::Stopped;
                }
                line = rx.recv() => line,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if let Some(out) = self.flush(&mut batch).await {
                        return out;
                    }
                    continue;
                }
            };
            match line {
                // The line's bytes go back to the reader once it is records.
                Some(Line::Entry(line, _held)) => self.add(&line, &mut batch),
                Some(Line::TooLong(n)) => {
                    self.producer
                        .metrics()
                        .source_error(KIND, SourceError::EntryTooLong);
                    if let Some(held) = self.warnings.check() {
                        tracing::warn!(name = %self.config.name, bytes = n, held_back = held, "A journal entry longer than the line limit is skipped");
                    }
                }
                Some(Line::End(why)) => {
                    if let Some(out) = self.flush(&mut batch).await {
                        return out;
                    }
                    return Outcome::Ended(why);
                }
                None => {
                    if let Some(out) = self.flush(&mut batch).await {
                        return out;
                    }
                    return Outcome::Ended("its output reader stopped".into());
                }
            }
            if batch.full() {
                if let Some(out) = self.flush(&mut batch).await {
                    return out;
                }
            }
        }
    }

    /// Adds an output line to the batch.
    fn add(&mut self, line: &[u8], batch: &mut Batch) {
        if line.starts_with(b"-- ") {
            // An informational line ("-- No entries --"), not an entry.
            return;
        }
        let entry = match Entry::parse(line) {
            Ok(e) => e,
            Err(e) => {
                self.producer
                    .metrics()
                    .source_error(KIND, SourceError::BadEntry);
                if let Some(held) = self.warnings.check() {
                    tracing::warn!(name = %self.config.name, error = %e, held_back = held, "A line of journalctl's output is not a journal entry; it is skipped");
                }
                return;
            }
        };
        batch.since.get_or_insert_with(Instant::now);
        batch.cursor = Some(entry.cursor().to_owned());
        if !entry.selected(&self.config.select) {
            return;
        }
        self.id.clear();
        if self.config.record_id.is_some() {
            entry.record_id(&mut self.id, &mut self.origins);
        }
        let id = (!self.id.is_empty()).then_some(self.id.as_slice());
        if let Some(format) = self.format.as_mut() {
            if let Some(id) = id {
                format.set_id(id);
            }
            let (key, fallback) = entry.partition_key(&self.config);
            batch.key_fallbacks += u64::from(fallback);
            let message = entry.message();
            let (max, oversized) = (self.config.max_record_bytes, self.config.oversized);
            let cut = format.format(&message, max, oversized, |data| {
                batch.bytes += key.len() + data.len();
                batch.records.push(UserRecord::new(key.clone(), data));
            });
            match cut {
                Cut::None => {}
                Cut::Split => batch.oversized.push("split"),
                Cut::Truncated => batch.oversized.push("truncated"),
            }
            return;
        }
        let made = entry.records(&self.config, id);
        batch.oversized.extend(made.oversized);
        batch.key_fallbacks += u64::from(made.key_fallback);
        batch.too_large += u64::from(made.too_large);
        for (partition_key, data) in made.records {
            batch.bytes += partition_key.len() + data.len();
            batch.records.push(UserRecord::new(partition_key, data));
        }
    }

    /// Spools the batch with its cursor; `Some` when the run must end.
    async fn flush(&mut self, batch: &mut Batch) -> Option<Outcome> {
        let stop = self.stop.clone();
        tokio::select! {
            biased;
            r = self.spool(batch) => r.err(),
            // A spool that stays full must not hold up the shutdown: the batch is
            // read again at the next start.
            _ = stop.cancelled() => Some(Outcome::Stopped),
        }
    }

    async fn spool(&mut self, batch: &mut Batch) -> Result<(), Outcome> {
        let Some(cursor) = batch.cursor.clone() else {
            return Ok(());
        };
        let b = std::mem::take(batch);
        let metrics = self.producer.metrics();
        if let Some(f) = self.format.as_mut() {
            f.report(metrics);
        }
        let n = b.records.len() as u64;
        metrics.received(KIND, n);
        for (text, action) in [
            ("split", LineAction::Split),
            ("truncated", LineAction::Truncated),
        ] {
            let k = b.oversized.iter().filter(|a| **a == text).count() as u64;
            if k > 0 {
                metrics.oversized(KIND, action, k);
            }
        }
        if b.key_fallbacks > 0 {
            metrics.partition_key_fallback(KIND, b.key_fallbacks);
        }
        if b.too_large > 0 {
            metrics.rejected(KIND, RejectReason::TooLarge, b.too_large);
            tracing::warn!(name = %self.config.name, entries = b.too_large, "Journal entries too large for a record even without their message are skipped");
        }
        let checkpoint = Checkpoint {
            name: self.name.clone(),
            value: encode_cursor(&cursor),
        };
        match self
            .producer
            .spool_batch(
                &self.config.stream,
                KIND,
                b.records,
                None,
                Some(&checkpoint),
                Some(PACE),
            )
            .await
        {
            Ok(()) => {
                self.cursor = Some(cursor);
                Ok(())
            }
            Err(ProduceError::Stopped) => Err(Outcome::Stopped),
            Err(e) => {
                tracing::error!(name = %self.config.name, error = %e, "Spooling journal entries failed; they are read again from the last spooled entry");
                Err(Outcome::Ended(format!("spooling failed: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;
    use std::process::Command;

    use super::cursor::CHECKPOINT_VERSION;
    use super::journalctl::read_line;
    use super::*;
    use crate::config::journald::{Fields, Format, JournalKey, Selection};
    use crate::config::Oversized;

    fn config(since: Since) -> JournaldConfig {
        JournaldConfig {
            block: "journald[0]".into(),
            parse_format: crate::config::RecordFormat::Raw,
            name: "j".into(),
            directory: Some("/var/log/other".into()),
            journalctl: "/usr/bin/journalctl".into(),
            select: Selection::default(),
            since,
            stream: "logs".into(),
            format: Format::Message,
            fields: Fields::All,
            added: Default::default(),
            partition_key: JournalKey::Random,
            max_record_bytes: 100,
            oversized: Oversized::Split,
            record_id: None,
        }
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_cursor_wins_over_since() {
        let base = [
            "--output=json",
            "--follow",
            "--all",
            "--no-pager",
            "--no-tail",
            "--directory",
            "/var/log/other",
        ];
        let with = |extra: &[&str]| {
            let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        assert_eq!(
            args(&command(&config(Since::Boot), None)),
            with(&["--boot"])
        );
        assert_eq!(
            args(&command(&config(Since::Now), None)),
            with(&["--since=now"])
        );
        assert_eq!(args(&command(&config(Since::Beginning), None)), with(&[]));
        assert_eq!(
            args(&command(&config(Since::Now), Some("s=1;i=2"))),
            with(&["--after-cursor=s=1;i=2"])
        );
    }

    #[test]
    fn the_tail_cursor_is_read_from_show_cursor_output() {
        assert_eq!(
            parse_tail_cursor(b"-- cursor: s=ab;i=9;x=1\n").as_deref(),
            Some("s=ab;i=9;x=1")
        );
        assert_eq!(parse_tail_cursor(b"-- No entries --\n"), None);
        assert_eq!(parse_tail_cursor(b""), None);
        assert_eq!(
            args(&tail_command(&config(Since::Now))),
            [
                "--lines=0",
                "--show-cursor",
                "--no-pager",
                "--directory",
                "/var/log/other"
            ]
        );
    }

    #[test]
    fn cursors_round_trip_and_unknown_versions_are_refused() {
        let v = encode_cursor("s=abc;i=1f");
        assert_eq!(decode_cursor(&v).unwrap(), "s=abc;i=1f");
        assert_eq!(decode_cursor(&[9, b'x']), Err(CursorError::Version(9)));
        assert_eq!(
            decode_cursor(&[CHECKPOINT_VERSION]),
            Err(CursorError::Invalid)
        );
        assert_eq!(decode_cursor(&[]), Err(CursorError::Invalid));
    }

    #[test]
    fn lines_are_cut_at_newlines_and_bounded() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let text = format!("a\n\nbc\n{long}\nd");
        let mut r = BufReader::with_capacity(7, text.as_bytes());
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(&mut r, &mut line).unwrap() {
                0 => break,
                n => out.push((n, line.len())),
            }
        }
        assert_eq!(
            out,
            [
                (1, 1),
                (2, 2),
                (MAX_LINE_BYTES + 10, MAX_LINE_BYTES + 1),
                (1, 1)
            ]
        );
    }
}
