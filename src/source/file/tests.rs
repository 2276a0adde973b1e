//! The tailer driven through a memory sink: lines, multiline, oversized lines,
//! invalid UTF-8, partition keys, symbolic links, rotation, truncation and
//! checkpoints across restarts.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{glob_base, FileConfig};
use crate::metrics::{LineAction, Metrics};

use super::checkpoint::Position;
use super::discovery::{admit_path, Skip};
use super::framer::char_boundary;
use super::identity::{fnv1a, FileId};
use super::keys::{json_field, key_tail};
use super::memory::MemorySink;
use super::tailer::Tail;
use super::{KIND, READ_BYTES};

fn block(dir: &Path, extra: &str) -> FileConfig {
    let text = format!(
        "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\ninclude = [\"{}/*.log\"]\nrotate_wait_ms = 0\n{extra}",
        dir.display()
    );
    crate::config::parse(&text, Path::new("t.toml"))
        .unwrap()
        .files
        .remove(0)
}

fn append(path: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

fn start(dir: &Path, extra: &str, sink: &MemorySink) -> Tail<MemorySink> {
    Tail::start(vec![block(dir, extra)], sink.clone(), Metrics::new()).unwrap()
}

#[test]
fn partial_lines_wait_for_their_newline_and_crlf_and_empty_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    append(&path, b"one\r\n\ntwo\nthr");
    let sink = MemorySink::default();
    let mut tail = start(dir.path(), "", &sink);
    tail.poll().unwrap();
    assert_eq!(sink.lines(), ["one", "two"]);
    append(&path, b"ee\n");
    tail.poll().unwrap();
    assert_eq!(sink.lines(), ["one", "two", "three"]);
    // Random keys: 16 hex digits.
    assert!(sink.keys().iter().all(|k| k.len() == 16));
}

#[test]
fn restart_resumes_at_the_checkpoint_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    append(&path, b"1\n2\n3");
    let sink = MemorySink::default();
    let mut tail = start(dir.path(), "", &sink);
    tail.poll().unwrap();
    drop(tail);
    append(&path, b"\n4\n");
    // `read_from = "end"` only applies to files without a checkpoint.
    let mut tail = start(dir.path(), "read_from = \"end\"", &sink);
    tail.poll().unwrap();
    assert_eq!(sink.lines(), ["1", "2", "3", "4"]);
    // A new file found at start-up with read_from = end starts after its last
    // complete line; one created later starts at 0.
    drop(tail);
    append(&dir.path().join("b.log"), b"old\nhalf");
    let mut tail = start(dir.path(), "read_from = \"end\"", &sink);
    append(&dir.path().join("b.log"), b" line\n");
    append(&dir.path().join("c.log"), b"new\n");
    tail.poll().unwrap();
    let mut got = sink.lines();
    got.sort();
    assert_eq!(got, ["1", "2", "3", "4", "half line", "new"]);
}

#[test]
fn multiline_records_join_until_the_next_start_or_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    append(
        &path,
        b"stray\n2024 first\n  at a\n  at b\n2024 second\n\n  at c\n",
    );
    let sink = MemorySink::default();
    let mut tail = start(
        dir.path(),
        "multiline_start = '^\\d{4} '\nmultiline_timeout_ms = 200",
        &sink,
    );
    tail.poll().unwrap();
    assert_eq!(sink.lines(), ["stray", "2024 first\n  at a\n  at b"]);
    // The checkpoint stays before the record in progress.
    let cp = sink.lock().checkpoints.values().next().cloned();
    let pos = Position::decode(&cp.unwrap()).unwrap().offset;
    assert_eq!(pos, "stray\n2024 first\n  at a\n  at b\n".len() as u64);
    std::thread::sleep(Duration::from_millis(250));
    tail.poll().unwrap();
    assert_eq!(sink.lines()[2], "2024 second\n\n  at c");
}

