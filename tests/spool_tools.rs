//! `shardline spool check|inspect|export` and `shardline redrive` under the
//! real binary: the check on the spool the corruption test damages and beside
//! a running agent, an export compared with what is later delivered, and a
//! redrive killed half-way (the command itself, and the agent doing it) that
//! still delivers every record once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;

use crate::spool::{damage_segments, fill_segments_and_kill, spool_config};
use crate::util::{
    create_stream, send_lines, shardline_command, stream_data, write_binary_config, AgentProcess,
    Emulator, Workdir,
};

/// The test hook that pauses a redrive after each batch (milliseconds).
const PAUSE_ENV: &str = "SHARDLINE_TEST_REDRIVE_PAUSE_MS";

/// Runs `shardline <args> -c <conf> [more]`: exit code, stdout, stderr.
fn cli(args: &[&str], conf: &Path, more: &[&Path]) -> (i32, String, String) {
    let out = shardline_command()
        .args(args)
        .arg("-c")
        .arg(conf)
        .args(more)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Undelivered records of stream "logs", as `spool inspect --json` counts them.
fn spooled(conf: &Path) -> u64 {
    let (code, out, err) = cli(&["spool", "inspect", "--json"], conf, &[]);
    if err.contains("no spool at") {
        return 0;
    }
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stream"] == "logs")
        .map(|s| s["records"].as_u64().unwrap())
        .sum()
}

/// The damage `spool check --json` lists: (kind, file name).
fn damage(conf: &Path) -> (i32, Vec<(String, String)>) {
    let (code, out, err) = cli(&["spool", "check", "--json"], conf, &[]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    let found = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] != "torn_tail")
        .map(|f| {
            let kind = match &f["kind"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.as_object().unwrap().keys().next().unwrap().clone(),
            };
            let path = PathBuf::from(f["path"].as_str().unwrap());
            (
                kind,
                path.file_name().unwrap().to_string_lossy().into_owned(),
            )
        })
        .collect();
    (code, found)
}

/// The corruption test's damage (a sealed segment cut mid-frame, the newest
/// segment deleted) is what `check` finds, and it exits 1; before the damage,
/// after a SIGKILL, it finds none and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_the_damage_the_corruption_test_makes() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let conf = spool_config(
        &work,
        &emu.endpoint,
        "segment_bytes = 1048576\nflush_interval_ms = 50",
        "",
    );
    fill_segments_and_kill(&emu, &work, &conf).await;
    assert_eq!(damage(&conf), (0, vec![]), "a SIGKILL is not damage");
    let segs = segments(&work.spool());
    damage_segments(&work);
    let (code, mut found) = damage(&conf);
    found.sort();
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    let mut want = vec![
        ("cut_short".to_owned(), name(&segs[segs.len() / 2])),
        ("missing".to_owned(), name(segs.last().unwrap())),
    ];
    want.sort();
    assert_eq!((code, found), (1, want));
    let (_, text, _) = cli(&["spool", "check"], &conf, &[]);
    assert!(text.contains("2 damaged"), "{text}");
}

