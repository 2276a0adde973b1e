//! The record formats' unit tests.

use super::*;
use serde_json::{json, Value};

fn formatter(merge: bool, fields: &[(&str, &str)]) -> JsonFormatter {
    let format = JsonFormat {
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        merge,
        ec2_identity: false,
        ..Default::default()
    };
    JsonFormatter::new(&format, "web-1", "/var/log/app.log", "file[0]")
}

/// Every record of `line`, with the cut.
fn records(
    f: &mut JsonFormatter,
    line: &[u8],
    limit: usize,
    oversized: Oversized,
) -> (Vec<Bytes>, Cut) {
    let mut out = Vec::new();
    let cut = f.format(line, limit, oversized, |b| out.push(b));
    (out, cut)
}

fn one(f: &mut JsonFormatter, line: &[u8]) -> Value {
    let (out, cut) = records(f, line, 1 << 20, Oversized::Split);
    assert_eq!((out.len(), cut), (1, Cut::None));
    serde_json::from_slice(&out[0]).expect("a record is JSON")
}

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default().as_bytes();
    s.len() == TIMESTAMP_BYTES
        && s[4] == b'-'
        && s[10] == b'T'
        && s[19] == b'.'
        && s[23] == b'Z'
        && s.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit())
}

#[test]
fn wraps_a_line_with_every_key() {
    let mut f = formatter(false, &[("env", "prod"), ("team", "a\"b")]);
    let v = one(&mut f, b"GET /health 200");
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 6, "{v}");
    assert_eq!(v["message"], "GET /health 200");
    assert_eq!(v["host"], "web-1");
    assert_eq!(v["source"], "/var/log/app.log");
    assert_eq!(v["env"], "prod");
    assert_eq!(v["team"], "a\"b");
    assert!(is_timestamp(&v["timestamp"]), "{v}");
}

#[test]
fn escapes_quotes_backslashes_controls_and_unicode() {
    let mut f = formatter(false, &[]);
    let line = "a\"b\\c\td\ne\u{1}f\u{7f}g é 日本 😀 </script>";
    let v = one(&mut f, line.as_bytes());
    assert_eq!(v["message"], line);
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    let mut f = formatter(false, &[]);
    let v = one(&mut f, b"ok \xff\xfe end");
    assert_eq!(v["message"], "ok \u{fffd}\u{fffd} end");
}

