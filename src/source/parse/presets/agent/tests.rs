//! The Kinesis Agent's formats against the agent's own test lines and the
//! records its tests expect (`DataConverterTest.java`, `apache_test_log`,
//! `syslog_test` in awslabs/amazon-kinesis-agent), written here as the agent
//! writes them minus its final newline, and against the corners of its
//! patterns.

use chrono::{DateTime, NaiveDateTime};
use proptest::prelude::*;

use super::super::apache::scan::to_json;
use super::*;

type Reader = for<'a> fn(&'a str, &mut Fields<'a>) -> Result<(), Failure>;

const ALL: [Reader; 5] = [
    common_apache,
    combined_apache,
    apache_error,
    syslog,
    rfc3339_syslog,
];

/// The record as JSON text, or `None` when the agent would skip the line.
fn read(f: Reader, line: &str) -> Option<String> {
    let mut out = Fields::default();
    f(line, &mut out).ok().map(|()| to_json(&out))
}

#[test]
fn each_pattern_has_a_group_per_key() {
    for format in FORMATS.iter() {
        assert_eq!(
            format.regex.captures_len(),
            format.keys.len() + 1,
            "{}",
            format.name
        );
    }
}

#[test]
fn data_converter_test_apache_lines() {
    let combined = r#"123.45.67.89 - - [27/Oct/2000:09:27:09 -0400] "GET /java/javaResources.html HTTP/1.0" 200 10450 "-" "Mozilla/4.6 [en] (X11; U; OpenBSD 2.8 i386; Nav)" "ANY_RANDOM_DATA""#;
    assert_eq!(
        read(combined_apache, combined).unwrap(),
        r#"{"host":"123.45.67.89","ident":null,"authuser":null,"datetime":"27/Oct/2000:09:27:09 -0400","request":"GET /java/javaResources.html HTTP/1.0","response":"200","bytes":"10450","referer":null,"agent":"Mozilla/4.6 [en] (X11; U; OpenBSD 2.8 i386; Nav)"}"#
    );
    let expected = r#"{"host":"123.45.67.89","ident":null,"authuser":null,"datetime":"27/Oct/2000:09:27:09 -0400","request":"GET /java/javaResources.html HTTP/1.0","response":"200","bytes":"10450"}"#;
    let with_more = r#"123.45.67.89 - - [27/Oct/2000:09:27:09 -0400] "GET /java/javaResources.html HTTP/1.0" 200 10450 "-" "Mozilla/4.6 [en] (X11; U; OpenBSD 2.8 i386; Nav)""#;
    assert_eq!(read(common_apache, with_more).unwrap(), expected);
    let without = r#"123.45.67.89 - - [27/Oct/2000:09:27:09 -0400] "GET /java/javaResources.html HTTP/1.0" 200 10450"#;
    assert_eq!(read(common_apache, without).unwrap(), expected);
    let hostname = r#"lj1036.inktomisearch.com - - [27/Oct/2000:09:27:09 -0400] "GET /java/javaResources.html HTTP/1.0" 200 10450"#;
    assert_eq!(
        read(common_apache, hostname).unwrap(),
        r#"{"host":"lj1036.inktomisearch.com","ident":null,"authuser":null,"datetime":"27/Oct/2000:09:27:09 -0400","request":"GET /java/javaResources.html HTTP/1.0","response":"200","bytes":"10450"}"#
    );
    let invalid = r#"123.45.67.89 - - [27/Oct/2000:09:27:09 -0400] "GET /java/javaResources.html HTTP/1.0" 200"#;
    assert_eq!(read(common_apache, invalid), None);
}

#[test]
fn data_converter_test_error_lines() {
    let typical = "[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico";
    assert_eq!(
        read(apache_error, typical).unwrap(),
        r#"{"timestamp":"Fri Sep 09 10:42:29.902022 2011","module":"core","severity":"error","processid":"35708","threadid":"4328636416","client":"72.15.99.187","message":"File does not exist: /usr/local/apache2/htdocs/favicon.ico"}"#
    );
    let without_tid = "[Fri Sep 09 10:42:29 2011] [core:error] [pid 35708] [client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico";
    assert_eq!(
        read(apache_error, without_tid).unwrap(),
        r#"{"timestamp":"Fri Sep 09 10:42:29 2011","module":"core","severity":"error","processid":"35708","threadid":null,"client":"72.15.99.187","message":"File does not exist: /usr/local/apache2/htdocs/favicon.ico"}"#
    );
    let without_module = "[Fri Sep 09 10:42:29.902022 2011] [error] [pid 35708:tid 4328636416] [client 72.15.99.187:12345] File does not exist: /usr/local/apache2/htdocs/favicon.ico";
    assert_eq!(
        read(apache_error, without_module).unwrap(),
        r#"{"timestamp":"Fri Sep 09 10:42:29.902022 2011","module":null,"severity":"error","processid":"35708","threadid":"4328636416","client":"72.15.99.187:12345","message":"File does not exist: /usr/local/apache2/htdocs/favicon.ico"}"#
    );
}

