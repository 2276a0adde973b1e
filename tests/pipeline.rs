//! The whole agent: socket → spool → aggregation → PutRecords → spool delete, on the
//! emulator.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;

use crate::util::{
    check_shards_and_collect, config, create_stream, node_deaggregate, send_lines, socket_toml,
    start_agent, wait_for, Emulator, Workdir,
};

const LONG: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_100k_lines_into_four_shards() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 4).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        &socket_toml(&sock, None),
    ))
    .await;

    let mut expected = HashSet::new();
    let mut senders = Vec::new();
    for c in 0..4 {
        let lines: Vec<String> = (0..25_000)
            .map(|i| format!("conn{c}-line{i:06}-{}", "x".repeat(120)))
            .collect();
        expected.extend(lines.iter().map(|l| Bytes::from(l.clone())));
        let sock = sock.clone();
        senders.push(tokio::spawn(async move { send_lines(&sock, lines).await }));
    }
    for s in senders {
        s.await.unwrap();
    }
    assert_eq!(expected.len(), 100_000);
    let metrics = agent.metrics().clone();
    wait_for("100,000 delivered records", LONG, || {
        metrics.delivered_count("logs") >= 100_000
    })
    .await;

    let (records, data) = check_shards_and_collect(&client, "logs").await;
    let mut seen = HashSet::new();
    for d in &data {
        assert!(seen.insert(d.clone()), "delivered twice: {d:?}");
        assert!(expected.contains(d), "never sent: {d:?}");
    }
    assert_eq!(seen.len(), 100_000, "records missing from the stream");
    // Aggregated: far fewer Kinesis records than user records, in all four shards.
    assert!(records.len() < 10_000, "{} Kinesis records", records.len());
    let shards: HashSet<&str> = records.iter().map(|r| r.shard_id.as_str()).collect();
    assert_eq!(shards.len(), 4);

    // An independent deaggregator reads exactly the same user records.
    let raw: Vec<(String, Option<String>, Bytes)> = records
        .iter()
        .map(|r| (r.partition_key.clone(), None, r.data.clone()))
        .collect();
    let by_node = node_deaggregate(&raw);
    for (r, node) in records.iter().zip(by_node) {
        assert_eq!(node, r.users);
    }

    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0, "spool not empty after delivery");
    assert_eq!(report.undelivered_records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sockets_feed_two_streams_without_crossing() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "alpha", 2).await;
    create_stream(&client, "beta", 1).await;
    let work = Workdir::new();
    let (sa, sb) = (work.path("a.sock"), work.path("b.sock"));
    let extra = format!(
        "{}{}",
        socket_toml(&sa, None),
        socket_toml(&sb, Some("beta"))
    );
    let agent = start_agent(config(&work, &emu.endpoint, "alpha", &extra)).await;
    let a = tokio::spawn({
        let sa = sa.clone();
        async move { send_lines(&sa, (0..3000).map(|i| format!("alpha-{i}"))).await }
    });
    send_lines(&sb, (0..2000).map(|i| format!("beta-{i}"))).await;
    a.await.unwrap();
    let m = agent.metrics().clone();
    wait_for("both streams delivered", LONG, || {
        m.delivered_count("alpha") >= 3000 && m.delivered_count("beta") >= 2000
    })
    .await;
    for (stream, prefix, n) in [("alpha", "alpha-", 3000), ("beta", "beta-", 2000)] {
        let (_, data) = check_shards_and_collect(&client, stream).await;
        let got: HashSet<Bytes> = data.iter().cloned().collect();
        assert_eq!(data.len(), n, "{stream}");
        assert_eq!(got.len(), n, "{stream} has duplicates");
        for d in &data {
            assert!(d.starts_with(prefix.as_bytes()), "{stream} holds {d:?}");
        }
    }
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spooled_while_kinesis_is_unreachable_are_delivered_after_restart() {
    let work = Workdir::new();
    let sock = work.path("in.sock");
    // An address where nothing listens: every request is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let agent = start_agent(config(&work, &dead, "logs", &socket_toml(&sock, None))).await;
    let lines: Vec<String> = (0..5000).map(|i| format!("offline-{i}")).collect();
    send_lines(&sock, lines.clone()).await;
    let m = agent.metrics().clone();
    wait_for("5000 spooled records", LONG, || {
        m.read("shardline_records_spooled_total", &[("source", "socket")]) >= 5000
    })
    .await;
    let report = agent.stop().await.unwrap();
    assert!(report.spooled_bytes > 0);
    assert_eq!(m.delivered_count("logs"), 0);

    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        &socket_toml(&sock, None),
    ))
    .await;
    let m = agent.metrics().clone();
    wait_for("replayed records delivered", LONG, || {
        m.delivered_count("logs") >= 5000
    })
    .await;
    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0);
    let (_, data) = check_shards_and_collect(&client, "logs").await;
    let got: HashSet<Bytes> = data.iter().cloned().collect();
    assert_eq!(data.len(), 5000);
    for l in lines {
        assert!(got.contains(l.as_bytes()), "{l} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_line_is_refused_and_counted_while_the_rest_flows() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        &socket_toml(&sock, None),
    ))
    .await;
    let huge = "h".repeat(1536 * 1024);
    send_lines(&sock, vec!["before".to_string(), huge, "after".to_string()]).await;
    // A new connection is served as usual.
    send_lines(&sock, vec!["later".to_string()]).await;
    let m = agent.metrics().clone();
    wait_for("three good lines delivered", LONG, || {
        m.delivered_count("logs") >= 3
    })
    .await;
    assert_eq!(
        m.read(
            "shardline_records_rejected_total",
            &[("source", "socket"), ("reason", "too_large")]
        ),
        1
    );
    let (_, data) = check_shards_and_collect(&client, "logs").await;
    let mut got: Vec<&[u8]> = data.iter().map(|d| d.as_ref()).collect();
    got.sort();
    assert_eq!(got, vec![&b"after"[..], b"before", b"later"]);
    agent.stop().await.unwrap();
}

/// A reload adds and removes sockets without a restart; a source for a stream the
/// agent does not deliver to refuses the whole reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_sockets() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let (a, b) = (work.path("a.sock"), work.path("b.sock"));
    let mut agent = start_agent(config(&work, &emu.endpoint, "logs", &socket_toml(&a, None))).await;
    send_lines(&a, vec!["via a".into()]).await;
    let e = agent
        .reload(config(
            &work,
            &emu.endpoint,
            "logs",
            &socket_toml(&b, Some("other")),
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"other\" is new"), "{e}");
    assert!(
        a.exists() && !b.exists(),
        "a refused reload changed the sources"
    );
    let report = agent
        .reload(config(&work, &emu.endpoint, "logs", &socket_toml(&b, None)))
        .await
        .unwrap();
    assert_eq!(report.sockets_added, vec![b.clone()]);
    assert_eq!(report.sockets_removed, vec![a.clone()]);
    assert!(!a.exists(), "the removed socket's file is left");
    send_lines(&b, vec!["via b".into()]).await;
    let m = agent.metrics().clone();
    wait_for("both records delivered", LONG, || {
        m.delivered_count("logs") >= 2
    })
    .await;
    let (_, data) = check_shards_and_collect(&client, "logs").await;
    let mut got: Vec<&[u8]> = data.iter().map(|d| d.as_ref()).collect();
    got.sort();
    assert_eq!(got, vec![&b"via a"[..], b"via b"]);
    agent.stop().await.unwrap();
}