#[test]
fn merges_a_json_object_line_and_its_keys_win() {
    let mut f = formatter(true, &[("env", "prod")]);
    let v = one(
        &mut f,
        br#"  {"level":"info","host":"app-says","n":[1,{"source":2}]}  "#,
    );
    assert_eq!(v["level"], "info");
    assert_eq!(v["host"], "app-says", "the line's key wins");
    assert_eq!(v["n"], json!([1, {"source": 2}]));
    // Only a top-level key counts as present.
    assert_eq!(v["source"], "/var/log/app.log");
    assert_eq!(v["env"], "prod");
    assert!(is_timestamp(&v["timestamp"]), "{v}");
    assert!(v.get("message").is_none(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 6);

    let v = one(&mut f, b"{}");
    assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
    assert_eq!(v["host"], "web-1");
}

#[test]
fn a_line_that_is_not_a_json_object_is_wrapped_when_merging() {
    let mut f = formatter(true, &[]);
    for line in [
        &b"plain text"[..],
        br#"{"broken": "#,
        br#"{"a":1} trailing"#,
        br#"[1,2]"#,
        br#""a string""#,
        br#"{"a":1}{"b":2}"#,
        b"",
    ] {
        let v = one(&mut f, line);
        assert_eq!(v["message"], String::from_utf8_lossy(line).as_ref());
        assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
    }
}

#[test]
fn a_pathological_line_of_control_characters_is_split_within_the_limit() {
    let mut f = formatter(false, &[("env", "prod")]);
    let line = vec![1u8; 100_000]; // each byte escapes to six
    let limit = 64 * 1024;
    let (out, cut) = records(&mut f, &line, limit, Oversized::Split);
    assert_eq!(cut, Cut::Split);
    assert!(out.len() >= 100_000 * 6 / limit);
    let mut message = String::new();
    for r in &out {
        assert!(r.len() <= limit, "record of {} bytes", r.len());
        let v: Value = serde_json::from_slice(r).unwrap();
        assert_eq!(v["env"], "prod");
        message.push_str(v["message"].as_str().unwrap());
    }
    assert_eq!(message.as_bytes(), &line[..], "split loses nothing");
}

#[test]
fn truncation_keeps_the_head_within_the_limit_at_a_char_boundary() {
    let mut f = formatter(false, &[]);
    let line = "é\u{1}".repeat(50_000);
    let limit = 10_000;
    let (out, cut) = records(&mut f, line.as_bytes(), limit, Oversized::Truncate);
    assert_eq!((out.len(), cut), (1, Cut::Truncated));
    assert!(out[0].len() <= limit);
    // Filled close to the limit: at most one character's escape short.
    assert!(out[0].len() > limit - MAX_ESCAPE_GROWTH, "{}", out[0].len());
    let v: Value = serde_json::from_slice(&out[0]).unwrap();
    assert!(line.starts_with(v["message"].as_str().unwrap()));
}

#[test]
fn a_json_line_that_overflows_once_merged_is_wrapped_and_cut() {
    let mut f = formatter(true, &[]);
    let line = format!(r#"{{"k":"{}"}}"#, "x".repeat(1000));
    let (out, cut) = records(&mut f, line.as_bytes(), 1000, Oversized::Split);
    assert_eq!(cut, Cut::Split);
    let mut message = String::new();
    for r in &out {
        assert!(r.len() <= 1000);
        let v: Value = serde_json::from_slice(r).unwrap();
        message.push_str(v["message"].as_str().unwrap());
    }
    assert_eq!(message, line);
}

#[test]
fn fitting_prefix_counts_escapes_and_ends_at_a_char_boundary() {
    assert_eq!(fitting_prefix("abc", 3), 3);
    assert_eq!(fitting_prefix("a\"c", 3), 2);
    assert_eq!(fitting_prefix("a\"c", 2), 1);
    assert_eq!(fitting_prefix("\u{1}a", 6), 1);
    assert_eq!(fitting_prefix("\u{1}a", 5), 0);
    assert_eq!(fitting_prefix("aé", 2), 1);
    assert_eq!(fitting_prefix("aé", 3), 3);
    for s in ["a\"\\\n\t\u{0}\u{1f}\u{7f}é日😀", "plain"] {
        let mut out = Vec::new();
        escape(&mut out, s);
        let computed: usize = s.bytes().map(escaped_len).sum();
        assert_eq!(computed + 2, out.len(), "{s:?}");
    }
}

#[test]
fn escaping_matches_serde_json_at_every_position() {
    let mut all: Vec<u8> = (0u8..0x80).collect();
    all.extend_from_slice("é日😀 plain text of some length".as_bytes());
    // Every special byte at every offset within and across 8-byte words.
    for shift in 0..17 {
        let mut s = vec![b'x'; shift];
        s.extend_from_slice(&all);
        s.extend_from_slice(b"tail");
        let text = std::str::from_utf8(&s).unwrap();
        let mut want = Vec::new();
        escape(&mut want, text);
        let mut got = BytesMut::new();
        escape_into(&mut got, &s);
        assert_eq!(got.as_ref(), &want[..], "shift {shift}");
    }
}

#[test]
fn timestamps_are_rfc3339_utc_with_milliseconds() {
    let mut c = Clock::default();
    assert_eq!(&c.at(0, 0), b"1970-01-01T00:00:00.000Z");
    assert_eq!(&c.at(1_764_561_994, 123), b"2025-12-01T04:06:34.123Z");
    assert_eq!(&c.at(1_764_561_994, 7), b"2025-12-01T04:06:34.007Z");
    // 2024-02-29 (a leap day) at 23:59:59.
    assert_eq!(&c.at(1_709_251_199, 999), b"2024-02-29T23:59:59.999Z");
    assert_eq!(&c.at(951_782_400, 50), b"2000-02-29T00:00:00.050Z");
}

#[test]
fn escaping_matches_serde_json_at_every_position_of_a_block() {
    // Lines of every length around the block size, with each kind of byte that
    // needs an escape at every position (and a few at once), against serde_json.
    let specials = ["\"", "\\", "\n", "\t", "\u{1}", "\u{1f}", "é", "😀"];
    for len in 0..(3 * ESCAPE_BLOCK + 2) {
        for at in 0..=len {
            for (k, special) in specials.iter().enumerate() {
                let mut line: String = (0..len)
                    .map(|i| char::from(b'a' + ((i + k) % 26) as u8))
                    .collect();
                line.insert_str(at, special);
                if at % 7 == 3 {
                    line.push('"');
                }
                let mut out = BytesMut::new();
                escape_into(&mut out, line.as_bytes());
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    serde_json::to_string(&line).unwrap(),
                    "{line:?}"
                );
            }
        }
    }
}

/// Lines no application should write, but some do: invalid UTF-8 in keys,
/// values and between tokens, lone surrogate escapes, control bytes and NULs,
/// deep nesting, duplicate keys, numbers out of range, trailing bytes, a BOM.
fn hostile_corpus() -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = [
        &b"{\"a\":\"\xff\"}"[..],
        b"{\"a\":\"ok \xc3\x28 bad\"}",
        b"{\"\xfe\":1}",
        b"{\"a\":1,\xff\"b\":2}",
        b"{\"a\":1 \xff}",
        b"{\"a\":\"\xed\xa0\x80\"}",
        b"{\"a\":\"\xc0\x80\"}",
        b"{\"a\":\"\xf4\x90\x80\x80\"}",
        br#"{"a":"\ud800"}"#,
        br#"{"a":"\udc00"}"#,
        br#"{"a":"\ud800\u0041"}"#,
        br#"{"\ud800":1}"#,
        br#"{"a":["\ud800"]}"#,
        br#"{"a":"\ud83d\ude00"}"#,
        br#"{"a":"\x41"}"#,
        br#"{"a":"\u00zz"}"#,
        b"{\"a\":\"x\x00y\"}",
        b"{\"a\":1}\x00",
        b"\x00{\"a\":1}",
        br#"{"a":"x\u0000y"}"#,
        b"{\"a\":\"\x01\x1f\"}",
        b"{\"a\":\"tab\there\"}",
        b"{\"a\":\"\x7f\"}",
        br#"{"a":1,"a":2}"#,
        br#"{"host":"mine","host":"theirs","timestamp":1}"#,
        br#"{"a":1e400}"#,
        br#"{"a":-1e400}"#,
        br#"{"a":1e-400}"#,
        br#"{"a":123456789012345678901234567890123456789}"#,
        br#"{"a":NaN}"#,
        br#"{"a":Infinity}"#,
        br#"{"a":01}"#,
        br#"{"a":1} trailing"#,
        br#"{"a":1}{"b":2}"#,
        br#"{"a":1},"#,
        b"\xef\xbb\xbf{\"a\":1}",
        br#"{"a":"#,
        br#"{"a":1"#,
        br#"{}"#,
        b"{ \t}",
        br#"{"a":"unterminated}"#,
        b"\xff\xfe plain text",
        b"\xed\xa0\x80",
        b"plain \x00 nul and \x1b[31m colour",
        b"",
    ]
    .iter()
    .map(|l| l.to_vec())
    .collect();
    for depth in [64, 127, 128, 129, 200, 5000] {
        let mut l = b"{\"a\":".to_vec();
        l.extend(std::iter::repeat_n(b'[', depth));
        l.extend(std::iter::repeat_n(b']', depth));
        l.push(b'}');
        lines.push(l);
    }
    lines
}

