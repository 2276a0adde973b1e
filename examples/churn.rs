//! Spool churn: sustained write-and-delete through the spool alone, to show whether
//! the spool directory stays bounded (delivered segments are removed) or grows with
//! what was ever written, and what the spool costs per byte.
//!
//! ```text
//! cargo run --release --example churn                     # one hour at 5 MiB/s, compressed
//! cargo run --release --example churn -- --gib 4 --cache-mib 8 --flush-ms 1000
//! ```
//!
//! What a busy host writes in an hour (`--gib`, default 17.58: 5 MiB/s for 3,600 s)
//! is written as fast as the spool takes it. Like the file source, each entry is a
//! batch of `--entry-kib` (64) of `--record-bytes` (256) records under one random
//! 16-character partition key, appended with a checkpoint in the same atomic write
//! (`StreamSpool::append_with_checkpoint`).
//!
//! - **Steady state**: entries are appended whole (handed over in memory, as while
//!   delivery keeps up) and retired oldest first, 1 MiB of entries per `retire`
//!   (about one PutRecords result), so that `--lag-mib` (16) of entries stay live.
//! - **Backlog bursts**: every `--burst-every-gib` (2) of payload, delivery stops:
//!   `--burst-mib` (256) are appended as entries that wait
//!   (`append_with_checkpoint(.., true)`), then everything
//!   live is read back with `StreamSpool::read_from` in 4 MiB steps and retired, as
//!   the dispatcher does when it catches up.
//!
//! Every 64 MiB of payload the directory is measured; every `--sample-gib` (1) a line
//! is printed: payload written, live entry bytes, the directory's apparent and
//! allocated bytes, the spool's own count of its files (`size_on_disk`), RSS, and
//! bytes written to disk so far
//! (`write_bytes` of /proc/self/io). The end report gives the largest and the final
//! directory size, bytes written to disk per payload byte, CPU seconds per GiB of
//! payload and peak RSS.
//!
//! **The bound.** The run fails (exit status 1) if the directory ever exceeds
//! `--bound-mib`, by default the most live entry bytes (lag plus a burst) plus two
//! segments (`--segment-mib`, 64) and 16 MiB for ack files and the index: live data,
//! the open segment and one being removed. It also fails if the directory keeps
//! growing: if the least-squares slope of its allocated size over the second half
//! of the measurements exceeds `--max-growth` MiB per GiB written (default 1, i.e.
//! 0.1 % of what passes through). A plateau has a slope near 0 (the bursts make it
//! jump and fall back); a directory that keeps what it has cleaned has a steady
//! positive slope, and would exceed any fixed bound in a longer run.
//!
//! A spool call that does not return for 60 s ends the run with exit status 3 (a
//! hang), after printing every thread's backtrace with gdb when it is installed.
//!
//! At the end the spool is drained, closed (`Spool::close`) and reopened, and the
//! directory is measured after each step: what a restart gives back.
//!
//! `--minutes M` ends the run after M minutes if `--gib` is not written by then.
//!
//! `--writers N` runs N−1 more writers the same way, each on its own stream, until
//! the first is done: a stress of concurrent writers against the one commit thread
//! (the bound is then N times the live data and two segments).
//!
//! **The knobs.** `--segment-mib` is `spool.segment_bytes` (default 64 MiB),
//! `--flush-ms` is `spool.flush_interval_ms` (default 200), `--cache-mib` the
//! index's `spool.cache_capacity_bytes` (default 4 MiB).

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use shardline::testkit::{Checkpoint, Spool, StreamSpool};
use shardline::SpoolOptions;
use shardline::UserRecord;

const STREAM: &str = "churn";
/// A spool call that has not returned for this long is taken for a hang: the
/// run stops with exit status 3.
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Payload between two measurements of the directory.
const MEASURE_EVERY: u64 = 64 << 20;
/// Entry bytes retired per `retire` call in steady state: about one PutRecords
/// result.
const RETIRE_BYTES: u64 = 1 << 20;
/// Bytes read back per `read_from` while a backlog is drained.
const READ_BYTES: u64 = 4 << 20;

