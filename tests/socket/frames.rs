//! The framed protocol under bad input: refused records with their reasons, fatal
//! frames that close the connection, a thousand connections at once, and a flood
//! of bad frames that must not flood the log.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use shardline::metrics::Metrics;
use shardline::testkit::frame::Status;

use super::{encoded, exchange, frames_socket, request, status};
use crate::util::{
    check_shards_and_collect, config, create_stream, start_agent, wait_for, AgentProcess, Emulator,
    Workdir,
};

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// A zero-length key and a 300-character key: refused, with the reason; the
/// frames around them are served.
async fn bad_keys_are_refused_with_the_reason(sock: &Path) {
    let long = "k".repeat(300);
    let mut wire = encoded(&request(1, vec![("", "no key")], true));
    wire.extend(encoded(&request(
        2,
        vec![("ok", "fine"), (&long, "long key")],
        true,
    )));
    wire.extend(encoded(&request(3, vec![("ok", "accepted")], true)));
    let answers = exchange(sock, &wire).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(
        (answers[0].id, status(&answers[0])),
        (1, Status::InvalidRecord)
    );
    assert!(
        answers[0].message.contains("partition key is empty"),
        "{}",
        answers[0].message
    );
    assert_eq!(
        (answers[1].id, status(&answers[1])),
        (2, Status::InvalidRecord)
    );
    assert!(
        answers[1].message.contains("300 characters"),
        "{}",
        answers[1].message
    );
    assert_eq!(
        (answers[2].id, status(&answers[2]), answers[2].records),
        (3, Status::Ok, 1)
    );
}

/// Frames that cannot be read: a huge length or garbage closes the connection, a
/// broken body is refused and the connection goes on, a cut-short frame is
/// counted.
async fn unreadable_frames_are_refused(sock: &Path, m: &Metrics) {
    // A frame claiming 4 GiB: refused and the connection closed, nothing allocated.
    let answers = exchange(sock, &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(status(&answers[0]), Status::BadFrame);
    assert!(
        answers[0].message.contains("4294967295 bytes exceeds"),
        "{}",
        answers[0].message
    );

    // Garbage (an HTTP request): its first bytes read as a huge length.
    let answers = exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(answers.len(), 1);
    assert_eq!(status(&answers[0]), Status::BadFrame);

    // A readable length with a broken body: refused, and the connection goes on.
    let mut wire = vec![0, 0, 0, 3, 1, 0xFF, 0xFF];
    wire.extend(encoded(&request(9, vec![("ok", "after garbage")], true)));
    let answers = exchange(sock, &wire).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(status(&answers[0]), Status::BadFrame);
    assert_eq!((answers[1].id, status(&answers[1])), (9, Status::Ok));

    // A truncated frame / a client that disconnects mid-frame.
    let mut wire = encoded(&request(4, vec![("ok", "cut short")], true));
    wire.truncate(wire.len() - 3);
    assert!(exchange(sock, &wire).await.is_empty());
    wait_for(
        "the truncated frame counted",
        Duration::from_secs(10),
        || {
            m.read(
                "shardline_source_errors_total",
                &[("source", "socket"), ("kind", "truncated_frame")],
            ) >= 1
        },
    )
    .await;
}

/// 1,000 connections at once, each acked; memory stays bounded.
async fn a_thousand_connections_are_served(sock: &Path) {
    let before = rss_bytes();
    let mut clients = Vec::new();
    for c in 0..1000u64 {
        let sock = sock.to_path_buf();
        clients.push(tokio::spawn(async move {
            let wire = encoded(&request(c, vec![("k", &format!("conn-{c}"))], true));
            exchange(&sock, &wire).await
        }));
    }
    for c in clients {
        let answers = c.await.unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(status(&answers[0]), Status::Ok);
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "RSS grew by {grown} bytes for 1,000 connections"
    );
}

/// Only the good records reached the stream, and the refusals were counted.
async fn only_good_records_are_delivered(client: &aws_sdk_kinesis::Client, m: &Metrics) {
    let expected = 1 + 1 + 1000; // "accepted", "after garbage", one per connection
    wait_for("good records delivered", Duration::from_secs(60), || {
        m.delivered_count("logs") >= expected
    })
    .await;
    let (_, data) = check_shards_and_collect(client, "logs").await;
    let got: HashSet<Bytes> = data.iter().cloned().collect();
    assert_eq!(
        data.len() as u64,
        expected,
        "refused records must not be spooled"
    );
    for want in ["accepted", "after garbage", "conn-0", "conn-999"] {
        assert!(got.contains(want.as_bytes()), "{want} missing");
    }
    assert!(
        !got.contains(&b"fine"[..]),
        "a refused frame is refused whole"
    );
    assert!(!got.contains(&b"cut short"[..]));
    assert!(
        m.read(
            "shardline_source_errors_total",
            &[("source", "socket"), ("kind", "bad_frame")]
        ) >= 3
    );
    assert_eq!(
        m.read(
            "shardline_records_rejected_total",
            &[("source", "socket"), ("reason", "invalid_record")]
        ),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_clear_errors_and_everyone_else_is_served() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let sock = work.path("frames.sock");
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        // 1,000 connections of one uid at once, below.
        &frames_socket(&sock, "max_connections_per_uid = 1024"),
    ))
    .await;
    let m = agent.metrics().clone();
    bad_keys_are_refused_with_the_reason(&sock).await;
    unreadable_frames_are_refused(&sock, &m).await;
    a_thousand_connections_are_served(&sock).await;
    only_good_records_are_delivered(&client, &m).await;
    agent.stop().await.unwrap();
}

