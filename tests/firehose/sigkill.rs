//! The real binary, SIGKILLed while a PutRecordBatch is in flight at the fault
//! endpoint (which stores each request's records at once and answers 150 ms
//! later), then started again on the same spool while a writer keeps appending
//! to the file it tails.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{append_lines, duplicates, internal, split_lines, LONG};
use crate::util::firehose::{FirehoseEndpoint, Plan};
use crate::util::{file_toml, spool_contents, wait_for, AgentProcess, Workdir};

const NAME: &str = "crash";
const KILLS: usize = 4;
/// The agent's in-flight limit for the stream (the smallest it takes).
const MAX_INFLIGHT_BYTES: usize = 1 << 20;

fn write_config(work: &Workdir, fh: &FirehoseEndpoint, log: &Path) -> PathBuf {
    let path = work.path("shardline.toml");
    std::fs::write(
        &path,
        format!(
            "shutdown_timeout_secs = 10\n[kinesis]\ndelivery_stream = \"{NAME}\"\n\
             region = \"us-east-1\"\nendpoint = \"{}\"\nrequest_timeout_ms = 10000\n\
             packing_max_bytes = 8192\npacking_linger_ms = 20\n\
             [delivery]\nmax_buffered_time_ms = 20\nmax_inflight_bytes = {MAX_INFLIGHT_BYTES}\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nflush_interval_ms = 50\n{}",
            fh.endpoint,
            work.spool().display(),
            file_toml(&[log], "")
        ),
    )
    .unwrap();
    path
}

/// Lines written so far, each with the offset where it starts in the file.
type Written = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// Appends 100 lines every 20 ms until `stop`.
fn spawn_writer(path: PathBuf, stop: Arc<AtomicBool>) -> (Written, std::thread::JoinHandle<()>) {
    let written: Written = Arc::default();
    let w = written.clone();
    let handle = std::thread::spawn(move || {
        let mut offset = 0u64;
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            let lines = append_lines(&path, "kil", next..next + 100);
            next += 100;
            let mut all = w.lock().unwrap();
            for l in lines {
                let len = l.len() as u64 + 1;
                all.push((offset, l));
                offset += len;
            }
            drop(all);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (written, handle)
}

/// The file offset the spool's checkpoint says was consumed: the file
/// source's checkpoint value is a version byte, then the offset
/// (little-endian u64). 0 without a checkpoint.
fn consumed_offset(checkpoints: &[shardline::testkit::Checkpoint]) -> u64 {
    assert!(
        checkpoints.len() <= 1,
        "one file, {} checkpoints",
        checkpoints.len()
    );
    checkpoints.first().map_or(0, |c| {
        u64::from_le_bytes(c.value[1..9].try_into().expect("a file checkpoint"))
    })
}

/// Lines stored at the endpoint so far, with the run of the agent that sent
/// each copy (`starts[r]`: the first request of run `r`).
fn stored_by_run(fh: &FirehoseEndpoint, starts: &[u64]) -> Vec<(Bytes, usize)> {
    let run = |request: u64| starts.iter().rposition(|s| *s <= request).unwrap();
    fh.accepted()
        .iter()
        .flat_map(|a| {
            split_lines(&a.data)
                .into_iter()
                .map(move |l| (l, a.request))
        })
        .map(|(l, r)| (l, run(r)))
        .collect()
}

/// After a kill: the lines the endpoint stored that the next run will send
/// again, because the durable state does not say they were delivered (still in
/// the spool, or after the file's checkpoint). These were in flight at the kill.
fn in_flight_at_kill(work: &Workdir, fh: &FirehoseEndpoint, written: &Written) -> HashSet<Bytes> {
    let (pending, checkpoints) = spool_contents(&work.spool(), &internal(NAME));
    let offset = consumed_offset(&checkpoints);
    let mut again: HashSet<Bytes> = pending
        .into_iter()
        .map(|r| {
            r.data
                .strip_suffix(b"\n")
                .map_or(r.data.clone(), |d| r.data.slice(..d.len()))
        })
        .collect();
    let written = written.lock().unwrap();
    again.extend(
        written
            .iter()
            .filter(|(o, _)| *o >= offset)
            .map(|(_, l)| l.clone()),
    );
    let stored: HashSet<Bytes> = fh
        .accepted()
        .iter()
        .flat_map(|a| split_lines(&a.data))
        .collect();
    again.intersection(&stored).cloned().collect()
}

/// One run: starts the binary, lets it deliver for a random while, waits for a
/// request in flight and SIGKILLs it; then waits for the endpoint to settle.
async fn run_and_kill(work: &Workdir, conf: &Path, fh: &FirehoseEndpoint, run: usize) {
    let mut agent = AgentProcess::spawn(work, &format!("run{run}"), conf, &[], |_| {});
    agent.metrics_addr().await;
    tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1500))).await;
    let deadline = Instant::now() + LONG;
    while fh.in_flight() == 0 {
        assert!(
            Instant::now() < deadline,
            "no request in flight:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    wait_for(
        "the endpoint to drop the killed agent's requests",
        LONG,
        || fh.in_flight() == 0,
    )
    .await;
}

