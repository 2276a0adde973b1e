//! The spool's own tests: the API on real files, and power cuts, full disks and
//! damage on the simulated storage layer.

use std::collections::{BTreeMap, BTreeSet};

use super::storage::sim::Sim;
use super::storage::Storage as _;
use super::*;

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
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spool-0.1.0");
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
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

#[test]
fn power_cuts_keep_every_durable_record_and_no_checkpoint_runs_ahead() {
    let only: Option<u64> = std::env::var("SEED").ok().map(|s| s.parse().unwrap());
    for seed in 0..300u64 {
        if only.is_some_and(|o| o != seed) {
            continue;
        }
        power_cut_run(seed);
    }
}

fn power_cut_run(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let sim = Sim::default();
    const FILES: usize = 3;
    // Lines read so far per file (the model's file positions).
    let mut read = vec![0usize; FILES];
    // Positions as of the last commit: a cut may not take a file back before them
    // (that would read its lines into the spool twice).
    let mut committed = vec![0usize; FILES];
    // Files finished (their checkpoint removed, never written again), now and as
    // of the last commit: a removed checkpoint must not come back.
    let mut gone = vec![false; FILES];
    let mut committed_gone = vec![false; FILES];
    // Lines delivered (retired) at any time: may come back after a cut, never lost.
    let mut delivered: BTreeSet<(usize, usize)> = BTreeSet::new();
    // Entries written and made durable by a commit, and not retired.
    let mut durable: BTreeMap<u64, Vec<UserRecord>> = BTreeMap::new();
    let rounds = rng.usize(1..4);
    for round in 0..rounds {
        let spool =
            sim_open(&sim, 4096).unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        let s = spool.stream("s").unwrap();
        // What the reopen found: every durable entry is there, uncorrupted.
        let found: BTreeMap<u64, Entry> = all(&s).into_iter().map(|e| (e.id, e)).collect();
        for (id, records) in &durable {
            let e = found
                .get(id)
                .unwrap_or_else(|| panic!("seed {seed}: durable entry {id} lost"));
            assert_eq!(&e.records, records, "seed {seed}: entry {id} changed");
        }
        assert_eq!(
            spool.damaged().0,
            0,
            "seed {seed}: a power cut is not damage"
        );
        // No checkpoint ahead of its records: every line before a file's
        // position is in the spool or was delivered.
        let present: BTreeSet<(usize, usize)> = found
            .values()
            .flat_map(|e| e.records.iter().map(parse_line))
            .collect();
        for c in s.checkpoints().unwrap() {
            let f: usize = std::str::from_utf8(&c.name).unwrap()[1..].parse().unwrap();
            assert!(
                !committed_gone[f],
                "seed {seed}: file {f}'s removed checkpoint came back"
            );
            let pos: usize = std::str::from_utf8(&c.value).unwrap().parse().unwrap();
            for l in 0..pos {
                assert!(
                    present.contains(&(f, l)) || delivered.contains(&(f, l)),
                    "seed {seed}: file {f} checkpoint {pos} is ahead of line {l}"
                );
            }
            assert!(
                pos >= committed[f],
                "seed {seed}: file {f} went back from {} to {pos}",
                committed[f]
            );
            read[f] = pos;
            committed[f] = pos;
        }
        for f in 0..read.len() {
            let present = s
                .checkpoints()
                .unwrap()
                .iter()
                .any(|c| c.name == format!("f{f}").into_bytes());
            if present {
                // A removal not yet committed may be undone by the cut.
                gone[f] = false;
            } else {
                // A removal not yet committed may also have survived it.
                if !gone[f] {
                    assert_eq!(
                        committed[f], 0,
                        "seed {seed}: file {f}'s checkpoint is lost"
                    );
                }
                read[f] = 0;
            }
        }
        committed_gone.clone_from(&gone);
        committed.clone_from(&read);
        // Entries alive now: (id, bytes, records).
        let mut live: Vec<(u64, u64, Vec<UserRecord>)> = found
            .into_values()
            .map(|e| (e.id, e.bytes, e.records))
            .collect();
        durable = live.iter().map(|(id, _, r)| (*id, r.clone())).collect();
        let mut written_since_commit: Vec<(u64, Vec<UserRecord>)> = Vec::new();
        // Some runs deliver faster than they read: segments drain unevenly and
        // the pinned ones are copied forward.
        let extra_retires = rng.u8(0..8);
        for _ in 0..rng.usize(10..160) {
            match rng.u8(0..10 + extra_retires) {
                0..=4 => {
                    let space = &spool.inner.space;
                    if space.unsynced.load(Ordering::Relaxed) > space.unsynced_limit {
                        // The writer would wait for a commit, as the agent's do.
                        commit(&spool);
                        durable.extend(written_since_commit.drain(..));
                        committed.clone_from(&read);
                        committed_gone.clone_from(&gone);
                    }
                    let f = active(&mut rng, &gone);
                    let n = rng.usize(1..6);
                    let records: Vec<UserRecord> =
                        (read[f]..read[f] + n).map(|l| line(f, l)).collect();
                    read[f] += n;
                    let c = Checkpoint {
                        name: format!("f{f}").into_bytes(),
                        value: read[f].to_string().into_bytes(),
                    };
                    let (id, bytes) = s.append_with_checkpoint(&records, Some(&c), false).unwrap();
                    written_since_commit.push((id, records.clone()));
                    live.push((id, bytes, records));
                }
                5 | 6 | 10.. if !live.is_empty() => {
                    let (id, bytes, records) = live.swap_remove(rng.usize(0..live.len()));
                    delivered.extend(records.iter().map(parse_line));
                    durable.remove(&id);
                    written_since_commit.retain(|(w, _)| *w != id);
                    s.retire(&[(id, bytes)], &[], records.len() as u64).unwrap();
                }
                7 => {
                    commit(&spool);
                    durable.extend(written_since_commit.drain(..));
                    committed.clone_from(&read);
                    committed_gone.clone_from(&gone);
                }
                8 if rng.u8(0..4) == 0 => {
                    // A file finished: its checkpoint goes, a new file comes.
                    let f = active(&mut rng, &gone);
                    s.remove_checkpoint(format!("f{f}").as_bytes()).unwrap();
                    gone[f] = true;
                    for v in [&mut read, &mut committed] {
                        v.push(0);
                    }
                    gone.push(false);
                    committed_gone.push(false);
                }
                8 => {
                    let f = active(&mut rng, &gone);
                    // A position that moved without records (refused lines): the
                    // lines are skipped, as delivered.
                    delivered.insert((f, read[f]));
                    read[f] += 1;
                    s.set_checkpoint(&Checkpoint {
                        name: format!("f{f}").into_bytes(),
                        value: read[f].to_string().into_bytes(),
                    })
                    .unwrap();
                }
                9 if rng.bool() => {
                    s.inner.disk.as_ref().unwrap().seal_open(&spool.inner.space);
                }
                _ => {}
            }
        }
        if std::env::var("SEED").is_ok() {
            eprintln!("round {round}: files before cut {:?}", sim.files());
            eprintln!(
                "ckpts {:?}",
                s.checkpoints()
                    .unwrap()
                    .iter()
                    .map(|c| String::from_utf8_lossy(&c.name).into_owned())
                    .collect::<Vec<_>>()
            );
        }
        crash(spool);
        sim.power_cut(&mut rng);
        if std::env::var("SEED").is_ok() {
            eprintln!("round {round}: files after cut {:?}", sim.files());
        }
    }
}

