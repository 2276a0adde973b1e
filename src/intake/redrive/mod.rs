//! `shardline redrive FILE`: the records of a dead-letter file put back into
//! the spool of their streams, once.
//!
//! Once, across crashes, the way the file tailer reads a file once: every
//! batch of records goes into its stream's spool in the same atomic write as
//! a checkpoint named after the file (`redrive/` + device, inode and a CRC of
//! its first line), whose value is the number of the last line of that stream
//! the spool holds. A redrive killed at any moment and run again skips what
//! the spool already holds and writes the rest; the file is renamed to
//! `FILE.redriven-<unix seconds>` only after a commit made every batch
//! durable. The checkpoints stay in the spool (a few dozen bytes per file), so
//! the renamed file redriven again writes nothing.
//!
//! A file with a line that does not read, or that names a stream the config
//! does not write to, is refused whole: every such line is listed, nothing is
//! written and the file keeps its name (an operator who fixes a line gets a
//! new file, which must not meet half of it already in the spool).
//!
//! Who does the writing:
//! - an agent holds the spool (its lock): the command leaves a request in the
//!   spool directory's `redrive/` inbox and waits for the agent's report; the
//!   agent runs the requests it finds there through its own intakes
//!   (`inbox.rs`), also those left when it was killed, at its next start;
//! - no agent holds it: the command opens the spool itself and writes through
//!   intakes of its own, spilling (`offline.rs`); the next agent delivers.
//!
//! `lines.rs` reads the file's lines into records.

mod inbox;
mod lines;
mod offline;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Checkpoint, Intake, PushFailure};
use crate::record::UserRecord;
use crate::spool::SpoolError;

pub(crate) use inbox::watch;
pub use offline::redrive;

/// Prefix of a redrive's checkpoint names (sources ignore names not theirs).
const CHECKPOINT_PREFIX: &[u8] = b"redrive/";
/// Version of a redrive checkpoint's value.
const CHECKPOINT_VERSION: u8 = 1;
/// A batch (one spool entry) holds at most this many records or bytes, as a
/// file tailer's read does.
const BATCH_RECORDS: usize = 500;
const BATCH_BYTES: usize = 256 << 10;
/// How long a batch waits for room in a full spool before the redrive stops
/// (to be run again later: what it wrote stays, once).
const FULL_WAIT: Duration = Duration::from_secs(30);
/// Test hook: a pause after each batch, so a test can kill the process doing a
/// redrive half-way through. Unset in production.
const PAUSE_ENV: &str = "SHARDLINE_TEST_REDRIVE_PAUSE_MS";

/// Errors of a redrive.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rename {path} once redriven (its records are in the spool: running redrive again writes none of them twice)")]
    Rename {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is the agent's dead-letter file, which it appends to: move it aside first (mv {path} {path}.1) and redrive the moved file")]
    LiveFile { path: PathBuf },
    #[error(
        "the config keeps the spool in memory (no spool.dir): there is no spool to redrive into"
    )]
    MemoryOnly,
    #[error("the spool refused the records")]
    Spool(#[from] SpoolError),
    #[error("the agent is stopping; run redrive again (what it wrote is kept, once)")]
    Stopped,
    #[error("redrive request in {inbox} failed")]
    Inbox {
        inbox: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Agent(String),
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedriveReport {
    pub file: PathBuf,
    /// Records put into the spool now, per stream.
    pub redriven: BTreeMap<String, u64>,
    /// Records an earlier, interrupted redrive of this file had put in already.
    pub already: u64,
    /// Lines refused (nothing is redriven when there is one), each naming its
    /// line number.
    pub refused: Vec<String>,
    /// The file's name once redriven.
    pub renamed_to: Option<PathBuf>,
    /// Whether the running agent did it (else this command, with the spool's
    /// lock).
    pub by_agent: bool,
}

impl RedriveReport {
    /// Records put into the spool now.
    pub fn records(&self) -> u64 {
        self.redriven.values().sum()
    }

    /// The report as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.refused {
            out.push_str(&format!("refused: {r}\n"));
        }
        if !self.refused.is_empty() {
            out.push_str(&format!(
                "{}: {} lines refused, nothing redriven, the file is left as it is\n",
                self.file.display(),
                self.refused.len()
            ));
            return out;
        }
        for (stream, n) in &self.redriven {
            out.push_str(&format!("stream {stream}: {n} records\n"));
        }
        out.push_str(&format!(
            "{}: {} records redriven{}{}{}\n",
            self.file.display(),
            self.records(),
            if self.already > 0 {
                format!(" ({} were already, by an earlier run)", self.already)
            } else {
                String::new()
            },
            if self.by_agent {
                " by the running agent"
            } else {
                ""
            },
            self.renamed_to
                .as_ref()
                .map_or_else(String::new, |p| format!("; renamed to {}", p.display()))
        ));
        out
    }
}

