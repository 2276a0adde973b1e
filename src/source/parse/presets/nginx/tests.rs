//! nginx access and error lines: real-looking lines, their edge cases, the
//! failures of broken lines, and the time formats against the times read.

use chrono::{DateTime, NaiveDateTime};
use proptest::prelude::*;

use super::super::apache::scan::to_json;
use super::*;

type Reader = for<'a> fn(&'a str, &mut Fields<'a>) -> Result<(), Failure>;

fn read(f: Reader, line: &str) -> String {
    let mut out = Fields::default();
    match f(line, &mut out) {
        Ok(()) => to_json(&out),
        Err(e) => panic!("{line:?} fails: {e:?}"),
    }
}

fn fails(f: Reader, line: &str) -> (String, usize) {
    let mut out = Fields::default();
    let e = f(line, &mut out).expect_err(line);
    assert_eq!(e.reason, "no_match");
    assert!(out.entries.is_empty(), "{line:?} wrote {out:?}");
    (e.part.into_owned(), e.at)
}

#[test]
fn access_reads_the_documented_example() {
    let line = r#"203.0.113.9 - alice [02/Jan/2024:03:04:05 +0000] "GET /index.html?q=1 HTTP/1.1" 200 612 "-" "curl/8.5.0""#;
    assert_eq!(
        read(access, line),
        r#"{"remote":"203.0.113.9","user":"alice","time":"02/Jan/2024:03:04:05 +0000","method":"GET","path":"/index.html?q=1","protocol":"HTTP/1.1","code":200,"size":612,"referer":null,"agent":"curl/8.5.0"}"#
    );
}

#[test]
fn access_undoes_nginx_escapes_and_ignores_added_fields() {
    let line = r#"2001:db8::2 - - [02/Jan/2024:03:04:05 +0100] "GET /q?x=\x22y\x22 HTTP/2.0" 404 153 "https://example.com/a b" "Mozilla/5.0 \x22quoted\x22 \xC3\xA9" "198.51.100.1, 10.0.0.1""#;
    assert_eq!(
        read(access, line),
        r#"{"remote":"2001:db8::2","user":null,"time":"02/Jan/2024:03:04:05 +0100","method":"GET","path":"/q?x=\"y\"","protocol":"HTTP/2.0","code":404,"size":153,"referer":"https://example.com/a b","agent":"Mozilla/5.0 \"quoted\" é"}"#
    );
}

