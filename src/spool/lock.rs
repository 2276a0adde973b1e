//! One agent per spool: an exclusive `flock` on `<dir>/lock`, taken before
//! anything in the directory is opened, moved or created, and held for as long
//! as the spool is open.
//!
//! Two agents appending to the same segment numbers destroy each other's acked
//! records, and the second one would take the first one's open index for a
//! damaged one. The lock file holds the holder's process id (text), so a refusal
//! can name it; the lock itself, not the file's content, decides. `flock` locks
//! are released by the kernel when the process dies, so a SIGKILL or a power cut
//! never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::SpoolError;

/// The lock file's name inside the spool directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// Tries to take a lock held by someone else before refusing, and the pause
/// between them: long enough to outlast a `holder` check, short for a refusal.
const LOCK_TRIES: u32 = 5;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// The held lock: released when dropped (the descriptor is closed).
#[derive(Debug)]
pub(crate) struct SpoolLock {
    _file: File,
}

/// Who holds a spool's lock, as far as [`holder`] can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockState {
    /// No spool there yet, or nobody holds its lock.
    Free,
    /// Another process holds it; its id as written in the lock file, when readable.
    Held { pid: Option<u32> },
}

impl SpoolLock {
    /// Takes the lock on `dir` (created if missing), or refuses naming the holder.
    pub(crate) fn acquire(dir: &Path) -> Result<SpoolLock, SpoolError> {
        let path = dir.join(LOCK_FILE);
        let open_err = |source| SpoolError::Open {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(open_err)?;
        // `holder` (validate, status) takes a shared lock for an instant: a few
        // tries keep an agent starting at that moment from refusing.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tries < LOCK_TRIES => {
                    tries += 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(SpoolError::Locked {
                        path: dir.to_owned(),
                        pid: read_pid(&mut file),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(open_err(e)),
            }
        }
        // The pid is only for messages: a failure to write it (a full disk) must
        // not keep the agent from starting, since the lock is already held.
        let pid = std::process::id();
        let _ = file
            .set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(format!("{pid}\n").as_bytes()));
        Ok(SpoolLock { _file: file })
    }
}

/// Whether another process holds the lock of the spool at `dir`. Takes and
/// drops the lock at once when it is free; never creates anything.
pub(crate) fn holder(dir: &Path) -> LockState {
    let Ok(mut file) = OpenOptions::new().read(true).open(dir.join(LOCK_FILE)) else {
        return LockState::Free;
    };
    match file.try_lock_shared() {
        Err(TryLockError::WouldBlock) => LockState::Held {
            pid: read_pid(&mut file),
        },
        _ => LockState::Free,
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression (issue 22, N1): a second agent on the same spool moved the
    // running one's index aside and both appended to the same segments.
    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), LockState::Free);
        let first = SpoolLock::acquire(dir.path()).unwrap();
        let me = Some(std::process::id());
        assert_eq!(holder(dir.path()), LockState::Held { pid: me });
        match SpoolLock::acquire(dir.path()) {
            Err(SpoolError::Locked { pid, .. }) => assert_eq!(pid, me),
            other => panic!("a second lock was not refused: {other:?}"),
        }
        drop(first);
        assert_eq!(holder(dir.path()), LockState::Free);
        SpoolLock::acquire(dir.path()).unwrap();
    }
}
