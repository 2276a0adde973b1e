//! Record ids from the real binary, SIGKILLed 10 times while a file is written
//! and rotated and a socket client sends lines: every copy of a line read back
//! carries the same id, and distinct lines carry distinct ids.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::open_append;
use super::process::{base_toml, sigterm_and_wait, spawn_binary};
use crate::util::{create_stream, read_stream, send_lines, Emulator, Workdir};

const KILLS: usize = 10;

/// Appends lines to `app.log` (rotating it every second) until `stop`.
fn spawn_writer(dir: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let path = dir.join("app.log");
        let mut file = open_append(&path);
        let (mut n, mut rotations, start) = (0, 0, Instant::now());
        while !stop.load(Ordering::Relaxed) {
            let mut buf = String::new();
            for _ in 0..20 {
                buf.push_str(&format!("file-{n:07}\n"));
                n += 1;
            }
            file.write_all(buf.as_bytes()).unwrap();
            if start.elapsed() > Duration::from_millis(1000 * (rotations + 1)) {
                rotations += 1;
                std::fs::rename(&path, dir.join(format!("app.log.{rotations}"))).unwrap();
                file = open_append(&path);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        n
    })
}

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

/// A json file block and a raw lines socket, both with record ids.
fn config(emu: &Emulator, work: &Workdir, logs: &Path, sock: &Path) -> String {
    let blocks = format!(
        "[[file]]\ninclude = [\"{}/app.log*\"]\nformat = \"json\"\nrecord_id = true\nrotate_wait_ms = 500\n\
         [[socket]]\npath = \"{}\"\nrecord_id = true\n",
        logs.display(),
        sock.display()
    );
    base_toml(emu, work, &blocks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_copy_of_a_line_carries_its_id_across_sigkills() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let logs = work.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let sock = work.path("in.sock");
    let conf = work.path("agent.toml");
    std::fs::write(&conf, config(&emu, &work, &logs, &sock)).unwrap();
    let log = work.path("agent.log");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(logs.clone(), stop.clone());
    let mut sent = 0;
    for run in 0..KILLS {
        // Slow answers: requests are in flight when the agent dies, and what
        // Kinesis stored of them is sent again by the next run.
        emu.faults.delay_ms.store(150, Ordering::Relaxed);
        let mut child = spawn_binary(&conf, &log, "warn");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lines: Vec<String> = (0..500)
            .map(|i| format!("socket-{run:02}-{i:04}"))
            .collect();
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            send_lines(&sock, lines).await;
            sent += 500;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..900))).await;
        child.kill().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    emu.faults.delay_ms.store(0, Ordering::Relaxed);
    let child = spawn_binary(&conf, &log, "warn");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (by_line, records) = loop {
        let (by_line, records) = ids_by_line(&client).await;
        let files = by_line.keys().filter(|l| l.starts_with("file-")).count();
        if files >= written {
            break (by_line, records);
        }
        assert!(
            Instant::now() < deadline,
            "{files} of {written} file lines\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(sigterm_and_wait(child).await.success());
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (line, ids) in &by_line {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "{line}: copies with ids {ids:?}"
        );
        if let Some(other) = owner.insert(&ids[0], line) {
            panic!("{line} and {other} share the id {}", ids[0]);
        }
    }
    let sockets = by_line.keys().filter(|l| l.starts_with("socket-")).count();
    assert!(
        sockets > 0 && sockets <= sent,
        "{sockets} socket lines of {sent} sent"
    );
    eprintln!(
        "{} lines, {} records read back ({} copies)",
        by_line.len(),
        records,
        records - by_line.len()
    );
}
