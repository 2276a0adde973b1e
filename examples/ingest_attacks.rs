//! Replays the memory attacks of issue 14 on the socket source against the real
//! agent binary (a child process) and prints its resident memory, so the ingest
//! memory budget's effect can be measured rather than assumed.
//!
//! ```text
//! cargo run --release --example ingest_attacks [-- BUDGET_MIB]
//! ```
//!
//! The agent listens on one frames socket with `ingest.max_memory_bytes` set to
//! `BUDGET_MIB` (default 64); Kinesis is unreachable, so accepted records stay in
//! the spool. Attacks, one after the other:
//!
//! 1. 400 connections, each sending the start of an 8 MiB frame (1 MiB of it) and
//!    then nothing, held 5 s;
//! 2. 8 connections, each sending one 8 MiB frame of 1.6 million tiny records;
//! 3. the clients gone: what the agent keeps.
//!
//! For each it prints the agent's peak RSS while it ran (sampled every 50 ms), the
//! most the budget had charged (`shardline_ingest_memory_bytes`), and how many
//! connections waited for room. Exit status 1 when the peak exceeded the budget
//! plus 64 MiB over the agent's idle RSS.

mod common;

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shardline::testkit::frame::{self, Record, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const MIB: u64 = 1 << 20;

fn main() -> ExitCode {
    let budget_mib: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 64,
        Some(Ok(n)) if n >= 4 => n,
        Some(_) => {
            eprintln!("usage: ingest_attacks [BUDGET_MIB, at least 4]");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    match runtime.block_on(run(budget_mib)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ingest_attacks: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's resident memory, from `/proc/<pid>/status` (`VmRSS:` or `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A sample of the agent's metrics.
async fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let Ok((_, body)) = shardline::status::get(addr, "/metrics", Duration::from_secs(5)).await
    else {
        return 0;
    };
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse::<f64>().ok())?
        })
        .map_or(0, |v| v as u64)
}

