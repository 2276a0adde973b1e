//! The spool seen from outside the agent: `shardline spool check`, `inspect`
//! and `export` read a spool directory without opening the spool.
//!
//! They never take the spool's lock, never create, write, cut or move a file,
//! and open every file read-only, so they run beside the agent that has the
//! spool open (or on a copy of a spool, or one an agent refuses). What the agent
//! does meanwhile is taken for what it is: a segment removed while it is read
//! was delivered, a segment that grew was appended to, bytes after the last
//! good frame past the synced end are a write in progress.
//!
//! - `check.rs`: every frame's CRC, damage told from a torn tail;
//! - `read.rs`: a stream's live entries and checkpoints (`inspect`, `export`).
//!
//! Called by the `shardline spool` command only (through the crate's root).

mod check;
mod read;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use self::read::StreamView;
use super::frame::{self, CheckpointRecord};
use super::stream::{dir_name, stream_of_dir};
use super::{damage, now_ms, DamageReport, FORMAT_FILE, FORMAT_TEXT};

/// Errors of reading a spool directory from outside.
#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    #[error("no spool at {path}")]
    NoSpool { path: PathBuf },
    #[error("{path} says {text:?}; this shardline reads \"shardline-spool 2\"")]
    Format { path: PathBuf, text: String },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the spool at {dir} holds nothing for stream {stream:?}")]
    NoStream { dir: PathBuf, stream: String },
    #[error("cannot write the export")]
    Write(#[source] std::io::Error),
}

/// What `check` found wrong in one place of a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Bytes between two good frames that hold no good frame.
    DamagedFrame,
    /// A segment ends before what its stream's manifest says was synced.
    CutShort,
    /// A segment the manifest lists, with undelivered records, is gone.
    Missing { records: u64 },
    /// A file's first frame is not its header.
    BadHeader,
    /// Part of an ack file is damaged: what it acknowledged is sent again.
    AckDamaged,
    /// The checkpoint table does not read whole.
    TableDamaged,
    /// A file of a format this shardline does not know.
    UnknownVersion(u8),
    /// Bytes after the last good frame, past what was synced: a write in
    /// progress, or a crash's torn tail that the next start cuts. Not damage.
    TornTail,
}

impl FindingKind {
    /// Whether it is damage (anything but a torn tail).
    pub fn is_damage(&self) -> bool {
        *self != FindingKind::TornTail
    }

    fn what(&self) -> String {
        match self {
            FindingKind::DamagedFrame => "damaged frame (its records are lost)".into(),
            FindingKind::CutShort => {
                "segment ends before what was synced (its records are lost)".into()
            }
            FindingKind::Missing { records } => {
                format!("segment file is missing ({records} undelivered records lost)")
            }
            FindingKind::BadHeader => "damaged file header".into(),
            FindingKind::AckDamaged => {
                "damaged ack frame (records it acknowledged are sent again)".into()
            }
            FindingKind::TableDamaged => "checkpoint table does not read whole".into(),
            FindingKind::UnknownVersion(v) => format!("unknown format version {v}"),
            FindingKind::TornTail => {
                "torn tail after the synced end (a write in progress, or a crash's; not damage)"
                    .into()
            }
        }
    }
}

/// One finding of `check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub stream: String,
    pub path: PathBuf,
    /// Where in the file, when it is about a place in it.
    pub offset: Option<u64>,
    pub bytes: Option<u64>,
    pub kind: FindingKind,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = if self.kind.is_damage() {
            "damaged"
        } else {
            "note"
        };
        write!(f, "{label}: {}", self.path.display())?;
        if let Some(at) = self.offset {
            write!(f, " at offset {at}")?;
        }
        if let Some(n) = self.bytes {
            write!(f, " ({n} bytes)")?;
        }
        write!(f, ": {}", self.kind.what())
    }
}

/// What `check` read and found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub dir: PathBuf,
    pub streams: usize,
    pub findings: Vec<Finding>,
    /// Damage the agent found earlier (the `damaged/report` file).
    #[serde(skip)]
    pub earlier: Option<DamageReport>,
}

impl CheckReport {
    /// Findings that are damage.
    pub fn damaged(&self) -> usize {
        self.findings.iter().filter(|f| f.kind.is_damage()).count()
    }

    /// The report as printed: one line per finding, then a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!("{f}\n"));
        }
        if let Some(r) = &self.earlier {
            out.push_str(&format!(
                "note: {} lists {} damage events found by the agent earlier ({} records lost); delete it to clear it\n",
                r.path.display(),
                r.events,
                r.lost_records
            ));
        }
        let damaged = self.damaged();
        out.push_str(&format!(
            "{}: {} streams checked, {}\n",
            self.dir.display(),
            self.streams,
            if damaged == 0 {
                "no damage".to_owned()
            } else {
                format!("{damaged} damaged")
            }
        ));
        out
    }
}

/// Reads every segment, ack file and checkpoint table of the spool at `dir`
/// and checks every frame.
pub fn check(dir: &Path) -> Result<CheckReport, SurveyError> {
    check_with(&ReadOnly, dir)
}

