//! The Grafana dashboard (`packaging/grafana/shardline.json`) and the alert rules
//! (`packaging/prometheus/shardline.rules.yml`): `promtool` checks and unit-tests
//! the rules (Debian package `prometheus`, installed by `.ci/test`), and every
//! metric either names is in a running agent's `/metrics`, so a renamed metric
//! fails here and not in an operator's pager.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{config, send_lines, socket_toml, start_agent, Emulator, Workdir};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dashboard() -> PathBuf {
    root().join("packaging/grafana/shardline.json")
}

fn rules() -> PathBuf {
    root().join("packaging/prometheus/shardline.rules.yml")
}

/// Series Prometheus itself makes for every target (not in `/metrics`).
const MADE_BY_PROMETHEUS: &[&str] = &["up"];

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    // Aggregations, when a grouping comes before their parentheses.
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// A byte of a name: a metric, a label, a keyword or a variable.
fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The name that starts at `start`: a metric's goes into `out` (not a label in a
/// selector, a modifier with its label list, a function or a keyword). Returns
/// where the scan goes on.
fn take_word(expr: &str, start: usize, in_selector: bool, out: &mut BTreeSet<String>) -> usize {
    let b = expr.as_bytes();
    let mut i = start;
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    let word = &expr[start..i];
    let rest = expr[i..].trim_start();
    if in_selector {
        return i;
    }
    if [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ]
    .contains(&word)
    {
        // Its label list.
        if let Some(end) = rest.strip_prefix('(').and_then(|r| r.find(')')) {
            return expr.len() - rest.len() + end + 2;
        }
        return i;
    }
    if rest.starts_with('(') {
        // A function or an aggregation.
        return i;
    }
    if !KEYWORDS.contains(&word) {
        out.insert(word.to_owned());
    }
    i
}

/// Metric names in a PromQL expression: identifiers that are not functions,
/// keywords, label names (in `{…}` or a grouping), strings, durations or
/// `$variables`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let (mut i, mut braces, mut brackets) = (0, 0, 0);
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += 1 + usize::from(b[i] == b'\\');
                }
                i += 1;
            }
            b'{' => {
                braces += 1;
                i += 1;
            }
            b'}' => {
                braces -= 1;
                i += 1;
            }
            b'[' => {
                brackets += 1;
                i += 1;
            }
            b']' => {
                brackets -= 1;
                i += 1;
            }
            b'$' => {
                i += 1;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (is_ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if is_ident(c) => i = take_word(expr, i, braces > 0 || brackets > 0, &mut out),
            _ => i += 1,
        }
    }
    out
}

#[test]
fn metric_names_are_told_from_functions_labels_and_variables() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, stream) (rate(a_bucket{job=~"$job", code="x{y}"}[$__rate_interval]))) > 0.1 * on (instance) group_left b_total or c offset 5m and 15 * 60"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b_total", "c"]
    );
}

