//! The framer's invariant: the consumed offset it gives with each record is
//! exact and monotone, and never passes a byte still held or not yet in a record.

use super::*;
use std::fs::File;
use std::io::Write;

use super::super::identity::Fingerprint;
use super::super::READ_BYTES;

fn block(extra: &str) -> FileConfig {
    let text = format!(
        "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\ninclude = [\"/none/*.log\"]\n{extra}"
    );
    crate::config::parse(&text, Path::new("t.toml"))
        .unwrap()
        .files
        .remove(0)
}

/// The records given, each with the consumed offset it came with.
#[derive(Default)]
struct Out {
    records: Vec<(Bytes, u64)>,
    oversized: u64,
}

impl Emit for Out {
    fn record(&mut self, data: Bytes, consumed: u64) -> Result<(), FileError> {
        self.records.push((data, consumed));
        Ok(())
    }
    fn oversized(&mut self, _: Oversized) {
        self.oversized += 1;
    }
    fn invalid_utf8(&mut self, _: bool) {}
    fn path(&self) -> &Path {
        Path::new("a.log")
    }
}

/// A file framed as the tailer does: each read framed at once.
struct Framed {
    dir: tempfile::TempDir,
    reader: Reader,
    framer: Framer,
    fingerprint: Fingerprint,
    out: Out,
}

impl Framed {
    fn new(extra: &str) -> Framed {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"").unwrap();
        Framed {
            reader: Reader::new(File::open(&path).unwrap()),
            framer: Framer::new(&block(extra)),
            fingerprint: Fingerprint::default(),
            out: Out::default(),
            dir,
        }
    }

    /// Appends `data` and reads the file to its end; checks that no record's
    /// offset goes back or passes the reader.
    fn append(&mut self, data: &[u8]) -> &mut Framed {
        let path = self.dir.path().join("a.log");
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(data).unwrap();
        while self.reader.fill(&mut self.fingerprint).unwrap() > 0 {
            let before = self.consumed();
            self.framer
                .lines(&mut self.reader, &mut self.out, false)
                .unwrap();
            assert!(self.consumed() >= before, "the consumed offset went back");
        }
        let offsets: Vec<u64> = self.out.records.iter().map(|r| r.1).collect();
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
        assert!(offsets.iter().all(|&o| o <= self.reader.start()));
        self
    }

    fn consumed(&self) -> u64 {
        self.framer.consumed(self.reader.start())
    }

    /// The records as (length, consumed offset).
    fn lens(&self) -> Vec<(usize, u64)> {
        self.out
            .records
            .iter()
            .map(|(d, c)| (d.len(), *c))
            .collect()
    }
}

#[test]
fn offsets_are_exact_at_line_ends_and_wait_for_a_partial_line() {
    let mut f = Framed::new("");
    f.append(b"one\r\n\ntwo\nthr");
    assert_eq!(
        f.out.records,
        [(Bytes::from("one"), 5), (Bytes::from("two"), 10)]
    );
    assert_eq!(f.consumed(), 10);
    f.append(b"ee\nfour");
    assert_eq!(f.out.records[2], (Bytes::from("three"), 16));
    assert_eq!(f.consumed(), 16);
    // The file is finished: its last line without a newline is a record.
    f.framer.finish(&mut f.reader, &mut f.out).unwrap();
    assert_eq!(f.out.records[3], (Bytes::from("four"), 20));
    assert_eq!(f.consumed(), 20);
}

#[test]
fn a_line_across_the_read_boundary_is_one_record_at_its_end() {
    let mut f = Framed::new("");
    let mut data = b"a\n".to_vec();
    data.extend(vec![b'x'; READ_BYTES]);
    data.extend(b"\nb\n");
    f.append(&data);
    let end = READ_BYTES as u64 + 3;
    assert_eq!(f.lens(), [(1, 2), (READ_BYTES, end), (1, end + 2)]);
    assert_eq!(f.consumed(), data.len() as u64);
}

/// A line cut into several records while a batch fills must not let the
/// batch's checkpoint pass its records still to come.
#[test]
fn a_split_line_gives_only_its_last_record_the_offset_past_it() {
    let mut f = Framed::new("max_record_bytes = 1000");
    f.append(format!("a\n{}\nb\n", "x".repeat(2500)).as_bytes());
    assert_eq!(
        f.lens(),
        [(1, 2), (1000, 2), (1000, 2), (500, 2503), (1, 2505)]
    );
    assert_eq!(f.out.oversized, 1);
}

