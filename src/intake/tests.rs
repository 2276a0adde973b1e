//! Intake's two paths and the switch between them: under concurrent pushes every
//! entry reaches the dispatcher's side exactly once (handed over or read back,
//! never both, no gap skipped), the stream spills when the hand-over is full and
//! hands over again once the outlet caught up, and a memory-only spool, which
//! keeps nothing that waits, answers a full hand-over with a full spool.

use std::time::Duration;

use tokio::sync::oneshot;

use super::{open, Intake, Outlet, PushFailure, HANDOVER_BATCHES};
use crate::record::UserRecord;
use crate::spool::{Spool, SpoolOptions};

/// One small batch, named after its sender and its number.
fn batch(sender: usize, n: usize) -> Vec<UserRecord> {
    vec![UserRecord::new(format!("k{sender}-{n}"), "x".repeat(100))]
}

/// A spool on disk (in a temp dir kept with it) and one stream's intake.
fn on_disk() -> (tempfile::TempDir, Spool, Intake, Outlet) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SpoolOptions {
        dir: Some(dir.path().join("spool")),
        ..SpoolOptions::default()
    };
    let spool = Spool::open(&options).expect("spool opens");
    let (intake, outlet) = open(spool.stream("s").expect("stream"));
    (dir, spool, intake, outlet)
}

fn memory_only() -> (Spool, Intake, Outlet) {
    let spool = Spool::open(&SpoolOptions::default()).expect("memory spool");
    let (intake, outlet) = open(spool.stream("s").expect("stream"));
    (spool, intake, outlet)
}

/// Everything handed over now, by id.
fn handed_over(outlet: &mut Outlet) -> Vec<u64> {
    std::iter::from_fn(|| outlet.try_recv().map(|b| b.id)).collect()
}

/// Entries read back now, by id.
async fn read_back(outlet: &mut Outlet, budget: u64) -> Vec<u64> {
    let loaded = outlet.read_spilled(budget).await.expect("spool read");
    loaded.into_iter().map(|b| b.id).collect()
}

const SENDERS: usize = 8;
const BATCHES: usize = 400;

/// Pushes `BATCHES` batches, pausing now and then; returns their ids.
async fn sender(intake: Intake, s: usize) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(s as u64);
    let mut ids = Vec::with_capacity(BATCHES);
    for n in 0..BATCHES {
        let id = intake.push(batch(s, n), None, None, None).await;
        ids.push(id.expect("pushed"));
        if rng.u8(..) < 24 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    ids
}

/// Times the stream went from handing over to spilling, as the ids tell: a
/// spilled id right after a handed-over one.
fn spills(handed: &[u64], spilled: &[u64]) -> usize {
    let mut all: Vec<(u64, bool)> = handed.iter().map(|&id| (id, false)).collect();
    all.extend(spilled.iter().map(|&id| (id, true)));
    all.sort_unstable();
    all.windows(2).filter(|w| !w[0].1 && w[1].1).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_pushes_every_entry_is_loaded_once_and_spilled_ones_in_order() {
    let (_dir, _spool, intake, mut outlet) = on_disk();
    // Caught up at start (the spool is empty): the stream hands over first.
    assert!(read_back(&mut outlet, u64::MAX).await.is_empty());
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(sender(intake.clone(), s)))
        .collect();
    // The dispatcher's side reads at an uneven pace and with uneven budgets,
    // and sometimes leaves the hand-over alone: it fills, the stream spills,
    // catches up, and spills again.
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut handed, mut spilled) = (Vec::new(), Vec::new());
    while !senders.iter().all(|s| s.is_finished()) {
        let budget = [1, 1024, 16 << 10, u64::MAX][rng.usize(..4)];
        spilled.extend(read_back(&mut outlet, budget).await);
        if rng.bool() {
            handed.extend(handed_over(&mut outlet));
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=1))).await;
    }
    let mut pushed = Vec::new();
    for s in senders {
        pushed.extend(s.await.expect("sender"));
    }
    // The rest, until the outlet has caught up.
    handed.extend(handed_over(&mut outlet));
    while intake.is_spilling() {
        spilled.extend(read_back(&mut outlet, u64::MAX).await);
    }
    // Nothing more comes: no entry is loaded a second time.
    assert!(handed_over(&mut outlet).is_empty());
    assert!(read_back(&mut outlet, u64::MAX).await.is_empty());
    assert!(
        spilled.windows(2).all(|w| w[0] < w[1]),
        "spilled entries are read back in id order, never one again"
    );
    let switches = spills(&handed, &spilled);
    let mut loaded = [handed, spilled].concat();
    pushed.sort_unstable();
    loaded.sort_unstable();
    assert_eq!(loaded, pushed, "every entry loaded exactly once");
    assert!(switches >= 2, "the stream spilled {switches} times");
}

