//! The producer benchmark, op for op against the Go kinesis-producer's
//! `BenchmarkProducer`: records built before timing (a random 36-character UUID
//! partition key, 1024 bytes of data), two producer threads, default settings, and a
//! Kinesis client that accepts every entry (the one place a stub is right: it
//! isolates the producer's own cost). Timing covers the puts and the final flush
//! (every record acknowledged).
//!
//! Cases: `default_producer` (one shard, one aggregator), `10_shard_count`,
//! `500_shard_count`, and both shard counts `_using_explicit_hash_key`, where record
//! i's explicit hash key is the starting hash key of shard i % N. Each runs twice:
//! `memory` (the pipeline alone, no spool) and `disk` (with the spool's segment files
//! in the path, group commit included).
//! Puts go in batches of 64 records (`put_batch`, what one socket read produces);
//! `single_put` measures one record per `put`.
//!
//! `md5_floor` hashes the same bytes on two threads: MD5 of every aggregate is
//! required by the format, so the `md-5` crate's one-message-at-a-time figure is
//! the floor of a producer that hashes its aggregates one by one.
//! `md5_floor/…_in_lanes` hashes eight of them at once in vector lanes, as
//! delivery does (`digest`).
//!
//! ```text
//! cargo bench --bench producer
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use md5::{Digest, Md5};
use shardline::aggregate::Encoded;
use shardline::config::Config;
use shardline::producer::ProducerOptions;
use shardline::testkit::digests;
use shardline::testkit::Shard;
use shardline::testkit::{BoxFuture, EntryResult, Kinesis, KinesisError};
use shardline::UserRecord;

const DATA_BYTES: usize = 1024;
const THREADS: usize = 2;
const BATCH: usize = 64;

/// Accepts everything; lists `n` shards splitting the hash key space evenly.
struct AcceptAll {
    shards: Vec<Shard>,
}

impl AcceptAll {
    fn new(n: u128) -> AcceptAll {
        let step = u128::MAX / n;
        let shards = (0..n)
            .map(|i| Shard {
                id: format!("shardId-{i:012}").into(),
                start: i * step,
                end: if i == n - 1 {
                    u128::MAX
                } else {
                    (i + 1) * step - 1
                },
            })
            .collect();
        AcceptAll { shards }
    }
}

impl Kinesis for AcceptAll {
    fn list_shards<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        Box::pin(async move { Ok(self.shards.clone()) })
    }

    fn put_records<'a>(
        &'a self,
        _: &'a str,
        entries: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        Box::pin(async move {
            Ok(entries
                .iter()
                .map(|_| EntryResult::Accepted {
                    shard_id: String::new(),
                })
                .collect())
        })
    }
}

fn uuid() -> String {
    let a = fastrand::u128(..);
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn records(n: u64, explicit: Option<&AcceptAll>, data: &Bytes) -> Vec<UserRecord> {
    (0..n as usize)
        .map(|i| UserRecord {
            partition_key: uuid(),
            explicit_hash_key: explicit.map(|k| k.shards[i % k.shards.len()].start),
            data: data.clone(),
        })
        .collect()
}

fn options(spool: Option<&std::path::Path>) -> ProducerOptions {
    let text = r#"
        [kinesis]
        stream = "bench"
        [spool]
        dir = "/unused"
        [[socket]]
        path = "/unused.sock"
    "#;
    let config: Config =
        shardline::config::parse(text, "bench.toml".as_ref()).expect("bench config");
    let mut o = ProducerOptions::from_config(&config);
    o.spool.dir = spool.map(|p| p.to_owned());
    o.dead_letter_path = None;
    // The stub has no shard limits to stay under.
    o.delivery.shard_rate_factor = 0.0;
    o
}

/// Runs one timed pass: two threads put `records`, then wait for every receipt.
fn timed(
    rt: &tokio::runtime::Runtime,
    shards: u128,
    explicit: bool,
    on_disk: bool,
    batch: usize,
    iters: u64,
) -> Duration {
    let kinesis = Arc::new(AcceptAll::new(shards));
    let data = Bytes::from(vec![b'x'; DATA_BYTES]);
    let all = records(iters, explicit.then_some(&*kinesis), &data);
    let dir = tempfile::tempdir().expect("temp dir");
    let producer = rt
        .block_on(shardline::testkit::start_producer(
            options(on_disk.then_some(dir.path())),
            kinesis.clone(),
        ))
        .expect("producer starts");
    // Warm up: the shard map is loaded and the pipeline is running. Flushed, not
    // left to its linger: criterion sizes the samples by the wall time of whole
    // calls, set-up included, and 100 ms of linger per call made it take
    // samples of a few hundred records, where the pipeline's start and final
    // flush, not its throughput, decide the time per record.
    rt.block_on(async {
        let receipt = producer
            .put(UserRecord::new("warm-up", data.clone()))
            .await
            .unwrap();
        producer.flush();
        receipt.delivered().await.unwrap();
    });
    let mut halves: Vec<Vec<UserRecord>> = Vec::new();
    let per = all.len().div_ceil(THREADS);
    let mut all = all;
    while !all.is_empty() {
        let rest = all.split_off(per.min(all.len()));
        halves.push(std::mem::replace(&mut all, rest));
    }
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for half in halves {
            let p = producer.clone();
            tasks.push(tokio::spawn(async move {
                let mut receipts = Vec::new();
                let mut half = half.into_iter().peekable();
                while half.peek().is_some() {
                    let chunk: Vec<UserRecord> = half.by_ref().take(batch).collect();
                    receipts.push(p.put_batch(chunk).await.unwrap());
                }
                receipts
            }));
        }
        let mut receipts = Vec::new();
        for t in tasks {
            receipts.extend(t.await.unwrap());
        }
        // The final flush: partial aggregates go now, not after their linger.
        producer.flush();
        for r in receipts {
            r.delivered().await.unwrap();
        }
    });
    let elapsed = start.elapsed();
    rt.block_on(producer.shutdown()).unwrap();
    elapsed
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()
        .expect("runtime")
}

