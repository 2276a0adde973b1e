//! The journald source against real journal files. No journald runs in CI (no
//! systemd as PID 1), so the tests write on-disk journal files with
//! `systemd-journal-remote` (Debian package `systemd-journal-remote`, installed by
//! `.ci/test`) from journal export streams, appending while the agent follows them
//! through `journalctl --directory --follow`: the same reader, files and cursors
//! as the system journal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::util::{
    config, create_stream, full_spool_config, read_stream, shardline_bin, spool_contents,
    start_agent, wait_for, AgentProcess, Emulator, Workdir,
};

const LONG: Duration = Duration::from_secs(120);

/// `systemd-journal-remote`, which writes journal files from export streams.
fn journal_remote() -> PathBuf {
    ["/lib/systemd", "/usr/lib/systemd"]
        .iter()
        .map(|d| Path::new(d).join("systemd-journal-remote"))
        .find(|p| p.exists())
        .expect(
            "systemd-journal-remote is not installed (Debian package systemd-journal-remote); run .ci/test, which installs it",
        )
}

/// This machine's boot ID, as journal entries carry it (`journalctl --boot` picks
/// entries by it).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .replace('-', "")
}

/// One entry to write.
#[derive(Debug, Clone, Default)]
struct Written {
    message: Vec<u8>,
    unit: Option<String>,
    identifier: Option<String>,
    priority: Option<u8>,
    /// Another boot's entry (not this boot's).
    old_boot: bool,
}

impl Written {
    fn new(message: impl Into<Vec<u8>>) -> Written {
        Written {
            message: message.into(),
            ..Written::default()
        }
    }
    fn unit(mut self, u: &str) -> Written {
        self.unit = Some(u.into());
        self
    }
    fn ident(mut self, i: &str) -> Written {
        self.identifier = Some(i.into());
        self
    }
    fn priority(mut self, p: u8) -> Written {
        self.priority = Some(p);
        self
    }
}

/// A journal directory the tests append entries to.
struct Journal {
    dir: PathBuf,
    boot: String,
    monotonic: u64,
}

impl Journal {
    fn new(dir: PathBuf) -> Journal {
        std::fs::create_dir_all(&dir).unwrap();
        Journal {
            dir,
            boot: boot_id(),
            monotonic: 1,
        }
    }

    /// The journal export format of `entries` (binary-safe field encoding for
    /// the message, so it may hold newlines and bytes that are not UTF-8).
    fn export(&mut self, entries: &[Written]) -> Vec<u8> {
        let mut out = Vec::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        for e in entries {
            self.monotonic += 1;
            let boot = if e.old_boot {
                "0123456789abcdef0123456789abcdef".to_owned()
            } else {
                self.boot.clone()
            };
            out.extend_from_slice(
                format!(
                    "__REALTIME_TIMESTAMP={now}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={boot}\n",
                    self.monotonic
                )
                .as_bytes(),
            );
            if let Some(u) = &e.unit {
                out.extend_from_slice(format!("_SYSTEMD_UNIT={u}\n").as_bytes());
            }
            if let Some(i) = &e.identifier {
                out.extend_from_slice(format!("SYSLOG_IDENTIFIER={i}\n").as_bytes());
            }
            if let Some(p) = e.priority {
                out.extend_from_slice(format!("PRIORITY={p}\n").as_bytes());
            }
            out.extend_from_slice(b"MESSAGE\n");
            out.extend_from_slice(&(e.message.len() as u64).to_le_bytes());
            out.extend_from_slice(&e.message);
            out.extend_from_slice(b"\n\n");
        }
        out
    }

