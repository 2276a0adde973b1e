//! The running agent's redrive inbox: `<spool dir>/redrive/`.
//!
//! The agent holds the spool's lock, so `shardline redrive` cannot open the
//! spool; it leaves a request (`<id>.request`, the file's absolute path, JSON,
//! written temp → rename) and waits for the answer (`<id>.report`) that the
//! agent writes when it is done, before it removes the request. The agent
//! looks every [`POLL`]; a request it was killed in the middle of is still
//! there at its next start and is run again, which writes only what the spool
//! does not hold yet. The inbox is created by the agent at start-up, so it is
//! the agent's to write in; the files are an operator's (the spool directory
//! is not anyone else's to write).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{redrive_file, RedriveError, RedriveReport};
use crate::intake::Intake;
use crate::spool::{lock_holder, now_ms, LockState, SpoolError};

/// The inbox's name in the spool directory.
pub(super) const INBOX: &str = "redrive";
/// How often the agent looks for requests, and the command for the answer.
const POLL: Duration = Duration::from_millis(250);

#[derive(serde::Serialize, serde::Deserialize)]
struct Request {
    file: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Done(RedriveReport),
    Failed(String),
}

/// The agent's side: runs the requests it finds in the inbox of the spool at
/// `spool_dir` through `intakes` until `shutdown`.
pub(crate) async fn watch<F, Fut>(
    intakes: HashMap<String, Intake>,
    durable: F,
    spool_dir: PathBuf,
    shutdown: CancellationToken,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), SpoolError>>,
{
    let inbox = spool_dir.join(INBOX);
    if let Err(e) = std::fs::create_dir_all(&inbox) {
        tracing::warn!(inbox = %inbox.display(), error = %e,
            "Cannot create the redrive inbox; shardline redrive needs the agent stopped");
        return;
    }
    loop {
        for request in pending(&inbox) {
            let answer = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = answer(&intakes, &durable, &request) => a,
            };
            let report = request.with_extension("report");
            let written = write_new(&report, &serde_json::to_vec(&answer).unwrap_or_default());
            if let Err(e) = written.and_then(|()| std::fs::remove_file(&request)) {
                tracing::warn!(request = %request.display(), error = %e,
                    "Cannot answer a redrive request; it is run again (writing nothing twice)");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The requests waiting, oldest first.
fn pending(inbox: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(inbox)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "request"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn answer<F, Fut>(intakes: &HashMap<String, Intake>, durable: &F, request: &Path) -> Answer
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), SpoolError>>,
{
    let file = match std::fs::read(request)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Request>(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r.file,
        Err(e) => return Answer::Failed(format!("unreadable request {}: {e}", request.display())),
    };
    match redrive_file(intakes, durable, &file).await {
        Ok(mut report) => {
            report.by_agent = true;
            if report.refused.is_empty() {
                tracing::info!(file = %file.display(), records = report.records(), already = report.already,
                    "Redrove a dead-letter file");
            } else {
                tracing::warn!(file = %file.display(), refused = report.refused.len(),
                    "Refused to redrive a dead-letter file: lines do not read or name streams not written to");
            }
            Answer::Done(report)
        }
        Err(e) => {
            let why = error_chain(&e);
            tracing::warn!(file = %file.display(), error = %why, "A redrive failed");
            Answer::Failed(why)
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

/// Writes a file whole under its name (temp → rename).
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The command's side: asks the agent holding the spool at `spool_dir` to
/// redrive `file` and waits for its answer.
pub(super) fn submit(spool_dir: &Path, file: &Path) -> Result<RedriveReport, RedriveError> {
    let inbox = spool_dir.join(INBOX);
    let failed = |source| RedriveError::Inbox {
        inbox: inbox.clone(),
        source,
    };
    if !inbox.is_dir() {
        return Err(RedriveError::Agent(format!(
            "the running agent takes no redrive requests (there is no {}): stop it and run redrive again",
            inbox.display()
        )));
    }
    let id = format!("{:016}-{}", now_ms(), std::process::id());
    let request = inbox.join(format!("{id}.request"));
    let body = serde_json::to_vec(&Request {
        file: file.to_owned(),
    })
    .unwrap_or_default();
    write_new(&request, &body).map_err(failed)?;
    let report = inbox.join(format!("{id}.report"));
    let mut polls = 0u64;
    loop {
        std::thread::sleep(POLL);
        polls += 1;
        if let Ok(text) = std::fs::read(&report) {
            let _ = std::fs::remove_file(&report);
            return match serde_json::from_slice::<Answer>(&text) {
                Ok(Answer::Done(r)) => Ok(r),
                Ok(Answer::Failed(why)) => Err(RedriveError::Agent(format!(
                    "the agent's redrive failed: {why}"
                ))),
                Err(e) => Err(RedriveError::Agent(format!(
                    "unreadable answer {}: {e}",
                    report.display()
                ))),
            };
        }
        if polls.is_multiple_of(4) && lock_holder(spool_dir) == LockState::Free && !report.exists()
        {
            return Err(RedriveError::Agent(format!(
                "the agent stopped before it answered; the request stays in {} and runs when the agent starts again (or run redrive again now: nothing is written twice)",
                inbox.display()
            )));
        }
    }
}

/// Removes the requests for `file` left in the inbox (a redrive done without
/// the agent made them moot).
pub(super) fn forget(spool_dir: &Path, file: &Path) {
    for request in pending(&spool_dir.join(INBOX)) {
        let names = std::fs::read(&request)
            .ok()
            .and_then(|b| serde_json::from_slice::<Request>(&b).ok())
            .is_some_and(|r| r.file == file);
        if names {
            let _ = std::fs::remove_file(&request);
        }
    }
}