#[test]
fn oversized_lines_are_split_streaming_or_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let big = "x".repeat(2500);
    append(&path, format!("a\n{big}\nb\n").as_bytes());
    let sink = MemorySink::default();
    let metrics = Metrics::new();
    let mut tail = Tail::start(
        vec![block(dir.path(), "max_record_bytes = 1000")],
        sink.clone(),
        metrics.clone(),
    )
    .unwrap();
    tail.poll().unwrap();
    let lens: Vec<usize> = sink.data().iter().map(|l| l.len()).collect();
    assert_eq!(lens, [1, 1000, 1000, 500, 1]);
    assert_eq!(metrics.oversized_count(KIND, LineAction::Split), 1);
    // A line longer than the buffer, arriving in pieces: memory stays bounded
    // and the pieces add up.
    let huge = vec![b'y'; 3 * READ_BYTES + 17];
    append(&path, &huge);
    tail.poll().unwrap();
    // Regression (issue 14, row 12): counted when it crossed the limit, not
    // when its newline came.
    assert_eq!(metrics.oversized_count(KIND, LineAction::Split), 2);
    append(&path, b"yy\nafter\n");
    tail.poll().unwrap();
    let got = sink.data();
    let ys: usize = got[5..got.len() - 1].iter().map(|l| l.len()).sum();
    assert_eq!(ys, huge.len() + 2);
    assert!(got[5..got.len() - 1].iter().all(|l| l.len() <= 1000));
    assert_eq!(got.last().unwrap(), "after");
    assert_eq!(metrics.oversized_count(KIND, LineAction::Split), 2);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    append(&path, &vec![b'z'; 3 * READ_BYTES]);
    let sink = MemorySink::default();
    let metrics = Metrics::new();
    let mut tail = Tail::start(
        vec![block(
            dir.path(),
            "max_record_bytes = 1000\noversized = \"truncate\"",
        )],
        sink.clone(),
        metrics.clone(),
    )
    .unwrap();
    tail.poll().unwrap();
    assert!(sink.data().is_empty(), "truncated line sent before its end");
    assert_eq!(metrics.oversized_count(KIND, LineAction::Truncated), 1);
    append(&path, b"zzz\nnext\n");
    tail.poll().unwrap();
    let got = sink.data();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].len(), 1000);
    assert_eq!(got[1], "next");
    assert_eq!(metrics.oversized_count(KIND, LineAction::Truncated), 1);
}

/// Regression (issue 14, row 6): the read buffer was searched for a newline from
/// its start after every read, so a line written in small pieces cost work
/// quadratic in its length.
#[test]
fn a_line_written_in_small_pieces_is_searched_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    append(&path, b"");
    let sink = MemorySink::default();
    let mut tail = start(dir.path(), "", &sink);
    tail.poll().unwrap();
    let line = vec![b'q'; 512 << 10];
    for piece in line.chunks(64) {
        append(&path, piece);
        tail.changed(&path).unwrap();
        while tail.service().unwrap() {}
    }
    append(&path, b"\nafter\n");
    tail.poll().unwrap();
    let lens: Vec<usize> = sink.data().iter().map(|l| l.len()).collect();
    assert_eq!(lens, [line.len(), 5]);
    let input = (line.len() + 7) as u64;
    assert!(
        tail.scanned_bytes() <= input,
        "searched {} bytes for {input}",
        tail.scanned_bytes()
    );
}

/// A watched directory with a real file and three symbolic links: to a 0600
/// file outside the patterns, to `/proc/self/environ`, and to a file of another
/// included directory.
struct Links {
    dir: tempfile::TempDir,
    _secret_dir: tempfile::TempDir,
    shared: tempfile::TempDir,
    shared_log: std::path::PathBuf,
}

impl Links {
    fn new() -> Links {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let secret_dir = tempfile::tempdir().unwrap();
        let secret = secret_dir.path().join("secret.txt");
        append(&secret, b"top secret\n");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let shared = tempfile::tempdir().unwrap();
        let shared_log = shared.path().join("shared.log");
        append(&shared_log, b"shared line\n");
        append(&dir.path().join("plain.log"), b"plain line\n");
        symlink(&secret, dir.path().join("secret.log")).unwrap();
        symlink("/proc/self/environ", dir.path().join("environ.log")).unwrap();
        symlink(&shared_log, dir.path().join("shared.log")).unwrap();
        Links {
            dir,
            _secret_dir: secret_dir,
            shared,
            shared_log,
        }
    }