#[test]
fn a_line_without_an_end_is_split_streaming_at_exact_offsets() {
    let mut f = Framed::new("max_record_bytes = 1000");
    let len = 2 * READ_BYTES + 17;
    f.append(&vec![b'y'; len]);
    // Each record of the line so far: the consumed offset is its end.
    let mut given = 0u64;
    for &(n, consumed) in &f.lens() {
        given += n as u64;
        assert_eq!(consumed, given);
        assert!(n <= 1000);
    }
    assert_eq!(f.consumed(), given);
    f.append(b"yy\nafter\n");
    let lens = f.lens();
    let total: usize = lens[..lens.len() - 1].iter().map(|l| l.0).sum();
    assert_eq!(total, len + 2);
    let line_end = len as u64 + 3;
    assert_eq!(lens[lens.len() - 2].1, line_end);
    assert_eq!(lens[lens.len() - 1], (5, line_end + 6));
    // The line's tail: its records before the last stay at its start.
    assert!(lens
        .iter()
        .all(|&(_, c)| c <= line_end || c == line_end + 6));
    assert_eq!(f.out.oversized, 1);
}

#[test]
fn a_truncated_line_keeps_the_offset_at_its_start_until_its_end() {
    let mut f = Framed::new("max_record_bytes = 1000\noversized = \"truncate\"");
    f.append(b"a\n").append(&vec![b'z'; 3 * READ_BYTES]);
    assert_eq!(f.lens(), [(1, 2)]);
    assert_eq!(f.consumed(), 2, "the line being truncated is not consumed");
    assert_eq!(f.out.oversized, 1);
    f.append(b"zzz\nnext\n");
    let end = 2 + 3 * READ_BYTES as u64 + 4;
    assert_eq!(f.lens(), [(1, 2), (1000, end), (4, end + 5)]);
    assert_eq!(f.consumed(), end + 5);
    assert_eq!(f.out.oversized, 1);
}

#[test]
fn a_multiline_record_keeps_the_offset_at_its_first_line() {
    let mut f = Framed::new("multiline_start = '^\\d{4} '");
    f.append(b"stray\n2024 first\n  at a\n2024 second\n  at c\n");
    // "stray" is sent when "2024 first" starts the next record: the offset
    // stays before that line, which is not in a record yet.
    assert_eq!(
        f.out.records,
        [
            (Bytes::from("stray"), 6),
            (Bytes::from("2024 first\n  at a"), 24)
        ]
    );
    assert_eq!(f.consumed(), 24);
    assert!(f.framer.multiline_deadline().is_some());
    let later = Instant::now() + Duration::from_secs(3600);
    let sent = f
        .framer
        .emit_multiline_due(&f.reader, &mut f.out, later)
        .unwrap();
    assert!(sent);
    assert_eq!(f.out.records[2], (Bytes::from("2024 second\n  at c"), 43));
    assert_eq!(f.consumed(), 43);
}

#[test]
fn a_reset_drops_what_is_held_and_resumes_at_its_offset() {
    // Resume at a checkpoint: the record in progress is read again from its
    // first line.
    let mut f = Framed::new("multiline_start = '^\\d{4} '");
    f.append(b"2024 first\n  at a\n2024 second\n  at c\n");
    let checkpoint = f.consumed();
    assert_eq!(checkpoint, 18);
    f.reader.reset_to(checkpoint).unwrap();
    f.framer.reset();
    f.out.records.clear();
    f.append(b"");
    f.framer.finish(&mut f.reader, &mut f.out).unwrap();
    assert_eq!(f.out.records, [(Bytes::from("2024 second\n  at c"), 37)]);
    // copytruncate: a line being truncated is dropped, the file is read again
    // from its start.
    let mut f = Framed::new("max_record_bytes = 1000\noversized = \"truncate\"");
    f.append(&vec![b'z'; 5000]);
    assert_eq!(f.consumed(), 0);
    std::fs::write(f.dir.path().join("a.log"), b"").unwrap();
    f.reader.reset_to(0).unwrap();
    f.framer.reset();
    f.append(b"new\n");
    assert_eq!(f.out.records, [(Bytes::from("new"), 4)]);
    assert_eq!(f.consumed(), 4);
}

/// A framer joining the lines of records that span lines by `join`.
fn joining(extra: &str, join: Join) -> Framed {
    let mut f = Framed::new(extra);
    f.framer.set_join(Some(join));
    f
}

const T: &str = "2016-10-06T00:17:09.669794202Z";

#[test]
fn cri_partial_lines_are_joined_and_sent_at_the_full_line() {
    let mut f = joining("", Join::Cri);
    let lines = format!("{T} stdout P one \n{T} stdout P two \n{T} stdout F three\n");
    f.append(lines.as_bytes());
    // Sent at its full line, without waiting for the next line or the timeout.
    let joined = format!("{T} stdout P one \n{T} stdout P two \n{T} stdout F three");
    let end = lines.len() as u64;
    assert_eq!(f.out.records, [(Bytes::from(joined.clone()), end)]);
    assert_eq!(f.consumed(), end);
    assert!(f.framer.multiline_deadline().is_none());
    let mut fields = crate::source::parse::value::Fields::default();
    crate::source::parse::presets::container::cri(&joined, &mut fields).unwrap();
    assert_eq!(
        fields.get("message"),
        Some(&crate::source::parse::value::Value::Str(
            "one two three".into()
        ))
    );
    f.append(format!("{T} stderr F alone\n").as_bytes());
    assert_eq!(f.out.records[1].0, format!("{T} stderr F alone"));
}

