//! Delivery under pressure: throttling, outages, injected faults and reshards, on
//! the emulator (with its shard limits enforced where it matters) and the fault
//! layer in front of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::util::{
    all_shards, check_shards_and_collect, collect_with_placement, config, create_stream,
    socket_toml, start_agent, wait_active, wait_for, Emulator, ShardInfo, Workdir,
};

/// Writes `lines_per_sec` lines of `line_bytes` bytes for `secs` seconds, in ticks
/// of 100 ms; returns what was written.
async fn feed(
    path: PathBuf,
    tag: &'static str,
    lines_per_sec: usize,
    line_bytes: usize,
    secs: f64,
) -> Vec<Bytes> {
    let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
    let per_tick = (lines_per_sec / 10).max(1);
    let ticks = (secs * 10.0) as usize;
    let mut sent = Vec::with_capacity(per_tick * ticks);
    let start = tokio::time::Instant::now();
    for t in 0..ticks {
        let mut buf = Vec::with_capacity(per_tick * (line_bytes + 1));
        for _ in 0..per_tick {
            let head = format!("{tag}-{:09}-", sent.len());
            let mut line = head.into_bytes();
            line.resize(line_bytes, b'.');
            buf.extend_from_slice(&line);
            buf.push(b'\n');
            sent.push(Bytes::from(line));
        }
        s.write_all(&buf).await.unwrap();
        tokio::time::sleep_until(start + Duration::from_millis(100 * (t as u64 + 1))).await;
    }
    s.shutdown().await.unwrap();
    sent
}

/// Counts each record in the stream; fails on a record never sent or one missing.
/// Returns the number of duplicate deliveries.
fn exactly_or_duplicated(sent: &[Bytes], got: &[Bytes]) -> u64 {
    let mut count: HashMap<&Bytes, u64> = HashMap::new();
    for g in got {
        *count.entry(g).or_default() += 1;
    }
    let mut missing = 0;
    for s in sent {
        if !count.contains_key(s) {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        0,
        "{missing} of {} records never arrived",
        sent.len()
    );
    assert_eq!(
        count.len(),
        sent.len(),
        "records arrived that were never sent"
    );
    count.values().map(|c| c - 1).sum()
}

fn throttle_feed_secs() -> f64 {
    std::env::var("SHARDLINE_THROTTLE_FEED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0)
}

/// One shard with the emulator's write limits enforced, fed at three times its
/// capacity: every record arrives once, and while the shard is saturated the agent
/// paces its requests instead of spinning (with its own per-shard rate limit, it
/// is not even throttled).
/// `SHARDLINE_THROTTLE_FEED_SECS=60 cargo test --test main sustained_throttling`
/// runs the full minute of overload (20 s by default, to keep the suite short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_throttling_loses_nothing_and_does_not_spin() {
    overload(throttle_feed_secs(), None).await;
}

/// The same overload with the agent's rate limit off: Kinesis (the emulator)
/// throttles, and per-shard backoff alone keeps the request rate bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_without_the_rate_limit_backoff_bounds_the_requests() {
    overload(8.0, Some(0.0)).await;
}

async fn overload(secs: f64, shard_rate_factor: Option<f64>) {
    let emu = Emulator::start_with(ferrokinesis::store::StoreOptions {
        create_stream_ms: 0,
        enforce_limits: true,
        shard_limit: 100,
        ..Default::default()
    })
    .await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let mut c = config(&work, &emu.endpoint, "logs", &socket_toml(&sock, None));
    if let Some(f) = shard_rate_factor {
        c.delivery.shard_rate_factor = f;
    }
    let agent = start_agent(c).await;
    let started = Instant::now();
    // 3 MiB/s of 256-byte lines: three times a shard's 1 MiB/s.
    let sent = feed(sock.clone(), "thr", 12_288, 256, secs).await;
    let m = agent.metrics().clone();
    let n = sent.len() as u64;
    wait_for(
        "every throttled record delivered",
        Duration::from_secs_f64(secs * 4.0 + 120.0),
        || m.delivered_count("logs") >= n,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = emu.faults.put_records.load(Ordering::Relaxed);
    let per_sec = requests as f64 / elapsed;
    let retried = m.read("shardline_records_retried_total", &[("stream", "logs")]);
    println!(
        "throttling (rate factor {shard_rate_factor:?}): {n} records in {elapsed:.1} s, \
         {requests} PutRecords ({per_sec:.1}/s), {retried} records retried"
    );
    // The bucket allows ~16 aggregates of 50 KiB a second; throttled retries back
    // off from 100 ms. A spinning loop would make thousands.
    assert!(per_sec < 50.0, "{per_sec:.1} PutRecords/s while throttled");
    // It took as long as the shard's limit demands, no less.
    assert!(
        elapsed > secs * 3.0 * 0.9,
        "{elapsed:.1} s for {secs} s of 3x load"
    );
    if shard_rate_factor == Some(0.0) {
        assert!(
            retried > 0,
            "the emulator never throttled: the test proves nothing"
        );
    }
    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0);
    let (_, got) = check_shards_and_collect(&client, "logs").await;
    assert_eq!(exactly_or_duplicated(&sent, &got), 0);
}

