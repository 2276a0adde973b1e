//! Crash test: the real binary following a growing journal, SIGKILLed at random
//! moments; then the spool and the stream are audited.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{journalctl_pids, stream_records, Journal, Written, LONG};
use crate::util::{create_stream, shardline_bin, spool_contents, AgentProcess, Emulator, Workdir};

/// Writes the binary's config (units `app`, priority `info`, from `journal_dir`)
/// and checks that `shardline validate` accepts it. Returns its path.
fn write_config(emu: &Emulator, work: &Workdir, journal_dir: &Path) -> PathBuf {
    let conf = work.path("shardline.toml");
    std::fs::write(
        &conf,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n[delivery]\nmax_buffered_time_ms = 20\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\nflush_interval_ms = 50\n\
             [[journald]]\ndirectory = \"{}\"\nunits = [\"app\"]\npriority = \"info\"\n",
            emu.endpoint,
            work.spool().display(),
            journal_dir.display()
        ),
    )
    .unwrap();
    let check = Command::new(shardline_bin())
        .args(["validate", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    conf
}

/// The writer: batches of 50 entries (some not selected) every ~20 ms, until
/// `stop` is set. Returns the selected messages and how many entries it wrote.
fn spawn_writer(journal_dir: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<(Vec<String>, usize)> {
    let mut journal = Journal::new(journal_dir);
    std::thread::spawn(move || {
        let mut selected = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut batch = Vec::new();
            for _ in 0..50 {
                n += 1;
                let message = format!("entry-{n:07}-{}", "j".repeat(40));
                let e = match n % 5 {
                    0 => Written::new(message).unit("other.service"),
                    1 => Written::new(message).unit("app.service").priority(7),
                    _ => {
                        selected.push(message.clone());
                        Written::new(message).unit("app.service").priority(6)
                    }
                };
                batch.push(e);
            }
            journal.append(&batch);
            std::thread::sleep(Duration::from_millis(20));
        }
        (selected, n)
    })
}

/// Runs the binary `kills` times while Kinesis refuses everything, each SIGKILLed
/// at a random moment; after each, the spool holds no entry twice and at most one
/// checkpoint. Returns after how many kills the spool held more than before (the
/// kill came while the source was reading, not before it started).
async fn killed_runs(
    emu: &Emulator,
    work: &Workdir,
    conf: &Path,
    journal_dir: &Path,
    kills: usize,
) -> usize {
    let (mut spooled, mut grew) = (0, 0);
    for run in 0..kills {
        emu.faults.fail_requests.store(u32::MAX, Ordering::Relaxed);
        let mut agent = AgentProcess::spawn(work, &format!("run-{run}"), conf, &[], |_| {});
        agent.metrics_addr().await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1500))).await;
        agent.child.kill().unwrap();
        agent.child.wait().unwrap();
        // The journalctl it ran is left behind (SIGKILL runs no clean-up); it
        // exits at its next write into the closed pipe, or here.
        for pid in journalctl_pids(journal_dir) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let (records, checkpoints) = spool_contents(&work.spool(), "logs");
        let mut seen = HashSet::new();
        for r in &records {
            assert!(
                seen.insert(r.data.clone()),
                "after kill {run}: {:?} spooled twice",
                r.data
            );
        }
        assert!(checkpoints.len() <= 1, "{checkpoints:?}");
        if records.len() > spooled {
            grew += 1;
        }
        spooled = records.len();
    }
    grew
}

/// The stream once it holds as many records as `expected`, read once more after
/// the agent stopped (anything late would be a duplicate).
async fn stream_when_complete(
    client: &aws_sdk_kinesis::Client,
    expected: &HashSet<Bytes>,
    agent: AgentProcess,
) -> Vec<(Bytes, String)> {
    let deadline = Instant::now() + LONG;
    let stream = loop {
        let stream = stream_records(client, "logs").await;
        if stream.len() >= expected.len() {
            break stream;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} entries in the stream\n{}",
            stream.len(),
            expected.len(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    agent.stop().await;
    let again = stream_records(client, "logs").await;
    assert_eq!(again.len(), stream.len());
    again
}

/// Every entry in the stream was selected, each once, and none is missing.
fn check_exactly_once(stream: Vec<(Bytes, String)>, expected: &HashSet<Bytes>) {
    let mut copies: BTreeMap<Bytes, usize> = BTreeMap::new();
    for (d, _) in stream {
        assert!(expected.contains(&d), "not a selected entry: {d:?}");
        *copies.entry(d).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(copies.len(), expected.len(), "entries missing");
}

/// The real binary following a journal that grows while it runs, SIGKILLed at
/// random moments. Every kill happens while Kinesis refuses every request, so
/// nothing is delivered before the last, clean run: the durable spool after each
/// kill holds no entry twice, and at the end the stream holds every selected
/// entry exactly once (audited by content) and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_delivers_every_selected_entry_exactly_once() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let journal_dir = work.path("journal");
    let conf = write_config(&emu, &work, &journal_dir);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(journal_dir.clone(), stop.clone());
    let kills = 10;
    let grew = killed_runs(&emu, &work, &conf, &journal_dir, kills).await;
    assert!(
        grew >= kills / 2,
        "only {grew} of {kills} runs spooled anything"
    );
    stop.store(true, Ordering::Relaxed);
    let (selected, written) = writer.join().unwrap();
    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    let agent = AgentProcess::spawn(&work, "last", &conf, &[], |_| {});
    let expected: HashSet<Bytes> = selected.iter().map(|m| Bytes::from(m.clone())).collect();
    let stream = stream_when_complete(&client, &expected, agent).await;
    check_exactly_once(stream, &expected);
    let (left, _) = spool_contents(&work.spool(), "logs");
    assert!(left.is_empty(), "{} records left in the spool", left.len());
    println!(
        "{written} entries written, {} selected, {kills} kills ({grew} while spooling): each delivered once",
        expected.len()
    );
}