/// Regression (issue 14, row 5): one WARN per bad frame (54k lines in 10 s), and a
/// bad explicit hash key echoed whole into the log and the answer. Now the log
/// gets one line per interval with the count held back, the counter every frame,
/// and the key is quoted by its first 64 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_flood_cannot_flood_the_log() {
    let work = Workdir::new();
    let sock = work.path("frames.sock");
    let conf = work.path("shardline.toml");
    std::fs::write(
        &conf,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n{}",
            work.spool().display(),
            frames_socket(&sock, "")
        ),
    )
    .unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &conf, &[], |_| {});
    let addr = agent.metrics_addr().await;
    const FLOOD: usize = 20_000;
    // A readable length with a broken body: refused, and the connection goes on.
    let wire: Vec<u8> = [0u8, 0, 0, 3, 1, 0xFF, 0xFF].repeat(FLOOD);
    let answers = exchange(&sock, &wire).await;
    assert_eq!(answers.len(), FLOOD);
    assert!(answers.iter().all(|a| status(a) == Status::BadFrame));
    // A 1 MiB explicit hash key.
    let key = "9".repeat(1 << 20);
    let mut req = request(1, vec![("k", "data")], true);
    req.records[0].explicit_hash_key = Some(key.clone());
    let answers = exchange(&sock, &encoded(&req)).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(status(&answers[0]), Status::InvalidRecord);
    let message = &answers[0].message;
    assert!(message.len() < 200, "answer of {} bytes", message.len());
    assert!(
        message.contains(&format!("\"{}…\"", &key[..64])),
        "{message}"
    );

    let (_, metrics) = shardline::status::get(addr, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(&format!(
            "shardline_source_errors_total{{source=\"socket\",kind=\"bad_frame\"}} {FLOOD}"
        )),
        "{metrics}"
    );
    let log = agent.stop().await;
    let warned = log.matches("Refused a bad frame").count();
    // One line per 10-second interval: the flood takes a few of them at most.
    assert!(
        (1..=3).contains(&warned),
        "{warned} warnings for {FLOOD} bad frames"
    );
    assert!(log.contains("suppressed"), "{log}");
    assert!(!log.contains(&key[..65]), "the whole key reached the log");
}
