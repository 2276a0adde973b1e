//! The syslog presets on the examples of RFC 3164 and RFC 5424, on what
//! rsyslog writes to files, and on arbitrary text (never a panic).

use proptest::prelude::*;

use super::super::super::value::{Failure, Fields, Value};
use super::{rfc3164, rfc5424};

/// The fields as `key=value` pairs, strings quoted.
fn render(f: &Fields<'_>) -> String {
    let pairs: Vec<String> = f
        .entries
        .iter()
        .map(|(k, v)| match v {
            Value::Str(s) => format!("{k}={s:?}"),
            Value::Int(n) => format!("{k}={n}"),
            Value::Json(j) => format!("{k}={j}"),
            other => format!("{k}={other:?}"),
        })
        .collect();
    pairs.join(" ")
}

fn read<'a>(parse: fn(&'a str, &mut Fields<'a>) -> Result<(), Failure>, line: &'a str) -> String {
    let mut f = Fields::default();
    parse(line, &mut f).unwrap();
    render(&f)
}

#[test]
fn rfc3164_reads_the_rfc_examples_and_rsyslog_files() {
    let cases = [
        (
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            "pri=34 facility=4 severity=2 time=\"Oct 11 22:14:15\" host=\"mymachine\" ident=\"su\" message=\"'su root' failed for lonvick on /dev/pts/8\"",
        ),
        // No tag: the message is everything after the host.
        (
            "<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
            "pri=13 facility=1 severity=5 time=\"Feb  5 17:32:18\" host=\"10.0.0.99\" message=\"Use the BFG!\"",
        ),
        (
            "Oct  1 02:04:05 web1 sshd[1234]: Accepted publickey for root",
            "time=\"Oct  1 02:04:05\" host=\"web1\" ident=\"sshd\" pid=1234 message=\"Accepted publickey for root\"",
        ),
        (
            "Oct 1 02:04:05 web1 postfix/smtpd[x1]: ",
            "time=\"Oct 1 02:04:05\" host=\"web1\" ident=\"postfix/smtpd\" pid=\"x1\" message=\"\"",
        ),
        (
            "2024-10-11T22:14:15.003+02:00 web1 kernel: [ 0.0] Linux  version",
            "time=\"2024-10-11T22:14:15.003+02:00\" host=\"web1\" ident=\"kernel\" message=\"[ 0.0] Linux  version\"",
        ),
        (
            "<0>Dec 31 23:59:59 h CRON[7]:",
            "pri=0 facility=0 severity=0 time=\"Dec 31 23:59:59\" host=\"h\" ident=\"CRON\" pid=7 message=\"\"",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(read(rfc3164, line), want, "{line}");
    }
}

#[test]
fn rfc3164_failures_name_the_part() {
    let cases = [
        ("<192>Oct 11 22:14:15 h t: m", "the PRI"),
        ("<1a>Oct 11 22:14:15 h t: m", "the PRI"),
        ("Okt 11 22:14:15 h t: m", "the time"),
        ("Oct 11 22:14 h t: m", "the time"),
        // §4.1.2: day 1 to 31, hour 00 to 23, minute and second 00 to 59.
        ("<34>Oct 11 25:14:15 h t: m", "the time"),
        ("<34>Oct 11 22:60:15 h t: m", "the time"),
        ("<34>Oct 11 22:14:60 h t: m", "the time"),
        ("<34>Oct 32 22:14:15 h t: m", "the time"),
        ("<34>Oct  0 22:14:15 h t: m", "the time"),
        ("<3>Oct 11 22:14:15", "the host"),
        ("Oct 11 22:14:15  h", "the host"),
        ("", "the time"),
    ];
    for (line, part) in cases {
        let e = rfc3164(line, &mut Fields::default()).unwrap_err();
        assert_eq!((e.reason, e.part.as_ref()), ("no_match", part), "{line}");
    }
}

#[test]
fn rfc5424_reads_the_rfc_examples() {
    let cases = [
        (
            "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed",
            "pri=34 facility=4 severity=2 version=1 time=\"2003-10-11T22:14:15.003Z\" host=\"mymachine.example.com\" app=\"su\" msgid=\"ID47\" message=\"'su root' failed\"",
        ),
        (
            "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time",
            "pri=165 facility=20 severity=5 version=1 time=\"2003-08-24T05:14:15.000003-07:00\" host=\"192.0.2.1\" app=\"myproc\" procid=\"8710\" message=\"%% It's time\"",
        ),
        (
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] \u{feff}An application event",
            "pri=165 facility=20 severity=5 version=1 time=\"2003-10-11T22:14:15.003Z\" host=\"mymachine.example.com\" app=\"evntslog\" msgid=\"ID47\" structured_data={\"exampleSDID@32473\":{\"iut\":\"3\",\"eventSource\":\"Application\",\"eventID\":\"1011\"}} message=\"An application event\"",
        ),
        (
            "<165>1 2003-10-11T22:14:15.003Z h evntslog - ID47 [exampleSDID@32473 iut=\"3\"][examplePriority@32473 class=\"high\"]",
            "pri=165 facility=20 severity=5 version=1 time=\"2003-10-11T22:14:15.003Z\" host=\"h\" app=\"evntslog\" msgid=\"ID47\" structured_data={\"exampleSDID@32473\":{\"iut\":\"3\"},\"examplePriority@32473\":{\"class\":\"high\"}}",
        ),
        ("<1>12 - - - - - -", "pri=1 facility=0 severity=1 version=12"),
        ("<1>1 - - - - - - ", "pri=1 facility=0 severity=1 version=1 message=\"\""),
    ];
    for (line, want) in cases {
        assert_eq!(read(rfc5424, line), want, "{line}");
    }
}

