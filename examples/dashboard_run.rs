//! A two-minute run of the real agent that gives the dashboard something to show:
//! a Kinesis emulator on 127.0.0.1 that enforces the shard limits, a socket, a
//! tailed file and (when `systemd-journal-remote` is installed) a journal
//! directory as sources, a load that outgrows one shard, and a reshard to four.
//! Every second it scrapes the agent's `/metrics` into a file (JSON lines of
//! `{"t": seconds, "text": exposition}`), which `examples/dashboard_png.py` plots
//! with the dashboard's queries:
//!
//! ```text
//! cargo run --example dashboard_run -- target/dashboard-scrapes.jsonl
//! python3 examples/dashboard_png.py target/dashboard-scrapes.jsonl docs/dashboard.png
//! ```

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ScalingType;

use tokio::io::AsyncWriteExt;

const STREAM: &str = "app-logs";
const RUN: Duration = Duration::from_secs(120);
/// When the load outgrows one shard, and when the stream gets four.
const BURST: Duration = Duration::from_secs(30);
const RESHARD: Duration = Duration::from_secs(70);

fn journal_remote() -> Option<PathBuf> {
    ["/lib/systemd", "/usr/lib/systemd"]
        .iter()
        .map(|d| Path::new(d).join("systemd-journal-remote"))
        .find(|p| p.exists())
}

/// Appends `n` entries of unit `app.service` to the journal in `dir`.
fn append_journal(tool: &Path, dir: &Path, first: u64, n: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros();
    let mut export = String::new();
    for i in first..first + n {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={now}\n__MONOTONIC_TIMESTAMP={i}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             _SYSTEMD_UNIT=app.service\nPRIORITY=6\nMESSAGE=journal entry {i}\n\n"
        ));
    }
    let mut child = Command::new(tool)
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting systemd-journal-remote");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(export.as_bytes())
        .expect("writing the export stream");
    drop(stdin);
    let _ = child.wait();
}

