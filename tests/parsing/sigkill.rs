//! A CSV file whose first line names the columns and a CRI file with partial
//! lines, read by the real binary that is SIGKILLed while it reads, and with
//! a CSV record and a CRI record open (their ends not written yet) at each
//! kill: after the restarts every record is delivered with the header's
//! column names, the header itself never, and no CRI message half-joined.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{config, objects, open_append, LONG};
use crate::util::{create_stream, AgentProcess, Emulator, Workdir};

const HEADER: &str = "id,name,note";

/// What the test wrote: the records complete so far, by key.
#[derive(Default)]
struct Written {
    /// CSV: id → note (the other column is `name-ID`).
    rows: BTreeMap<String, String>,
    /// CRI: the messages of complete records.
    messages: BTreeSet<String>,
    next_row: usize,
    next_group: usize,
    /// The CSV row and the CRI group whose ends are not written yet.
    open_row: Option<usize>,
    open_group: Option<usize>,
}

/// CRI time of group `g`.
fn cri_time(g: usize) -> String {
    format!(
        "2026-12-06T10:{:02}:{:02}.{:09}Z",
        g / 3600 % 60,
        g / 60 % 60,
        g
    )
}

impl Written {
    /// Appends `rows` CSV rows and `groups` CRI records to the files, after
    /// the ends of the records the last chunk left open; leaves a record of
    /// each open when `open`.
    fn chunk(&mut self, csv: &mut std::fs::File, cri: &mut std::fs::File, n: usize, open: bool) {
        let (mut c, mut k) = (String::new(), String::new());
        if let Some(id) = self.open_row.take() {
            c.push_str(&format!("closed {id}\"\n"));
            self.rows
                .insert(id.to_string(), format!("open {id}\nclosed {id}"));
        }
        if let Some(g) = self.open_group.take() {
            k.push_str(&format!("{} stdout F part-c-{g}\n", cri_time(g)));
            self.messages.insert(part_msg(g));
        }
        for _ in 0..n {
            let i = self.next_row;
            self.next_row += 1;
            let note = if i % 50 == 7 {
                format!("two\nlines {i}")
            } else {
                format!("note, with a comma {i}")
            };
            c.push_str(&format!("{i},name-{i},\"{note}\"\n"));
            self.rows.insert(i.to_string(), note);
            let g = self.next_group;
            self.next_group += 1;
            let t = cri_time(g);
            if g.is_multiple_of(3) {
                k.push_str(&format!("{t} stderr F single-{g}\n"));
                self.messages.insert(format!("single-{g}"));
            } else {
                k.push_str(&format!(
                    "{t} stdout P part-a-{g} \n{t} stdout P part-b-{g} \n"
                ));
                k.push_str(&format!("{t} stdout F part-c-{g}\n"));
                self.messages.insert(part_msg(g));
            }
        }
        if open {
            let (i, g) = (self.next_row, self.next_group);
            self.next_row += 1;
            self.next_group += 1;
            self.open_row = Some(i);
            self.open_group = Some(g);
            c.push_str(&format!("{i},name-{i},\"open {i}\n"));
            let t = cri_time(g);
            k.push_str(&format!(
                "{t} stdout P part-a-{g} \n{t} stdout P part-b-{g} \n"
            ));
        }
        csv.write_all(c.as_bytes()).unwrap();
        cri.write_all(k.as_bytes()).unwrap();
    }
}

/// The message of the CRI record of group `g` made of three lines.
fn part_msg(g: usize) -> String {
    format!("part-a-{g} part-b-{g} part-c-{g}")
}

/// Checks every record in the stream against what was written.
fn check(records: &[Map<String, Value>], w: &Written) {
    let mut rows = BTreeMap::new();
    let mut messages = BTreeSet::new();
    for r in records {
        let keys: Vec<&str> = r.keys().map(String::as_str).collect();
        if r.contains_key("logtag") {
            let m = r["message"].as_str().unwrap();
            assert!(w.messages.contains(m), "a CRI message never written: {r:?}");
            assert_eq!(r["logtag"], "F", "{r:?}");
            messages.insert(m.to_owned());
            continue;
        }
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ["id", "name", "note"], "CSV columns: {r:?}");
        let id = r["id"].as_str().unwrap();
        assert_ne!(id, "id", "the header line was sent");
        assert_eq!(
            r["note"].as_str(),
            w.rows.get(id).map(String::as_str),
            "{r:?}"
        );
        assert_eq!(r["name"].as_str().unwrap(), format!("name-{id}"));
        *rows.entry(id.to_owned()).or_insert(0) += 1;
    }
    assert_eq!(messages, w.messages, "CRI records missing");
    assert_eq!(rows.len(), w.rows.len(), "CSV rows missing");
}

/// Waits until every complete record written is in the stream, then checks
/// them all.
async fn wait_complete(client: &aws_sdk_kinesis::Client, w: &Written, agent: &AgentProcess) {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let got = objects(client, "logs").await;
        let has = |r: &Map<String, Value>| r.contains_key("logtag");
        let (k, c): (Vec<_>, Vec<_>) = got.iter().partition(|r| has(r));
        let ids: BTreeSet<&str> = c.iter().filter_map(|r| r["id"].as_str()).collect();
        let msgs: BTreeSet<&str> = k.iter().filter_map(|r| r["message"].as_str()).collect();
        if ids.len() >= w.rows.len() && msgs.len() >= w.messages.len() {
            check(&got, w);
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} rows, {} of {} CRI records\n{}",
            ids.len(),
            w.rows.len(),
            msgs.len(),
            w.messages.len(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// SIGKILLs the agent and waits for it.
async fn kill(mut agent: AgentProcess) {
    agent.child.kill().unwrap();
    tokio::task::spawn_blocking(move || {
        agent.child.wait().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_reading_csv_with_a_header_and_cri_partials() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let (csv_path, cri_path) = (work.path("data.csv"), work.path("pods.log"));
    let none = "rename = { timestamp = \"\", host = \"\", source = \"\" }";
    let conf = config(
        &emu,
        &work,
        &format!(
            "[[file]]\ninclude = [\"{}\"]\n{none}\n[file.parse]\npreset = \"csv\"\nheader = true\n\
             [[file]]\ninclude = [\"{}\"]\n{none}\n[file.parse]\npreset = \"cri\"\n",
            csv_path.display(),
            cri_path.display()
        ),
    );
    let (mut csv, mut cri) = (open_append(&csv_path), open_append(&cri_path));
    csv.write_all(format!("{HEADER}\n").as_bytes()).unwrap();
    let mut w = Written::default();
    // Runs 0 and 1 are killed at a random moment of their reading; run 2 once
    // every complete record is delivered (the open ones were read, not sent).
    for run in 0..3 {
        w.chunk(&mut csv, &mut cri, 3000, true);
        let mut agent = AgentProcess::spawn(&work, &format!("run{run}"), &conf, &[], |_| {});
        agent.metrics_addr().await;
        if run < 2 {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(50..700))).await;
        } else {
            wait_complete(&client, &w, &agent).await;
        }
        kill(agent).await;
    }
    w.chunk(&mut csv, &mut cri, 500, false);
    let mut agent = AgentProcess::spawn(&work, "last", &conf, &[], |_| {});
    agent.metrics_addr().await;
    wait_complete(&client, &w, &agent).await;
    agent.stop().await;
}
