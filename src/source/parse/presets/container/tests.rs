//! The container presets on single and joined records, the join rules, and
//! arbitrary text (never a panic).

use std::borrow::Cow;

use proptest::prelude::*;

use super::super::super::value::{Fields, Value};
use super::{cri, docker, Join};

fn s(v: &str) -> Value<'_> {
    Value::Str(Cow::Borrowed(v))
}

fn entries<'a>(f: &'a Fields<'a>) -> Vec<(&'a str, &'a Value<'a>)> {
    f.entries.iter().map(|(k, v)| (k.as_ref(), v)).collect()
}

#[test]
fn cri_reads_a_line() {
    let mut f = Fields::default();
    cri(
        "2016-10-06T00:17:09.669794202Z stdout F hello  world ",
        &mut f,
    )
    .unwrap();
    assert_eq!(
        entries(&f),
        [
            ("time", &s("2016-10-06T00:17:09.669794202Z")),
            ("stream", &s("stdout")),
            ("logtag", &s("F")),
            ("message", &s("hello  world ")),
        ]
    );
    assert!(matches!(f.entries[3].1, Value::Str(Cow::Borrowed(_))));
    let mut f = Fields::default();
    cri("2016-10-06T00:17:09Z stderr F", &mut f).unwrap();
    assert_eq!(f.get("message"), Some(&s("")));
}

#[test]
fn cri_reads_a_joined_record_as_one() {
    let record = "2016-10-06T00:17:09.1Z stdout P part one, \n2016-10-06T00:17:10.2Z stdout P two, \n2016-10-06T00:17:11.3Z stdout F three";
    let mut f = Fields::default();
    cri(record, &mut f).unwrap();
    assert_eq!(f.get("time"), Some(&s("2016-10-06T00:17:09.1Z")));
    assert_eq!(f.get("logtag"), Some(&s("F")));
    assert_eq!(f.get("message"), Some(&s("part one, two, three")));
}

#[test]
fn cri_failures() {
    let cases = [
        ("hello", "no_match", "the time", 0),
        (
            "2016-10-06T00:17:09Z stdin F x",
            "no_match",
            "the stream",
            21,
        ),
        (
            "2016-10-06T00:17:09Z stdout X x",
            "no_match",
            "the log tag",
            28,
        ),
        (
            "2016-10-06T00:17:09Z stdout P x",
            "incomplete",
            "a partial line (tag P) without its end",
            31,
        ),
        (
            "2016-10-06T00:17:09Z stdout P x\nnope",
            "no_match",
            "the time",
            32,
        ),
    ];
    for (line, reason, part, at) in cases {
        let e = cri(line, &mut Fields::default()).unwrap_err();
        assert_eq!(
            (e.reason, e.part.as_ref(), e.at),
            (reason, part, at),
            "{line}"
        );
    }
}