#[derive(Parser)]
#[command(about = "Sustained write-and-delete through the spool")]
struct Args {
    /// Payload (record data) to write, in GiB [default: 5 MiB/s for an hour].
    #[arg(long, default_value_t = 17.58)]
    gib: f64,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 256)]
    record_bytes: usize,
    /// Data bytes per entry (one batch), in KiB.
    #[arg(long, default_value_t = 64)]
    entry_kib: usize,
    /// Entry bytes kept live in steady state (appended, not yet retired), in MiB.
    #[arg(long, default_value_t = 16)]
    lag_mib: u64,
    /// Payload between two backlog bursts, in GiB; 0: no bursts.
    #[arg(long, default_value_t = 2.0)]
    burst_every_gib: f64,
    /// Payload of a backlog burst, in MiB.
    #[arg(long, default_value_t = 256)]
    burst_mib: u64,
    /// Payload between two printed samples, in GiB.
    #[arg(long, default_value_t = 1.0)]
    sample_gib: f64,
    /// The spool index's page cache (spool.cache_capacity_bytes), in MiB.
    #[arg(long, default_value_t = 4)]
    cache_mib: u64,
    /// Writers, each on a stream of its own: the first is measured and printed,
    /// the others churn the same way beside it until it is done (a stress of
    /// concurrent writers against one commit thread).
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Segment file size (spool.segment_bytes), in MiB.
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// Group commit interval (spool.flush_interval_ms).
    #[arg(long, default_value_t = 200)]
    flush_ms: u64,
    /// Largest allowed directory size, in MiB [default: most live + 2 segments + 16].
    #[arg(long)]
    bound_mib: Option<u64>,
    /// Largest allowed growth of the directory over the second half of the run,
    /// in MiB per GiB written.
    #[arg(long, default_value_t = 1.0)]
    max_growth: f64,
    /// Parent of the spool directory [default: the system's temp directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Stop after this many minutes even if `--gib` is not written yet (a stress
    /// run of a fixed length).
    #[arg(long)]
    minutes: Option<f64>,
}

/// Live entries, oldest first: (id, bytes).
type Live = std::collections::VecDeque<(u64, u64)>;

/// One writer: it owns its stream of the spool, the entries it has live (appended,
/// not retired yet) and its own figures. `main` drives the measured one
/// (`Churn::first`); `spawn_others` runs the others (`Churn::beside`) in threads.
struct Churn {
    stream: StreamSpool,
    spool: Spool,
    dir: PathBuf,
    records: Vec<UserRecord>,
    checkpoint: Checkpoint,
    live: Live,
    live_bytes: u64,
    /// Largest `live_bytes` seen.
    live_peak: u64,
    /// Record data written.
    payload: u64,
    /// Spool calls made so far, for the stall watchdog.
    calls: Arc<AtomicU64>,
    /// (payload, directory allocated bytes) of every measurement.
    measured: Vec<(u64, u64)>,
    rss: Vec<u64>,
}

impl Churn {
    /// Opens the spool with `options` and the measured writer's stream in it,
    /// and starts the stall watchdog its calls feed.
    fn first(args: &Args, options: &SpoolOptions) -> Churn {
        let spool = Spool::open(options).expect("open the spool");
        let stream = spool.stream(STREAM).expect("stream");
        let per_entry = ((args.entry_kib << 10) / args.record_bytes.max(1)).max(1);
        let data = Bytes::from(vec![b'x'; args.record_bytes]);
        let records: Vec<UserRecord> = (0..per_entry)
            .map(|_| UserRecord::new("0000000000000000", data.clone()))
            .collect();
        Churn {
            stream,
            spool,
            dir: options.dir.clone().expect("the options name a directory"),
            records,
            checkpoint: Checkpoint {
                name: b"file/churn".to_vec(),
                value: Vec::new(),
            },
            live: Live::new(),
            live_bytes: 0,
            live_peak: 0,
            payload: 0,
            calls: watchdog(),
            measured: Vec::new(),
            rss: Vec::new(),
        }
    }

