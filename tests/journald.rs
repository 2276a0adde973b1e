//! The journald source against real journal files. No journald runs in CI (no
//! systemd as PID 1), so the tests write on-disk journal files with
//! `systemd-journal-remote` (Debian package `systemd-journal-remote`, installed by
//! `.ci/test`) from journal export streams, appending while the agent follows them
//! through `journalctl --directory --follow`: the same reader, files and cursors
//! as the system journal.
//!
//! - [`follow`]: selection, formatting, restarts, reloads, `since` (in process).
//! - [`sigkill`]: the binary killed at random moments, then audited.
//! - [`memory`]: the reader's memory behind a full spool.
//!
//! This module holds what they share: [`Journal`], a journal directory a test
//! owns and appends [`Written`] entries to, and readers of the stream and of the
//! running journalctl processes; and the checks of the shipped unit and README.

mod follow;
mod memory;
mod sigkill;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;

use crate::util::read_stream;

/// How long a test waits for the agent before it fails.
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
pub struct Written {
    message: Vec<u8>,
    unit: Option<String>,
    identifier: Option<String>,
    priority: Option<u8>,
    /// Another boot's entry (not this boot's).
    old_boot: bool,
}

impl Written {
    pub fn new(message: impl Into<Vec<u8>>) -> Written {
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

/// A journal directory a test owns and appends entries to; only
/// [`Journal::append`] writes into it.
pub struct Journal {
    /// Where `systemd-journal-remote` writes `remote.journal`.
    dir: PathBuf,
    /// This boot's ID, which entries carry unless they are another boot's.
    boot: String,
    /// The last monotonic timestamp given to an entry.
    monotonic: u64,
}

impl Journal {
    pub fn new(dir: PathBuf) -> Journal {
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
    pub fn append(&mut self, entries: &[Written]) {
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