#[tokio::test]
async fn the_stream_spills_on_a_full_hand_over_and_hands_over_again_once_caught_up() {
    let (_dir, _spool, intake, mut outlet) = on_disk();
    // At start-up the stream spills: what an earlier run left is read first.
    assert!(intake.is_spilling());
    let first = intake.try_push(batch(0, 0), None).expect("spilled");
    assert!(handed_over(&mut outlet).is_empty());
    assert_eq!(read_back(&mut outlet, u64::MAX).await, vec![first]);
    assert!(!intake.is_spilling(), "caught up");

    let handed: Vec<u64> = (1..=HANDOVER_BATCHES)
        .map(|n| intake.try_push(batch(0, n), None).expect("handed over"))
        .collect();
    assert!(!intake.is_spilling());
    let spilled = intake.try_push(batch(0, 100), None).expect("spilled");
    assert!(intake.is_spilling(), "a full hand-over spills");
    // Room again, but the stream spills until the outlet caught up: a batch
    // handed over now would overtake the spilled one.
    assert_eq!(outlet.try_recv().map(|b| b.id), Some(handed[0]));
    let spilled_too = intake.try_push(batch(0, 101), None).expect("spilled");
    assert!(intake.is_spilling());
    assert!(spilled < spilled_too && handed.iter().all(|&h| h < spilled));

    // A read within a small budget takes one entry and goes on spilling.
    assert_eq!(read_back(&mut outlet, 1).await, vec![spilled]);
    assert!(intake.is_spilling());
    assert_eq!(read_back(&mut outlet, u64::MAX).await, vec![spilled_too]);
    assert!(!intake.is_spilling(), "caught up");
    assert!(read_back(&mut outlet, u64::MAX).await.is_empty());

    // What was handed over before the spill is still there, each once; the
    // next batch is handed over again.
    assert_eq!(handed_over(&mut outlet), handed[1..]);
    let next = intake.try_push(batch(0, 102), None).expect("handed over");
    assert_eq!(handed_over(&mut outlet), vec![next]);
    assert!(read_back(&mut outlet, u64::MAX).await.is_empty());
}

#[tokio::test]
async fn a_paced_push_waits_for_room_before_it_spills() {
    let (_dir, _spool, intake, mut outlet) = on_disk();
    assert!(read_back(&mut outlet, u64::MAX).await.is_empty());
    for n in 0..HANDOVER_BATCHES {
        intake.try_push(batch(0, n), None).expect("handed over");
    }
    let pace = Some(Duration::from_secs(30));
    let waiting = tokio::spawn({
        let intake = intake.clone();
        async move { intake.push(batch(0, 100), None, None, pace).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "a paced push waits for the hand-over"
    );
    let taken = outlet.try_recv().expect("a batch").id;
    let id = waiting.await.expect("push task").expect("pushed");
    assert!(id > taken);
    assert!(!intake.is_spilling(), "room came in time: handed over");
    assert_eq!(handed_over(&mut outlet).last(), Some(&id));
}

#[tokio::test]
async fn memory_only_answers_a_full_hand_over_with_a_full_spool_and_push_waits() {
    let (spool, intake, mut outlet) = memory_only();
    assert!(!intake.is_spilling(), "nothing to read back");
    let handed: Vec<u64> = (0..HANDOVER_BATCHES)
        .map(|n| intake.try_push(batch(0, n), None).expect("handed over"))
        .collect();
    assert!(handed.windows(2).all(|w| w[0] < w[1]), "ids increase");

    let (tx, _rx) = oneshot::channel();
    let full = intake.try_push(batch(0, 100), Some(tx)).expect_err("full");
    assert!(
        matches!(&full.failure, PushFailure::Spool(e) if e.is_full()),
        "{:?}",
        full.failure
    );
    assert_eq!(full.records, batch(0, 100), "the records come back");
    assert!(full.receipt.is_some(), "the receipt comes back");
    assert!(!intake.is_spilling(), "memory-only never spills");
    assert!(read_back(&mut outlet, u64::MAX).await.is_empty());
    assert_eq!((spool.used_bytes(), spool.disk_bytes()), (0, 0));
    assert_eq!(spool.disk_free_bytes(), None, "nothing on disk");

    // `push` waits for room, even a paced one, then goes in.
    let waiting = tokio::spawn({
        let intake = intake.clone();
        let pace = Some(Duration::from_millis(1));
        async move { intake.push(batch(0, 101), None, None, pace).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "push waits while the hand-over is full"
    );
    assert_eq!(outlet.try_recv().map(|b| b.id), Some(handed[0]));
    let id = waiting.await.expect("push task").expect("pushed");
    assert!(id > handed[HANDOVER_BATCHES - 1], "ids increase");
    let mut expected = handed[1..].to_vec();
    expected.push(id);
    assert_eq!(handed_over(&mut outlet), expected);

    // The dispatcher gone, a batch has nowhere to go.
    drop(outlet);
    let e = intake.try_push(batch(0, 102), None).expect_err("stopped");
    assert!(matches!(e.failure, PushFailure::Stopped), "{:?}", e.failure);
    let e = intake
        .push(batch(0, 103), None, None, None)
        .await
        .expect_err("stopped");
    assert!(matches!(e.failure, PushFailure::Stopped), "{:?}", e.failure);
}
