//! The agent as a child process. [`AgentCommand`] owns how it is started (the
//! binary, the config, the work directory, its `RUST_LOG`), the same for every
//! incarnation; an [`AgentProcess`] owns one running incarnation's child and knows
//! its status file and log. `main` starts the first and makes the last graceful
//! stop; `chaos` kills, stops and restarts it; `drain` checks that it keeps running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a started agent's status file.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Longest graceful stop: the agent's `shutdown_timeout_secs` (30) and a margin.
pub(crate) const STOP_LIMIT: Duration = Duration::from_secs(60);

/// One incarnation of the agent; killed when dropped if it still runs.
pub(crate) struct AgentProcess {
    child: Child,
    status_file: PathBuf,
    log: PathBuf,
}

/// How the agent is started: the same binary, config and work directory each time.
pub(crate) struct AgentCommand {
    pub(crate) bin: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) work: PathBuf,
    /// `RUST_LOG` of the agent.
    pub(crate) log_filter: String,
}

impl AgentCommand {
    /// Starts incarnation `n` of the agent, its JSON log in `agent-<n>.log`.
    pub(crate) fn spawn(&self, n: usize) -> Result<AgentProcess, String> {
        let log = self.work.join(format!("agent-{n}.log"));
        let status_file = self.work.join("agent.status");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&self.bin)
            .args(["--log-format", "json", "run", "--config"])
            .arg(&self.config)
            .arg("--status-file")
            .arg(&status_file)
            .env("RUST_LOG", &self.log_filter)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        Ok(AgentProcess {
            child,
            status_file,
            log,
        })
    }
}

impl AgentProcess {
    /// Waits for this process's status file; returns its metrics address.
    pub(crate) async fn ready(&mut self) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.status_file) {
                if let Ok(f) = serde_json::from_str::<shardline::agent::StatusFile>(&text) {
                    if f.pid == self.child.id() {
                        return Ok(f.metrics_addr);
                    }
                }
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!(
                    "the agent exited with {exit} before starting; log: {}",
                    self.log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent did not start within {START_LIMIT:?}; log: {}",
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The agent's JSON log.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// How the process exited, if it has.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILLs the process and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn signal(&self, signal: &str) -> Result<(), String> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {} failed", self.child.id()))
        }
    }

    /// Waits up to `limit` for the process to exit (then SIGKILLs it).
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(exit)) => return Ok(exit),
                Ok(None) if Instant::now() > deadline => {
                    self.kill();
                    return Err(format!("the agent did not stop within {limit:?}"));
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(format!("waiting for the agent: {e}")),
            }
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // An early return must not leave the agent running.
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
