//! The endpoint, in a child process (this program again, in another role, so its
//! CPU is not the agent's). [`Endpoint`] is the parent's handle: it owns the child,
//! the time of the first PutRecords (or PutRecordBatch) the child reported on its
//! stdout and, for the Firehose endpoint, the lines and records it reported
//! accepted; `deliver` and `backlog` start and stop it. [`serve_endpoint`] and
//! [`serve_emulator`] are the child's side of Kinesis, called by `main` for the
//! `--serve-endpoint` and `--serve-emulator` roles; `firehose` serves
//! `--serve-firehose`.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cli::{DestinationKind, EndpointKind};
use crate::common;
use crate::config::STREAM;

/// Marks the endpoint's stdout line that reports its first PutRecords.
const FIRST_PUT: &str = "first-put ";
/// Marks the Firehose endpoint's stdout line that reports the lines and the
/// records it accepted so far: `arrived <lines> <records>`.
pub(crate) const ARRIVED: &str = "arrived ";

/// Lines and Firehose records the Firehose endpoint accepted, as reported.
#[derive(Default)]
struct Arrived {
    lines: AtomicU64,
    records: AtomicU64,
}

/// The endpoint child process and what its stdout reports.
pub(crate) struct Endpoint {
    child: Child,
    addr: String,
    /// Unix nanoseconds of the first PutRecords received; 0 before it.
    first_put_ns: Arc<AtomicU64>,
    /// What the Firehose endpoint accepted (stays 0 for Kinesis).
    arrived: Arc<Arrived>,
}

impl Endpoint {
    /// Starts the child of `kind` for `destination` (a Kinesis stream of
    /// `shards` shards, or a Firehose stream, always the ack endpoint); returns
    /// once it serves.
    pub(crate) fn start(kind: EndpointKind, destination: DestinationKind, shards: u32) -> Endpoint {
        let role = match (destination, kind) {
            (DestinationKind::Firehose, _) => "--serve-firehose",
            (DestinationKind::Kinesis, EndpointKind::Ack) => "--serve-endpoint",
            (DestinationKind::Kinesis, EndpointKind::Emulator) => "--serve-emulator",
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
        let arrived = Arc::new(Arrived::default());
        let (first, counts) = (first_put_ns.clone(), arrived.clone());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(ns) = line.strip_prefix(FIRST_PUT) {
                    first.store(ns.parse().unwrap_or(0), Ordering::Release);
                } else if let Some(rest) = line.strip_prefix(ARRIVED) {
                    let mut n = rest.split(' ').map(|v| v.parse().unwrap_or(0));
                    let (lines, records) = (n.next().unwrap_or(0), n.next().unwrap_or(0));
                    // Reports of concurrent requests may come out of order.
                    counts.lines.fetch_max(lines, Ordering::AcqRel);
                    counts.records.fetch_max(records, Ordering::AcqRel);
                }
            }
        });
        Endpoint {
            child,
            addr: addr.trim().to_owned(),
            first_put_ns,
            arrived,
        }
    }

    /// Lines and Firehose records the Firehose endpoint reported accepted.
    pub(crate) fn arrived(&self) -> (u64, u64) {
        (
            self.arrived.lines.load(Ordering::Acquire),
            self.arrived.records.load(Ordering::Acquire),
        )
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// When the endpoint received its first PutRecords, relative to `since` (an
    /// `Instant` taken in this process); `None` if it has not yet.
    pub(crate) fn first_put_since(&self, since: Instant) -> Option<Duration> {
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

    pub(crate) fn stop(mut self) {
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
pub(crate) fn exit_with_parent() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
}

/// Prints `first-put <unix ns>` on stdout for the first PutRecords (or
/// PutRecordBatch) request.
pub(crate) async fn note_first_put(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    static FIRST: std::sync::Once = std::sync::Once::new();
    let is_put = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.ends_with(".PutRecords") || t.ends_with(".PutRecordBatch"));
    if is_put {
        FIRST.call_once(|| println!("{FIRST_PUT}{}", unix_ns()));
    }
    next.run(request).await
}

/// A PutRecords endpoint that parses each request and accepts every entry.
pub(crate) fn serve_endpoint(shards: u32) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .fallback(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    let target = headers
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let reply = if target.ends_with(".ListShards") {
                        list_shards_reply(shards)
                    } else {
                        put_records_reply(&body)
                    };
                    (
                        [("content-type", "application/x-amz-json-1.1")],
                        serde_json::to_vec(&reply).expect("json"),
                    )
                },
            )
            .layer(axum::middleware::from_fn(note_first_put))
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
        axum::serve(listener, app).await.expect("serve");
    });
}

/// ListShards: `shards` even hash key ranges.
fn list_shards_reply(shards: u32) -> serde_json::Value {
    let step = u128::MAX / shards as u128;
    let list: Vec<_> = (0..shards as u128)
        .map(|i| {
            let end = if i + 1 == shards as u128 {
                u128::MAX
            } else {
                (i + 1) * step - 1
            };
            serde_json::json!({
                "ShardId": format!("shardId-{i:012}"),
                "HashKeyRange": {"StartingHashKey": (i * step).to_string(), "EndingHashKey": end.to_string()},
                "SequenceNumberRange": {"StartingSequenceNumber": "1"}
            })
        })
        .collect();
    serde_json::json!({ "Shards": list })
}

/// PutRecords: every entry of the request accepted.
fn put_records_reply(body: &[u8]) -> serde_json::Value {
    let req: serde_json::Value = serde_json::from_slice(body).expect("json");
    let n = req["Records"].as_array().map_or(0, |r| r.len());
    let records: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"SequenceNumber": i.to_string(), "ShardId": ""}))
        .collect();
    serde_json::json!({"FailedRecordCount": 0, "Records": records})
}

/// The ferrokinesis emulator with the benchmark's stream of `shards` shards; prints
/// its address once the stream is active.
pub(crate) fn serve_emulator(shards: u32) {
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
        wait_active(&client).await;
        println!("{addr}");
        served.task.await.expect("server task");
    });
}

/// Waits until the benchmark's stream is active.
async fn wait_active(client: &aws_sdk_kinesis::Client) {
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
}
