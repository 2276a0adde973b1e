//! The file tailer in the agent, in process: rotations (rename, delete and
//! recreate, copytruncate) under load, hundreds of files, and a full spool that
//! pauses the tailer. Each test owns its emulator, temp dir and agent.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{open_append, LONG};
use crate::util::{
    check_shards_and_collect, config, create_stream, file_toml, start_agent, wait_for, Emulator,
    Workdir,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rotation {
    Rename,
    Delete,
    CopyTruncate,
}

/// What a writer wrote.
struct Written {
    lines: Vec<String>,
    /// copytruncate: lines written after the copy and before the truncation.
    window: HashSet<String>,
    rotations: usize,
}

/// Appends `per_sec` lines a second to `dir/app.log` for `secs` seconds, rotating
/// it every second the given way.
fn write_under_load(dir: &Path, mode: Rotation, secs: u64, per_sec: u64) -> Written {
    let path = dir.join("app.log");
    let mut file = open_append(&path);
    let mut out = Written {
        lines: Vec::new(),
        window: HashSet::new(),
        rotations: 0,
    };
    let total = secs * per_sec;
    let start = Instant::now();
    let next = |seq: &mut u64, out: &mut Written| {
        let line = format!(
            "{mode:?}-{seq:08}-{}",
            "w".repeat(40 + (*seq % 23) as usize)
        );
        *seq += 1;
        out.lines.push(line.clone());
        line
    };
    let mut seq = 0u64;
    while seq < total {
        let elapsed = start.elapsed();
        let due = ((elapsed.as_micros() as u64 * per_sec) / 1_000_000).min(total);
        if due > seq {
            let mut buf = String::new();
            while seq < due {
                buf.push_str(&next(&mut seq, &mut out));
                buf.push('\n');
            }
            file.write_all(buf.as_bytes()).unwrap();
        }
        if elapsed >= Duration::from_secs(out.rotations as u64 + 1) && seq < total {
            out.rotations += 1;
            let rotated = dir.join(format!("app.log.{}", out.rotations));
            match mode {
                Rotation::Rename => {
                    std::fs::rename(&path, &rotated).unwrap();
                    file = open_append(&path);
                }
                Rotation::Delete => {
                    std::fs::remove_file(&path).unwrap();
                    file = open_append(&path);
                }
                Rotation::CopyTruncate => {
                    std::fs::copy(&path, &rotated).unwrap();
                    // The race copytruncate cannot close: lines written between
                    // the copy and the truncation.
                    for _ in 0..20 {
                        let line = next(&mut seq, &mut out);
                        out.window.insert(line.clone());
                        file.write_all(format!("{line}\n").as_bytes()).unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    file.set_len(0).unwrap();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    out
}

/// Counts of each line in the stream.
async fn stream_counts(client: &aws_sdk_kinesis::Client, stream: &str) -> HashMap<Bytes, usize> {
    let (_, data) = check_shards_and_collect(client, stream).await;
    let mut counts = HashMap::new();
    for d in data {
        *counts.entry(d).or_insert(0) += 1;
    }
    counts
}

async fn rotation_under_load(mode: Rotation) {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let logs = work.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        &file_toml(&[&logs.join("app.log")], "rotate_wait_ms = 1000"),
    ))
    .await;
    let dir = logs.clone();
    let written = tokio::task::spawn_blocking(move || write_under_load(&dir, mode, 10, 20_000))
        .await
        .unwrap();
    assert_eq!(written.rotations, 9);
    let expected: HashSet<Bytes> = written
        .lines
        .iter()
        .map(|l| Bytes::from(l.clone()))
        .collect();
    assert_eq!(expected.len(), written.lines.len());
    let must = (written.lines.len() - written.window.len()) as u64;
    let m = agent.metrics().clone();
    wait_for("every line delivered", LONG, || {
        m.delivered_count("logs") >= must
    })
    .await;
    // Let a copytruncate window line that was read arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = stream_counts(&client, "logs").await;
    let mut lost_in_window = 0;
    for l in &written.lines {
        match counts.get(l.as_bytes()) {
            Some(1) => {}
            Some(n) => panic!("{l} delivered {n} times"),
            None if written.window.contains(l) => lost_in_window += 1,
            None => panic!("{l} lost (not in a copytruncate window)"),
        }
    }
    for d in counts.keys() {
        assert!(expected.contains(d), "never written: {d:?}");
    }
    println!(
        "{mode:?}: {} lines, {} rotations, {lost_in_window} of {} window lines lost",
        written.lines.len(),
        written.rotations,
        written.window.len()
    );
    match mode {
        Rotation::CopyTruncate => {
            assert!(m.read("shardline_file_events_total", &[("event", "truncated")]) >= 1);
        }
        _ => {
            // Every rotation was noticed, and old handles were closed after they
            // were read to the end (the last may still be waiting).
            let noticed = m.read("shardline_file_events_total", &[("event", "replaced")])
                + m.read("shardline_file_events_total", &[("event", "removed")]);
            assert!(noticed >= 9, "{noticed} rotations noticed");
            wait_for("old handles closed", LONG, || {
                m.read("shardline_file_events_total", &[("event", "closed")]) >= 9
            })
            .await;
        }
    }
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_under_load_delivers_every_line_exactly_once() {
    rotation_under_load(Rotation::Rename).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_recreate_under_load_delivers_every_line_exactly_once() {
    rotation_under_load(Rotation::Delete).await;
}

/// copytruncate has an inherent race: lines written after the copy was made and
/// before the truncation are in neither file. The tailer recovers everything else
/// (what it had not read yet is read from the copy); only those lines may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_loses_at_most_the_lines_between_copy_and_truncate() {
    rotation_under_load(Rotation::CopyTruncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_files_at_once_and_new_ones_are_all_read() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let logs = work.path("logs");
    std::fs::create_dir_all(logs.join("sub/deeper")).unwrap();
    let mut expected = HashSet::new();
    let mut write_file = |path: PathBuf, n: usize| {
        let mut text = String::new();
        for i in 0..n {
            let line = format!("{}-{i}", path.display());
            text.push_str(&line);
            text.push('\n');
            expected.insert(Bytes::from(line));
        }
        std::fs::write(path, text).unwrap();
    };
    for f in 0..300 {
        write_file(logs.join(format!("f{f:03}.log")), 50);
    }
    write_file(logs.join("sub/deeper/d.log"), 50);
    // Excluded, and not matched.
    std::fs::write(logs.join("f999.log"), "excluded\n").unwrap();
    std::fs::write(logs.join("other.txt"), "not matched\n").unwrap();
    let agent = start_agent(config(
        &work,
        &emu.endpoint,
        "logs",
        &file_toml(
            &[&logs.join("*.log"), &logs.join("sub/**/*.log")],
            &format!("exclude = [\"{}\"]", logs.join("f999.log").display()),
        ),
    ))
    .await;
    let m = agent.metrics().clone();
    wait_for("files opened", LONG, || {
        m.read("shardline_file_events_total", &[("event", "opened")]) >= 301
    })
    .await;
    // Files that appear while the agent runs, in a new directory too.
    std::fs::create_dir_all(logs.join("sub/new")).unwrap();
    for f in 0..50 {
        write_file(logs.join(format!("g{f:03}.log")), 20);
    }
    write_file(logs.join("sub/new/n.log"), 20);
    let total = expected.len() as u64;
    wait_for("every line delivered", LONG, || {
        m.delivered_count("logs") >= total
    })
    .await;
    let counts = stream_counts(&client, "logs").await;
    assert_eq!(counts.len() as u64, total);
    for (d, n) in &counts {
        assert_eq!(*n, 1, "{d:?} delivered {n} times");
        assert!(expected.contains(d), "not expected: {d:?}");
    }
    assert_eq!(
        m.read("shardline_file_events_total", &[("event", "opened")]),
        352
    );
    agent.stop().await.unwrap();
}

/// With the spool full the tailer pauses; when space is freed it goes on, and every
/// line arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_pauses_the_tailer_and_nothing_is_lost() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    // Nothing is accepted until the faults are cleared.
    emu.faults.fail_requests.store(u32::MAX, Ordering::Relaxed);
    let work = Workdir::new();
    let logs = work.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut text = String::new();
    let n = 60_000;
    for i in 0..n {
        text.push_str(&format!("bp-{i:06}-{}\n", "b".repeat(100)));
    }
    std::fs::write(logs.join("big.log"), &text).unwrap();
    let extra = format!("[spool.x]\n{}", file_toml(&[&logs.join("*.log")], ""));
    // The spool section is written by `config`; raise nothing but max_bytes.
    let extra = extra.replace("[spool.x]\n", "");
    let mut conf = config(&work, &emu.endpoint, "logs", &extra);
    conf.spool.max_bytes = 2 << 20;
    let agent = start_agent(conf).await;
    let m = agent.metrics().clone();
    let spool = agent.producer().backlog().clone();
    wait_for("a nearly full spool", LONG, || {
        spool.used_bytes() > (2 << 20) - 256 * 1024
    })
    .await;
    // Full: the next batch does not fit, and the count stops moving.
    let deadline = std::time::Instant::now() + LONG;
    let mut last = m.read("shardline_records_spooled_total", &[("source", "file")]);
    let stalled = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = m.read("shardline_records_spooled_total", &[("source", "file")]);
        if now == last {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tailer never stopped"
        );
        last = now;
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        m.read("shardline_records_spooled_total", &[("source", "file")]),
        stalled,
        "tailer kept spooling"
    );
    assert!(stalled < n, "everything fit: the test needs a fuller file");
    assert_eq!(m.delivered_count("logs"), 0);
    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    wait_for("every line delivered", LONG, || {
        m.delivered_count("logs") >= n
    })
    .await;
    let counts = stream_counts(&client, "logs").await;
    assert_eq!(counts.len() as u64, n);
    assert!(counts.values().all(|&c| c == 1), "duplicates");
    agent.stop().await.unwrap();
}
