//! Kinesis streams as today's Kinesis has them, with the real binary: a stream
//! named by its ARN (requests carry `StreamARN`), and large records on a stream
//! raised with UpdateMaxRecordSize (and refused, with the rest flowing, on one
//! that was not).

use std::time::{Duration, Instant};

use crate::util::{
    create_stream, file_toml, read_stream, send_lines, socket_toml, write_binary_config,
    AgentProcess, Emulator, ReadRecord, Workdir,
};

/// The stream's ARN, as the emulator made it.
async fn stream_arn(emu: &Emulator, stream: &str) -> String {
    let client = emu.client().await;
    let d = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    d.stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_owned()
}

/// The user records' data of `stream` once there are `count` of them.
async fn user_data(
    emu: &Emulator,
    stream: &str,
    count: usize,
    agent: &AgentProcess,
) -> Vec<Vec<u8>> {
    let client = emu.client().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got: Vec<ReadRecord> = read_stream(&client, stream).await;
        let users: Vec<Vec<u8>> = got
            .iter()
            .flat_map(|r| r.users.iter().map(|u| u.data.to_vec()))
            .collect();
        if users.len() >= count {
            return users;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} records:\n{}",
            users.len(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_named_by_its_arn_is_listed_and_written_by_its_arn() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let arn = stream_arn(&emu, "logs").await;
    let work = Workdir::new();
    let path = write_binary_config(&work, &emu.endpoint, "");
    // No region: the ARN's.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "stream = \"logs\"\nregion = \"us-east-1\"\n",
        &format!("stream = \"{arn}\"\n"),
    );
    // A second socket names the stream by its key inside the agent.
    let text = text + &socket_toml(&work.path("by-name.sock"), Some("logs"));
    std::fs::write(&path, text).unwrap();
    // Its own access key tells its requests from the test's.
    let mut agent = AgentProcess::spawn(&work, "agent", &path, &[], |c| {
        c.env("AWS_ACCESS_KEY_ID", "agent");
    });
    agent.metrics_addr().await;

    let lines =
        |prefix: &str| -> Vec<String> { (0..50).map(|i| format!("{prefix} {i}")).collect() };
    send_lines(&work.path("in.sock"), lines("by arn")).await;
    send_lines(&work.path("by-name.sock"), lines("by name")).await;
    let mut got: Vec<String> = user_data(&emu, "logs", 100, &agent)
        .await
        .into_iter()
        .map(|d| String::from_utf8(d).unwrap())
        .collect();
    agent.stop().await;
    got.sort();
    let mut expected = [lines("by arn"), lines("by name")].concat();
    expected.sort();
    assert_eq!(got, expected);

    for operation in ["ListShards", "PutRecords", "DescribeStreamSummary"] {
        let seen = emu.shim.seen(operation);
        let by_agent: Vec<_> = seen
            .iter()
            .filter(|s| s.signer.as_deref() == Some("agent/us-east-1"))
            .collect();
        assert!(
            !by_agent.is_empty(),
            "no {operation} of the agent: {seen:?}"
        );
        for s in by_agent {
            assert_eq!(
                s.stream_arn.as_deref(),
                Some(arn.as_str()),
                "{operation}: {s:?}"
            );
            assert_eq!(s.stream_name, None, "{operation}: {s:?}");
        }
    }
}

/// A line of `len` bytes that says which it is.
fn large_line(tag: &str, len: usize) -> String {
    let mut s = format!("{tag} ");
    let fill = "0123456789abcdefghijklmnopqrstuvwxyz";
    while s.len() < len {
        s.push_str(fill);
    }
    s.truncate(len);
    s
}

/// The binary with one socket and one file, both taking lines of up to 10 MiB.
fn large_config(work: &Workdir, endpoint: &str) -> std::path::PathBuf {
    let path = write_binary_config(work, endpoint, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("max_record_bytes = 10485744\n");
    text.push_str(&file_toml(
        &[&work.path("app.log")],
        "max_record_bytes = 10485504",
    ));
    std::fs::write(&path, text).unwrap();
    path
}

const LARGE: usize = 5 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_raised_to_10_mib_takes_5_mib_lines_from_a_file_and_a_socket() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    client
        .update_max_record_size()
        .stream_arn(stream_arn(&emu, "logs").await)
        .max_record_size_in_kib(10240)
        .send()
        .await
        .unwrap();
    let work = Workdir::new();
    let path = large_config(&work, &emu.endpoint);
    let mut agent = AgentProcess::spawn(&work, "agent", &path, &[], |_| {});
    agent.metrics_addr().await;

    let from_socket = large_line("socket", LARGE);
    let from_file = large_line("file", LARGE);
    send_lines(&work.path("in.sock"), [from_socket.clone(), "small".into()]).await;
    std::fs::write(work.path("app.log"), format!("{from_file}\n")).unwrap();
    let got = user_data(&emu, "logs", 3, &agent).await;
    let log = agent.stop().await;
    assert_eq!(got.len(), 3, "{log}");
    for line in [&from_socket, &from_file, &"small".to_owned()] {
        assert!(
            got.iter().any(|d| d == line.as_bytes()),
            "{} bytes missing",
            line.len()
        );
    }
    // Each large one was a Kinesis record of its own, never aggregated.
    let records = read_stream(&client, "logs").await;
    assert!(records
        .iter()
        .filter(|r| r.data.len() >= LARGE)
        .all(|r| r.users.len() == 1 && !r.data.starts_with(&[0xF3, 0x89, 0x9A, 0xC2])));
    assert!(log.contains("max_record_bytes=10485760"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_at_1_mib_refuses_5_mib_lines_and_delivers_those_after_them() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let path = large_config(&work, &emu.endpoint);
    let mut agent = AgentProcess::spawn(&work, "agent", &path, &[], |_| {});
    let metrics = agent.metrics_addr().await;

    let large = large_line("socket", LARGE);
    send_lines(&work.path("in.sock"), [large, "after socket".into()]).await;
    let file = format!("{}\nafter file\n", large_line("file", LARGE));
    std::fs::write(work.path("app.log"), file).unwrap();
    let got = user_data(&emu, "logs", 2, &agent).await;
    let mut got: Vec<String> = got
        .into_iter()
        .map(|d| String::from_utf8(d).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["after file", "after socket"]);

    let dead_letter = work.spool().join("dead-letter.ndjson");
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let text = std::fs::read_to_string(&dead_letter).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}\n{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(dead.contains("RecordTooLarge"), "{dead}");
    assert!(
        dead.contains("exceeds the 1048576-byte maximum record size of stream \\\"logs\\\""),
        "{dead}"
    );
    let (_, body) = shardline::status::get(metrics, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.lines()
            .any(|l| l.starts_with("shardline_records_failed_total{")
                && l.contains("stream=\"logs\"")
                && l.ends_with(" 2")),
        "{body}"
    );
    let log = agent.stop().await;
    assert!(log.contains("MaxRecordSizeInKiB 1024"), "{log}");
}
