//! Soak test: the real `shardline` binary, run as a child process, under minutes of
//! mixed load and faults, then a count of every record on the way back.
//!
//! ```text
//! cargo build --release --bin shardline --example soak
//! target/release/examples/soak --minutes 10
//! cargo run --release --example soak -- --minutes 2 --rate 3000 --seed 7
//! ```
//!
//! - **Kinesis**: a `ferrokinesis` emulator in this process on 127.0.0.1, enforcing
//!   the shard write limits (1 MiB/s, 1000 records/s) like AWS, behind the test
//!   suite's fault layer (`tests/util/faults.rs`).
//! - **Load** (`--rate` records/s, a third each): `logs/rename.log`, rotated by
//!   rename and create; `logs/copytruncate.log`, rotated by copytruncate (the writer
//!   copies and truncates between two writes, so logrotate's race cannot lose
//!   lines); both about every 30 s. And a framed-protocol client on the agent's
//!   socket asking for acks, one record in eight with an explicit hash key. Every
//!   record's data starts with a unique id: `fr-`, `fc-` or `so-` and a sequence
//!   number.
//! - **Faults**, from a schedule drawn from `--seed`: outages of 20–40 s (every
//!   connection to the endpoint cut), a reshard (UpdateShardCount between 2 and 5
//!   shards) every 1–2 min, SIGKILL of the agent every 1–2 min, one graceful
//!   SIGTERM restart half-way, and bursts of injected throttled entries, HTTP 500s
//!   and connection resets every 20–40 s. The agent's own rate limit is off by
//!   default (`--rate-factor 0`), so the emulator's limits throttle it whenever it
//!   drains a backlog.
//! - **End**: the load stops, the endpoint is restored, and once the agent's spool
//!   has stayed empty for 5 s every shard (closed ones too) is read from
//!   TRIM_HORIZON and the aggregates are taken apart.
//!
//! *Sent* counts a file line once it is written, and a socket record once the
//! agent acknowledged it (durable in the spool). Records of requests that got no
//! answer before a kill are *unconfirmed*: they may or may not arrive. *Lost* is a
//! sent record that never arrived; *duplicated* counts deliveries beyond a record's
//! first. Copies inside an aggregate that holds a record outside its shard's hash
//! key range are dropped whole by a KCL consumer: each sent record must also have
//! a copy it keeps. The exit status is 1 if a record was lost (or has no such copy),
//! if the spool did not drain within `--drain-secs`, or if the agent misbehaved
//! (exited on its own, dropped a record to the dead-letter file, or failed a
//! graceful stop). Progress lines carry the UTC time of day, to match the agent's
//! JSON logs (`--agent-log` sets their `RUST_LOG`).
//!
//! The agent is `SHARDLINE_BIN` if set, else the `shardline` binary beside the
//! `examples` directory this program was built into; under `cargo run` it is built
//! first with the same profile. The work directory (spool, logs, the agent's JSON
//! logs) is removed after a passing run, unless `--keep`.

mod common;

#[path = "../tests/util/faults.rs"]
mod faults;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::types::{ScalingType, StreamStatus};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use shardline::aggregate::{deaggregate, is_aggregated};

use shardline::source::socket::frame::{self, Record, Request, Response, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

const STREAM: &str = "soak";
/// Shards at the start; reshards pick another count in `RESHARD_RANGE`.
const INITIAL_SHARDS: i32 = 2;
const RESHARD_RANGE: std::ops::RangeInclusive<i32> = 2..=5;
/// How long the spool must stay empty before the stream is read back: longer than
/// the tailer's rescan interval (1 s), so no written line is still unread.
const DRAIN_QUIET: Duration = Duration::from_secs(5);
/// Kinesis records per GetRecords call: at most 10 MiB of 50 KiB aggregates, as AWS.
const READ_LIMIT: i32 = 200;
/// How often the agent's metrics are scraped; counters of the last interval
/// before a SIGKILL are not counted.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for a started agent's status file.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Longest graceful stop: the agent's `shutdown_timeout_secs` (30) and a margin.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// When the load started: progress lines count seconds from it.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Prints a progress line: seconds since the load started and the UTC time of day
/// (to match the agent's log), then the message.
macro_rules! say {
    ($($arg:tt)*) => { say(format_args!($($arg)*)) };
}

fn say(message: std::fmt::Arguments) {
    let elapsed = STARTED.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 86_400_000;
    println!(
        "soak: {elapsed:>5.0}s {:02}:{:02}:{:02}.{:03}Z  {message}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    );
}

#[derive(Parser)]
#[command(about = "Soak test of the shardline agent against a faulty Kinesis emulator")]
struct Args {
    /// Length of the load phase, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Records per second, all sources together (a third each).
    #[arg(long, default_value_t = 3000)]
    rate: u32,
    /// Bytes of each record's data.
    #[arg(long, default_value_t = 120)]
    record_bytes: usize,
    /// The agent's `delivery.shard_rate_factor`; 0 turns its own rate limit off.
    #[arg(long, default_value_t = 0.0)]
    rate_factor: f64,
    /// Seed of the fault schedule (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Longest wait for the spool to empty once the load stopped, in seconds.
    #[arg(long, default_value_t = 300)]
    drain_secs: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 15)]
    progress_secs: u64,
    /// `RUST_LOG` of the agent.
    #[arg(long, default_value = "info")]
    agent_log: String,
    /// Keep the work directory even when the run passes.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The emulator takes any credentials; never reach for instance metadata. Set
    // before the runtime starts any thread.
    std::env::set_var("AWS_ACCESS_KEY_ID", "soak");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "soak");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_PROFILE");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(soak(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the soak in a new work directory, kept unless the run passed.
