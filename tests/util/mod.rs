//! Test support: an in-process Kinesis emulator on loopback, an agent built from a
//! TOML snippet, socket clients, and readers that take a stream back apart.

#![allow(dead_code)]

#[path = "../../examples/common/emulator.rs"]
pub mod emulator;
pub mod faults;
pub mod firehose;
pub mod moto;
pub mod proxy;
pub mod shim;
pub mod sts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardline::agent::Agent;
use shardline::aggregate::deaggregate;
use shardline::config::Config;

use shardline::record::UserRecord;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

/// Credentials and region for the SDK: the emulator accepts any, and nothing may
/// reach for the instance metadata service.
pub fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::remove_var("AWS_PROFILE");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A ferrokinesis emulator served on 127.0.0.1 from this process.
pub struct Emulator {
    pub endpoint: String,
    pub addr: std::net::SocketAddr,
    pub store: ferrokinesis::store::Store,
    /// Faults to inject between the agent and the emulator.
    pub faults: Arc<faults::Faults>,
    /// What the emulator lacks of today's Kinesis, and how requests named
    /// their stream.
    pub shim: Arc<shim::Shim>,
    task: tokio::task::JoinHandle<()>,
}

impl Emulator {
    pub async fn start() -> Emulator {
        Self::start_with(ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            delete_stream_ms: 0,
            update_stream_ms: 0,
            shard_limit: 1000,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(options: ferrokinesis::store::StoreOptions) -> Emulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, options).await
    }

    /// Serves on an already bound listener (to come back on a known port).
    pub async fn serve(
        listener: tokio::net::TcpListener,
        options: ferrokinesis::store::StoreOptions,
    ) -> Emulator {
        aws_env();
        let faults = Arc::new(faults::Faults::default());
        let shim = Arc::new(shim::Shim::default());
        let (f, s) = (faults.clone(), shim.clone());
        let served = emulator::serve(listener, options, |app| {
            app.layer(axum::middleware::from_fn_with_state(s, shim::layer))
                .layer(axum::middleware::from_fn_with_state(f, faults::layer))
        });
        // Before any request: the server has only just started.
        let _ = shim.store.set(served.store.clone());
        Emulator {
            endpoint: served.endpoint,
            addr: served.addr,
            store: served.store,
            faults,
            shim,
            task: served.task,
        }
    }

    pub async fn client(&self) -> aws_sdk_kinesis::Client {
        client(&self.endpoint).await
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

pub async fn client(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_env();
    emulator::client(endpoint, Some(Duration::from_secs(30))).await
}

pub use emulator::{create_stream, wait_active};

/// One Kinesis record as read back, with its user records.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub shard_id: String,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
    pub users: Vec<UserRecord>,
}

/// A shard as ListShards reports it, closed ones included.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub id: String,
    pub start: u128,
    pub end: u128,
    /// Not closed by a reshard.
    pub open: bool,
}

impl ShardInfo {
    pub fn contains(&self, k: u128) -> bool {
        self.start <= k && k <= self.end
    }
}

pub async fn all_shards(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<ShardInfo> {
    let out = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    out.shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            ShardInfo {
                id: s.shard_id().to_owned(),
                start: r.starting_hash_key().parse().unwrap(),
                end: r.ending_hash_key().parse().unwrap(),
                open: s
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none()),
            }
        })
        .collect()
}