#[test]
fn access_reads_tls_probes_and_empty_requests() {
    let line =
        r#"192.0.2.7 - - [02/Jan/2024:03:04:05 +0000] "\x16\x03\x01\x00\xF1\x01" 400 157 "-" "-""#;
    let json = read(access, line);
    assert!(
        json.contains(
            r#""method":null,"path":"\u0016\u0003\u0001\u0000�\u0001","protocol":null,"code":400"#
        ),
        "{json}"
    );
    let line = r#"192.0.2.7 - - [02/Jan/2024:03:04:05 +0000] "" 400 0 "-" "-""#;
    assert!(read(access, line).contains(r#""method":null,"path":null,"protocol":null"#));
}

#[test]
fn broken_access_lines_name_the_part_that_failed() {
    let head = r#"192.0.2.7 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" "#;
    let cases: &[(String, &str, usize)] = &[
        (
            format!("{head}abc 0 \"-\" \"-\""),
            "the status code",
            head.len(),
        ),
        (format!("{head}200 0"), "the quoted referer", head.len() + 5),
        (
            format!("{head}200 0 \"-\" curl"),
            "the quoted user agent",
            head.len() + 10,
        ),
        (
            head[..30].to_string(),
            "the closing bracket of the time",
            30,
        ),
    ];
    for (line, part, at) in cases {
        assert_eq!(fails(access, line), (part.to_string(), *at), "{line:?}");
    }
}

#[test]
fn error_reads_the_documented_example() {
    let line = r#"2024/01/02 03:04:05 [error] 1234#0: *99 open() "/srv/www/favicon.ico" failed (2: No such file or directory), client: 192.0.2.1, server: example.com, request: "GET /favicon.ico HTTP/1.1", host: "example.com""#;
    assert_eq!(
        read(error, line),
        r#"{"time":"2024/01/02 03:04:05","level":"error","pid":1234,"tid":0,"cid":99,"message":"open() \"/srv/www/favicon.ico\" failed (2: No such file or directory)","client":"192.0.2.1","server":"example.com","request":"GET /favicon.ico HTTP/1.1","host":"example.com"}"#
    );
}

#[test]
fn error_reads_upstream_and_referrer_details() {
    let line = r#"2024/01/02 03:04:05 [error] 31#31: *4 connect() failed (111: Connection refused) while connecting to upstream, client: 2001:db8::1, server: _, request: "POST /api "x" HTTP/1.1", upstream: "http://127.0.0.1:8080/api", host: "a.example", referrer: "https://b.example/""#;
    assert_eq!(
        read(error, line),
        r#"{"time":"2024/01/02 03:04:05","level":"error","pid":31,"tid":31,"cid":4,"message":"connect() failed (111: Connection refused) while connecting to upstream","client":"2001:db8::1","server":"_","request":"POST /api \"x\" HTTP/1.1","upstream":"http://127.0.0.1:8080/api","host":"a.example","referrer":"https://b.example/"}"#
    );
}

#[test]
fn error_leaves_out_what_the_line_lacks() {
    let line = "2024/01/02 03:04:05 [notice] 1#1: start worker processes";
    assert_eq!(
        read(error, line),
        r#"{"time":"2024/01/02 03:04:05","level":"notice","pid":1,"tid":1,"message":"start worker processes"}"#
    );
    let line =
        "2024/01/02 03:04:05 [emerg] 1#0: bind() to 0.0.0.0:80 failed (98: Address already in use)";
    assert!(read(error, line).ends_with(
        r#""tid":0,"message":"bind() to 0.0.0.0:80 failed (98: Address already in use)"}"#
    ));
    let line = "2024/01/02 03:04:05 [info] 7#7: *12 client 192.0.2.1 closed keepalive connection";
    assert!(read(error, line)
        .ends_with(r#""cid":12,"message":"client 192.0.2.1 closed keepalive connection"}"#));
    let line = "2024/01/02 03:04:05 [warn] 7#7:";
    assert!(read(error, line).ends_with(r#""tid":7,"message":""}"#));
}

#[test]
fn error_keeps_a_tail_that_is_not_a_details_list_in_the_message() {
    let line = r#"2024/01/02 03:04:05 [info] 7#7: *3 client 192.0.2.1:5000 connected to 0.0.0.0:443, client: 192.0.2.1, server: 0.0.0.0:443, upstream: "10.0.0.1:443", bytes from/to client:0/0, bytes from/to upstream:0/0"#;
    let json = read(error, line);
    assert!(json.ends_with(r#"bytes from/to upstream:0/0"}"#), "{json}");
    assert!(!json.contains(r#""client":"#), "{json}");
    let line = "2024/01/02 03:04:05 [error] 7#7: *3 says , client: x, then, client: 192.0.2.1, server: a, host: \"h\"";
    assert!(read(error, line).ends_with(
        r#""message":"says , client: x, then","client":"192.0.2.1","server":"a","host":"h"}"#
    ));
    let line = "2024/01/02 03:04:05 [error] 7#7: *3 m, client: 192.0.2.1, client: 192.0.2.2";
    assert!(
        read(error, line).ends_with(r#""message":"m, client: 192.0.2.1","client":"192.0.2.2"}"#)
    );
}

#[test]
fn broken_error_lines_name_the_part_that_failed() {
    let cases: &[(&str, &str, usize)] = &[
        ("", "the time", 0),
        ("2024/01/02 03:04", "the time", 16),
        ("2024-01-02 03:04:05 [error] 1#1: x", "the time", 4),
        (
            "2024/01/02 03:04:05[error] 1#1: x",
            "the space after the time",
            19,
        ),
        (
            "2024/01/02 03:04:05 error 1#1: x",
            "the opening bracket of the level",
            20,
        ),
        (
            "2024/01/02 03:04:05 [error 1#1: x",
            "the closing bracket of the level",
            33,
        ),
        ("2024/01/02 03:04:05 [] 1#1: x", "the level", 21),
        (
            "2024/01/02 03:04:05 [error]1#1: x",
            "the space after the level",
            27,
        ),
        ("2024/01/02 03:04:05 [error] 1234: x", "the pid", 35),
        ("2024/01/02 03:04:05 [error] x#1: x", "the pid", 28),
        ("2024/01/02 03:04:05 [error] 1#1 x", "the thread id", 33),
        (
            "2024/01/02 03:04:05 [error] 1#1:x",
            "the space after the thread id",
            32,
        ),
    ];
    for &(line, part, at) in cases {
        assert_eq!(fails(error, line), (part.to_string(), at), "{line:?}");
    }
}

#[test]
fn the_time_formats_read_the_times_the_presets_write() {
    assert_eq!(ACCESS_TIME.0, "time");
    DateTime::parse_from_str("02/Jan/2024:03:04:05 +0000", ACCESS_TIME.1).unwrap();
    assert_eq!(ERROR_TIME.0, "time");
    NaiveDateTime::parse_from_str("2024/01/02 03:04:05", ERROR_TIME.1).unwrap();
}

#[test]
fn every_prefix_of_a_line_reads_or_fails_without_panicking() {
    let lines = [
        r#"2001:db8::2 - é [02/Jan/2024:03:04:05 +0100] "GET /\x22ü HTTP/2.0" 404 153 "ä" "\xC3""#,
        r#"2024/01/02 03:04:05 [error] 31#31: *4 é, client: ::1, server: _, request: "é", host: "ü""#,
    ];
    for line in lines {
        for (i, _) in line.char_indices() {
            for f in [access as Reader, error] {
                let _ = f(&line[..i], &mut Fields::default());
            }
        }
    }
}

proptest! {
    #[test]
    fn no_string_makes_a_reader_panic(line in ".*") {
        for f in [access as Reader, error] {
            let _ = f(&line, &mut Fields::default());
        }
    }

    #[test]
    fn no_bytes_make_a_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let line = String::from_utf8_lossy(&bytes);
        for f in [access as Reader, error] {
            let _ = f(&line, &mut Fields::default());
        }
    }

    #[test]
    fn error_shaped_lines_never_panic(
        level in "[a-z]{0,6}",
        ids in "[0-9#:*]{0,8}",
        items in proptest::collection::vec(
            ("(client|server|request|host|upstream|x)", "[ -~é]{0,10}"), 0..5),
    ) {
        let mut line = format!("2024/01/02 03:04:05 [{level}] {ids} m");
        for (k, v) in items {
            line.push_str(&format!(", {k}: {v}"));
        }
        let _ = error(&line, &mut Fields::default());
    }
}
