//! Socket ingest through the framed protocol with acks: 256-byte records in
//! requests of 1,000, each acknowledged once durable in the spool (group commit),
//! over one and over eight client connections, into the real agent with its sled
//! spool at default durability. Kinesis is unreachable (a closed loopback port), so
//! this measures ingest alone; records/s and MiB/s are reported by criterion.
//!
//! ```text
//! cargo bench --bench socket
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardline::agent::Agent;
use shardline::testkit::frame::{self, Record, Request, Response, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const RECORD_BYTES: usize = 256;
const PER_REQUEST: usize = 1000;

fn agent(dir: &Path) -> Agent {
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let text = format!(
        "[kinesis]\nstream = \"bench\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n[[socket]]\npath = \"{}\"\nframing = \"frames\"\n",
        dir.join("spool").display(),
        dir.join("in.sock").display()
    );
    let config = shardline::config::parse(&text, "bench.toml".as_ref()).expect("bench config");
    futures_block(Agent::start(config)).expect("agent starts")
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
}

/// One client: sends `requests` pipelined requests and waits for every ack.
async fn client(path: &Path, requests: u64, payload: Bytes) {
    let stream = UnixStream::connect(path).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut acked = 0;
        while acked < requests {
            while let Some(r) = frame::decode::<Response>(&mut buf).expect("valid answer") {
                assert_eq!(r.status, Status::Ok as i32, "{}", r.message);
                acked += 1;
            }
            if acked < requests && rd.read_buf(&mut buf).await.expect("read") == 0 {
                panic!("agent closed the connection");
            }
        }
    });
    let records: Vec<Record> = (0..PER_REQUEST)
        .map(|i| Record {
            partition_key: format!("key-{i}"),
            explicit_hash_key: None,
            data: payload.clone(),
            record_id: None,
        })
        .collect();
    let mut out = BytesMut::new();
    for id in 0..requests {
        out.clear();
        frame::encode(
            &Request {
                id,
                records: records.clone(),
                ack: true,
                stream: None,
            },
            &mut out,
        );
        wr.write_all(&out).await.expect("write");
    }
    reader.await.expect("reader");
}

fn socket_bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = agent(dir.path());
    let sock = dir.path().join("in.sock");
    let payload = Bytes::from(vec![b'x'; RECORD_BYTES]);
    let mut group = c.benchmark_group("socket_frames_acked");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for connections in [1u64, 8] {
        group.throughput(Throughput::Elements(PER_REQUEST as u64));
        group.bench_function(BenchmarkId::new("connections", connections), |b| {
            b.iter_custom(|iters| {
                let per_client = iters.div_ceil(connections);
                let start = Instant::now();
                futures_block(async {
                    let tasks: Vec<_> = (0..connections)
                        .map(|_| {
                            let (sock, payload) = (sock.clone(), payload.clone());
                            tokio::spawn(async move { client(&sock, per_client, payload).await })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("client");
                    }
                });
                // Per request of 1,000 records.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_client * connections) as f64)
            })
        });
    }
    group.finish();
    futures_block(agent.stop()).expect("agent stops");
}

criterion_group!(benches, socket_bench);
criterion_main!(benches);
