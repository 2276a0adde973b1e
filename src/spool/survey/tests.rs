//! The survey on the simulated storage (where the spool's damage tests make
//! their damage: `spool/tests/faults.rs` asks [`damage_found`] after each) and
//! on a real spool held open and written to meanwhile.

use std::io;
use std::path::Path;

use super::{check_with, export_with, inspect_with, FindingKind, Look, ReadOnly};
use crate::record::UserRecord;
use crate::spool::open_at;
use crate::spool::storage::sim::Sim;
use crate::spool::storage::Storage as _;

/// The simulated storage seen as a survey sees a filesystem.
struct SimLook<'a>(&'a Sim);

impl Look for SimLook<'_> {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list(dir)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        self.0.open(path, false)?.len()
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.open(path, false)?.read_at(offset, buf)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0
            .read(path)
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
}

/// What `shardline spool check` finds damaged in the simulated spool at `dir`
/// (torn tails left out).
pub(in crate::spool) fn damage_found(sim: &Sim, dir: &str) -> Vec<FindingKind> {
    let report = check_with(&SimLook(sim), Path::new(dir)).unwrap();
    assert_eq!(report.damaged() > 0, !report.render().contains("no damage"));
    report
        .findings
        .into_iter()
        .filter(|f| f.kind.is_damage())
        .map(|f| f.kind)
        .collect()
}

fn rec(i: usize) -> UserRecord {
    UserRecord::new(format!("k{i}"), format!("record {i}"))
}

/// Inspect and export count what is not delivered: whole entries retired and
/// single records of a partly delivered one are left out; the checkpoint
/// written with an entry is listed.
#[test]
fn inspect_and_export_leave_out_what_was_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_at(dir.path(), 1 << 30).unwrap();
    let s = spool.stream("logs").unwrap();
    let first = s.append(&[rec(0), rec(1)]).unwrap();
    let second = s.append(&[rec(2), rec(3), rec(4)]).unwrap();
    let checkpoint = crate::spool::Checkpoint {
        name: b"file/abc".to_vec(),
        value: b"7".to_vec(),
    };
    s.append_with_checkpoint(&[rec(5)], Some(&checkpoint), false)
        .unwrap();
    s.retire(&[first], &[(second.0, &[0b010][..])], 3).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(spool.durable()).unwrap();

    // While the spool is open (the agent's), and again once it is closed.
    for open in [true, false] {
        let look = ReadOnly;
        let summary = inspect_with(&look, dir.path()).unwrap();
        assert_eq!(summary.len(), 1);
        assert_eq!(
            (summary[0].stream.as_str(), summary[0].records),
            ("logs", 3),
            "open: {open}"
        );
        assert_eq!(summary[0].checkpoints.len(), 1);
        assert_eq!(summary[0].checkpoints[0].name, "file/abc");
        let mut out = Vec::new();
        let done = export_with(&look, dir.path(), "logs", &mut out).unwrap();
        assert_eq!(done.records, 3);
        let data: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| v["data_base64"].as_str().unwrap().to_owned())
            .collect();
        use base64::Engine as _;
        let want: Vec<String> = [2, 4, 5]
            .iter()
            .map(|i| base64::engine::general_purpose::STANDARD.encode(format!("record {i}")))
            .collect();
        assert_eq!(data, want, "open: {open}");
        assert_eq!(check_with(&look, dir.path()).unwrap().damaged(), 0);
        if open {
            rt.block_on(spool.close()).unwrap();
        }
    }
    assert!(matches!(
        export_with(&ReadOnly, dir.path(), "other", &mut Vec::new()),
        Err(super::SurveyError::NoStream { .. })
    ));
}

/// A check while the spool is open and written to sees no damage in what is
/// being appended, and changes nothing.
#[test]
fn a_check_beside_a_writer_finds_nothing_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = crate::spool::Spool::open(&crate::spool::SpoolOptions {
        dir: Some(dir.path().to_owned()),
        max_bytes: 1 << 30,
        flush_interval_ms: 5,
        segment_bytes: 64 << 10,
        min_free_bytes: 0,
        ..crate::spool::SpoolOptions::default()
    })
    .unwrap();
    let s = spool.stream("logs").unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..3000 {
            // The disk behind the writes is backpressure: wait for the commit.
            while let Err(e) = s.append(&[rec(i)]) {
                assert!(e.is_full(), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    });
    let mut checks = 0;
    while !writer.is_finished() || checks == 0 {
        let report = check_with(&ReadOnly, dir.path()).unwrap();
        assert_eq!(report.damaged(), 0, "{}", report.render());
        checks += 1;
    }
    writer.join().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(spool.close()).unwrap();
    drop(spool);
    let files = |d: &Path| {
        let mut v: Vec<(String, u64)> = walk(d);
        v.sort();
        v
    };
    let before = files(dir.path());
    check_with(&ReadOnly, dir.path()).unwrap();
    assert_eq!(
        inspect_with(&ReadOnly, dir.path()).unwrap()[0].records,
        3000
    );
    export_with(&ReadOnly, dir.path(), "logs", &mut Vec::new()).unwrap();
    assert_eq!(files(dir.path()), before);
}

/// Every file under `d` with its length.
fn walk(d: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push((p.display().to_string(), e.metadata().unwrap().len()));
        }
    }
    out
}
