//! Model test: the tailer alone ([`Tail`] over a [`MemorySink`]), driven by random
//! sequences of file operations, against a model of what each file path holds.
//! The model owns the temp dir, the tailer under test and its sink; only
//! [`run_model`] (from this file's property test and regression tests) drives it.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use proptest::prelude::*;
use shardline::config::FileConfig;
use shardline::metrics::Metrics;
use shardline::testkit::{MemorySink, Tail};

use super::open_append;

#[derive(Debug, Clone)]
enum Op {
    /// Append complete lines (and maybe start a partial one) to file `f`.
    Append {
        f: usize,
        lines: usize,
        pad: usize,
        partial: bool,
    },
    /// The tailer looks at everything.
    Poll,
    /// Rename the file away (it is no longer included); the next append creates a
    /// new one.
    Rotate { f: usize },
    /// Delete the file.
    Delete { f: usize },
    /// copytruncate: copy it, then truncate it.
    CopyTruncate { f: usize },
    /// Truncate it with no copy.
    Truncate { f: usize },
    /// The agent dies after `after` more spool writes (during the next poll) and
    /// starts again.
    Crash { after: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 1..30usize, 0..300usize, any::<bool>())
            .prop_map(|(f, lines, pad, partial)| Op::Append { f, lines, pad, partial }),
        4 => Just(Op::Poll),
        1 => (0..3usize).prop_map(|f| Op::Rotate { f }),
        1 => (0..3usize).prop_map(|f| Op::Delete { f }),
        1 => (0..3usize).prop_map(|f| Op::CopyTruncate { f }),
        1 => (0..3usize).prop_map(|f| Op::Truncate { f }),
        1 => (0..4usize).prop_map(|after| Op::Crash { after }),
    ]
}

/// What the model knows of one file path.
#[derive(Default)]
struct Slot {
    /// The current file exists.
    exists: bool,
    /// Complete lines written to the current file since the tailer last read it.
    unread: Vec<String>,
    /// A line started without its newline.
    partial: Option<String>,
    /// The tailer has the current file open.
    open: bool,
    /// The current file had no complete line when the tailer last read it (its
    /// fingerprint is empty: a copy cannot be recognised).
    read_empty: bool,
}

/// The tailer under test and the model beside it. Only [`run_model`] makes one;
/// each `Op` is one method, and [`Model::check`] holds the assertions.
struct Model {
    /// The tailer under test; `None` only for the moment of a crash (the old one
    /// is gone before the new one starts).
    tail: Option<Tail<MemorySink>>,
    /// Where the tailer writes records and checkpoints; it outlives the tailer.
    sink: MemorySink,
    /// The one `[[file]]` block the tailer is started with.
    files: Vec<FileConfig>,
    /// What the model knows of `f0.log`, `f1.log` and `f2.log`.
    slots: Vec<Slot>,
    /// Every complete line written, in order.
    written: Vec<String>,
    /// Lines a truncation or a rotation destroyed before the tailer read them.
    may_lose: HashSet<String>,
    /// Unread lines of deleted files the tailer holds open: lost if it dies first.
    held_deleted: Vec<String>,
    /// Makes every line (and every rotated file's name) unique.
    serial: usize,
    /// The directory the files live in (last: removed after the tailer is gone).
    dir: tempfile::TempDir,
}

impl Model {
    fn new() -> Model {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n[[file]]\ninclude = [\"{}/*.log\"]\nrotate_wait_ms = 0\n",
            dir.path().display()
        );
        let files = shardline::config::parse(&text, std::path::Path::new("t.toml"))
            .unwrap()
            .files;
        let sink = MemorySink::default();
        Model {
            tail: Some(Tail::start(files.clone(), sink.clone(), Metrics::new()).unwrap()),
            sink,
            files,
            slots: (0..3).map(|_| Slot::default()).collect(),
            written: Vec::new(),
            may_lose: HashSet::new(),
            held_deleted: Vec::new(),
            serial: 0,
            dir,
        }
    }

    fn tail(&mut self) -> &mut Tail<MemorySink> {
        self.tail.as_mut().expect("a tailer runs outside a crash")
    }

    fn path(&self, f: usize) -> PathBuf {
        self.dir.path().join(format!("f{f}.log"))
    }

    /// The tailer has read everything there is: what was unread is now read.
    fn all_read(&mut self) {
        for s in self.slots.iter_mut() {
            if s.exists {
                s.open = true;
                s.read_empty = s.read_empty && s.unread.is_empty();
                s.unread.clear();
            }
        }
    }

