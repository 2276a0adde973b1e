//! `--backlog`: backlog recovery (see the program's docs). Phase 1 ([`Fill`]): the
//! real binary, a [`ChildAgent`], spools every line with the endpoint down and is
//! stopped; phase 2 ([`Drain`]): the agent starts again in this process on the
//! same spool and drains it into the ack endpoint. Each phase owns its figures
//! and prints them. `main` calls [`run`].

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::child::ChildAgent;
use crate::cli::{Args, EndpointKind};
use crate::common;
use crate::config::{config, config_text};
use crate::endpoint::Endpoint;
use crate::lines::write_lines;
use crate::measure::{gib, mib, print_samples, status_kib, Progress, SAMPLE};

/// Backlog recovery (see the program's docs).
pub(crate) fn run(args: &Args) {
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
    let source = format!("[[file]]\ninclude = [\"{}/*.log\"]\n", logs.display());
    let written = Instant::now();
    write_lines(&logs.join("app.log"), lines, line_bytes);
    println!(
        "lines            {lines} x {line_bytes} bytes ({:.0} MiB), {} shards, written in {:.1} s",
        mib(payload),
        args.shards,
        written.elapsed().as_secs_f64()
    );
    Fill::run(args, &bin, work.path(), &source, lines).print(lines, payload);
    Drain::run(args, work.path(), &source).print(args, lines, payload);
}

/// Phase 1: endpoint down, the real binary fills its spool, holds it, stops.
struct Fill {
    /// From the child's start until its spool held every line.
    filled: Duration,
    /// The child's CPU seconds until then.
    cpu: f64,
    /// RSS samples (KiB) while filling and while holding.
    fill_rss: Vec<u64>,
    hold_rss: Vec<u64>,
    /// The spool's own count of entry bytes.
    spool_bytes: u64,
    /// The spool directory's apparent and allocated bytes, holding and stopped.
    held: (u64, u64),
    stopped_usage: (u64, u64),
    /// The child's VmHWM (KiB) before the stop.
    hwm: u64,
    signal: &'static str,
    stopped: Duration,
    exit: ExitStatus,
}

impl Fill {
    fn run(args: &Args, bin: &Path, work: &Path, source: &str, lines: u64) -> Fill {
        let spool_dir = work.join("spool");
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let config_path = work.join("phase1.toml");
        std::fs::write(
            &config_path,
            config_text(args.destination, &format!("http://{down}"), work, source),
        )
        .expect("config file");
        let started = Instant::now();
        let mut agent = ChildAgent::start(bin, &config_path, work);
        let fill_rss = agent.wait_spooled(lines);
        let filled = started.elapsed();
        let cpu = agent.cpu_seconds();
        let mut hold_rss = Vec::new();
        let hold = Instant::now();
        while hold.elapsed() < Duration::from_secs(args.hold_secs) {
            hold_rss.push(agent.status_kib("VmRSS:"));
            std::thread::sleep(SAMPLE);
        }
        let spool_bytes = agent.gauge("shardline_spool_bytes").unwrap_or(0);
        let held = common::dir_usage(&spool_dir);
        let hwm = agent.status_kib("VmHWM:");
        let stopping = Instant::now();
        let signal = if args.crash { "KILL" } else { "TERM" };
        let exit = agent.stop(signal);
        let stopped = stopping.elapsed();
        Fill {
            filled,
            cpu,
            fill_rss,
            hold_rss,
            spool_bytes,
            held,
            stopped_usage: common::dir_usage(&spool_dir),
            hwm,
            signal,
            stopped,
            exit,
        }
    }

    fn print(&self, lines: u64, payload: u64) {
        println!("-- phase 1: endpoint down, the agent (child process) spools every line");
        println!(
            "spooled in       {:.2} s ({:.0} lines/s, {:.1} MiB/s), {:.2} CPU s per GiB",
            self.filled.as_secs_f64(),
            lines as f64 / self.filled.as_secs_f64(),
            mib(payload) / self.filled.as_secs_f64(),
            self.cpu / gib(payload)
        );
        print_samples("RSS filling     ", &self.fill_rss);
        print_samples("RSS holding     ", &self.hold_rss);
        println!("peak RSS         {:.1} MiB", mib(self.hwm * 1024));
        println!(
            "spool entries    {:.1} MiB ({:.3} x line bytes)",
            mib(self.spool_bytes),
            self.spool_bytes as f64 / payload as f64
        );
        for (when, (a, b)) in [("holding", self.held), ("stopped", self.stopped_usage)] {
            println!(
                "spool on disk    {when}: {:.1} MiB apparent, {:.1} MiB allocated ({:.3} x line bytes)",
                mib(a),
                mib(b),
                b as f64 / payload as f64
            );
        }
        println!(
            "stopped by       SIG{} in {:.2} s ({})",
            self.signal,
            self.stopped.as_secs_f64(),
            self.exit
        );
    }
}

/// Phase 2: the endpoint is back; the agent starts again in this process.
struct Drain {
    /// From `Agent::start` until it returned.
    opened: Duration,
    /// RSS samples (KiB), the first when `Agent::start` returned.
    rss: Vec<u64>,
    /// From `Agent::start` until the spool was empty.
    empty: Duration,
    /// This process's CPU seconds from `Agent::start` until after the stop.
    cpu: f64,
    /// From `Agent::start` until the endpoint's first PutRecords.
    first: Duration,
}

impl Drain {
    fn run(args: &Args, work: &Path, source: &str) -> Drain {
        let endpoint = Endpoint::start(EndpointKind::Ack, args.destination, args.shards);
        let config = config(args.destination, &endpoint.url(), work, source);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let cpu_before = common::cpu_seconds("self");
        let started = Instant::now();
        let (opened, rss, empty) = runtime.block_on(restart(config, started));
        let cpu = common::cpu_seconds("self") - cpu_before;
        let first = endpoint
            .first_put_since(started)
            .expect("the endpoint received no PutRecords");
        endpoint.stop();
        Drain {
            opened,
            rss,
            empty,
            cpu,
            first,
        }
    }

    fn print(&self, args: &Args, lines: u64, payload: u64) {
        let draining = (self.empty - self.first).as_secs_f64();
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
            self.opened.as_secs_f64(),
            self.rss.first().copied().unwrap_or(0) as f64 / 1024.0
        );
        println!(
            "first PutRecords {:.3} s after Agent::start",
            self.first.as_secs_f64()
        );
        println!(
            "drain            {:.0} records/s, {:.1} MiB/s (first PutRecords to empty spool)",
            lines as f64 / draining,
            mib(payload) / draining
        );
        print_samples("RSS draining    ", &self.rss);
        println!(
            "peak RSS         {:.1} MiB",
            mib(status_kib("self", "VmHWM:") * 1024)
        );
        println!(
            "CPU s per GiB    {:.2} (agent process)",
            self.cpu / gib(payload)
        );
        println!("spool empty at   {:.2} s", self.empty.as_secs_f64());
    }
}

/// Starts the agent on the full spool and waits until it is empty; returns the
/// time `Agent::start` took, the RSS samples and the time until empty.
async fn restart(
    config: shardline::config::Config,
    started: Instant,
) -> (Duration, Vec<u64>, Duration) {
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
}
