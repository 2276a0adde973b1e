//! ~2,000 Apache combined lines through `preset = "apache_combined"` with the
//! event time, in the real binary: every record read back equals the one the
//! test makes of its line, and the bad lines are wrapped and counted.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::{json, Map, Value};

use super::{config, metrics, obj, objects_when, sample, LONG};
use crate::util::{create_stream, AgentProcess, Emulator, Workdir};

/// 2026-10-10T00:00:00Z, seconds since 1970.
const START: i64 = 1_791_590_400;

/// The time zones of the lines, in minutes east of UTC.
const ZONES: [i64; 6] = [0, -420, 120, 330, -570, 765];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// (year, month 1..=12, day) of `days` since 1970-01-01 (the proleptic
/// Gregorian calendar).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (date, H, M, S) of `secs` since 1970.
fn split(secs: i64) -> ((i64, i64, i64), i64, i64, i64) {
    let (days, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    (civil(days), s / 3600, s / 60 % 60, s % 60)
}

/// `%t` of Apache: `10/Oct/2026:13:55:36 +0200`, at `utc` in zone `zone`.
fn apache_time(utc: i64, zone: i64) -> String {
    let ((y, mo, d), h, mi, s) = split(utc + zone * 60);
    let sign = if zone < 0 { '-' } else { '+' };
    let z = zone.abs();
    format!(
        "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} {sign}{:02}{:02}",
        MONTHS[mo as usize - 1],
        z / 60,
        z % 60
    )
}

/// RFC 3339 in UTC with milliseconds.
fn rfc3339(utc: i64) -> String {
    let ((y, mo, d), h, mi, s) = split(utc);
    format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
}

/// Apache's escaping of a quoted field: `"` and `\` get a backslash.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `-` for a field Apache had no value for (null in the record).
fn dash(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Line `i` and the record the preset makes of it (without `source`).
fn line(i: i64) -> (String, Map<String, Value>) {
    let host = match i % 4 {
        0 => format!("192.0.2.{}", i % 250),
        1 => format!("2001:db8::{i:x}"),
        2 => "::1".to_owned(),
        _ => format!("fe80::1ff:fe23:4567:{:x}", i + 0x1000),
    };
    let ident = if i % 9 == 0 {
        json!("ident9")
    } else {
        json!(null)
    };
    let user = if i % 3 == 0 {
        json!("alice")
    } else {
        json!(null)
    };
    let utc = START + i * 86 + i % 7;
    let time = apache_time(utc, ZONES[i as usize % ZONES.len()]);
    let method = ["GET", "POST", "HEAD", "DELETE"][i as usize % 4];
    let path = format!("/p/{i}?q=a%20b&r={}", i * 7);
    let protocol = if i % 2 == 0 { "HTTP/1.1" } else { "HTTP/2.0" };
    let code = [200, 304, 404, 500, 201][i as usize % 5];
    let size = if i % 7 == 0 {
        json!(null)
    } else {
        json!(i * 13)
    };
    let referer = if i % 5 == 0 {
        json!(null)
    } else {
        json!(format!("https://example.com/r/{i}"))
    };
    let agent = match i % 3 {
        0 => format!("Mozilla/5.0 (X11; Linux x86_64) \"quoted {i}\" end"),
        1 => format!("curl/8.{i} C:\\tools\\ \"x\""),
        _ => format!("Bot {i}"),
    };
    let record = json!({
        "host": host, "ident": ident, "user": user, "time": time,
        "method": method, "path": path, "protocol": protocol, "code": code,
        "size": size, "referer": referer, "agent": agent,
        "@timestamp": rfc3339(utc),
    });
    let r = &record;
    let text = format!(
        "{host} {} {} [{time}] \"{method} {path} {protocol}\" {code} {} \"{}\" \"{}\"",
        dash(&r["ident"]),
        dash(&r["user"]),
        dash(&r["size"]),
        escape(&dash(&r["referer"])),
        escape(&agent),
    );
    let Value::Object(record) = record else {
        unreachable!()
    };
    (text, record)
}

/// Lines no Apache combined reader takes.
const BAD: [&str; 5] = [
    "not an access log line",
    "192.0.2.1 - - [10/Oct/2026:13:55:36 +0200] \"GET / HTTP/1.1\" 2xx 0 \"-\" \"a\"",
    "192.0.2.1 - - [10/Oct/2026:13:55:36 +0200 \"GET / HTTP/1.1\" 200 0 \"-\" \"a\"",
    "192.0.2.1 - - [10/Oct/2026:13:55:36 +0200] GET / HTTP/1.1 200 0 \"-\" \"a\"",
    "{\"json\": \"is not an access log\"}",
];

/// Writes the file: 2,000 lines with the bad ones among them. Returns the good
/// lines' records (with `source`).
fn write_file(path: &std::path::Path) -> Vec<Map<String, Value>> {
    let mut text = String::new();
    let mut records = Vec::new();
    for i in 0..2000 {
        if i % 400 == 17 {
            text.push_str(BAD[i as usize / 400]);
            text.push('\n');
        }
        let (l, mut r) = line(i);
        text.push_str(&l);
        text.push('\n');
        r.insert("source".into(), json!(path.to_str().unwrap()));
        records.push(r);
    }
    std::fs::File::create(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    records
}

/// Canonical text of each record, sorted (a multiset of records).
fn canonical(records: &[Map<String, Value>]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| obj(r).to_string()).collect();
    v.sort();
    v
}

#[test]
fn times_and_zones_of_the_generator_are_right() {
    assert_eq!(rfc3339(START), "2026-10-10T00:00:00.000Z");
    assert_eq!(apache_time(START, -420), "09/Oct/2026:17:00:00 -0700");
    assert_eq!(apache_time(START + 59, 765), "10/Oct/2026:12:45:59 +1245");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00.000Z");
}

/// The binary reads the file with the preset and the event time: every record
/// read back is the test's record of its line, each bad line is wrapped with
/// its text and a `parse_error`, and both counters say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_combined_lines_become_the_records_of_their_fields() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let file = work.path("access.log");
    let expected = write_file(&file);
    let conf = config(
        &emu,
        &work,
        &format!(
            "[[file]]\ninclude = [\"{}\"]\nread_from = \"beginning\"\n\
             rename = {{ timestamp = \"@timestamp\" }}\n\
             [file.parse]\npreset = \"apache_combined\"\ntime_key = \"time\"\non_error = \"wrap\"\n",
            file.display()
        ),
    );
    let mut agent = AgentProcess::spawn(&work, "agent", &conf, &[], |_| {});
    let addr = agent.metrics_addr().await;
    let all = objects_when(&client, "logs", expected.len() + BAD.len(), &agent.log).await;
    let (bad, good): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|r| r.contains_key("parse_error"));
    assert_eq!(good.len(), expected.len(), "records parsed");
    let (want, got) = (canonical(&expected), canonical(&good));
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g, "a record differs");
    }
    let bad_lines: BTreeSet<&str> = bad.iter().map(|r| r["message"].as_str().unwrap()).collect();
    assert_eq!(bad_lines, BAD.iter().copied().collect(), "wrapped lines");
    for r in &bad {
        assert!(r["parse_error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(
            r["@timestamp"].is_string() && !r.contains_key("timestamp"),
            "{r:?}"
        );
        assert_eq!(r["source"], json!(file.to_str().unwrap()));
    }
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let text = metrics(addr).await;
        let errors = sample(
            &text,
            "shardline_parse_errors_total{block=\"file[0]\",reason=\"no_match\",action=\"wrapped\"}",
        );
        let parsed = sample(&text, "shardline_lines_parsed_total{block=\"file[0]\"}");
        if (errors, parsed) == (BAD.len() as u64, expected.len() as u64) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{errors} errors and {parsed} lines parsed counted:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    agent.stop().await;
}
