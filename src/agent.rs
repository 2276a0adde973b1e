//! The agent: opens the spool, starts one dispatcher per stream and the sources, and
//! stops them in order.
//!
//! Shutdown order: sources stop accepting and spool what they hold; the producer
//! closes; dispatchers seal their partial aggregates and may finish sending for up to
//! `shutdown_timeout`; the spool is flushed. Whatever was not delivered stays in the
//! spool and is replayed at the next start.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::deliver::kinesis::{ClientOptions, SdkKinesis, SharedKinesis};
use crate::deliver::{self, DrainReport};
use crate::metrics::Metrics;
use crate::producer::Producer;
use crate::source::socket::{self, SocketError};
use crate::spool::{Spool, SpoolError};

/// Why the agent could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("spool failed")]
    Spool(#[from] SpoolError),
    #[error("socket source failed")]
    Socket(#[from] SocketError),
}

/// What a stop left behind.
#[derive(Debug, Clone, Default)]
pub struct StopReport {
    /// User records that were loaded for delivery but not delivered; they are in the
    /// spool, with everything never loaded.
    pub undelivered_records: u64,
    /// Bytes of records left in the spool.
    pub spooled_bytes: u64,
}

/// A running agent.
pub struct Agent {
    producer: Producer,
    metrics: Metrics,
    spool: Spool,
    sources: CancellationToken,
    source_tasks: TaskTracker,
    producer_stop: CancellationToken,
    delivery: CancellationToken,
    delivery_tasks: TaskTracker,
    drain_deadline: watch::Sender<Option<Instant>>,
    dispatchers: Vec<tokio::task::JoinHandle<DrainReport>>,
    config: Config,
}

/// Runs the agent until `shutdown` resolves, then stops it gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<StopReport, AgentError> {
    let agent = Agent::start(config).await?;
    shutdown.await;
    tracing::info!("Shutting down");
    agent.stop().await
}

impl Agent {
    /// Starts the agent with a Kinesis client built from the config.
    pub async fn start(config: Config) -> Result<Agent, AgentError> {
        let kinesis = SdkKinesis::new(&ClientOptions {
            region: config.kinesis.region.clone(),
            endpoint: config.kinesis.endpoint.clone(),
            request_timeout: Some(config.kinesis.request_timeout),
        })
        .await;
        Self::start_with(config, Arc::new(kinesis)).await
    }

    /// Starts the agent with the given Kinesis client.
    pub async fn start_with(config: Config, kinesis: SharedKinesis) -> Result<Agent, AgentError> {
        let spool_options = config.spool.clone();
        // Opening counts the bytes held, a scan: keep it off the async threads.
        let spool = tokio::task::spawn_blocking(move || Spool::open(&spool_options))
            .await
            .expect("spool open task panicked")?;
        let held = spool.used_bytes();
        if held > 0 {
            tracing::info!(
                bytes = held,
                "Spool holds undelivered records; replaying them"
            );
        }
        let metrics = Metrics::new();
        let permits = Arc::new(Semaphore::new(config.delivery.max_connections));
        let delivery = CancellationToken::new();
        let delivery_tasks = TaskTracker::new();
        let (drain_deadline, drain_rx) = watch::channel(None);
        let mut intakes = Vec::new();
        let mut dispatchers = Vec::new();
        for stream in config.streams() {
            let (intake, handle) = deliver::spawn_stream(
                spool.stream(&stream)?,
                kinesis.clone(),
                permits.clone(),
                config.delivery.clone(),
                metrics.clone(),
                delivery.clone(),
                drain_rx.clone(),
                &delivery_tasks,
            );
            intakes.push(intake);
            dispatchers.push(handle);
        }
        let producer_stop = CancellationToken::new();
        let producer = Producer::new(
            intakes,
            config.kinesis.stream.clone(),
            spool.clone(),
            metrics.clone(),
            producer_stop.clone(),
        );
        let sources = CancellationToken::new();
        let source_tasks = TaskTracker::new();
        let agent = Agent {
            producer,
            metrics,
            spool,
            sources,
            source_tasks,
            producer_stop,
            delivery,
            delivery_tasks,
            drain_deadline,
            dispatchers,
            config,
        };
        // Bind every socket before serving any, so a bad path fails the start.
        let mut listeners = Vec::new();
        for s in &agent.config.sockets {
            match socket::bind(&s.path) {
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
        tracing::info!(
            streams = ?agent.config.streams(),
            sockets = agent.config.sockets.len(),
            "Agent started"
        );
        Ok(agent)
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Stops gracefully: sources, then delivery (bounded by the shutdown timeout),
    /// then a final spool flush.
    pub async fn stop(self) -> Result<StopReport, AgentError> {
        self.sources.cancel();
        self.source_tasks.close();
        self.source_tasks.wait().await;
        self.producer_stop.cancel();
        let deadline = Instant::now() + self.config.shutdown_timeout;
        let _ = self.drain_deadline.send(Some(deadline));
        self.delivery.cancel();
        let mut report = StopReport::default();
        for d in self.dispatchers {
            if let Ok(r) = d.await {
                report.undelivered_records += r.undelivered_records;
            }
        }
        self.delivery_tasks.close();
        // Workers still in flight past the deadline are abandoned; their records
        // stay spooled.
        let _ = tokio::time::timeout_at(deadline, self.delivery_tasks.wait()).await;
        self.spool.flush().await?;
        report.spooled_bytes = self.spool.used_bytes();
        tracing::info!(
            undelivered_records = report.undelivered_records,
            spooled_bytes = report.spooled_bytes,
            "Agent stopped; undelivered records stay spooled for the next start"
        );
        Ok(report)
    }
}
