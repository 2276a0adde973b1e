//! Tests of the keys that name and pack Firehose streams: what a valid file
//! gives, and a message naming the key for every mistake.

use std::time::Duration;

use crate::config::*;
use crate::deliver::firehose::{Packing, MAX_LINE_BYTES};
use std::path::Path;

pub(in crate::config) fn check(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("test.toml"))
}

/// The problems of `text`, joined.
pub(in crate::config) fn problems(text: &str) -> String {
    match check(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => problems.join("\n"),
        Err(e) => e.to_string(),
    }
}

const BOTH_KINDS: &str = r#"
    [kinesis]
    region = "eu-west-1"
    stream = "logs"
    [spool]
    dir = "/tmp/x"
    [[file]]
    include = ["/var/log/app/*.log"]
    [[socket]]
    path = "/tmp/a.sock"
    delivery_stream = "web-logs"
    [[journald]]
    delivery_stream = "journal"
    [[destination]]
    delivery_stream = "web-logs"
    endpoint = "http://127.0.0.1:4573"
    packing_max_bytes = 512000
    packing_linger_ms = 250
"#;

#[test]
fn sources_write_to_both_kinds_and_firehose_streams_have_their_own_names() {
    let c = check(BOTH_KINDS).unwrap();
    assert_eq!(c.files[0].stream, "logs");
    assert_eq!(c.sockets[0].stream, "firehose:web-logs");
    assert_eq!(c.journald[0].stream, "firehose:journal");
    assert_eq!(
        c.streams(),
        ["logs", "firehose:web-logs", "firehose:journal"]
    );
    assert_eq!(
        c.delivery.packing,
        [(
            "firehose:web-logs".to_owned(),
            Packing {
                enabled: true,
                max_bytes: 512_000,
                linger: Duration::from_millis(250),
            }
        )]
    );
    let web = c.destination("firehose:web-logs");
    assert_eq!(web.endpoint.as_deref(), Some("http://127.0.0.1:4573"));
    assert_eq!(web.region.as_deref(), Some("eu-west-1"), "from [kinesis]");
    // Without a block: [kinesis]'s destination, which has no endpoint here.
    assert_eq!(
        c.destination("firehose:journal").region.as_deref(),
        Some("eu-west-1")
    );
}

#[test]
fn firehose_sources_get_the_firehose_record_limit() {
    let c = check(BOTH_KINDS).unwrap();
    assert_eq!(
        c.sockets[0].max_line_bytes, MAX_LINE_BYTES,
        "lowered from the default"
    );
    assert_eq!(
        c.files[0].max_record_bytes, MAX_FILE_RECORD_BYTES,
        "Kinesis keeps its own"
    );
    let text = BOTH_KINDS.replace(
        "delivery_stream = \"web-logs\"\n    [[journald]]",
        "delivery_stream = \"web-logs\"\n    max_record_bytes = 1048000\n    [[journald]]",
    );
    let all = problems(&text);
    assert!(
        all.contains(
            "socket[0].max_record_bytes 1048000 is above 1023999, the most a Firehose record holds"
        ),
        "{all}"
    );
    let text = BOTH_KINDS.replace(
        "[[journald]]\n    delivery_stream = \"journal\"",
        "[[journald]]\n    delivery_stream = \"journal\"\n    max_record_bytes = 1024000",
    );
    assert!(problems(&text).contains("journald[0].max_record_bytes 1024000 is above 1023999"));
}

#[test]
fn the_default_destination_may_be_a_firehose_stream() {
    let c = check(
        r#"
        [kinesis]
        delivery_stream = "web"
        endpoint = "http://127.0.0.1:4573"
        packing = false
        [spool]
        dir = "/tmp/x"
        [[file]]
        include = ["/var/log/*.log"]
    "#,
    )
    .unwrap();
    assert_eq!(c.kinesis.stream, "firehose:web");
    assert_eq!(c.files[0].stream, "firehose:web");
    assert_eq!(c.files[0].max_record_bytes, MAX_LINE_BYTES);
    assert!(!c.delivery.packing[0].1.enabled);
}