fn check_with(look: &dyn Look, dir: &Path) -> Result<CheckReport, SurveyError> {
    let streams = streams(look, dir)?;
    let mut findings = Vec::new();
    for (stream, path) in &streams {
        check::check_stream(look, stream, path, &mut findings)?;
    }
    let report = dir.join("damaged").join(damage::REPORT_FILE);
    let earlier =
        read_all(look, &report)?.map(|b| damage::summed(report, &String::from_utf8_lossy(&b)));
    Ok(CheckReport {
        dir: dir.to_owned(),
        streams: streams.len(),
        findings,
        earlier,
    })
}

/// A checkpoint held in a stream's spool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldCheckpoint {
    /// Its name: the source's prefix (`file/`, `journald/`, `redrive/`), then
    /// the rest as text when it is printable, in hex when it is not.
    pub name: String,
    pub value_base64: String,
}

/// What one stream's spool holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamSummary {
    pub stream: String,
    /// Records not delivered yet.
    pub records: u64,
    /// Bytes of the entries holding them.
    pub bytes: u64,
    /// How long the oldest of them has waited.
    pub oldest_record_age_ms: Option<u64>,
    pub segments: usize,
    /// Bytes of the segment files.
    pub segment_bytes: u64,
    pub checkpoints: Vec<HeldCheckpoint>,
}

/// What each stream's spool at `dir` holds.
pub fn inspect(dir: &Path) -> Result<Vec<StreamSummary>, SurveyError> {
    inspect_with(&ReadOnly, dir)
}

fn inspect_with(look: &dyn Look, dir: &Path) -> Result<Vec<StreamSummary>, SurveyError> {
    let now = now_ms();
    let mut out = Vec::new();
    for (stream, path) in streams(look, dir)? {
        let view = StreamView::read(look, &path)?;
        let live = || view.entries.values().filter(|e| e.unsent() > 0);
        out.push(StreamSummary {
            stream,
            records: live().map(|e| e.unsent()).sum(),
            bytes: live().map(|e| u64::from(e.placed.len)).sum(),
            oldest_record_age_ms: live()
                .map(|e| e.placed.at_ms)
                .min()
                .map(|at| now.saturating_sub(at)),
            segments: view.segments.len(),
            segment_bytes: view.segments.values().sum(),
            checkpoints: held(&view.checkpoints),
        });
    }
    Ok(out)
}

fn held(table: &BTreeMap<Vec<u8>, CheckpointRecord>) -> Vec<HeldCheckpoint> {
    use base64::Engine as _;
    table
        .values()
        .filter_map(|c| {
            let value = c.value.as_ref()?;
            Some(HeldCheckpoint {
                name: show_name(&c.name),
                value_base64: base64::engine::general_purpose::STANDARD.encode(value),
            })
        })
        .collect()
}

fn show_name(name: &[u8]) -> String {
    let cut = name.iter().position(|&b| b == b'/').map_or(0, |i| i + 1);
    let (prefix, rest) = name.split_at(cut);
    let printable = |b: &[u8]| b.iter().all(|c| c.is_ascii_graphic() || *c == b' ');
    let rest = if printable(rest) {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        rest.iter().map(|b| format!("{b:02x}")).collect()
    };
    if printable(prefix) {
        format!("{}{rest}", String::from_utf8_lossy(prefix))
    } else {
        name.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The summaries as a table, one line per stream, then the checkpoints.
pub fn inspect_table(summaries: &[StreamSummary]) -> String {
    let mut out = format!(
        "{:<24} {:>10} {:>12} {:>12} {:>8} {:>12} {:>11}\n",
        "STREAM", "RECORDS", "BYTES", "OLDEST", "SEGMENTS", "SEG BYTES", "CHECKPOINTS"
    );
    for s in summaries {
        let age = s.oldest_record_age_ms.map_or_else(
            || "-".to_owned(),
            |ms| format!("{:.1}s", ms as f64 / 1000.0),
        );
        out.push_str(&format!(
            "{:<24} {:>10} {:>12} {:>12} {:>8} {:>12} {:>11}\n",
            s.stream,
            s.records,
            s.bytes,
            age,
            s.segments,
            s.segment_bytes,
            s.checkpoints.len()
        ));
    }
    for s in summaries.iter().filter(|s| !s.checkpoints.is_empty()) {
        out.push_str(&format!("\ncheckpoints of {}:\n", s.stream));
        for c in &s.checkpoints {
            out.push_str(&format!("  {}  {}\n", c.name, c.value_base64));
        }
    }
    out
}

/// What `export` wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    pub records: u64,
    /// Entries whose frame did not read (damaged since they were placed).
    pub unreadable_entries: u64,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exported {} records", self.records)?;
        if self.unreadable_entries > 0 {
            write!(
                f,
                "; {} entries did not read (see `shardline spool check`)",
                self.unreadable_entries
            )?;
        }
        Ok(())
    }
}

