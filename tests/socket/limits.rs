//! What one client may hold: connection slots per uid, idle connections, and the
//! ingest memory budget that frames are charged to before they are allocated.

use std::path::Path;
use std::time::Duration;

use shardline::metrics::Metrics;
use shardline::testkit::frame::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{encoded, exchange, frames_socket, request, status};
use crate::util::{config, start_agent, wait_for, Workdir};

/// Regression (issue 14, row 4): idle connections were never closed, and one
/// allowed user could hold every connection slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_one_uid_cannot_hold_every_slot() {
    let work = Workdir::new();
    let capped = work.path("capped.sock");
    let idle = work.path("idle.sock");
    let extra = format!(
        "{}\n[[socket]]\npath = \"{}\"\nidle_timeout_secs = 1\n",
        frames_socket(&capped, "max_connections_per_uid = 2"),
        idle.display()
    );
    let agent = start_agent(config(&work, "http://127.0.0.1:9", "logs", &extra)).await;
    let m = agent.metrics().clone();

    // Two connections of ours are held; a third is closed at once and counted.
    let first = UnixStream::connect(&capped).await.unwrap();
    let _second = UnixStream::connect(&capped).await.unwrap();
    let mut third = UnixStream::connect(&capped).await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(30), third.read(&mut byte))
        .await
        .expect("a connection over the per-uid cap was kept")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(
        m.read(
            "shardline_source_errors_total",
            &[("source", "socket"), ("kind", "uid_limit")]
        ),
        1
    );
    // Once one of the two closes, the uid is served again.
    drop(first);
    let wire = encoded(&request(1, vec![("k", "after a slot came free")], true));
    let mut tries = 0;
    loop {
        let answers = exchange(&capped, &wire).await;
        if answers.first().map(status) == Some(Status::Ok) {
            break;
        }
        tries += 1;
        assert!(tries < 500, "the freed slot was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A connection that goes quiet is closed; what it sent is kept.
    let mut quiet = UnixStream::connect(&idle).await.unwrap();
    quiet.write_all(b"complete\npartial").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(60), quiet.read(&mut byte))
        .await
        .expect("an idle connection was kept")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(
        m.read(
            "shardline_source_errors_total",
            &[("source", "socket"), ("kind", "idle_timeout")]
        ),
        1
    );
    wait_for(
        "the idle client's lines spooled",
        Duration::from_secs(30),
        || m.read("shardline_records_spooled_total", &[("source", "socket")]) >= 3,
    )
    .await;
    agent.stop().await.unwrap();
}

/// The ingest memory budget of the test below.
const BUDGET: u64 = 8 << 20;

/// What is charged never exceeds the budget.
fn within_budget(m: &Metrics) {
    let charged = m.ingest_memory_bytes();
    assert!(charged <= BUDGET, "{charged} bytes charged");
}

/// Unfinished 4 MiB frames: each connection that sent more than a read's worth
/// holds its whole frame, so the third waits for room; closed, they give it back.
async fn unfinished_frames_wait_for_room(sock: &Path, m: &Metrics) {
    let mut stalled = Vec::new();
    for _ in 0..12 {
        let mut s = UnixStream::connect(sock).await.unwrap();
        let mut wire = ((4u32 << 20) + 1).to_be_bytes().to_vec();
        wire.push(1);
        wire.extend(vec![0u8; 100 << 10]);
        s.write_all(&wire).await.unwrap();
        stalled.push(s);
        within_budget(m);
    }
    wait_for(
        "a connection waiting for budget",
        Duration::from_secs(30),
        || {
            within_budget(m);
            m.ingest_budget_waits() >= 1
        },
    )
    .await;
    within_budget(m);
    drop(stalled);
    wait_for("the budget given back", Duration::from_secs(60), || {
        within_budget(m);
        m.ingest_memory_bytes() == 0
    })
    .await;
}

/// Regression (issue 14, rows 1 and 2): 400 connections each sending the start of
/// an 8 MiB frame made the agent reserve 3.26 GiB, and a frame of 1.7 million tiny
/// records took 2 GiB to decode. Now both are charged to the ingest memory budget
/// before they are allocated: connections wait for room, frames that can never fit
/// are refused, and what is charged never exceeds the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_memory_stays_within_its_budget() {
    let work = Workdir::new();
    let sock = work.path("frames.sock");
    let extra = format!(
        "[ingest]\nmax_memory_bytes = {BUDGET}\n{}",
        frames_socket(&sock, "")
    );
    let agent = start_agent(config(&work, "http://127.0.0.1:9", "logs", &extra)).await;
    let m = agent.metrics().clone();
    unfinished_frames_wait_for_room(&sock, &m).await;

    // A frame larger than the whole budget is refused before it is read.
    let mut wire = ((8u32 << 20) - 1).to_be_bytes().to_vec();
    wire.push(1);
    wire.extend(vec![0u8; 200 << 10]);
    let answers = exchange(&sock, &wire).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(status(&answers[0]), Status::BadFrame);
    assert!(
        answers[0].message.contains("ingest memory budget"),
        "{}",
        answers[0].message
    );

    // A frame of a million tiny records: its decoding cannot fit, so it is refused
    // without being decoded, and the connection goes on.
    let tiny = request(1, vec![("k", ""); 1_000_000], true);
    let mut wire = encoded(&tiny);
    assert!(wire.len() < 8 << 20);
    wire.extend(encoded(&request(2, vec![("k", "after the big one")], true)));
    let answers = exchange(&sock, &wire).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(status(&answers[0]), Status::BadFrame);
    assert!(
        answers[0].message.contains("1000000 records")
            && answers[0].message.contains("ingest memory budget"),
        "{}",
        answers[0].message
    );
    assert_eq!((answers[1].id, status(&answers[1])), (2, Status::Ok));
    assert!(
        m.read(
            "shardline_source_errors_total",
            &[("source", "socket"), ("kind", "no_budget")]
        ) >= 2
    );
    wait_for("the budget given back", Duration::from_secs(60), || {
        m.ingest_memory_bytes() == 0
    })
    .await;
    agent.stop().await.unwrap();
}
