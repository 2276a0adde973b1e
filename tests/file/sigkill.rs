//! Crash test: the real binary, SIGKILLed at random moments while a writer appends
//! and rotates; then the spool and the stream are audited.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::process::{base_toml, sigterm_and_wait, spawn_binary};
use super::{open_append, LONG};
use crate::util::{
    all_shards, create_stream, file_toml, read_stream, spool_contents, Emulator, Workdir,
};

/// Stream records with the run ("epoch") of the agent that delivered them: the test
/// writes a marker into every shard before each start.
async fn put_markers(client: &aws_sdk_kinesis::Client, epoch: usize) {
    for s in all_shards(client, "logs").await {
        client
            .put_record()
            .stream_name("logs")
            .partition_key("marker")
            .explicit_hash_key(s.start.to_string())
            .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                "marker-{epoch:04}"
            )))
            .send()
            .await
            .unwrap();
    }
}

/// Lines in the stream: (data, partition key, epoch).
async fn stream_with_epochs(client: &aws_sdk_kinesis::Client) -> Vec<(Bytes, String, usize)> {
    let mut out = Vec::new();
    let mut epoch: HashMap<String, usize> = HashMap::new();
    for r in read_stream(client, "logs").await {
        for u in r.users {
            if let Some(e) = u.data.strip_prefix(b"marker-") {
                let e: usize = std::str::from_utf8(e).unwrap().parse().unwrap();
                epoch.insert(r.shard_id.clone(), e);
                continue;
            }
            let e = *epoch
                .get(&r.shard_id)
                .expect("records before the first marker");
            out.push((u.data, u.partition_key, e));
        }
    }
    out
}

/// The writer: ~4000 lines/s (`line(n)` is the n-th), a rename rotation every
/// `rotate_ms`, until `stop` is set. Returns every line it wrote.
pub(super) fn spawn_writer(
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    line: fn(usize) -> String,
    rotate_ms: u64,
) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let path = dir.join("app.log");
        let mut file = open_append(&path);
        let mut lines = Vec::new();
        let start = Instant::now();
        let mut rotations = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut buf = String::new();
            for _ in 0..40 {
                let line = line(lines.len());
                buf.push_str(&line);
                buf.push('\n');
                lines.push(line);
            }
            file.write_all(buf.as_bytes()).unwrap();
            if start.elapsed() > Duration::from_millis(rotate_ms * (rotations + 1)) {
                rotations += 1;
                std::fs::rename(&path, dir.join(format!("app.log.{rotations}"))).unwrap();
                file = open_append(&path);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        lines
    })
}

/// The durable spool after each run: a line is held once, under one key, from
/// the first run that made it durable on (a re-read would give it a new key).
/// Owned by the crash test, which calls [`SpoolAudit::check`] after every run.
#[derive(Default)]
struct SpoolAudit {
    /// Each line's key in the durable spool, and the run that first made it durable.
    spooled_key: HashMap<Bytes, (String, usize)>,
}

impl SpoolAudit {
    /// Checks the spool at `spool` after run `epoch`; returns how many
    /// checkpoints it holds.
    fn check(&mut self, spool: &Path, when: &str, epoch: usize) -> usize {
        let (records, checkpoints) = spool_contents(spool, "logs");
        let mut seen = HashSet::new();
        for r in records {
            assert!(
                seen.insert(r.data.clone()),
                "{when}: {:?} spooled twice",
                r.data
            );
            let (key, _) = self
                .spooled_key
                .entry(r.data.clone())
                .or_insert((r.partition_key.clone(), epoch));
            assert_eq!(
                *key, r.partition_key,
                "{when}: {:?} was spooled again (new key)",
                r.data
            );
        }
        checkpoints.len()
    }
}

/// Runs the binary `kills` times, each SIGKILLed at a random moment, and audits the
/// spool after each. First half: Kinesis refuses everything, so the spool keeps
/// every line and the audit sees them all.
async fn killed_runs(
    emu: &Emulator,
    client: &aws_sdk_kinesis::Client,
    conf: &Path,
    agent_log: &Path,
    work: &Workdir,
    kills: usize,
    audit: &mut SpoolAudit,
) {
    for run in 0..kills {
        let refuse = run < kills / 2;
        emu.faults
            .fail_requests
            .store(if refuse { u32::MAX } else { 0 }, Ordering::Relaxed);
        put_markers(client, run).await;
        let mut child = spawn_binary(conf, agent_log, "warn");
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1500))).await;
        child.kill().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        audit.check(&work.spool(), &format!("after kill {run}"), run);
    }
}

