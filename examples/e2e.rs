//! End-to-end benchmark: the real agent takes generated log lines from a source and
//! delivers them to a PutRecords endpoint in another process, and this program
//! reports lines/s, MiB/s, CPU seconds per GiB, peak RSS, spool bytes on disk and the
//! time until the spool is empty. The agent runs in this process and everything else
//! (the endpoint, the socket client) in child processes, so the CPU and memory
//! figures are the agent's alone.
//!
//! ```text
//! cargo run --release --example e2e -- [OPTIONS] [LINES] [LINE_BYTES] [SHARDS]
//! cargo run --release --example e2e -- 4000000 256 4     # 1 GiB of 256-byte lines
//! cargo run --release --example e2e -- 1000000 1024 4    # the 1 KiB variant
//! cargo run --release --example e2e -- --source socket --connections 4
//! cargo run --release --example e2e -- --endpoint emulator
//! cargo run --release --example e2e -- --backlog [--crash]
//! E2E_DELIVERY="max_inflight_bytes = 8388608" cargo run --release --example e2e
//! E2E_FORMAT=json cargo run --release --example e2e -- 2000000 256 4
//! ```
//!
//! `LINES` lines (default 2,000,000; 10,000,000 with `--backlog`) of `LINE_BYTES`
//! bytes (default 256, the newline included; each line starts with its number) go
//! to a stream of `SHARDS` shards (default 4).
//!
//! # Sources (`--source`)
//!
//! - `file` (default): the lines are written to a file before the agent starts; the
//!   agent tails it (`[[file]]`, `read_from = "beginning"`).
//! - `socket`: the agent listens on a Unix stream socket in `lines` framing (one
//!   record per newline-delimited line, random partition keys, no answers), and a
//!   child process started after the agent sends the lines over `--connections`
//!   connections (default 1), each a contiguous share of them, as fast as the agent
//!   reads. Lines framing is what most log shippers speak; acked frames are measured
//!   by `benches/socket.rs`.
//!
//! `E2E_FORMAT` sets the source's record `format`: `raw` (default) or `json` (each
//! line wrapped in an object with `message`, `timestamp`, `host` and `source`). CPU
//! per GiB counts the line bytes either way, so the two compare directly.
//!
//! # Endpoints (`--endpoint`)
//!
//! - `ack` (default): a minimal PutRecords endpoint that parses each request (JSON)
//!   and accepts every entry, and answers ListShards with `SHARDS` even ranges: the
//!   agent's own ceiling.
//! - `emulator`: the `ferrokinesis` Kinesis emulator (in memory, no shard limits
//!   enforced) with a stream of `SHARDS` shards created before the agent starts.
//!
//! Either runs in a child process (this program again), so its CPU is not counted.
//! The per-shard rate limit of the agent is off (`shard_rate_factor = 0`): neither
//! endpoint has shard limits.
//!
//! # Report
//!
//! The clock starts just before `Agent::start` and *delivered in* stops when the
//! agent has counted every line delivered (accepted by the endpoint); *spool empty
//! at* when the spool holds no record any more. CPU is this process's user + system
//! time from `Agent::start` to the stop, per GiB of line bytes; peak RSS is this
//! process's high-water mark (the file is written through an 8 KiB buffer before
//! the start); RSS samples are taken every 100 ms while lines are delivered; *spool
//! on disk* is the largest apparent size of the spool directory seen in those
//! samples; *first PutRecords* is when the endpoint received the first one.
//!
//! When the count of delivered lines (or, in phase 2 below, of records held) has
//! not moved for 60 s, the agent is taken for hung: every thread's backtrace is
//! printed (with gdb, when installed) and the program exits with status 3.
//!
//! # Backlog recovery (`--backlog`)
//!
//! File source and ack endpoint only. Phase 1: the real `shardline` binary (a child
//! process: `SHARDLINE_BIN`, or the one beside the `examples` directory this program
//! was built into; under `cargo run` it is built first with the same profile) tails
//! the file with its Kinesis endpoint down (a loopback port bound and closed again,
//! so connections are refused) until its spool holds every line (read from its
//! metrics endpoint), then holds them for `--hold-secs` (default 5). Reported: the
//! spool on disk (apparent and allocated bytes) vs the line bytes and vs the spool's
//! own count of entry bytes, RSS samples while filling and while holding, the fill
//! rate. The child is then stopped with SIGTERM (a clean stop: it seals its open
//! segment), or with `--crash` SIGKILLed (the next open scans the segment that was
//! open; the others are read from their footers). Phase 2: the ack
//! endpoint starts, the agent starts again in this process on the same spool and
//! file; reported: the time from `Agent::start` to its return (and the RSS then)
//! and to the first PutRecords the endpoint received, the drain rate (records/s and
//! MiB/s from the first PutRecords until the spool is empty), RSS samples while
//! draining, CPU per GiB and the time until the spool is empty.