    /// Writers finish their line before they rotate.
    fn complete(&mut self, f: usize) {
        let path = self.path(f);
        let s = &mut self.slots[f];
        if let Some(line) = s.partial.take() {
            let mut h = open_append(&path);
            h.write_all(b"\n").unwrap();
            self.written.push(line.clone());
            s.unread.push(line);
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append {
                f,
                lines,
                pad,
                partial,
            } => self.append(f, lines, pad, partial),
            Op::Poll => {
                self.tail().poll().unwrap();
                self.all_read();
                self.held_deleted.clear();
            }
            Op::Rotate { f } => self.rotate(f),
            Op::Delete { f } => self.delete(f),
            Op::CopyTruncate { f } => self.truncate(f, true),
            Op::Truncate { f } => self.truncate(f, false),
            Op::Crash { after } => self.crash(after),
        }
    }

    fn append(&mut self, f: usize, lines: usize, pad: usize, partial: bool) {
        let mut h = open_append(&self.path(f));
        let s = &mut self.slots[f];
        if !s.exists {
            s.exists = true;
            s.open = false;
            s.read_empty = true;
        }
        let mut text = String::new();
        if let Some(line) = s.partial.take() {
            // The rest of the partial line.
            text.push_str("-end\n");
            let line = format!("{line}-end");
            self.written.push(line.clone());
            s.unread.push(line);
        }
        for _ in 0..lines {
            self.serial += 1;
            let line = format!("f{f}-{:06}-{}", self.serial, "p".repeat(pad));
            text.push_str(&line);
            text.push('\n');
            self.written.push(line.clone());
            s.unread.push(line);
        }
        if partial {
            self.serial += 1;
            let line = format!("f{f}-{:06}-partial", self.serial);
            text.push_str(&line);
            s.partial = Some(line);
        }
        h.write_all(text.as_bytes()).unwrap();
    }

    fn rotate(&mut self, f: usize) {
        if !self.slots[f].exists {
            return;
        }
        self.complete(f);
        self.serial += 1;
        let rotated = self.dir.path().join(format!("f{f}.log.{}", self.serial));
        std::fs::rename(self.path(f), rotated).unwrap();
        let s = &mut self.slots[f];
        // The tailer finds the old file by its identity, open or not (at a
        // restart, by the checkpoint); a file it never opened and that has
        // no checkpoint is not included any more: lost.
        if !s.open {
            self.may_lose.extend(s.unread.drain(..));
        }
        *s = Slot::default();
    }

    fn delete(&mut self, f: usize) {
        if !self.slots[f].exists {
            return;
        }
        self.complete(f);
        std::fs::remove_file(self.path(f)).unwrap();
        let s = &mut self.slots[f];
        if s.open {
            self.held_deleted.append(&mut s.unread);
        } else {
            self.may_lose.extend(s.unread.drain(..));
        }
        *s = Slot::default();
    }

    /// copytruncate (`copy`) or a bare truncation.
    fn truncate(&mut self, f: usize, copy: bool) {
        if !self.slots[f].exists {
            return;
        }
        self.complete(f);
        if copy {
            self.serial += 1;
            let copied = self.dir.path().join(format!("f{f}.log.c{}", self.serial));
            std::fs::copy(self.path(f), copied).unwrap();
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.path(f))
            .unwrap()
            .set_len(0)
            .unwrap();
        let s = &mut self.slots[f];
        // Without a copy (or one the tailer cannot recognise) what it had
        // not read is gone.
        if !copy || !s.open || s.read_empty {
            self.may_lose.extend(s.unread.drain(..));
        } else {
            s.unread.clear();
        }
        s.read_empty = true;
    }

    fn crash(&mut self, after: usize) {
        self.sink.lock().writes_left = Some(after);
        let r = self.tail().poll();
        self.sink.lock().writes_left = None;
        if r.is_ok() {
            self.all_read();
            self.held_deleted.clear();
        } else {
            self.may_lose.extend(self.held_deleted.drain(..));
        }
        // The old tailer goes before the new one starts.
        self.tail = None;
        let restarted = Tail::start(self.files.clone(), self.sink.clone(), Metrics::new());
        self.tail = Some(restarted.unwrap());
        // Start-up opens every file; what it had not read stays unread.
        for s in self.slots.iter_mut() {
            if s.exists {
                s.open = true;
            }
        }
    }