/// SIGKILL mid-batch, four times, then a last run that drains: no line is
/// lost. A line arrives twice only when a run sent it and was killed before
/// the spool recorded it as delivered (its deletion, or the spool write and
/// checkpoint, not yet durable), so the next run sent it again: each copy
/// comes from another run, each extra copy is one such kill, and the lines
/// open at a kill fit in the agent's in-flight limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_nothing_and_duplicates_only_what_was_in_flight() {
    let fh = FirehoseEndpoint::start(Plan {
        delay: Duration::from_millis(150),
        store_before_delay: true,
        ..Plan::default()
    })
    .await;
    let work = Workdir::new();
    let log = work.path("app.log");
    let conf = write_config(&work, &fh, &log);
    let stop = Arc::new(AtomicBool::new(false));
    let (written, writer) = spawn_writer(log.clone(), stop.clone());
    let mut starts = Vec::new();
    let mut allowed: HashMap<Bytes, u64> = HashMap::new();
    for run in 0..KILLS {
        starts.push(fh.request_count() as u64);
        run_and_kill(&work, &conf, &fh, run).await;
        let open = in_flight_at_kill(&work, &fh, &written);
        let bytes: usize = open.iter().map(|l| l.len() + 1).sum();
        println!("kill {run}: {} lines ({bytes} bytes) in flight", open.len());
        assert!(
            bytes <= MAX_INFLIGHT_BYTES,
            "{bytes} bytes in flight at kill {run}, over the limit"
        );
        for l in open {
            *allowed.entry(l).or_default() += 1;
        }
    }
    starts.push(fh.request_count() as u64);
    let agent = AgentProcess::spawn(&work, "last", &conf, &[], |_| {});
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let sent: Vec<Bytes> = written
        .lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.clone())
        .collect();
    let wanted: HashSet<&Bytes> = sent.iter().collect();
    wait_for("every line after the kills", LONG, || {
        let got: Vec<(Bytes, usize)> = stored_by_run(&fh, &starts);
        let got: HashSet<&Bytes> = got.iter().map(|(l, _)| l).collect();
        wanted.is_subset(&got)
    })
    .await;
    agent.stop().await;
    let copies = stored_by_run(&fh, &starts);
    let got: Vec<Bytes> = copies.iter().map(|(l, _)| l.clone()).collect();
    let dups = duplicates(&sent, &got);
    let mut runs: HashMap<&Bytes, Vec<usize>> = HashMap::new();
    for (l, r) in &copies {
        runs.entry(l).or_default().push(*r);
    }
    for (l, extra) in &dups {
        let r = &runs[l];
        let distinct: HashSet<&usize> = r.iter().collect();
        assert_eq!(
            distinct.len(),
            r.len(),
            "{l:?} sent twice by one run: {r:?}"
        );
        let may = allowed.get(l).copied().unwrap_or(0);
        assert!(
            *extra <= may,
            "{l:?}: {extra} extra copies, in flight at {may} kills"
        );
    }
    println!(
        "{} lines, {KILLS} kills, {} requests: {} lines duplicated, {} were in flight at a kill",
        sent.len(),
        fh.request_count(),
        dups.len(),
        allowed.len()
    );
}
