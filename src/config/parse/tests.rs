//! Validation of the parse table, `rename` and `timestamp_format`.

use std::path::Path;

use crate::config::parse::{OnError, ParserKind, Preset, TimeFormat};
use crate::config::{parse, Config, ConfigError, RecordFormat};

fn check(blocks: &str) -> Result<Config, ConfigError> {
    let text = format!("[kinesis]\nstream = \"logs\"\n[spool]\ndir = \"/tmp/x\"\n{blocks}");
    parse(&text, Path::new("test.toml"))
}

fn problems(blocks: &str) -> String {
    check(blocks).expect_err("refused").to_string()
}

#[test]
fn a_parse_table_makes_the_records_json() {
    let c = check(
        r#"
        [[file]]
        include = ["/var/log/a.log"]
        rename = { timestamp = "@timestamp", host = "" }
        timestamp_format = "epoch_ms"
        [file.parse]
        preset = "COMBINEDAPACHELOG"
        field_names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
        on_error = "drop"
        time_key = "d"
        "#,
    )
    .unwrap();
    let RecordFormat::Json(j) = &c.files[0].format else {
        panic!("{:?}", c.files[0].format)
    };
    assert_eq!(j.timestamp_format, TimeFormat::EpochMs);
    assert_eq!(j.rename.len(), 2);
    let p = j.parse.as_ref().unwrap();
    assert!(matches!(
        p.kind,
        ParserKind::Preset {
            preset: Preset::AgentCombinedApache,
            ..
        }
    ));
    assert_eq!(p.on_error, OnError::Drop);
    assert_eq!(p.time, Some(("d".into(), None)));
    assert_eq!(c.files[0].block, "file[0]");
}

#[test]
fn every_parse_problem_is_named() {
    let text = problems(
        r#"
        [[file]]
        include = ["/var/log/a.log"]
        timestamp_format = "%Q"
        [file.parse]
        preset = "apache_combined"
        pattern = "x"
        [[file]]
        include = ["/var/log/b.log"]
        [file.parse]
        preset = "nope"
        [[file]]
        include = ["/var/log/c.log"]
        [file.parse]
        pattern = '(\d+'
        [[file]]
        include = ["/var/log/d.log"]
        [file.parse]
        pattern = '(\d+) (\w+)'
        time_key = "t"
        [[socket]]
        path = "/tmp/s.sock"
        [socket.parse]
        preset = "csv"
        header = true
        delimiter = "ab"
        [[socket]]
        path = "/tmp/t.sock"
        [socket.parse]
        preset = "SYSLOG"
        field_names = ["one"]
        "#,
    );
    for expected in [
        "file[0].parse sets both preset and pattern",
        "file[0].timestamp_format \"%Q\"",
        "file[1].parse.preset \"nope\" is not one of apache_common",
        "file[2].parse.pattern \"(\\\\d+\" is not a regular expression",
        "file[3].parse.pattern has no named group",
        "file[3].parse.time_key \"t\" needs time_format",
        "socket[0].parse.header = true needs a [[file]] block",
        "socket[0].parse.delimiter \"ab\" is not one ASCII character",
        "socket[1].parse.field_names names 1 keys; SYSLOG writes 5",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

#[test]
fn rename_needs_json_and_journald_parse_excludes_its_json_format() {
    let text = problems(
        r#"
        [[file]]
        include = ["/var/log/a.log"]
        rename = { a = "b", c = "b" }
        [[socket]]
        path = "/tmp/s.sock"
        format = "json"
        rename = { a = "b", c = "b" }
        [[journald]]
        format = "json"
        [journald.parse]
        preset = "logfmt"
        [[journald]]
        name = "other"
        rename = { a = "b" }
        "#,
    );
    for expected in [
        "file[0].rename needs format = \"json\"",
        "socket[0].rename gives two keys the name \"b\"",
        "journald[0]: a parse table and format = \"json\" exclude each other",
        "journald[1].rename needs a parse table",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

#[test]
fn csv_and_the_agents_csvtojson_are_read() {
    let c = check(
        r#"
        [[file]]
        include = ["/var/log/a.csv"]
        [file.parse]
        preset = "csv"
        header = true
        delimiter = ";"
        quote = ""
        [[file]]
        include = ["/var/log/b.tsv"]
        [file.parse]
        preset = "CSVTOJSON"
        field_names = ["a", "b"]
        delimiter = '\t'
        "#,
    )
    .unwrap();
    let kind = |i: usize| match &c.files[i].format {
        RecordFormat::Json(j) => j.parse.as_ref().unwrap().kind.clone(),
        RecordFormat::Raw => panic!("raw"),
    };
    assert!(matches!(
        kind(0),
        ParserKind::Csv {
            columns: None,
            delimiter: b';',
            quote: None
        }
    ));
    assert!(
        matches!(kind(1), ParserKind::AgentCsv { field_names, .. } if field_names == ["a", "b"])
    );
}