mod common;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};

const STREAM: &str = "bench";
/// RSS, spool and progress sampling period.
const SAMPLE: Duration = Duration::from_millis(100);
/// Longest wait for the phase 1 agent to start or stop, and longest time without
/// progress (lines spooled or delivered) before the run is declared hung.
const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// Marks the endpoint's stdout line that reports its first PutRecords.
const FIRST_PUT: &str = "first-put ";

#[derive(Parser)]
#[command(about = "End-to-end benchmark of the shardline agent")]
struct Args {
    /// Lines to send [default: 2000000; 10000000 with --backlog].
    lines: Option<u64>,
    /// Bytes per line, the newline included.
    #[arg(default_value_t = 256)]
    line_bytes: usize,
    /// Shards of the stream.
    #[arg(default_value_t = 4)]
    shards: u32,
    /// Where the lines come from.
    #[arg(long, value_enum, default_value_t = SourceKind::File)]
    source: SourceKind,
    /// What receives the PutRecords requests.
    #[arg(long, value_enum, default_value_t = EndpointKind::Ack)]
    endpoint: EndpointKind,
    /// Connections the socket client sends over (--source socket).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Backlog recovery: spool every line with the endpoint down, then drain.
    #[arg(long)]
    backlog: bool,
    /// With --backlog: SIGKILL the phase 1 agent instead of stopping it cleanly.
    #[arg(long, requires = "backlog")]
    crash: bool,
    /// With --backlog: seconds the full spool is held before the agent stops.
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceKind {
    File,
    Socket,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EndpointKind {
    Ack,
    Emulator,
}

fn main() {
    // The allocator settings the binary's `main` applies.
    shardline::allocator::tune();
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    // The child processes: this program again, in another role.
    let raw: Vec<String> = std::env::args().collect();
    match raw.get(1).map(String::as_str) {
        Some("--serve-endpoint") => {
            exit_with_parent();
            return serve_endpoint(raw[2].parse().expect("shard count"));
        }
        Some("--serve-emulator") => {
            exit_with_parent();
            return serve_emulator(raw[2].parse().expect("shard count"));
        }
        Some("--send-lines") => {
            return send_lines(
                Path::new(&raw[2]),
                raw[3].parse().expect("line count"),
                raw[4].parse().expect("line size"),
                raw[5].parse().expect("connection count"),
            )
        }
        _ => {}
    }
    let args = Args::parse();
    if args.line_bytes < 16 {
        eprintln!("e2e: LINE_BYTES must be at least 16 (a line starts with its number)");
        std::process::exit(2);
    }
    if args.backlog && (args.source != SourceKind::File || args.endpoint != EndpointKind::Ack) {
        eprintln!("e2e: --backlog runs with the file source and the ack endpoint only");
        std::process::exit(2);
    }
    if args.backlog {
        backlog(&args);
    } else {
        deliver(&args);
    }
}

/// Delivers the lines once and prints the report.
fn deliver(args: &Args) {
    let lines = args.lines.unwrap_or(2_000_000);
    let line_bytes = args.line_bytes;
    let shards = args.shards;
    let endpoint = Endpoint::start(args.endpoint, shards);

    let work = tempfile::tempdir().expect("temp dir");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let socket = work.path().join("ingest.sock");
    let record_format = std::env::var("E2E_FORMAT").unwrap_or_else(|_| "raw".into());
    let source = match args.source {
        SourceKind::File => {
            write_lines(&logs.join("app.log"), lines, line_bytes);
            format!("[[file]]\ninclude = [\"{}/*.log\"]\n", logs.display())
        }
        SourceKind::Socket => format!("[[socket]]\npath = \"{}\"\n", socket.display()),
    } + &format!("format = \"{record_format}\"\n");
    let payload = lines * line_bytes as u64;
    let config = config(&endpoint.url(), work.path(), &source);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cpu_before = common::cpu_seconds("self");
    let started = Instant::now();
    let mut sender = None;
    let (elapsed, spool_peak, rss) = runtime.block_on(async {
        let agent = shardline::agent::Agent::start(config).await.expect("agent");
        if args.source == SourceKind::Socket {
            sender = Some(
                Command::new(std::env::current_exe().expect("own path"))
                    .arg("--send-lines")
                    .arg(&socket)
                    .args([
                        lines.to_string(),
                        line_bytes.to_string(),
                        args.connections.to_string(),
                    ])
                    .spawn()
                    .expect("socket client process"),
            );
        }
        let m = agent.metrics().clone();
        let mut spool_peak = 0;
        let mut rss = Vec::new();
        let mut progress = Progress::new("delivered lines");
        while m.delivered_count(STREAM) < lines {
            progress.check(m.delivered_count(STREAM));
            spool_peak = spool_peak.max(common::dir_usage(&work.path().join("spool")).0);
            rss.push(status_kib("self", "VmRSS:"));
            tokio::time::sleep(SAMPLE).await;
        }
        let elapsed = started.elapsed();
        // Until the spool is empty: the last acks are retired and flushed.
        while agent.producer().backlog().records() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        agent.stop().await.expect("stop");
        (elapsed, spool_peak, rss)
    });
    let drained = started.elapsed();
    let cpu = common::cpu_seconds("self") - cpu_before;
    if let Some(mut s) = sender {
        let status = s.wait().expect("socket client");
        assert!(status.success(), "the socket client failed: {status}");
    }
    print_samples("RSS samples     ", &rss);
    let secs = elapsed.as_secs_f64();
    println!(
        "lines            {lines} x {line_bytes} bytes ({:.0} MiB), {shards} shards",
        mib(payload)
    );
    println!(
        "source, endpoint {}, {}",
        match args.source {
            SourceKind::File => "file".to_owned(),
            SourceKind::Socket => format!(
                "socket (lines, {} connection{})",
                args.connections,
                if args.connections == 1 { "" } else { "s" }
            ),
        },
        match args.endpoint {
            EndpointKind::Ack => "ack endpoint",
            EndpointKind::Emulator => "ferrokinesis emulator",
        }
    );
    println!("record format    {record_format}");
    println!("delivered in     {secs:.2} s");
    println!("lines/s          {:.0}", lines as f64 / secs);
    println!("MiB/s            {:.1}", mib(payload) / secs);
    println!("CPU s per GiB    {:.2} (agent process)", cpu / gib(payload));
    println!(
        "peak RSS         {:.1} MiB",
        mib(status_kib("self", "VmHWM:") * 1024)
    );
    println!("spool on disk    {:.1} MiB at most", mib(spool_peak));
    println!("spool empty at   {:.2} s", drained.as_secs_f64());
    if let Some(first) = endpoint.first_put_since(started) {
        println!("first PutRecords {:.3} s", first.as_secs_f64());
    }
    endpoint.stop();
}

/// Backlog recovery (see the module docs).
fn backlog(args: &Args) {
    let lines = args.lines.unwrap_or(10_000_000);
    let line_bytes = args.line_bytes;
    let payload = lines * line_bytes as u64;
    let bin = common::agent_binary().unwrap_or_else(|e| {
        eprintln!("e2e: {e}");
        std::process::exit(2);
    });
    let work = tempfile::tempdir().expect("temp dir");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let spool_dir = work.path().join("spool");
    let source = format!("[[file]]\ninclude = [\"{}/*.log\"]\n", logs.display());
    let written = Instant::now();
    write_lines(&logs.join("app.log"), lines, line_bytes);
    println!(
        "lines            {lines} x {line_bytes} bytes ({:.0} MiB), {} shards, written in {:.1} s",
        mib(payload),
        args.shards,
        written.elapsed().as_secs_f64()
    );

    // Phase 1: endpoint down, the real binary fills its spool.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let config_path = work.path().join("phase1.toml");
    std::fs::write(
        &config_path,
        config_text(&format!("http://{down}"), work.path(), &source),
    )
    .expect("config file");
    let status_file = work.path().join("agent.status");
    let agent_log = work.path().join("agent.log");
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&config_path)
        .arg("--status-file")
        .arg(&status_file)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).expect("agent log"))
        .spawn()
        .expect("agent process");
    let pid = child.id().to_string();
    let metrics = wait_status_file(&mut child, &status_file);
    let mut fill_rss = Vec::new();
    let mut last = (0, Instant::now());
    loop {
        let held = scrape_gauge(&metrics, "shardline_spool_records").unwrap_or(0);
        fill_rss.push(status_kib(&pid, "VmRSS:"));
        if held >= lines {
            break;
        }
        if held > last.0 {
            last = (held, Instant::now());
        } else if last.1.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            panic!("the spool stopped growing at {held} of {lines} records; log: {agent_log:?}");
        }
        std::thread::sleep(SAMPLE);
    }
    let filled = started.elapsed();
    let fill_cpu = common::cpu_seconds(&pid);
    let mut hold_rss = Vec::new();
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(args.hold_secs) {
        hold_rss.push(status_kib(&pid, "VmRSS:"));
        std::thread::sleep(SAMPLE);
    }
    let spool_bytes = scrape_gauge(&metrics, "shardline_spool_bytes").unwrap_or(0);
    let (held_apparent, held_allocated) = common::dir_usage(&spool_dir);
    let fill_hwm = status_kib(&pid, "VmHWM:");
    let stopping = Instant::now();
    let signal = if args.crash { "KILL" } else { "TERM" };
    let killed = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(&pid)
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -{signal} {pid} failed");
    let exit = wait_exit(&mut child);
    let stopped = stopping.elapsed();
    let (apparent, allocated) = common::dir_usage(&spool_dir);

    println!("-- phase 1: endpoint down, the agent (child process) spools every line");
    println!(
        "spooled in       {:.2} s ({:.0} lines/s, {:.1} MiB/s), {:.2} CPU s per GiB",
        filled.as_secs_f64(),
        lines as f64 / filled.as_secs_f64(),
        mib(payload) / filled.as_secs_f64(),
        fill_cpu / gib(payload)
    );
    print_samples("RSS filling     ", &fill_rss);
    print_samples("RSS holding     ", &hold_rss);
    println!("peak RSS         {:.1} MiB", mib(fill_hwm * 1024));
    println!(
        "spool entries    {:.1} MiB ({:.3} x line bytes)",
        mib(spool_bytes),
        spool_bytes as f64 / payload as f64
    );
    for (when, a, b) in [
        ("holding", held_apparent, held_allocated),
        ("stopped", apparent, allocated),
    ] {
        println!(
            "spool on disk    {when}: {:.1} MiB apparent, {:.1} MiB allocated ({:.3} x line bytes)",
            mib(a),
            mib(b),
            b as f64 / payload as f64
        );
    }
    println!(
        "stopped by       SIG{signal} in {:.2} s ({exit})",
        stopped.as_secs_f64()
    );

    // Phase 2: the endpoint is back; the agent starts again in this process.
    let endpoint = Endpoint::start(EndpointKind::Ack, args.shards);
    let config = config(&endpoint.url(), work.path(), &source);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cpu_before = common::cpu_seconds("self");
    let started = Instant::now();
    let (opened, drain_rss, empty) = runtime.block_on(async {
        let agent = shardline::agent::Agent::start(config).await.expect("agent");
        let opened = started.elapsed();
        let mut rss = vec![status_kib("self", "VmRSS:")];
        let mut progress = Progress::new("records held");
        while agent.producer().backlog().records() > 0 {
            progress.check(agent.producer().backlog().records());
            rss.push(status_kib("self", "VmRSS:"));
            tokio::time::sleep(SAMPLE).await;
        }
        let empty = started.elapsed();
        agent.stop().await.expect("stop");
        (opened, rss, empty)
    });
    let cpu = common::cpu_seconds("self") - cpu_before;
    let first = endpoint
        .first_put_since(started)
        .expect("the endpoint received no PutRecords");
    let draining = (empty - first).as_secs_f64();
    println!(
        "-- phase 2: endpoint up, the agent (this process) restarts on the spool after {}",
        if args.crash {
            "a crash"
        } else {
            "a clean stop"
        }
    );
    println!(
        "Agent::start in  {:.3} s, RSS {:.1} MiB when it returned",
        opened.as_secs_f64(),
        drain_rss.first().copied().unwrap_or(0) as f64 / 1024.0
    );
    println!(
        "first PutRecords {:.3} s after Agent::start",
        first.as_secs_f64()
    );
    println!(
        "drain            {:.0} records/s, {:.1} MiB/s (first PutRecords to empty spool)",
        lines as f64 / draining,
        mib(payload) / draining
    );
    print_samples("RSS draining    ", &drain_rss);
    println!(
        "peak RSS         {:.1} MiB",
        mib(status_kib("self", "VmHWM:") * 1024)
    );
    println!("CPU s per GiB    {:.2} (agent process)", cpu / gib(payload));
    println!("spool empty at   {:.2} s", empty.as_secs_f64());
    endpoint.stop();
}

