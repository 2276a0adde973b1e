//! The parser's unit tests: patterns, names, types, times and explanations.

use std::sync::Arc;

use crate::config::parse::{FieldType, OnError, ParseConfig, ParserKind, TimeFormat};

use super::diagnose::top_level_parts;
use super::value::Value;
use super::{explain, read_time, EventTime, Parser};

fn pattern(p: &str, names: Option<&[&str]>) -> ParserKind {
    ParserKind::Pattern {
        regex: regex::Regex::new(p).unwrap(),
        field_names: names.map(|n| n.iter().map(|s| s.to_string()).collect()),
    }
}

fn parser(
    kind: ParserKind,
    types: &[(&str, FieldType)],
    time: Option<(&str, TimeFormat)>,
) -> Parser {
    Parser::new(Arc::new(ParseConfig {
        kind,
        types: types.iter().map(|(k, t)| (k.to_string(), *t)).collect(),
        time: time.map(|(k, f)| (k.to_string(), Some(f))),
        on_error: OnError::Wrap,
        keep_line: false,
        add_keys: true,
    }))
}

fn str_of<'a>(v: Option<&'a Value<'a>>) -> Option<&'a str> {
    match v {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

#[test]
fn named_groups_become_keys_in_pattern_order() {
    let p = parser(
        pattern(r"(?P<ip>\S+) (?P<code>\d+)(?: (?P<extra>x))?", None),
        &[],
        None,
    );
    let read = p.read("10.0.0.1 200").unwrap();
    let keys: Vec<&str> = read
        .fields
        .entries
        .iter()
        .map(|(k, _)| k.as_ref())
        .collect();
    // A group that did not take part is left out.
    assert_eq!(keys, ["ip", "code"]);
    assert_eq!(str_of(read.fields.get("ip")), Some("10.0.0.1"));
}

#[test]
fn field_names_name_every_group_and_a_missing_one_is_null() {
    let p = parser(
        pattern(r"^(\S+) (\d+)(?: (x))?$", Some(&["a", "b", "c"])),
        &[],
        None,
    );
    let read = p.read("h 7").unwrap();
    assert_eq!(str_of(read.fields.get("a")), Some("h"));
    assert_eq!(read.fields.get("c"), Some(&Value::Null));
}

#[test]
fn a_line_that_does_not_match_says_where() {
    let kind = pattern(r"^(?P<ip>\S+) (?P<code>\d+) (?P<took>[\d.]+)$", None);
    let p = parser(kind.clone(), &[], None);
    let failure = p.read("10.0.0.1 abc 0.5").unwrap_err();
    assert_eq!(failure.reason, "no_match");
    let why = explain(&kind, "10.0.0.1 abc 0.5", &failure);
    assert!(why.contains(r"(?P<code>\\d+)"), "{why}");
    assert!(why.contains("byte 9"), "{why}");
}

#[test]
fn patterns_cut_into_top_level_parts() {
    assert_eq!(
        top_level_parts(r"^(?P<a>x|y)\d+[a-z\]]*? \p{L}{2,3}é$").unwrap(),
        [
            "^",
            "(?P<a>x|y)",
            r"\d+",
            r"[a-z\]]*?",
            " ",
            r"\p{L}{2,3}",
            "é",
            "$"
        ]
    );
    assert_eq!(top_level_parts("a|b"), None);
}

#[test]
fn types_convert_and_a_value_that_does_not_stays_a_string() {
    let kind = pattern(r"(?P<n>\S+) (?P<f>\S+) (?P<b>\S+) (?P<bad>\S+)", None);
    let types = [
        ("n", FieldType::Int),
        ("f", FieldType::Float),
        ("b", FieldType::Bool),
        ("bad", FieldType::Int),
    ];
    let p = parser(kind, &types, None);
    let read = p.read("-42 2.5 yes 12x").unwrap();
    assert_eq!(read.fields.get("n"), Some(&Value::Int(-42)));
    assert_eq!(read.fields.get("f"), Some(&Value::Float(2.5)));
    assert_eq!(read.fields.get("b"), Some(&Value::Bool(true)));
    assert_eq!(str_of(read.fields.get("bad")), Some("12x"));
    assert_eq!(read.type_failures, 1);
}

#[test]
fn the_event_time_is_read_or_its_failure_noted() {
    let kind = pattern(r"(?P<t>\S+ \S+)", None);
    let format = TimeFormat::Strftime("%d/%b/%Y:%H:%M:%S %z".into());
    let p = parser(kind, &[], Some(("t", format)));
    let read = p.read("10/Oct/2000:13:55:36 -0700").unwrap();
    assert_eq!(read.time, Some(EventTime(971_211_336_000_000)));
    let read = p.read("10/Oct/2000:13:55:99 -0700").unwrap();
    assert_eq!((read.time, read.time_failed), (None, true));
}

#[test]
fn times_in_every_format() {
    let s = |t: &str| Value::Str(t.to_owned().into());
    let at = |v: Value, f: TimeFormat| read_time(&v, &f).map(|t| t.0);
    assert_eq!(
        at(s("2000-10-10T20:55:36.5Z"), TimeFormat::Rfc3339),
        Some(971_211_336_500_000)
    );
    assert_eq!(
        at(s("971211336"), TimeFormat::EpochS),
        Some(971_211_336_000_000)
    );
    assert_eq!(
        at(Value::Int(971_211_336_500), TimeFormat::EpochMs),
        Some(971_211_336_500_000)
    );
    assert_eq!(
        at(s("971211336500001"), TimeFormat::EpochUs),
        Some(971_211_336_500_001)
    );
    assert_eq!(at(s("1.5"), TimeFormat::EpochS), Some(1_500_000));
    // Without a zone: UTC.
    let f = TimeFormat::Strftime("%Y-%m-%d %H:%M:%S".into());
    assert_eq!(at(s("2000-10-10 20:55:36"), f), Some(971_211_336_000_000));
    assert_eq!(at(s("yesterday"), TimeFormat::Rfc3339), None);
    assert_eq!(at(s("1e300"), TimeFormat::EpochS), None);
}

#[test]
fn apache_times_read_as_chrono_reads_them() {
    let f = "%d/%b/%Y:%H:%M:%S %z";
    let texts = [
        "10/Oct/2000:13:55:36 -0700",
        "01/Jan/1970:00:00:00 +0000",
        "31/Dec/1969:23:59:59 +0000",
        "29/Feb/2024:12:00:00 +0530",
        "29/Feb/2023:12:00:00 +0000",
        "31/Apr/2023:12:00:00 +0000",
        "31/Dec/9999:23:59:59 -1200",
        "01/Jan/0000:00:00:00 +1400",
        "30/Jun/2015:23:59:60 +0000",
        "10/oct/2000:13:55:36 -0700",
        "10/October/2000:13:55:36 -0700",
        "1/Oct/2000:13:55:36 -0700",
        "10/Oct/2000:13:55:36 -07:00",
        "10/Oct/2000:24:00:00 +0000",
        "10/Oct/2000:13:60:00 +0000",
        "10/Oct/2000:13:55:36 +2400",
        "10/Oct/2000:13:55:36 -0061",
        "10/Oct/2000 13:55:36 +0000",
        "10/Oct/2000:13:55:36 Z0000",
        "00/Oct/2000:13:55:36 +0000",
        "10/Oct/2000:13:55:3a +0000",
    ];
    for text in texts {
        let chrono = chrono::DateTime::parse_from_str(text, f)
            .ok()
            .map(|t| t.timestamp_micros());
        let read = read_time(&Value::Str(text.into()), &TimeFormat::Strftime(f.into()));
        assert_eq!(read.map(|t| t.0), chrono, "{text}");
    }
}

#[test]
fn a_time_without_a_year_is_this_years_or_last_years() {
    use chrono::{Datelike, Duration};
    let f = TimeFormat::Strftime("%b %e %H:%M:%S".into());
    let now = EventTime::now();
    let today = chrono::DateTime::from_timestamp_micros(now.0).unwrap();
    let text = today.format("%b %e %H:%M:%S").to_string();
    let t = read_time(&Value::Str(text.into()), &f).unwrap();
    assert!((t.0 - now.0).abs() < 2_000_000, "{t:?} {now:?}");
    // Two days ahead is last year's (December's lines read in January).
    let ahead = today + Duration::days(2);
    let text = ahead.format("%b %e %H:%M:%S").to_string();
    let t = read_time(&Value::Str(text.into()), &f).unwrap();
    let year = chrono::DateTime::from_timestamp_micros(t.0).unwrap().year();
    assert_eq!(year, ahead.year() - 1);
}

#[test]
fn times_are_written_in_each_format() {
    let t = EventTime(971_211_336_500_000);
    let w = |f: TimeFormat| {
        let mut out = Vec::new();
        t.write(&f, &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(w(TimeFormat::EpochS), "971211336");
    assert_eq!(w(TimeFormat::EpochMs), "971211336500");
    assert_eq!(w(TimeFormat::EpochUs), "971211336500000");
    assert_eq!(w(TimeFormat::Rfc3339), "\"2000-10-10T20:55:36.500Z\"");
    assert_eq!(
        w(TimeFormat::Strftime("%d/%b/%Y %H".into())),
        "\"10/Oct/2000 20\""
    );
}
