//! The json record format of the file and socket sources, read back from the
//! stream as a consumer does.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::util::{
    aws_env, config, create_stream, file_toml, send_lines, socket_toml, start_agent, stream_data,
    stream_objects as objects, wait_for, Emulator, Workdir,
};

/// RFC 3339, UTC, milliseconds: `2026-12-01T04:06:34.123Z`, within a minute of now.
fn check_timestamp(v: &Value) {
    let s = v.as_str().expect("timestamp is a string");
    let b = s.as_bytes();
    assert_eq!(b.len(), 24, "{s}");
    for (i, c) in b.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-', "{s}"),
            10 => assert_eq!(*c, b'T', "{s}"),
            13 | 16 => assert_eq!(*c, b':', "{s}"),
            19 => assert_eq!(*c, b'.', "{s}"),
            23 => assert_eq!(*c, b'Z', "{s}"),
            _ => assert!(c.is_ascii_digit(), "{s}"),
        }
    }
    let out = std::process::Command::new("date")
        .args(["-u", "-d", s, "+%s"])
        .output()
        .unwrap();
    let at: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        at <= now && now - at < 600,
        "{s} is not the time it was read"
    );
}

/// The host name as the kernel has it.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lines_become_json_objects_with_their_origin_and_fields() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let log = work.path("app.log");
    let mut f = std::fs::File::create(&log).unwrap();
    writeln!(f, "plain \"quoted\" line\twith tab").unwrap();
    writeln!(f, r#"{{"level":"info"}}"#).unwrap();
    // 3000 control bytes: 18000 once escaped, over the 4096-byte limit.
    f.write_all(&[1u8; 3000]).unwrap();
    writeln!(f).unwrap();
    writeln!(f, "last").unwrap();
    drop(f);
    let extra = file_toml(
        &[&log],
        "format = \"json\"\nfields = { env = \"prod\", team = \"web\" }\nmax_record_bytes = 4096\noversized = \"split\"",
    );
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &extra)).await;
    let m = agent.metrics().clone();
    wait_for("file records delivered", Duration::from_secs(60), || {
        m.delivered_count("logs") >= 7
    })
    .await;
    assert_eq!(
        m.read(
            "shardline_lines_oversized_total",
            &[("source", "file"), ("action", "split")]
        ),
        1
    );
    let records = objects(&client, "logs").await;
    let mut control = String::new();
    let mut messages = Vec::new();
    for r in &records {
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        assert_eq!(
            keys.len(),
            6,
            "message, timestamp, host, source, env, team: {keys:?}"
        );
        assert_eq!(r["host"], host().as_str());
        assert_eq!(r["source"], log.to_str().unwrap());
        assert_eq!(r["env"], "prod");
        assert_eq!(r["team"], "web");
        check_timestamp(&r["timestamp"]);
        let msg = r["message"].as_str().unwrap();
        if msg.starts_with('\u{1}') {
            control.push_str(msg);
        } else {
            messages.push(msg.to_owned());
        }
    }
    for d in stream_data(&client, "logs").await {
        assert!(d.len() <= 4096, "a record of {} bytes", d.len());
    }
    // Without json_merge a JSON line is nested as a string.
    messages.sort();
    assert_eq!(
        messages,
        [
            "last",
            "plain \"quoted\" line\twith tab",
            r#"{"level":"info"}"#
        ]
    );
    assert_eq!(control, "\u{1}".repeat(3000), "the split line is whole");
    assert!(records.len() >= 3 + 18000 / 4096);
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_lines_and_datagrams_are_wrapped_or_merged() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "lines", 1).await;
    create_stream(&client, "dgrams", 1).await;
    let work = Workdir::new();
    let sock = work.path("app.sock");
    let dgram = work.path("dgram.sock");
    let extra = format!(
        "{}format = \"json\"\njson_merge = true\nfields = {{ env = \"prod\" }}\n\
         [[socket]]\npath = \"{}\"\nmode = \"datagram\"\nstream = \"dgrams\"\nformat = \"json\"\n",
        socket_toml(&sock, Some("lines")),
        dgram.display()
    );
    let agent = start_agent(config(&work, &emu.endpoint, "lines", &extra)).await;
    send_lines(
        &sock,
        [
            r#"{"level":"warn","msg":"disk 91%","host":"the-app-says"}"#.to_string(),
            r#"{"broken":"#.to_string(),
            "not json at all".to_string(),
        ],
    )
    .await;
    let tx = tokio::net::UnixDatagram::unbound().unwrap();
    tx.send_to(b"<13>syslog \xff message", &dgram)
        .await
        .unwrap();
    let m = agent.metrics().clone();
    wait_for("socket records delivered", Duration::from_secs(60), || {
        m.delivered_count("lines") >= 3 && m.delivered_count("dgrams") >= 1
    })
    .await;

    let mut records = objects(&client, "lines").await;
    assert_eq!(records.len(), 3);
    records.sort_by_key(|r| r.contains_key("message"));
    let merged = &records[0];
    assert_eq!(merged.len(), 6, "{merged:?}");
    assert_eq!(merged["level"], "warn");
    assert_eq!(merged["msg"], "disk 91%");
    assert_eq!(merged["host"], "the-app-says", "the line's own key wins");
    assert_eq!(merged["source"], sock.to_str().unwrap());
    assert_eq!(merged["env"], "prod");
    check_timestamp(&merged["timestamp"]);
    let mut fallbacks: Vec<&str> = records[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 5, "{r:?}");
            assert_eq!(r["host"], host().as_str());
            assert_eq!(r["source"], sock.to_str().unwrap());
            assert_eq!(r["env"], "prod");
            check_timestamp(&r["timestamp"]);
            r["message"].as_str().unwrap()
        })
        .collect();
    fallbacks.sort();
    assert_eq!(fallbacks, ["not json at all", r#"{"broken":"#]);

    let records = objects(&client, "dgrams").await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.len(), 4, "{r:?}");
    assert_eq!(r["message"], "<13>syslog \u{fffd} message");
    assert_eq!(r["host"], host().as_str());
    assert_eq!(r["source"], dgram.to_str().unwrap());
    check_timestamp(&r["timestamp"]);
    agent.stop().await.unwrap();
}