/// The agent's config: this benchmark's stream at `endpoint`, the spool in `work`,
/// the given source section, and the `E2E_DELIVERY` / `E2E_SPOOL` lines.
fn config_text(endpoint: &str, work: &Path, source: &str) -> String {
    format!(
        "[kinesis]\nstream = \"{STREAM}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
         [delivery]\nshard_rate_factor = 0.0\n{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [spool]\ndir = \"{}\"\n{}\n{source}",
        std::env::var("E2E_DELIVERY").unwrap_or_default(),
        work.join("spool").display(),
        std::env::var("E2E_SPOOL").unwrap_or_default(),
    )
}

fn config(endpoint: &str, work: &Path, source: &str) -> shardline::config::Config {
    shardline::config::parse(&config_text(endpoint, work, source), "e2e.toml".as_ref())
        .expect("config")
}

/// Writes line `i`'s number at the start of `line` (its `x`s and newline stay).
fn fill_line(line: &mut [u8], i: u64) {
    let head = format!("{i:012} ");
    line[..head.len()].copy_from_slice(head.as_bytes());
}

fn new_line(line_bytes: usize) -> Vec<u8> {
    let mut line = vec![b'x'; line_bytes];
    *line.last_mut().expect("line_bytes > 0") = b'\n';
    line
}

fn write_lines(path: &Path, lines: u64, line_bytes: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("log file"));
    let mut line = new_line(line_bytes);
    for i in 0..lines {
        fill_line(&mut line, i);
        f.write_all(&line).expect("write");
    }
    f.flush().expect("flush");
}