    /// Another writer on the same spool, on `stream`, feeding the same watchdog.
    fn beside(&self, stream: &str) -> Churn {
        Churn {
            stream: self.spool.stream(stream).expect("stream"),
            spool: self.spool.clone(),
            dir: self.dir.clone(),
            records: self.records.clone(),
            checkpoint: self.checkpoint.clone(),
            live: Live::new(),
            live_bytes: 0,
            live_peak: 0,
            payload: 0,
            calls: self.calls.clone(),
            measured: Vec::new(),
            rss: Vec::new(),
        }
    }

    /// A backlog burst: `bytes` of payload appended as entries that wait, then
    /// everything live read back and retired.
    fn burst(&mut self, bytes: u64) {
        let until = self.payload + bytes;
        while self.payload < until {
            self.append(true);
        }
        self.drain();
    }

    /// Appends one entry; `waits`: as a backlog entry (chunked).
    fn append(&mut self, waits: bool) {
        let position = self.payload.to_be_bytes();
        self.checkpoint.value.clear();
        self.checkpoint.value.extend_from_slice(&position);
        let partition_key = shardline::record::random_partition_key();
        for r in &mut self.records {
            r.partition_key.clone_from(&partition_key);
        }
        // A full spool (here: the disk behind the writer) is waited out, as the
        // agent's sources wait.
        let (id, bytes) = loop {
            match self
                .stream
                .append_with_checkpoint(&self.records, Some(&self.checkpoint), waits)
            {
                Ok(written) => break written,
                Err(e) if e.is_full() => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(e) => panic!("append: {e}"),
            }
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.live.push_back((id, bytes));
        self.live_bytes += bytes;
        self.live_peak = self.live_peak.max(self.live_bytes);
        let before = self.payload;
        self.payload += self
            .records
            .iter()
            .map(|r| r.data.len() as u64)
            .sum::<u64>();
        if before / MEASURE_EVERY != self.payload / MEASURE_EVERY {
            self.measured
                .push((self.payload, common::dir_usage(&self.dir).1));
            self.rss.push(status_kib("VmRSS:"));
        }
    }

    /// Retires the oldest entries, `RETIRE_BYTES` at a time, down to `keep` live
    /// bytes.
    fn retire_down_to(&mut self, keep: u64) {
        while self.live_bytes > keep + RETIRE_BYTES {
            let mut done = Vec::new();
            let mut bytes = 0;
            while bytes < RETIRE_BYTES {
                let Some(e) = self.live.pop_front() else {
                    break;
                };
                bytes += e.1;
                done.push(e);
            }
            self.retire(&done);
        }
    }

    fn retire(&mut self, done: &[(u64, u64)]) {
        let records = (done.len() * self.records.len()) as u64;
        self.stream.retire(done, &[], records).expect("retire");
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.live_bytes -= done.iter().map(|e| e.1).sum::<u64>();
    }

    /// Reads every live entry back and retires it, `READ_BYTES` at a time.
    fn drain(&mut self) {
        while let Some(&(first, _)) = self.live.front() {
            let (entries, _) = self
                .stream
                .read_from(first, READ_BYTES, |_| false)
                .expect("read_from");
            assert!(!entries.is_empty(), "live entry {first} not found");
            let done: Vec<(u64, u64)> = entries.iter().map(|e| (e.id, e.bytes)).collect();
            for &(id, _) in &done {
                let front = self.live.pop_front().expect("read entries are live");
                assert_eq!(front.0, id, "entries read back out of order");
            }
            self.retire(&done);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&parent).expect("temp dir");
    let options = SpoolOptions {
        dir: Some(work.path().join("spool")),
        max_bytes: u64::MAX / 2,
        flush_interval_ms: args.flush_ms,
        cache_capacity_bytes: args.cache_mib << 20,
        segment_bytes: args.segment_mib << 20,
        min_free_bytes: 0,
    };
    let mut c = Churn::first(&args, &options);
    print_header(&args);
    let io_before = write_bytes();
    let cpu_before = common::cpu_seconds("self");
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let others = spawn_others(&args, &c, &stop);
    run_first(&args, &mut c, started, io_before);
    stop.store(true, Ordering::Relaxed);
    let others_payload: u64 = others
        .into_iter()
        .map(|t| t.join().expect("writer thread"))
        .sum();
    let max = c.measured.iter().map(|m| m.1).max().unwrap_or(0);
    let end = End {
        elapsed: started.elapsed().as_secs_f64(),
        cpu: common::cpu_seconds("self") - cpu_before,
        written: write_bytes() - io_before,
        at_end: common::dir_usage(&c.dir).1,
        max,
        growth: slope(&c.measured[c.measured.len() / 2..]),
        bound: args.bound_mib.map_or(
            args.writers as u64 * (c.live_peak + 2 * (args.segment_mib << 20)) + (16 << 20),
            |m| m << 20,
        ),
        others_payload,
    };
    let restart = restart(c, &options);
    report(&args, &end, &restart)
}

fn print_header(args: &Args) {
    println!(
        "churn: {:.2} GiB of {}-byte records in {} KiB entries, lag {} MiB, \
         bursts of {} MiB every {} GiB, cache {} MiB, flush every {} ms",
        args.gib,
        args.record_bytes,
        args.entry_kib,
        args.lag_mib,
        args.burst_mib,
        args.burst_every_gib,
        args.cache_mib,
        args.flush_ms,
    );
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "GiB", "live MiB", "dir MiB", "alloc MiB", "files MiB", "RSS MiB", "disk GiB", "secs"
    );
}

/// Payload between two backlog bursts; 0: no bursts.
fn burst_every(args: &Args) -> u64 {
    (args.burst_every_gib * (1u64 << 30) as f64) as u64
}

/// Starts the `--writers` beyond the first, each on a stream of its own, until
/// `stop`; each returns the payload it wrote.
fn spawn_others(
    args: &Args,
    c: &Churn,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<u64>> {
    let burst_every = burst_every(args);
    let lag = args.lag_mib << 20;
    (1..args.writers)
        .map(|i| {
            let mut w = c.beside(&format!("{STREAM}-{i}"));
            let (stop, burst_mib) = (stop.clone(), args.burst_mib);
            std::thread::spawn(move || {
                let mut next_burst = burst_every.max(1);
                while !stop.load(Ordering::Relaxed) {
                    if burst_every > 0 && w.payload >= next_burst {
                        w.burst(burst_mib << 20);
                        next_burst += burst_every;
                    }
                    w.append(false);
                    w.retire_down_to(lag);
                }
                w.drain();
                w.payload
            })
        })
        .collect()
}

/// The measured writer: churns until `--gib` is written or `--minutes` are up,
/// printing a sample line every `--sample-gib`.
fn run_first(args: &Args, c: &mut Churn, started: Instant, io_before: u64) {
    let total = (args.gib * (1u64 << 30) as f64) as u64;
    let burst_every = burst_every(args);
    let sample_every = ((args.sample_gib * (1u64 << 30) as f64) as u64).max(1);
    let mut next_burst = if burst_every > 0 {
        burst_every
    } else {
        u64::MAX
    };
    let mut next_sample = sample_every;
    let lag = args.lag_mib << 20;
    let deadline = args
        .minutes
        .map(|m| started + std::time::Duration::from_secs_f64(m * 60.0));
    let out_of_time = || deadline.is_some_and(|d| Instant::now() >= d);
    while c.payload < total && !out_of_time() {
        if c.payload >= next_burst {
            c.burst(args.burst_mib << 20);
            next_burst += burst_every;
        }
        c.append(false);
        c.retire_down_to(lag);
        if c.payload >= next_sample || c.payload >= total || out_of_time() {
            print_sample(c, started, io_before);
            next_sample += sample_every;
        }
    }
}

fn print_sample(c: &Churn, started: Instant, io_before: u64) {
    let (apparent, allocated) = common::dir_usage(&c.dir);
    println!(
        "{:>8.2} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>8.1} {:>10.2} {:>8.1}",
        gib(c.payload),
        mib(c.live_bytes),
        mib(apparent),
        mib(allocated),
        mib(c.spool.size_on_disk().unwrap_or(0)),
        status_kib("VmRSS:") as f64 / 1024.0,
        gib(write_bytes() - io_before),
        started.elapsed().as_secs_f64()
    );
}

/// The figures of the run, taken when the writers stopped.
struct End {
    elapsed: f64,
    cpu: f64,
    /// Bytes written to disk.
    written: u64,
    /// The directory's allocated bytes at the end, and at most.
    at_end: u64,
    max: u64,
    /// MiB per GiB over the second half.
    growth: f64,
    /// The largest allowed directory size.
    bound: u64,
    /// Payload of the other writers.
    others_payload: u64,
}

/// What a restart gives back, and the measured writer's own figures.
struct Restart {
    /// The directory's allocated bytes after the drain, the close and the reopen.
    drained: u64,
    closed: u64,
    reopened: u64,
    rss: Vec<u64>,
    payload: u64,
    live_peak: u64,
}

/// Drains the measured writer's stream, closes the spool and reopens it,
/// measuring the directory after each step.
fn restart(mut c: Churn, options: &SpoolOptions) -> Restart {
    c.drain();
    let (_, drained) = common::dir_usage(&c.dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(c.spool.close()).expect("close the spool");
    let Churn {
        stream,
        spool,
        dir,
        rss,
        payload,
        live_peak,
        ..
    } = c;
    drop((stream, spool));
    let (_, closed) = common::dir_usage(&dir);
    let reopened = {
        let spool = Spool::open(options).expect("reopen the spool");
        runtime.block_on(spool.flush()).expect("flush");
        common::dir_usage(&dir).1
    };
    Restart {
        drained,
        closed,
        reopened,
        rss,
        payload,
        live_peak,
    }
}

/// Prints the end report and the verdict.
fn report(args: &Args, e: &End, r: &Restart) -> ExitCode {
    let (payload, elapsed, growth) = (r.payload, e.elapsed, e.growth);
    let mut rss = r.rss.clone();
    rss.sort_unstable();
    println!(
        "payload          {:.2} GiB in {elapsed:.1} s ({:.1} MiB/s)",
        gib(payload),
        mib(payload) / elapsed
    );
    if args.writers > 1 {
        println!(
            "other writers    {} wrote {:.2} GiB beside it (not in the figures per GiB)",
            args.writers - 1,
            gib(e.others_payload)
        );
    }
    println!("live entries     {:.1} MiB at most", mib(r.live_peak));
    println!(
        "directory        {:.1} MiB at most, {:.1} MiB at the end (allocated)",
        mib(e.max),
        mib(e.at_end)
    );
    println!("growth           {growth:.2} MiB per GiB written over the second half");
    println!(
        "restart          drained {:.1} MiB, closed {:.1} MiB, reopened {:.1} MiB",
        mib(r.drained),
        mib(r.closed),
        mib(r.reopened)
    );
    println!(
        "written to disk  {:.2} GiB, {:.2} bytes per payload byte",
        gib(e.written),
        e.written as f64 / payload as f64
    );
    println!("CPU s per GiB    {:.2}", e.cpu / gib(payload));
    println!(
        "RSS              median {:.1} MiB, peak {:.1} MiB",
        rss.get(rss.len() / 2).copied().unwrap_or(0) as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0
    );
    let bounded = e.max <= e.bound;
    let level = growth <= args.max_growth;
    println!(
        "verdict          {} ({:.1} of {} MiB), {} ({growth:.2} of {} MiB per GiB)",
        if bounded {
            "within the bound"
        } else {
            "over the bound"
        },
        mib(e.max),
        e.bound >> 20,
        if level { "level" } else { "still growing" },
        args.max_growth
    );
    if bounded && level {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts a thread that ends the process (status 3) when the returned counter
/// has not moved for [`STALL_LIMIT`].
fn watchdog() -> Arc<AtomicU64> {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    std::thread::spawn(move || {
        let mut last = (0, Instant::now());
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let now = seen.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL_LIMIT {
                eprintln!(
                    "churn: no spool call returned for {} s: the spool hangs",
                    STALL_LIMIT.as_secs()
                );
                common::print_backtraces();
                println!("verdict          hung");
                std::process::exit(3);
            }
        }
    });
    calls
}

/// Least-squares slope of the directory size over payload, in MiB per GiB.
fn slope(points: &[(u64, u64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let xs: Vec<f64> = points.iter().map(|p| gib(p.0)).collect();
    let ys: Vec<f64> = points.iter().map(|p| mib(p.1)).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Bytes this process caused to be written to storage (/proc/self/io).
fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A `kB` field of /proc/self/status.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}
