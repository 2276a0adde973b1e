//! The phase 1 agent of `--backlog`: the real `shardline` binary as a child
//! process. [`ChildAgent`] owns the child, its pid, its metrics address and the
//! path of its log; `backlog` starts it, watches its spool fill, samples its
//! memory, and stops it with a signal.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::measure::{status_kib, CHILD_LIMIT, SAMPLE};

/// A running agent process.
pub(crate) struct ChildAgent {
    child: Child,
    pid: String,
    /// Its `/metrics` endpoint, from its status file.
    metrics: SocketAddr,
    /// Its stderr.
    log: PathBuf,
}

impl ChildAgent {
    /// Runs `bin` on `config`, its status file and log in `work`; returns once
    /// its status file names its metrics address.
    pub(crate) fn start(bin: &Path, config: &Path, work: &Path) -> ChildAgent {
        let status_file = work.join("agent.status");
        let log = work.join("agent.log");
        let mut child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .arg("--status-file")
            .arg(&status_file)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("agent process");
        let pid = child.id().to_string();
        let metrics = wait_status_file(&mut child, &status_file);
        ChildAgent {
            child,
            pid,
            metrics,
            log,
        }
    }

    /// A `kB` field of the process's /proc status.
    pub(crate) fn status_kib(&self, field: &str) -> u64 {
        status_kib(&self.pid, field)
    }

    /// The process's user + system CPU seconds so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        common::cpu_seconds(&self.pid)
    }

    /// A gauge without labels from the agent's `/metrics`.
    pub(crate) fn gauge(&self, name: &str) -> Option<u64> {
        scrape_gauge(&self.metrics, name)
    }

    /// Waits until the spool holds `lines` records; returns the RSS samples (KiB)
    /// taken meanwhile. Kills the agent and panics if the spool stops growing for
    /// [`CHILD_LIMIT`].
    pub(crate) fn wait_spooled(&mut self, lines: u64) -> Vec<u64> {
        let mut rss = Vec::new();
        let mut last = (0, Instant::now());
        loop {
            let held = self.gauge("shardline_spool_records").unwrap_or(0);
            rss.push(self.status_kib("VmRSS:"));
            if held >= lines {
                return rss;
            }
            if held > last.0 {
                last = (held, Instant::now());
            } else if last.1.elapsed() > CHILD_LIMIT {
                let _ = self.child.kill();
                panic!(
                    "the spool stopped growing at {held} of {lines} records; log: {:?}",
                    self.log
                );
            }
            std::thread::sleep(SAMPLE);
        }
    }

    /// Sends `SIG<signal>` and waits for the process to exit.
    pub(crate) fn stop(mut self, signal: &str) -> ExitStatus {
        let killed = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&self.pid)
            .status()
            .expect("kill");
        assert!(killed.success(), "kill -{signal} {} failed", self.pid);
        wait_exit(&mut self.child)
    }
}

/// Waits for the child agent's status file; returns its metrics address.
fn wait_status_file(child: &mut Child, path: &Path) -> SocketAddr {
    let deadline = Instant::now() + CHILD_LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(f) = serde_json::from_str::<shardline::agent::StatusFile>(&text) {
                if f.pid == child.id() {
                    return f.metrics_addr;
                }
            }
        }
        if let Ok(Some(exit)) = child.try_wait() {
            panic!("the agent exited with {exit} before starting");
        }
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + CHILD_LIMIT;
    loop {
        if let Some(exit) = child.try_wait().expect("wait for the agent") {
            return exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not stop within {CHILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A gauge without labels from the agent's `/metrics`.
fn scrape_gauge(addr: &SocketAddr, name: &str) -> Option<u64> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}