/// The socket client: sends `lines` lines over `connections` connections, each a
/// contiguous share, in writes of about 64 KiB.
fn send_lines(socket: &Path, lines: u64, line_bytes: usize, connections: usize) {
    let connections = connections.max(1) as u64;
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let socket = socket.to_owned();
            std::thread::spawn(move || {
                let mut stream =
                    std::os::unix::net::UnixStream::connect(&socket).expect("connect to the agent");
                let per_write = (64 << 10) / line_bytes as u64 + 1;
                let mut buf = new_line(line_bytes).repeat(per_write as usize);
                let (from, to) = (lines * c / connections, lines * (c + 1) / connections);
                let mut i = from;
                while i < to {
                    let n = per_write.min(to - i);
                    for (k, line) in buf.chunks_mut(line_bytes).take(n as usize).enumerate() {
                        fill_line(line, i + k as u64);
                    }
                    stream
                        .write_all(&buf[..n as usize * line_bytes])
                        .expect("send lines");
                    i += n;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender thread");
    }
}

/// The endpoint child process and what its stdout reports.
struct Endpoint {
    child: Child,
    addr: String,
    /// Unix nanoseconds of the first PutRecords received; 0 before it.
    first_put_ns: Arc<AtomicU64>,
}

impl Endpoint {
    fn start(kind: EndpointKind, shards: u32) -> Endpoint {
        let role = match kind {
            EndpointKind::Ack => "--serve-endpoint",
            EndpointKind::Emulator => "--serve-emulator",
        };
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args([role, &shards.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("endpoint process");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut addr = String::new();
        out.read_line(&mut addr).expect("endpoint address");
        let first_put_ns = Arc::new(AtomicU64::new(0));
        let first = first_put_ns.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(ns) = line.strip_prefix(FIRST_PUT) {
                    first.store(ns.parse().unwrap_or(0), Ordering::Release);
                }
            }
        });
        Endpoint {
            child,
            addr: addr.trim().to_owned(),
            first_put_ns,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// When the endpoint received its first PutRecords, relative to `since` (an
    /// `Instant` taken in this process); `None` if it has not yet.
    fn first_put_since(&self, since: Instant) -> Option<Duration> {
        // The report line may trail the request: wait for it briefly.
        let deadline = Instant::now() + Duration::from_secs(1);
        let ns = loop {
            match self.first_put_ns.load(Ordering::Acquire) {
                0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                0 => return None,
                ns => break ns,
            }
        };
        let since_ns = unix_ns() - since.elapsed().as_nanos() as u64;
        Some(Duration::from_nanos(ns.saturating_sub(since_ns)))
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// An endpoint process ends when its parent does (its stdin, a pipe from the
/// parent, closes), also when the parent exits without stopping it.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
}

/// Prints `first-put <unix ns>` on stdout for the first PutRecords request.
async fn note_first_put(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    static FIRST: std::sync::Once = std::sync::Once::new();
    let is_put = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.ends_with(".PutRecords"));
    if is_put {
        FIRST.call_once(|| println!("{FIRST_PUT}{}", unix_ns()));
    }
    next.run(request).await
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
            .layer(axum::middleware::from_fn(note_first_put))
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
        axum::serve(listener, app).await.expect("serve");
    });
}

/// The ferrokinesis emulator with the benchmark's stream of `shards` shards; prints
/// its address once the stream is active.
fn serve_emulator(shards: u32) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let served = common::emulator::start(
            ferrokinesis::store::StoreOptions {
                create_stream_ms: 0,
                shard_limit: shards.max(10),
                ..Default::default()
            },
            |app| app.layer(axum::middleware::from_fn(note_first_put)),
        )
        .await;
        let addr = served.addr;
        let client =
            common::emulator::client(&served.endpoint, Some(Duration::from_secs(30))).await;
        client
            .create_stream()
            .stream_name(STREAM)
            .shard_count(shards as i32)
            .send()
            .await
            .expect("CreateStream");
        loop {
            let summary = client
                .describe_stream_summary()
                .stream_name(STREAM)
                .send()
                .await
                .expect("DescribeStreamSummary");
            let status = summary
                .stream_description_summary()
                .map(|s| s.stream_status().clone());
            if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("{addr}");
        served.task.await.expect("server task");
    });
}

