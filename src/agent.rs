//! The agent: the [`Producer`] (spool and delivery) plus the configured sources, and
//! the order in which they stop.
//!
//! Sources are the sockets, the file tailer (one thread for every `[[file]]`
//! block) and the journal readers (one `journalctl` child per `[[journald]]`
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

use crate::config::JournaldConfig;
use crate::config::{self, Config, FileConfig, SocketConfig};
use crate::deliver::kinesis::SharedKinesis;
use crate::metrics::{Metrics, Source};
use crate::producer::{LifecycleError, Producer, ProducerOptions, ShutdownReport};
use crate::source::budget::Budget;
use crate::source::file;
use crate::source::journald;
use crate::source::socket;
use crate::status::{self, StatusError, View};
use crate::systemd::Notifier;
/// Why a socket source could not start, and why the file descriptor limit is
/// too low for the configuration.
pub use crate::{descriptors::DescriptorError, source::socket::SocketError};

/// Why the agent could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("pipeline failed")]
    Producer(#[from] LifecycleError),
    #[error("socket source failed")]
    Socket(#[from] SocketError),
    #[error("metrics endpoint failed")]
    Status(#[from] StatusError),
    #[error("not enough file descriptors")]
    Descriptors(#[from] crate::descriptors::DescriptorError),
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    /// The configuration running now (reload compares against it).
    config: Config,
    /// Running sockets, by path: each can be stopped on its own at a reload.
    sockets: Vec<RunningSource<SocketConfig>>,
    /// The file tailer (one for all `[[file]]` blocks), restarted when they change.
    files: Option<RunningSource<Vec<FileConfig>>>,
    /// The tailed files' progress, kept across reloads (`GET /files`).
    file_progress: file::Files,
    /// One reader per `[[journald]]` block; restarted when any block changes (each
    /// resumes at its checkpoint).
    journald: Option<RunningSource<Vec<JournaldConfig>>>,
    metrics_addr: SocketAddr,
    /// The memory budget of the sources' input (`ingest.max_memory_bytes`).
    budget: Budget,
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
    /// The config file, read again on SIGHUP (a reload); `None`: SIGHUP is ignored.
    pub config_path: Option<PathBuf>,
}

/// What the status file holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusFile {
    pub pid: u32,
    pub metrics_addr: SocketAddr,
}

/// Runs the agent until `shutdown` resolves, then stops it gracefully.
/// A source running under its own stop token, so a reload can stop it alone.
struct RunningSource<C> {
    config: C,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl<C> RunningSource<C> {
    fn new(parent: &CancellationToken, config: C) -> Self {
        RunningSource {
            config,
            stop: parent.child_token(),
            tasks: TaskTracker::new(),
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("stream {stream:?} is new: adding a destination stream needs a restart")]
    NewStream { stream: String },
}

/// What a reload changed.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub sockets_added: Vec<PathBuf>,
    pub sockets_removed: Vec<PathBuf>,
    /// Sockets of the new configuration that could not be bound.
    pub failed: Vec<PathBuf>,
    pub files_restarted: bool,
    /// Sections whose changes wait for a restart.
    pub needs_restart: Vec<String>,
}

/// The sections of `new` that changed from `old` and wait for a restart to
/// take effect (a reload applies only the sources).
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    [
        ("kinesis", old.kinesis != new.kinesis),
        ("destination", old.destinations != new.destinations),
        ("delivery", old.delivery != new.delivery),
        ("spool", !config::same_spool(&old.spool, &new.spool)),
        ("metrics", old.metrics != new.metrics),
        ("ingest", old.ingest != new.ingest),
        (
            "shutdown_timeout_secs",
            old.shutdown_timeout != new.shutdown_timeout,
        ),
    ]
    .into_iter()
    .filter(|&(_, changed)| changed)
    .map(|(section, _)| section.to_owned())
    .collect()
}

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
    crate::descriptors::ensure(&config)?;
    warn_deprecated(&config);
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
    let mut agent = agent;
    let mut hangup = options.config_path.as_ref().map(|_| {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("installing a SIGHUP handler cannot fail on Unix")
    });
    let every = notifier.watchdog_interval();
    let mut ping = tokio::time::interval(every.unwrap_or(std::time::Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ping.tick(), if every.is_some() => {
                // Only while the spool's group commits go through: a commit
                // stuck on a failing disk gets the service restarted (nothing is
                // lost: the spool is replayed).
                let backlog = agent.producer().backlog().clone();
                let answered = tokio::time::timeout(
                    every.unwrap_or_default(),
                    tokio::task::spawn_blocking(move || backlog.heartbeat()),
                )
                .await;
                match answered {
                    Ok(Ok(Ok(()))) => notify(&notifier, "WATCHDOG=1"),
                    Ok(Ok(Err(e))) => tracing::error!(error = %e, "The spool's commits are not going through; the watchdog is not told, so the service is restarted"),
                    _ => tracing::error!("The spool did not answer in time; the watchdog is not told, so the service is restarted"),
                }
            }
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                let path = options.config_path.as_deref().expect("SIGHUP is only watched with a config path");
                notify(&notifier, "RELOADING=1");
                reload(&mut agent, path).await;
                notify(&notifier, "READY=1");
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

/// Warns of records in the spool for streams the configuration no longer
/// delivers (a source removed or renamed): they wait there until a
/// `[[destination]]` with `drain = true` delivers them, or an operator removes
/// their directory while the agent is stopped.
fn warn_of_orphans(producer: &Producer, config: &Config) {
    let delivered = config.streams();
    for (stream, records, dir) in producer.backlog().held_streams() {
        if delivered.contains(&stream) {
            continue;
        }
        let dir = dir.map(|d| d.display().to_string()).unwrap_or_default();
        // The block that drains it, as the config writes it.
        let block = match crate::deliver::firehose::stream_name(&stream) {
            Some(name) => format!("delivery_stream = {name:?}"),
            None => format!("stream = {stream:?}"),
        };
        tracing::warn!(stream = %stream, records, dir = %dir,
            "The spool holds records of a stream that no source writes and no destination drains; they are not delivered. Add a [[destination]] with {block} and drain = true to deliver them, or stop the agent and remove the directory to drop them");
    }
}

/// One WARN per former spelling the config uses, with the new one to write.
fn warn_deprecated(config: &Config) {
    for hint in &config.deprecated {
        tracing::warn!(hint = %hint, "The configuration uses a former spelling");
    }
}

/// Reads the config file again and applies it; on any problem the running
/// configuration stays and the reason is logged.
async fn reload(agent: &mut Agent, path: &Path) {
    tracing::info!(path = %path.display(), "Reloading the configuration");
    let config = match crate::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Reload refused: the new configuration is invalid; the running one stays");
            return;
        }
    };
    if let Err(e) = crate::descriptors::ensure(&config) {
        tracing::error!(error = %e, "Reload refused; the running configuration stays");
        return;
    }
    warn_deprecated(&config);
    match agent.reload(config).await {
        Ok(r) => {
            if !r.needs_restart.is_empty() {
                tracing::warn!(sections = ?r.needs_restart, "Changes in these sections take effect at the next restart");
            }
            tracing::info!(
                sockets_added = r.sockets_added.len(),
                sockets_removed = r.sockets_removed.len(),
                sockets_failed = r.failed.len(),
                files_restarted = r.files_restarted,
                "Configuration reloaded"
            );
        }
        Err(e) => tracing::error!(error = %e, "Reload refused; the running configuration stays"),
    }
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

/// Creates the spool directory (mode 0700) and the dead-letter file (mode 0600)
/// when they are missing, whatever the umask: both hold log data. Existing ones keep
/// the mode an operator gave them.
fn create_private_paths(config: &Config) -> Result<(), AgentError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| AgentError::Create { path, source }
    };
    if let Some(dir) = &config.spool.dir {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err(dir))?;
        }
    }
    let own = config.delivery.overrides.iter();
    let own = own.filter_map(|(_, o)| o.dead_letter_path.as_ref());
    for dead in std::iter::once(&config.dead_letter_path).chain(own) {
        if let Some(dir) = dead.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err(dir))?;
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dead)
            .map_err(err(dead))?;
    }
    Ok(())
}