/// The stream once it holds every line of `expected`.
async fn stream_when_complete(
    client: &aws_sdk_kinesis::Client,
    expected: &HashSet<Bytes>,
    agent_log: &Path,
    deadline: Instant,
) -> Vec<(Bytes, String, usize)> {
    loop {
        let stream = stream_with_epochs(client).await;
        let got: HashSet<&Bytes> = stream.iter().map(|(d, _, _)| d).collect();
        if got.len() >= expected.len() {
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} lines in the stream\n{}",
            got.len(),
            expected.len(),
            std::fs::read_to_string(agent_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Files rotated while the agent was stopped are closed (and their checkpoints
/// removed) once read to the end and `rotate_wait_ms` has passed: waits for
/// every one the last start (whose log begins at `log_before`) found.
async fn wait_rotated_files_closed(agent_log: &Path, log_before: usize, deadline: Instant) {
    loop {
        let log = std::fs::read(agent_log).unwrap_or_default();
        let log = String::from_utf8_lossy(&log[log_before.min(log.len())..]).into_owned();
        let rotated = log
            .matches("File was rotated while the agent was stopped")
            .count();
        let closed = log.matches("Closed a rotated or removed file").count();
        if closed >= rotated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{closed} of {rotated} rotated files closed\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every line in the stream was written, none is missing, and every duplicate was
/// delivered by different runs, under the durable key once it was durable.
/// Returns the duplicates re-sent under the same key and those under a new one.
fn check_copies(
    stream: Vec<(Bytes, String, usize)>,
    expected: &HashSet<Bytes>,
    audit: &SpoolAudit,
) -> (usize, usize) {
    let mut copies: BTreeMap<Bytes, Vec<(String, usize)>> = BTreeMap::new();
    for (d, key, epoch) in stream {
        assert!(expected.contains(&d), "never written: {d:?}");
        copies.entry(d).or_default().push((key, epoch));
    }
    let (mut same_key, mut new_key) = (0, 0);
    for (d, c) in &copies {
        if c.len() == 1 {
            continue;
        }
        let epochs: HashSet<usize> = c.iter().map(|(_, e)| *e).collect();
        assert_eq!(
            epochs.len(),
            c.len(),
            "{d:?} delivered twice by one run of the agent: {c:?}"
        );
        // Copies delivered before the line was durable may carry keys of spool
        // writes a kill undid; from then on, only the durable one.
        if let Some((k, since)) = audit.spooled_key.get(d) {
            assert!(
                c.iter().all(|(key, e)| e < since || key == k),
                "{d:?} was durably spooled under {k} in run {since} but delivered as {c:?}"
            );
        }
        for pair in c.windows(2) {
            if pair[0].0 == pair[1].0 {
                same_key += 1;
            } else {
                new_key += 1;
            }
        }
    }
    assert_eq!(copies.len(), expected.len(), "lines missing");
    (same_key, new_key)
}

/// The real binary, SIGKILLed at random moments while a writer appends and rotates.
/// Checked: every line is in the stream or the spool; the durable spool never held a
/// line twice nor the same line under two keys (a re-read gets a new random key);
/// and every duplicate in the stream was delivered by two different runs of the
/// agent, i.e. is explained by a kill between a successful PutRecords and the spool
/// writes (delete or group commit) that would have recorded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_spools_no_line_twice() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let logs = work.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = work.path("shardline.toml");
    std::fs::write(
        &conf,
        base_toml(
            &emu,
            &work,
            &file_toml(&[&logs.join("app.log")], "rotate_wait_ms = 300"),
        ),
    )
    .unwrap();
    let agent_log = work.path("agent.log");
    let stop = Arc::new(AtomicBool::new(false));
    let line = |n| format!("crash-{n:07}-{}", "c".repeat(50));
    let writer = spawn_writer(logs.clone(), stop.clone(), line, 1500);
    let mut audit = SpoolAudit::default();
    let kills = 12;
    killed_runs(&emu, &client, &conf, &agent_log, &work, kills, &mut audit).await;
    stop.store(true, Ordering::Relaxed);
    let lines = writer.join().unwrap();
    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    put_markers(&client, kills).await;
    let log_before = std::fs::metadata(&agent_log).map_or(0, |m| m.len() as usize);
    let child = spawn_binary(&conf, &agent_log, "warn,shardline::source::file=info");
    let expected: HashSet<Bytes> = lines.iter().map(|l| Bytes::from(l.clone())).collect();
    let deadline = Instant::now() + LONG;
    let stream = stream_when_complete(&client, &expected, &agent_log, deadline).await;
    wait_rotated_files_closed(&agent_log, log_before, deadline).await;
    let status = sigterm_and_wait(child).await;
    assert!(status.success());
    let checkpoints = audit.check(&work.spool(), "at the end", kills);
    // Every rotated file was finished and its checkpoint collected.
    assert_eq!(checkpoints, 1, "checkpoints of gone files are left");
    let (same_key, new_key) = check_copies(stream, &expected, &audit);
    println!(
        "{} lines, {kills} kills: {same_key} duplicates re-sent from the spool (kill after PutRecords, before the delete), \
         {new_key} re-read after a kill undid a spool write that had been delivered (kill after PutRecords, before the group commit)",
        expected.len()
    );
}
