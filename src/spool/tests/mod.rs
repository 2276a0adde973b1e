//! The spool's own tests: the API on real files, and power cuts, full disks and
//! damage on the simulated storage layer.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::commit::commit_all;
use super::storage::sim::Sim;
use super::storage::Storage as _;
use super::stream;
use super::{
    open_at, Checkpoint, Entry, Refusing, Spool, SpoolError, SpoolOptions, StreamSpool, FORMAT_FILE,
};
use crate::record::UserRecord;

fn rec(pk: &str, data: &str) -> UserRecord {
    UserRecord::new(pk, data.to_owned())
}

fn all(s: &StreamSpool) -> Vec<Entry> {
    s.read_from(0, u64::MAX, |_| false).unwrap().0
}

/// A commit now, on this thread.
fn commit(spool: &Spool) {
    assert!(commit_all(&spool.inner, spool.store().unwrap()));
}

/// Appends, committing first while the disk is behind (these tests have no
/// commit interval: they commit themselves).
fn append_committing(spool: &Spool, s: &StreamSpool, records: &[UserRecord]) -> (u64, u64) {
    loop {
        match s.append(records) {
            Err(SpoolError::Behind { .. }) => commit(spool),
            other => return other.unwrap(),
        }
    }
}

#[test]
fn entries_survive_reopen_and_partial_progress_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open_at(dir.path(), 1 << 20).unwrap();
        let s = spool.stream("a").unwrap();
        let (id1, b1) = s.append(&[rec("k", "one"), rec("k", "two")]).unwrap();
        let (id2, _) = s.append(&[rec("j", "three")]).unwrap();
        assert!(id2 > id1);
        let other = spool.stream("b").unwrap();
        other.append(&[rec("x", "elsewhere")]).unwrap();
        s.retire(&[], &[(id1, &[0b01])], 1).unwrap();
        assert_eq!(spool.records(), 3);
        assert!(b1 > 0);
    }
    let spool = open_at(dir.path(), 1 << 20).unwrap();
    assert!(spool.used_bytes() > 0);
    // Four records written, one delivered.
    assert_eq!(spool.records(), 3);
    let s = spool.stream("a").unwrap();
    let entries = all(&s);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].records, vec![rec("k", "one"), rec("k", "two")]);
    assert_eq!(entries[0].delivered, Some(vec![0b01]));
    assert_eq!(entries[1].records, vec![rec("j", "three")]);
    assert_eq!(entries[1].delivered, None);
    // New ids continue after the last one.
    let (id3, _) = s.append(&[rec("z", "four")]).unwrap();
    assert!(id3 > entries[1].id);
    let before = spool.used_bytes();
    s.retire(&[(entries[0].id, entries[0].bytes)], &[], 1)
        .unwrap();
    assert_eq!(spool.used_bytes(), before - entries[0].bytes);
    assert_eq!(all(&s).len(), 2);
    let b = spool.stream("b").unwrap();
    assert_eq!(all(&b)[0].records, vec![rec("x", "elsewhere")]);
}

#[test]
fn checkpoints_are_written_with_their_records_and_outlive_their_segment() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = Checkpoint {
        name: b"file-1".to_vec(),
        value: b"pos=10".to_vec(),
    };
    {
        let spool = open_at(dir.path(), 1 << 20).unwrap();
        let s = spool.stream("a").unwrap();
        let (id, bytes) = s
            .append_with_checkpoint(&[rec("k", "line")], Some(&c1), false)
            .unwrap();
        s.set_checkpoint(&Checkpoint {
            name: b"file-2".to_vec(),
            value: b"pos=3".to_vec(),
        })
        .unwrap();
        s.set_checkpoint(&Checkpoint {
            name: b"file-3".to_vec(),
            value: b"pos=1".to_vec(),
        })
        .unwrap();
        s.remove_checkpoint(b"file-3").unwrap();
        // Delivered, sealed and removed: the checkpoints are carried forward.
        s.retire(&[(id, bytes)], &[], 1).unwrap();
        s.inner.disk.as_ref().unwrap().seal_open(&spool.inner.space);
        commit(&spool);
        assert_eq!(spool.disk_bytes(), 0, "the delivered segment is removed");
    }
    let spool = open_at(dir.path(), 1 << 20).unwrap();
    let s = spool.stream("a").unwrap();
    let mut c = s.checkpoints().unwrap();
    c.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        c,
        vec![
            c1,
            Checkpoint {
                name: b"file-2".to_vec(),
                value: b"pos=3".to_vec()
            }
        ]
    );
    assert!(all(&s).is_empty());
}