/// Redrives the file at `path` through `intakes` (one per stream the config
/// writes to); `durable` waits for a commit covering every write before it.
pub(crate) async fn redrive_file<F, Fut>(
    intakes: &HashMap<String, Intake>,
    durable: F,
    path: &Path,
) -> Result<RedriveReport, RedriveError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), SpoolError>>,
{
    let read_err = |source| RedriveError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(read_err)?;
    let mut report = RedriveReport {
        file: path.to_owned(),
        ..RedriveReport::default()
    };
    let (lines, mut refused) = lines::parse(&text);
    for l in lines.iter().filter(|l| !intakes.contains_key(&l.stream)) {
        refused.push(format!(
            "line {}: stream {:?} is not one this config writes to",
            l.no, l.stream
        ));
    }
    if !refused.is_empty() {
        refused.sort_by_key(|r| line_no(r));
        report.refused = refused;
        return Ok(report);
    }
    let name = checkpoint_name(&meta, &text);
    let mut batches = Batches::new(intakes, &name)?;
    for line in lines {
        batches.add(line, &mut report).await?;
    }
    batches.finish(&mut report).await?;
    durable().await?;
    if !path.to_string_lossy().contains(".redriven-") {
        let to = PathBuf::from(format!(
            "{}.redriven-{}",
            path.display(),
            crate::spool::now_ms() / 1000
        ));
        std::fs::rename(path, &to).map_err(|source| RedriveError::Rename {
            path: path.to_owned(),
            source,
        })?;
        report.renamed_to = Some(to);
    }
    Ok(report)
}

/// The number a refusal's text starts with (`line N: …`), to list them in order.
fn line_no(refusal: &str) -> u64 {
    refusal
        .strip_prefix("line ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The checkpoint name of a file: its device and inode, and the CRC of its
/// first line (so a new file on a reused inode is another file).
fn checkpoint_name(meta: &std::fs::Metadata, text: &[u8]) -> Vec<u8> {
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut name = CHECKPOINT_PREFIX.to_vec();
    name.extend_from_slice(&meta.dev().to_be_bytes());
    name.extend_from_slice(&meta.ino().to_be_bytes());
    name.extend_from_slice(&crc32c::crc32c(first).to_be_bytes());
    name
}

fn encode(line: u64) -> Vec<u8> {
    let mut v = vec![CHECKPOINT_VERSION];
    v.extend_from_slice(&line.to_le_bytes());
    v
}

fn decode(value: &[u8]) -> Option<u64> {
    match value.split_first() {
        Some((&CHECKPOINT_VERSION, n)) => Some(u64::from_le_bytes(n.try_into().ok()?)),
        _ => None,
    }
}

/// The batch being gathered for each stream, and how far each stream's spool
/// holds the file already.
struct Batches<'a> {
    intakes: &'a HashMap<String, Intake>,
    name: &'a [u8],
    /// Stream → the last line number its spool holds.
    held: HashMap<String, u64>,
    /// Stream → (records, bytes, last line number).
    open: BTreeMap<String, (Vec<UserRecord>, usize, u64)>,
    pause: Option<Duration>,
}

impl<'a> Batches<'a> {
    fn new(
        intakes: &'a HashMap<String, Intake>,
        name: &'a [u8],
    ) -> Result<Batches<'a>, RedriveError> {
        let mut held = HashMap::new();
        for (stream, intake) in intakes {
            let found = intake.checkpoints()?.into_iter().find(|c| c.name == name);
            if let Some(line) = found.and_then(|c| decode(&c.value)) {
                held.insert(stream.clone(), line);
            }
        }
        let pause = std::env::var(PAUSE_ENV)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis);
        Ok(Batches {
            intakes,
            name,
            held,
            open: BTreeMap::new(),
            pause,
        })
    }

    async fn add(
        &mut self,
        line: lines::Line,
        report: &mut RedriveReport,
    ) -> Result<(), RedriveError> {
        if self.held.get(&line.stream).is_some_and(|&h| line.no <= h) {
            report.already += 1;
            return Ok(());
        }
        let batch = self.open.entry(line.stream.clone()).or_default();
        batch.1 += line.record.size();
        batch.0.push(line.record);
        batch.2 = line.no;
        if batch.0.len() >= BATCH_RECORDS || batch.1 >= BATCH_BYTES {
            self.flush(&line.stream, report).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, report: &mut RedriveReport) -> Result<(), RedriveError> {
        let streams: Vec<String> = self.open.keys().cloned().collect();
        for s in streams {
            self.flush(&s, report).await?;
        }
        Ok(())
    }

    /// Writes a stream's batch with the checkpoint that says it is there.
    async fn flush(
        &mut self,
        stream: &str,
        report: &mut RedriveReport,
    ) -> Result<(), RedriveError> {
        let Some((mut records, _, last)) = self.open.remove(stream) else {
            return Ok(());
        };
        let n = records.len() as u64;
        let checkpoint = Checkpoint {
            name: self.name.to_vec(),
            value: encode(last),
        };
        let intake = &self.intakes[stream];
        let deadline = tokio::time::Instant::now() + FULL_WAIT;
        loop {
            match intake.push(records, None, Some(&checkpoint), None).await {
                Ok(_) => break,
                Err(e) => match e.failure {
                    PushFailure::Spool(full)
                        if full.is_full() && tokio::time::Instant::now() < deadline =>
                    {
                        records = e.records;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    PushFailure::Spool(other) => return Err(other.into()),
                    PushFailure::Stopped => return Err(RedriveError::Stopped),
                },
            }
        }
        *report.redriven.entry(stream.to_owned()).or_default() += n;
        if let Some(pause) = self.pause {
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }
}