async fn soak(args: Args) -> Result<bool, String> {
    let bin = common::agent_binary()?;
    let work = tempfile::Builder::new()
        .prefix("shardline-soak-")
        .tempdir()
        .map_err(|e| format!("cannot create a work directory: {e}"))?;
    let keep = args.keep;
    let result = soak_in(args, &bin, work.path()).await;
    if matches!(result, Ok(true)) && !keep {
        drop(work);
    } else {
        println!("soak: work directory kept: {}", work.keep().display());
    }
    result
}

async fn soak_in(args: Args, bin: &Path, work: &Path) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let run = Duration::from_secs_f64(args.minutes * 60.0);
    let mut rng = fastrand::Rng::with_seed(seed);
    let plan = schedule(run, &mut rng);

    let logs = work.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {logs:?}: {e}"))?;

    let emulator = Emulator::start().await?;
    let client = common::emulator::client(&emulator.endpoint, Some(Duration::from_secs(30))).await;
    client
        .create_stream()
        .stream_name(STREAM)
        .shard_count(INITIAL_SHARDS)
        .send()
        .await
        .map_err(|e| format!("CreateStream failed: {e:?}"))?;
    wait_active(&client).await?;

    let socket = work.join("ingest.sock");
    let config = work.join("shardline.toml");
    std::fs::write(
        &config,
        format!(
            "[kinesis]\nstream = \"{STREAM}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\
             [delivery]\nshard_rate_factor = {}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\n[[socket]]\npath = \"{}\"\nframing = \"frames\"\n\
             [[file]]\ninclude = [\"{}/*.log\"]\n",
            emulator.endpoint,
            args.rate_factor,
            work.join("spool").display(),
            socket.display(),
            logs.display()
        ),
    )
    .map_err(|e| format!("cannot write the config: {e}"))?;

    println!(
        "soak: {:.1} min, {} records/s of {} bytes, seed {seed}, agent {}",
        args.minutes,
        args.rate,
        args.record_bytes,
        bin.display()
    );
    println!(
        "soak: emulator {}, work directory {}",
        emulator.endpoint,
        work.display()
    );
    println!("soak: fault schedule:");
    for (at, fault) in &plan {
        println!("  {:>5.0}s  {fault:?}", at.as_secs_f64());
    }

    let state = Arc::new(Shared::default());
    let command = AgentCommand {
        bin: bin.to_owned(),
        config: config.clone(),
        work: work.to_owned(),
        log_filter: args.agent_log.clone(),
    };
    let mut agent = command.spawn(0)?;
    let addr = agent.ready().await?;
    *state.agent.lock().expect("not poisoned") = Some((0, addr));

    // The load.
    let started = *STARTED.get_or_init(Instant::now);
    let per_source = (args.rate / 3).max(1);
    let stop_files = Arc::new(AtomicBool::new(false));
    let file_loads: Vec<_> = [Source::FileRename, Source::FileCopytruncate]
        .into_iter()
        .map(|source| {
            let load = FileLoad {
                source,
                dir: logs.clone(),
                per_sec: per_source,
                record_bytes: args.record_bytes,
                stop: stop_files.clone(),
                written: state.written[source as usize].clone(),
                rotations: state.rotations[source as usize].clone(),
                seed: rng.u64(..),
            };
            std::thread::spawn(move || load.run())
        })
        .collect();
    let stop_socket = CancellationToken::new();
    let socket_load = tokio::spawn(socket_load(
        socket.clone(),
        per_source,
        args.record_bytes,
        stop_socket.clone(),
        state.socket.clone(),
    ));
    let observer = tokio::spawn(observe(
        state.clone(),
        Duration::from_secs(args.progress_secs),
    ));

    // The faults.
    let mut chaos = Chaos {
        client: &client,
        faults: &emulator.faults,
        state: &state,
        command: &command,
        shards: INITIAL_SHARDS,
        rng,
    };
    for (at, fault) in plan {
        agent = chaos.wait_until(started + at, agent).await?;
        agent = chaos.apply(fault, agent).await?;
    }
    agent = chaos.wait_until(started + run, agent).await?;

    // The end: stop the load, restore the endpoint, drain.
    say!("load stopped");
    stop_files.store(true, Ordering::Relaxed);
    for l in file_loads {
        l.join()
            .map_err(|_| "a file writer panicked".to_owned())?
            .map_err(|e| format!("file writer: {e}"))?;
    }
    stop_socket.cancel();
    socket_load
        .await
        .map_err(|e| format!("the socket client panicked: {e}"))?;
    emulator.restore();
    let load_stopped = Instant::now();
    let drained = drain(
        &mut agent,
        &state,
        Duration::from_secs(args.drain_secs),
        work,
    )
    .await?;
    let drain_time = load_stopped.elapsed();
    observer.abort();
    scrape(&state).await;

    // Read back, again a few times if records are missing (a line the drain check
    // could not see), saying so.
    let mut attempt = 0;
    let (tally, kinesis_records) = loop {
        let (tally, kinesis_records) = read_back(&client).await?;
        let missing = tally.lost(&state).len();
        attempt += 1;
        if missing == 0 || attempt == 3 || !drained {
            break (tally, kinesis_records);
        }
        say!("{missing} sent records not in the stream yet; reading again in 10 s");
        tokio::time::sleep(Duration::from_secs(10)).await;
    };

    // A last graceful stop, which must succeed.
    agent.signal("TERM")?;
    let final_exit = agent.wait_exit(STOP_LIMIT).await;
    *state.agent.lock().expect("not poisoned") = None;

    Ok(report(&Report {
        state: &state,
        tally: &tally,
        kinesis_records,
        drained,
        drain_time,
        final_exit,
        work,
    }))
}