/// The largest record a stream can be raised to take (10 MiB) fits a frame,
/// and a segment rolled at the smallest `segment_bytes` (1 MiB) still holds it
/// whole: it comes back intact after a reopen.
#[test]
fn records_of_10_mib_go_through_segments_smaller_than_them() {
    use crate::record::MAX_LARGE_RECORD_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        dir: Some(dir.path().to_owned()),
        max_bytes: 256 << 20,
        segment_bytes: 1 << 20,
        min_free_bytes: 0,
        ..SpoolOptions::default()
    };
    let large = |i: u8| UserRecord::new("pk", vec![i; MAX_LARGE_RECORD_BYTES - 2]);
    {
        let spool = Spool::open(&options).unwrap();
        let s = spool.stream("a").unwrap();
        for i in 0..3 {
            append_committing(&spool, &s, &[large(i), rec("k", "small")]);
        }
        commit(&spool);
    }
    let spool = Spool::open(&options).unwrap();
    let records: Vec<UserRecord> = all(&spool.stream("a").unwrap())
        .into_iter()
        .flat_map(|e| e.records)
        .collect();
    assert_eq!(records.len(), 6);
    for i in 0..3u8 {
        assert_eq!(records[2 * i as usize], large(i));
        assert_eq!(records[2 * i as usize + 1], rec("k", "small"));
    }
}

#[test]
fn full_spool_refuses_and_read_respects_budget() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_at(dir.path(), 400).unwrap();
    let s = spool.stream("a").unwrap();
    let big = "x".repeat(100);
    s.append(&[rec("k", &big)]).unwrap();
    s.append(&[rec("k", &big)]).unwrap();
    let e = s.append(&[rec("k", &big)]).unwrap_err();
    assert!(matches!(e, SpoolError::Full { max: 400, .. }), "{e}");
    assert!(e.is_full());
    let (entries, next) = s.read_from(0, 1, |_| false).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(next, Some(entries[0].id + 1));
    let (entries, _) = s.read_from(0, u64::MAX, |id| id == 1).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, 2);
}

#[test]
fn oldest_record_age_is_the_oldest_live_entry() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_at(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.oldest_record_age().unwrap(), None);
    let s = spool.stream("a").unwrap();
    let (id, b) = s.append(&[rec("k", "old")]).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    s.append(&[rec("k", "new")]).unwrap();
    let age = spool.oldest_record_age().unwrap().unwrap();
    assert!(age >= Duration::from_millis(30), "{age:?}");
    s.retire(&[(id, b)], &[], 1).unwrap();
    assert!(spool.oldest_record_age().unwrap().unwrap() < age);
}

#[test]
fn a_drained_spool_gives_its_disk_back_and_rolls_segments() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&SpoolOptions {
        dir: Some(dir.path().to_owned()),
        max_bytes: 1 << 20,
        flush_interval_ms: 3_600_000,
        min_free_bytes: 0,
        ..SpoolOptions::default()
    })
    .unwrap();
    let s = spool.stream("a").unwrap();
    let data = "y".repeat(1000);
    let mut written = Vec::new();
    for i in 0..400 {
        written.push(append_committing(
            &spool,
            &s,
            &[rec(&format!("k{i}"), &data)],
        ));
    }
    // 128 KiB segments (an eighth of max_bytes): several sealed ones.
    let segs = |d: &Path| {
        std::fs::read_dir(d.join("streams").join(stream::dir_name("a")))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    };
    assert!(segs(dir.path()) >= 3);
    let (first, _) = written.split_at(200);
    s.retire(first, &[], 200).unwrap();
    commit(&spool);
    let half = spool.disk_bytes();
    assert!(
        half < 300 * 1050,
        "sealed segments with nothing live are removed: {half}"
    );
    s.retire(&written[200..], &[], 200).unwrap();
    commit(&spool);
    // The open segment goes once idle.
    std::thread::sleep(stream::ROLL_IDLE);
    commit(&spool);
    assert_eq!(spool.disk_bytes(), 0);
    assert_eq!(segs(dir.path()), 0);
    assert_eq!(spool.records(), 0);
}

#[test]
fn an_unknown_format_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FORMAT_FILE), "shardline-spool 3\n").unwrap();
    let e = open_at(dir.path(), 1 << 20).err().unwrap();
    assert!(matches!(e, SpoolError::Version { version: 3, .. }), "{e}");
    assert!(e.to_string().contains("format version 3"), "{e}");
}