fn producer_bench(c: &mut Criterion) {
    let rt = runtime();
    let cases: [(&str, u128, bool); 5] = [
        ("default_producer", 1, false),
        ("10_shard_count", 10, false),
        ("500_shard_count", 500, false),
        ("10_shard_count_using_explicit_hash_key", 10, true),
        ("500_shard_count_using_explicit_hash_key", 500, true),
    ];
    for spool in ["memory", "disk"] {
        let mut group = c.benchmark_group(format!("producer/{spool}"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(4));
        for (name, shards, explicit) in cases {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| timed(&rt, shards, explicit, spool == "disk", BATCH, iters))
            });
        }
        group.bench_function(
            BenchmarkId::from_parameter("10_shard_count_single_put"),
            |b| b.iter_custom(|iters| timed(&rt, 10, false, spool == "disk", 1, iters)),
        );
        group.finish();
    }
}

/// MD5 of 1024 bytes per op, on two threads: the floor.
fn md5_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("md5_floor");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("1024_bytes_2_threads", |b| {
        b.iter_custom(|iters| {
            let data = vec![b'x'; DATA_BYTES];
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        for _ in 0..iters.div_ceil(THREADS as u64) {
                            std::hint::black_box(Md5::digest(std::hint::black_box(&data)));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    // The same bytes through `digest::digests`, eight aggregates of
    // 50 KiB at a time (what a PutRecords request's worker hashes): MD5 is no
    // floor once independent messages share the vector lanes.
    group.bench_function("1024_bytes_2_threads_in_lanes", |b| {
        b.iter_custom(|iters| {
            const PER_AGGREGATE: u64 = 50;
            let data = vec![b'x'; DATA_BYTES * PER_AGGREGATE as usize];
            let batch: Vec<&[u8]> = vec![data.as_slice(); 8];
            let calls = iters.div_ceil(THREADS as u64 * 8 * PER_AGGREGATE);
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        for _ in 0..calls {
                            std::hint::black_box(digests(std::hint::black_box(&batch)));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

/// The spool alone, for the same bytes on the same two threads: each thread appends
/// batches of 64 records (one entry each, as `put_batch` writes them) and retires
/// them a few entries behind, as delivery does. The floor of the `disk` cases.
fn spool_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("spool_floor");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("1024_bytes_2_threads", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let spool = shardline::testkit::Spool::open(&options(Some(dir.path())).spool)
                .expect("spool opens");
            let data = Bytes::from(vec![b'x'; DATA_BYTES]);
            let batch = records(BATCH as u64, None, &data);
            let entries = iters.div_ceil((BATCH * THREADS) as u64);
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let stream = spool.stream(&format!("s{t}")).expect("stream");
                    let batch = &batch;
                    s.spawn(move || {
                        let mut live = std::collections::VecDeque::new();
                        for _ in 0..entries {
                            // A writer ahead of the group commit waits for it.
                            let written = loop {
                                match stream.append(batch) {
                                    Ok(w) => break w,
                                    Err(e) if e.is_full() => std::thread::yield_now(),
                                    Err(e) => panic!("append: {e}"),
                                }
                            };
                            live.push_back(written);
                            if live.len() >= 16 {
                                let done: Vec<(u64, u64)> = live.drain(..8).collect();
                                stream.retire(&done, &[], 8 * BATCH as u64).expect("retire");
                            }
                        }
                        let done: Vec<(u64, u64)> = live.drain(..).collect();
                        stream.retire(&done, &[], 0).expect("retire");
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, md5_floor, spool_floor, producer_bench);
criterion_main!(benches);
