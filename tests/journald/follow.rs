//! The journald source in the agent, in process: selection and formatting, a
//! killed journalctl, restarts and reloads that go on from the cursor, a
//! journalctl that cannot start, and `since = "now"`.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{journalctl_pids, stream_records, Journal, Written, LONG};
use crate::util::{
    config, create_stream, send_lines, socket_toml, start_agent, wait_for, Emulator, Workdir,
};

/// The `[[journald]]` block of the test below: selection by unit, identifier and
/// priority, JSON records of three fields, keys from the unit.
fn apps_block(journal: &Journal) -> String {
    format!(
        r#"[[journald]]
name = "apps"
directory = "{}"
units = ["app"]
identifiers = ["cron"]
exclude_identifiers = ["noisy"]
priority = "info"
format = "json"
fields = ["MESSAGE", "_SYSTEMD_UNIT", "PRIORITY"]
partition_key = {{ field = "_SYSTEMD_UNIT" }}
"#,
        journal.dir.display()
    )
}

/// Before the agent starts: an entry of an earlier boot (not sent: since =
/// "boot"), then this boot's.
fn first_entries() -> Vec<Written> {
    let mut first = vec![Written {
        old_boot: true,
        ..Written::new("old boot").unit("app.service")
    }];
    first.extend([
        Written::new("app info").unit("app.service").priority(6),
        Written::new("app debug").unit("app.service").priority(7),
        Written::new("cron line").unit("cron.service").ident("cron"),
        Written::new("noisy app").unit("app.service").ident("noisy"),
        Written::new("other unit").unit("other.service").priority(3),
        Written::new(&b"line one\nline two \xff"[..])
            .unit("app.service")
            .priority(0),
    ]);
    first
}

/// Records as (normalised JSON, key), sorted.
fn as_json(records: Vec<(Bytes, String)>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = records
        .into_iter()
        .map(|(d, k)| {
            let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
            (v.to_string(), k)
        })
        .collect();
    v.sort();
    v
}

/// The records [`first_entries`] must give, as [`as_json`] puts them.
fn expected_first() -> Vec<(String, String)> {
    let expected_first = [
        (
            r#"{"MESSAGE":"app info","_SYSTEMD_UNIT":"app.service","PRIORITY":"6"}"#,
            "app.service",
        ),
        (
            r#"{"MESSAGE":"cron line","_SYSTEMD_UNIT":"cron.service"}"#,
            "cron.service",
        ),
        (
            r#"{"MESSAGE":[108,105,110,101,32,111,110,101,10,108,105,110,101,32,116,119,111,32,255],"_SYSTEMD_UNIT":"app.service","PRIORITY":"0"}"#,
            "app.service",
        ),
    ];
    as_json(
        expected_first
            .iter()
            .map(|(d, k)| (Bytes::from(d.to_string()), k.to_string()))
            .collect(),
    )
}

/// The stream's records once it holds `n` of them.
async fn wait_count(client: &aws_sdk_kinesis::Client, n: usize) -> Vec<(Bytes, String)> {
    let deadline = Instant::now() + LONG;
    loop {
        let got = stream_records(client, "logs").await;
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} records: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGKILLs the one journalctl reading `journal`.
fn kill_journalctl(journal: &Journal) {
    let pids = journalctl_pids(&journal.dir);
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap()
        .success());
}

/// Each record's `MESSAGE`, as JSON text.
fn messages(got: &[(Bytes, String)]) -> Vec<String> {
    got.iter()
        .map(|(d, _)| {
            let v: serde_json::Value = serde_json::from_slice(d).unwrap();
            v["MESSAGE"].to_string()
        })
        .collect()
}

