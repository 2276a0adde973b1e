//! Tail throughput into the spool: the real agent (file source thread, producer,
//! sled spool with its default durability) tails one file of 256-byte lines, and the
//! time from the file's appearance in the watched directory to the last line being
//! in the spool is measured. Kinesis is a stub whose ListShards always fails, so
//! nothing is sent and nothing leaves the spool: the figure is the file-to-spool
//! path alone, not delivery.
//!
//! `cat_ceiling` runs `cat FILE > /dev/null` on the same file in the same run: the
//! read ceiling of the machine (the file is in the page cache for both).
//!
//! ```text
//! cargo bench --bench tail
//! ```
//!
//! Besides criterion's figures it prints a summary line per case with MiB/s and
//! lines/s (median of a few extra runs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardline::aggregate::Encoded;
use shardline::testkit::Shard;
use shardline::testkit::{BoxFuture, EntryResult, ErrorCode, Kinesis, KinesisError};

/// Bytes of one line, newline included.
const LINE_BYTES: usize = 256;
/// Size of the tailed file.
const FILE_BYTES: usize = 256 << 20;

/// Never lists a shard, so nothing is ever sent.
struct Unreachable;

impl Kinesis for Unreachable {
    fn list_shards<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        Box::pin(async move {
            Err(KinesisError {
                operation: "ListShards",
                code: ErrorCode::Transport,
                message: "benchmark: no Kinesis".into(),
            })
        })
    }

    fn put_records<'a>(
        &'a self,
        _: &'a str,
        _: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        Box::pin(std::future::pending())
    }
}

/// Writes the file of 256-byte lines (each one distinct) once.
fn make_file(dir: &Path) -> PathBuf {
    let path = dir.join("source.log");
    let mut data = Vec::with_capacity(FILE_BYTES);
    let mut i = 0u64;
    while data.len() + LINE_BYTES <= FILE_BYTES {
        let head = format!("2024-05-01T12:00:00.000Z INFO line={i:010} ");
        data.extend_from_slice(head.as_bytes());
        data.extend(std::iter::repeat_n(b'x', LINE_BYTES - 1 - head.len()));
        data.push(b'\n');
        i += 1;
    }
    std::fs::write(&path, data).expect("write the source file");
    path
}

fn lines() -> u64 {
    (FILE_BYTES / LINE_BYTES) as u64
}

/// One run: an agent tailing an empty directory; the file is hard-linked in and the
/// clock runs until every line is spooled.
fn tail_once(rt: &tokio::runtime::Runtime, source: &Path) -> Duration {
    let work = tempfile::tempdir().expect("temp dir");
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let text = format!(
        "shutdown_timeout_secs = 1\n[kinesis]\nstream = \"bench\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n[[file]]\ninclude = [\"{}/*.log\"]\n",
        work.path().join("spool").display(),
        logs.display()
    );
    let config = shardline::config::parse(&text, "bench.toml".as_ref()).expect("bench config");
    let agent = rt
        .block_on(shardline::testkit::start_agent(
            config,
            Arc::new(Unreachable),
        ))
        .expect("agent starts");
    // Let the file source start and watch the directory.
    std::thread::sleep(Duration::from_millis(300));
    let metrics = agent.metrics().clone();
    let start = Instant::now();
    std::fs::hard_link(source, logs.join("app.log")).expect("link the file in");
    // Read as a scrape would, every millisecond: a negligible cost beside the
    // tailer's, and a millisecond of resolution on a run of seconds.
    while metrics.read("shardline_records_spooled_total", &[("source", "file")]) < lines() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    rt.block_on(agent.stop()).expect("agent stops");
    elapsed
}

fn cat_once(source: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("cat")
        .arg(source)
        .stdout(Stdio::from(
            std::fs::File::create("/dev/null").expect("/dev/null"),
        ))
        .status()
        .expect("cat runs");
    assert!(status.success());
    start.elapsed()
}

fn report(name: &str, mut runs: Vec<Duration>) {
    runs.sort();
    let median = runs[runs.len() / 2].as_secs_f64();
    println!(
        "summary {name}: {:.0} MiB/s, {:.0} lines/s ({} MiB of {LINE_BYTES}-byte lines, median of {} runs, {:.3} s)",
        FILE_BYTES as f64 / (1 << 20) as f64 / median,
        lines() as f64 / median,
        FILE_BYTES >> 20,
        runs.len(),
        median
    );
}

fn tail_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let source = make_file(dir.path());
    // Into the page cache.
    cat_once(&source);

    let mut group = c.benchmark_group("tail");
    group.throughput(Throughput::Bytes(FILE_BYTES as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("into_spool_256_byte_lines", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| tail_once(&rt, &source)).sum())
    });
    group.bench_function("cat_ceiling", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| cat_once(&source)).sum())
    });
    group.finish();

    report(
        "tail into spool",
        (0..3).map(|_| tail_once(&rt, &source)).collect(),
    );
    report(
        "cat > /dev/null",
        (0..5).map(|_| cat_once(&source)).collect(),
    );
}

criterion_group!(benches, tail_bench);
criterion_main!(benches);