/// The segment files of stream "logs", in order.
fn segments(spool: &Path) -> Vec<PathBuf> {
    let dir = spool.join("streams").join("6c6f6773");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Check, inspect and export run beside an agent that appends, delivers and
/// removes segments: no damage, exit 0, and the agent notices nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_clean_beside_a_busy_agent() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let conf = write_binary_config(&work, &emu.endpoint, "");
    std::fs::write(
        &conf,
        std::fs::read_to_string(&conf).unwrap().replace(
            "flush_interval_ms = 50",
            "flush_interval_ms = 20\nsegment_bytes = 1048576",
        ),
    )
    .unwrap();
    let mut agent = AgentProcess::spawn(&work, "busy", &conf, &[], |_| {});
    agent.metrics_addr().await;
    let sock = work.path("in.sock");
    let load = tokio::spawn(async move {
        for round in 0..20 {
            send_lines(
                &sock,
                (0..2000).map(move |i| format!("busy {round} {i} {}", "x".repeat(80))),
            )
            .await;
        }
    });
    let mut checks = 0;
    while !load.is_finished() || checks < 5 {
        let conf = conf.clone();
        let (code, found) = tokio::task::spawn_blocking(move || damage(&conf))
            .await
            .unwrap();
        assert_eq!((code, found), (0, vec![]), "{}", agent.log_text());
        checks += 1;
    }
    load.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream_data(&client, "logs").await.len() < 40_000 {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    agent.stop().await;
}

/// Records spooled while Kinesis refuses are exported, and what is delivered
/// once it accepts is exactly what the export printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_prints_what_is_later_delivered() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let conf = write_binary_config(&work, &emu.endpoint, "shutdown_timeout_secs = 2");
    emu.faults.fail_requests.store(u32::MAX, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(&work, "refused", &conf, &[], |_| {});
    agent.metrics_addr().await;
    send_lines(
        &work.path("in.sock"),
        (0..1500).map(|i| format!("export {i}")),
    )
    .await;
    wait_until("the records are spooled", || spooled(&conf) == 1500).await;
    // Exported while the agent runs, without stopping it.
    let (code, out, err) = cli(&["spool", "export", "--stream", "logs"], &conf, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 1500 records"), "{err}");
    let mut exported: Vec<Bytes> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            assert_eq!(v["stream"], "logs");
            assert!(v["partition_key"].is_string() && v["explicit_hash_key"].is_null());
            let data = v["data_base64"].as_str().unwrap();
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            )
        })
        .collect();
    exported.sort();
    agent.stop().await;
    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    let agent = AgentProcess::spawn(&work, "accepted", &conf, &[], |_| {});
    let delivered = wait_delivered(&client, 1500, &agent).await;
    assert_eq!(delivered, exported);
    agent.stop().await;
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `n` records in stream "logs" and returns their data, sorted.
async fn wait_delivered(
    client: &aws_sdk_kinesis::Client,
    n: usize,
    agent: &AgentProcess,
) -> Vec<Bytes> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let data = stream_data(client, "logs").await;
        if data.len() >= n {
            // A moment more: a duplicate would come now.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return stream_data(client, "logs").await;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n}\n{}",
            data.len(),
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A dead-letter file of `n` records whose data is `<tag> <i>`.
fn dead_letters(path: &Path, tag: &str, n: usize) -> Vec<Bytes> {
    let mut text = String::new();
    let mut data = Vec::new();
    for i in 0..n {
        let d = format!("{tag} {i:05}");
        let line = serde_json::json!({
            "stream": "logs", "partition_key": format!("k{i}"), "explicit_hash_key": null,
            "data_base64": base64::engine::general_purpose::STANDARD.encode(&d),
            "code": "ValidationException", "message": "refused", "time": 0,
        });
        text.push_str(&format!("{line}\n"));
        data.push(Bytes::from(d));
    }
    std::fs::write(path, text).unwrap();
    data.sort();
    data
}

/// The files beside `path` named `<name>.redriven-*`.
fn redriven(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.redriven-", path.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect()
}

/// With no agent running, `redrive` opens the spool itself; SIGKILLed between
/// two batches and run again, it writes only the rest; the agent then
/// delivers every record once. A file with a bad line or an unknown stream is
/// refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_killed_half_way_and_run_again_delivers_each_record_once() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let conf = write_binary_config(&work, &emu.endpoint, "");
    let file = work.path("dead-1.ndjson");
    let want = dead_letters(&file, "offline", 3000);
    let mut child = shardline_command()
        .env(PAUSE_ENV, "700")
        .args(["redrive", "-c"])
        .arg(&conf)
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a first batch is spooled", || spooled(&conf) > 0).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let first = spooled(&conf);
    assert!(first > 0 && first < 3000, "{first}");
    assert!(redriven(&file).is_empty(), "renamed before it was done");

    let (code, out, err) = cli(&["redrive"], &conf, &[&file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{first} were already")), "{out}");
    assert_eq!(spooled(&conf), 3000);
    let renamed = redriven(&file);
    assert_eq!(renamed.len(), 1, "{out}");
    // Redriven again under its new name: nothing is written twice.
    let (code, out, _) = cli(&["redrive"], &conf, &[&renamed[0]]);
    assert_eq!(code, 0);
    assert!(
        out.contains(": 0 records redriven (3000 were already"),
        "{out}"
    );

    let bad = work.path("dead-2.ndjson");
    std::fs::write(&bad, "{\"stream\":\"logs\",\"partition_key\":\"k\",\"data_base64\":\"eA==\"}\n{\"stream\":\"elsewhere\",\"partition_key\":\"k\",\"data_base64\":\"eA==\"}\nnot json\n").unwrap();
    let (code, out, _) = cli(&["redrive"], &conf, &[&bad]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 2: stream \"elsewhere\" is not one this config writes to"),
        "{out}"
    );
    assert!(out.contains("line 3: not a dead-letter record"), "{out}");
    assert!(bad.exists() && redriven(&bad).is_empty());
    assert_eq!(spooled(&conf), 3000);

    let agent = AgentProcess::spawn(&work, "deliver", &conf, &[], |_| {});
    assert_eq!(wait_delivered(&client, 3000, &agent).await, want);
    agent.stop().await;
}

/// With the agent running, `redrive` goes through its inbox; the agent is
/// SIGKILLed half-way, and at its next start finishes the request: every
/// record is delivered once and the file is renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_by_the_agent_survives_its_sigkill() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 2).await;
    let work = Workdir::new();
    let conf = write_binary_config(&work, &emu.endpoint, "");
    let file = work.path("dead.ndjson.1");
    let want = dead_letters(&file, "online", 3000);
    emu.faults.fail_requests.store(u32::MAX, Ordering::Relaxed);
    let mut agent = AgentProcess::spawn(&work, "paused", &conf, &[], |c| {
        c.env(PAUSE_ENV, "1000");
    });
    agent.metrics_addr().await;
    let (c, f) = (conf.clone(), file.clone());
    let command = tokio::task::spawn_blocking(move || {
        let mut command = shardline_command();
        command
            .args(["redrive", "-c"])
            .arg(c)
            .arg(f)
            .output()
            .unwrap()
    });
    wait_until("a first batch is spooled", || spooled(&conf) > 0).await;
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let out = command.await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{said}{err}");
    assert!(
        err.contains("the agent stopped before it answered"),
        "{err}"
    );
    assert!(redriven(&file).is_empty());

    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    let agent = AgentProcess::spawn(&work, "resumed", &conf, &[], |_| {});
    wait_until("the agent finishes the request", || {
        redriven(&file).len() == 1
    })
    .await;
    let delivered = wait_delivered(&client, 3000, &agent).await;
    assert_eq!(delivered.len(), want.len(), "duplicates or losses");
    assert_eq!(delivered.iter().collect::<HashSet<_>>().len(), 3000);
    assert_eq!(delivered, want);
    let log = agent.stop().await;
    assert!(log.contains("Redrove a dead-letter file"), "{log}");
}
