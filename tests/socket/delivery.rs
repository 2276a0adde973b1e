//! What reaches the stream: datagrams as records, records acknowledged to
//! `shardline send` after a SIGKILL of the agent, and `send`'s own failures.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;

use super::frames_socket;
use crate::util::{
    check_shards_and_collect, config, create_stream, start_agent, wait_for, Emulator, Workdir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_are_records_and_oversized_ones_are_refused() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let sock = work.path("dgram.sock");
    let extra = format!(
        "[[socket]]\npath = \"{}\"\nmode = \"datagram\"\nmax_record_bytes = 1000\n",
        sock.display()
    );
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &extra)).await;
    let tx = tokio::net::UnixDatagram::unbound().unwrap();
    for i in 0..200 {
        tx.send_to(format!("<13>syslog message {i}").as_bytes(), &sock)
            .await
            .unwrap();
    }
    tx.send_to(&vec![b'x'; 5000], &sock).await.unwrap();
    tx.send_to(b"last", &sock).await.unwrap();
    let m = agent.metrics().clone();
    wait_for("datagrams delivered", Duration::from_secs(60), || {
        m.delivered_count("logs") >= 201
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
    assert_eq!(data.len(), 201);
    assert!(data.iter().any(|d| d.as_ref() == b"<13>syslog message 199"));
    agent.stop().await.unwrap();
}

/// Acked means durable: records acknowledged to `shardline send` survive a SIGKILL
/// of the agent right after the ack and reach the stream after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_sigkill() {
    let work = Workdir::new();
    let sock = work.path("acks.sock");
    let write_config = |endpoint: &str| {
        let path = work.path("shardline.toml");
        std::fs::write(
            &path,
            format!(
                "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n\
                 [delivery]\nmax_buffered_time_ms = 20\n[metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n\
                 # a long group-commit interval: only the acks' own flushes make records durable\n\
                 flush_interval_ms = 60000\n{}",
                work.spool().display(),
                frames_socket(&sock, "")
            ),
        )
        .unwrap();
        path
    };
    let spawn = |conf: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_shardline"))
            .args(["run", "--config"])
            .arg(conf)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // First run: Kinesis unreachable, so acked records can only be in the spool.
    let conf = write_config("http://127.0.0.1:9");
    let mut agent = spawn(&conf);
    wait_for("the socket", Duration::from_secs(30), || sock.exists()).await;
    let input = work.path("lines.txt");
    let lines: Vec<String> = (0..3000).map(|i| format!("acked-{i}")).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["send", "--ack", "--socket"])
        .arg(&sock)
        .arg(&input)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("acknowledged 3000"), "{stdout}");
    agent.kill().unwrap(); // SIGKILL, right after the ack
    agent.wait().unwrap();

    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let conf = write_config(&emu.endpoint);
    let mut agent = spawn(&conf);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let data = loop {
        let (_, data) = check_shards_and_collect(&client, "logs").await;
        if data.len() >= 3000 || std::time::Instant::now() > deadline {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    agent.kill().unwrap();
    agent.wait().unwrap();
    let got: HashSet<Bytes> = data.into_iter().collect();
    for l in &lines {
        assert!(got.contains(l.as_bytes()), "acked record {l} lost");
    }
}

#[test]
fn send_reports_refusals_with_a_failing_exit() {
    // Nothing listens: a clear error and a failing exit.
    let out = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["send", "--socket", "/nonexistent/shardline.sock"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// A framed request may name its stream: the socket's own, one of its
/// `streams` (by name, or by the ARN it was written as); any other is refused
/// with `INVALID_RECORD` and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_names_its_stream_among_those_the_socket_allows() {
    use shardline::testkit::frame::Status;

    use super::{encoded, exchange, request, status};

    let emu = Emulator::start().await;
    let client = emu.client().await;
    for (name, shards) in [("logs", 1), ("audit", 1), ("metrics", 1), ("other", 1)] {
        create_stream(&client, name, shards).await;
    }
    let work = Workdir::new();
    let sock = work.path("frames.sock");
    let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/metrics";
    let extra = frames_socket(&sock, &format!("streams = [\"audit\", \"{arn}\"]"));
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &extra)).await;
    let named = |id, stream: Option<&str>, data: &str| {
        let mut r = request(id, vec![("k", data)], true);
        r.stream = stream.map(str::to_owned);
        encoded(&r)
    };
    let mut wire = named(1, None, "to logs");
    wire.extend(named(2, Some("logs"), "to logs by name"));
    wire.extend(named(3, Some("audit"), "to audit"));
    wire.extend(named(4, Some(arn), "to metrics by ARN"));
    wire.extend(named(5, Some("metrics"), "to metrics by name"));
    wire.extend(named(6, Some("other"), "refused"));
    wire.extend(named(
        7,
        Some("arn:aws:kinesis:us-east-1:999999999999:stream/audit"),
        "refused",
    ));
    wire.extend(named(8, None, "after the refusals"));
    let answers = exchange(&sock, &wire).await;
    let got: Vec<(u64, Status)> = answers.iter().map(|a| (a.id, status(a))).collect();
    use Status::{InvalidRecord as Refused, Ok};
    assert_eq!(
        got,
        [
            (1, Ok),
            (2, Ok),
            (3, Ok),
            (4, Ok),
            (5, Ok),
            (6, Refused),
            (7, Refused),
            (8, Ok)
        ]
    );
    assert!(answers[5]
        .message
        .contains("\"other\" is not one this socket may write to"));
    let m = agent.metrics().clone();
    wait_for("records delivered", Duration::from_secs(60), || {
        m.delivered_count("logs") >= 3
            && m.delivered_count("audit") >= 1
            && m.delivered_count("metrics") >= 2
    })
    .await;
    for (stream, want) in [
        (
            "logs",
            vec!["after the refusals", "to logs", "to logs by name"],
        ),
        ("audit", vec!["to audit"]),
        ("metrics", vec!["to metrics by ARN", "to metrics by name"]),
        ("other", vec![]),
    ] {
        let mut data: Vec<String> = check_shards_and_collect(&client, stream)
            .await
            .1
            .into_iter()
            .map(|d| String::from_utf8(d.to_vec()).unwrap())
            .collect();
        data.sort();
        assert_eq!(data, want, "{stream}");
    }
    agent.stop().await.unwrap();
}