/// A file still read (its checkpoint not removed).
fn active(rng: &mut fastrand::Rng, gone: &[bool]) -> usize {
    let live: Vec<usize> = (0..gone.len()).filter(|&f| !gone[f]).collect();
    live[rng.usize(0..live.len())]
}

#[test]
fn a_full_disk_is_backpressure_and_delivery_frees_it() {
    let sim = Sim::default();
    let spool = sim_open(&sim, 4096).unwrap();
    let s = spool.stream("s").unwrap();
    let mut written = Vec::new();
    let data = "d".repeat(500);
    sim.set_capacity(Some(20_000));
    let refused = loop {
        match s.append(&[rec("k", &data)]) {
            Ok(w) => written.push(w),
            Err(SpoolError::Behind { .. }) => commit(&spool),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            refused,
            SpoolError::NoSpace { .. } | SpoolError::DiskFull { .. }
        ),
        "{refused}"
    );
    assert!(refused.is_full());
    assert!(written.len() > 10);
    // Nothing half-written stays: commit, reopen, everything written is there.
    commit(&spool);
    // Delivery and removal work on the full disk: the last entry's ack has no
    // room (dropped; the commit goes on), the others' segments are removed.
    // Not a byte left, not even for an ack file.
    let free = sim.free_bytes(Path::new(SIM_DIR)).unwrap();
    sim.set_capacity(Some(20_000 - free));
    let (last, rest) = written.split_last().unwrap();
    s.retire(&[*last], &[], 1).unwrap();
    commit(&spool);
    s.retire(rest, &[], rest.len() as u64).unwrap();
    commit(&spool);
    s.inner.disk.as_ref().unwrap().seal_open(&spool.inner.space);
    commit(&spool);
    assert_eq!(spool.disk_bytes(), 0);
    s.append(&[rec("k", "after")]).unwrap();
    commit(&spool);
    crash(spool);
    let spool = sim_open(&sim, 4096).unwrap();
    let got: Vec<UserRecord> = all(&spool.stream("s").unwrap())
        .into_iter()
        .flat_map(|e| e.records)
        .collect();
    assert_eq!(got, vec![rec("k", "after")]);
}