#[test]
fn a_spool_written_by_0_1_is_migrated_once() {
    let dir = tempfile::tempdir().unwrap();
    legacy::copy_fixture(dir.path());
    {
        let spool = open_at(dir.path(), 1 << 30).unwrap();
        let a = spool.stream("alpha").unwrap();
        let got: Vec<UserRecord> = all(&a).into_iter().flat_map(|e| e.records).collect();
        let mut want = vec![rec("k2", "alpha-2"), {
            let mut r = rec("k3", "alpha-3");
            r.explicit_hash_key = Some(u128::MAX);
            r
        }];
        want.extend((0..20).map(|i| {
            rec(
                &format!("big{i}"),
                &format!("alpha-big-{i}-{}", "x".repeat(500)),
            )
        }));
        assert_eq!(got, want);
        let mut c = a.checkpoints().unwrap();
        c.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(
            c.iter()
                .map(|c| (&c.name[..], &c.value[..]))
                .collect::<Vec<_>>(),
            vec![
                (&b"file-1"[..], &b"pos=200"[..]),
                (&b"file-2"[..], &b"pos=7"[..])
            ]
        );
        let b = spool.stream("beta").unwrap();
        let got: Vec<UserRecord> = all(&b).into_iter().flat_map(|e| e.records).collect();
        assert_eq!(
            got,
            vec![
                rec("b1", "beta-1"),
                UserRecord::new("b2", vec![0u8, 255, 1, 2])
            ]
        );
        assert_eq!(spool.records(), 24);
    }
    assert!(!dir.path().join("db").exists(), "the old files are removed");
    assert!(!dir.path().join("conf").exists());
    // A second open reads the new layout: the same records, once.
    let spool = open_at(dir.path(), 1 << 30).unwrap();
    assert_eq!(spool.records(), 24);
}

// ---- The simulated storage: power cuts, full disks, damage. ----

const SIM_DIR: &str = "/sim/spool";

/// Settings for the simulated storage: no commit interval (the tests commit
/// themselves), no free-space reserve.
fn sim_options() -> SpoolOptions {
    SpoolOptions {
        dir: Some(SIM_DIR.into()),
        max_bytes: 1 << 30,
        flush_interval_ms: 3_600_000,
        min_free_bytes: 0,
        ..SpoolOptions::default()
    }
}

fn sim_open_with(sim: &Sim, options: SpoolOptions) -> Result<Spool, SpoolError> {
    // The spool's parent exists, durably, as a package's state directory does.
    let parent = Path::new(SIM_DIR).parent().unwrap();
    sim.create_dir_all(parent).unwrap();
    sim.sync_dir(Path::new("/")).unwrap();
    Spool::open_on(Arc::new(sim.clone()), Path::new(SIM_DIR), &options, false)
}

fn sim_open(sim: &Sim, segment_bytes: u64) -> Result<Spool, SpoolError> {
    sim_open_with(
        sim,
        SpoolOptions {
            segment_bytes,
            ..sim_options()
        },
    )
}

/// Drops a spool as a power cut would: no last commit.
fn crash(spool: Spool) {
    spool
        .store()
        .unwrap()
        .commit
        .crashed
        .store(true, Ordering::Relaxed);
    drop(spool);
}

/// The record a file source would read as line `line` of file `file`.
fn line(file: usize, line: usize) -> UserRecord {
    rec(
        &format!("f{file}"),
        &format!("file {file} line {line} {}", "z".repeat(line % 300)),
    )
}

fn parse_line(r: &UserRecord) -> (usize, usize) {
    let s = std::str::from_utf8(&r.data).unwrap();
    let mut w = s.split(' ');
    w.next();
    let f = w.next().unwrap().parse().unwrap();
    w.next();
    (f, w.next().unwrap().parse().unwrap())
}

mod faults;
mod legacy;
mod power_cut;

/// A write refused for room is what `status` shows as FULL, until one goes in.
#[test]
fn a_refused_write_is_reported_until_one_goes_in() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open_at(dir.path(), 400).unwrap();
    let s = spool.stream("s").unwrap();
    assert_eq!(spool.refusing(), None);
    let big = UserRecord::new("k", vec![b'x'; 1000]);
    assert!(s.append(&[big]).unwrap_err().is_full());
    assert_eq!(spool.refusing(), Some(Refusing::SpoolFull));
    s.append(&[UserRecord::new("k", "small")]).unwrap();
    assert_eq!(spool.refusing(), None);
}
