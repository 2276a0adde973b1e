//! Whether another process holds a file open for writing, as far as `/proc`
//! lets the agent see: each process's open descriptors (`/proc/<pid>/fd`) that
//! lead to the file, and their access mode (`/proc/<pid>/fdinfo`). A process
//! whose descriptors the agent may not read (another user's, without
//! `CAP_SYS_PTRACE`) is not seen; that is why a file must also have gone
//! unwritten for a quiet period before it is deleted.
//!
//! State: none. Callers: cleanup.rs, before a file is deleted.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::identity::FileId;

/// What the scan of `/proc` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writers {
    /// A process other than this one has the file open for writing.
    Found { pid: u32 },
    /// None that the agent can see.
    NoneSeen,
    /// `/proc` cannot be read: nothing can be told.
    Unknown,
}

/// Looks through `proc` (`/proc`) for a process other than this one that has
/// the file `id` open for writing.
pub(super) fn writers(proc: &Path, id: FileId) -> Writers {
    let Ok(entries) = fs::read_dir(proc) else {
        return Writers::Unknown;
    };
    let own = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        if holds_for_writing(&entry.path(), id) {
            return Writers::Found { pid };
        }
    }
    Writers::NoneSeen
}

/// Whether the process at `dir` (`/proc/<pid>`) has a descriptor open for
/// writing that leads to `id`.
fn holds_for_writing(dir: &Path, id: FileId) -> bool {
    let Ok(fds) = fs::read_dir(dir.join("fd")) else {
        return false;
    };
    for fd in fds.flatten() {
        // The link's target, through the descriptor itself: right even when the
        // file was renamed or deleted since it was opened.
        let Ok(meta) = fs::metadata(fd.path()) else {
            continue;
        };
        if meta.dev() != id.dev || meta.ino() != id.ino {
            continue;
        }
        let info = fs::read_to_string(dir.join("fdinfo").join(fd.file_name()));
        // Unreadable flags: counted as a writer, the safe side.
        if info.map_or(true, |i| writes(&i)) {
            return true;
        }
    }
    false
}

/// Whether the `flags:` line of an fdinfo file has write access (O_WRONLY or
/// O_RDWR); flags are octal.
fn writes(fdinfo: &str) -> bool {
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
    match flags {
        Some(f) => f & (libc::O_ACCMODE as u32) != libc::O_RDONLY as u32,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, OpenOptions};

    #[test]
    fn the_access_mode_is_read_from_the_flags() {
        assert!(!writes("pos:\t0\nflags:\t0100000\nmnt_id:\t25\n"));
        assert!(writes("pos:\t0\nflags:\t0102001\n"));
        assert!(writes("pos:\t0\nflags:\t02\n"));
        assert!(writes("garbled"));
    }

    #[test]
    fn a_child_holding_the_file_for_writing_is_seen_and_a_reader_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one-shot.json");
        std::fs::write(&path, b"{}\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let proc = Path::new("/proc");
        // This process's own descriptors never count.
        let _own = OpenOptions::new().append(true).open(&path).unwrap();
        assert_eq!(writers(proc, id), Writers::NoneSeen);
        // Another process reading it: not a writer.
        let reader = std::process::Command::new("sleep")
            .arg("30")
            .stdin(File::open(&path).unwrap())
            .spawn()
            .unwrap();
        assert_eq!(writers(proc, id), Writers::NoneSeen);
        let writer = std::process::Command::new("sleep")
            .arg("30")
            .stdout(OpenOptions::new().append(true).open(&path).unwrap())
            .spawn()
            .unwrap();
        assert_eq!(writers(proc, id), Writers::Found { pid: writer.id() });
        for mut child in [reader, writer] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_eq!(writers(proc, id), Writers::NoneSeen);
        assert_eq!(writers(Path::new("/nonexistent"), id), Writers::Unknown);
    }
}
