//! Record ids from the real binary, SIGKILLed 10 times while a file is written
//! and rotated, a socket client sends lines, a framed client sends frames (half
//! of its records with ids of its own) and journal entries are appended: every
//! copy of a line read back carries the same id, and distinct lines carry
//! distinct ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::process::{base_toml, sigterm_and_wait, spawn_binary};
use super::sigkill::spawn_writer;
use shardline::testkit::frame::{self, Record, Request, Response, Status};

use crate::journald::{Journal, Written};
use crate::util::{create_stream, read_stream, send_lines, Emulator, Workdir};

const KILLS: usize = 10;

/// Each line read back (a json record's `message`, or a raw record after its
/// id and space) with the ids of its copies.
async fn ids_by_line(client: &aws_sdk_kinesis::Client) -> (HashMap<String, Vec<String>>, usize) {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut records = 0;
    for r in read_stream(client, "logs").await {
        for u in r.users {
            records += 1;
            let text = String::from_utf8(u.data.to_vec()).unwrap();
            let (line, id) = if text.starts_with('{') {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let id = v["record_id"].as_str().unwrap_or_else(|| panic!("{text}"));
                (v["message"].as_str().unwrap().to_owned(), id.to_owned())
            } else {
                let (id, line) = text.split_once(' ').unwrap_or_else(|| panic!("{text}"));
                (line.to_owned(), id.to_owned())
            };
            out.entry(line).or_default().push(id);
        }
    }
    (out, records)
}

/// What the test feeds the agent besides the file: a lines socket, a frames
/// socket and a journal, all with record ids.
struct Feeds {
    lines: PathBuf,
    frames: PathBuf,
    journal: Journal,
    journal_dir: PathBuf,
    /// Lines sent (acked, for frames; appended, for the journal) by their
    /// prefix, and the ids the framed client gave.
    sent: HashMap<&'static str, usize>,
    client_ids: HashMap<String, String>,
}

impl Feeds {
    fn new(work: &Workdir) -> Feeds {
        let journal_dir = work.path("journal");
        Feeds {
            lines: work.path("lines.sock"),
            frames: work.path("frames.sock"),
            journal: Journal::new(journal_dir.clone()),
            journal_dir,
            sent: HashMap::new(),
            client_ids: HashMap::new(),
        }
    }

    /// A json file block, the two sockets and the journal, with record ids.
    fn config(&self, emu: &Emulator, work: &Workdir, logs: &Path) -> String {
        let blocks = format!(
            "[[file]]\ninclude = [\"{}/app.log*\"]\nformat = \"json\"\nrecord_id = true\nrotate_wait_ms = 500\n\
             [[socket]]\npath = \"{}\"\nrecord_id = true\n\
             [[socket]]\npath = \"{}\"\nframing = \"frames\"\nrecord_id = true\n\
             [[journald]]\ndirectory = \"{}\"\nsince = \"beginning\"\nrecord_id = true\n",
            logs.display(),
            self.lines.display(),
            self.frames.display(),
            self.journal_dir.display(),
        );
        base_toml(emu, work, &blocks)
    }