    /// Appends entries to the journal file (one `systemd-journal-remote` run).
    fn append(&mut self, entries: &[Written]) {
        let export = self.export(entries);
        let mut child = Command::new(journal_remote())
            .arg(format!(
                "--output={}",
                self.dir.join("remote.journal").display()
            ))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&export).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "systemd-journal-remote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// User records of the stream: (data, partition key).
async fn stream_records(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(Bytes, String)> {
    read_stream(client, stream)
        .await
        .into_iter()
        .flat_map(|r| r.users)
        .map(|u| (u.data, u.partition_key))
        .collect()
}

/// PIDs of running journalctl processes reading `dir`.
fn journalctl_pids(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("journalctl")) && args.contains(&needle) {
            out.push(pid);
        }
    }
    out
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
    let block = format!(
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
    );
    // Before the agent starts: an entry of an earlier boot (not sent: since =
    // "boot"), then this boot's.
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
    journal.append(&first);
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &block)).await;

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
    let wait_count = |n: usize| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + LONG;
            loop {
                let got = stream_records(&client, "logs").await;
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
    };
    let got = wait_count(3).await;
    let as_json = |records: Vec<(Bytes, String)>| {
        let mut v: Vec<(String, String)> = records
            .into_iter()
            .map(|(d, k)| {
                let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
                (v.to_string(), k)
            })
            .collect();
        v.sort();
        v
    };
    let want = as_json(
        expected_first
            .iter()
            .map(|(d, k)| (Bytes::from(d.to_string()), k.to_string()))
            .collect(),
    );
    assert_eq!(as_json(got), want);

    // journalctl dies: it is started again from the cursor and counted.
    let pids = journalctl_pids(&journal.dir);
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap()
        .success());
    journal.append(&[Written::new("after kill").unit("app.service")]);
    let metrics = agent.metrics().clone();
    wait_for("the restart", LONG, || metrics.journald_restarts() == 1).await;
    let got = wait_count(4).await;
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
    let got = wait_count(6).await;
    let messages: Vec<String> = got
        .iter()
        .map(|(d, _)| {
            let v: serde_json::Value = serde_json::from_slice(d).unwrap();
            v["MESSAGE"].to_string()
        })
        .collect();
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
    let conf = work.path("shardline.toml");
    std::fs::write(
        &conf,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n[delivery]\nlinger_ms = 20\n\
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

    // The writer: batches of 50 entries (some not selected) every ~20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut journal = Journal::new(journal_dir.clone());
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
    };

    let kills = 10;
    // Kills after which the spool held more than before (the kill came while the
    // source was reading, not before it started).
    let (mut spooled, mut grew) = (0, 0);
    for run in 0..kills {
        emu.faults.fail_requests.store(u32::MAX, Ordering::Relaxed);
        let mut agent = AgentProcess::spawn(&work, &format!("run-{run}"), &conf, &[], |_| {});
        agent.metrics_addr().await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1500))).await;
        agent.child.kill().unwrap();
        agent.child.wait().unwrap();
        // The journalctl it ran is left behind (SIGKILL runs no clean-up); it
        // exits at its next write into the closed pipe, or here.
        for pid in journalctl_pids(&journal_dir) {
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
    assert!(
        grew >= kills / 2,
        "only {grew} of {kills} runs spooled anything"
    );
    stop.store(true, Ordering::Relaxed);
    let (selected, written) = writer.join().unwrap();
    emu.faults.fail_requests.store(0, Ordering::Relaxed);
    let agent = AgentProcess::spawn(&work, "last", &conf, &[], |_| {});
    let expected: HashSet<Bytes> = selected.iter().map(|m| Bytes::from(m.clone())).collect();
    let deadline = Instant::now() + LONG;
    let stream = loop {
        let stream = stream_records(&client, "logs").await;
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
    let stream = {
        // Anything late would be a duplicate: read once more after the stop.
        let again = stream_records(&client, "logs").await;
        assert_eq!(again.len(), stream.len());
        again
    };
    let mut copies: BTreeMap<Bytes, usize> = BTreeMap::new();
    for (d, _) in stream {
        assert!(expected.contains(&d), "not a selected entry: {d:?}");
        *copies.entry(d).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(copies.len(), expected.len(), "entries missing");
    let (left, _) = spool_contents(&work.spool(), "logs");
    assert!(left.is_empty(), "{} records left in the spool", left.len());
    println!(
        "{written} entries written, {} selected, {kills} kills ({grew} while spooling): each delivered once",
        expected.len()
    );
}

/// The unit lets the agent read the journal (and still scores ≤ 2.5, which
/// tests/packaging.rs checks on the same file).
#[test]
fn the_unit_reads_the_journal() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/shardline.service"),
    )
    .unwrap();
    let groups: HashMap<&str, ()> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("SupplementaryGroups="))
        .flat_map(|g| g.split_whitespace())
        .map(|g| (g, ()))
        .collect();
    assert!(groups.contains_key("systemd-journal"), "{unit}");
    assert!(groups.contains_key("adm"), "{unit}");
}

