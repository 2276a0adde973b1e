//! What `GET /files` answers (every tailed file: its identity, how far it is
//! read, whether everything read has been delivered), how `shardline files`
//! shows it, and `shardline files --wait-delivered`, which asks until a file is
//! read to its end and delivered: the question logrotate's `prerotate` asks
//! before a rotation may delete an old file.
//!
//! The agent answers from the file source's progress (`source::file::Files`);
//! the client judges a file by its identity (device and inode), read once from
//! the path it is given, so that a file renamed by a rotation meanwhile is
//! still the one waited for.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::source::file::{FileProgress, Stage};

use super::StatusError;

/// How often `--wait-delivered` asks the agent.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// Longest wait for one answer of the agent while waiting.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What `GET /files` answers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FilesReport {
    /// Every file tailed now, rotated away and still read, or closed and not
    /// yet delivered (or delivered within the last 15 minutes).
    pub files: Vec<FileStatus>,
}

/// Where a file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Read as it grows, under an included path.
    Tailed,
    /// Rotated away or deleted: read to its end, then closed.
    Draining,
    /// Not read any more.
    Closed,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Tailed => "tailed",
            FileState::Draining => "draining",
            FileState::Closed => "closed",
        }
    }
}

/// One file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStatus {
    /// Where it is read now.
    pub path: String,
    /// The included path it was found at (a rotated file's new name usually is
    /// not included).
    pub tailed_path: String,
    pub stream: String,
    pub device: u64,
    pub inode: u64,
    pub state: FileState,
    /// Its size when the agent last looked.
    pub size: u64,
    /// Every byte before this offset is in the spool (or was skipped: an empty
    /// line, a line refused, bytes before `read_from = "end"`).
    pub read: u64,
    /// Every byte before this offset has left the spool: accepted by the
    /// destination, or refused for good and written to the dead-letter file.
    pub delivered_to: u64,
    /// Every byte read is delivered.
    pub delivered: bool,
    /// Spool writes of the file still waiting for delivery.
    pub pending_batches: u64,
}

impl FileStatus {
    pub(crate) fn of(p: FileProgress) -> FileStatus {
        FileStatus {
            path: p.seen.path.display().to_string(),
            tailed_path: p.seen.tailed_path.display().to_string(),
            stream: p.seen.stream,
            device: p.dev,
            inode: p.ino,
            state: match p.seen.stage {
                Stage::Tailed => FileState::Tailed,
                Stage::Draining => FileState::Draining,
                Stage::Closed => FileState::Closed,
            },
            size: p.seen.size,
            read: p.seen.read,
            delivered_to: p.delivered_to.min(p.seen.read),
            delivered: p.delivered,
            pending_batches: p.pending_batches as u64,
        }
    }

    /// What is left to do for it, if anything, with `size` its size now.
    fn left(&self, size: u64) -> Option<String> {
        if self.read < size {
            return Some(format!(
                "read to {} of {size} bytes (a last line without a newline is read once it ends, or once the file is rotated away)",
                self.read
            ));
        }
        if !self.delivered {
            return Some(format!(
                "{} of {} bytes read are delivered, {} spool writes waiting",
                self.delivered_to, self.read, self.pending_batches
            ));
        }
        None
    }
}

impl FilesReport {
    /// The table `shardline files` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.files.is_empty() {
            out.push_str("no tailed files\n");
            return out;
        }
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<10} {:<20} {:>12} {:>12} {:>12}  DELIVERED  PATH",
            "STATE", "DEVICE:INODE", "READ", "SIZE", "DELIVERED TO"
        );
        for f in &self.files {
            let path = if f.path == f.tailed_path {
                f.path.clone()
            } else {
                format!("{} (from {})", f.path, f.tailed_path)
            };
            let _ = writeln!(
                out,
                "{:<10} {:<20} {:>12} {:>12} {:>12}  {:<9}  {path}",
                f.state.as_str(),
                format!("{}:{}", f.device, f.inode),
                f.read,
                f.size,
                f.delivered_to,
                if f.delivered { "yes" } else { "no" },
            );
        }
        out
    }
}

/// The file `--wait-delivered` waits for: its identity, read from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub device: u64,
    pub inode: u64,
}