/// Regression (issue 22, N5): a JSON line with invalid UTF-8 in a string value
/// was merged and sent as it was (serde's `IgnoredAny` skips a string's bytes
/// unchecked): 4 of 133 hostile records were not JSON. Every record of every
/// line, merged or wrapped, whole or cut, parses strictly.
#[test]
fn every_record_of_a_hostile_line_is_valid_json() {
    let fields = [("env", "pr\"od\u{0}"), ("k\\ey", "\u{1F600}")];
    let strict = |r: &Bytes, line: &[u8]| -> Value {
        std::str::from_utf8(r).unwrap_or_else(|e| panic!("{e}: {line:?} gave {r:?}"));
        serde_json::from_slice::<Value>(r).unwrap_or_else(|e| panic!("{e}: {line:?} gave {r:?}"))
    };
    for merge in [true, false] {
        let mut f = formatter(merge, &fields);
        for line in hostile_corpus() {
            for limit in [1 << 20, 300, 40] {
                let (out, _) = records(&mut f, &line, limit, Oversized::Split);
                assert!(!out.is_empty(), "{line:?}");
                for r in &out {
                    let v = strict(r, &line);
                    assert!(v.is_object(), "{line:?} gave {v}");
                }
            }
        }
    }
    // What is valid JSON is merged; what is not is wrapped as message.
    let mut f = formatter(true, &[]);
    let merged = |f: &mut JsonFormatter, line: &[u8]| one(f, line).get("message").is_none();
    for line in [
        &br#"{"a":"\ud83d\ude00"}"#[..],
        br#"{"a":1,"a":2}"#,
        br#"{"a":1e-400}"#,
        br#"{"a":123456789012345678901234567890123456789}"#,
        br#"{"a":"x\u0000y"}"#,
    ] {
        assert!(merged(&mut f, line), "{line:?}");
    }
    for line in [
        &b"{\"a\":\"\xff\"}"[..],
        b"{\"\xfe\":1}",
        br#"{"a":"\ud800"}"#,
        br#"{"\ud800":1}"#,
        br#"{"a":1e400}"#,
        b"{\"a\":\"x\x00y\"}",
        b"\xef\xbb\xbf{\"a\":1}",
        br#"{"a":1} trailing"#,
    ] {
        assert!(!merged(&mut f, line), "{line:?}");
    }
    let deep = |depth: usize| {
        let mut l = b"{\"a\":".to_vec();
        l.extend(std::iter::repeat_n(b'[', depth));
        l.extend(std::iter::repeat_n(b']', depth));
        l.push(b'}');
        l
    };
    assert!(merged(&mut f, &deep(100)));
    assert!(!merged(&mut f, &deep(200)));
    let v = one(&mut f, b"{\"a\":\"\xff\"}");
    assert_eq!(v["message"], "{\"a\":\"\u{FFFD}\"}");
}