/// Ends the benchmark when a count stops moving: the agent hangs.
struct Progress {
    what: &'static str,
    last: (u64, Instant),
}

impl Progress {
    fn new(what: &'static str) -> Progress {
        Progress {
            what,
            last: (u64::MAX, Instant::now()),
        }
    }

    fn check(&mut self, now: u64) {
        if now != self.last.0 {
            self.last = (now, Instant::now());
        } else if self.last.1.elapsed() > CHILD_LIMIT {
            // Not a panic: dropping the runtime would wait for the hung spool threads.
            eprintln!(
                "e2e: {} stuck at {now} for {CHILD_LIMIT:?}: the agent hangs",
                self.what
            );
            common::print_backtraces();
            std::process::exit(3);
        }
    }
}

/// Waits for the child agent's status file; returns its metrics address.
fn wait_status_file(child: &mut Child, path: &Path) -> std::net::SocketAddr {
    let deadline = Instant::now() + CHILD_LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(f) = serde_json::from_str::<shardline::agent::StatusFile>(&text) {
                if f.pid == child.id() {
                    return f.metrics_addr;
                }
            }
        }
        if let Ok(Some(exit)) = child.try_wait() {
            panic!("the agent exited with {exit} before starting");
        }
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + CHILD_LIMIT;
    loop {
        if let Some(exit) = child.try_wait().expect("wait for the agent") {
            return exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not stop within {CHILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A gauge without labels from the agent's `/metrics`.
fn scrape_gauge(addr: &std::net::SocketAddr, name: &str) -> Option<u64> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Prints the median and maximum of RSS samples (KiB).
fn print_samples(label: &str, samples: &[u64]) {
    let mut s = samples.to_vec();
    s.sort_unstable();
    if let Some(max) = s.last() {
        println!(
            "{label} median {:.1} MiB, max {:.1} MiB ({} samples)",
            s[s.len() / 2] as f64 / 1024.0,
            *max as f64 / 1024.0,
            s.len()
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// A `kB` field of /proc/PID/status (`self` or a pid); 0 once the process is gone.
fn status_kib(pid: &str, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}
