//! Tests of a framed socket's `streams`: what a client may name, by name and by
//! ARN, and a message naming the key for every mistake.

use super::tests::{check, problems};

const BASE: &str = r#"
    [kinesis]
    region = "us-east-1"
    stream = "logs"
    [spool]
    dir = "/tmp/x"
"#;

#[test]
fn a_framed_socket_allows_its_own_stream_and_its_streams_by_name_and_arn() {
    let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/audit";
    let c = check(&format!(
        "{BASE}[[socket]]\npath = \"/tmp/a.sock\"\nframing = \"frames\"\nstream = \"app\"\nstreams = [\"{arn}\", \"metrics\", \"app\"]\n"
    ))
    .unwrap();
    let s = &c.sockets[0];
    assert_eq!(s.stream, "app");
    let allowed: Vec<(&str, &str)> = s
        .streams
        .iter()
        .map(|(n, k)| (n.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        allowed,
        [
            ("app", "app"),
            (arn, "audit"),
            ("audit", "audit"),
            ("metrics", "metrics")
        ]
    );
    // Each is delivered like any source's stream.
    assert_eq!(c.streams(), ["logs", "app", "audit", "metrics"]);
    // Without `streams`, only the socket's own.
    let c = check(&format!(
        "{BASE}[[socket]]\npath = \"/tmp/a.sock\"\nframing = \"frames\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.sockets[0].streams,
        [("logs".to_owned(), "logs".to_owned())]
    );
}

#[test]
fn streams_need_frames_and_valid_names() {
    let p = problems(&format!(
        "{BASE}[[socket]]\npath = \"/tmp/a.sock\"\nstreams = [\"audit\"]\n"
    ));
    assert!(
        p.contains("socket[0].streams needs framing = \"frames\""),
        "{p}"
    );
    let p = problems(&format!(
        "{BASE}[[socket]]\npath = \"/tmp/a.sock\"\nframing = \"frames\"\nstreams = [\"\", \"bad name!\", \"arn:aws:kinesis:nowhere\"]\n"
    ));
    assert!(p.contains("socket[0].streams[0] is empty"), "{p}");
    assert!(p.contains("socket[0].streams[1]"), "{p}");
    assert!(p.contains("socket[0].streams[2]"), "{p}");
    // Two ARNs with one name, here and in [kinesis]: refused as everywhere.
    let p = problems(
        "[kinesis]\nstream = \"arn:aws:kinesis:us-east-1:111111111111:stream/logs\"\n[spool]\ndir = \"/tmp/x\"\n\
         [[socket]]\npath = \"/tmp/a.sock\"\nframing = \"frames\"\nstreams = [\"arn:aws:kinesis:us-east-1:222222222222:stream/logs\"]\n",
    );
    assert!(p.contains("socket[0].streams[0]"), "{p}");
}
