//! CSV splitting checked against Python's `csv.reader` (default dialect) and
//! the agent's split against Java's `String.split`.

use std::borrow::Cow;

use proptest::prelude::*;
use regex::Regex;

use super::{agent_split, Csv};

const COMMA: Csv = Csv {
    delimiter: b',',
    quote: Some(b'"'),
};

fn split(csv: Csv, line: &str) -> Vec<String> {
    let mut out = Vec::new();
    csv.split(line, &mut out).unwrap();
    out.into_iter().map(Cow::into_owned).collect()
}

/// Expected values: `list(csv.reader([line]))[0]` in Python 3.
#[test]
fn splits_as_python_csv_reader() {
    let cases: &[(&str, &[&str])] = &[
        ("a,b,c", &["a", "b", "c"]),
        ("a,,", &["a", "", ""]),
        (",", &["", ""]),
        ("", &[]),
        ("\"x\",\"\"", &["x", ""]),
        ("\"a\"\"b\",c", &["a\"b", "c"]),
        ("\"a\"\"\"", &["a\""]),
        ("\"\"\"\"", &["\""]),
        ("a\"b,c", &["a\"b", "c"]),
        ("\"ab\"c,d", &["abc", "d"]),
        (" \"a\",b", &[" \"a\"", "b"]),
        ("\"a\nb\",c", &["a\nb", "c"]),
        ("\"a,b\",c", &["a,b", "c"]),
    ];
    for (line, want) in cases {
        assert_eq!(split(COMMA, line), *want, "{line:?}");
    }
}

#[test]
fn fields_are_borrowed_unless_a_quote_was_doubled() {
    let mut out = Vec::new();
    COMMA
        .split("plain,\"quoted\",\"dou\"\"bled\"", &mut out)
        .unwrap();
    assert!(matches!(out[0], Cow::Borrowed("plain")));
    assert!(matches!(out[1], Cow::Borrowed("quoted")));
    assert!(matches!(&out[2], Cow::Owned(s) if s == "dou\"bled"));
}

#[test]
fn other_delimiters_and_no_quoting() {
    let tab = Csv {
        delimiter: b'\t',
        quote: Some(b'\''),
    };
    assert_eq!(split(tab, "'a\tb'\tc,d"), ["a\tb", "c,d"]);
    let none = Csv {
        delimiter: b';',
        quote: None,
    };
    assert_eq!(split(none, "\"a;b\";c"), ["\"a", "b\"", "c"]);
}

#[test]
fn an_unclosed_quote_is_incomplete() {
    let mut out = Vec::new();
    let e = COMMA.split("a,\"b\nc", &mut out).unwrap_err();
    assert_eq!((e.reason, e.at), ("incomplete", 2));
    let e = COMMA.split("\"a\"\"", &mut out).unwrap_err();
    assert_eq!(e.reason, "incomplete");
}

/// Expected values: `line.split(regex)` in Java 8 and later.
#[test]
fn agent_split_is_java_string_split() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("a,b,c", ",", &["a", "b", "c"]),
        ("a,b,,", ",", &["a", "b"]),
        (",a,,b", ",", &["", "a", "", "b"]),
        ("", ",", &[""]),
        (",", ",", &[]),
        (",,,", ",", &[]),
        ("abc", ",", &["abc"]),
        ("abc", "", &["a", "b", "c"]),
        ("a1b22c", "\\d+", &["a", "b", "c"]),
        ("a\tb  c", "\\s+", &["a", "b", "c"]),
        ("axb", "x*", &["a", "", "b"]),
        ("a|b", "\\|", &["a", "b"]),
        ("é,ü", "", &["é", ",", "ü"]),
    ];
    for (line, re, want) in cases {
        let re = Regex::new(re).unwrap();
        assert_eq!(agent_split(line, &re), *want, "{line:?} split {re:?}");
    }
}

/// Writes fields as RFC 4180 does (every field quoted, quotes doubled).
fn write(fields: &[String]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
        .collect();
    quoted.join(",")
}

proptest! {
    #[test]
    fn split_never_panics(line in any::<String>(), d in any::<u8>(), q in any::<Option<u8>>()) {
        let mut out = Vec::new();
        let _ = Csv { delimiter: d, quote: q }.split(&line, &mut out);
    }

    #[test]
    fn split_reads_what_was_written(fields in proptest::collection::vec(any::<String>(), 1..8)) {
        prop_assert_eq!(split(COMMA, &write(&fields)), fields);
    }

    #[test]
    fn agent_split_never_panics(line in any::<String>(), re in "[,;|x*+\\\\d\\\\s]{0,4}") {
        if let Ok(re) = Regex::new(&re) {
            let fields = agent_split(&line, &re);
            prop_assert!(fields.iter().all(|f| line.contains(f)));
        }
    }
}