#[test]
fn docker_partial_lines_are_joined() {
    let mut f = joining("", Join::Docker);
    let lines = concat!(
        r#"{"log":"one ","stream":"stdout","time":"2019-04-10T08:12:13Z"}"#,
        "\n",
        r#"{"log":"two\n","stream":"stdout","time":"2019-04-10T08:12:14Z"}"#,
        "\n",
        r#"{"log":"next\n","stream":"stdout","time":"2019-04-10T08:12:15Z"}"#,
        "\n",
    );
    f.append(lines.as_bytes());
    let mut records = lines.trim_end().splitn(3, '\n');
    let first = format!("{}\n{}", records.next().unwrap(), records.next().unwrap());
    let next = records.next().unwrap();
    let end = lines.len() as u64;
    assert_eq!(
        f.out.records,
        [
            (Bytes::from(first.clone()), first.len() as u64 + 1),
            (Bytes::from(next.to_string()), end)
        ]
    );
}

#[test]
fn csv_quoted_newlines_are_joined() {
    let mut f = joining("", Join::CsvQuote(b'"', b','));
    f.append(b"a,\"b\r\n\nc\"\"\",d\ne,f\n\"open");
    assert_eq!(
        f.out.records,
        [
            (Bytes::from("a,\"b\n\nc\"\"\",d"), 14),
            (Bytes::from("e,f"), 18)
        ]
    );
    // The last line is not complete yet: nothing of it is consumed.
    assert_eq!(f.consumed(), 18);
    f.append(b"\n,x\"\n");
    assert_eq!(f.out.records[2], (Bytes::from("\"open\n,x\""), 28));
}

#[test]
fn the_offset_stays_at_an_open_joined_record_until_it_is_complete() {
    let mut f = joining("", Join::Cri);
    let first = format!("{T} stdout F a\n");
    let start = first.len() as u64;
    f.append(first.as_bytes());
    f.append(format!("{T} stdout P b\n").as_bytes());
    assert_eq!(f.out.records.len(), 1);
    assert_eq!(f.consumed(), start);
    f.append(format!("{T} stdout P c\n").as_bytes());
    assert_eq!(
        f.consumed(),
        start,
        "an open record's lines are not consumed"
    );
    // Read again from the checkpoint: the record is read again whole.
    f.reader.reset_to(f.consumed()).unwrap();
    f.framer.reset();
    f.append(format!("{T} stdout F d\n").as_bytes());
    let joined = format!("{T} stdout P b\n{T} stdout P c\n{T} stdout F d");
    let end = start + joined.len() as u64 + 1;
    assert_eq!(f.out.records[1], (Bytes::from(joined), end));
    assert_eq!(f.consumed(), end);
}

#[test]
fn the_timeout_sends_a_joined_record_that_never_completes() {
    let mut f = joining("multiline_timeout_ms = 1000", Join::Cri);
    let line = format!("{T} stdout P never ends\n");
    f.append(line.as_bytes());
    assert!(f.out.records.is_empty());
    let now = Instant::now();
    assert!(!f
        .framer
        .emit_multiline_due(&f.reader, &mut f.out, now)
        .unwrap());
    let later = now + Duration::from_secs(2);
    assert!(f
        .framer
        .emit_multiline_due(&f.reader, &mut f.out, later)
        .unwrap());
    let record = line.trim_end().to_string();
    assert_eq!(
        f.out.records,
        [(Bytes::from(record.clone()), line.len() as u64)]
    );
    let mut fields = crate::source::parse::value::Fields::default();
    let e = crate::source::parse::presets::container::cri(&record, &mut fields).unwrap_err();
    assert_eq!(e.reason, "incomplete");
    // The next line starts a record of its own.
    f.append(format!("{T} stdout F x\n").as_bytes());
    assert_eq!(f.out.records.len(), 2);
}

/// A joined record over the limit keeps its head, and its full line (dropped
/// from the record) still ends it.
#[test]
fn an_oversized_joined_record_is_truncated_and_still_ends() {
    let mut f = joining(
        "max_record_bytes = 1000\noversized = \"truncate\"",
        Join::Cri,
    );
    let part = format!("{T} stdout P {}\n", "x".repeat(600));
    let lines = format!("{part}{part}{T} stdout F end\n{T} stdout F next\n");
    f.append(lines.as_bytes());
    assert_eq!(f.out.records.len(), 2);
    assert_eq!(f.out.records[0].0.len(), 1000);
    assert_eq!(f.out.records[1].0, format!("{T} stdout F next"));
    assert_eq!(f.out.oversized, 1);
    assert_eq!(f.consumed(), lines.len() as u64);
}