/// A stand-in for the instance metadata service on 127.0.0.1: IMDSv2's token
/// and the identity document (only with the token). Counts document requests.
async fn imds_server(documents: Arc<AtomicUsize>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let documents = documents.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).to_lowercase();
                let (status, body) = if text.starts_with("put /latest/api/token ") {
                    ("200 OK", "imds-token-1".to_owned())
                } else if text.starts_with("get /latest/dynamic/instance-identity/document ") {
                    if text.contains("x-aws-ec2-metadata-token: imds-token-1") {
                        documents.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", r#"{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1b","imageId":"ami-1","instanceId":"i-0abc123def4567890","instanceType":"m7g.large","privateIp":"10.0.0.5","region":"eu-west-1","version":"2017-09-30"}"#.to_owned())
                    } else {
                        ("401 Unauthorized", String::new())
                    }
                } else {
                    ("404 Not Found", String::new())
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ec2_identity_is_read_once_through_imdsv2_and_added() {
    let documents = Arc::new(AtomicUsize::new(0));
    let imds = imds_server(documents.clone()).await;
    aws_env();
    // Only this test's blocks ask for the identity, and it is read once per
    // process: the endpoint may be set here.
    std::env::set_var(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://{imds}"),
    );
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let log = work.path("app.log");
    std::fs::write(&log, "from the file\n").unwrap();
    let sock = work.path("app.sock");
    let extra = format!(
        "{}format = \"json\"\nec2_identity = true\n{}format = \"json\"\nec2_identity = true\nfields = {{ env = \"prod\" }}\n",
        file_toml(&[&log], ""),
        socket_toml(&sock, None)
    );
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &extra)).await;
    send_lines(&sock, ["from the socket".to_string()]).await;
    let m = agent.metrics().clone();
    wait_for("records delivered", Duration::from_secs(60), || {
        m.delivered_count("logs") >= 2
    })
    .await;
    let mut records = objects(&client, "logs").await;
    records.sort_by_key(|r| r["message"].as_str().unwrap().to_owned());
    let sources: Vec<&Value> = records.iter().map(|r| &r["source"]).collect();
    assert_eq!(sources, [log.to_str().unwrap(), sock.to_str().unwrap()]);
    for r in &records {
        assert_eq!(r["instance_id"], "i-0abc123def4567890", "{r:?}");
        assert_eq!(r["region"], "eu-west-1");
        assert_eq!(r["az"], "eu-west-1b");
        assert_eq!(r["host"], host().as_str());
        check_timestamp(&r["timestamp"]);
    }
    assert_eq!(records[0].len(), 7, "{:?}", records[0]);
    assert_eq!(records[1].len(), 8, "{:?}", records[1]);
    assert_eq!(records[1]["env"], "prod");
    assert_eq!(
        documents.load(Ordering::SeqCst),
        1,
        "read once, for both blocks"
    );
    agent.stop().await.unwrap();
}
