//! Parsed records: keys, renames, the event time and the failure policy.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::parse::{FieldType, OnError, ParseConfig, ParserKind, TimeFormat};
use crate::config::{JsonFormat, Oversized};
use crate::metrics::Metrics;

use super::super::JsonFormatter;
use super::Tried;

fn formatter(
    pattern: &str,
    on_error: OnError,
    rename: &[(&str, &str)],
    tune: impl FnOnce(&mut ParseConfig, &mut JsonFormat),
) -> JsonFormatter {
    let mut parse = ParseConfig {
        kind: ParserKind::Pattern {
            regex: regex::Regex::new(pattern).unwrap(),
            field_names: None,
        },
        types: vec![],
        time: None,
        on_error,
        keep_line: false,
        add_keys: true,
    };
    let mut format = JsonFormat {
        fields: vec![("env".into(), "prod".into())],
        rename: rename
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        ..Default::default()
    };
    tune(&mut parse, &mut format);
    format.parse = Some(Arc::new(parse));
    JsonFormatter::new(&format, "web-1", "/var/log/a.log", "file[3]")
}

fn records(f: &mut JsonFormatter, line: &str) -> Vec<Value> {
    let mut out = Vec::new();
    f.format(line.as_bytes(), 1 << 20, Oversized::Split, |b| out.push(b));
    out.iter()
        .map(|b| {
            serde_json::from_slice(b)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into()))
        })
        .collect()
}

const PATTERN: &str = r"^(?P<ip>\S+) (?P<code>\d+) (?P<time>\S+)$";

#[test]
fn a_parsed_line_has_its_fields_then_the_added_keys() {
    let mut f = formatter(PATTERN, OnError::Wrap, &[], |p, _| {
        p.types = vec![("code".into(), FieldType::Int)];
    });
    let mut out = Vec::new();
    f.format(
        b"10.0.0.1 200 2000-10-10T20:55:36Z",
        1 << 20,
        Oversized::Split,
        |b| out.push(b),
    );
    let text = String::from_utf8(out[0].to_vec()).unwrap();
    let head = r#"{"ip":"10.0.0.1","code":200,"time":"2000-10-10T20:55:36Z","timestamp":""#;
    assert!(text.starts_with(head), "{text}");
    assert!(
        text.ends_with(r#"Z","host":"web-1","source":"/var/log/a.log","env":"prod"}"#),
        "{text}"
    );
}

#[test]
fn renames_apply_to_parsed_and_added_keys_and_empty_drops() {
    let rename = [
        ("ip", "client"),
        ("timestamp", "@timestamp"),
        ("host", ""),
        ("source", ""),
    ];
    let mut f = formatter(PATTERN, OnError::Wrap, &rename, |_, _| {});
    let r = &records(&mut f, "10.0.0.1 200 x")[0];
    assert_eq!(r["client"], "10.0.0.1");
    assert!(
        r.get("ip").is_none() && r.get("host").is_none() && r.get("source").is_none(),
        "{r}"
    );
    assert!(r["@timestamp"].is_string(), "{r}");
}

#[test]
fn the_event_time_is_the_timestamp_and_replaces_its_own_field() {
    let mut f = formatter(
        PATTERN,
        OnError::Wrap,
        &[("time", "timestamp")],
        |p, fmt| {
            p.time = Some(("time".into(), Some(TimeFormat::Rfc3339)));
            fmt.timestamp_format = TimeFormat::EpochMs;
        },
    );
    let r = &records(&mut f, "10.0.0.1 200 2000-10-10T20:55:36.5+00:00")[0];
    // The field renamed to the timestamp's name holds the event time, written
    // as the block's timestamp_format; no second timestamp is added.
    assert_eq!(r["timestamp"], json!(971_211_336_500u64), "{r}");
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.iter().filter(|k| **k == "timestamp").count(), 1);
}

#[test]
fn a_parsed_key_wins_over_an_added_one() {
    let mut f = formatter(
        r"^(?P<host>\S+) (?P<code>\d+)",
        OnError::Wrap,
        &[],
        |_, _| {},
    );
    let r = &records(&mut f, "db-7 500")[0];
    assert_eq!(r["host"], "db-7");
}