impl Agent {
    /// Starts the agent with a Kinesis client built from the config.
    pub async fn start(config: Config) -> Result<Agent, AgentError> {
        let options = ProducerOptions::from_config(&config);
        let kinesis = crate::deliver::clients::connect(&options.client, &options.streams).await;
        Self::start_with(config, kinesis).await
    }

    /// Starts the agent with the given Kinesis client.
    pub(crate) async fn start_with(
        config: Config,
        kinesis: SharedKinesis,
    ) -> Result<Agent, AgentError> {
        create_private_paths(&config)?;
        let producer = Producer::start_with(ProducerOptions::from_config(&config), kinesis).await?;
        let (listener, metrics_addr) = match status::bind(config.metrics.listen).await {
            Ok(bound) => bound,
            Err(e) => {
                producer.shutdown().await?;
                return Err(e.into());
            }
        };
        warn_of_orphans(&producer, &config);
        let budget = Budget::new(config.ingest.max_memory_bytes, producer.metrics().clone());
        let agent = Agent {
            producer,
            sources: CancellationToken::new(),
            source_tasks: TaskTracker::new(),
            config: config.clone(),
            sockets: Vec::new(),
            files: None,
            file_progress: file::Files::default(),
            journald: None,
            metrics_addr,
            budget,
            endpoint: CancellationToken::new(),
            endpoint_tasks: TaskTracker::new(),
        };
        agent.endpoint_tasks.spawn(status::serve(
            listener,
            Arc::new(View::new(
                agent.producer.clone(),
                config.stream_destinations(),
                agent.file_progress.clone(),
            )),
            agent.endpoint.clone(),
            agent.endpoint_tasks.clone(),
        ));
        tracing::info!(addr = %metrics_addr, "Metrics endpoint listening");
        // Bind every socket before serving any, so a bad path fails the start.
        let mut agent = agent;
        // Bind every socket before serving any, so a bad path fails the start.
        let mut bound = Vec::new();
        for s in &config.sockets {
            match socket::bind(s) {
                Ok(l) => bound.push((l, s.clone())),
                Err(e) => {
                    agent.stop().await?;
                    return Err(e.into());
                }
            }
        }
        if crate::source::format::wants_ec2_identity(&config) {
            crate::source::format::load_ec2_identity().await;
        }
        for (listener, s) in bound {
            agent.serve_socket(listener, s);
        }
        if let Some(dir) = config.spool.dir.clone() {
            let p = agent.producer.clone();
            let intakes = p.intakes().clone();
            let durable = move || {
                let p = p.clone();
                async move { p.durable().await }
            };
            let inbox = crate::intake::redrive::watch(intakes, durable, dir, agent.sources.clone());
            agent.source_tasks.spawn(inbox);
        }
        agent.start_files(config.files.clone());
        agent.start_journald(config.journald.clone());
        tracing::info!(
            streams = ?config.streams(),
            sockets = config.sockets.len(),
            file_blocks = config.files.len(),
            journald_blocks = config.journald.len(),
            "Agent started"
        );
        Ok(agent)
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    fn serve_socket(&mut self, listener: socket::Bound, config: SocketConfig) {
        self.metrics()
            .source_up(Source::Socket, &config.path.display().to_string());
        let source = RunningSource::new(&self.sources, config.clone());
        source.tasks.spawn(socket::serve(
            listener,
            config,
            self.producer.clone(),
            self.budget.clone(),
            source.stop.clone(),
            source.tasks.clone(),
        ));
        self.sockets.push(source);
    }

    fn start_files(&mut self, files: Vec<FileConfig>) {
        if files.is_empty() {
            return;
        }
        for f in &files {
            self.metrics()
                .source_up(Source::File, &f.include.join(", "));
        }
        let source = RunningSource::new(&self.sources, files.clone());
        file::spawn(
            files,
            self.producer.clone(),
            self.file_progress.clone(),
            source.stop.clone(),
            &source.tasks,
        );
        self.files = Some(source);
    }

    fn start_journald(&mut self, blocks: Vec<JournaldConfig>) {
        if blocks.is_empty() {
            return;
        }
        let source = RunningSource::new(&self.sources, blocks.clone());
        for block in blocks {
            journald::spawn(
                block,
                self.producer.clone(),
                source.stop.clone(),
                &source.tasks,
            );
        }
        self.journald = Some(source);
    }

    /// Takes a new configuration into use without a restart: sockets and file
    /// blocks are added, removed or restarted as they changed; a file tailer
    /// restarted resumes every file at its checkpoint, so no position is lost.
    /// Changes elsewhere (Kinesis, delivery, spool, metrics) need a restart and are
    /// reported, not applied; a source for a stream the agent does not deliver to
    /// refuses the whole reload. On error the running configuration stays.
    pub async fn reload(&mut self, new: Config) -> Result<ReloadReport, ReloadError> {
        let running: std::collections::HashSet<String> =
            self.config.streams().into_iter().collect();
        if let Some(s) = new.streams().into_iter().find(|s| !running.contains(s)) {
            return Err(ReloadError::NewStream { stream: s });
        }
        if crate::source::format::wants_ec2_identity(&new) {
            crate::source::format::load_ec2_identity().await;
        }
        let mut report = ReloadReport {
            needs_restart: needs_restart(&self.config, &new),
            ..ReloadReport::default()
        };
        self.reload_sockets(&new.sockets, &mut report).await;
        if self.config.files != new.files {
            self.restart_files(new.files.clone()).await;
            report.files_restarted = true;
        }
        if self.config.journald != new.journald {
            self.restart_journald(new.journald.clone()).await;
        }
        self.config = new;
        Ok(report)
    }

    /// Stops the sockets the new configuration drops or changed, then binds and
    /// serves the ones it adds (a changed one is stopped before it is bound
    /// again); one that cannot be bound is left out and reported.
    async fn reload_sockets(&mut self, new: &[SocketConfig], report: &mut ReloadReport) {
        // Bind the new sockets first: a path that cannot be bound refuses the
        // reload before anything running is touched.
        let unchanged = |s: &SocketConfig| self.sockets.iter().any(|r| r.config == *s);
        let added: Vec<SocketConfig> = new.iter().filter(|s| !unchanged(s)).cloned().collect();
        let removed: Vec<usize> = (0..self.sockets.len())
            .filter(|&i| !new.contains(&self.sockets[i].config))
            .collect();
        // A socket whose settings changed is stopped before it is bound again.
        for &i in removed.iter().rev() {
            let source = self.sockets.remove(i);
            self.producer
                .metrics()
                .source_removed(Source::Socket, &source.config.path.display().to_string());
            report.sockets_removed.push(source.config.path.clone());
            source.stop().await;
        }
        for s in added {
            match socket::bind(&s) {
                Ok(l) => {
                    report.sockets_added.push(s.path.clone());
                    self.serve_socket(l, s);
                }
                Err(e) => {
                    // What could be applied is; this socket stays out.
                    tracing::error!(path = %s.path.display(), error = %e, "A reloaded socket cannot be bound; it is left out");
                    self.producer.metrics().source_down(
                        Source::Socket,
                        &s.path.display().to_string(),
                        format!("cannot be bound: {e}"),
                    );
                    report.failed.push(s.path.clone());
                }
            }
        }
    }

    /// Stops the file tailer of the running configuration and starts one for
    /// `files` (each file resumes at its checkpoint).
    async fn restart_files(&mut self, files: Vec<FileConfig>) {
        if let Some(running) = self.files.take() {
            running.stop().await;
        }
        for f in &self.config.files {
            self.producer
                .metrics()
                .source_removed(Source::File, &f.include.join(", "));
        }
        self.start_files(files);
    }

    /// Stops the journal readers of the running configuration and starts the
    /// ones of `blocks` (each resumes at its journal cursor).
    async fn restart_journald(&mut self, blocks: Vec<JournaldConfig>) {
        if let Some(running) = self.journald.take() {
            running.stop().await;
        }
        for j in &self.config.journald {
            self.producer
                .metrics()
                .source_removed(Source::Journald, &j.name);
        }
        self.start_journald(blocks);
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
        // A source waiting for room in a full spool would wait for ever: it is
        // refused instead, and says what it could not spool.
        self.producer.stop_waiting();
        self.source_tasks.close();
        self.source_tasks.wait().await;
        for s in self.sockets {
            s.stop().await;
        }
        if let Some(files) = self.files {
            files.stop().await;
        }
        if let Some(journald) = self.journald {
            journald.stop().await;
        }
        let report = self.producer.shutdown().await;
        self.endpoint.cancel();
        self.endpoint_tasks.close();
        self.endpoint_tasks.wait().await;
        let report = report?;
        tracing::info!("Agent stopped");
        Ok(report)
    }
}

/// Applies the memory allocator's settings for a long-running agent (two arenas,
/// large blocks mapped): call once at the start of `main`, before threads start.
/// A no-op where the C library is not glibc.
pub fn tune_allocator() {
    crate::allocator::tune();
}

/// When another process holds the lock of the config's spool: a sentence naming
/// it (`spool <dir> is in use by shardline pid N`). `None` for a free spool or a
/// memory-only config.
pub fn spool_in_use(config: &Config) -> Option<String> {
    use crate::spool::{lock_holder, LockState};
    let dir = config.spool.dir.as_ref()?;
    match lock_holder(dir) {
        LockState::Free => None,
        LockState::Held { pid: Some(pid) } => Some(format!(
            "spool {} is in use by shardline pid {pid}",
            dir.display()
        )),
        LockState::Held { pid: None } => Some(format!(
            "spool {} is in use by another shardline",
            dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::needs_restart;
    use crate::config::{self, Config};

    const BASE: &str = "[kinesis]\nstream = \"logs\"\n[spool]\ndir = \"/tmp/x\"\n[[socket]]\npath = \"/tmp/a.sock\"\n";

    fn parse(text: &str) -> Config {
        config::parse(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn a_reload_lists_the_sections_that_need_a_restart_and_not_the_sources() {
        let old = parse(BASE);
        let sources = parse(&format!("{BASE}[[socket]]\npath = \"/tmp/b.sock\"\n"));
        assert!(needs_restart(&old, &sources).is_empty());
        let metrics = parse(&format!("{BASE}[metrics]\nlisten = \"127.0.0.1:0\"\n"));
        assert_eq!(needs_restart(&old, &metrics), vec!["metrics"]);
    }
}