/// The endpoint goes away for 30 s under load and comes back: nothing is lost and
/// the spool drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_loses_nothing() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        &socket_toml(&sock, None),
    ))
    .await;
    let feeder = tokio::spawn(feed(sock.clone(), "out", 2_000, 128, 40.0));
    tokio::time::sleep(Duration::from_secs(5)).await;
    emu.faults.outage.store(true, Ordering::Release);
    let m = agent.metrics().clone();
    let during = m.delivered_count("logs");
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Nothing got through while the endpoint was gone (an in-flight request at
    // most).
    assert!(m.delivered_count("logs") <= during + 10_000);
    emu.faults.outage.store(false, Ordering::Release);
    let sent = feeder.await.unwrap();
    let n = sent.len() as u64;
    wait_for(
        "delivery after the outage",
        Duration::from_secs(120),
        || m.delivered_count("logs") >= n,
    )
    .await;
    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0, "spool not drained");
    let (_, got) = check_shards_and_collect(&client, "logs").await;
    assert_eq!(exactly_or_duplicated(&sent, &got), 0);
}

/// Whole-request 500s, cut connections, throttled entries and results naming the
/// wrong shard: every record arrives, and every duplicate is one the agent sent
/// again on purpose (an aggregate reported in a shard whose range does not hold it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_are_retried_and_duplicates_are_explained() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    emu.faults.fail_requests.store(5, Ordering::Release);
    emu.faults.reset_requests.store(3, Ordering::Release);
    emu.faults.throttle_entries.store(40, Ordering::Release);
    emu.faults.wrong_shard.store(4, Ordering::Release);
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let extra = format!("{}\n", socket_toml(&sock, None));
    let mut c = config(&work, &emu.endpoint, "logs", &extra);
    // Small aggregates: many requests, so every fault is met.
    c.delivery.aggregation.max_bytes = 8 * 1024;
    let agent = start_agent(c).await;
    let sent = feed(sock.clone(), "flt", 10_000, 100, 2.0).await;
    let m = agent.metrics().clone();
    let n = sent.len() as u64;
    wait_for("delivery despite faults", Duration::from_secs(120), || {
        m.delivered_count("logs") >= n
    })
    .await;
    for (name, left) in [
        ("500s", emu.faults.fail_requests.load(Ordering::Acquire)),
        ("resets", emu.faults.reset_requests.load(Ordering::Acquire)),
        (
            "throttles",
            emu.faults.throttle_entries.load(Ordering::Acquire),
        ),
        (
            "wrong shards",
            emu.faults.wrong_shard.load(Ordering::Acquire),
        ),
    ] {
        assert_eq!(left, 0, "not every injected {name} was met");
    }
    agent.stop().await.unwrap();
    let (_, got) = check_shards_and_collect(&client, "logs").await;
    let duplicates = exactly_or_duplicated(&sent, &got);
    let resent = m.read("shardline_records_misrouted_total", &[("stream", "logs")]);
    println!(
        "faults: {duplicates} duplicates, {resent} records sent again after a wrong-shard result"
    );
    assert!(resent > 0, "wrong-shard results caused no re-send");
    assert_eq!(duplicates, resent, "duplicates not explained by re-sends");
    assert!(m.read("shardline_records_retried_total", &[("stream", "logs")]) > 0);
}