    fn config(&self, follow: bool) -> FileConfig {
        let text = format!(
            "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\n\
             include = [\"{}/*.log\", \"{}/*.log\"]\nfollow_symlinks = {follow}\n",
            self.dir.path().display(),
            self.shared.path().display()
        );
        crate::config::parse(&text, Path::new("t.toml"))
            .unwrap()
            .files
            .remove(0)
    }
}

fn skipped(metrics: &Metrics) -> u64 {
    metrics.read("shardline_file_events_total", &[("event", "skipped")])
}

/// Regression (issue 14, rows 10 and 11): a symbolic link in a watched
/// directory was followed to a 0600 file outside the patterns and to
/// `/proc/self/environ` (the agent's own secrets), with two WARNs per rescan.
#[test]
fn symlinks_are_skipped_or_followed_only_within_the_patterns() {
    let links = Links::new();
    // Not following: only real files, each link skipped and logged once.
    let sink = MemorySink::default();
    let metrics = Metrics::new();
    let mut tail = Tail::start(vec![links.config(false)], sink.clone(), metrics.clone()).unwrap();
    for _ in 0..3 {
        tail.poll().unwrap();
    }
    let mut got = sink.lines();
    got.sort();
    assert_eq!(got, ["plain line", "shared line"]);
    assert_eq!(skipped(&metrics), 3);
    // A link that goes and comes back is logged again.
    let environ = links.dir.path().join("environ.log");
    std::fs::remove_file(&environ).unwrap();
    tail.poll().unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", &environ).unwrap();
    tail.poll().unwrap();
    tail.poll().unwrap();
    assert_eq!(skipped(&metrics), 4);
    drop(tail);
    symlinks_are_followed_only_within_the_patterns(&links);
}

/// Following: only to a regular file the patterns match (the shared log, the
/// same file as its own path: tailed once), never outside them, never /proc.
fn symlinks_are_followed_only_within_the_patterns(links: &Links) {
    let sink = MemorySink::default();
    let metrics = Metrics::new();
    let mut tail = Tail::start(vec![links.config(true)], sink.clone(), metrics.clone()).unwrap();
    tail.poll().unwrap();
    tail.poll().unwrap();
    let mut got = sink.lines();
    got.sort();
    assert_eq!(got, ["plain line", "shared line"]);
    assert_eq!(tail.open_files(), 2);
    assert_eq!(skipped(&metrics), 2);
    let cfg = links.config(true);
    let dir = links.dir.path();
    assert_eq!(
        admit_path(&dir.join("environ.log"), &cfg),
        Err(Skip::PseudoFs {
            target: std::fs::canonicalize("/proc/self/environ").unwrap()
        })
    );
    assert!(matches!(
        admit_path(&dir.join("secret.log"), &cfg),
        Err(Skip::TargetNotIncluded { .. })
    ));
    assert_eq!(
        admit_path(&dir.join("shared.log"), &cfg),
        Ok(std::fs::canonicalize(&links.shared_log).unwrap())
    );
}

#[test]
fn invalid_utf8_is_passed_replaced_or_rejected() {
    for (policy, expect, action) in [
        ("pass", b"a\xffb".to_vec(), LineAction::Passed),
        (
            "replace",
            "a\u{fffd}b".as_bytes().to_vec(),
            LineAction::Replaced,
        ),
        ("reject", Vec::new(), LineAction::Rejected),
    ] {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("a.log"), b"a\xffb\nok\n");
        let sink = MemorySink::default();
        let metrics = Metrics::new();
        let mut tail = Tail::start(
            vec![block(dir.path(), &format!("invalid_utf8 = \"{policy}\""))],
            sink.clone(),
            metrics.clone(),
        )
        .unwrap();
        tail.poll().unwrap();
        let got = sink.data();
        if expect.is_empty() {
            assert_eq!(got, vec![Bytes::from("ok")], "{policy}");
            assert_eq!(
                metrics.read(
                    "shardline_records_rejected_total",
                    &[("source", KIND.as_str()), ("reason", "invalid_utf8")]
                ),
                1
            );
        } else {
            assert_eq!(
                got,
                vec![Bytes::from(expect), Bytes::from("ok")],
                "{policy}"
            );
        }
        assert_eq!(metrics.invalid_utf8_count(KIND, action), 1, "{policy}");
    }
}

