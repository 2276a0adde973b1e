//! The agent: the [`Producer`] (spool and delivery) plus the configured sources, and
//! the order in which they stop.
//!
//! Sources are the sockets and the file tailer (one thread for every `[[file]]`
//! block). Shutdown order: sources stop accepting and spool what they hold (the file
//! tailer finishes the batch in hand unless the spool is full; lines not spooled are
//! read again at the next start from the checkpoint); then the
//! producer closes intake, seals partial aggregates, lets requests finish for up to
//! `shutdown_timeout_secs`, and flushes the spool. Whatever was not delivered stays
//! in the spool and is replayed at the next start.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::deliver::kinesis::{SdkKinesis, SharedKinesis};
use crate::metrics::Metrics;
use crate::producer::{Producer, ProducerError, ProducerOptions, ShutdownReport};
use crate::source::file;
use crate::source::socket::{self, SocketError};

/// Why the agent could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("pipeline failed")]
    Producer(#[from] ProducerError),
    #[error("socket source failed")]
    Socket(#[from] SocketError),
}

/// A running agent.
pub struct Agent {
    producer: Producer,
    sources: CancellationToken,
    source_tasks: TaskTracker,
}

/// Runs the agent until `shutdown` resolves, then stops it gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<ShutdownReport, AgentError> {
    let agent = Agent::start(config).await?;
    shutdown.await;
    tracing::info!("Shutting down");
    agent.stop().await
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
        let agent = Agent {
            producer,
            sources: CancellationToken::new(),
            source_tasks: TaskTracker::new(),
        };
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

    /// Stops gracefully: sources first, then the producer (bounded by the shutdown
    /// timeout), which flushes the spool.
    pub async fn stop(self) -> Result<ShutdownReport, AgentError> {
        self.sources.cancel();
        self.source_tasks.close();
        self.source_tasks.wait().await;
        let report = self.producer.shutdown().await?;
        tracing::info!("Agent stopped");
        Ok(report)
    }
}