#[test]
fn the_min_free_reserve_is_a_full_spool() {
    let sim = Sim::default();
    sim.set_capacity(Some(10_000));
    let spool = sim_open_with(
        &sim,
        SpoolOptions {
            min_free_bytes: 8_000,
            ..sim_options()
        },
    )
    .unwrap();
    let s = spool.stream("s").unwrap();
    let e = s.append(&[rec("k", &"x".repeat(3000))]).unwrap_err();
    assert!(
        matches!(e, SpoolError::DiskFull { reserve: 8_000, .. }),
        "{e}"
    );
}

fn seg_paths(sim: &Sim) -> Vec<PathBuf> {
    sim.files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect()
}

#[test]
fn a_damaged_frame_is_reported_and_everything_around_it_delivered() {
    for sealed in [true, false] {
        let sim = Sim::default();
        let spool = sim_open(&sim, 1 << 20).unwrap();
        let s = spool.stream("s").unwrap();
        for i in 0..10 {
            s.append(&[rec("k", &format!("record {i}"))]).unwrap();
        }
        if sealed {
            s.inner.disk.as_ref().unwrap().seal_open(&spool.inner.space);
        }
        commit(&spool);
        crash(spool);
        let path = seg_paths(&sim).remove(0);
        let mut bytes = sim.read(&path).unwrap();
        // Damage the fourth record's data.
        let at = memchr::memmem::find(&bytes, b"record 3").unwrap();
        bytes[at] ^= 0xff;
        sim.overwrite(&path, bytes);
        let spool = sim_open(&sim, 1 << 20).unwrap();
        let s = spool.stream("s").unwrap();
        let got: Vec<String> = all(&s)
            .into_iter()
            .flat_map(|e| e.records)
            .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..10)
            .filter(|&i| i != 3)
            .map(|i| format!("record {i}"))
            .collect();
        assert_eq!(got, want, "sealed: {sealed}");
        assert_eq!(spool.damaged().0, 1, "sealed: {sealed}");
        assert_eq!(spool.records(), 9, "sealed: {sealed}");
    }
}