#[test]
fn partition_keys_follow_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    append(
        &path,
        b"{\"user\":\"u-1\",\"n\":{\"x\":[1,2]}}\n{\"n\":1,\"user\":42}\n{\"other\":1}\nnot json\n",
    );
    let sink = MemorySink::default();
    let metrics = Metrics::new();
    let mut tail = Tail::start(
        vec![block(dir.path(), "partition_key = { field = \"user\" }")],
        sink.clone(),
        metrics.clone(),
    )
    .unwrap();
    tail.poll().unwrap();
    let keys = sink.keys();
    assert_eq!(&keys[..2], ["u-1", "42"]);
    assert_eq!(keys[2].len(), 16);
    assert_eq!(metrics.partition_key_fallback_count(KIND), 2);

    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("a.log"), b"same\nsame\n");
    let sink = MemorySink::default();
    let mut tail = start(dir.path(), "partition_key = \"line_hash\"", &sink);
    tail.poll().unwrap();
    let keys = sink.keys();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0], format!("{:016x}", fnv1a(b"same")));

    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("a.log"), b"x\n");
    let sink = MemorySink::default();
    let mut tail = start(dir.path(), "partition_key = \"file_path\"", &sink);
    tail.poll().unwrap();
    let keys = sink.keys();
    assert_eq!(keys[0], dir.path().join("a.log").display().to_string());

    // Random: one key per batch, a new one for the next batch.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    append(&path, b"1\n2\n3\n");
    let sink = MemorySink::default();
    let mut tail = start(dir.path(), "", &sink);
    tail.poll().unwrap();
    append(&path, b"4\n5\n");
    tail.poll().unwrap();
    let keys = sink.keys();
    assert_eq!(keys.len(), 5);
    assert!(keys.iter().all(|k| k.len() == 16));
    assert!(keys[..3].iter().all(|k| *k == keys[0]));
    assert_eq!(keys[3], keys[4]);
    assert_ne!(keys[0], keys[3]);
}

