//! Apache access and error lines: real-looking lines, their edge cases, the
//! failures of broken lines, and the time formats against the times read.

use chrono::{DateTime, NaiveDateTime};
use proptest::prelude::*;

use super::super::super::value::{Failure, Fields};
use super::scan::to_json;
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
fn common_reads_the_documented_example() {
    let line =
        r#"192.0.2.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#;
    assert_eq!(
        read(common, line),
        r#"{"host":"192.0.2.1","ident":null,"user":"frank","time":"10/Oct/2000:13:55:36 -0700","method":"GET","path":"/apache_pb.gif","protocol":"HTTP/1.0","code":200,"size":2326}"#
    );
}

#[test]
fn combined_reads_an_ipv6_host_and_a_long_user_agent() {
    let line = r#"2001:db8::7 - - [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.1" 200 2326 "http://example.com/" "Mozilla/5.0 (X11; Linux x86_64)""#;
    assert_eq!(
        read(combined, line),
        r#"{"host":"2001:db8::7","ident":null,"user":null,"time":"10/Oct/2000:13:55:36 -0700","method":"GET","path":"/a.gif","protocol":"HTTP/1.1","code":200,"size":2326,"referer":"http://example.com/","agent":"Mozilla/5.0 (X11; Linux x86_64)"}"#
    );
    let agent = format!(
        "Mozilla/5.0 {}",
        "(KHTML, like Gecko) Chrome/120.0 ".repeat(40)
    );
    let line =
        format!(r#"::1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/2.0" 304 - "-" "{agent}""#);
    let mut out = Fields::default();
    combined(&line, &mut out).unwrap();
    assert_eq!(
        out.get("agent"),
        Some(&Value::Str(Cow::Borrowed(&agent[..])))
    );
    assert_eq!(out.get("size"), Some(&Value::Null));
    assert_eq!(out.get("referer"), Some(&Value::Null));
}

#[test]
fn escapes_in_quoted_fields_are_undone() {
    let line = r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET /say\"hi\" HTTP/1.1" 404 0 "http://x/\\path" "Agent \"Q\" \xe4\xb8\xad\t1""#;
    let json = read(combined, line);
    assert!(json.contains(r#""path":"/say\"hi\"""#), "{json}");
    assert!(json.contains(r#""referer":"http://x/\\path""#), "{json}");
    assert!(json.contains(r#""agent":"Agent \"Q\" 中\t1""#), "{json}");
    let bad_utf8 =
        r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET /\xff HTTP/1.1" 400 0 "-" "\x""#;
    let json = read(combined, bad_utf8);
    assert!(json.contains(r#""path":"/�""#), "{json}");
    assert!(json.contains(r#""agent":"\\x""#), "{json}");
}

#[test]
fn requests_that_do_not_split_in_three_are_all_in_the_path() {
    let line = |request: &str| {
        format!(r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "{request}" 400 226 "-" "-""#)
    };
    let parts = |request: &str| {
        let json = read(combined, &line(request));
        let from = json.find("\"method\"").unwrap();
        let to = json.find(",\"code\"").unwrap();
        json[from..to].to_string()
    };
    assert_eq!(parts("-"), r#""method":null,"path":null,"protocol":null"#);
    assert_eq!(parts(""), r#""method":null,"path":null,"protocol":null"#);
    assert_eq!(
        parts("GET /"),
        r#""method":null,"path":"GET /","protocol":null"#
    );
    assert_eq!(
        parts("GET /a b HTTP/1.1"),
        r#""method":null,"path":"GET /a b HTTP/1.1","protocol":null"#
    );
    assert_eq!(
        parts(r"\x16\x03\x01\x02"),
        r#""method":null,"path":"\u0016\u0003\u0001\u0002","protocol":null"#
    );
    assert_eq!(
        parts("OPTIONS * HTTP/1.0"),
        r#""method":"OPTIONS","path":"*","protocol":"HTTP/1.0""#
    );
}

#[test]
fn users_with_spaces_and_empty_users_are_read() {
    let line = r#"192.0.2.1 - john doe [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5"#;
    assert!(read(common, line).contains(r#""user":"john doe","time""#));
    let line = r#"192.0.2.1 ident "" [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 401 5"#;
    assert!(read(common, line).contains(r#""ident":"ident","user":"","#));
}

#[test]
fn text_after_the_last_field_is_ignored() {
    let line = r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "curl/8" 1534 "extra""#;
    assert!(read(combined, line).ends_with(r#""size":5,"referer":null,"agent":"curl/8"}"#));
    assert!(read(common, line).ends_with(r#""code":200,"size":5}"#));
}

#[test]
fn the_kinesis_agents_test_lines_read_the_same_values() {
    let line = r#"lj1036.inktomisearch.com - - [07/Mar/2004:17:18:36 -0800] "GET /robots.txt HTTP/1.0" 200 68"#;
    assert_eq!(
        read(common, line),
        r#"{"host":"lj1036.inktomisearch.com","ident":null,"user":null,"time":"07/Mar/2004:17:18:36 -0800","method":"GET","path":"/robots.txt","protocol":"HTTP/1.0","code":200,"size":68}"#
    );
    let line = r#"123.45.67.89 - - [27/Oct/2000:09:27:09 -0400] "GET /java/javaResources.html HTTP/1.0" 200 10450 "-" "Mozilla/4.6 [en] (X11; U; OpenBSD 2.8 i386; Nav)" "ANY_RANDOM_DATA""#;
    assert!(read(combined, line).ends_with(
        r#""referer":null,"agent":"Mozilla/4.6 [en] (X11; U; OpenBSD 2.8 i386; Nav)"}"#
    ));
}

#[test]
fn broken_access_lines_name_the_part_that_failed() {
    let head = r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700]"#;
    let cases: &[(&str, &str, usize)] = &[
        ("", "the client address", 0),
        ("192.0.2.1", "the ident", 9),
        ("192.0.2.1 - -", "the opening bracket of the time", 13),
        (
            "192.0.2.1 - - [10/Oct/2000:13:55:36 -0700",
            "the closing bracket of the time",
            41,
        ),
        (head, "the quoted request", 42),
        (
            r#"192.0.2.1 - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5"#,
            "the user",
            12,
        ),
    ];
    for &(line, part, at) in cases {
        assert_eq!(fails(common, line), (part.to_string(), at), "{line:?}");
    }
    let after = |rest: &str| format!("{head} {rest}");
    let at = head.len() + 1;
    let cases: &[(&str, &str, usize)] = &[
        (r#"GET / HTTP/1.1" 200 5"#, "the quoted request", at),
        (r#""GET / HTTP/1.1"#, "the quoted request", at + 15),
        (r#""GET / HTTP/1.1 \" 200 5"#, "the quoted request", at + 24),
        (r#""GET / HTTP/1.1" OK 5"#, "the status code", at + 17),
        (r#""GET / HTTP/1.1" 200"#, "the response size", at + 20),
        (r#""GET / HTTP/1.1" 200 "#, "the response size", at + 21),
        (r#""GET / HTTP/1.1" 200 12k"#, "the response size", at + 21),
        (
            r#""GET / HTTP/1.1" 99999999999999999999 5"#,
            "the status code",
            at + 17,
        ),
    ];
    for &(rest, part, at) in cases {
        assert_eq!(
            fails(common, &after(rest)),
            (part.to_string(), at),
            "{rest:?}"
        );
    }
    let line = after(r#""GET / HTTP/1.1" 200 5"#);
    assert_eq!(
        fails(combined, &line),
        ("the quoted referer".into(), line.len())
    );
    let line = after(r#""GET / HTTP/1.1" 200 5 "-" "curl"#);
    assert_eq!(
        fails(combined, &line),
        ("the quoted user agent".into(), line.len())
    );
}

#[test]
fn error_reads_24_lines() {
    let line = "[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 1234:tid 5678] [client 192.0.2.1:5678] AH00128: File does not exist: /var/www/favicon.ico";
    assert_eq!(
        read(error, line),
        r#"{"time":"Wed Oct 11 14:32:52.123456 2000","module":"core","level":"error","pid":1234,"tid":5678,"client":"192.0.2.1:5678","code":"AH00128","message":"File does not exist: /var/www/favicon.ico"}"#
    );
    let line = "[Sun Oct 25 13:27:38.466227 2020] [mpm_event:notice] [pid 3588:tid 140200786663168] AH00489: Apache/2.4.41 (Ubuntu) configured -- resuming normal operations";
    assert_eq!(
        read(error, line),
        r#"{"time":"Sun Oct 25 13:27:38.466227 2020","module":"mpm_event","level":"notice","pid":3588,"tid":140200786663168,"code":"AH00489","message":"Apache/2.4.41 (Ubuntu) configured -- resuming normal operations"}"#
    );
    let line = "[Fri Sep 09 10:42:29 2011] [php7:warn] [pid 35708] [client [2001:db8::1]:443] PHP Warning:  x in y";
    assert_eq!(
        read(error, line),
        r#"{"time":"Fri Sep 09 10:42:29 2011","module":"php7","level":"warn","pid":35708,"client":"[2001:db8::1]:443","message":"PHP Warning:  x in y"}"#
    );
    let line = "[Fri Sep 09 10:42:29 2011] [:error] [pid 1:tid 18446744073709551615] done";
    assert_eq!(
        read(error, line),
        r#"{"time":"Fri Sep 09 10:42:29 2011","level":"error","pid":1,"tid":"18446744073709551615","message":"done"}"#
    );
}

#[test]
fn error_keeps_the_file_and_system_error_at_the_start_of_the_message() {
    let line = "[Wed Jul 04 10:08:09.287452 2018] [proxy:error] [pid 1234:tid 99] (111)Connection refused: [client 192.0.2.1:1234] AH01114: HTTP: failed to make connection to backend: localhost";
    assert_eq!(
        read(error, line),
        r#"{"time":"Wed Jul 04 10:08:09.287452 2018","module":"proxy","level":"error","pid":1234,"tid":99,"client":"192.0.2.1:1234","code":"AH01114","message":"(111)Connection refused: HTTP: failed to make connection to backend: localhost"}"#
    );
    let line = "[Wed Jul 04 10:08:09 2018] [proxy:error] [pid 1234] (111)Connection refused: AH00957: HTTP: attempt to connect to 127.0.0.1:8080 (*) failed";
    assert!(read(error, line).ends_with(r#""pid":1234,"code":"AH00957","message":"(111)Connection refused: HTTP: attempt to connect to 127.0.0.1:8080 (*) failed"}"#));
    let line = "[Wed Jul 04 10:08:09 2018] [core:trace3] [pid 1] request.c(310): (13)Permission denied: [client ::1:50000] AH00035: access denied";
    assert!(read(error, line).ends_with(r#""client":"::1:50000","code":"AH00035","message":"request.c(310): (13)Permission denied: access denied"}"#));
    let line = "[Wed Jul 04 10:08:09 2018] [core:notice] [pid 1] (oops): [client x] y";
    assert!(read(error, line).ends_with(r#""pid":1,"message":"(oops): [client x] y"}"#));
}

#[test]
fn error_reads_22_lines() {
    let line = "[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] client denied by server configuration: /export/home/live/ap/htdocs/test";
    assert_eq!(
        read(error, line),
        r#"{"time":"Wed Oct 11 14:32:52 2000","level":"error","client":"127.0.0.1","message":"client denied by server configuration: /export/home/live/ap/htdocs/test"}"#
    );
    let line = "[Wed Oct 11 14:32:52 2000] [notice] Apache/2.2.22 (Ubuntu) configured";
    assert!(read(error, line)
        .ends_with(r#""level":"notice","message":"Apache/2.2.22 (Ubuntu) configured"}"#));
    let line = "[Wed Oct 11 14:32:52 2000] [notice]";
    assert!(read(error, line).ends_with(r#""level":"notice","message":""}"#));
}

#[test]
fn broken_error_lines_name_the_part_that_failed() {
    let t = "[Wed Oct 11 14:32:52 2000]";
    let cases: &[(String, &str, usize)] = &[
        ("Wed Oct 11".into(), "the opening bracket of the time", 0),
        (
            "[Wed Oct 11 14:32".into(),
            "the closing bracket of the time",
            17,
        ),
        (format!("{t}x"), "the space after the time", 26),
        (format!("{t} error"), "the opening bracket of the level", 27),
        (
            format!("{t} [error"),
            "the closing bracket of the level",
            33,
        ),
        (format!("{t} [pid 12] x"), "the level", 28),
        (format!("{t} [core:]"), "the level", 28),
        (format!("{t} [error] [pid x1]"), "the pid", 40),
        (format!("{t} [error] [pid 1:tid y]"), "the thread id", 46),
        (
            format!("{t} [error] [pid 1"),
            "the closing bracket of the pid",
            41,
        ),
        (
            format!("{t} [error] [client 1.2.3.4"),
            "the closing bracket of the client",
            50,
        ),
    ];
    for (line, part, at) in cases {
        assert_eq!(fails(error, line), (part.to_string(), *at), "{line:?}");
    }
}

#[test]
fn the_time_formats_read_the_times_the_presets_write() {
    for t in ["10/Oct/2000:13:55:36 -0700", "07/Mar/2004:17:18:36 +0000"] {
        assert_eq!(TIME.0, "time");
        DateTime::parse_from_str(t, TIME.1).expect(t);
    }
    for t in [
        "Wed Oct 11 14:32:52.123456 2000",
        "Wed Oct 11 14:32:52 2000",
    ] {
        assert_eq!(ERROR_TIME.0, "time");
        NaiveDateTime::parse_from_str(t, ERROR_TIME.1).expect(t);
    }
}

#[test]
fn every_prefix_of_a_line_reads_or_fails_without_panicking() {
    let lines = [
        r#"2001:db8::7 - j\"d [10/Oct/2000:13:55:36 -0700] "GET /ü\"\x41 HTTP/1.1" 200 2326 "ä" "é\\""#,
        "[Wed Jul 04 10:08:09 2018] [core:trace3] [pid 1:tid 2] request.c(310): (13)Permission denied: [client ::1:50000] AH00035: é",
    ];
    for line in lines {
        for (i, _) in line.char_indices() {
            for f in [common as Reader, combined, error] {
                let _ = f(&line[..i], &mut Fields::default());
            }
        }
    }
}

proptest! {
    #[test]
    fn no_string_makes_a_reader_panic(line in ".*") {
        for f in [common as Reader, combined, error] {
            let _ = f(&line, &mut Fields::default());
        }
    }

    #[test]
    fn no_bytes_make_a_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let line = String::from_utf8_lossy(&bytes);
        for f in [common as Reader, combined, error] {
            let _ = f(&line, &mut Fields::default());
        }
    }

    #[test]
    fn access_shaped_lines_never_panic(
        parts in proptest::collection::vec("[ -~\\\\\"\\[\\]é]{0,12}", 12),
    ) {
        let line = format!(
            "{} {} {} [{}] \"{}\" {} {} \"{}\" \"{}\"{}{}{}",
            parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6], parts[7],
            parts[8], parts[9], parts[10], parts[11]
        );
        for f in [common as Reader, combined, error] {
            let _ = f(&line, &mut Fields::default());
        }
    }
}
