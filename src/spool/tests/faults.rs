//! Full disks, damage, and what the commit leaves unsynced, on the simulated storage.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;

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

/// Crashes `spool`, cuts the power (what was not fdatasynced is lost, as `seed`
/// picks), reopens it, and lists the ids of stream "s" that survived.
fn ids_after_power_cut(sim: &Sim, spool: Spool, seed: u64) -> (Spool, Vec<u64>) {
    crash(spool);
    sim.power_cut(&mut fastrand::Rng::with_seed(seed));
    let spool = sim_open(sim, 1 << 20).unwrap();
    let ids = all(&spool.stream("s").unwrap())
        .iter()
        .map(|e| e.id)
        .collect();
    (spool, ids)
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
    let (spool, ids) = ids_after_power_cut(&sim, spool, 1);
    assert_eq!(ids, vec![written[98].0, written[99].0]);
    let s = spool.stream("s").unwrap();

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

#[test]
fn a_segment_sealed_for_its_size_and_mostly_delivered_is_never_synced() {
    // The commit comes right after the first segment was sealed for its size,
    // with the newest entries in it still on their way to Kinesis.
    let sim = Sim::default();
    let spool = sim_open(&sim, 1 << 20).unwrap();
    let s = spool.stream("s").unwrap();
    let data = "d".repeat(1000);
    let mut written = Vec::new();
    let append = |written: &mut Vec<(u64, u64)>| {
        let r = rec(&format!("k{}", written.len()), &data);
        written.push(s.append(&[r]).unwrap());
    };
    // A first commit while all is live (the segment is synced as it is, and
    // the disk is no longer behind), then everything delivered.
    for _ in 0..50 {
        append(&mut written);
    }
    commit(&spool);
    s.retire(&written, &[], written.len() as u64).unwrap();
    let retired = written.len();
    while seg_paths(&sim).len() < 2 {
        append(&mut written);
        // Delivered as it goes, all but the newest two.
        if let Some(n) = written.len().checked_sub(3).filter(|&n| n >= retired) {
            s.retire(&written[n..=n], &[], 1).unwrap();
        }
    }
    let first = seg_paths(&sim)[0].clone();
    let before = sim.syncs().len();
    commit(&spool);
    let synced: BTreeSet<PathBuf> = sim.syncs()[before..]
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        !synced.contains(&first),
        "the sealed, mostly delivered segment was synced: {synced:?}"
    );
    assert!(!seg_paths(&sim).contains(&first), "and it is removed");
    // Its live entries were copied forward and synced: they survive a power cut.
    let (_, ids) = ids_after_power_cut(&sim, spool, 2);
    let live: Vec<u64> = written[written.len() - 2..].iter().map(|w| w.0).collect();
    assert_eq!(ids, live);
}