/// Reads every record of every shard (open and closed) from the start.
pub async fn read_stream(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<ReadRecord> {
    let mut out = Vec::new();
    for shard in all_shards(client, stream).await {
        let records = emulator::read_shard(client, stream, &shard.id, 10_000)
            .await
            .unwrap();
        for (pk, data) in records {
            let users = deaggregate(&pk, None, &data)
                .unwrap_or_else(|e| panic!("record in {} does not decode: {e}", shard.id));
            out.push(ReadRecord {
                shard_id: shard.id.clone(),
                partition_key: pk,
                explicit_hash_key: None,
                data,
                users,
            });
        }
    }
    out
}

/// Every user record in the stream, with whether it lies in the hash key range of
/// the shard it was read from (the KCL rule: a consumer drops an aggregate holding
/// a record outside its shard's range). A record sent unaggregated was placed by
/// Kinesis itself (by an explicit hash key that GetRecords does not return): it
/// counts as in range.
pub async fn collect_with_placement(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> (Vec<ReadRecord>, Vec<(Bytes, bool)>) {
    let shards: BTreeMap<String, ShardInfo> = all_shards(client, stream)
        .await
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let records = read_stream(client, stream).await;
    let mut out = Vec::new();
    for r in &records {
        let shard = &shards[&r.shard_id];
        let aggregated = shardline::aggregate::is_aggregated(&r.data);
        for u in &r.users {
            out.push((u.data.clone(), !aggregated || shard.contains(u.hash_key())));
        }
    }
    (records, out)
}

/// Checks the KCL rule for every user record and returns their data, in read order.
pub async fn check_shards_and_collect(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> (Vec<ReadRecord>, Vec<Bytes>) {
    let (records, placed) = collect_with_placement(client, stream).await;
    let outside = placed.iter().filter(|(_, ok)| !ok).count();
    assert_eq!(
        outside, 0,
        "{outside} user records outside their shard's range"
    );
    (records, placed.into_iter().map(|(d, _)| d).collect())
}

/// A temp dir with the agent's spool and sockets.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn spool(&self) -> PathBuf {
        self.path("spool")
    }
}

/// A config for tests: fast linger, the given endpoint and extra TOML.
pub fn config(work: &Workdir, endpoint: &str, stream: &str, extra: &str) -> Config {
    let text = format!(
        r#"
shutdown_timeout_secs = 10
[kinesis]
stream = "{stream}"
region = "us-east-1"
endpoint = "{endpoint}"
request_timeout_ms = 10000
[delivery]
max_buffered_time_ms = 20
shard_refresh_interval_secs = 5
[metrics]
listen = "127.0.0.1:0"
[spool]
dir = "{spool}"
flush_interval_ms = 50
{extra}
"#,
        spool = work.spool().display()
    );
    shardline::config::parse(&text, Path::new("test.toml")).unwrap()
}

pub fn socket_toml(path: &Path, stream: Option<&str>) -> String {
    let mut s = format!("[[socket]]\npath = \"{}\"\n", path.display());
    if let Some(stream) = stream {
        s.push_str(&format!("stream = \"{stream}\"\n"));
    }
    s
}

/// A `[[file]]` block tailing `patterns`, with extra keys.
pub fn file_toml(patterns: &[&Path], extra: &str) -> String {
    let include: Vec<String> = patterns
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!("[[file]]\ninclude = [{}]\n{extra}\n", include.join(", "))
}

/// Every user record of the spool at `dir` (the agent must not be running), per
/// stream entry order, and the stream's checkpoints.
pub fn spool_contents(
    dir: &Path,
    stream: &str,
) -> (Vec<UserRecord>, Vec<shardline::testkit::Checkpoint>) {
    let spool = shardline::testkit::open_at(dir, u64::MAX).unwrap();
    let s = spool.stream(stream).unwrap();
    let (entries, _) = s.read_from(0, u64::MAX, |_| false).unwrap();
    let mut records = Vec::new();
    for e in entries {
        for (i, r) in e.records.into_iter().enumerate() {
            let done = e
                .delivered
                .as_ref()
                .is_some_and(|bits| bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0));
            if !done {
                records.push(r);
            }
        }
    }
    (records, s.checkpoints().unwrap())
}

pub async fn start_agent(config: Config) -> Agent {
    aws_env();
    Agent::start(config).await.unwrap()
}

/// Writes lines to a stream socket and closes it.
pub async fn send_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut s = UnixStream::connect(path).await.unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
        if buf.len() >= 1 << 20 {
            s.write_all(&buf).await.unwrap();
            buf.clear();
        }
    }
    s.write_all(&buf).await.unwrap();
    s.shutdown().await.unwrap();
}

/// Polls `f` until it is true, failing the test after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The directory of the npm package `aws-kinesis-agg` installed by `.ci/test`.
pub fn kinesis_agg_module() -> PathBuf {
    if let Ok(p) = std::env::var("SHARDLINE_KINESIS_AGG") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop/node_modules/aws-kinesis-agg")
}