#[tokio::main]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/dashboard-scrapes.jsonl".into());
    std::env::set_var("AWS_ACCESS_KEY_ID", "demo");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "demo");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");

    let (_emu, endpoint, client) = start_emulator().await;
    let work = tempfile::tempdir().expect("a temp dir");
    let socket = work.path().join("ingest.sock");
    let journal = work.path().join("journal");
    std::fs::create_dir_all(&journal).expect("journal dir");
    let mut feed = Feed {
        file: work.path().join("app.log"),
        tool: journal_remote(),
        journal,
        journal_next: 1,
    };
    let config = write_config(work.path(), &endpoint, &socket, &feed);
    let status = work.path().join("agent.status");
    let mut agent = Command::new(common::agent_binary().expect("the agent binary"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--status-file")
        .arg(&status)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting the agent");
    let addr = wait_status(&status).await;
    println!("agent metrics on {addr}; scraping into {out} for {RUN:?}");

    let start = Instant::now();
    let load = tokio::spawn(socket_load(socket.clone(), start));
    let mut scrapes = std::fs::File::create(&out).expect("creating the output");
    let mut resharded = false;
    let mut file_lines = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&feed.file)
        .expect("the tailed file");
    while start.elapsed() < RUN + Duration::from_secs(15) {
        let tick = Instant::now();
        let (_, text) = shardline::status::get(addr, "/metrics", Duration::from_secs(5))
            .await
            .expect("scraping the agent");
        let line = serde_json::json!({
            "t": start.elapsed().as_secs_f64(),
            "text": String::from_utf8_lossy(&text),
        });
        writeln!(scrapes, "{line}").expect("writing a scrape");
        if start.elapsed() < RUN {
            feed.append(&mut file_lines, tick);
        }
        if !resharded && start.elapsed() >= RESHARD {
            resharded = true;
            reshard(&client, start).await;
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    load.await.expect("the load task");
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
    println!("done: {out}");
}

/// The emulator enforcing the shard limits, with the stream of one shard; its
/// endpoint and a client of it.
async fn start_emulator() -> (common::emulator::Served, String, aws_sdk_kinesis::Client) {
    let emu = common::emulator::start(
        ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            update_stream_ms: 0,
            enforce_limits: true,
            ..Default::default()
        },
        |app| app,
    )
    .await;
    let endpoint = emu.endpoint.clone();
    let client = common::emulator::client(&endpoint, None).await;
    client
        .create_stream()
        .stream_name(STREAM)
        .shard_count(1)
        .send()
        .await
        .expect("creating the stream");
    (emu, endpoint, client)
}

/// The file and journal sources the run feeds every second: the tailed file, and
/// the journal directory when `systemd-journal-remote` can write one.
struct Feed {
    file: PathBuf,
    tool: Option<PathBuf>,
    journal: PathBuf,
    /// The next journal entry's number.
    journal_next: u64,
}

impl Feed {
    /// The `[[journald]]` section, or none (said on stderr) without the tool.
    fn journald_block(&self) -> String {
        match &self.tool {
            Some(_) => format!(
                "[[journald]]\ndirectory = \"{}\"\nsince = \"beginning\"\n",
                self.journal.display()
            ),
            None => {
                eprintln!("systemd-journal-remote is not installed: no journald source");
                String::new()
            }
        }
    }

    /// One second's lines: 200 to the file (through `file_lines`), 100 journal
    /// entries.
    fn append(&mut self, file_lines: &mut std::fs::File, tick: Instant) {
        for i in 0..200 {
            writeln!(file_lines, "file line {} {i}", tick.elapsed().as_nanos())
                .expect("appending to the file");
        }
        if let Some(tool) = &self.tool {
            append_journal(tool, &self.journal, self.journal_next, 100);
            self.journal_next += 100;
        }
    }
}

/// Writes the agent's config into `work`; returns its path.
fn write_config(work: &Path, endpoint: &str, socket: &Path, feed: &Feed) -> PathBuf {
    let journald_block = feed.journald_block();
    let config = work.join("shardline.toml");
    std::fs::write(
        &config,
        format!(
            "[kinesis]\nstream = \"{STREAM}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
             [delivery]\nrate_limit_percent = 0\nshard_refresh_interval_secs = 10\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n\
             [[socket]]\npath = \"{}\"\n[[file]]\ninclude = [\"{}\"]\n{journald_block}",
            work.join("spool").display(),
            socket.display(),
            feed.file.display()
        ),
    )
    .expect("writing the config");
    config
}

/// Waits for the agent's status file; returns its metrics address.
async fn wait_status(status: &Path) -> std::net::SocketAddr {
    loop {
        if let Ok(text) = std::fs::read_to_string(status) {
            let f: shardline::agent::StatusFile =
                serde_json::from_str(&text).expect("the status file is JSON");
            break f.metrics_addr;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The socket load: ~300-byte lines, 2000/s, then 6000/s (past one shard's
/// 1 MiB/s) until the reshard, then 3000/s.
async fn socket_load(socket: PathBuf, start: Instant) {
    let mut conn = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("connecting to the agent");
    let mut n = 0u64;
    while start.elapsed() < RUN {
        let t = start.elapsed();
        let per_sec = if t < BURST {
            2000
        } else if t < RESHARD {
            6000
        } else {
            3000
        };
        let mut buf = String::new();
        for _ in 0..per_sec / 10 {
            n += 1;
            buf.push_str(&format!("{{\"n\":{n},\"msg\":\"{}\"}}\n", "x".repeat(280)));
        }
        conn.write_all(buf.as_bytes()).await.expect("writing lines");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// UpdateShardCount to four.
async fn reshard(client: &aws_sdk_kinesis::Client, start: Instant) {
    client
        .update_shard_count()
        .stream_name(STREAM)
        .target_shard_count(4)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .expect("resharding");
    println!("resharded to 4 at {:?}", start.elapsed());
}