/// Every PromQL expression of the dashboard: panel targets, and the metric of
/// each `label_values(metric…, label)` variable.
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        ("definition", serde_json::Value::String(q)) => {
                            let inner = q
                                .strip_prefix("label_values(")
                                .and_then(|r| r.rsplit_once(','))
                                .map(|(metric, _)| metric.to_owned())
                                .unwrap_or_else(|| panic!("unexpected variable query {q:?}"));
                            out.push(inner);
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(dashboard()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    walk(&json, &mut out);
    out
}

/// Every `expr:` of the rules file (one line, or a `|` block).
fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(rules()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value != "|" {
            out.push(value.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while i < lines.len() {
            let l = lines[i];
            if !l.trim().is_empty() && l.len() - l.trim_start().len() <= indent {
                break;
            }
            block.push_str(l.trim());
            block.push(' ');
            i += 1;
        }
        out.push(block);
    }
    out
}

/// Names a Prometheus scrape of `text` yields (OpenMetrics: a counter `x` is
/// sampled as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                out.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// What the dashboard is for: records in and out, the spool, Kinesis and
/// Firehose (throttles of both kinds, lines packed per Firehose record),
/// reshards and the process.
const DASHBOARD_SHOWS: [&str; 14] = [
    "shardline_records_received_total",
    "shardline_records_delivered_total",
    "shardline_records_failed_total",
    "shardline_spool_bytes",
    "shardline_spool_oldest_record_age_seconds",
    "shardline_put_records_duration_seconds_bucket",
    "shardline_put_records_entry_errors_total",
    "shardline_throttles_total",
    "shardline_firehose_records_per_record_bucket",
    "shardline_firehose_records_per_record_count",
    "shardline_shard_map_refreshes_total",
    "shardline_records_misrouted_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
];

/// What the alert rules must look at.
const RULES_WATCH: [&str; 9] = [
    "up",
    "shardline_spool_segment_bytes",
    "shardline_spool_max_bytes",
    "shardline_spool_oldest_record_age_seconds",
    "shardline_records_failed_total",
    "shardline_throttles_total",
    "shardline_put_records_requests_total",
    "shardline_put_records_errors_total",
    "shardline_list_shards_errors_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_name_only_metrics_a_running_agent_exposes() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    crate::util::create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        &socket_toml(&sock, None),
    ))
    .await;
    send_lines(&sock, (0..10).map(|i| format!("line {i}"))).await;
    let metrics = agent.metrics().clone();
    crate::util::wait_for("delivery", Duration::from_secs(60), || {
        metrics.delivered_count("logs") == 10
    })
    .await;
    let (_, text) =
        shardline::status::get(agent.metrics_addr(), "/metrics", Duration::from_secs(10))
            .await
            .unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    agent.stop().await.unwrap();
    let exposed = exposed_names(&text);

    let dashboard: BTreeSet<String> = dashboard_exprs()
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    let rules: BTreeSet<String> = rule_exprs().iter().flat_map(|e| metric_names(e)).collect();
    assert!(rule_exprs().len() >= 8, "{:?}", rule_exprs());
    for (file, names) in [("dashboard", &dashboard), ("rules", &rules)] {
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !exposed.contains(*n) && !MADE_BY_PROMETHEUS.contains(&n.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "the {file} names metrics the agent does not expose: {unknown:?}\n/metrics:\n{text}"
        );
    }
    for needed in DASHBOARD_SHOWS {
        assert!(
            dashboard.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    for needed in RULES_WATCH {
        assert!(rules.contains(needed), "no rule looks at {needed}");
    }
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("packaging/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); .ci/test installs it (Debian package prometheus)")
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "shardline.rules.yml"]);
    promtool(&["test", "rules", "shardline.rules.test.yml"]);
}

/// The alerts about a stream hold for Firehose streams too (named
/// `firehose:NAME`, with no ListShards): the unit tests expect each of them for
/// such a stream.
#[test]
fn stream_alerts_are_tested_with_a_firehose_stream() {
    let tests =
        std::fs::read_to_string(root().join("packaging/prometheus/shardline.rules.test.yml"))
            .unwrap();
    for alert in [
        "ShardlineRecordsFailing",
        "ShardlineThrottledSustained",
        "ShardlineCredentialsFailing",
        "ShardlineStreamUnusable",
    ] {
        let tested = tests
            .split("alertname: ")
            .skip(1)
            .any(|case| case.starts_with(alert) && case.contains("stream: firehose:"));
        assert!(
            tested,
            "no unit test of the rules expects {alert} for a Firehose stream (stream: firehose:NAME)"
        );
    }
}

/// The dashboard imports as Grafana expects: an input for the data source, unique
/// panel ids, every graph with a query, no two panels on the same cells.
#[test]
fn dashboard_is_importable() {
    let text = std::fs::read_to_string(dashboard()).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    assert_eq!(d["uid"], "shardline");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id in {p}");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{p}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{} overlaps another panel",
                    p["title"]
                );
            }
        }
        if p["type"] != "row" {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{} has no query", p["title"]);
        }
    }
    assert!(panels.len() >= 12);
}