#[test]
fn json_field_reads_top_level_scalars_only() {
    assert_eq!(json_field(br#"{"a":"x"}"#, "a"), Some("x".into()));
    assert_eq!(
        json_field(br#"{"b":{"a":"no"},"a":"yes"}"#, "a"),
        Some("yes".into())
    );
    assert_eq!(json_field(br#"{"a":1.5}"#, "a"), Some("1.5".into()));
    assert_eq!(json_field(br#"{"a":"\u00e9"}"#, "a"), Some("é".into()));
    assert_eq!(
        json_field(br#"{"a\u0062":"esc"}"#, "ab"),
        Some("esc".into())
    );
    assert_eq!(json_field(br#"{"a":null}"#, "a"), None);
    assert_eq!(json_field(br#"{"a":[1]}"#, "a"), None);
    assert_eq!(json_field(br#"[1,2]"#, "a"), None);
    assert_eq!(json_field(b"{\"a\":\"x\"", "a"), Some("x".into()));
    assert_eq!(json_field(b"\xff", "a"), None);
}

#[test]
fn glob_bases_and_depths() {
    assert_eq!(glob_base("/var/log/*.log"), ("/var/log".into(), Some(1)));
    assert_eq!(glob_base("/var/log/app.log"), ("/var/log".into(), Some(1)));
    assert_eq!(glob_base("/var/*/x/*.log"), ("/var".into(), Some(3)));
    assert_eq!(glob_base("/var/log/**/*.log"), ("/var/log".into(), None));
    assert_eq!(glob_base("/*.log"), ("/".into(), Some(1)));
}

#[test]
fn char_boundaries_keep_utf8_whole() {
    let s = "aé€".as_bytes(); // 1 + 2 + 3 bytes
    assert_eq!(char_boundary(s, 2), 1);
    assert_eq!(char_boundary(s, 3), 3);
    assert_eq!(char_boundary(s, 4), 3);
    assert_eq!(char_boundary(s, 10), 6);
    assert_eq!(char_boundary(&[0x80; 10], 5), 5);
    assert_eq!(key_tail(&"é".repeat(200)).len(), 256);
}

#[test]
fn checkpoint_value_round_trips() {
    let p = Position {
        offset: 1 << 40,
        fingerprint_len: 256,
        fingerprint: 0xdead_beef,
        path: "/var/log/ä.log".into(),
    };
    assert_eq!(Position::decode(&p.encode()), Some(p));
    assert_eq!(Position::decode(&[2, 0, 0]), None);
    let id = FileId { dev: 7, ino: 9 };
    assert_eq!(
        FileId::from_checkpoint_name(&id.checkpoint_name()),
        Some(id)
    );
}

#[test]
fn copytruncate_reads_the_rest_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let first: String = (0..50)
        .map(|i| format!("first-{i:04}-{}\n", "p".repeat(20)))
        .collect();
    append(&path, first.as_bytes());
    let sink = MemorySink::default();
    let metrics = Metrics::new();
    let mut tail = Tail::start(vec![block(dir.path(), "")], sink.clone(), metrics.clone()).unwrap();
    tail.poll().unwrap();
    // Written after the last read, then copied and truncated; the writer goes
    // on past the old position before the tailer looks again.
    append(&path, b"unread-1\nunread-2\n");
    std::fs::copy(&path, dir.path().join("a.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let second: String = (0..80)
        .map(|i| format!("second-{i:04}-{}\n", "q".repeat(20)))
        .collect();
    append(&path, second.as_bytes());
    tail.poll().unwrap();
    let got = sink.lines();
    assert_eq!(got.len(), 50 + 2 + 80, "{got:?}");
    assert_eq!(got[50], "unread-1");
    assert_eq!(got[51], "unread-2");
    assert!(got[52].starts_with("second-0000"));
    assert_eq!(
        metrics.read("shardline_file_events_total", &[("event", "truncated")]),
        1
    );
}

#[test]
fn rotated_and_deleted_files_are_read_to_the_end_then_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    append(&path, b"1\n");
    let sink = MemorySink::default();
    let mut tail = start(dir.path(), "", &sink);
    tail.poll().unwrap();
    // The writer appends to its handle after the rename, then a new file comes.
    let mut old = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
    old.write_all(b"2\n3").unwrap();
    append(&path, b"4\n");
    tail.poll().unwrap();
    // The old file's partial last line is sent when it is closed.
    assert_eq!(sink.lines(), ["1", "2", "3", "4"]);
    assert_eq!(tail.open_files(), 1);
    assert_eq!(sink.lock().checkpoints.len(), 1);
    // Deleted: read to the end from the open handle.
    let mut h = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    h.write_all(b"5\n").unwrap();
    tail.poll().unwrap();
    assert_eq!(sink.lines(), ["1", "2", "3", "4", "5"]);
    assert_eq!(tail.open_files(), 0);
    assert!(sink.lock().checkpoints.is_empty());
}

#[test]
fn checkpoints_of_gone_files_are_removed_and_files_rotated_while_stopped_are_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    append(&a, b"a1\n");
    append(&b, b"b1\n");
    let sink = MemorySink::default();
    let mut tail = start(dir.path(), "", &sink);
    tail.poll().unwrap();
    drop(tail);
    assert_eq!(sink.lock().checkpoints.len(), 2);
    // While stopped: a is rotated (and written once more), b deleted.
    append(&a, b"a2\n");
    std::fs::rename(&a, dir.path().join("a.log.1")).unwrap();
    append(&a, b"a3\n");
    std::fs::remove_file(&b).unwrap();
    let mut tail = start(dir.path(), "", &sink);
    tail.poll().unwrap();
    let mut got = sink.lines();
    got.sort();
    assert_eq!(got, ["a1", "a2", "a3", "b1"]);
    // Only the new a.log's checkpoint is left.
    assert_eq!(sink.lock().checkpoints.len(), 1);
    assert_eq!(tail.open_files(), 1);
}