#[test]
fn a_truncated_segment_and_a_lost_ack_file_lose_only_what_they_held() {
    let sim = Sim::default();
    let spool = sim_open(&sim, 1 << 20).unwrap();
    let s = spool.stream("s").unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(s.append(&[rec("k", &format!("record {i}"))]).unwrap());
    }
    s.retire(&ids[..2], &[], 2).unwrap();
    commit(&spool);
    crash(spool);
    let seg = seg_paths(&sim).remove(0);
    let bytes = sim.read(&seg).unwrap();
    let at = memchr::memmem::find(&bytes, b"record 8").unwrap();
    sim.overwrite(&seg, bytes[..at].to_vec());
    let ack = seg.with_extension("ack");
    assert!(sim.read(&ack).is_some());
    sim.overwrite(&ack, Vec::new());
    let spool = sim_open(&sim, 1 << 20).unwrap();
    let got: Vec<String> = all(&spool.stream("s").unwrap())
        .into_iter()
        .flat_map(|e| e.records)
        .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
        .collect();
    // Records 0 and 1 come again (their acks are gone), 8 is cut, 9 after it.
    let want: Vec<String> = (0..8).map(|i| format!("record {i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn a_segment_without_a_readable_header_is_moved_aside() {
    let sim = Sim::default();
    let spool = sim_open(&sim, 1 << 20).unwrap();
    spool.stream("s").unwrap().append(&[rec("k", "v")]).unwrap();
    commit(&spool);
    crash(spool);
    let seg = seg_paths(&sim).remove(0);
    sim.overwrite(&seg, b"garbage".to_vec());
    let spool = sim_open(&sim, 1 << 20).unwrap();
    assert!(all(&spool.stream("s").unwrap()).is_empty());
    assert_eq!(spool.damaged().0, 1);
    assert!(sim
        .files()
        .iter()
        .any(|p| p.starts_with(Path::new(SIM_DIR).join("damaged"))));
}

#[tokio::test]
async fn durable_returns_only_after_the_fdatasync_that_covers_the_write() {
    let sim = Sim::default();
    // Only on demand: the commit that `durable` asks for.
    let spool = sim_open_with(&sim, sim_options()).unwrap();
    let s = spool.stream("s").unwrap();
    for i in 0..5 {
        s.append(&[rec("k", &format!("r{i}"))]).unwrap();
        let seg = seg_paths(&sim).remove(0);
        let written = sim.read(&seg).unwrap().len() as u64;
        assert!(sim.durable_len(&seg).unwrap_or(0) < written);
        spool.durable().await.unwrap();
        assert!(
            sim.syncs().iter().any(|(p, n)| *p == seg && *n >= written),
            "durable returned before an fdatasync covered byte {written}"
        );
    }
}

#[test]
fn what_is_delivered_before_the_commit_is_never_synced() {
    let sim = Sim::default();
    let spool = sim_open(&sim, 1 << 20).unwrap();
    let s = spool.stream("s").unwrap();
    let data = "d".repeat(1000);
    let mut written = Vec::new();
    for i in 0..100 {
        written.push(append_committing(
            &spool,
            &s,
            &[rec(&format!("k{i}"), &data)],
        ));
    }
    let first = seg_paths(&sim);
    assert_eq!(first.len(), 1, "one open segment: {first:?}");
    // All but the last two delivered before the first commit.
    s.retire(&written[..98], &[], 98).unwrap();
    commit(&spool);
    let synced: BTreeSet<PathBuf> = sim.syncs().into_iter().map(|(p, _)| p).collect();
    assert!(
        !synced.contains(&first[0]),
        "the mostly delivered segment was synced: {synced:?}"
    );
    assert!(
        !seg_paths(&sim).contains(&first[0]),
        "the delivered segment is removed"
    );
    // The two live entries were copied forward, synced, and survive a power cut.
    let now = seg_paths(&sim);
    assert_eq!(now.len(), 1);
    assert!(synced.contains(&now[0]));
    crash(spool);
    sim.power_cut(&mut fastrand::Rng::with_seed(1));
    let spool = sim_open(&sim, 1 << 20).unwrap();
    let s = spool.stream("s").unwrap();
    let ids: Vec<u64> = all(&s).iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![written[98].0, written[99].0]);

    // A segment mostly live is synced as before.
    let more: Vec<(u64, u64)> = (0..100)
        .map(|i| append_committing(&spool, &s, &[rec(&format!("m{i}"), &data)]))
        .collect();
    let before = sim.syncs().len();
    s.retire(&more[..10], &[], 10).unwrap();
    commit(&spool);
    let open = seg_paths(&sim);
    assert!(sim.syncs()[before..].iter().any(|(p, _)| open.contains(p)));
    assert_eq!(all(&s).len(), 92);
}