#[test]
fn docker_reads_a_line_and_a_joined_record() {
    let mut f = Fields::default();
    let line =
        r#"{"log":"hello \"you\"\n","stream":"stderr","time":"2019-04-10T08:12:13.123456789Z"}"#;
    docker(line, &mut f).unwrap();
    assert_eq!(
        entries(&f),
        [
            ("time", &s("2019-04-10T08:12:13.123456789Z")),
            ("stream", &s("stderr")),
            ("message", &s("hello \"you\"")),
        ]
    );
    let record = concat!(
        r#"{"log":"one ","stream":"stdout","time":"2019-04-10T08:12:13Z","attrs":{"a":"b"}}"#,
        "\n",
        r#"{"log":"two ","stream":"stdout","time":"2019-04-10T08:12:14Z"}"#,
        "\n",
        r#"{"log":"three\n","stream":"stdout","time":"2019-04-10T08:12:15Z"}"#,
    );
    let mut f = Fields::default();
    docker(record, &mut f).unwrap();
    assert_eq!(f.get("time"), Some(&s("2019-04-10T08:12:13Z")));
    assert_eq!(f.get("message"), Some(&s("one two three")));
    // The last output of a container, without a newline, is taken as it is.
    let mut f = Fields::default();
    docker(r#"{"log":"bye"}"#, &mut f).unwrap();
    assert_eq!(entries(&f), [("message", &s("bye"))]);
    assert!(matches!(f.entries[0].1, Value::Str(Cow::Borrowed("bye"))));
}

#[test]
fn docker_failures_point_at_the_line() {
    for (record, at) in [
        ("nope", 0),
        (r#"{"stream":"stdout"}"#, 0),
        ("{\"log\":\"a\"}\n{\"log\":1}", 19),
    ] {
        let e = docker(record, &mut Fields::default()).unwrap_err();
        assert_eq!(
            (e.reason, e.part.as_ref()),
            ("no_match", "the json-file object")
        );
        assert!(
            e.at <= record.len() && e.at >= at.min(record.len()),
            "{record}: {}",
            e.at
        );
    }
}

#[test]
fn join_rules() {
    let cri_p = b"2016-10-06T00:17:09Z stdout P a".as_slice();
    assert!(Join::Cri.continues(cri_p));
    assert!(!Join::Cri.continues(b"2016-10-06T00:17:09Z stdout F a"));
    assert!(!Join::Cri.continues(b"2016-10-06T00:17:09Z stdout P a\nt stdout F b"));
    assert!(Join::Cri.continues(b"t stdout F a\nt stdout P:x b"));
    assert!(!Join::Cri.continues(b"garbage"));
    let d = Join::Docker;
    assert!(d.continues(br#"{"log":"part","stream":"stdout"}"#));
    assert!(!d.continues(br#"{"log":"end\n","stream":"stdout"}"#));
    assert!(!d.continues(br#"{"stream":"stdout","log":"end\u000A"}"#));
    // An escaped backslash then `n` is not a newline.
    assert!(d.continues(br#"{"log":"a\\n"}"#));
    assert!(!d.continues(br#"{"log":"a\\\n"}"#));
    assert!(!d.continues(br#"{"log":"x \"log\":\"y\n"}"#));
    assert!(!d.continues(b"not json"));
    assert!(!d.continues(br#"{"log":"open"#));
    let q = Join::CsvQuote(b'"', b',');
    assert!(q.continues(b"a,\"b"));
    assert!(!q.continues(b"a,\"b\nc\",d"));
    assert!(!q.continues(b"a,\"b \"\"x\"\"\""));
    assert!(Join::CsvQuote(b'\'', b',').continues(b"'a\n''b"));
    // A quote opens a field only at the field's start, as the csv preset
    // (and Python's csv module) reads it: a stray one is data.
    assert!(!q.continues(b"5,a\"b,c"));
    assert!(!q.continues(b"6,\"x\"y,z"));
    assert!(q.continues(b"7,x\"y,\"open"));
    assert!(q.continues(b"a,\"b\nc,d"));
    assert!(!Join::CsvQuote(b'"', b';').continues(b"a,\"b;c"));
}

proptest! {
    #[test]
    fn continues_after_is_continues_line_by_line(
        lines in proptest::collection::vec("[\"a ,]{0,6}|t stdout [PF] x|\\{\"log\":\"a(\\\\n)?\"\\}", 1..6),
    ) {
        for join in [Join::Cri, Join::Docker, Join::CsvQuote(b'"', b',')] {
            let mut open = false;
            for (n, line) in lines.iter().enumerate() {
                open = join.continues_after(open, line.as_bytes());
                let record = lines[..=n].join("\n");
                prop_assert_eq!(open, join.continues(record.as_bytes()), "{:?} {:?}", join, record);
            }
        }
    }

    #[test]
    fn csv_join_agrees_with_the_csv_split(line in "[\"a ,]{0,10}") {
        // The framer joins exactly the records the csv preset would find
        // unclosed.
        let csv = super::super::csv::Csv { delimiter: b',', quote: Some(b'"') };
        let unclosed = csv.split(&line, &mut Vec::new()).is_err();
        prop_assert_eq!(Join::CsvQuote(b'"', b',').continues(line.as_bytes()), unclosed);
    }

    #[test]
    fn never_panics(line in any::<String>()) {
        let _ = cri(&line, &mut Fields::default());
        let _ = docker(&line, &mut Fields::default());
        for join in [Join::Cri, Join::Docker, Join::CsvQuote(b'"', b',')] {
            let _ = join.continues(line.as_bytes());
        }
    }

    #[test]
    fn never_panics_on_near_formats(line in "(2016-10-06T00:17:09Z |\\{\"log\":\")[a-zP F\\\\\"n\n:é]{0,30}") {
        let _ = cri(&line, &mut Fields::default());
        let _ = docker(&line, &mut Fields::default());
        let _ = Join::Docker.continues(line.as_bytes());
        let _ = Join::Cri.continues(line.as_bytes());
    }
}
