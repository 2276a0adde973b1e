//! Delivery throughput against a Kinesis emulator (ferrokinesis, in-process on
//! 127.0.0.1) with 1, 10 and 100 shards: 256-byte records put through the
//! `Producer` (batches of 500, sled spool) until every receipt resolves. Criterion
//! reports user records per second; after each case the bench prints PutRecords
//! requests per second and bytes per request (how full aggregates and batches are).
//! The emulator enforces no shard limits here, so the per-shard rate limit is off.
//!
//! ```text
//! cargo bench --bench delivery
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardline::producer::{Producer, ProducerOptions};
use shardline::UserRecord;

#[path = "../examples/common/emulator.rs"]
mod emulator;

const RECORD_BYTES: usize = 256;
const BATCH: usize = 500;

async fn emulator(shards: i32) -> String {
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let served = emulator::start(
        ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            shard_limit: 1000,
            ..Default::default()
        },
        |app| app,
    )
    .await;
    let endpoint = served.endpoint.clone();
    let client = emulator::client(&endpoint, None).await;
    client
        .create_stream()
        .stream_name("bench")
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    endpoint
}

fn options(endpoint: &str, dir: &std::path::Path) -> ProducerOptions {
    let text = format!(
        "[kinesis]\nstream = \"bench\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
         [delivery]\nrate_limit_percent = 0\n[spool]\ndir = \"{}\"\n[[socket]]\npath = \"/unused\"\n",
        dir.display()
    );
    let config = shardline::config::parse(&text, "bench.toml".as_ref()).expect("bench config");
    ProducerOptions::from_config(&config)
}

fn delivery_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("delivery_emulator");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));
    for shards in [1, 10, 100] {
        let endpoint = rt.block_on(emulator(shards));
        let dir = tempfile::tempdir().expect("temp dir");
        let producer = rt
            .block_on(Producer::start(options(&endpoint, dir.path())))
            .expect("producer");
        let payload = Bytes::from(vec![b'x'; RECORD_BYTES]);
        // Warm-up and measurement both count: rates are over the whole run.
        let wall = Instant::now();
        group.bench_function(BenchmarkId::new("shards", shards), |b| {
            b.iter_custom(|iters| {
                let records: Vec<UserRecord> = (0..iters)
                    .map(|i| {
                        UserRecord::new(format!("key-{i}-{}", fastrand::u64(..)), payload.clone())
                    })
                    .collect();
                let start = Instant::now();
                rt.block_on(async {
                    let mut receipts = Vec::new();
                    let mut records = records.into_iter().peekable();
                    while records.peek().is_some() {
                        let batch: Vec<UserRecord> = records.by_ref().take(BATCH).collect();
                        receipts.push(producer.put_batch(batch).await.expect("put"));
                    }
                    producer.flush();
                    for r in receipts {
                        r.delivered().await.expect("delivered");
                    }
                });
                start.elapsed()
            })
        });
        let m = producer.metrics();
        let requests = m.read(
            "shardline_put_records_requests_total",
            &[("stream", "bench")],
        );
        let bytes = m.read("shardline_put_records_bytes_total", &[("stream", "bench")]);
        println!(
            "delivery_emulator/shards/{shards}: {:.0} PutRecords/s, {:.0} bytes per request, {} user records",
            requests as f64 / wall.elapsed().as_secs_f64(),
            bytes as f64 / requests.max(1) as f64,
            m.delivered_count("bench")
        );
        rt.block_on(producer.shutdown()).expect("shutdown");
    }
    group.finish();
}

criterion_group!(benches, delivery_bench);
criterion_main!(benches);
