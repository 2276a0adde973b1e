//! End-to-end benchmark: the real agent tails a generated log file into a minimal
//! PutRecords endpoint (another process that only parses requests and accepts every
//! entry), and reports lines/s, MiB/s, CPU seconds per GiB, peak RSS, spool bytes on
//! disk and the time until the spool is empty. The agent runs in this process, so
//! the CPU and memory figures are the agent's alone.
//!
//! ```text
//! cargo run --release --example e2e -- [LINES] [LINE_BYTES] [SHARDS]
//! cargo run --release --example e2e -- 4000000 256 4     # 1 GiB of 256-byte lines
//! E2E_DELIVERY="max_inflight_bytes = 8388608" cargo run --release --example e2e
//! ```
//!
//! `E2E_DELIVERY` and `E2E_SPOOL` add lines to the agent's `[delivery]` and `[spool]`
//! sections.

use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-endpoint") {
        serve_endpoint(args[2].parse().expect("shard count"));
        return;
    }
    let lines: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let line_bytes: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let shards: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4);
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");

    // The endpoint: this program again, in its own process.
    let mut endpoint = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--serve-endpoint", &shards.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("endpoint process");
    let mut addr = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(endpoint.stdout.take().expect("piped")),
        &mut addr,
    )
    .expect("endpoint address");
    let addr = addr.trim().to_owned();

    let work = tempfile::tempdir().expect("temp dir");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let file = logs.join("app.log");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).expect("log file"));
        let mut line = vec![b'x'; line_bytes];
        *line.last_mut().expect("line_bytes > 0") = b'\n';
        for i in 0..lines {
            let head = format!("{i:012} ");
            line[..head.len()].copy_from_slice(head.as_bytes());
            f.write_all(&line).expect("write");
        }
    }
    let payload = lines * line_bytes as u64;
    let text = format!(
        "[kinesis]\nstream = \"bench\"\nregion = \"us-east-1\"\nendpoint = \"http://{addr}\"\n\
         [delivery]\nshard_rate_factor = 0.0\n{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [spool]\ndir = \"{}\"\n{}\n[[file]]\ninclude = [\"{}/*.log\"]\n",
        std::env::var("E2E_DELIVERY").unwrap_or_default(),
        work.path().join("spool").display(),
        std::env::var("E2E_SPOOL").unwrap_or_default(),
        logs.display()
    );
    let config = shardline::config::parse(&text, "e2e.toml".as_ref()).expect("config");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let (elapsed, spool_peak) = runtime.block_on(async {
        let agent = shardline::agent::Agent::start(config).await.expect("agent");
        let m = agent.metrics().clone();
        let mut spool_peak = 0;
        let mut rss = Vec::new();
        while m.delivered_count("bench") < lines {
            spool_peak = spool_peak.max(dir_bytes(&work.path().join("spool")));
            rss.push(status_kib("VmRSS:"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rss.sort_unstable();
        if !rss.is_empty() {
            println!(
                "RSS samples      median {:.1} MiB, max {:.1} MiB ({} samples)",
                rss[rss.len() / 2] as f64 / 1024.0,
                rss[rss.len() - 1] as f64 / 1024.0,
                rss.len()
            );
        }
        let elapsed = started.elapsed();
        // Until the spool is empty: the last acks are retired and flushed.
        while agent.producer().spool().records() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        agent.stop().await.expect("stop");
        (elapsed, spool_peak)
    });
    let drained = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let secs = elapsed.as_secs_f64();
    let gib = payload as f64 / (1u64 << 30) as f64;
    println!(
        "lines            {lines} x {line_bytes} bytes ({:.0} MiB), {shards} shards",
        payload as f64 / (1 << 20) as f64
    );
    println!("delivered in     {secs:.2} s");
    println!("lines/s          {:.0}", lines as f64 / secs);
    println!(
        "MiB/s            {:.1}",
        payload as f64 / (1 << 20) as f64 / secs
    );
    println!("CPU s per GiB    {:.2} (agent process)", cpu / gib);
    println!(
        "peak RSS         {:.1} MiB",
        peak_rss() as f64 / (1 << 20) as f64
    );
    println!(
        "spool on disk    {:.1} MiB at most",
        spool_peak as f64 / (1 << 20) as f64
    );
    println!("spool empty at   {:.2} s", drained.as_secs_f64());
    let _ = endpoint.kill();
}

/// A PutRecords endpoint that parses each request and accepts every entry.
fn serve_endpoint(shards: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .fallback(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                let target = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let reply = if target.ends_with(".ListShards") {
                    let step = u128::MAX / shards as u128;
                    let list: Vec<_> = (0..shards as u128)
                        .map(|i| {
                            let end = if i + 1 == shards as u128 { u128::MAX } else { (i + 1) * step - 1 };
                            serde_json::json!({
                                "ShardId": format!("shardId-{i:012}"),
                                "HashKeyRange": {"StartingHashKey": (i * step).to_string(), "EndingHashKey": end.to_string()},
                                "SequenceNumberRange": {"StartingSequenceNumber": "1"}
                            })
                        })
                        .collect();
                    serde_json::json!({"Shards": list})
                } else {
                    let req: serde_json::Value = serde_json::from_slice(&body).expect("json");
                    let n = req["Records"].as_array().map_or(0, |r| r.len());
                    let records: Vec<_> = (0..n)
                        .map(|i| serde_json::json!({"SequenceNumber": i.to_string(), "ShardId": ""}))
                        .collect();
                    serde_json::json!({"FailedRecordCount": 0, "Records": records})
                };
                (
                    [("content-type", "application/x-amz-json-1.1")],
                    serde_json::to_vec(&reply).expect("json"),
                )
            })
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
        axum::serve(listener, app).await.expect("serve");
    });
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// A `kB` field of /proc/self/status.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}
