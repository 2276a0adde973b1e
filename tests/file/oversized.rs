//! Lines the tailer cannot send as they are (invalid UTF-8, longer than a
//! record), through the real binary, which says in its log what it did.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::process::{base_toml, sigterm_and_wait, spawn_binary};
use super::LONG;
use crate::util::{check_shards_and_collect, create_stream, file_toml, Emulator, Workdir};

/// The size of the oversized line.
const BIG: usize = 5 << 20;

/// In `a/x.log` and `b/x.log`: a line, a line of invalid UTF-8, a 5 MiB line of
/// `A`s (`B`s), a line. Returns the config for both directories: `a` splits and
/// replaces, `b` truncates and passes.
fn write_inputs(emu: &Emulator, work: &Workdir) -> std::path::PathBuf {
    let (a, b) = (work.path("a"), work.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    for (dir, fill) in [(&a, b'A'), (&b, b'B')] {
        let mut data = format!("{}-before\n", fill as char).into_bytes();
        data.extend_from_slice(b"bad \xff\xfe line\n");
        data.extend(std::iter::repeat_n(fill, BIG));
        data.extend_from_slice(format!("\n{}-after\n", fill as char).as_bytes());
        std::fs::write(dir.join("x.log"), data).unwrap();
    }
    let conf = work.path("shardline.toml");
    std::fs::write(
        &conf,
        base_toml(
            emu,
            work,
            &format!(
                "{}{}",
                file_toml(
                    &[&a.join("*.log")],
                    "oversized = \"split\"\ninvalid_utf8 = \"replace\""
                ),
                file_toml(
                    &[&b.join("*.log")],
                    "oversized = \"truncate\"\ninvalid_utf8 = \"pass\""
                ),
            ),
        ),
    )
    .unwrap();
    conf
}

/// The stream's records once it holds `want` of them.
async fn records_when(client: &aws_sdk_kinesis::Client, want: usize) -> Vec<Bytes> {
    let deadline = Instant::now() + LONG;
    loop {
        let (_, data) = check_shards_and_collect(client, "logs").await;
        if data.len() >= want {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} records",
            data.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The records: the short lines (one replaced, one raw), six pieces of the split
/// line that make it whole, and one truncated head of the other.
fn check_records(data: &[Bytes], max: usize) {
    let mut small: Vec<Bytes> = data.iter().filter(|d| d.len() < 100).cloned().collect();
    small.sort();
    let mut expect_small = vec![
        Bytes::from("A-after"),
        Bytes::from("A-before"),
        Bytes::from("B-after"),
        Bytes::from("B-before"),
        Bytes::from("bad \u{fffd}\u{fffd} line"),
        Bytes::from(&b"bad \xff\xfe line"[..]),
    ];
    expect_small.sort();
    let pieces_a: Vec<&Bytes> = data.iter().filter(|d| d.starts_with(b"AAAA")).collect();
    let pieces_b: Vec<&Bytes> = data.iter().filter(|d| d.starts_with(b"BBBB")).collect();
    // The remainder of the split line is 1280 bytes: not "small".
    assert_eq!(small, expect_small);
    assert_eq!(pieces_a.len(), 6);
    assert_eq!(pieces_a.iter().map(|p| p.len()).sum::<usize>(), BIG);
    assert!(pieces_a
        .iter()
        .all(|p| p.len() <= max && p.iter().all(|&c| c == b'A')));
    assert_eq!(pieces_b.len(), 1);
    assert_eq!(pieces_b[0].len(), max);
}

/// The log says what was done to each line, and truncation is an ERROR.
fn check_log(log: &str, max: usize) {
    for needle in [
        "Split an oversized line into several records",
        // Logged when it crossed the limit (issue 14, row 12), not at its end.
        "bytes so far and no end yet",
        &format!("exceeds the {max}-byte record limit"),
        "Truncated an oversized line",
        "Line is not valid UTF-8; invalid bytes replaced with U+FFFD",
        "Line is not valid UTF-8; sent as it is",
        "byte 0xff at position 4",
    ] {
        assert!(log.contains(needle), "{needle:?} not logged:\n{log}");
    }
    assert!(
        log.contains("ERROR"),
        "truncation loses bytes: an ERROR\n{log}"
    );
}

/// A line of invalid UTF-8 and a 5 MiB line, under both settings of each option,
/// through the real binary, which says what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_a_5_mib_line_are_handled_per_the_options_and_logged() {
    let emu = Emulator::start().await;
    let client = emu.client().await;
    create_stream(&client, "logs", 1).await;
    let work = Workdir::new();
    let conf = write_inputs(&emu, &work);
    let log = work.path("agent.log");
    let child = spawn_binary(&conf, &log, "info");
    let max = shardline::config::MAX_FILE_RECORD_BYTES;
    // a: before, replaced line, 6 pieces, after; b: before, raw line, head, after.
    let want = 9 + 4;
    let data = records_when(&client, want).await;
    let status = sigterm_and_wait(child).await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{log}");
    assert_eq!(data.len(), want);
    check_records(&data, max);
    check_log(&log, max);
}
