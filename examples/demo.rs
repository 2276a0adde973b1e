//! The demo: runs the real agent (the `shardline run` code path) against a Kinesis
//! emulator that it starts on 127.0.0.1, feeds sample log lines through the agent's
//! Unix socket, and prints what arrived in the stream, shard by shard.
//!
//! ```text
//! cargo run --example demo
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardline::aggregate::deaggregate;

use tokio::io::AsyncWriteExt;

mod common;

const STREAM: &str = "app-logs";
const SHARDS: i32 = 4;
const LINES: usize = 10_000;

#[tokio::main]
async fn main() {
    // The emulator takes any credentials; never reach for instance metadata.
    std::env::set_var("AWS_ACCESS_KEY_ID", "demo");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "demo");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,shardline=info".into()),
        )
        .init();

    // 1. A Kinesis emulator on loopback, with a 4-shard stream.
    let (_emu, endpoint, client) = start_emulator().await;
    println!("Kinesis emulator on {endpoint}, stream {STREAM:?} with {SHARDS} shards");

    // 2. The agent, from a config file like any user's.
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("ingest.sock");
    let config = agent_config(&endpoint, work.path(), &socket);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(shardline::agent::run(config, async move {
        let _ = stop_rx.await;
    }));
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 3. Sample lines through the socket.
    let started = Instant::now();
    send_sample_lines(&socket).await;
    println!("Sent {LINES} lines to {}", socket.display());

    // 4. Read the stream back until every line is there.
    let (per_shard, kinesis_records) = wait_for_lines(&client, started).await;
    let total: usize = per_shard.values().map(|v| v.len()).sum();
    println!(
        "\n{total} of {LINES} lines arrived in {:.2?}, packed into {kinesis_records} Kinesis records (KPL aggregates):",
        started.elapsed()
    );
    for (shard, lines) in &per_shard {
        println!(
            "  {shard}: {} lines, e.g. {:?}",
            lines.len(),
            String::from_utf8_lossy(&lines[0])
        );
    }

    let _ = stop_tx.send(());
    let report = agent.await.unwrap().expect("agent stops cleanly");
    println!(
        "\nAgent stopped; {} bytes left in the spool.",
        report.spooled_bytes
    );
    if total != LINES {
        eprintln!("Not every line arrived");
        std::process::exit(1);
    }
}

/// The emulator with the demo's stream; its endpoint and a client of it.
async fn start_emulator() -> (common::emulator::Served, String, aws_sdk_kinesis::Client) {
    let emu = common::emulator::start(
        ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
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
        .shard_count(SHARDS)
        .send()
        .await
        .expect("creating the demo stream");
    (emu, endpoint, client)
}

/// Writes the agent's config into `work` (the emulator at `endpoint`, a socket at
/// `socket`) and loads it as `shardline run` does.
fn agent_config(endpoint: &str, work: &Path, socket: &Path) -> shardline::config::Config {
    let config_path = work.join("shardline.toml");
    std::fs::write(
        &config_path,
        format!(
            "[kinesis]\nstream = \"{STREAM}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n[[socket]]\npath = \"{}\"\n",
            work.join("spool").display(),
            socket.display()
        ),
    )
    .unwrap();
    shardline::config::load(&config_path).expect("demo config is valid")
}

/// Reads the stream back until every line is there (or a minute passed).
async fn wait_for_lines(
    client: &aws_sdk_kinesis::Client,
    started: Instant,
) -> (BTreeMap<String, Vec<Bytes>>, usize) {
    loop {
        let (per_shard, kinesis_records) = read_back(client).await;
        let total: usize = per_shard.values().map(|v| v.len()).sum();
        if total >= LINES || started.elapsed() > Duration::from_secs(60) {
            return (per_shard, kinesis_records);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send_sample_lines(socket: &Path) {
    let levels = ["INFO", "WARN", "DEBUG", "ERROR"];
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let mut buf = String::new();
    for i in 0..LINES {
        buf.push_str(&format!(
            "2026-11-25T12:00:{:02}.{:03}Z {} checkout-service request_id={i:06} latency_ms={}\n",
            (i / 1000) % 60,
            i % 1000,
            levels[i % levels.len()],
            (i * 37) % 500
        ));
    }
    s.write_all(buf.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
}

/// Every user record in the stream, by shard, and the number of Kinesis records.
async fn read_back(client: &aws_sdk_kinesis::Client) -> (BTreeMap<String, Vec<Bytes>>, usize) {
    let mut per_shard = BTreeMap::new();
    let mut kinesis_records = 0;
    let shards = client
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .unwrap();
    for shard in shards.shards() {
        let records = common::emulator::read_shard(client, STREAM, shard.shard_id(), 10_000)
            .await
            .unwrap();
        let lines: &mut Vec<Bytes> = per_shard.entry(shard.shard_id().to_owned()).or_default();
        for (pk, data) in records {
            kinesis_records += 1;
            let users = deaggregate(&pk, None, &data).expect("every aggregate decodes");
            lines.extend(users.into_iter().map(|u| u.data));
        }
    }
    (per_shard, kinesis_records)
}
