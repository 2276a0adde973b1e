//! `aggregate = false` with the real binary: a `[[destination]]` that turns KPL
//! aggregation off gets one user record per Kinesis record, its data the line
//! itself, while the default stream beside it is still aggregated.

use std::time::{Duration, Instant};

use crate::util::{
    create_stream, read_stream, send_lines, socket_toml, write_binary_config, AgentProcess,
    Emulator, ReadRecord, Workdir,
};

/// The KPL aggregate's magic number, the first bytes of an aggregated record.
const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const LINES: usize = 300;

/// The Kinesis records of `stream` once they hold `LINES` user records.
async fn records(emu: &Emulator, stream: &str, agent: &AgentProcess) -> Vec<ReadRecord> {
    let client = emu.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = read_stream(&client, stream).await;
        if got.iter().map(|r| r.users.len()).sum::<usize>() >= LINES {
            return got;
        }
        assert!(Instant::now() < deadline, "{stream}:\n{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_without_aggregation_gets_one_line_per_kinesis_record() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    create_stream(&client, "plain", 1).await;
    let work = Workdir::new();
    let path = write_binary_config(&work, &emu.endpoint, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&socket_toml(&work.path("plain.sock"), Some("plain")));
    text.push_str("[[destination]]\nstream = \"plain\"\naggregate = false\n");
    std::fs::write(&path, text).unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &path, &[], |_| {});
    agent.metrics_addr().await;

    let lines =
        |prefix: &str| -> Vec<String> { (0..LINES).map(|i| format!("{prefix} {i}")).collect() };
    send_lines(&work.path("in.sock"), lines("aggregated")).await;
    send_lines(&work.path("plain.sock"), lines("plain")).await;
    let plain = records(&emu, "plain", &agent).await;
    let aggregated = records(&emu, "logs", &agent).await;
    agent.stop().await;

    // One Kinesis record per line, its data the line, never an aggregate.
    let mut got: Vec<String> = plain
        .iter()
        .map(|r| {
            assert!(!r.data.starts_with(&KPL_MAGIC), "{r:?}");
            String::from_utf8(r.data.to_vec()).unwrap()
        })
        .collect();
    got.sort();
    let mut expected = lines("plain");
    expected.sort();
    assert_eq!(got, expected);
    // The default stream is still aggregated.
    assert!(
        aggregated.len() < LINES,
        "{} Kinesis records",
        aggregated.len()
    );
    assert!(aggregated.iter().any(|r| r.data.starts_with(&KPL_MAGIC)));
}