/// Peak RSS and peak charged bytes while `attack` runs.
async fn measure<F: std::future::Future<Output = String> + Send + 'static>(
    pid: u32,
    addr: std::net::SocketAddr,
    attack: F,
) -> (u64, u64, String) {
    let attack = tokio::spawn(attack);
    let (mut rss, mut charged) = (0, 0);
    while !attack.is_finished() {
        rss = rss.max(status_kib(pid, "VmRSS:") * 1024);
        charged = charged.max(metric(addr, "shardline_ingest_memory_bytes").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let note = attack
        .await
        .unwrap_or_else(|e| format!("attack failed: {e}"));
    (rss, charged, note)
}

async fn run(budget_mib: u64) -> Result<bool, String> {
    let bin = common::agent_binary()?;
    let work = tempfile::Builder::new()
        .prefix("shardline-attacks-")
        .tempdir()
        .map_err(|e| format!("cannot create a work directory: {e}"))?;
    let dir = work.path();
    let sock = dir.join("frames.sock");
    let mut agent = start_agent(&bin, dir, &sock, budget_mib)?;
    let pid = agent.id();
    let addr = wait_for_status(&dir.join("status.json")).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = status_kib(pid, "VmRSS:") * 1024;
    println!(
        "agent pid {pid}, budget {budget_mib} MiB, idle RSS {:.1} MiB",
        idle as f64 / MIB as f64
    );
    println!("| Attack | Peak RSS | Most charged | Outcome |");
    println!("|---|---|---|---|");
    let worst = attacks(pid, addr, &sock).await;
    let hwm = status_kib(pid, "VmHWM:") * 1024;
    println!("agent VmHWM {:.1} MiB", hwm as f64 / MIB as f64);

    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = agent.wait();
    // What the agent said about it (rate-limited, so short).
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        println!("agent: {line}");
    }
    let limit = idle + budget_mib * MIB + 64 * MIB;
    let ok = worst <= limit;
    println!(
        "target: peak ≤ idle + budget + 64 MiB = {:.1} MiB: {}",
        limit as f64 / MIB as f64,
        if ok { "met" } else { "NOT met" }
    );
    Ok(ok)
}

/// Writes the agent's config into `dir` (one frames socket at `sock`, an ingest
/// budget of `budget_mib`, Kinesis unreachable) and starts the agent on it, its
/// stderr in `agent.log` and its status file `status.json`.
fn start_agent(
    bin: &Path,
    dir: &Path,
    sock: &Path,
    budget_mib: u64,
) -> Result<std::process::Child, String> {
    let config = dir.join("shardline.toml");
    std::fs::write(
        &config,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[ingest]\nmax_memory_bytes = {}\n\
             [spool]\ndir = \"{}\"\n[[socket]]\npath = \"{}\"\nframing = \"frames\"\n\
             max_connections_per_uid = 1024\n",
            budget_mib * MIB,
            dir.join("spool").display(),
            sock.display()
        ),
    )
    .map_err(|e| format!("cannot write the config: {e}"))?;
    let log = std::fs::File::create(dir.join("agent.log")).map_err(|e| e.to_string())?;
    Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--status-file")
        .arg(dir.join("status.json"))
        .env("AWS_ACCESS_KEY_ID", "attack")
        .env("AWS_SECRET_ACCESS_KEY", "attack")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// Runs the attacks one after the other, reporting each, then what the agent
/// keeps once the clients left; returns the highest peak RSS of the attacks.
async fn attacks(pid: u32, addr: std::net::SocketAddr, sock: &Path) -> u64 {
    let mut worst = 0;
    let s = sock.to_owned();
    let (rss, charged, note) = measure(pid, addr, async move { unfinished_frames(&s).await }).await;
    report(
        "400 connections × unfinished 8 MiB frame",
        rss,
        charged,
        &note,
    );
    worst = worst.max(rss);

    let s = sock.to_owned();
    let (rss, charged, note) = measure(pid, addr, async move { tiny_records(&s).await }).await;
    report("8 frames × 1.6 M tiny records", rss, charged, &note);
    worst = worst.max(rss);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = status_kib(pid, "VmRSS:") * 1024;
    let waits = metric(addr, "shardline_ingest_memory_waits_total").await;
    let charged = metric(addr, "shardline_ingest_memory_bytes").await;
    report(
        "after the clients left",
        after,
        charged,
        &format!("{waits} waits for budget in all"),
    );
    worst
}

fn report(what: &str, rss: u64, charged: u64, note: &str) {
    println!(
        "| {what} | {:.1} MiB | {:.1} MiB | {note} |",
        rss as f64 / MIB as f64,
        charged as f64 / MIB as f64
    );
}

async fn wait_for_status(path: &Path) -> Result<std::net::SocketAddr, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let f: shardline::agent::StatusFile =
                serde_json::from_str(&text).map_err(|e| e.to_string())?;
            return Ok(f.metrics_addr);
        }
        if Instant::now() > deadline {
            return Err("the agent did not start within 60 s (see agent.log)".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 400 connections each send 1 MiB of an 8 MiB frame and hold it for 5 s.
async fn unfinished_frames(sock: &Path) -> String {
    let mut clients = Vec::new();
    for _ in 0..400 {
        let sock = sock.to_owned();
        clients.push(tokio::spawn(async move {
            let mut s = UnixStream::connect(&sock).await.ok()?;
            let mut wire = ((8u32 << 20) - 16).to_be_bytes().to_vec();
            wire.push(frame::VERSION);
            wire.extend(vec![0u8; 1 << 20]);
            // The agent may not take it all while it waits for budget.
            let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&wire)).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some(())
        }));
    }
    let mut connected = 0;
    for c in clients {
        if let Ok(Some(())) = c.await {
            connected += 1;
        }
    }
    format!("{connected} connections held 5 s")
}

/// 8 connections each send one 8 MiB frame of 1.6 million tiny records.
async fn tiny_records(sock: &Path) -> String {
    let request = Request {
        id: 1,
        records: vec![
            Record {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: Bytes::new(),
                record_id: None,
            };
            1_600_000
        ],
        ack: true,
        stream: None,
    };
    let mut wire = BytesMut::new();
    frame::encode(&request, &mut wire);
    drop(request);
    let wire = wire.freeze();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (sock, wire) = (sock.to_owned(), wire.clone());
        clients.push(tokio::spawn(async move {
            let mut s = UnixStream::connect(&sock)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            s.write_all(&wire)
                .await
                .map_err(|e| format!("write: {e}"))?;
            s.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
            let mut answer = BytesMut::new();
            while s
                .read_buf(&mut answer)
                .await
                .map_err(|e| format!("read: {e}"))?
                > 0
            {}
            match frame::decode::<frame::Response>(&mut answer) {
                Ok(Some(r)) => Ok(r.message),
                Ok(None) => Err("closed without an answer".to_owned()),
                Err(e) => Err(format!("unreadable answer: {e}")),
            }
        }));
    }
    let mut answers = Vec::new();
    for c in clients {
        let answer = match c.await {
            Ok(Ok(message)) => message,
            Ok(Err(e)) => e,
            Err(e) => format!("client failed: {e}"),
        };
        answers.push(answer);
    }
    answers.sort();
    answers.dedup();
    format!(
        "{} bytes per frame; answers: {}",
        wire.len(),
        answers.join(" / ")
    )
}