fn with_ids(merge: bool) -> JsonFormatter {
    let format = JsonFormat {
        merge,
        id_key: Some("rid".into()),
        ..Default::default()
    };
    JsonFormatter::new(&format, "web-1", "/var/log/app.log", "file[0]")
}

#[test]
fn record_ids_are_a_key_and_a_cut_lines_pieces_get_suffixes() {
    let mut f = with_ids(false);
    f.set_id(b"ab12-40");
    let v = one(&mut f, b"GET / 200");
    assert_eq!(v["rid"], "ab12-40");
    assert_eq!(v["message"], "GET / 200");
    // Split: every piece within the limit, the id unique per piece.
    f.set_id(b"ab12-99");
    let line = "x".repeat(1000);
    let (out, cut) = records(&mut f, line.as_bytes(), 400, Oversized::Split);
    assert_eq!(cut, Cut::Split);
    let ids: Vec<String> = out
        .iter()
        .map(|r| {
            assert!(r.len() <= 400, "{}", r.len());
            let v: Value = serde_json::from_slice(r).unwrap();
            v["rid"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids[..3], ["ab12-99", "ab12-99.1", "ab12-99.2"]);
    // The next line starts over.
    f.set_id(b"ab12-100");
    assert_eq!(one(&mut f, b"y")["rid"], "ab12-100");
    // A formatter of a block without ids ignores them.
    let mut plain = formatter(false, &[]);
    plain.set_id(b"ab12-1");
    assert!(one(&mut plain, b"x").get("record_id").is_none());
}

#[test]
fn a_merged_line_gets_the_id_unless_it_has_the_key() {
    let mut f = with_ids(true);
    f.set_id(b"cd34-7");
    let v = one(&mut f, br#"{"level":"info"}"#);
    assert_eq!(
        (v["rid"].as_str(), v["level"].as_str()),
        (Some("cd34-7"), Some("info"))
    );
    f.set_id(b"cd34-8");
    let v = one(&mut f, br#"{"rid":"mine"}"#);
    assert_eq!(v["rid"], "mine");
}