#[test]
fn data_converter_test_syslog_lines() {
    let with_pid = "Mar 12 12:00:08 server2 rcd[308]: Loaded 12 packages in 'ximian-red-carpet|351' (0.01878 seconds) ";
    assert_eq!(
        read(syslog, with_pid).unwrap(),
        r#"{"timestamp":"Mar 12 12:00:08","hostname":"server2","program":"rcd","processid":"308","message":"Loaded 12 packages in 'ximian-red-carpet|351' (0.01878 seconds) "}"#
    );
    let without_pid = "Mar 12 12:01:02 server4 snort: Ports to decode telnet on: 21 23 25 119";
    assert_eq!(
        read(syslog, without_pid).unwrap(),
        r#"{"timestamp":"Mar 12 12:01:02","hostname":"server4","program":"snort","processid":null,"message":"Ports to decode telnet on: 21 23 25 119"}"#
    );
}

/// `apache_test_log` (two of its lines skipped) and `apache_test_log_json`.
#[test]
fn apache_test_log_reads_as_apache_test_log_json() {
    let log = r#"64.242.88.10 - - [07/Mar/2004:16:05:49 -0800] "GET /twiki/bin/edit/Main/Double_bounce_sender?topicparent=Main.ConfigurationVariables HTTP/1.1" 401 12846
64.242.88.10 - - [07/Mar/2004:16:06:51 -0800] "GET /twiki/bin/rdiff/TWiki/NewUserTemplate?rev1=1.3&rev2=1.2 HTTP/1.1" 200
64.242.88.10 - - [07/Mar/2004:16:10:02 -0800] "GET /mailman/listinfo/hsdivision HTTP/1.1" 200 6291
64.242.88.10 - - [07/Mar/2004:16:11:58 -0800] "GET /twiki/bin/view/TWiki/WikiSyntax HTTP/1.1" 200 7352
64.242.88.10 - - [07/Mar/2004:16:20:55 -0800] "GET /twiki/bin/view/Main/DCCAndPostFix HTTP/1.1" 200 5253
64.242.88.10 - - [07/Mar/2004:16:23:12 -0800] "GET /twiki/bin/oops/TWiki/AppendixFileSystem?template=oopsmore¶m1=1.12¶m2=1.12 HTTP/1.1" 200 11382
64.242.88.10 - - [07/Mar/2004:16:24:16 -0800] "GET /twiki/bin/view/Main/PeterThoeny HTTP/1.1"
lj1036.inktomisearch.com - - [07/Mar/2004:17:18:36 -0800] "GET /robots.txt HTTP/1.0" 200 68
lj1090.inktomisearch.com - - [07/Mar/2004:17:18:41 -0800] "GET /twiki/bin/view/Main/LondonOffice HTTP/1.0" 200 3860"#;
    let json = r#"{"host":"64.242.88.10","ident":null,"authuser":null,"datetime":"07/Mar/2004:16:05:49 -0800","request":"GET /twiki/bin/edit/Main/Double_bounce_sender?topicparent=Main.ConfigurationVariables HTTP/1.1","response":"401","bytes":"12846"}
{"host":"64.242.88.10","ident":null,"authuser":null,"datetime":"07/Mar/2004:16:10:02 -0800","request":"GET /mailman/listinfo/hsdivision HTTP/1.1","response":"200","bytes":"6291"}
{"host":"64.242.88.10","ident":null,"authuser":null,"datetime":"07/Mar/2004:16:11:58 -0800","request":"GET /twiki/bin/view/TWiki/WikiSyntax HTTP/1.1","response":"200","bytes":"7352"}
{"host":"64.242.88.10","ident":null,"authuser":null,"datetime":"07/Mar/2004:16:20:55 -0800","request":"GET /twiki/bin/view/Main/DCCAndPostFix HTTP/1.1","response":"200","bytes":"5253"}
{"host":"64.242.88.10","ident":null,"authuser":null,"datetime":"07/Mar/2004:16:23:12 -0800","request":"GET /twiki/bin/oops/TWiki/AppendixFileSystem?template=oopsmore¶m1=1.12¶m2=1.12 HTTP/1.1","response":"200","bytes":"11382"}
{"host":"lj1036.inktomisearch.com","ident":null,"authuser":null,"datetime":"07/Mar/2004:17:18:36 -0800","request":"GET /robots.txt HTTP/1.0","response":"200","bytes":"68"}
{"host":"lj1090.inktomisearch.com","ident":null,"authuser":null,"datetime":"07/Mar/2004:17:18:41 -0800","request":"GET /twiki/bin/view/Main/LondonOffice HTTP/1.0","response":"200","bytes":"3860"}"#;
    let read: Vec<String> = log.lines().filter_map(|l| read(common_apache, l)).collect();
    assert_eq!(read, json.lines().collect::<Vec<_>>());
}

