//! Each destination's own delivery settings, with the real binary: two streams
//! in one agent, one waiting long for its aggregates and one sending at once,
//! seen in how their records arrive in the emulator (aggregates, and pacing);
//! and the default stream written as a `[[destination]]`.

use std::time::Duration;

use crate::util::{
    create_stream, read_stream, send_lines, socket_toml, AgentProcess, Emulator, Workdir,
};

const LINES: usize = 10;
const LIMIT: Duration = Duration::from_secs(60);

/// `logs` (the default, written as a `[[destination]]`) waits 20 ms for an
/// aggregate, `audit` 30 s: lines sent 100 ms apart reach `logs` in one
/// Kinesis record each and `audit` in one aggregate; `audit`'s own
/// dead-letter file is created at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_destination_waits_for_its_aggregates_as_it_says() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    create_stream(&client, "audit", 1).await;
    let work = Workdir::new();
    let audit_dead = work.path("audit-dead.ndjson");
    let config = work.path("shardline.toml");
    std::fs::write(
        &config,
        format!(
            "[[destination]]\nstream = \"logs\"\ndefault = true\nregion = \"us-east-1\"\n\
             endpoint = \"{endpoint}\"\nmax_buffered_time_ms = 20\n\
             [[destination]]\nstream = \"audit\"\nmax_buffered_time_ms = 30000\n\
             dead_letter_path = \"{dead}\"\n\
             [delivery]\nmax_buffered_time_ms = 5000\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{spool}\"\nflush_interval_ms = 50\n\
             {logs}{audit}",
            endpoint = emu.endpoint,
            dead = audit_dead.display(),
            spool = work.spool().display(),
            logs = socket_toml(&work.path("in.sock"), None),
            audit = socket_toml(&work.path("audit.sock"), Some("audit")),
        ),
    )
    .unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    agent.metrics_addr().await;
    assert!(
        audit_dead.exists(),
        "audit's dead-letter file was not created"
    );
    for i in 0..LINES {
        send_lines(&work.path("in.sock"), vec![format!("logs {i}")]).await;
        send_lines(&work.path("audit.sock"), vec![format!("audit {i}")]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + LIMIT;
    let logs = loop {
        let logs = read_stream(&client, "logs").await;
        if logs.iter().map(|r| r.users.len()).sum::<usize>() == LINES {
            break logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logs' lines did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Nothing of audit's yet: its aggregate waits up to 30 s.
    let early = read_stream(&client, "audit").await;
    assert!(
        early.is_empty(),
        "audit sent before its 30 s: {} records",
        early.len()
    );
    agent.stop().await;
    // The stop flushes audit's partial aggregate: one record, every line.
    let audit = read_stream(&client, "audit").await;
    assert_eq!(audit.len(), 1, "audit's lines in {} records", audit.len());
    assert_eq!(audit[0].users.len(), LINES);
    assert!(
        logs.len() >= LINES / 2,
        "logs waited as audit does: {LINES} lines in {} records",
        logs.len()
    );
}

/// The arrival times of every record of `stream`'s first shard.
async fn arrivals(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<f64> {
    let mut it = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator()
        .map(str::to_owned);
    let mut out = Vec::new();
    while let Some(i) = it {
        let page = client.get_records().shard_iterator(i).send().await.unwrap();
        let at = |r: &aws_sdk_kinesis::types::Record| {
            let t = r.approximate_arrival_timestamp().expect("an arrival time");
            t.secs() as f64 + f64::from(t.subsec_nanos()) / 1e9
        };
        out.extend(page.records().iter().map(at));
        if page.records().is_empty() {
            break;
        }
        it = page.next_shard_iterator().map(str::to_owned);
    }
    out
}

/// `slow` may use 5 % of its shard (50 records/s), `logs` all of it: the same
/// 200 unaggregated records reach `slow` over seconds and `logs` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_destination_paces_its_shards_as_it_says() {
    const RECORDS: usize = 200;
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    create_stream(&client, "slow", 1).await;
    let work = Workdir::new();
    let config = work.path("shardline.toml");
    std::fs::write(
        &config,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
             rate_limit_percent = 100\n\
             [[destination]]\nstream = \"slow\"\nrate_limit_percent = 5\n\
             [delivery]\naggregate = false\nmax_buffered_time_ms = 20\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{spool}\"\nflush_interval_ms = 50\n\
             {logs}{slow}",
            endpoint = emu.endpoint,
            spool = work.spool().display(),
            logs = socket_toml(&work.path("in.sock"), None),
            slow = socket_toml(&work.path("slow.sock"), Some("slow")),
        ),
    )
    .unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    agent.metrics_addr().await;
    let lines = |s: &str| (0..RECORDS).map(|i| format!("{s} {i}")).collect::<Vec<_>>();
    send_lines(&work.path("in.sock"), lines("logs")).await;
    send_lines(&work.path("slow.sock"), lines("slow")).await;
    let deadline = std::time::Instant::now() + LIMIT;
    let spread = |t: &[f64]| {
        t.iter().cloned().fold(f64::MIN, f64::max) - t.iter().cloned().fold(f64::MAX, f64::min)
    };
    let (fast, slow) = loop {
        let (fast, slow) = (
            arrivals(&client, "logs").await,
            arrivals(&client, "slow").await,
        );
        if fast.len() == RECORDS && slow.len() == RECORDS {
            break (spread(&fast), spread(&slow));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} and {} of {RECORDS} records",
            fast.len(),
            slow.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{RECORDS} records arrived over {fast:.2} s at 100 % and {slow:.2} s at 5 %");
    assert!(
        slow >= 1.0,
        "5 % of a shard took {RECORDS} records in {slow:.2} s"
    );
    assert!(
        slow > fast,
        "the shard at 5 % was not slower: {slow:.2} s against {fast:.2} s"
    );
    agent.stop().await;
}
