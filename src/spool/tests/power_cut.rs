//! Hundreds of seeded power cuts under mixed appends, acks, rolls and removals,
//! and power cuts that take the directory entries not yet synced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;

use super::{all, commit, crash, line, parse_line, rec, sim_open, Sim};
use crate::record::UserRecord;
use crate::spool::storage::Storage as _;
use crate::spool::{Checkpoint, Entry, Spool, StreamSpool};

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

/// What the test knows of the files and the spool, across rounds.
#[derive(Default)]
struct Model {
    seed: u64,
    /// Lines read so far per file (the model's file positions).
    read: Vec<usize>,
    /// Positions as of the last commit: a cut may not take a file back before
    /// them (that would read its lines into the spool twice).
    committed: Vec<usize>,
    /// Files finished (their checkpoint removed, never written again), now and
    /// as of the last commit: a removed checkpoint must not come back.
    gone: Vec<bool>,
    committed_gone: Vec<bool>,
    /// Lines delivered (retired) at any time: may come back after a cut, never lost.
    delivered: BTreeSet<(usize, usize)>,
    /// Entries written and made durable by a commit, and not retired.
    durable: BTreeMap<u64, Vec<UserRecord>>,
    /// Entries alive now: (id, bytes, records).
    live: Vec<(u64, u64, Vec<UserRecord>)>,
    written_since_commit: Vec<(u64, Vec<UserRecord>)>,
}

fn power_cut_run(seed: u64) {
    const FILES: usize = 3;
    let mut rng = fastrand::Rng::with_seed(seed);
    let sim = Sim::default();
    let mut m = Model {
        seed,
        read: vec![0; FILES],
        committed: vec![0; FILES],
        gone: vec![false; FILES],
        committed_gone: vec![false; FILES],
        ..Model::default()
    };
    let rounds = rng.usize(1..4);
    for round in 0..rounds {
        let spool =
            sim_open(&sim, 4096).unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        let s = spool.stream("s").unwrap();
        m.check_reopen(&spool, &s);
        // Some runs deliver faster than they read: segments drain unevenly and
        // the pinned ones are copied forward.
        let extra_retires = rng.u8(0..8);
        for _ in 0..rng.usize(10..160) {
            m.step(&mut rng, extra_retires, &spool, &s);
        }
        if std::env::var("SEED").is_ok() {
            eprintln!("round {round}: files before cut {:?}", sim.files());
        }
        crash(spool);
        sim.power_cut(&mut rng);
        if std::env::var("SEED").is_ok() {
            eprintln!("round {round}: files after cut {:?}", sim.files());
        }
    }
}