    /// Run `run`'s lines, frames and journal entries.
    async fn feed(&mut self, run: usize) {
        let entries: Vec<Written> = (0..200)
            .map(|i| Written::new(format!("journal-{run:02}-{i:04}")))
            .collect();
        self.journal.append(&entries);
        *self.sent.entry("journal-").or_default() += 200;
        let lines: Vec<String> = (0..500)
            .map(|i| format!("socket-{run:02}-{i:04}"))
            .collect();
        if std::os::unix::net::UnixStream::connect(&self.lines).is_ok() {
            send_lines(&self.lines, lines).await;
            *self.sent.entry("socket-").or_default() += 500;
        }
        let records = (0..200)
            .map(|i| {
                let data = format!("frame-{run:02}-{i:04}");
                let id = (i % 2 == 0).then(|| format!("order:{run}.{i}"));
                if let Some(id) = &id {
                    self.client_ids.insert(data.clone(), id.clone());
                }
                Record {
                    partition_key: data.clone(),
                    explicit_hash_key: None,
                    data: data.into(),
                    record_id: id,
                }
            })
            .collect();
        let mut wire = bytes::BytesMut::new();
        frame::encode(
            &Request {
                id: 1,
                records,
                ack: true,
                stream: None,
            },
            &mut wire,
        );
        if let Ok(mut s) = tokio::net::UnixStream::connect(&self.frames).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut answer = Vec::new();
            if s.write_all(&wire).await.is_ok() && s.shutdown().await.is_ok() {
                let _ = s.read_to_end(&mut answer).await;
            }
            let mut answer = bytes::BytesMut::from(&answer[..]);
            if let Ok(Some(r)) = frame::decode::<Response>(&mut answer) {
                assert_eq!(r.status, Status::Ok as i32, "{}", r.message);
                *self.sent.entry("frame-").or_default() += 200;
            }
        }
    }
}

/// One id for every copy of a line, no id for two lines, a framed client's
/// own ids kept, and lines of every source read back.
fn check_ids(by_line: &HashMap<String, Vec<String>>, feeds: &Feeds) {
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (line, ids) in by_line {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "{line}: copies with ids {ids:?}"
        );
        if let Some(other) = owner.insert(&ids[0], line) {
            panic!("{line} and {other} share the id {}", ids[0]);
        }
    }
    for (line, id) in &feeds.client_ids {
        if let Some(ids) = by_line.get(line) {
            assert_eq!(&ids[0], id, "{line}");
        }
    }
    for prefix in ["file-", "journal-", "frame-", "socket-"] {
        let n = by_line.keys().filter(|l| l.starts_with(prefix)).count();
        assert!(
            n > 0 && n <= feeds.sent[prefix],
            "{prefix}: {n} of {:?}",
            feeds.sent
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_copy_of_a_line_carries_its_id_across_sigkills() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let logs = work.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut feeds = Feeds::new(&work);
    let conf = work.path("agent.toml");
    std::fs::write(&conf, feeds.config(&emu, &work, &logs)).unwrap();
    let log = work.path("agent.log");
    let stop = Arc::new(AtomicBool::new(false));
    let line = |n| format!("file-{n:07}");
    let writer = spawn_writer(logs.clone(), stop.clone(), line, 1000);
    for run in 0..KILLS {
        // Slow answers: requests are in flight when the agent dies, and what
        // Kinesis stored of them is sent again by the next run.
        emu.faults.delay_ms.store(150, Ordering::Relaxed);
        let mut child = spawn_binary(&conf, &log, "warn");
        tokio::time::sleep(Duration::from_millis(300)).await;
        feeds.feed(run).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..900))).await;
        child.kill().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap().len();
    emu.faults.delay_ms.store(0, Ordering::Relaxed);
    let child = spawn_binary(&conf, &log, "warn");
    let deadline = Instant::now() + Duration::from_secs(120);
    feeds.sent.insert("file-", written);
    let count = |by_line: &HashMap<String, Vec<String>>, prefix: &str| {
        by_line.keys().filter(|l| l.starts_with(prefix)).count()
    };
    let (by_line, records) = loop {
        let (by_line, records) = ids_by_line(&client).await;
        // Every file line, journal entry and acked frame arrives; lines a
        // killed agent had not spooled may not.
        let done = ["file-", "journal-", "frame-"]
            .iter()
            .all(|p| count(&by_line, p) >= feeds.sent.get(p).copied().unwrap_or(0));
        if done {
            break (by_line, records);
        }
        assert!(
            Instant::now() < deadline,
            "{:?} sent, {} lines read back\n{}",
            feeds.sent,
            by_line.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(sigterm_and_wait(child).await.success());
    check_ids(&by_line, &feeds);
    eprintln!(
        "{} lines, {} records read back ({} copies)",
        by_line.len(),
        records,
        records - by_line.len()
    );
}
