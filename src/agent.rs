//! The agent: the [`Producer`] (spool and delivery) plus the configured sources, and
//! the order in which they stop.
//!
//! Sources are the sockets and the file tailer (one thread for every `[[file]]`
//! block). Shutdown order: sources stop accepting and spool what they hold (the file
//! tailer finishes the batch in hand unless the spool is full; lines not spooled are
//! read again at the next start from the checkpoint); then the
//! producer closes intake, seals partial aggregates, lets requests finish for up to
//! `shutdown_timeout_secs`, and flushes the spool. Whatever was not delivered stays
//! in the spool and is replayed at the next start. The metrics endpoint stops last,
//! so it can be asked how the stop goes.
//!
//! [`run`] is the agent as a service: it tells systemd when it is ready, pings the
//! watchdog from its main loop, and can leave the endpoint's bound address in a
//! file for scripts. A configuration reload (SIGHUP) will come in as another input
//! of [`run_with`], beside the shutdown future.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::deliver::kinesis::{SdkKinesis, SharedKinesis};
use crate::metrics::Metrics;
use crate::producer::{Producer, ProducerError, ProducerOptions, ShutdownReport};
use crate::source::file;
use crate::source::socket::{self, SocketError};
use crate::status::{self, StatusError, View};
use crate::systemd::Notifier;

/// Why the agent could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("pipeline failed")]
    Producer(#[from] ProducerError),
    #[error("socket source failed")]
    Socket(#[from] SocketError),
    #[error("metrics endpoint failed")]
    Status(#[from] StatusError),
    #[error("cannot write the status file {path}")]
    StatusFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running agent.
pub struct Agent {
    producer: Producer,
    sources: CancellationToken,
    source_tasks: TaskTracker,
    metrics_addr: SocketAddr,
    endpoint: CancellationToken,
    endpoint_tasks: TaskTracker,
}

/// How [`run_with`] runs the agent, beyond its config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// A file written once the agent has started — JSON with `pid` and
    /// `metrics_addr`, the endpoint's bound address (useful with port 0) — and
    /// removed when it stops.
    pub status_file: Option<PathBuf>,
}

/// What the status file holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusFile {
    pub pid: u32,
    pub metrics_addr: SocketAddr,
}

/// Runs the agent until `shutdown` resolves, then stops it gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<ShutdownReport, AgentError> {
    run_with(config, shutdown, RunOptions::default()).await
}

/// Like [`run`], with the service's extras: systemd readiness and watchdog (from
/// `NOTIFY_SOCKET` / `WATCHDOG_USEC`) and the status file.
pub async fn run_with(
    config: Config,
    shutdown: impl Future<Output = ()>,
    options: RunOptions,
) -> Result<ShutdownReport, AgentError> {
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "Cannot notify systemd; running without readiness and watchdog notifications");
        Notifier::disabled()
    });
    let agent = Agent::start(config).await?;
    if let Some(path) = &options.status_file {
        let file = StatusFile {
            pid: std::process::id(),
            metrics_addr: agent.metrics_addr(),
        };
        if let Err(source) = write_status_file(path, &file) {
            agent.stop().await?;
            return Err(AgentError::StatusFile {
                path: path.clone(),
                source,
            });
        }
    }
    notify(&notifier, "READY=1\nSTATUS=Forwarding records");
    tokio::pin!(shutdown);
    match notifier.watchdog_interval() {
        None => shutdown.await,
        Some(every) => {
            // The main loop proves it runs by pinging; a stuck runtime misses the
            // pings and systemd restarts the agent.
            let mut ping = tokio::time::interval(every);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = ping.tick() => notify(&notifier, "WATCHDOG=1"),
                }
            }
        }
    }
    tracing::info!("Shutting down");
    notify(&notifier, "STOPPING=1\nSTATUS=Stopping");
    if let Some(path) = &options.status_file {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "Removing the status file failed");
        }
    }
    agent.stop().await
}

fn notify(notifier: &Notifier, state: &str) {
    if let Err(e) = notifier.notify(state) {
        tracing::warn!(error = %e, "Notifying systemd failed");
    }
}

/// Writes the status file: temp file, fsync, rename, so a reader never sees half.
fn write_status_file(path: &Path, file: &StatusFile) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut f, file)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Agent {
    /// Starts the agent with a Kinesis client built from the config.
    pub async fn start(config: Config) -> Result<Agent, AgentError> {
        let options = ProducerOptions::from_config(&config);
        let kinesis = SdkKinesis::new(&options.client).await;
        Self::start_with(config, Arc::new(kinesis)).await
    }

    /// Starts the agent with the given Kinesis client.
    pub async fn start_with(config: Config, kinesis: SharedKinesis) -> Result<Agent, AgentError> {
        let producer = Producer::start_with(ProducerOptions::from_config(&config), kinesis).await?;
        let (listener, metrics_addr) = match status::bind(config.metrics.listen).await {
            Ok(bound) => bound,
            Err(e) => {
                producer.shutdown().await?;
                return Err(e.into());
            }
        };
        let agent = Agent {
            producer,
            sources: CancellationToken::new(),
            source_tasks: TaskTracker::new(),
            metrics_addr,
            endpoint: CancellationToken::new(),
            endpoint_tasks: TaskTracker::new(),
        };
        agent.endpoint_tasks.spawn(status::serve(
            listener,
            Arc::new(View::new(agent.producer.clone(), config.streams())),
            agent.endpoint.clone(),
            agent.endpoint_tasks.clone(),
        ));
        tracing::info!(addr = %metrics_addr, "Metrics endpoint listening");
        // Bind every socket before serving any, so a bad path fails the start.
        let mut listeners = Vec::new();
        for s in &config.sockets {
            match socket::bind(s) {
                Ok(l) => listeners.push((l, s.clone())),
                Err(e) => {
                    agent.stop().await?;
                    return Err(e.into());
                }
            }
        }
        for (listener, s) in listeners {
            agent.source_tasks.spawn(socket::serve(
                listener,
                s,
                agent.producer.clone(),
                agent.sources.clone(),
                agent.source_tasks.clone(),
            ));
        }
        if !config.files.is_empty() {
            file::spawn(
                config.files.clone(),
                agent.producer.clone(),
                agent.sources.clone(),
                &agent.source_tasks,
            );
        }
        tracing::info!(
            streams = ?config.streams(),
            sockets = config.sockets.len(),
            file_blocks = config.files.len(),
            "Agent started"
        );
        Ok(agent)
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    pub fn metrics(&self) -> &Metrics {
        self.producer.metrics()
    }

    /// The address the metrics endpoint listens on (the bound port when the
    /// config asked for port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Stops gracefully: sources first, then the producer (bounded by the shutdown
    /// timeout), which flushes the spool.
    pub async fn stop(self) -> Result<ShutdownReport, AgentError> {
        self.sources.cancel();
        self.source_tasks.close();
        self.source_tasks.wait().await;
        let report = self.producer.shutdown().await;
        self.endpoint.cancel();
        self.endpoint_tasks.close();
        self.endpoint_tasks.wait().await;
        let report = report?;
        tracing::info!("Agent stopped");
        Ok(report)
    }
}