#[test]
fn rfc5424_structured_data_escapes_and_repeats() {
    let line = r#"<1>1 - - - - - [a x="q\"b\\s\]e\n" x="2"][b@1 y=""][a z="é ]"] m"#;
    let mut f = Fields::default();
    rfc5424(line, &mut f).unwrap();
    let Some(Value::Json(json)) = f.get("structured_data") else {
        panic!("no structured data: {f:?}");
    };
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"a": {"x": ["q\"b\\s]e\\n", "2"], "z": "é ]"}, "b@1": {"y": ""}})
    );
    assert_eq!(f.get("message"), Some(&Value::Str("m".into())));
}

#[test]
fn rfc5424_failures_name_the_part() {
    let cases = [
        ("1 - - - - - -", "the PRI"),
        ("<1>0 - - - - - -", "the version"),
        ("<1>1234 - - - - - -", "the version"),
        ("<1>1 - - - - -", "the msgid"),
        // §6.2.3: RFC 3339 with upper-case T and Z, 1 to 6 fraction digits,
        // no leap second.
        ("<1>1 yesterday h a - - -", "the timestamp"),
        ("<1>1 2026-12-06t16:22:03Z h a - - -", "the timestamp"),
        ("<1>1 2026-12-06T16:22:03z h a - - -", "the timestamp"),
        (
            "<1>1 2026-12-06T16:22:03.1234567Z h a - - -",
            "the timestamp",
        ),
        ("<1>1 2026-12-06T16:22:03. h a - - -", "the timestamp"),
        ("<1>1 2026-12-31T23:59:60Z h a - - -", "the timestamp"),
        ("<1>1 2026-13-06T16:22:03Z h a - - -", "the timestamp"),
        ("<1>1 2026-12-06T16:22:03+0100 h a - - -", "the timestamp"),
        ("<1>1 2026-12-06T16:22:03 h a - - -", "the timestamp"),
        // §6: printable US-ASCII, within each field's limit.
        ("<1>1 - h\u{f4}st a - - -", "the hostname"),
        (
            "<1>1 - h aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa - - -",
            "the app name",
        ),
        (
            "<1>1 - h a - mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm -",
            "the msgid",
        ),
        ("<1>1 - - - - - x", "the structured data"),
        ("<1>1 - - - - - [a", "the structured data"),
        ("<1>1 - - - - - [a b]", "a value in the structured data"),
        (
            "<1>1 - - - - - [a b=\"c]",
            "a value in the structured data (no closing quote)",
        ),
        ("<1>1 - - - - - [=]", "a name in the structured data"),
        ("<1>1 - - - - - [a]x", "the space before the message"),
    ];
    for (line, part) in cases {
        let e = rfc5424(line, &mut Fields::default()).unwrap_err();
        assert_eq!((e.reason, e.part.as_ref()), ("no_match", part), "{line}");
    }
}

proptest! {
    #[test]
    fn never_panic(line in any::<String>()) {
        let _ = rfc3164(&line, &mut Fields::default());
        let _ = rfc5424(&line, &mut Fields::default());
    }

    #[test]
    fn never_panic_on_near_syslog(line in "(<[0-9]{1,3}>)?(1 )?[-a-zA-Z0-9 :\\[\\]\"=\\\\.é]{0,60}") {
        let _ = rfc3164(&line, &mut Fields::default());
        let mut f = Fields::default();
        if rfc5424(&line, &mut f).is_ok() {
            if let Some(Value::Json(json)) = f.get("structured_data") {
                prop_assert!(serde_json::from_str::<serde_json::Value>(json).is_ok());
            }
        }
    }
}

/// RFC 3164 has no year: the time is read with a year put in front of it and
/// of the format (`%Y %b %e %H:%M:%S`), whichever way the day is padded.
#[test]
fn rfc3164_time_format_reads_the_times_written_with_a_year() {
    let (key, format) = super::RFC3164_TIME;
    assert_eq!(key, "time");
    for time in ["Oct  1 02:04:05", "Oct 1 02:04:05", "Oct 01 02:04:05"] {
        let t =
            chrono::NaiveDateTime::parse_from_str(&format!("2024 {time}"), &format!("%Y {format}"));
        assert_eq!(t.unwrap().to_string(), "2024-10-01 02:04:05", "{time}");
    }
}