/// `syslog_test` and `syslog_test_json`.
#[test]
fn syslog_test_reads_as_syslog_test_json() {
    let log = "Mar 12 12:00:08 server2 rcd[308]: Unable to downloaded licenses info: Unable to authenticate - Authorization Required (https://server2/data/red-carpet.rdf)
Mar 12 12:10:00 server2 /USR/SBIN/CRON[6808]: (root) CMD ( /usr/lib/sa/sa1 )
Mar 7 04:22:00 avas CROND[11460]: (cronjob) CMD (run-parts /etc/cron.weekly) 
Mar 7 04:22:00 avas anacron[11464]: Updated timestamp for job `cron.weekly' to 2004-03-07
Mar 12 12:01:02 server4 snort: alert_multiple_requests: ACTIVE
Mar 12 12:17:03 server7 sshd[26501]: pam_authenticate: error Authentication failed ";
    let json = r#"{"timestamp":"Mar 12 12:00:08","hostname":"server2","program":"rcd","processid":"308","message":"Unable to downloaded licenses info: Unable to authenticate - Authorization Required (https://server2/data/red-carpet.rdf)"}
{"timestamp":"Mar 12 12:10:00","hostname":"server2","program":"/USR/SBIN/CRON","processid":"6808","message":"(root) CMD ( /usr/lib/sa/sa1 )"}
{"timestamp":"Mar 7 04:22:00","hostname":"avas","program":"CROND","processid":"11460","message":"(cronjob) CMD (run-parts /etc/cron.weekly) "}
{"timestamp":"Mar 7 04:22:00","hostname":"avas","program":"anacron","processid":"11464","message":"Updated timestamp for job `cron.weekly' to 2004-03-07"}
{"timestamp":"Mar 12 12:01:02","hostname":"server4","program":"snort","processid":null,"message":"alert_multiple_requests: ACTIVE"}
{"timestamp":"Mar 12 12:17:03","hostname":"server7","program":"sshd","processid":"26501","message":"pam_authenticate: error Authentication failed "}"#;
    let read: Vec<String> = log.lines().filter_map(|l| read(syslog, l)).collect();
    assert_eq!(read, json.lines().collect::<Vec<_>>());
}

