//! Migration of damaged 0.1 spools (issue 22, "Never a silent loss"): what
//! could be read is migrated, the old files are kept and an ERROR says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{all, append_committing, commit, rec};
use crate::record::UserRecord;
use crate::spool::{open_at, Spool, FORMAT_FILE};

const FIXTURE: &str = "tests/fixtures/spool-0.1.0";

/// Copies the 0.1 fixture (a cleanly stopped spool of 24 records: 22 in
/// `alpha`, 2 in `beta`) into `dir`.
pub(super) fn copy_fixture(dir: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
}

/// A writer the test's log goes to.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens the spool at `dir`, returning it and what it logged.
fn open_logged(dir: &Path) -> (Spool, String) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let spool = tracing::subscriber::with_default(subscriber, || open_at(dir, 1 << 30).unwrap());
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    (spool, text)
}

/// The directories the old files were kept in.
fn kept(dir: &Path) -> Vec<PathBuf> {
    let Ok(names) = std::fs::read_dir(dir.join("damaged")) else {
        return Vec::new();
    };
    names
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("0.1-"))
        .map(|e| e.path())
        .collect()
}

fn records_of(spool: &Spool, stream: &str) -> Vec<UserRecord> {
    all(&spool.stream(stream).unwrap())
        .into_iter()
        .flat_map(|e| e.records)
        .collect()
}

/// Regression (issue 22, N3): a 0.1 database cut in half migrated as 2 records
/// at INFO, and its files, the evidence of the 22 others, were deleted.
#[test]
fn a_0_1_database_cut_in_half_is_kept_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let db = dir.path().join("db");
    let whole = std::fs::read(&db).unwrap();
    std::fs::write(&db, &whole[..whole.len() / 2]).unwrap();
    let (spool, log) = open_logged(dir.path());
    // What could be read is migrated.
    assert_eq!(records_of(&spool, "alpha").len(), 2);
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("does not read whole"), "{log}");
    assert!(log.contains("stream 'alpha'"), "{log}");
    assert!(log.contains("stream 'beta'"), "{log}");
    assert!(!log.contains("Migrated the 0.1 spool"), "{log}");
    // The files are kept as they were, not as sled left them after reading.
    let kept = kept(dir.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(kept[0].join("db")).unwrap(),
        &whole[..whole.len() / 2]
    );
    assert!(kept[0].join("conf").exists());
    assert!(!db.exists() && !dir.path().join("conf").exists());
    assert!(!dir.path().join("migrating-0.1").exists());
    drop(spool);
    // Migrated once: the next open reads the new layout only.
    let (spool, log) = open_logged(dir.path());
    assert_eq!(spool.records(), 2);
    assert!(!log.contains("ERROR"), "{log}");
}

/// Regression (issue 22, N3): an emptied 0.1 database was removed without a word.
#[test]
fn an_emptied_0_1_database_is_kept_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    std::fs::write(dir.path().join("db"), b"").unwrap();
    let (spool, log) = open_logged(dir.path());
    assert_eq!(spool.records(), 0);
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("'db' is empty"), "{log}");
    let kept = kept(dir.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].join("db").exists() && kept[0].join("conf").exists());
    assert!(dir.path().join(FORMAT_FILE).exists());
}

/// Regression (issue 22, N3): 0.1 files beside a current spool (0.1 run again
/// after an upgrade) were deleted unread, 24 records with them.
#[test]
fn a_0_1_database_beside_a_current_spool_is_migrated_into_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open_at(dir.path(), 1 << 30).unwrap();
        let s = spool.stream("alpha").unwrap();
        append_committing(&spool, &s, &[rec("k", "written by 0.2")]);
        commit(&spool);
    }
    copy_fixture(dir.path());
    let (spool, log) = open_logged(dir.path());
    assert_eq!(spool.records(), 25, "{log}");
    let alpha = records_of(&spool, "alpha");
    assert_eq!(alpha[0], rec("k", "written by 0.2"));
    assert_eq!(alpha[1], rec("k2", "alpha-2"));
    assert_eq!(records_of(&spool, "beta").len(), 2);
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("beside the current one"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!dir.path().join("db").exists() && !dir.path().join("conf").exists());
    assert!(kept(dir.path()).is_empty());
    drop(spool);
    let spool = open_at(dir.path(), 1 << 30).unwrap();
    assert_eq!(spool.records(), 25);
}

/// A 0.1 spool that did not stop cleanly left no summary: what it holds
/// cannot be checked, so its files are kept and the reason logged.
#[test]
fn a_0_1_database_without_its_summary_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.open_tree("stream/beta").unwrap().remove([0x04]).unwrap();
        db.flush().unwrap();
    }
    let (spool, log) = open_logged(dir.path());
    assert_eq!(spool.records(), 24);
    assert!(log.contains("stream 'beta' has no summary"), "{log}");
    assert!(!log.contains("stream 'alpha'"), "{log}");
    assert_eq!(kept(dir.path()).len(), 1);
}