/// Selection, JSON records with the chosen fields, keys from a field, a killed
/// journalctl started again (and counted), and a restart of the agent that goes on
/// after its cursor: every selected entry arrives once, nothing else arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_selected_formatted_and_resumed_after_a_killed_journalctl_and_a_restart() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let mut journal = Journal::new(work.path("journal"));
    let block = apps_block(&journal);
    journal.append(&first_entries());
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &block)).await;
    let got = wait_count(&client, 3).await;
    assert_eq!(as_json(got), expected_first());

    // journalctl dies: it is started again from the cursor and counted.
    kill_journalctl(&journal);
    journal.append(&[Written::new("after kill").unit("app.service")]);
    let metrics = agent.metrics().clone();
    wait_for("the restart", LONG, || metrics.journald_restarts() == 1).await;
    let got = wait_count(&client, 4).await;
    assert!(
        got.iter()
            .any(|(d, _)| d.starts_with(br#"{"MESSAGE":"after kill","#)),
        "{got:?}"
    );
    agent.stop().await.unwrap();

    // Stopped, more entries, started again: it goes on after its cursor.
    journal.append(&[
        Written::new("while stopped").unit("app.service"),
        Written::new("not selected").unit("other.service"),
    ]);
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &block)).await;
    journal.append(&[Written::new("after restart").unit("app.service")]);
    let messages = messages(&wait_count(&client, 6).await);
    let distinct: HashSet<&String> = messages.iter().collect();
    assert_eq!(distinct.len(), messages.len(), "duplicates: {messages:?}");
    for m in ["after kill", "while stopped", "after restart"] {
        assert!(
            messages.contains(&format!("\"{m}\"")),
            "{m} missing: {messages:?}"
        );
    }
    assert_eq!(
        agent.metrics().read(
            "shardline_records_received_total",
            &[("source", "journald")]
        ),
        2
    );
    agent.stop().await.unwrap();
    assert_eq!(stream_records(&client, "logs").await.len(), 6);
}

/// A reload that changes a block restarts its reader at its cursor: entries read
/// before are not read again, the new selection applies to what comes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_block_goes_on_from_its_cursor() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let mut journal = Journal::new(work.path("journal"));
    let dir = journal.dir.clone();
    let block = |priority: &str| {
        format!(
            "[[journald]]\ndirectory = \"{}\"\npriority = \"{priority}\"\n",
            dir.display()
        )
    };
    journal.append(&[
        Written::new("a info").priority(6),
        Written::new("a debug").priority(7),
    ]);
    let mut agent = start_agent(config(&work, &emu.endpoint, "logs", &block("info"))).await;
    let metrics = agent.metrics().clone();
    wait_for("the first entry", LONG, || {
        metrics.delivered_count("logs") == 1
    })
    .await;
    agent
        .reload(config(&work, &emu.endpoint, "logs", &block("debug")))
        .await
        .unwrap();
    journal.append(&[
        Written::new("b info").priority(6),
        Written::new("b debug").priority(7),
    ]);
    wait_for("the later entries", LONG, || {
        metrics.delivered_count("logs") == 3
    })
    .await;
    agent.stop().await.unwrap();
    let mut got: Vec<String> = stream_records(&client, "logs")
        .await
        .into_iter()
        .map(|(d, _)| String::from_utf8(d.to_vec()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["a info", "b debug", "b info"]);
}

/// A journalctl that cannot start is logged, retried with backoff and counted;
/// the other sources go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journalctl_that_cannot_start_is_retried_and_stops_nothing_else() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let sock = work.path("in.sock");
    let extra = format!(
        "{}[[journald]]\njournalctl = \"{}\"\n",
        socket_toml(&sock, None),
        work.path("no-such-journalctl").display()
    );
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &extra)).await;
    let metrics = agent.metrics().clone();
    wait_for("two restarts", LONG, || metrics.journald_restarts() >= 2).await;
    send_lines(&sock, ["still flowing".to_owned()]).await;
    wait_for("the socket's line", LONG, || {
        metrics.delivered_count("logs") == 1
    })
    .await;
    agent.stop().await.unwrap();
}

/// `since = "now"`: what the journal held before the first start is not sent, and
/// a restart before anything new was read does not skip what came in between
/// (the journal's last entry became the checkpoint at the first start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_now_skips_the_past_but_not_what_comes_between_restarts() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let mut journal = Journal::new(work.path("journal"));
    let block = format!(
        "[[journald]]\ndirectory = \"{}\"\nsince = \"now\"\n",
        journal.dir.display()
    );
    journal.append(&[Written::new("before the first start")]);
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &block)).await;
    agent.stop().await.unwrap();
    journal.append(&[Written::new("while stopped")]);
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &block)).await;
    journal.append(&[Written::new("after the restart")]);
    let metrics = agent.metrics().clone();
    wait_for("two entries", LONG, || metrics.delivered_count("logs") == 2).await;
    agent.stop().await.unwrap();
    let mut got: Vec<String> = stream_records(&client, "logs")
        .await
        .into_iter()
        .map(|(d, _)| String::from_utf8(d.to_vec()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["after the restart", "while stopped"]);
}