#[test]
fn the_patterns_corners_match_as_in_java() {
    let head = "1.2.3.4 - - [27/Oct/2000:09:27:09 -0400]";
    // NOQUOTE is `[^"]+`: an empty request does not match; `-` is null.
    assert_eq!(read(common_apache, &format!(r#"{head} "" 400 0"#)), None);
    let json = read(common_apache, &format!(r#"{head} "-" - -"#)).unwrap();
    assert!(
        json.ends_with(r#""request":null,"response":null,"bytes":null}"#),
        "{json}"
    );
    // INT takes a sign; `.*` takes anything after the bytes, even glued to them.
    let json = read(common_apache, &format!(r#"{head} "GET /" -1 12abc"#)).unwrap();
    assert!(json.ends_with(r#""response":"-1","bytes":"12"}"#), "{json}");
    // An escaped quote ends NOQUOTE: the user agent is cut before it (the
    // final `.*` takes the rest), a request holding one does not match.
    let line = format!(r#"{head} "GET / HTTP/1.1" 200 1 "-" "say \"hi\"""#);
    let json = read(combined_apache, &line).unwrap();
    assert!(json.ends_with(r#""agent":"say \\"}"#), "{json}");
    let line = format!(r#"{head} "GET /\"x HTTP/1.1" 200 1 "-" "-""#);
    assert_eq!(read(combined_apache, &line), None);
    // IPORHOST has no IPv6; USER has no space nor `@`.
    let v6 = r#"::1 - - [27/Oct/2000:09:27:09 -0400] "GET /" 200 1"#;
    assert_eq!(read(common_apache, v6), None);
    let at = r#"1.2.3.4 - a@b [27/Oct/2000:09:27:09 -0400] "GET /" 200 1"#;
    assert_eq!(read(common_apache, at), None);
    // HTTPDATE takes a one-digit day, a long month and a fraction.
    let long = r#"h - - [7/October/2000:9:27:09.5 +0000] "GET /" 200 1"#;
    assert!(read(common_apache, long).is_some());
    // Java's `.` stops at a carriage return: a CRLF line does not match.
    assert_eq!(
        read(common_apache, &format!("{head} \"GET /\" 200 1\r")),
        None
    );
    assert_eq!(read(syslog, "Mar 12 12:01:02 h p: x\r"), None);
    assert_eq!(read(syslog, "Mar 12 12:01:02 h p: a\u{2028}b"), None);
    // `\s` is ASCII in Java: a no-break space is not one.
    let nbsp = format!(r#"{} "GET /" 200 1"#, head.replace(" -0400", "\u{a0}-0400"));
    assert_eq!(read(common_apache, &nbsp), None);
}

#[test]
fn the_error_and_syslog_patterns_corners_match_as_in_java() {
    // 2.2 lines and lines without a client do not match.
    let v22 = "[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] denied";
    assert_eq!(read(apache_error, v22), None);
    let no_client = "[Wed Oct 11 14:32:52.1 2000] [mpm_event:notice] [pid 1:tid 2] AH00489: up";
    assert_eq!(read(apache_error, no_client), None);
    let dash = "[Wednesday Oct  1 4:32:52 2000] [error] [pid 1] [client -] -";
    assert_eq!(
        read(apache_error, dash).unwrap(),
        r#"{"timestamp":"Wednesday Oct  1 4:32:52 2000","module":null,"severity":"error","processid":"1","threadid":null,"client":null,"message":null}"#
    );
    // Syslog keeps `-`; the facility is matched and not written; PROG takes `/` and `%`.
    let line = "Mar  7 04:22:00 <13.5> - a/b%c[0]: -";
    assert_eq!(read(syslog, line), None, "POSINT does not take 0");
    let line = "Mar  7 04:22:00 <13.5> - a/b%c[10]: -";
    assert_eq!(
        read(syslog, line).unwrap(),
        r#"{"timestamp":"Mar  7 04:22:00","hostname":"-","program":"a/b%c","processid":"10","message":"-"}"#
    );
    let line = "2024-01-02T03:04:05.123456+00:00 web-1 sshd[812]: Accepted publickey for deploy";
    assert_eq!(
        read(rfc3339_syslog, line).unwrap(),
        r#"{"timestamp":"2024-01-02T03:04:05.123456+00:00","hostname":"web-1","program":"sshd","processid":"812","message":"Accepted publickey for deploy"}"#
    );
    assert!(read(rfc3339_syslog, "2024-01-02T03:04:05Z h p: ").is_some());
    assert_eq!(read(rfc3339_syslog, "2024-01-02t03:04:05z h p: x"), None);
    assert_eq!(
        read(rfc3339_syslog, "2024-01-02T03:04:05+0000 h p: x"),
        None
    );
}

#[test]
fn a_line_that_does_not_match_names_the_format() {
    let mut out = Fields::default();
    let e = syslog("nope", &mut out).unwrap_err();
    assert_eq!(
        (e.reason, &*e.part, e.at),
        ("no_match", "the SYSLOG pattern", 0)
    );
    assert!(out.entries.is_empty());
}

#[test]
fn the_time_formats_read_the_times_the_agent_captures() {
    assert_eq!(APACHE_TIME.0, "datetime");
    DateTime::parse_from_str("27/Oct/2000:09:27:09 -0400", APACHE_TIME.1).unwrap();
    assert_eq!(ERROR_TIME.0, "timestamp");
    for t in [
        "Fri Sep 09 10:42:29.902022 2011",
        "Fri Sep 09 10:42:29 2011",
        "Fri Sep  9 10:42:29 2011",
    ] {
        NaiveDateTime::parse_from_str(t, ERROR_TIME.1).expect(t);
    }
    assert_eq!(SYSLOG_TIME.0, "timestamp");
    let with_year = format!("%Y {}", SYSLOG_TIME.1);
    for t in [
        "2004 Mar 12 12:00:08",
        "2004 Mar 7 04:22:00",
        "2004 Mar  7 04:22:00",
    ] {
        NaiveDateTime::parse_from_str(t, &with_year).expect(t);
    }
    assert_eq!(RFC3339_TIME, ("timestamp", "rfc3339"));
    DateTime::parse_from_rfc3339("2024-01-02T03:04:05.123456+00:00").unwrap();
}

proptest! {
    #[test]
    fn no_string_makes_a_reader_panic(line in ".*") {
        for f in ALL {
            let _ = f(&line, &mut Fields::default());
        }
    }

    #[test]
    fn no_bytes_make_a_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let line = String::from_utf8_lossy(&bytes);
        for f in ALL {
            let _ = f(&line, &mut Fields::default());
        }
    }
}
