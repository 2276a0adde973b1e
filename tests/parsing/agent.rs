//! The Kinesis Agent's agent.json, imported with `shardline import
//! kinesis-agent` and run by the binary as written (only the spool directory
//! and the metrics port changed): the records read back are, as JSON, those
//! the agent sends for the flows' `LOGTOJSON` `COMBINEDAPACHELOG` and
//! `CSVTOJSON` with `customFieldNames` and a tab delimiter.

use std::io::Write;

use serde_json::{json, Map, Value};

use super::objects_when;
use crate::util::{create_stream, shardline_bin, AgentProcess, Emulator, Workdir};

/// Apache combined lines the agent's pattern reads, and their records as the
/// agent makes them: every value a string, `-` null.
fn access_lines() -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut records = Vec::new();
    for i in 0..300 {
        let user = if i % 3 == 0 { "frank" } else { "-" };
        let bytes = if i % 4 == 0 {
            "-".to_owned()
        } else {
            (i * 11).to_string()
        };
        let referer = if i % 5 == 0 {
            "-".to_owned()
        } else {
            format!("http://example.com/{i}")
        };
        let line = format!(
            "10.0.{}.{} - {user} [1{}/Oct/2026:13:55:{:02} -0700] \"GET /a/{i} HTTP/1.1\" {} {bytes} \"{referer}\" \"Mozilla/5.0 (X11; Linux) {i}\"",
            i / 250,
            i % 250,
            i % 10,
            i % 60,
            [200, 404, 302][i % 3],
        );
        // What the agent's pattern takes, split by hand.
        let (host, rest) = line.split_once(' ').unwrap();
        let (ident, rest) = rest.split_once(' ').unwrap();
        let (authuser, rest) = rest.split_once(" [").unwrap();
        let (datetime, rest) = rest.split_once("] \"").unwrap();
        let (request, rest) = rest.split_once("\" ").unwrap();
        let (response, rest) = rest.split_once(' ').unwrap();
        let (size, rest) = rest.split_once(" \"").unwrap();
        let (referer, rest) = rest.split_once("\" \"").unwrap();
        let agent = rest.strip_suffix('"').unwrap();
        let v = |s: &str| if s == "-" { Value::Null } else { json!(s) };
        records.push(json!({
            "host": v(host), "ident": v(ident), "authuser": v(authuser), "datetime": v(datetime),
            "request": v(request), "response": v(response), "bytes": v(size),
            "referer": v(referer), "agent": v(agent),
        }));
        text.push_str(&line);
        text.push('\n');
    }
    (text, records)
}

const NAMES: [&str; 4] = ["time", "name", "value", "unit"];

/// Tab-separated lines, some with fewer columns than named and some with
/// more, and their records as the agent makes them (missing columns null,
/// extra ones left out).
fn tsv_lines() -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut records = Vec::new();
    for i in 0..200 {
        let cols: Vec<String> = match i % 4 {
            0 => vec![
                format!("2026-12-06T10:00:{:02}Z", i % 60),
                format!("cpu{i}"),
                format!("0.{i}"),
                "pct".into(),
            ],
            1 => vec![format!("t{i}"), format!("mem {i}"), format!("{i}")],
            2 => vec![
                format!("t{i}"),
                format!("disk,{i}"),
                format!("{i}"),
                "B".into(),
                "extra".into(),
            ],
            _ => vec![format!("t{i}"), "net".into(), String::new(), "pps".into()],
        };
        let mut r = Map::new();
        for (k, name) in NAMES.iter().enumerate() {
            r.insert(
                (*name).into(),
                cols.get(k).map_or(Value::Null, |c| json!(c)),
            );
        }
        records.push(Value::Object(r));
        text.push_str(&cols.join("\t"));
        text.push('\n');
    }
    (text, records)
}

/// agent.json with the two flows, read from `dir` and sent to the emulator.
fn agent_json(emu: &Emulator, dir: &std::path::Path) -> Value {
    json!({
        "kinesis.endpoint": emu.endpoint,
        "kinesis.region": "us-east-1",
        "flows": [
            {
                "filePattern": format!("{}/access.log*", dir.display()),
                "kinesisStream": "web",
                "initialPosition": "START_OF_FILE",
                "dataProcessingOptions": [
                    {"optionName": "LOGTOJSON", "logFormat": "COMBINEDAPACHELOG"}
                ]
            },
            {
                "filePattern": format!("{}/metrics.tsv", dir.display()),
                "kinesisStream": "metrics",
                "initialPosition": "START_OF_FILE",
                "dataProcessingOptions": [
                    {"optionName": "CSVTOJSON", "customFieldNames": NAMES, "delimiter": "\\t"}
                ]
            }
        ]
    })
}

/// `shardline import kinesis-agent FILE`: the config it prints.
fn import(agent_json: &std::path::Path) -> String {
    let out = std::process::Command::new(shardline_bin())
        .args(["import", "kinesis-agent"])
        .arg(agent_json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sorted(records: Vec<Value>) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(Value::to_string).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_agent_json_sends_the_records_of_the_agent() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "web", 1).await;
    create_stream(&client, "metrics", 1).await;
    let work = Workdir::new();
    let logs = work.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (access, access_records) = access_lines();
    let (tsv, tsv_records) = tsv_lines();
    std::fs::File::create(logs.join("access.log"))
        .unwrap()
        .write_all(access.as_bytes())
        .unwrap();
    std::fs::write(logs.join("metrics.tsv"), tsv).unwrap();
    let json_path = work.path("agent.json");
    std::fs::write(&json_path, agent_json(&emu, &logs).to_string()).unwrap();
    let imported = import(&json_path);
    let spool_line = "dir = \"/var/lib/shardline\"";
    assert!(imported.contains(spool_line), "{imported}");
    let mut conf_text =
        imported.replace(spool_line, &format!("dir = \"{}\"", work.spool().display()));
    // Port 0: other agents may run beside the test (127.0.0.1:9717 by default).
    assert!(!conf_text.contains("[metrics]"), "{conf_text}");
    conf_text.push_str("\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let conf = work.path("shardline.toml");
    std::fs::write(&conf, &conf_text).unwrap();
    let mut agent = AgentProcess::spawn(&work, "agent", &conf, &[], |c| {
        c.env("AWS_REGION", "us-east-1");
    });
    agent.metrics_addr().await;
    let web = objects_when(&client, "web", access_records.len(), &agent.log).await;
    let metrics = objects_when(&client, "metrics", tsv_records.len(), &agent.log).await;
    let got = |v: Vec<Map<String, Value>>| sorted(v.into_iter().map(Value::Object).collect());
    assert_eq!(
        got(web),
        sorted(access_records),
        "COMBINEDAPACHELOG\n{conf_text}"
    );
    assert_eq!(got(metrics), sorted(tsv_records), "CSVTOJSON\n{conf_text}");
    agent.stop().await;
}