impl Target {
    /// The file at `path` now.
    pub fn of(path: &Path) -> Result<Target, FilesError> {
        let meta = std::fs::metadata(path).map_err(|source| FilesError::Stat {
            path: path.to_owned(),
            source,
        })?;
        Ok(Target {
            path: path.to_owned(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// Its size, if its path still names it.
    fn size_at_path(&self) -> Option<u64> {
        let meta = std::fs::metadata(&self.path).ok()?;
        (meta.dev() == self.device && meta.ino() == self.inode).then_some(meta.len())
    }
}

/// What the agent's answer says of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Read to its end, and everything read delivered.
    Delivered,
    /// Not yet: why.
    Waiting(String),
    /// The agent does not list the file.
    NotTailed,
}

/// Judges `target` by `report`; `size_now` is its size if its path still names
/// it (fresher than the agent's). A tailed file waits also for the files
/// rotated away from its path that are not delivered yet: a rotation that
/// deletes an old file must find them delivered.
pub fn judge(target: &Target, size_now: Option<u64>, report: &FilesReport) -> Verdict {
    let Some(file) = report
        .files
        .iter()
        .find(|f| f.device == target.device && f.inode == target.inode)
    else {
        return Verdict::NotTailed;
    };
    let size = size_now.unwrap_or(file.size).max(file.size);
    if let Some(left) = file.left(size) {
        return Verdict::Waiting(format!("{}: {left}", target.path.display()));
    }
    if file.state == FileState::Tailed {
        let rotated = report.files.iter().find(|f| {
            f.tailed_path == file.tailed_path
                && (f.device, f.inode) != (file.device, file.inode)
                && f.state != FileState::Tailed
                && (!f.delivered || f.state == FileState::Draining)
        });
        if let Some(r) = rotated {
            return Verdict::Waiting(format!(
                "{} ({}:{}), rotated away from {}, is {}: {}",
                r.path,
                r.device,
                r.inode,
                r.tailed_path,
                r.state.as_str(),
                r.left(r.size).unwrap_or_else(|| "read to its end".into())
            ));
        }
    }
    Verdict::Delivered
}

/// Errors of `shardline files`.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Agent(#[from] StatusError),
    #[error("cannot read {path:?}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent does not tail {path:?} (device {device}, inode {inode}): it is not matched by a [[file]] block, or it was closed and forgotten")]
    NotTailed {
        path: PathBuf,
        device: u64,
        inode: u64,
    },
    #[error("{path:?} is not delivered after {} s: {why}", waited.as_secs())]
    TimedOut {
        path: PathBuf,
        waited: Duration,
        why: String,
    },
}

/// Asks the agent at `addr` for its files.
pub async fn fetch_files(addr: SocketAddr, timeout: Duration) -> Result<FilesReport, StatusError> {
    let (status, body) = super::get(addr, "/files", timeout).await?;
    if status != 200 {
        return Err(StatusError::Http {
            addr,
            path: "/files".into(),
            status,
        });
    }
    serde_json::from_slice(&body).map_err(|source| StatusError::Decode { addr, source })
}

/// Asks the agent at `addr` until `target` is read to its end and delivered,
/// for up to `timeout`. An agent that stops answering meanwhile (a restart) is
/// asked again; one that is not running at the first ask, or does not list the
/// file then, is an error at once.
pub async fn wait_delivered(
    addr: SocketAddr,
    target: &Target,
    timeout: Duration,
) -> Result<(), FilesError> {
    let start = Instant::now();
    let (mut first, mut listed) = (true, false);
    let mut why;
    loop {
        match fetch_files(addr, ASK_TIMEOUT.min(timeout.max(WAIT_POLL))).await {
            Ok(report) => match judge(target, target.size_at_path(), &report) {
                Verdict::Delivered => return Ok(()),
                Verdict::Waiting(w) => {
                    listed = true;
                    why = w;
                }
                // Listed before: the agent restarted and has not opened it again
                // yet, or was reloaded without it. Not delivered, as far as known.
                Verdict::NotTailed if listed => {
                    why = "the agent no longer lists it (restarted or reloaded)".into()
                }
                Verdict::NotTailed => {
                    return Err(FilesError::NotTailed {
                        path: target.path.clone(),
                        device: target.device,
                        inode: target.inode,
                    })
                }
            },
            Err(e) if first => return Err(e.into()),
            Err(e) => why = format!("the agent does not answer: {e}"),
        }
        first = false;
        if start.elapsed() + WAIT_POLL > timeout {
            return Err(FilesError::TimedOut {
                path: target.path.clone(),
                waited: start.elapsed(),
                why,
            });
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// Exit status of `shardline files` when no agent answers (as `shardline status`).
const EXIT_NOT_RUNNING: u8 = 3;
/// Exit status when something listens but does not answer in time.
const EXIT_NOT_ANSWERING: u8 = 4;
/// Exit status of `--wait-delivered` when the agent does not tail the file (or
/// the path cannot be read).
pub const EXIT_NOT_TAILED: u8 = 5;
/// Exit status of `--wait-delivered` on its timeout.
pub const EXIT_TIMED_OUT: u8 = 1;

/// `shardline files` against the agent at `addr`: lists the files (as JSON with
/// `json`), or waits until `wait` (a path) is read to its end and delivered, for
/// up to `timeout`. Prints the outcome; returns the exit status.
pub fn command(addr: SocketAddr, json: bool, wait: Option<&Path>, timeout: Duration) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result: Result<(), FilesError> = runtime.block_on(async {
        let Some(path) = wait else {
            let report = fetch_files(addr, ASK_TIMEOUT).await?;
            if json {
                let text = serde_json::to_string_pretty(&report)
                    .expect("a files report always serialises to JSON");
                println!("{text}");
            } else {
                print!("{}", report.render());
            }
            return Ok(());
        };
        let target = Target::of(path)?;
        wait_delivered(addr, &target, timeout).await?;
        println!(
            "{}: read to its end and every byte read delivered",
            path.display()
        );
        Ok(())
    });
    let Err(e) = result else { return 0 };
    eprintln!("error: {}", chain(&e));
    match &e {
        FilesError::Agent(a) if a.is_not_running() => EXIT_NOT_RUNNING,
        FilesError::Agent(a) if a.is_not_answering() => EXIT_NOT_ANSWERING,
        FilesError::NotTailed { .. } | FilesError::Stat { .. } => EXIT_NOT_TAILED,
        FilesError::TimedOut { .. } => EXIT_TIMED_OUT,
        FilesError::Agent(_) => 1,
    }
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, ino: u64, state: FileState, read: u64, delivered_to: u64) -> FileStatus {
        FileStatus {
            path: path.into(),
            tailed_path: "/l/a.log".into(),
            stream: "s".into(),
            device: 1,
            inode: ino,
            state,
            size: 100,
            read,
            delivered_to,
            delivered: delivered_to == read,
            pending_batches: u64::from(delivered_to != read),
        }
    }

    fn target(ino: u64) -> Target {
        Target {
            path: "/l/a.log".into(),
            device: 1,
            inode: ino,
        }
    }

    #[test]
    fn a_file_is_delivered_once_read_to_its_end_and_every_byte_read_left_the_spool() {
        let partial = FilesReport {
            files: vec![file("/l/a.log", 7, FileState::Tailed, 100, 60)],
        };
        let Verdict::Waiting(why) = judge(&target(7), None, &partial) else {
            panic!("not delivered yet");
        };
        assert!(why.contains("60 of 100 bytes read are delivered"), "{why}");
        let full = FilesReport {
            files: vec![file("/l/a.log", 7, FileState::Tailed, 100, 100)],
        };
        assert_eq!(judge(&target(7), None, &full), Verdict::Delivered);
        // The file grew since the agent looked: not read to its end.
        let Verdict::Waiting(why) = judge(&target(7), Some(120), &full) else {
            panic!("grown");
        };
        assert!(why.contains("read to 100 of 120 bytes"), "{why}");
        assert_eq!(judge(&target(8), None, &full), Verdict::NotTailed);
        let table = full.render();
        assert!(table.contains("1:7") && table.contains("yes"), "{table}");
    }

    #[test]
    fn a_tailed_file_waits_for_the_files_rotated_away_from_its_path() {
        let mut report = FilesReport {
            files: vec![
                file("/l/a.log.1", 6, FileState::Closed, 100, 40),
                file("/l/a.log", 7, FileState::Tailed, 100, 100),
            ],
        };
        let Verdict::Waiting(why) = judge(&target(7), None, &report) else {
            panic!("the rotated file is not delivered");
        };
        assert!(why.contains("/l/a.log.1 (1:6), rotated away"), "{why}");
        // Asked by its identity, the rotated file is judged alone.
        let rotated = Target {
            path: "/l/a.log.1".into(),
            device: 1,
            inode: 6,
        };
        assert!(matches!(
            judge(&rotated, None, &report),
            Verdict::Waiting(_)
        ));
        report.files[0] = file("/l/a.log.1", 6, FileState::Closed, 100, 100);
        assert_eq!(judge(&target(7), None, &report), Verdict::Delivered);
        assert_eq!(judge(&rotated, None, &report), Verdict::Delivered);
    }
}
