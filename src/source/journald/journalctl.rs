//! The `journalctl` child process: its command line, a reader thread turning its
//! output into bounded lines, and its standard error in the log.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::mpsc;

use super::{BUFFER_BYTES, MAX_LINE_BYTES, STDERR_LINES};
use crate::config::journald::{JournaldConfig, Since};
use crate::record::excerpt;

/// The journalctl command that goes on after `cursor` (or starts per `since`).
pub(crate) fn command(config: &JournaldConfig, cursor: Option<&str>) -> Command {
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
pub(crate) fn tail_command(config: &JournaldConfig) -> Command {
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
    /// An entry, holding its bytes of the reader's buffer until dropped.
    Entry(Vec<u8>, Held),
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

/// The bytes of lines read and not yet turned into records: the reader waits
/// while they are over [`BUFFER_BYTES`], so a full spool holds journalctl back
/// within a bound in bytes, whatever the entries' size (300 entries of 7 MiB
/// once took 2.1 GiB). One line is always let through, however long (up to
/// [`MAX_LINE_BYTES`]), so a long entry cannot stop the reader.
#[derive(Default)]
pub(super) struct Gate {
    used: Mutex<usize>,
    freed: Condvar,
}

/// A line's share of the [`Gate`], given back when dropped.
pub(super) struct Held {
    gate: Arc<Gate>,
    bytes: usize,
}

impl Gate {
    /// Waits until `bytes` more fit (or nothing is held), then holds them.
    fn hold(gate: &Arc<Gate>, bytes: usize) -> Held {
        let mut used = gate.used.lock().expect("gate lock poisoned");
        while *used > 0 && *used + bytes > BUFFER_BYTES {
            used = gate.freed.wait(used).expect("gate lock poisoned");
        }
        *used += bytes;
        Held {
            gate: gate.clone(),
            bytes,
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        *self.used.lock().expect("gate lock poisoned")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        *self.gate.used.lock().expect("gate lock poisoned") -= self.bytes;
        self.gate.freed.notify_all();
    }
}

/// Reads lines of `out` into `tx` until the end; then reports how the child
/// ended.
pub(super) fn read_lines(
    out: impl Read,
    child: Arc<Mutex<Child>>,
    tx: mpsc::Sender<Line>,
    gate: Arc<Gate>,
) {
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
                let held = Gate::hold(&gate, line.capacity());
                // The buffer goes with the line: the next one starts small.
                if tx
                    .blocking_send(Line::Entry(std::mem::take(&mut line), held))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_holds_lines_back_past_its_bytes_but_always_lets_one_through() {
        let gate = Arc::new(Gate::default());
        // One line over the bound passes when nothing is held.
        let big = Gate::hold(&gate, BUFFER_BYTES + 1);
        assert_eq!(gate.used(), BUFFER_BYTES + 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let small = Gate::hold(&gate, 10);
                tx.send(()).unwrap();
                small
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100))
                .is_err(),
            "a line went past a full gate"
        );
        drop(big);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the freed bytes did not let the line through");
        let small = waiter.join().unwrap();
        assert_eq!(gate.used(), 10);
        drop(small);
        assert_eq!(gate.used(), 0);
    }
}
