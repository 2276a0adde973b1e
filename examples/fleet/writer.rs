//! The offered load: one thread appends lines to every agent's input file at a
//! steady pace. [`Writer`] owns the thread from `start` to `stop` (both called
//! by `fleet`); the per-agent counts of lines written are shared with `fleet`
//! (which watches the drain with them). One buffer is reused for every write:
//! the thread does no allocation per line.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::line::{now_us, write_line, LineId};

/// How often the thread writes what is due.
const TICK: Duration = Duration::from_millis(10);

/// The running writer.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    /// Lines written so far, per agent.
    pub(crate) written: Arc<Vec<AtomicU64>>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Writer {
    /// Starts writing `lines_per_sec` lines of `line_bytes` bytes per second to
    /// each of `files` (agent `i` writes `files[i]`).
    pub(crate) fn start(files: Vec<PathBuf>, lines_per_sec: f64, line_bytes: usize) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let written: Arc<Vec<AtomicU64>> =
            Arc::new(files.iter().map(|_| AtomicU64::new(0)).collect());
        let (s, w) = (stop.clone(), written.clone());
        let thread = std::thread::Builder::new()
            .name("fleet-writer".into())
            .spawn(move || write_files(&files, lines_per_sec, line_bytes, &s, &w))
            .expect("a thread can be started");
        Writer {
            stop,
            written,
            thread,
        }
    }

    /// Stops the thread; returns the lines written per agent.
    pub(crate) fn stop(self) -> Result<Vec<u64>, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the writer panicked".to_owned())?
            .map_err(|e| format!("the writer failed: {e}"))?;
        Ok(self
            .written
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect())
    }
}

fn write_files(
    paths: &[PathBuf],
    lines_per_sec: f64,
    line_bytes: usize,
    stop: &AtomicBool,
    written: &[AtomicU64],
) -> std::io::Result<()> {
    let mut files = paths
        .iter()
        .map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut seqs = vec![0u64; files.len()];
    let mut buf = Vec::with_capacity(1 << 20);
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * lines_per_sec) as u64;
        for (agent, (file, seq)) in files.iter_mut().zip(&mut seqs).enumerate() {
            buf.clear();
            let written_us = now_us();
            let first = *seq;
            while *seq < due {
                let id = LineId {
                    agent,
                    seq: *seq,
                    written_us,
                };
                write_line(&mut buf, id, line_bytes);
                *seq += 1;
            }
            if !buf.is_empty() {
                file.write_all(&buf)?;
                written[agent].fetch_add(*seq - first, Ordering::Relaxed);
            }
        }
        std::thread::sleep(TICK);
    }
    Ok(())
}