#[test]
fn keep_line_puts_the_line_under_message() {
    let mut f = formatter(PATTERN, OnError::Wrap, &[("message", "log")], |p, _| {
        p.keep_line = true
    });
    let r = &records(&mut f, "1.2.3.4 201 t")[0];
    assert_eq!(r["log"], "1.2.3.4 201 t");
}

#[test]
fn a_failure_is_wrapped_raw_or_dropped_and_always_counted() {
    let metrics = Metrics::new();
    for (on_error, action) in [
        (OnError::Wrap, "wrapped"),
        (OnError::Raw, "raw"),
        (OnError::Drop, "dropped"),
    ] {
        let mut f = formatter(PATTERN, on_error, &[], |_, _| {});
        let out = records(&mut f, "not a log \"line\"");
        match on_error {
            OnError::Wrap => {
                assert_eq!(out.len(), 1);
                assert_eq!(out[0]["message"], "not a log \"line\"");
                let error = out[0]["parse_error"].as_str().unwrap();
                assert!(error.starts_with("the line does not match"), "{error}");
                assert_eq!(out[0]["env"], "prod");
            }
            OnError::Raw => assert_eq!(out, [Value::String("not a log \"line\"".into())]),
            OnError::Drop => assert!(out.is_empty()),
        }
        f.report(&metrics);
        let labels = [
            ("block", "file[3]"),
            ("reason", "no_match"),
            ("action", action),
        ];
        assert_eq!(
            metrics.read("shardline_parse_errors_total", &labels),
            1,
            "{action}"
        );
    }
}

#[test]
fn parsed_lines_and_field_problems_are_counted_per_block() {
    let metrics = Metrics::new();
    let mut f = formatter(PATTERN, OnError::Wrap, &[], |p, _| {
        p.types = vec![("code".into(), FieldType::Bool)];
        p.time = Some(("time".into(), Some(TimeFormat::EpochS)));
    });
    records(&mut f, "1.2.3.4 201 later");
    records(&mut f, "1.2.3.4 202 123");
    f.report(&metrics);
    assert_eq!(
        metrics.read("shardline_lines_parsed_total", &[("block", "file[3]")]),
        2
    );
    let count = |reason, action| {
        metrics.read(
            "shardline_parse_errors_total",
            &[("block", "file[3]"), ("reason", reason), ("action", action)],
        )
    };
    assert_eq!(count("type", "kept_string"), 2);
    assert_eq!(count("time", "read_time"), 1);
}

#[test]
fn a_parsed_record_over_the_limit_is_a_failure() {
    let mut f = formatter(r"(?P<all>.*)", OnError::Wrap, &[], |_, _| {});
    let line = "x".repeat(3000);
    let mut out = Vec::new();
    let cut = f.format(line.as_bytes(), 2048, Oversized::Truncate, |b| out.push(b));
    assert_eq!(out.len(), 1);
    let r: Value = serde_json::from_slice(&out[0]).unwrap();
    assert!(out[0].len() <= 2048);
    assert!(
        r["parse_error"]
            .as_str()
            .unwrap()
            .contains("over the 2048-byte limit"),
        "{r}"
    );
    assert_eq!(cut, super::super::Cut::Truncated);
}

#[test]
fn trying_a_line_says_why_it_failed() {
    let mut f = formatter(PATTERN, OnError::Drop, &[], |_, _| {});
    match f.try_line(b"1.2.3.4 abc t", 1 << 20, Oversized::Split) {
        Tried::Failed { why, records } => {
            assert!(why.contains("(?P<code>"), "{why}");
            assert!(records.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.try_line(b"1.2.3.4 200 t", 1 << 20, Oversized::Split),
        Tried::Records(r, notes) if r.len() == 1 && notes.is_empty()
    ));
}

#[test]
fn integers_are_written_in_decimal() {
    for i in [0, 7, -7, 10, -10, 4096, 1 << 40, i64::MAX, i64::MIN] {
        let mut out = bytes::BytesMut::new();
        super::write_int(&mut out, i);
        assert_eq!(&out[..], i.to_string().as_bytes());
    }
}