/// Decodes Kinesis records with the public Node.js deaggregator (`deaggregateSync`,
/// checksums on). Returns the user records of each, or panics with what it said.
pub fn node_deaggregate(records: &[(String, Option<String>, Bytes)]) -> Vec<Vec<UserRecord>> {
    use base64::Engine as _;
    let module = kinesis_agg_module();
    assert!(
        module.join("package.json").exists(),
        "the npm package aws-kinesis-agg is not installed at {}; run .ci/test, which installs it",
        module.display()
    );
    let input: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, (pk, ehk, data))| {
            serde_json::json!({
                "partitionKey": pk,
                "explicitPartitionKey": ehk,
                "sequenceNumber": i.to_string(),
                "data": base64::engine::general_purpose::STANDARD.encode(data),
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.json");
    std::fs::write(&input_path, serde_json::to_vec(&input).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/deaggregate.js");
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(&input_path)
        .env("KINESIS_AGG_MODULE", &module)
        .output()
        .expect("node must be installed to run the interop check");
    assert!(
        out.status.success(),
        "node deaggregation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&out.stdout).unwrap();
    decoded
        .into_iter()
        .map(|users| {
            users
                .into_iter()
                .map(|u| UserRecord {
                    partition_key: u["partitionKey"].as_str().unwrap().to_owned(),
                    explicit_hash_key: u["explicitPartitionKey"]
                        .as_str()
                        .map(|k| k.parse().unwrap()),
                    data: base64::engine::general_purpose::STANDARD
                        .decode(u["data"].as_str().unwrap())
                        .unwrap()
                        .into(),
                })
                .collect()
        })
        .collect()
}

/// The `shardline` binary under test: Cargo's build of it, or `SHARDLINE_BIN` (a
/// copy of it, when other checkouts share the target directory and may replace
/// `target/debug/shardline` while the tests run).
pub fn shardline_bin() -> PathBuf {
    std::env::var_os("SHARDLINE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shardline")))
}

/// The real `shardline` binary, with test credentials and none of the service
/// environment of whatever runs the tests (a CI job under systemd must not notify
/// its own manager).
pub fn shardline_command() -> std::process::Command {
    let mut c = std::process::Command::new(shardline_bin());
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .env_remove("AWS_PROFILE")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .stdin(std::process::Stdio::null());
    c
}

/// Writes a config file for the binary: one socket (`in.sock`), the metrics
/// endpoint on an ephemeral loopback port, and `extra` TOML at the top level
/// (before any section). Returns its path.
pub fn write_binary_config(work: &Workdir, endpoint: &str, top: &str) -> PathBuf {
    let path = work.path("shardline.toml");
    std::fs::write(
        &path,
        format!(
            "{top}\n[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
             request_timeout_ms = 60000\n[delivery]\nmax_buffered_time_ms = 20\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nflush_interval_ms = 50\n{}",
            work.spool().display(),
            socket_toml(&work.path("in.sock"), None)
        ),
    )
    .unwrap();
    path
}

/// A running `shardline run`, its log going to a file (a pipe nobody reads could
/// fill up and stall it).
pub struct AgentProcess {
    pub child: std::process::Child,
    pub log: PathBuf,
    pub status_file: PathBuf,
}

impl AgentProcess {
    /// Starts `shardline [args] run --config CONFIG --status-file …`, stderr to
    /// `log` (`name`.log in the work dir); `prepare` adjusts the command.
    pub fn spawn(
        work: &Workdir,
        name: &str,
        config: &Path,
        args: &[&str],
        prepare: impl FnOnce(&mut std::process::Command),
    ) -> AgentProcess {
        let log = work.path(&format!("{name}.log"));
        let status_file = work.path(&format!("{name}.status"));
        let mut c = shardline_command();
        c.args(args)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--status-file")
            .arg(&status_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        prepare(&mut c);
        AgentProcess {
            child: c.spawn().unwrap(),
            log,
            status_file,
        }
    }

    /// Waits for the status file and returns the metrics endpoint's address.
    pub async fn metrics_addr(&mut self) -> std::net::SocketAddr {
        let path = self.status_file.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let f: shardline::agent::StatusFile = serde_json::from_str(&text).unwrap();
                assert_eq!(f.pid, self.child.id());
                return f.metrics_addr;
            }
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!(
                    "agent exited with {exit} before starting:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no status file:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (up to `limit`) for the process to exit; returns its status and how
    /// long it took.
    pub async fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, Duration, String) {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return (exit, started.elapsed(), self.log_text());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("agent did not exit within {limit:?}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the log.
    pub async fn stop(self) -> String {
        self.signal("TERM");
        let (exit, _, log) = self.wait(Duration::from_secs(60)).await;
        assert!(exit.success(), "exit {exit}:\n{log}");
        log
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // A failed test must not leave the agent running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every user record's data in `stream`, sorted (duplicates kept).
/// Every record of `stream`, parsed as a JSON object (in the order
/// [`stream_data`] gives them).
pub async fn stream_objects(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    stream_data(client, stream)
        .await
        .iter()
        .map(|d| match serde_json::from_slice(d) {
            Ok(serde_json::Value::Object(o)) => o,
            other => panic!("record {d:?} is not a JSON object: {other:?}"),
        })
        .collect()
}

pub async fn stream_data(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Bytes> {
    let (_, mut data) = check_shards_and_collect(client, stream).await;
    data.sort();
    data
}

/// A config for the binary whose Kinesis endpoint answers nothing (the spool
/// only fills), with a 2 MiB spool, a 3 s shutdown timeout and `sources` (TOML
/// blocks). Returns its path.
pub fn full_spool_config(work: &Workdir, sources: &str) -> PathBuf {
    let path = work.path("shardline.toml");
    std::fs::write(
        &path,
        format!(
            "shutdown_timeout_secs = 3\n[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\n\
             endpoint = \"http://127.0.0.1:9\"\nrequest_timeout_ms = 1000\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nmax_bytes = 2097152\nmin_free_bytes = 0\nflush_interval_ms = 20\n\
             {sources}",
            work.spool().display(),
        ),
    )
    .unwrap();
    path
}

/// Every `.rs` file under `dir`, at any depth, sorted: what the layout, cycle
/// and size checks read.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Whether a file of `src/` is test code: a `tests.rs` or under a `tests/` folder.
pub fn is_test_file(path: &Path) -> bool {
    let path = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path);
    path.file_name().is_some_and(|n| n == "tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
}
