//! logfmt on the lines of go-logfmt's and Heroku's examples, on duplicate
//! keys and on arbitrary text (never a panic).

use std::borrow::Cow;

use proptest::prelude::*;

use super::super::super::value::{Fields, Value};
use super::parse;

fn read(line: &str) -> Vec<(String, Value<'_>)> {
    let mut f = Fields::default();
    parse(line, &mut f).unwrap();
    f.entries
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v))
        .collect()
}

fn s(v: &str) -> Value<'_> {
    Value::Str(Cow::Borrowed(v))
}

#[test]
fn reads_pairs_quoted_values_and_flags() {
    let line = r#"level=info msg="user \"bob\" logged in" took=12ms cached empty= url=/a?b=c"#;
    assert_eq!(
        read(line),
        [
            ("level".into(), s("info")),
            ("msg".into(), s("user \"bob\" logged in")),
            ("took".into(), s("12ms")),
            ("cached".into(), Value::Bool(true)),
            ("empty".into(), s("")),
            ("url".into(), s("/a?b=c")),
        ]
    );
}

#[test]
fn values_are_borrowed_unless_escaped() {
    let mut f = Fields::default();
    parse(r#"a="x y" b="x\ty" c=z"#, &mut f).unwrap();
    assert!(matches!(
        f.entries[0],
        (Cow::Borrowed("a"), Value::Str(Cow::Borrowed("x y")))
    ));
    assert!(matches!(&f.entries[1].1, Value::Str(Cow::Owned(v)) if v == "x\ty"));
    assert!(matches!(f.entries[2].1, Value::Str(Cow::Borrowed("z"))));
}

#[test]
fn decodes_json_escapes_and_keeps_others() {
    let line = r#"m="\\ \/ \n \u00e9 \ud83d\ude00 \q \ud800 end""#;
    assert_eq!(
        read(line),
        [("m".into(), s("\\ / \n é 😀 \\q \u{fffd} end"))]
    );
}

#[test]
fn the_last_value_of_a_key_wins_in_its_first_place() {
    assert_eq!(
        read("a=1 b=2 a=3"),
        [("a".into(), s("3")), ("b".into(), s("2"))]
    );
    // Past the linear scan: the map finds the repeats too.
    let line: String = (0..40).map(|i| format!("k{} ", i % 20)).collect::<String>() + "k3=x";
    let fields = read(&line);
    assert_eq!(fields.len(), 20);
    assert_eq!(fields[3], ("k3".into(), s("x")));
}

#[test]
fn failures() {
    let cases = [
        ("just some text", "no_match", "a key=value pair", 0),
        ("", "no_match", "a key=value pair", 0),
        ("a=1 =2", "no_match", "a key", 4),
        ("a=1 \"b\"=2", "no_match", "a key", 4),
        ("a\"b=1", "no_match", "a key", 1),
        ("a=\"x\"y", "no_match", "a space after a quoted value", 5),
        (
            "a=1 b=\"open",
            "incomplete",
            "a quoted value (no closing quote)",
            6,
        ),
        (
            "a=\"x\\\"",
            "incomplete",
            "a quoted value (no closing quote)",
            2,
        ),
    ];
    for (line, reason, part, at) in cases {
        let e = parse(line, &mut Fields::default()).unwrap_err();
        assert_eq!(
            (e.reason, e.part.as_ref(), e.at),
            (reason, part, at),
            "{line}"
        );
    }
}

proptest! {
    #[test]
    fn never_panics(line in any::<String>()) {
        let _ = parse(&line, &mut Fields::default());
    }

    #[test]
    fn never_panics_on_near_logfmt(line in "[a-zé= \"\\\\u0-9dDfF]{0,40}") {
        let _ = parse(&line, &mut Fields::default());
    }
}
