//! Parse throughput: every preset of `presets::ALL` reads a realistic line of
//! about 200 bytes into fields, one set of fields reused between lines as a
//! block's parser does (group `parse`); `csv`, `CSVTOJSON` and a `pattern` (the
//! Apache combined format as a regex, for comparison) read theirs through a
//! block's parser, `types` and the event time included (`parse/table:…`).
//! Throughput is in bytes of lines (newline excluded); the target is 250 MiB/s
//! per core for `apache_combined`.
//!
//! Group `record`: the whole path a source runs per line, line to json record
//! (the block's json formatter with its parser, the added keys, the record
//! written into its buffer): `apache_combined` with `time_key = "time"`, the
//! same regex `pattern`, and `json`, the plain json wrap of the same line.
//!
//! ```text
//! cargo bench --bench parse
//! cargo bench --bench parse -- --quick apache
//! cargo bench --bench parse -- record
//! ```
//!
//! A preset whose sample line does not parse is still timed (it measures its
//! failure path) and says so on stderr.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardline::config::RecordFormat;
use shardline::testkit::{LineFormatter, LineParser, ParsePreset};

/// Lines read per timed iteration.
const BATCH: usize = 64;

/// A realistic line of about 200 bytes in the preset's format.
fn sample(name: &str) -> &'static str {
    match name {
        "apache_common" => r#"192.168.10.42 - frank [10/Oct/2023:13:55:36 -0700] "GET /api/v2/catalog/products/8841/reviews?page=3&per_page=25&sort=recent&lang=en-US&currency=EUR&session=a81f HTTP/1.1" 200 48213"#,
        "apache_combined" | "COMBINEDAPACHELOG" => r#"203.0.113.195 - - [10/Oct/2023:13:55:36 +0000] "GET /products/widget-42?ref=homepage HTTP/1.1" 200 5124 "https://www.example.com/search?q=widgets" "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/118.0""#,
        "apache_error" => "[Tue Oct 10 13:55:36.123456 2023] [proxy:error] [pid 31287:tid 140243768325888] (111)Connection refused: [client 203.0.113.195:52144] AH00957: HTTP: attempt to connect to 127.0.0.1:8080 (localhost) failed",
        "nginx_access" => r#"198.51.100.23 - - [10/Oct/2023:13:55:36 +0000] "POST /api/v1/orders HTTP/1.1" 201 342 "https://shop.example.com/checkout" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15""#,
        "nginx_error" => r#"2023/10/10 13:55:36 [error] 2851#2851: *1043 open() "/usr/share/nginx/html/favicon.ico" failed (2: No such file or directory), client: 198.51.100.23, server: shop.example.com, request: "GET /favicon.ico HTTP/1.1", host: "shop.example.com""#,
        "syslog_rfc3164" => "<38>Oct 10 13:55:36 web-01 sshd[31287]: Accepted publickey for deploy from 198.51.100.23 port 52144 ssh2: ED25519 SHA256:pQ8dPjJ3dLdZ6b1Vb8r0W2H3l7kqRr1uPzK0x9yT4cE session opened",
        "syslog_rfc5424" => r#"<165>1 2023-10-10T13:55:36.123Z web-01.example.com checkout 31287 ORDER [meta@32473 orderId="88412" region="eu-west-1" items="3"] order accepted and queued for fulfilment by the warehouse"#,
        "logfmt" => r#"time=2023-10-10T13:55:36.123Z level=info msg="request completed" method=GET path=/api/v1/users/42 status=200 duration_ms=12.7 bytes=5124 request_id=7f3c9a2e user_agent="curl/8.4.0""#,
        "cri" => r#"2023-10-10T13:55:36.123456789Z stdout F {"level":"info","ts":1696946136.12,"msg":"request completed","method":"GET","path":"/api/v1/users/42","status":200,"duration_ms":12.7}"#,
        "docker" => r#"{"log":"2023-10-10 13:55:36,123 INFO  [main] c.e.app.Server - request completed path=/api/v1/users/42 status=200 ms=12\n","stream":"stdout","time":"2023-10-10T13:55:36.123456789Z"}"#,
        "COMMONAPACHELOG" => r#"192.168.10.42 - frank [10/Oct/2023:13:55:36 -0700] "GET /api/v2/catalog/products/8841/reviews?page=3&per_page=25&sort=recent&lang=en-US&currency=EUR&session=a81f HTTP/1.1" 200 48213"#,
        "APACHEERRORLOG" => "[Tue Oct 10 13:55:36.123456 2023] [core:error] [pid 31287:tid 140243768325888] [client 203.0.113.195:52144] AH00128: File does not exist: /var/www/html/wp-content/plugins/old-gallery/thumb.php",
        "SYSLOG" => "Oct 10 13:55:36 web-01 sshd[31287]: Accepted publickey for deploy from 198.51.100.23 port 52144 ssh2: ED25519 SHA256:pQ8dPjJ3dLdZ6b1Vb8r0W2H3l7kqRr1uPzK0x9yT4cE session opened",
        "RFC3339SYSLOG" => "2023-10-10T13:55:36.123456+00:00 web-01 sshd[31287]: Accepted publickey for deploy from 198.51.100.23 port 52144 ssh2: ED25519 SHA256:pQ8dPjJ3dLdZ6b1Vb8r0W2H3l7kqRr1uPzK0x9yT4cE",
        other => panic!("no sample line for the preset {other}; add one"),
    }
}