/// The journald configuration of docs/sources.md (once in the README) is complete
/// and valid as printed.
#[test]
fn the_documented_journald_config_validates() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sources.md");
    let page = std::fs::read_to_string(page).unwrap();
    let section = page
        .split("\n## Reading the journal\n")
        .nth(1)
        .expect("docs/sources.md has a journald section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has a TOML block");
    let config = shardline::config::parse(block, Path::new("docs/sources.md"))
        .unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert_eq!(config.journald.len(), 1);
    let j = &config.journald[0];
    assert_eq!(j.select.units, ["nginx.service", "sshd.service"]);
    assert_eq!(j.select.max_priority, Some(4));
    assert_eq!(j.stream, "host-logs");
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
        crate::util::socket_toml(&sock, None),
        work.path("no-such-journalctl").display()
    );
    let agent = start_agent(config(&work, &emu.endpoint, "logs", &extra)).await;
    let metrics = agent.metrics().clone();
    wait_for("two restarts", LONG, || metrics.journald_restarts() >= 2).await;
    crate::util::send_lines(&sock, ["still flowing".to_owned()]).await;
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

/// Regression (issue 22, N7): the reader buffered up to 1,024 lines of up to
/// 8 MiB each; 300 entries of 7 MiB with a full spool took 2.1 GiB. Now what
/// it holds is bounded in bytes: a flood of large entries behind a full spool
/// leaves the agent's peak memory far below what the flood would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_entries_behind_a_full_spool_stays_within_a_memory_bound() {
    use std::os::unix::fs::PermissionsExt;
    const ENTRIES: usize = 60;
    let work = Workdir::new();
    let progress = work.path("progress");
    let fake = work.path("journalctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\
             i=0\n\
             while [ $i -lt {ENTRIES} ]; do\n\
               printf '{{\"__CURSOR\":\"c%d\",\"MESSAGE\":\"' $i\n\
               head -c 7000000 /dev/zero | tr '\\0' m\n\
               printf '\"}}\\n'\n\
               i=$((i+1))\n\
               echo $i > {}\n\
             done\n\
             exec sleep 600\n",
            progress.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Nothing answers at the endpoint: the 2 MiB spool fills and stays full.
    let config = full_spool_config(
        &work,
        &format!(
            "[[journald]]\njournalctl = \"{}\"\nsince = \"beginning\"\n",
            fake.display()
        ),
    );
    let mut agent = AgentProcess::spawn(&work, "agent", &config, &[], |_| {});
    agent.metrics_addr().await;
    // The reader takes entries until it is held back: the count stops moving.
    let read = || {
        std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let mut last = (read(), std::time::Instant::now());
    while last.0 < ENTRIES && last.1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = read();
        if now != last.0 {
            last = (now, std::time::Instant::now());
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let taken = last.0;
    agent.stop().await;
    assert!(
        taken < ENTRIES,
        "journalctl was never held back: all {taken} entries of 7 MB were read"
    );
    // Buffers of a few entries (reader, channel, batch, spool write): far from
    // the 420 MB the flood would take.
    assert!(
        peak_kib < 200 * 1024,
        "peak RSS {peak_kib} KiB after {taken} entries of 7 MB"
    );
}