async fn wait_stream_active(client: &aws_sdk_kinesis::Client) {
    wait_active(client, "logs").await;
}

async fn open_shards(client: &aws_sdk_kinesis::Client) -> Vec<ShardInfo> {
    let mut shards = all_shards(client, "logs").await;
    shards.retain(|s| s.open);
    shards
}

/// Every 2 s: a split (1 → 2 shards), UpdateShardCount to 4 then back to 2, a
/// merge (2 → 1).
async fn reshard_four_times(client: &aws_sdk_kinesis::Client) {
    let step = Duration::from_secs(2);
    tokio::time::sleep(step).await;
    client
        .split_shard()
        .stream_name("logs")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((1u128 << 127).to_string())
        .send()
        .await
        .unwrap();
    wait_stream_active(client).await;
    assert_eq!(open_shards(client).await.len(), 2);
    tokio::time::sleep(step).await;
    update_shard_count(client, 4).await;
    tokio::time::sleep(step).await;
    update_shard_count(client, 2).await;
    tokio::time::sleep(step).await;
    let open = open_shards(client).await;
    assert_eq!(open.len(), 2);
    let (a, b) = if open[0].start < open[1].start {
        (&open[0], &open[1])
    } else {
        (&open[1], &open[0])
    };
    client
        .merge_shards()
        .stream_name("logs")
        .shard_to_merge(&a.id)
        .adjacent_shard_to_merge(&b.id)
        .send()
        .await
        .unwrap();
    wait_stream_active(client).await;
    assert_eq!(open_shards(client).await.len(), 1);
}

/// While 200,000 records flow, the stream is split 1→2 (SplitShard), scaled 2→4
/// (UpdateShardCount), scaled back to 2 and merged to 1 (MergeShards): every record
/// arrives, and every user record lies in the hash key range of the shard it was
/// read from (the KCL rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshards_under_load_keep_every_record_in_its_shard_range() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let mut c = config(&work, &emu.endpoint, "logs", &socket_toml(&sock, None));
    c.delivery.shard_rate_factor = 0.0; // the emulator has no limits here
    c.delivery.aggregation.max_bytes = 64 * 1024;
    let agent = start_agent(c).await;
    // 200,000 records over 10 s.
    let feeder = tokio::spawn(feed(sock.clone(), "rsh", 20_000, 48, 10.0));
    reshard_four_times(&client).await;
    let sent = feeder.await.unwrap();
    assert_eq!(sent.len(), 200_000);
    let m = agent.metrics().clone();
    wait_for("delivery across reshards", Duration::from_secs(120), || {
        m.delivered_count("logs") >= 200_000
    })
    .await;
    agent.stop().await.unwrap();
    // The KCL rule, in closed shards too: every record has a copy in a shard whose
    // range holds it. An aggregate built for a shard that was split while it was
    // in flight lands (by its outer hash key) in a child that does not hold all its
    // records: a KCL consumer drops it, so the agent sent those records again —
    // every copy outside its range is one of those.
    let (_, placed) = collect_with_placement(&client, "logs").await;
    let in_range: Vec<Bytes> = placed
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(d, _)| d.clone())
        .collect();
    let outside = (placed.len() - in_range.len()) as u64;
    let duplicates = exactly_or_duplicated(&sent, &in_range);
    let resent = m.read("shardline_records_misrouted_total", &[("stream", "logs")]);
    println!(
        "reshards: {outside} copies outside their shard's range, {duplicates} duplicates in range, \
         {resent} records sent again after a wrong-shard result, {} map changes",
        m.read("shardline_shard_map_changes_total", &[("stream", "logs")])
    );
    assert!(
        outside <= resent,
        "{outside} records outside their range, only {resent} sent again"
    );
    assert!(duplicates <= resent);
    assert!(
        m.read("shardline_shard_map_changes_total", &[("stream", "logs")]) >= 4,
        "reshards not followed"
    );
}

async fn update_shard_count(client: &aws_sdk_kinesis::Client, n: i32) {
    client
        .update_shard_count()
        .stream_name("logs")
        .target_shard_count(n)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    wait_stream_active(client).await;
    assert_eq!(open_shards(client).await.len(), n as usize);
}