    /// Finishes every partial line, polls once more and checks what was read.
    fn check(mut self) {
        for f in 0..self.slots.len() {
            self.complete(f);
        }
        self.tail().poll().unwrap();
        let m = self.sink.lock();
        let mut seen = HashSet::new();
        for r in &m.records {
            let line = String::from_utf8(r.data.to_vec()).unwrap();
            assert!(seen.insert(line.clone()), "{line} read twice");
            assert!(self.written.contains(&line), "{line} was never written");
        }
        for line in &self.written {
            assert!(
                seen.contains(line) || self.may_lose.contains(line),
                "{line} lost"
            );
        }
        // Checkpoints only for files that are still there.
        let live = self.slots.iter().filter(|s| s.exists).count();
        assert_eq!(
            m.checkpoints.len(),
            live,
            "checkpoints of gone files are left"
        );
    }
}

fn run_model(ops: Vec<Op>) {
    let mut model = Model::new();
    for op in ops {
        model.apply(op);
    }
    model.check();
}
proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random appends, polls, rotations, truncations, deletions and crashes: every
    /// line is read exactly once, except the lines a truncation without a usable
    /// copy destroyed before they were read.
    #[test]
    fn tailer_model_reads_every_line_exactly_once(ops in prop::collection::vec(op(), 1..40)) {
        run_model(ops);
    }
}

/// Regression: a file truncated and then renamed while the agent was stopped was
/// taken for a gone file; what it held past the checkpoint (in the copy) and its new
/// content were lost.
#[test]
fn model_regression_truncated_then_rotated_while_stopped() {
    run_model(vec![
        Op::Append {
            f: 1,
            lines: 1,
            pad: 0,
            partial: true,
        },
        Op::Poll,
        Op::Append {
            f: 0,
            lines: 1,
            pad: 0,
            partial: false,
        },
        Op::CopyTruncate { f: 1 },
        Op::Rotate { f: 1 },
        Op::Append {
            f: 1,
            lines: 1,
            pad: 0,
            partial: false,
        },
        Op::Crash { after: 0 },
    ]);
    run_model(vec![
        Op::Append {
            f: 0,
            lines: 1,
            pad: 0,
            partial: false,
        },
        Op::Poll,
        Op::Truncate { f: 0 },
        Op::Append {
            f: 0,
            lines: 1,
            pad: 0,
            partial: false,
        },
        Op::Rotate { f: 0 },
        Op::Crash { after: 0 },
    ]);
}

/// Regression: a copy read under the original's identity made a new file on the
/// original's (reused) inode look already tailed, so it was never read.
#[test]
fn model_regression_copy_of_a_deleted_file_and_a_reused_inode() {
    run_model(vec![
        Op::Append {
            f: 2,
            lines: 1,
            pad: 0,
            partial: false,
        },
        Op::Poll,
        Op::CopyTruncate { f: 2 },
        Op::Append {
            f: 1,
            lines: 1,
            pad: 0,
            partial: false,
        },
        Op::Delete { f: 2 },
        Op::Crash { after: 0 },
        Op::Append {
            f: 0,
            lines: 1,
            pad: 36,
            partial: false,
        },
    ]);
}

/// Regression: a rotated file's checkpoint kept its new (not included) name, so
/// after a second crash start-up dropped it as no longer tailed.
#[test]
fn model_regression_rotated_file_checkpoint_keeps_its_included_path() {
    run_model(vec![
        Op::Append {
            f: 0,
            lines: 1,
            pad: 0,
            partial: false,
        },
        Op::Crash { after: 2 },
        Op::CopyTruncate { f: 0 },
        Op::Append {
            f: 0,
            lines: 1,
            pad: 0,
            partial: false,
        },
        Op::Rotate { f: 0 },
        Op::Crash { after: 0 },
        Op::Crash { after: 0 },
    ]);
}

/// Regression: a rotated file whose copy was read in the same pass was not closed
/// (the pass's clock was older than the read), leaving its checkpoint behind.
#[test]
fn model_regression_rotated_after_copytruncate_is_closed() {
    run_model(vec![
        Op::Append {
            f: 1,
            lines: 1,
            pad: 0,
            partial: true,
        },
        Op::Poll,
        Op::CopyTruncate { f: 1 },
        Op::Rotate { f: 1 },
    ]);
}