#[test]
fn every_firehose_mistake_is_named() {
    let all = problems(
        r#"
        [kinesis]
        stream = "logs"
        delivery_stream = "also"
        [spool]
        dir = "/tmp/x"
        [[file]]
        include = ["/var/log/*.log"]
        stream = "a"
        delivery_stream = "b"
        [[socket]]
        path = "/tmp/a.sock"
        delivery_stream = "bad name"
        [[socket]]
        path = "/tmp/b.sock"
        delivery_stream = "fh"
        [[socket]]
        path = "/tmp/c.sock"
        stream = "k2"
        [[destination]]
        stream = "k2"
        packing = false
        [[destination]]
        delivery_stream = "fh"
        packing_max_bytes = 2000000
        [[destination]]
        region = "us-east-1"
        [[destination]]
        delivery_stream = "fh"
        packing = false
        packing_linger_ms = 10
        [[destination]]
        delivery_stream = "nobody"
    "#,
    );
    for needle in [
        "kinesis sets both stream \"logs\" (a Kinesis data stream) and delivery_stream \"also\"",
        "file[0] sets both stream \"a\" (a Kinesis data stream) and delivery_stream \"b\"",
        "socket[0].delivery_stream \"bad name\" is not a valid Firehose stream name (1-64 characters",
        "destination[0].packing is for a Firehose stream (delivery_stream); a Kinesis stream's records are KPL-aggregated",
        "destination[1].packing_max_bytes 2000000 is outside 1..=1024000",
        "destination[2] names no stream: set stream (a Kinesis data stream) or delivery_stream (a Firehose stream)",
        "destination[3] names delivery_stream \"fh\" again",
        "destination[3].packing_linger_ms is set but packing = false",
        "destination[4] names delivery_stream \"nobody\", which no source writes",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let long = "x".repeat(65);
    let all = problems(&BOTH_KINDS.replace("\"journal\"", &format!("{long:?}")));
    assert!(all.contains("journald[0].delivery_stream"), "{all}");
}

#[test]
fn a_firehose_stream_needs_its_own_endpoint_when_kinesis_has_one() {
    let text = r#"
        [kinesis]
        stream = "logs"
        endpoint = "http://127.0.0.1:4567"
        [spool]
        dir = "/tmp/x"
        [[file]]
        include = ["/var/log/*.log"]
        delivery_stream = "web"
    "#;
    let all = problems(text);
    assert!(
        all.contains("delivery_stream \"web\" has no [[destination]] block, and kinesis.endpoint \"http://127.0.0.1:4567\" is the Kinesis endpoint of kinesis.stream: add a [[destination]] with delivery_stream = \"web\" and its own endpoint or region"),
        "{all}"
    );
    // With its own block, the Kinesis endpoint is not inherited.
    let c = check(&format!(
        "{text}\n[[destination]]\ndelivery_stream = \"web\"\nregion = \"eu-west-1\"\n"
    ))
    .unwrap();
    assert_eq!(c.destination("firehose:web").endpoint, None);
    // A Kinesis block inherits the Kinesis endpoint as before.
    let c = check(&format!(
        "{text}\n[[destination]]\ndelivery_stream = \"web\"\nendpoint = \"http://127.0.0.1:4573\"\n[[socket]]\npath = \"/tmp/a.sock\"\nstream = \"k2\"\n[[destination]]\nstream = \"k2\"\nprofile = \"p\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.destination("k2").endpoint.as_deref(),
        Some("http://127.0.0.1:4567")
    );
}

#[test]
fn a_block_for_the_default_firehose_stream_is_refused() {
    let all = problems(
        r#"
        [kinesis]
        delivery_stream = "web"
        [spool]
        dir = "/tmp/x"
        [[file]]
        include = ["/var/log/*.log"]
        [[destination]]
        delivery_stream = "web"
    "#,
    );
    assert!(
        all.contains("destination[0].delivery_stream \"web\" is kinesis.delivery_stream"),
        "{all}"
    );
}

#[test]
fn packing_keys_in_kinesis_need_a_delivery_stream() {
    let all = problems(&BOTH_KINDS.replace(
        "stream = \"logs\"\n    [spool]",
        "stream = \"logs\"\n    packing = true\n    [spool]",
    ));
    assert!(
        all.contains("kinesis.packing is for a Firehose stream"),
        "{all}"
    );
}

#[test]
fn aggregation_is_set_per_kinesis_stream_and_refused_for_firehose() {
    let base = r#"
        [spool]
        dir = "/tmp/x"
        [[socket]]
        path = "/run/a.sock"
        [[socket]]
        path = "/run/b.sock"
        stream = "other"
        [[socket]]
        path = "/run/c.sock"
        stream = "third"
        [[destination]]
        stream = "other"
        aggregate = true
    "#;
    let config = check(&format!(
        "[kinesis]\nstream = \"logs\"\nregion = \"eu-west-1\"\naggregate = false\n{base}"
    ))
    .unwrap();
    let d = &config.delivery;
    assert!(d.aggregate, "the default stays on");
    assert!(!d.aggregates("logs"));
    assert!(d.aggregates("other"));
    assert!(d.aggregates("third"));

    // [delivery]'s is every stream's default; a block still overrides it.
    let config = check(&format!(
        "[kinesis]\nstream = \"logs\"\nregion = \"eu-west-1\"\n[delivery]\naggregate = false\n{base}"
    ))
    .unwrap();
    let d = &config.delivery;
    assert!(!d.aggregates("logs"));
    assert!(d.aggregates("other"));
    assert!(!d.aggregates("third"));

    let all = problems(
        r#"
        [kinesis]
        region = "eu-west-1"
        delivery_stream = "fh"
        aggregate = false
        [spool]
        dir = "/tmp/x"
        [[socket]]
        path = "/run/a.sock"
        "#,
    );
    assert!(
        all.contains("kinesis.aggregate is for a Kinesis stream (stream); a Firehose stream's lines are packed instead (packing)"),
        "{all}"
    );
}