fn presets(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for preset in ParsePreset::all() {
        let line = sample(preset.name());
        let lines = vec![line; BATCH];
        if let Some(part) = preset.failure(line) {
            eprintln!(
                "{}: the sample line does not parse ({part}); timing its failure",
                preset.name()
            );
        }
        group.throughput(Throughput::Bytes((line.len() * BATCH) as u64));
        group.bench_function(preset.name(), |b| {
            b.iter(|| preset.read_lines(black_box(&lines)))
        });
    }
    for (name, table, line) in tables() {
        let parser = LineParser::new(&format(&table)).expect("a parse table");
        let lines = vec![line; BATCH];
        assert_eq!(parser.read_lines(&lines[..1]).1, 0, "{name}: no parse");
        group.throughput(Throughput::Bytes((line.len() * BATCH) as u64));
        group.bench_function(format!("table:{name}"), |b| {
            b.iter(|| parser.read_lines(black_box(&lines)))
        });
    }
    group.finish();
}

/// Line to json record, as a file source formats it.
fn records(c: &mut Criterion) {
    let line = sample("apache_combined");
    let apache = "[file.parse]\npreset = \"apache_combined\"\ntime_key = \"time\"\n";
    let pattern = format!("[file.parse]\n{}\n", tables()[2].1);
    let cases = [
        ("json", "format = \"json\"\n".to_owned()),
        ("apache_combined", apache.to_owned()),
        ("pattern (apache combined)", pattern),
    ];
    let lines = vec![line; BATCH];
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Bytes((line.len() * BATCH) as u64));
    for (name, block) in cases {
        let mut f = LineFormatter::new(&file_format(&block), "/var/log/httpd/access_log")
            .expect("a json format");
        let records = f.records(line);
        assert!(
            records.len() == 1 && !records[0].contains("parse_error"),
            "{name}: {records:?}"
        );
        group.bench_function(name, |b| b.iter(|| f.format_lines(black_box(&lines))));
    }
    group.finish();
}

/// The CSV sample line (no delimiter inside its quotes, so `CSVTOJSON`, which
/// does not unquote, reads as many columns).
const CSV_LINE: &str = r#"2023-10-10T13:55:36.123Z,web-01,checkout,info,203.0.113.195,GET,/api/v1/orders/88412/items?expand=true,200,5124,12.7,"Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Firefox/118.0",7f3c9a2e-1b4d-4e8f"#;
const CSV_COLUMNS: &str = r#"["time", "host", "service", "level", "client", "method", "path", "status", "bytes", "duration_ms", "agent", "request_id"]"#;

/// The Apache combined format as a regex (TOML literal string), with the
/// preset's keys.
const APACHE_PATTERN: &str = r#"'^(?P<remote>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>[^ "]*)(?: (?P<protocol>[^"]*))?" (?P<status>\d{3}) (?P<size>\S+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'"#;

/// Parse tables read through a block's parser: name, table body, sample line.
fn tables() -> [(&'static str, String, &'static str); 3] {
    let time = "time_key = \"time\"";
    [
        (
            "csv",
            format!("preset = \"csv\"\ncolumns = {CSV_COLUMNS}\ntypes = {{ status = \"int\", bytes = \"int\", duration_ms = \"float\" }}\n{time}\ntime_format = \"rfc3339\""),
            CSV_LINE,
        ),
        (
            "CSVTOJSON",
            format!("preset = \"CSVTOJSON\"\nfield_names = {CSV_COLUMNS}"),
            CSV_LINE,
        ),
        (
            "pattern (apache combined)",
            format!("pattern = {APACHE_PATTERN}\ntypes = {{ status = \"int\", size = \"int\" }}\n{time}\ntime_format = \"%d/%b/%Y:%H:%M:%S %z\""),
            sample("apache_combined"),
        ),
    ]
}

/// The record format of a `[[file]]` block with the given parse table body.
fn format(table: &str) -> RecordFormat {
    file_format(&format!("[file.parse]\n{table}\n"))
}

/// The record format of a `[[file]]` block ending with `rest`.
fn file_format(rest: &str) -> RecordFormat {
    let text = format!(
        "[kinesis]\nstream = \"bench\"\nregion = \"us-east-1\"\n\
         [spool]\ndir = \"/tmp/parse-bench\"\n[[file]]\ninclude = [\"/var/log/httpd/access_log\"]\n{rest}"
    );
    let config = shardline::config::parse(&text, "bench.toml".as_ref()).expect("bench config");
    config.files[0].format.clone()
}

criterion_group!(benches, presets, records);
criterion_main!(benches);
