//! The `journalctl` child process: its command line, a reader thread turning its
//! output into bounded lines, and its standard error in the log.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::config::{JournaldConfig, Since};
use super::{MAX_LINE_BYTES, STDERR_LINES};
use crate::record::excerpt;

/// The journalctl command that goes on after `cursor` (or starts per `since`).
pub fn command(config: &JournaldConfig, cursor: Option<&str>) -> Command {
    let mut c = Command::new(&config.journalctl);
    // --all: without it, fields over 4096 bytes come out as null.
    // --no-tail: --follow alone starts at the last ten entries.
    c.args([
        "--output=json",
        "--follow",
        "--all",
        "--no-pager",
        "--no-tail",
    ]);
    if let Some(d) = &config.directory {
        c.arg("--directory").arg(d);
    }
    match (cursor, config.since) {
        (Some(cursor), _) => {
            c.arg(format!("--after-cursor={cursor}"));
        }
        (None, Since::Boot) => {
            c.arg("--boot");
        }
        (None, Since::Now) => {
            c.arg("--since=now");
        }
        (None, Since::Beginning) => {}
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The command that prints the cursor of the journal's last entry.
pub fn tail_command(config: &JournaldConfig) -> Command {
    let mut c = Command::new(&config.journalctl);
    c.args(["--lines=0", "--show-cursor", "--no-pager"]);
    if let Some(d) = &config.directory {
        c.arg("--directory").arg(d);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

/// The cursor in `--show-cursor` output, if the journal has an entry.
pub(super) fn parse_tail_cursor(output: &[u8]) -> Option<String> {
    String::from_utf8_lossy(output)
        .lines()
        .find_map(|l| l.strip_prefix("-- cursor: "))
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
}

/// A line of journalctl's standard output, or its end.
pub(super) enum Line {
    Entry(Vec<u8>),
    TooLong(usize),
    End(String),
}

/// A running journalctl, killed and reaped when dropped.
pub(super) struct Running {
    pub(super) child: Arc<Mutex<Child>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Held only by the reader thread while it reaps a journalctl that closed
        // its output (it is exiting by itself).
        let Ok(mut child) = self.child.try_lock() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let _ = child.kill();
        drop(child);
        let child = self.child.clone();
        // Reaping waits for the process to go; keep it off the async threads.
        std::thread::spawn(move || {
            let _ = child.lock().expect("child lock poisoned").wait();
        });
    }
}

/// Reads lines of `out` into `tx` until the end; then reports how the child
/// ended.
pub(super) fn read_lines(out: impl Read, child: Arc<Mutex<Child>>, tx: mpsc::Sender<Line>) {
    let mut out = BufReader::with_capacity(256 * 1024, out);
    let mut line = Vec::new();
    let end = loop {
        line.clear();
        match read_line(&mut out, &mut line) {
            Ok(0) => break None,
            Ok(n) if n > MAX_LINE_BYTES => {
                if tx.blocking_send(Line::TooLong(n)).is_err() {
                    return;
                }
            }
            Ok(_) => {
                if tx
                    .blocking_send(Line::Entry(std::mem::take(&mut line)))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => break Some(format!("reading its output failed: {e}")),
        }
    };
    let end = end.unwrap_or_else(|| match child.lock().expect("child lock poisoned").wait() {
        Ok(status) => format!("journalctl exited ({status})"),
        Err(e) => format!("waiting for journalctl failed: {e}"),
    });
    let _ = tx.blocking_send(Line::End(end));
}

/// Reads one line (without its newline) into `line`, keeping at most
/// [`MAX_LINE_BYTES`] + 1 of it; returns its full length (0 at the end, 1 for an
/// empty line is never returned: empty lines are skipped).
pub(super) fn read_line(out: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut len = 0;
    loop {
        let buf = out.fill_buf()?;
        if buf.is_empty() {
            return Ok(len);
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        len += take;
        out.consume(take + usize::from(done));
        if done && len > 0 {
            return Ok(len);
        }
    }
}

/// Logs journalctl's standard error (a bounded number of lines per run).
pub(super) fn log_stderr(err: impl Read, name: String) {
    let mut lines = BufReader::new(err).split(b'\n');
    let mut logged = 0;
    while let Some(Ok(line)) = lines.next() {
        if logged < STDERR_LINES {
            logged += 1;
            let text = String::from_utf8_lossy(&line);
            tracing::warn!(name = %name, message = %excerpt(text.trim()), "journalctl says");
        }
    }
}