// ---------------------------------------------------------------------------------
// Kinesis

/// The emulator on 127.0.0.1, behind the fault layer.
struct Emulator {
    endpoint: String,
    faults: Arc<faults::Faults>,
}

impl Emulator {
    async fn start() -> Result<Emulator, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the emulator: {e}"))?;
        let faults = Arc::new(faults::Faults::default());
        let f = faults.clone();
        let served = common::emulator::serve(
            listener,
            ferrokinesis::store::StoreOptions {
                create_stream_ms: 0,
                delete_stream_ms: 0,
                update_stream_ms: 500,
                shard_limit: 1000,
                enforce_limits: true,
                ..Default::default()
            },
            |app| app.layer(axum::middleware::from_fn_with_state(f, faults::layer)),
        );
        Ok(Emulator {
            endpoint: served.endpoint,
            faults,
        })
    }

    /// Ends every fault: the endpoint is reachable and answers truthfully.
    fn restore(&self) {
        self.faults.outage.store(false, Ordering::Release);
        self.faults.throttle_entries.store(0, Ordering::Release);
        self.faults.fail_requests.store(0, Ordering::Release);
        self.faults.reset_requests.store(0, Ordering::Release);
    }
}

async fn wait_active(client: &aws_sdk_kinesis::Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .describe_stream_summary()
            .stream_name(STREAM)
            .send()
            .await
            .map_err(|e| format!("DescribeStreamSummary failed: {e:?}"))?
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("stream not active after 30 s: {status:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------
// The agent process

struct AgentProcess {
    child: Child,
    status_file: PathBuf,
    log: PathBuf,
}

/// How the agent is started: the same binary, config and work directory each time.
struct AgentCommand {
    bin: PathBuf,
    config: PathBuf,
    work: PathBuf,
    /// `RUST_LOG` of the agent.
    log_filter: String,
}

impl AgentCommand {
    /// Starts incarnation `n` of the agent, its JSON log in `agent-<n>.log`.
    fn spawn(&self, n: usize) -> Result<AgentProcess, String> {
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
    async fn ready(&mut self) -> Result<SocketAddr, String> {
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

    fn signal(&self, signal: &str) -> Result<(), String> {
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
    async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(exit)) => return Ok(exit),
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
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
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// Shared counters

/// Where a record came from; its index in the per-source tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    FileRename = 0,
    FileCopytruncate = 1,
    Socket = 2,
}

impl Source {
    const ALL: [Source; 3] = [Source::FileRename, Source::FileCopytruncate, Source::Socket];

    /// The id prefix in a record's data.
    fn tag(self) -> &'static str {
        match self {
            Source::FileRename => "fr",
            Source::FileCopytruncate => "fc",
            Source::Socket => "so",
        }
    }

    /// The log file a file source writes (none for the socket).
    fn file_name(self) -> &'static str {
        match self {
            Source::FileRename => "rename.log",
            Source::FileCopytruncate => "copytruncate.log",
            Source::Socket => "",
        }
    }
}

/// A record's data: its id (`fr-0000000042`), a space, and filler up to `bytes`.
fn record_data(source: Source, seq: u64, bytes: usize) -> Vec<u8> {
    let mut d = format!("{}-{seq:010} ", source.tag()).into_bytes();
    d.resize(bytes.max(d.len()), b'x');
    d
}

/// The id in a record's data.
fn parse_id(data: &[u8]) -> Option<(Source, u64)> {
    let source = Source::ALL
        .into_iter()
        .find(|s| data.starts_with(s.tag().as_bytes()))?;
    if data.get(2) != Some(&b'-') {
        return None;
    }
    let seq = std::str::from_utf8(data.get(3..13)?).ok()?.parse().ok()?;
    Some((source, seq))
}

/// What the socket client knows about each record it sent, by sequence number.
#[derive(Default)]
struct SocketLedger {
    states: Mutex<Vec<SocketState>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SocketState {
    /// Sent, no answer (yet): may or may not arrive.
    Unconfirmed,
    /// Answered `OK`: durable in the spool.
    Acknowledged,
    /// Answered with an error: not spooled.
    Refused,
}

/// State shared by the load, the fault schedule and the observer.
#[derive(Default)]
struct Shared {
    /// The running agent: its incarnation and metrics address.
    agent: Mutex<Option<(usize, SocketAddr)>>,
    /// Lines written per file source (indexed by `Source`).
    written: [Arc<AtomicU64>; 2],
    rotations: [Arc<AtomicU64>; 2],
    socket: Arc<SocketLedger>,
    /// The agent's metrics, last scraped, per incarnation (counters restart at 0).
    scrapes: Mutex<Vec<HashMap<String, f64>>>,
    /// The running agent's spool backlog, last seen.
    spool_records: AtomicU64,
    kills: AtomicU64,
    terms: AtomicU64,
    /// Exits the schedule did not cause: a crash of the agent.
    unexpected_exits: AtomicU64,
    /// Graceful stops that failed (non-zero exit or too slow).
    failed_stops: AtomicU64,
    outages: AtomicU64,
    outage_on: AtomicBool,
    outage_ms: AtomicU64,
    reshards: AtomicU64,
    shard_history: Mutex<Vec<i32>>,
    injected_throttles: AtomicU64,
    injected_500s: AtomicU64,
    injected_resets: AtomicU64,
    incarnations: AtomicUsize,
}

impl Shared {
    fn socket_counts(&self) -> (u64, u64, u64) {
        let states = self.socket.states.lock().expect("not poisoned");
        let count = |s| states.iter().filter(|x| **x == s).count() as u64;
        (
            count(SocketState::Acknowledged),
            count(SocketState::Unconfirmed),
            count(SocketState::Refused),
        )
    }

    /// A counter summed over every incarnation of the agent: the series named
    /// `name` whose labels contain `label` (e.g. `code="…"`), if given.
    fn metric(&self, name: &str, label: Option<&str>) -> u64 {
        let scrapes = self.scrapes.lock().expect("not poisoned");
        let total: f64 = scrapes
            .iter()
            .flat_map(|m| m.iter())
            .filter(|(series, _)| {
                let (n, labels) = series.split_once('{').unwrap_or((series, ""));
                n == name && label.is_none_or(|l| labels.contains(l))
            })
            .map(|(_, v)| v)
            .sum();
        total as u64
    }

    /// Every series named `name`, summed over incarnations, by its labels.
    fn metric_by_label(&self, name: &str) -> BTreeMap<String, u64> {
        let scrapes = self.scrapes.lock().expect("not poisoned");
        let mut out = BTreeMap::new();
        for (series, v) in scrapes.iter().flat_map(|m| m.iter()) {
            if let Some((n, labels)) = series.split_once('{') {
                if n == name {
                    *out.entry(labels.trim_end_matches('}').to_owned())
                        .or_default() += *v as u64;
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// Load

/// A writer appending lines to one log file at a steady rate and rotating it.
struct FileLoad {
    source: Source,
    dir: PathBuf,
    per_sec: u32,
    record_bytes: usize,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    rotations: Arc<AtomicU64>,
    seed: u64,
}

impl FileLoad {
    fn run(self) -> std::io::Result<()> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let path = self.dir.join(self.source.file_name());
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
        };
        let mut file = open(&path)?;
        let started = Instant::now();
        let mut next_rotation = Duration::from_secs(rng.u64(25..=35));
        let mut seq = 0u64;
        let mut buf = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let due = (started.elapsed().as_secs_f64() * f64::from(self.per_sec)) as u64;
            buf.clear();
            let first = seq;
            while seq < due {
                buf.extend_from_slice(&record_data(self.source, seq, self.record_bytes));
                buf.push(b'\n');
                seq += 1;
            }
            if !buf.is_empty() {
                file.write_all(&buf)?;
                self.written.fetch_add(seq - first, Ordering::Relaxed);
            }
            if started.elapsed() >= next_rotation {
                let n = self.rotations.fetch_add(1, Ordering::Relaxed) + 1;
                let rotated = self.dir.join(format!("{}.{n}", self.source.file_name()));
                match self.source {
                    Source::FileRename => {
                        std::fs::rename(&path, &rotated)?;
                        file = open(&path)?;
                    }
                    _ => {
                        std::fs::copy(&path, &rotated)?;
                        file.set_len(0)?;
                    }
                }
                next_rotation += Duration::from_secs(rng.u64(25..=35));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// The framed-protocol client: a request of `per_sec / 10` records every 100 ms,
/// each asking for an ack, pipelined; reconnects whenever the agent goes away.
/// Records of a request are marked acknowledged or refused when its answer comes.
async fn socket_load(
    path: PathBuf,
    per_sec: u32,
    record_bytes: usize,
    stop: CancellationToken,
    ledger: Arc<SocketLedger>,
) {
    let per_request = (per_sec / 10).max(1) as u64;
    let mut seq = 0u64;
    let mut id = 0u64;
    let mut rng = fastrand::Rng::new();
    while !stop.is_cancelled() {
        let Ok(stream) = UnixStream::connect(&path).await else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        };
        let (mut rd, mut wr) = stream.into_split();
        // Requests sent and not answered yet, in order: (id, first seq, records).
        let pending = Arc::new(Mutex::new(VecDeque::<(u64, u64, u64)>::new()));
        let mut reader = {
            let (pending, ledger) = (pending.clone(), ledger.clone());
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                loop {
                    // An unreadable answer ends the connection's accounting: what
                    // it covers stays unconfirmed.
                    while let Some(answer) = frame::decode::<Response>(&mut buf).ok().flatten() {
                        let Some((sent_id, first, n)) =
                            pending.lock().expect("not poisoned").pop_front()
                        else {
                            return;
                        };
                        let state = if answer.id == sent_id
                            && matches!(Status::try_from(answer.status), Ok(Status::Ok))
                        {
                            SocketState::Acknowledged
                        } else {
                            SocketState::Refused
                        };
                        let mut states = ledger.states.lock().expect("not poisoned");
                        for s in &mut states[first as usize..(first + n) as usize] {
                            *s = state;
                        }
                    }
                    if !matches!(rd.read_buf(&mut buf).await, Ok(n) if n > 0) {
                        return;
                    }
                }
            })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = BytesMut::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Closing our side asks the agent to answer what it owes and close.
                    let _ = wr.shutdown().await;
                    let _ = tokio::time::timeout(Duration::from_secs(30), &mut reader).await;
                    return;
                }
                _ = &mut reader => break,
                _ = tick.tick() => {
                    id += 1;
                    let records: Vec<Record> = (seq..seq + per_request)
                        .map(|s| Record {
                            partition_key: format!("{:016x}", rng.u64(..)),
                            explicit_hash_key: (s % 8 == 0).then(|| rng.u128(..).to_string()),
                            data: Bytes::from(record_data(Source::Socket, s, record_bytes)),
                        })
                        .collect();
                    ledger
                        .states
                        .lock()
                        .expect("not poisoned")
                        .resize((seq + per_request) as usize, SocketState::Unconfirmed);
                    pending
                        .lock()
                        .expect("not poisoned")
                        .push_back((id, seq, per_request));
                    seq += per_request;
                    frame::encode(&Request { id, records, ack: true }, &mut out);
                    let written = wr.write_all(&out).await;
                    out.clear();
                    if written.is_err() {
                        break;
                    }
                }
            }
        }
        // The connection is gone (the agent stopped or was killed): what was not
        // answered stays unconfirmed.
        reader.abort();
    }
}

// ---------------------------------------------------------------------------------
// Observing the agent

/// Scrapes the agent's metrics every `SCRAPE_INTERVAL` and prints a progress line
/// every `every`.
async fn observe(state: Arc<Shared>, every: Duration) {
    let started = Instant::now();
    let mut next_line = every;
    loop {
        tokio::time::sleep(SCRAPE_INTERVAL).await;
        scrape(&state).await;
        if started.elapsed() >= next_line {
            next_line += every;
            let (acked, unconfirmed, _) = state.socket_counts();
            let shards = state
                .shard_history
                .lock()
                .expect("not poisoned")
                .last()
                .copied()
                .unwrap_or(INITIAL_SHARDS);
            say!(
                "sent files {} socket {} (+{} unconfirmed) | spool {} | delivered {} | \
                 throttled {} | misrouted {} | shards {} | kills {} | outage {}",
                state.written[0].load(Ordering::Relaxed) + state.written[1].load(Ordering::Relaxed),
                acked,
                unconfirmed,
                state.spool_records.load(Ordering::Relaxed),
                state.metric("shardline_records_delivered_total", None),
                state.metric(
                    "shardline_put_records_entry_errors_total",
                    Some("ProvisionedThroughputExceededException")
                ),
                state.metric("shardline_records_misrouted_total", None),
                shards,
                state.kills.load(Ordering::Relaxed),
                if state.outage_on.load(Ordering::Relaxed) {
                    "ON"
                } else {
                    "off"
                },
            );
        }
    }
}

/// One scrape of the running agent's `/metrics` and `/status`.
async fn scrape(state: &Shared) {
    let Some((n, addr)) = *state.agent.lock().expect("not poisoned") else {
        return;
    };
    let timeout = Duration::from_secs(2);
    if let Ok((200, body)) = shardline::status::get(addr, "/metrics", timeout).await {
        let text = String::from_utf8_lossy(&body);
        let map: HashMap<String, f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        let mut scrapes = state.scrapes.lock().expect("not poisoned");
        if scrapes.len() <= n {
            scrapes.resize_with(n + 1, HashMap::new);
        }
        scrapes[n] = map;
    }
    if let Ok(status) = shardline::status::fetch(addr, timeout).await {
        state
            .spool_records
            .store(status.spool.records, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------
// Faults

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// A burst at the endpoint: throttled entries, HTTP 500s, connection resets.
    Inject,
    /// Every connection to the endpoint cut for this long.
    Outage(Duration),
    OutageEnd,
    /// UpdateShardCount to another count.
    Reshard,
    /// SIGKILL, then a restart on the same spool.
    Kill,
    /// SIGTERM (graceful), then a restart.
    Term,
}

/// The fault schedule of a run of length `run`, by time from the start.
fn schedule(run: Duration, rng: &mut fastrand::Rng) -> Vec<(Duration, Fault)> {
    let mut secs = |lo: u64, hi: u64| Duration::from_secs(rng.u64(lo..=hi));
    let mut plan = Vec::new();
    let mut outages = Vec::new();
    let mut t = secs(50, 80);
    loop {
        let length = secs(20, 40);
        if t + length > run {
            break;
        }
        outages.push((t, t + length));
        plan.push((t, Fault::Outage(length)));
        plan.push((t + length, Fault::OutageEnd));
        t += length + secs(60, 120);
    }
    // Reshards go through the endpoint too: none during an outage.
    let mut t = secs(20, 40);
    while t < run {
        let at = outages
            .iter()
            .find(|(start, end)| t + Duration::from_secs(2) >= *start && t < *end)
            .map_or(t, |(_, end)| *end + Duration::from_secs(3));
        if at < run {
            plan.push((at, Fault::Reshard));
        }
        t = at + secs(60, 120);
    }
    let mut t = secs(30, 60);
    while t < run {
        plan.push((t, Fault::Kill));
        t += secs(60, 120);
    }
    let mut t = secs(10, 20);
    while t < run {
        plan.push((t, Fault::Inject));
        t += secs(20, 40);
    }
    plan.push((run / 2 + secs(0, 10), Fault::Term));
    plan.sort_by_key(|(t, _)| *t);
    plan
}

/// Applies the schedule to the endpoint, the stream and the agent process.
struct Chaos<'a> {
    client: &'a aws_sdk_kinesis::Client,
    faults: &'a faults::Faults,
    state: &'a Shared,
    command: &'a AgentCommand,
    shards: i32,
    rng: fastrand::Rng,
}

impl Chaos<'_> {
    /// Sleeps until `when`, checking that the agent keeps running; an agent that
    /// exited on its own is counted and started again.
    async fn wait_until(
        &mut self,
        when: Instant,
        mut agent: AgentProcess,
    ) -> Result<AgentProcess, String> {
        while Instant::now() < when {
            tokio::time::sleep(
                when.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            )
            .await;
            if let Ok(Some(exit)) = agent.child.try_wait() {
                self.state.unexpected_exits.fetch_add(1, Ordering::Relaxed);
                say!(
                    "the agent exited on its own with {exit}; log: {}",
                    agent.log.display()
                );
                agent = self.restart(agent).await?;
            }
        }
        Ok(agent)
    }

    async fn apply(
        &mut self,
        fault: Fault,
        mut agent: AgentProcess,
    ) -> Result<AgentProcess, String> {
        let s = self.state;
        match fault {
            Fault::Inject => {
                let (throttles, errors, resets) = (300, 3, 2);
                self.faults
                    .throttle_entries
                    .fetch_add(throttles, Ordering::AcqRel);
                self.faults
                    .fail_requests
                    .fetch_add(errors, Ordering::AcqRel);
                self.faults
                    .reset_requests
                    .fetch_add(resets, Ordering::AcqRel);
                s.injected_throttles
                    .fetch_add(throttles.into(), Ordering::Relaxed);
                s.injected_500s.fetch_add(errors.into(), Ordering::Relaxed);
                s.injected_resets
                    .fetch_add(resets.into(), Ordering::Relaxed);
            }
            Fault::Outage(length) => {
                self.faults.outage.store(true, Ordering::Release);
                s.outage_on.store(true, Ordering::Relaxed);
                s.outages.fetch_add(1, Ordering::Relaxed);
                s.outage_ms
                    .fetch_add(length.as_millis() as u64, Ordering::Relaxed);
                say!("outage for {} s", length.as_secs());
            }
            Fault::OutageEnd => {
                self.faults.outage.store(false, Ordering::Release);
                s.outage_on.store(false, Ordering::Relaxed);
                say!("outage over");
            }
            Fault::Reshard => {
                let to = loop {
                    let n = self.rng.i32(RESHARD_RANGE);
                    if n != self.shards {
                        break n;
                    }
                };
                match self
                    .client
                    .update_shard_count()
                    .stream_name(STREAM)
                    .target_shard_count(to)
                    .scaling_type(ScalingType::UniformScaling)
                    .send()
                    .await
                {
                    Ok(_) => {
                        wait_active(self.client).await?;
                        say!("resharded {} → {to}", self.shards);
                        self.shards = to;
                        s.reshards.fetch_add(1, Ordering::Relaxed);
                        s.shard_history.lock().expect("not poisoned").push(to);
                    }
                    Err(e) => say!("UpdateShardCount failed, skipped: {e:?}"),
                }
            }
            Fault::Kill => {
                let _ = agent.child.kill();
                let _ = agent.child.wait();
                s.kills.fetch_add(1, Ordering::Relaxed);
                say!("agent SIGKILLed");
                agent = self.restart(agent).await?;
            }
            Fault::Term => {
                agent.signal("TERM")?;
                let started = Instant::now();
                match agent.wait_exit(STOP_LIMIT).await {
                    Ok(exit) if exit.success() => say!(
                        "agent stopped by SIGTERM in {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                    other => {
                        s.failed_stops.fetch_add(1, Ordering::Relaxed);
                        say!(
                            "graceful stop failed: {other:?}; log: {}",
                            agent.log.display()
                        );
                    }
                }
                s.terms.fetch_add(1, Ordering::Relaxed);
                agent = self.restart(agent).await?;
            }
        }
        Ok(agent)
    }

    /// Starts the next incarnation once `old` is gone.
    async fn restart(&mut self, old: AgentProcess) -> Result<AgentProcess, String> {
        drop(old);
        let n = self.state.incarnations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.state.agent.lock().expect("not poisoned") = None;
        let mut agent = self.command.spawn(n)?;
        let addr = agent.ready().await?;
        *self.state.agent.lock().expect("not poisoned") = Some((n, addr));
        Ok(agent)
    }
}

// ---------------------------------------------------------------------------------
// The end

/// Waits until the agent's spool has stayed empty for `DRAIN_QUIET`; false if it
/// did not within `limit`.
async fn drain(
    agent: &mut AgentProcess,
    state: &Shared,
    limit: Duration,
    work: &Path,
) -> Result<bool, String> {
    let deadline = Instant::now() + limit;
    let mut empty_since: Option<Instant> = None;
    let mut next_line = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(exit)) = agent.child.try_wait() {
            state.unexpected_exits.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "the agent exited with {exit} while draining; logs in {}",
                work.display()
            ));
        }
        let Some((_, addr)) = *state.agent.lock().expect("not poisoned") else {
            return Err("no agent while draining".into());
        };
        match shardline::status::fetch(addr, Duration::from_secs(2)).await {
            Ok(s) if s.spool.records == 0 => {
                let since = *empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= DRAIN_QUIET {
                    return Ok(true);
                }
            }
            Ok(s) => {
                empty_since = None;
                if Instant::now() >= next_line {
                    next_line += Duration::from_secs(10);
                    say!("draining, {} records in the spool", s.spool.records);
                }
            }
            Err(_) => empty_since = None,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(false)
}

/// Copies of each record found in the stream, by source and sequence number.
#[derive(Default)]
struct Tally {
    /// Deliveries of each id.
    copies: [Vec<u32>; 3],
    /// Deliveries a KCL consumer keeps: not inside an aggregate that holds a
    /// record outside its shard's range.
    placed: [Vec<u32>; 3],
    /// User records without a readable id.
    unreadable: u64,
}

impl Tally {
    fn note(&mut self, data: &[u8], in_range: bool) {
        let Some((source, seq)) = parse_id(data) else {
            self.unreadable += 1;
            return;
        };
        let (i, seq) = (source as usize, seq as usize);
        for (table, add) in [(&mut self.copies[i], true), (&mut self.placed[i], in_range)] {
            if table.len() <= seq {
                table.resize(seq + 1, 0);
            }
            table[seq] += u32::from(add);
        }
    }

    fn copies(&self, source: Source, seq: u64) -> u32 {
        self.copies[source as usize]
            .get(seq as usize)
            .copied()
            .unwrap_or(0)
    }

    fn placed(&self, source: Source, seq: u64) -> u32 {
        self.placed[source as usize]
            .get(seq as usize)
            .copied()
            .unwrap_or(0)
    }

    /// The ids that count as sent, per source.
    fn sent(&self, state: &Shared) -> Vec<(Source, u64)> {
        let mut out = Vec::new();
        for source in [Source::FileRename, Source::FileCopytruncate] {
            let n = state.written[source as usize].load(Ordering::Relaxed);
            out.extend((0..n).map(|seq| (source, seq)));
        }
        let states = state.socket.states.lock().expect("not poisoned");
        out.extend(
            states
                .iter()
                .enumerate()
                .filter(|(_, s)| **s == SocketState::Acknowledged)
                .map(|(seq, _)| (Source::Socket, seq as u64)),
        );
        out
    }

    /// Sent ids that never arrived.
    fn lost(&self, state: &Shared) -> Vec<(Source, u64)> {
        self.sent(state)
            .into_iter()
            .filter(|(s, seq)| self.copies(*s, *seq) == 0)
            .collect()
    }
}

/// Reads every shard (open and closed) from TRIM_HORIZON and counts each user
/// record; also returns how many Kinesis records there were.
async fn read_back(client: &aws_sdk_kinesis::Client) -> Result<(Tally, u64), String> {
    // ferrokinesis's ListShards answers every shard in one page (no ShardFilter).
    let shards = client
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .map_err(|e| format!("ListShards failed: {e:?}"))?;
    let mut tally = Tally::default();
    let mut kinesis_records = 0;
    for shard in shards.shards() {
        let range = shard
            .hash_key_range()
            .ok_or_else(|| format!("shard {} has no hash key range", shard.shard_id()))?;
        let parse = |k: &str| {
            k.parse::<u128>()
                .map_err(|e| format!("bad hash key {k:?}: {e}"))
        };
        let (start, end) = (
            parse(range.starting_hash_key())?,
            parse(range.ending_hash_key())?,
        );
        let records =
            common::emulator::read_shard(client, STREAM, shard.shard_id(), READ_LIMIT).await?;
        for (pk, data) in records {
            kinesis_records += 1;
            let users = deaggregate(&pk, None, &data)
                .map_err(|e| format!("a record in {} does not decode: {e}", shard.shard_id()))?;
            // A KCL consumer drops an aggregate holding a record outside its
            // shard's range, whole. An unaggregated record was placed by
            // Kinesis itself (by an explicit hash key GetRecords does not
            // return): kept.
            let kept = !is_aggregated(&data)
                || users.iter().all(|u| (start..=end).contains(&u.hash_key()));
            for u in users {
                tally.note(&u.data, kept);
            }
        }
    }
    Ok((tally, kinesis_records))
}

struct Report<'a> {
    state: &'a Shared,
    tally: &'a Tally,
    kinesis_records: u64,
    drained: bool,
    drain_time: Duration,
    final_exit: Result<ExitStatus, String>,
    work: &'a Path,
}

/// Prints the figures; true if the run passed.
fn report(r: &Report) -> bool {
    let s = r.state;
    let t = r.tally;
    let written = |src: Source| s.written[src as usize].load(Ordering::Relaxed);
    let (acked, unconfirmed, refused) = s.socket_counts();
    let sent = t.sent(s);
    let lost = t.lost(s);
    let delivered_unique: u64 = Source::ALL
        .iter()
        .map(|src| t.copies[*src as usize].iter().filter(|c| **c > 0).count() as u64)
        .sum();
    let delivered_total: u64 = t.copies.iter().flatten().map(|c| u64::from(*c)).sum();
    let duplicated: u64 = t
        .copies
        .iter()
        .flatten()
        .map(|c| u64::from(c.saturating_sub(1)))
        .sum();
    // Sent and delivered, but only in aggregates outside their shard's range.
    let kcl_lost = sent
        .iter()
        .filter(|(src, seq)| t.copies(*src, *seq) > 0 && t.placed(*src, *seq) == 0)
        .count();
    let outside: u64 = (0..3)
        .map(|i| {
            t.copies[i]
                .iter()
                .zip(&t.placed[i])
                .map(|(c, p)| u64::from(c - p))
                .sum::<u64>()
        })
        .sum();
    let states = s.socket.states.lock().expect("not poisoned");
    let count_where = |want: SocketState| {
        states
            .iter()
            .enumerate()
            .filter(|(seq, st)| **st == want && t.copies(Source::Socket, *seq as u64) > 0)
            .count()
    };
    let unconfirmed_delivered = count_where(SocketState::Unconfirmed);
    let refused_delivered = count_where(SocketState::Refused);
    // Ids in the stream that were never produced.
    let never_sent = Source::ALL
        .iter()
        .map(|src| {
            let produced = match src {
                Source::Socket => states.len() as u64,
                _ => written(*src),
            };
            t.copies[*src as usize]
                .iter()
                .enumerate()
                .filter(|(seq, c)| **c > 0 && *seq as u64 >= produced)
                .count()
        })
        .sum::<usize>();
    drop(states);

    let throttled = s.metric(
        "shardline_put_records_entry_errors_total",
        Some("ProvisionedThroughputExceededException"),
    );
    let failed = s.metric("shardline_records_failed_total", None);
    let (errors, warnings, messages) = agent_log_summary(r.work);
    let shards: Vec<String> = std::iter::once(INITIAL_SHARDS)
        .chain(
            s.shard_history
                .lock()
                .expect("not poisoned")
                .iter()
                .copied(),
        )
        .map(|n| n.to_string())
        .collect();

    println!();
    println!("soak results");
    println!(
        "  sent            {} = files {} (rename {}, copytruncate {}) + socket {} acknowledged",
        sent.len(),
        written(Source::FileRename) + written(Source::FileCopytruncate),
        written(Source::FileRename),
        written(Source::FileCopytruncate),
        acked
    );
    println!(
        "  unconfirmed     {unconfirmed} socket records without an answer ({unconfirmed_delivered} of them delivered)"
    );
    if refused > 0 {
        println!(
            "  refused         {refused} socket records ({refused_delivered} of them delivered)"
        );
    }
    println!(
        "  delivered       {delivered_unique} unique ids ({delivered_total} user records in {} Kinesis records)",
        r.kinesis_records
    );
    println!("  lost            {}", lost.len());
    for (src, seq) in lost.iter().take(20) {
        println!("                  {}-{seq:010}", src.tag());
    }
    println!("  duplicated      {duplicated}");
    println!(
        "  shard placement {outside} copies in aggregates a KCL consumer drops (a record outside the shard's range); \
         {kcl_lost} sent records with no copy it keeps"
    );
    if t.unreadable > 0 || never_sent > 0 {
        println!(
            "  unexpected      {} records without an id, {never_sent} ids never sent",
            t.unreadable
        );
    }
    println!(
        "  faults          {} SIGKILLs, {} SIGTERM restarts, {} outages ({} s), {} reshards ({}), \
         injected {} throttled entries, {} HTTP 500s, {} resets",
        s.kills.load(Ordering::Relaxed),
        s.terms.load(Ordering::Relaxed),
        s.outages.load(Ordering::Relaxed),
        s.outage_ms.load(Ordering::Relaxed) / 1000,
        s.reshards.load(Ordering::Relaxed),
        shards.join("→"),
        s.injected_throttles.load(Ordering::Relaxed),
        s.injected_500s.load(Ordering::Relaxed),
        s.injected_resets.load(Ordering::Relaxed),
    );
    println!(
        "  file rotations  rename {}, copytruncate {}",
        s.rotations[0].load(Ordering::Relaxed),
        s.rotations[1].load(Ordering::Relaxed)
    );
    println!(
        "  agent           {} runs; throttled entries {throttled}, misrouted {}, wrong-shard results {}, \
         shard map changes {}, retried {}, dead-lettered {failed}",
        s.incarnations.load(Ordering::Relaxed) + 1,
        s.metric("shardline_records_misrouted_total", None),
        s.metric("shardline_wrong_shard_results_total", None),
        s.metric("shardline_shard_map_changes_total", None),
        s.metric("shardline_records_retried_total", None),
    );
    let request_errors = s.metric_by_label("shardline_put_records_errors_total");
    if !request_errors.is_empty() {
        let list: Vec<String> = request_errors
            .iter()
            .map(|(labels, n)| format!("{labels}: {n}"))
            .collect();
        println!("  request errors  {}", list.join(", "));
    }
    println!("  agent log       {errors} ERROR, {warnings} WARN lines");
    for (message, n) in messages.iter().take(12) {
        println!("                  {n:>6} × {message}");
    }
    println!(
        "  drain           {} in {:.1} s after the load stopped",
        if r.drained {
            "spool empty"
        } else {
            "NOT FINISHED"
        },
        r.drain_time.as_secs_f64()
    );
    let final_ok = matches!(&r.final_exit, Ok(e) if e.success());
    println!("  final stop      {:?}", r.final_exit);

    let passed = lost.is_empty()
        && kcl_lost == 0
        && r.drained
        && final_ok
        && failed == 0
        && refused_delivered == 0
        && never_sent == 0
        && t.unreadable == 0
        && s.unexpected_exits.load(Ordering::Relaxed) == 0
        && s.failed_stops.load(Ordering::Relaxed) == 0;
    println!("  result          {}", if passed { "PASS" } else { "FAIL" });
    passed
}

/// Counts the ERROR and WARN lines of every agent log in `work`, and the
/// messages of both, most frequent first.
fn agent_log_summary(work: &Path) -> (u64, u64, Vec<(String, u64)>) {
    let (mut errors, mut warnings) = (0, 0);
    let mut messages: HashMap<String, u64> = HashMap::new();
    let logs = std::fs::read_dir(work)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"));
    for entry in logs {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let level = v["level"].as_str().unwrap_or_default();
            match level {
                "ERROR" => errors += 1,
                "WARN" => warnings += 1,
                _ => continue,
            }
            let message = v["message"].as_str().unwrap_or_default();
            *messages.entry(format!("{level} {message}")).or_default() += 1;
        }
    }
    let mut messages: Vec<_> = messages.into_iter().collect();
    messages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (errors, warnings, messages)
}
