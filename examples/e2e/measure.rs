//! What the report is made of: sampling periods and limits, the hang watch
//! ([`Progress`], which owns the last count it saw and when), and the helpers that
//! read and print memory figures. Called by `deliver`, `backlog` and `child`.

use std::time::{Duration, Instant};

use crate::common;

/// RSS, spool and progress sampling period.
pub(crate) const SAMPLE: Duration = Duration::from_millis(100);
/// Longest wait for the phase 1 agent to start or stop, and longest time without
/// progress (lines spooled or delivered) before the run is declared hung.
pub(crate) const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Ends the benchmark when a count stops moving: the agent hangs.
pub(crate) struct Progress {
    what: &'static str,
    last: (u64, Instant),
}

impl Progress {
    pub(crate) fn new(what: &'static str) -> Progress {
        Progress {
            what,
            last: (u64::MAX, Instant::now()),
        }
    }

    /// Notes the count `now`; exits with status 3 (after printing every thread's
    /// backtrace) if it has not moved for [`CHILD_LIMIT`].
    pub(crate) fn check(&mut self, now: u64) {
        if now != self.last.0 {
            self.last = (now, Instant::now());
        } else if self.last.1.elapsed() > CHILD_LIMIT {
            // Not a panic: dropping the runtime would wait for the hung spool threads.
            eprintln!(
                "e2e: {} stuck at {now} for {CHILD_LIMIT:?}: the agent hangs",
                self.what
            );
            common::print_backtraces();
            std::process::exit(3);
        }
    }
}

/// Prints the median and maximum of RSS samples (KiB).
pub(crate) fn print_samples(label: &str, samples: &[u64]) {
    let mut s = samples.to_vec();
    s.sort_unstable();
    if let Some(max) = s.last() {
        println!(
            "{label} median {:.1} MiB, max {:.1} MiB ({} samples)",
            s[s.len() / 2] as f64 / 1024.0,
            *max as f64 / 1024.0,
            s.len()
        );
    }
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// A `kB` field of /proc/PID/status (`self` or a pid); 0 once the process is gone.
pub(crate) fn status_kib(pid: &str, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}