/// Writes the undelivered records of `stream` in the spool at `dir` to `out`,
/// one JSON object per line, oldest entry first: the dead-letter file's
/// `stream`, `partition_key`, `explicit_hash_key` (decimal, or null) and
/// `data_base64`, then `entry` (the spool entry's id), `index` (the record's
/// place in it) and `spooled_at_ms`.
pub fn export(dir: &Path, stream: &str, out: &mut dyn Write) -> Result<Exported, SurveyError> {
    export_with(&ReadOnly, dir, stream, out)
}

fn export_with(
    look: &dyn Look,
    dir: &Path,
    stream: &str,
    out: &mut dyn Write,
) -> Result<Exported, SurveyError> {
    use base64::Engine as _;
    let path = dir.join("streams").join(dir_name(stream));
    if !streams(look, dir)?.iter().any(|(_, p)| *p == path) {
        return Err(SurveyError::NoStream {
            dir: dir.to_owned(),
            stream: stream.to_owned(),
        });
    }
    let view = StreamView::read(look, &path)?;
    let mut done = Exported::default();
    for (id, e) in view.entries.iter().filter(|(_, e)| e.unsent() > 0) {
        let seg = path.join(super::stream::seg_name(e.seg));
        let records = read_range(look, &seg, e.placed.offset, e.placed.len as usize)?
            .and_then(|f| frame::check(&f).map(bytes::Bytes::copy_from_slice))
            .and_then(|body| frame::entry_records(&body));
        let Some((_, records)) = records else {
            done.unreadable_entries += 1;
            continue;
        };
        for (i, r) in records.iter().enumerate().filter(|(i, _)| !e.is_done(*i)) {
            let line = serde_json::json!({
                "stream": stream,
                "partition_key": r.partition_key,
                "explicit_hash_key": r.explicit_hash_key.map(|k| k.to_string()),
                "data_base64": base64::engine::general_purpose::STANDARD.encode(&r.data),
                "entry": id,
                "index": i,
                "spooled_at_ms": e.placed.at_ms,
            });
            let mut text = serde_json::to_vec(&line).unwrap_or_default();
            text.push(b'\n');
            match out.write_all(&text) {
                Ok(()) => done.records += 1,
                // The reader has what it wanted (`| head`).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(done),
                Err(e) => return Err(SurveyError::Write(e)),
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(SurveyError::Write(e)),
        _ => Ok(done),
    }
}

/// The streams of the spool at `dir`: (name, directory), by name.
fn streams(look: &dyn Look, dir: &Path) -> Result<Vec<(String, PathBuf)>, SurveyError> {
    match look.list(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SurveyError::NoSpool {
                path: dir.to_owned(),
            })
        }
        Err(e) => return Err(read_err(dir, e)),
        Ok(_) => {}
    }
    let format = dir.join(FORMAT_FILE);
    if let Some(text) = read_all(look, &format)? {
        if text != FORMAT_TEXT.as_bytes() {
            return Err(SurveyError::Format {
                path: format,
                text: String::from_utf8_lossy(&text).trim().to_owned(),
            });
        }
    }
    let root = dir.join("streams");
    let mut out: Vec<(String, PathBuf)> = list(look, &root)?
        .into_iter()
        .filter_map(|n| Some((stream_of_dir(&n)?, root.join(n))))
        .collect();
    out.sort();
    Ok(out)
}

/// The few reads a survey makes: of the real filesystem, read-only
/// ([`ReadOnly`]), or in tests of the spool's simulated storage.
pub(super) trait Look {
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>>;
    fn len(&self, path: &Path) -> std::io::Result<u64>;
    /// `buf.len()` bytes from `offset` (`UnexpectedEof` when the file is shorter).
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// A whole file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// The real filesystem, every file opened read-only.
struct ReadOnly;

impl Look for ReadOnly {
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }
    fn len(&self, path: &Path) -> std::io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        std::fs::File::open(path)?.read_exact_at(buf, offset)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

fn read_err(path: &Path, source: std::io::Error) -> SurveyError {
    SurveyError::Read {
        path: path.to_owned(),
        source,
    }
}

/// The names in a directory (none when it does not exist).
fn list(look: &dyn Look, dir: &Path) -> Result<Vec<String>, SurveyError> {
    match look.list(dir) {
        Ok(names) => Ok(names),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(read_err(dir, e)),
    }
}

/// A whole file; `None` when it is gone.
fn read_all(look: &dyn Look, path: &Path) -> Result<Option<Vec<u8>>, SurveyError> {
    match look.read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_err(path, e)),
    }
}

/// `len` bytes of a file from `offset`; `None` when it is gone or shorter.
fn read_range(
    look: &dyn Look,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<Option<Vec<u8>>, SurveyError> {
    let mut b = vec![0u8; len];
    match look.read_at(path, offset, &mut b) {
        Ok(()) => Ok(Some(b)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(read_err(path, e)),
    }
}

#[cfg(test)]
pub(super) mod tests;
