//! The default run: the agent in this process delivers the lines once, from a file
//! or from the socket client, to the endpoint, and the report is printed. `main`
//! calls [`run`]; [`Delivered`] owns what was measured while the agent ran. A run
//! ends when every line was delivered: counted by the agent for a Kinesis stream,
//! by the endpoint (lines in the records it accepted) for a Firehose stream.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::cli::{Args, DestinationKind, EndpointKind, SourceKind};
use crate::common;
use crate::config::{config, STREAM};
use crate::endpoint::Endpoint;
use crate::lines::write_lines;
use crate::measure::{gib, mib, print_samples, status_kib, Progress, SAMPLE};

/// The socket source's path in the work directory.
const SOCKET: &str = "ingest.sock";

/// What was measured while the agent delivered.
struct Delivered {
    /// From `Agent::start` until every line was counted delivered.
    elapsed: Duration,
    /// The spool directory's largest apparent size seen.
    spool_peak: u64,
    /// RSS samples (KiB).
    rss: Vec<u64>,
    /// The socket client process (`--source socket`).
    sender: Option<Child>,
    /// Lines and Firehose records the Firehose endpoint accepted, at the end.
    arrived: (u64, u64),
}

/// Delivers the lines once and prints the report.
pub(crate) fn run(args: &Args) {
    let lines = args.lines.unwrap_or(2_000_000);
    let endpoint = Endpoint::start(args.endpoint, args.destination, args.shards);
    let work = tempfile::tempdir().expect("temp dir");
    // A parse table makes the records json.
    let record_format = match std::env::var("E2E_PARSE") {
        Ok(p) if !p.is_empty() => "json".to_owned(),
        _ => std::env::var("E2E_FORMAT").unwrap_or_else(|_| "raw".into()),
    };
    let source = source_section(args, work.path(), lines, &record_format);
    let config = config(args.destination, &endpoint.url(), work.path(), &source);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cpu_before = common::cpu_seconds("self");
    let started = Instant::now();
    let mut delivered = runtime.block_on(deliver(
        config,
        args,
        &endpoint,
        lines,
        work.path(),
        started,
    ));
    let drained = started.elapsed();
    let cpu = common::cpu_seconds("self") - cpu_before;
    delivered.arrived = endpoint.arrived();
    if let Some(mut s) = delivered.sender.take() {
        let status = s.wait().expect("socket client");
        assert!(status.success(), "the socket client failed: {status}");
    }
    print_report(args, lines, &record_format, &delivered, cpu, drained);
    if let Some(first) = endpoint.first_put_since(started) {
        println!("first PutRecords {:.3} s", first.as_secs_f64());
    }
    endpoint.stop();
}

/// The source section of the config; for the file source, the file is written
/// first.
fn source_section(args: &Args, work: &Path, lines: u64, record_format: &str) -> String {
    let socket = work.join(SOCKET);
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let (section, table) = match args.source {
        SourceKind::File => {
            write_lines(&logs.join("app.log"), lines, args.line_bytes);
            let include = format!("[[file]]\ninclude = [\"{}/*.log\"]\n", logs.display());
            (include, "file")
        }
        SourceKind::Socket => {
            let path = format!("[[socket]]\npath = \"{}\"\n", socket.display());
            (path, "socket")
        }
    };
    // `E2E_SOURCE` lines (e.g. `record_id = true`) go to the source block.
    let extra = std::env::var("E2E_SOURCE").unwrap_or_default();
    let section = section + &format!("format = \"{record_format}\"\n{extra}\n");
    match std::env::var("E2E_PARSE") {
        Ok(preset) if !preset.is_empty() => {
            section + &format!("[{table}.parse]\npreset = \"{preset}\"\ntime_key = \"time\"\n")
        }
        _ => section,
    }
}

/// Starts the agent (and the socket client), samples until every line is
/// delivered, waits for the spool to empty and stops the agent; times count
/// from `started`, taken just before.
async fn deliver(
    config: shardline::config::Config,
    args: &Args,
    endpoint: &Endpoint,
    lines: u64,
    work: &Path,
    started: Instant,
) -> Delivered {
    let socket = work.join(SOCKET);
    let agent = shardline::agent::Agent::start(config).await.expect("agent");
    let sender = (args.source == SourceKind::Socket).then(|| {
        Command::new(std::env::current_exe().expect("own path"))
            .arg("--send-lines")
            .arg(&socket)
            .args([
                lines.to_string(),
                args.line_bytes.to_string(),
                args.connections.to_string(),
            ])
            .spawn()
            .expect("socket client process")
    });
    let m = agent.metrics().clone();
    let delivered = || match args.destination {
        DestinationKind::Kinesis => m.delivered_count(STREAM),
        DestinationKind::Firehose => endpoint.arrived().0,
    };
    let mut spool_peak = 0;
    let mut rss = Vec::new();
    let mut progress = Progress::new("delivered lines");
    while delivered() < lines {
        progress.check(delivered());
        spool_peak = spool_peak.max(common::dir_usage(&work.join("spool")).0);
        rss.push(status_kib("self", "VmRSS:"));
        tokio::time::sleep(SAMPLE).await;
    }
    let elapsed = started.elapsed();
    // Until the spool is empty: the last acks are retired and flushed.
    while agent.producer().backlog().records() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.stop().await.expect("stop");
    Delivered {
        elapsed,
        spool_peak,
        rss,
        sender,
        arrived: (0, 0),
    }
}

fn print_report(
    args: &Args,
    lines: u64,
    record_format: &str,
    d: &Delivered,
    cpu: f64,
    drained: Duration,
) {
    let (line_bytes, shards) = (args.line_bytes, args.shards);
    let payload = lines * line_bytes as u64;
    print_samples("RSS samples     ", &d.rss);
    let secs = d.elapsed.as_secs_f64();
    let stream = match args.destination {
        DestinationKind::Kinesis => format!("{shards} shards"),
        DestinationKind::Firehose => "a Firehose stream".to_owned(),
    };
    println!(
        "lines            {lines} x {line_bytes} bytes ({:.0} MiB), {stream}",
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
        match (args.destination, args.endpoint) {
            (DestinationKind::Firehose, _) => "Firehose ack endpoint",
            (_, EndpointKind::Ack) => "ack endpoint",
            (_, EndpointKind::Emulator) => "ferrokinesis emulator",
        }
    );
    let parse = match std::env::var("E2E_PARSE") {
        Ok(p) if !p.is_empty() => format!(", parsed ({p})"),
        _ => String::new(),
    };
    let kind = if crate::lines::apache() {
        ", Apache combined lines"
    } else {
        ""
    };
    println!("record format    {record_format}{parse}{kind}");
    println!("delivered in     {secs:.2} s");
    println!("lines/s          {:.0}", lines as f64 / secs);
    println!("MiB/s            {:.1}", mib(payload) / secs);
    println!("CPU s per GiB    {:.2} (agent process)", cpu / gib(payload));
    println!(
        "peak RSS         {:.1} MiB",
        mib(status_kib("self", "VmHWM:") * 1024)
    );
    println!("spool on disk    {:.1} MiB at most", mib(d.spool_peak));
    println!("spool empty at   {:.2} s", drained.as_secs_f64());
    if args.destination == DestinationKind::Firehose {
        let (arrived, records) = d.arrived;
        println!(
            "Firehose records {records} sent, {:.0} lines per record ({arrived} lines at the endpoint)",
            arrived as f64 / records.max(1) as f64
        );
    }
}
