//! A Kinesis data stream and a Firehose delivery stream in one agent: a file
//! goes to Kinesis (the emulator), a socket to Firehose (the fault endpoint).
//! While one side's endpoint refuses everything, the other still gets every
//! line; once it accepts again, its lines follow, each exactly once.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{agent_config, append_lines, duplicates, internal, line, split_lines, LONG};
use crate::util::firehose::{FirehoseEndpoint, Outcome, Plan};
use crate::util::{
    create_stream, file_toml, send_lines, socket_toml, start_agent, stream_data, wait_for,
    Emulator, Workdir,
};

const LINES: usize = 5_000;

/// The Firehose endpoint's lines, every copy.
fn firehose_lines(fh: &FirehoseEndpoint) -> Vec<Bytes> {
    fh.accepted()
        .iter()
        .flat_map(|a| split_lines(&a.data))
        .collect()
}

/// Waits until the endpoint holds every line of `sent`.
async fn wait_firehose(fh: &FirehoseEndpoint, sent: &[Bytes]) {
    let wanted: HashSet<&Bytes> = sent.iter().collect();
    wait_for("every socket line at Firehose", LONG, || {
        let got = firehose_lines(fh);
        let got: HashSet<&Bytes> = got.iter().collect();
        wanted.is_subset(&got)
    })
    .await;
}

/// Sends socket lines `range` of tag `sock`; returns them.
async fn send_socket(work: &Workdir, range: std::ops::Range<usize>) -> Vec<Bytes> {
    let lines: Vec<String> = range.map(|i| line("sock", i)).collect();
    send_lines(&work.path("in.sock"), lines.clone()).await;
    lines.into_iter().map(Bytes::from).collect()
}

/// Firehose refuses everything (500s), then Kinesis does: each time the other
/// destination delivers every line while the refused one's lines wait in the
/// spool, and are delivered once it accepts again. No fault stores anything,
/// so every line arrives exactly once, at its own destination only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_and_firehose_in_one_agent_each_deliver_while_the_other_refuses() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let fh = FirehoseEndpoint::start(Plan {
        refuse_all: true,
        ..Plan::default()
    })
    .await;
    let work = Workdir::new();
    let file = work.path("app.log");
    let kinesis = format!("stream = \"logs\"\nendpoint = \"{}\"\n", emu.endpoint);
    let rest = format!(
        "{}{}[[destination]]\ndelivery_stream = \"fh\"\nregion = \"us-east-1\"\n\
         endpoint = \"{}\"\npacking_linger_ms = 20\n",
        file_toml(&[&file], ""),
        socket_toml(&work.path("in.sock"), None) + "delivery_stream = \"fh\"\n",
        fh.endpoint
    );
    let agent = start_agent(agent_config(&work, &kinesis, &rest)).await;
    let m = agent.metrics().clone();

    // Firehose refuses: Kinesis gets every file line all the same.
    let mut to_kinesis = append_lines(&file, "file", 0..LINES);
    let mut to_firehose = send_socket(&work, 0..LINES).await;
    let n = to_kinesis.len() as u64;
    wait_for("file lines in Kinesis", LONG, || {
        m.delivered_count("logs") >= n
    })
    .await;
    wait_for("Firehose refusing requests", LONG, || {
        fh.count(|o| *o == Outcome::InternalFailure) >= 3
    })
    .await;
    assert!(fh.accepted().is_empty());
    fh.set_plan(Plan::default());
    wait_firehose(&fh, &to_firehose).await;

    // Kinesis refuses every PutRecords: Firehose gets every socket line.
    emu.faults.fail_requests.store(u32::MAX, Ordering::Release);
    let refused_from = emu.faults.put_records.load(Ordering::Acquire);
    let before = m.delivered_count("logs");
    to_kinesis.extend(append_lines(&file, "file", LINES..2 * LINES));
    let more = send_socket(&work, LINES..2 * LINES).await;
    to_firehose.extend(more);
    wait_firehose(&fh, &to_firehose).await;
    wait_for("Kinesis refusing requests", LONG, || {
        emu.faults.put_records.load(Ordering::Acquire) >= refused_from + 3
    })
    .await;
    assert_eq!(
        m.delivered_count("logs"),
        before,
        "Kinesis refused, yet delivered"
    );
    emu.faults.fail_requests.store(0, Ordering::Release);
    let n = to_kinesis.len() as u64;
    wait_for("file lines in Kinesis after the refusal", LONG, || {
        m.delivered_count("logs") >= n
    })
    .await;

    let report = agent.stop().await.unwrap();
    assert_eq!(report.spooled_bytes, 0, "the spool is not drained");
    let dups = duplicates(&to_firehose, &firehose_lines(&fh));
    assert!(dups.is_empty(), "{} lines twice at Firehose", dups.len());
    let in_kinesis = stream_data(&client, "logs").await;
    let dups = duplicates(&to_kinesis, &in_kinesis);
    assert!(dups.is_empty(), "{} lines twice in Kinesis", dups.len());
    assert!(m.delivered_count(&internal("fh")) >= to_firehose.len() as u64);
}