impl Model {
    /// After a reopen: every durable entry is there, uncorrupted; no checkpoint
    /// is ahead of its records, behind its last commit, or back from removal.
    fn check_reopen(&mut self, spool: &Spool, s: &StreamSpool) {
        let seed = self.seed;
        // What the reopen found: every durable entry is there, uncorrupted.
        let found: BTreeMap<u64, Entry> = all(s).into_iter().map(|e| (e.id, e)).collect();
        for (id, records) in &self.durable {
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
                !self.committed_gone[f],
                "seed {seed}: file {f}'s removed checkpoint came back"
            );
            let pos: usize = std::str::from_utf8(&c.value).unwrap().parse().unwrap();
            for l in 0..pos {
                assert!(
                    present.contains(&(f, l)) || self.delivered.contains(&(f, l)),
                    "seed {seed}: file {f} checkpoint {pos} is ahead of line {l}"
                );
            }
            assert!(
                pos >= self.committed[f],
                "seed {seed}: file {f} went back from {} to {pos}",
                self.committed[f]
            );
            self.read[f] = pos;
            self.committed[f] = pos;
        }
        for f in 0..self.read.len() {
            let present = s
                .checkpoints()
                .unwrap()
                .iter()
                .any(|c| c.name == format!("f{f}").into_bytes());
            if present {
                // A removal not yet self.committed may be undone by the cut.
                self.gone[f] = false;
            } else {
                // A removal not yet self.committed may also have survived it.
                if !self.gone[f] {
                    assert_eq!(
                        self.committed[f], 0,
                        "seed {seed}: file {f}'s checkpoint is lost"
                    );
                }
                self.read[f] = 0;
            }
        }
        self.committed_gone.clone_from(&self.gone);
        self.committed.clone_from(&self.read);
        self.live = found
            .into_values()
            .map(|e| (e.id, e.bytes, e.records))
            .collect();
        self.durable = self
            .live
            .iter()
            .map(|(id, _, r)| (*id, r.clone()))
            .collect();
        self.written_since_commit.clear();
    }

    /// One random step: append, retire, commit, finish a file, skip a line, seal.
    fn step(&mut self, rng: &mut fastrand::Rng, extra_retires: u8, spool: &Spool, s: &StreamSpool) {
        match rng.u8(0..10 + extra_retires) {
            0..=4 => {
                let space = &spool.inner.space;
                if space.unsynced.load(Ordering::Relaxed) > space.unsynced_limit {
                    // The writer would wait for a commit, as the agent's do.
                    self.commit(spool);
                }
                self.append(rng, s);
            }
            5 | 6 | 10.. if !self.live.is_empty() => {
                let (id, bytes, records) = self.live.swap_remove(rng.usize(0..self.live.len()));
                self.delivered.extend(records.iter().map(parse_line));
                self.durable.remove(&id);
                self.written_since_commit.retain(|(w, _)| *w != id);
                s.retire(&[(id, bytes)], &[], records.len() as u64).unwrap();
            }
            7 => self.commit(spool),
            8 if rng.u8(0..4) == 0 => {
                // A file finished: its checkpoint goes, a new file comes.
                let f = active(rng, &self.gone);
                s.remove_checkpoint(format!("f{f}").as_bytes()).unwrap();
                self.gone[f] = true;
                self.read.push(0);
                self.committed.push(0);
                self.gone.push(false);
                self.committed_gone.push(false);
            }
            8 => {
                let f = active(rng, &self.gone);
                // A position that moved without records (refused lines): the
                // lines are skipped, as delivered.
                self.delivered.insert((f, self.read[f]));
                self.read[f] += 1;
                s.set_checkpoint(&Checkpoint {
                    name: format!("f{f}").into_bytes(),
                    value: self.read[f].to_string().into_bytes(),
                })
                .unwrap();
            }
            9 if rng.bool() => {
                s.inner.disk.as_ref().unwrap().seal_open(&spool.inner.space);
            }
            _ => {}
        }
    }

    fn commit(&mut self, spool: &Spool) {
        commit(spool);
        self.durable.extend(self.written_since_commit.drain(..));
        self.committed.clone_from(&self.read);
        self.committed_gone.clone_from(&self.gone);
    }

    fn append(&mut self, rng: &mut fastrand::Rng, s: &StreamSpool) {
        let f = active(rng, &self.gone);
        let n = rng.usize(1..6);
        let records: Vec<UserRecord> = (self.read[f]..self.read[f] + n)
            .map(|l| line(f, l))
            .collect();
        self.read[f] += n;
        let c = Checkpoint {
            name: format!("f{f}").into_bytes(),
            value: self.read[f].to_string().into_bytes(),
        };
        let (id, bytes) = s.append_with_checkpoint(&records, Some(&c), false).unwrap();
        self.written_since_commit.push((id, records.clone()));
        self.live.push((id, bytes, records));
    }
}

/// A file still read (its checkpoint not removed).
fn active(rng: &mut fastrand::Rng, gone: &[bool]) -> usize {
    let live: Vec<usize> = (0..gone.len()).filter(|&f| !gone[f]).collect();
    live[rng.usize(0..live.len())]
}

/// Regression (issue 22, C1): `streams/` and `streams/<hex>` were created and
/// never followed by an fsync of their parent; a power cut after the first
/// commit took the directory entries, and every record it had made durable.
#[test]
fn a_new_spools_directories_survive_a_power_cut_after_the_first_commit() {
    for seed in 0..20 {
        let sim = Sim::default();
        let spool = sim_open(&sim, 4096).unwrap();
        let s = spool.stream("s").unwrap();
        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(s.append(&[rec("k", &format!("r{i}"))]).unwrap().0);
        }
        commit(&spool);
        crash(spool);
        sim.power_cut(&mut fastrand::Rng::with_seed(seed));
        let spool = sim_open(&sim, 4096).unwrap();
        let got: Vec<u64> = all(&spool.stream("s").unwrap())
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(got, ids, "seed {seed}");
        assert_eq!(spool.damaged(), (0, 0), "seed {seed}");
    }
}

/// A directory created and never synced is gone after a cut, with its files:
/// the simulation's rule the test above relies on.
#[test]
fn the_simulation_loses_an_unsynced_directory_and_its_files() {
    let sim = Sim::default();
    sim.create_dir_all(Path::new("/a/b")).unwrap();
    sim.sync_dir(Path::new("/")).unwrap();
    let f = sim.open(Path::new("/a/b/f"), true).unwrap();
    f.write_at(0, b"x").unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(Path::new("/a/b")).unwrap();
    drop(f);
    sim.power_cut(&mut fastrand::Rng::with_seed(0));
    assert!(sim.exists(Path::new("/a")));
    assert!(
        !sim.exists(Path::new("/a/b")),
        "b's entry in a was never synced"
    );
    assert!(sim.files().is_empty());
}
