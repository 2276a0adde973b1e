//! The agents: real `shardline` processes, one work directory each (config,
//! spool, input file, status file, log). [`Agent`] owns one child process;
//! `fleet` starts them all with [`Agent::spawn`], reads their CPU time and peak
//! memory with [`Agent::usage`] before it stops them with SIGTERM. Each signs
//! with its own access key (`layer::access_key`), which is how the model tells
//! them apart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::layer::access_key;
use super::model::STREAM;

/// Longest wait for a started agent's status file (32 debug builds starting
/// on two cores are slow).
const START_LIMIT: Duration = Duration::from_secs(120);

/// CPU time and memory of one agent process.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub(crate) cpu_secs: f64,
    /// VmHWM: the peak resident set, in bytes.
    pub(crate) peak_rss_bytes: u64,
}

/// One running agent; killed when dropped if it still runs.
pub(crate) struct Agent {
    pub(crate) index: usize,
    /// The file it tails.
    pub(crate) input: PathBuf,
    child: Child,
    status_file: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Writes agent `index`'s config under `work` and starts it (`partition_key`:
    /// its file source's key setting).
    pub(crate) fn spawn(
        bin: &Path,
        work: &Path,
        index: usize,
        endpoint: &str,
        partition_key: &str,
    ) -> Result<Agent, String> {
        let dir = work.join(format!("agent-{index:02}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let input = dir.join("input.log");
        std::fs::File::create(&input).map_err(|e| format!("{}: {e}", input.display()))?;
        let config = dir.join("shardline.toml");
        let text = format!(
            "[kinesis]\nstream = \"{STREAM}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n\
             [[file]]\ninclude = [\"{}\"]\npartition_key = \"{partition_key}\"\n",
            dir.join("spool").display(),
            input.display(),
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let (status_file, log) = (dir.join("agent.status"), dir.join("agent.log"));
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(bin)
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config)
            .arg("--status-file")
            .arg(&status_file)
            .env("AWS_ACCESS_KEY_ID", access_key(index))
            .env("AWS_SECRET_ACCESS_KEY", "fleet")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Agent {
            index,
            input,
            child,
            status_file,
            log,
        })
    }

    /// Waits until the agent wrote its status file.
    pub(crate) async fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.status_file) {
                if let Ok(f) = serde_json::from_str::<shardline::agent::StatusFile>(&text) {
                    if f.pid == self.child.id() {
                        return Ok(());
                    }
                }
            }
            if let Some(exit) = self.exited() {
                return Err(self.failed(&format!("exited with {exit} before starting")));
            }
            if Instant::now() > deadline {
                return Err(self.failed(&format!("did not start within {START_LIMIT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn failed(&self, what: &str) -> String {
        format!("agent {} {what}; log: {}", self.index, self.log.display())
    }

    /// How the process exited, if it has.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// CPU seconds and peak RSS so far (zero once the process is gone).
    pub(crate) fn usage(&self) -> Usage {
        let pid = self.child.id();
        let cpu_secs = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the command name: utime and stime are the 12th
                // and 13th, in clock ticks (100 per second on Linux).
                let rest = stat
                    .rsplit(')')
                    .next()?
                    .split_whitespace()
                    .collect::<Vec<_>>();
                let ticks =
                    rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
                Some(ticks / 100.0)
            })
            .unwrap_or(0.0);
        let peak_rss_bytes = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(0);
        Usage {
            cpu_secs,
            peak_rss_bytes,
        }
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) with a pid of our own child that is not reaped yet
        // (`child` is only waited for through `exited`, `stop` and `drop`).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits up to `limit` for the process to exit after SIGTERM; false if it
    /// did not (then it is killed) or exited with a failure.
    pub(crate) async fn stopped(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(exit) = self.exited() {
                return exit.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // An early return must not leave agents running.
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
