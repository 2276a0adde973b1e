//! A file's identity: its device and inode ([`FileId`]), the fingerprint of its
//! first bytes ([`Fingerprint`]) and the paths it is known by ([`Identity`]); and
//! finding a file again by them (a rotated file, the copy of a truncated one).
//!
//! State: an [`Identity`] belongs to one open file and is owned by its `Tailed`
//! (tailed.rs). Its fingerprint grows only through the reader (reader.rs), which
//! hands it the bytes it reads at their offsets, and is forgotten past a reset.
//! Callers: tailed.rs (the open file), reader.rs (the fingerprint), batch.rs and
//! checkpoint.rs (a checkpoint's name and fingerprint), tailer.rs (files by
//! [`FileId`]), open.rs and recovery.rs (`find_file`, `end_position`).

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{CHECKPOINT_PREFIX, END_LOOKBACK_BYTES, FINGERPRINT_BYTES};

/// Device and inode: a file while it lives, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct FileId {
    pub(super) dev: u64,
    pub(super) ino: u64,
}

impl FileId {
    pub(super) fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The checkpoint name of this file.
    pub(super) fn checkpoint_name(&self) -> Vec<u8> {
        let mut name = CHECKPOINT_PREFIX.to_vec();
        name.extend_from_slice(&self.dev.to_be_bytes());
        name.extend_from_slice(&self.ino.to_be_bytes());
        name
    }

    pub(super) fn from_checkpoint_name(name: &[u8]) -> Option<FileId> {
        let rest = name.strip_prefix(CHECKPOINT_PREFIX)?;
        if rest.len() != 16 {
            return None;
        }
        Some(FileId {
            dev: u64::from_be_bytes(rest[..8].try_into().ok()?),
            ino: u64::from_be_bytes(rest[8..].try_into().ok()?),
        })
    }
}

/// The first bytes of a file as far as they were read:
/// `file[..min(FINGERPRINT_BYTES, bytes read from offset 0)]`. A file whose start
/// no longer matches them was truncated (copytruncate) or replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Fingerprint {
    head: Vec<u8>,
}

impl Fingerprint {
    /// The first `min(upto, FINGERPRINT_BYTES)` bytes of `file` (fewer if it is
    /// shorter): the fingerprint of a file read up to `upto`.
    pub(super) fn read(file: &File, upto: u64) -> io::Result<Fingerprint> {
        let n = usize::try_from(upto).unwrap_or(usize::MAX);
        Ok(Fingerprint {
            head: read_head(file, n.min(FINGERPRINT_BYTES))?,
        })
    }

    /// A fingerprint of exactly these bytes (read from a copy of the file).
    pub(super) fn from_head(head: Vec<u8>) -> Fingerprint {
        Fingerprint { head }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.head
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head.is_empty()
    }

    /// `data` was read at `offset`: the part of it that continues the head is kept.
    #[inline]
    pub(super) fn observe(&mut self, offset: u64, data: &[u8]) {
        if self.head.len() < FINGERPRINT_BYTES && offset == self.head.len() as u64 {
            let take = data.len().min(FINGERPRINT_BYTES - self.head.len());
            self.head.extend_from_slice(&data[..take]);
        }
    }

    /// The file is read again from `pos`: bytes past it are not known any more.
    pub(super) fn forget_from(&mut self, pos: u64) {
        if (pos as usize) < self.head.len() {
            self.head.truncate(pos as usize);
        }
    }

    /// The length and FNV-1a hash of the bytes a checkpoint at `offset` carries:
    /// the first `min(FINGERPRINT_BYTES, offset)` (the bytes already consumed).
    pub(super) fn at(&self, offset: u64) -> (u16, u64) {
        let len = (offset as usize)
            .min(FINGERPRINT_BYTES)
            .min(self.head.len());
        (len as u16, fnv1a(&self.head[..len]))
    }

    /// Whether `file` still starts with these bytes.
    pub(super) fn matches(&self, file: &File) -> io::Result<bool> {
        Ok(read_head(file, self.head.len())? == self.head)
    }
}

/// One open file's names and identity: the handle's device and inode, the
/// checkpoint it carries, the path it is read at and the included path it was
/// found at, and its fingerprint.
#[derive(Debug)]
pub(super) struct Identity {
    /// Identity of the open handle.
    id: FileId,
    /// Whose checkpoint this file carries: its own, or (reading a copy of a file
    /// truncated while the agent was stopped) the original's.
    checkpoint_id: FileId,
    /// Where the file is read now.
    path: PathBuf,
    /// The included path it was found at, kept in its checkpoint (a rotated file's
    /// new name is usually not included; start-up looks for it near this path).
    tailed_path: PathBuf,
    /// Its first bytes, as far as they were read.
    fingerprint: Fingerprint,
}

impl Identity {
    pub(super) fn new(
        id: FileId,
        checkpoint_id: FileId,
        path: PathBuf,
        tailed_path: PathBuf,
    ) -> Identity {
        Identity {
            id,
            checkpoint_id,
            path,
            tailed_path,
            fingerprint: Fingerprint::default(),
        }
    }

    pub(super) fn id(&self) -> FileId {
        self.id
    }

    pub(super) fn checkpoint_id(&self) -> FileId {
        self.checkpoint_id
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn tailed_path(&self) -> &Path {
        &self.tailed_path
    }

    pub(super) fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// For the reader (the only one that reads the file's first bytes) and for a
    /// reset or a copy, which replace them.
    pub(super) fn fingerprint_mut(&mut self) -> &mut Fingerprint {
        &mut self.fingerprint
    }

    /// The file was renamed to another included path: it is read and checkpointed
    /// under that one now.
    pub(super) fn renamed(&mut self, path: PathBuf) {
        self.tailed_path = path.clone();
        self.path = path;
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms (the fingerprint is
/// stored; `line_hash` keys must not change between releases).
pub(super) fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The first `n` bytes of a file (fewer if it is shorter).
pub(super) fn read_head(file: &File, n: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// Where `read_from = "end"` starts: after the last newline near the end.
pub(super) fn end_position(file: &File, size: u64) -> io::Result<u64> {
    let from = size.saturating_sub(END_LOOKBACK_BYTES);
    let mut tail = vec![0u8; (size - from) as usize];
    file.read_exact_at(&mut tail, from)?;
    Ok(match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => from + i as u64 + 1,
        None => size,
    })
}

/// The newest regular file in `near`'s directory for which `accept` holds.
pub(super) fn find_file(
    near: &Path,
    mut accept: impl FnMut(&File, &Metadata) -> bool,
) -> Option<(PathBuf, File)> {
    let dir = near.parent()?;
    let mut best: Option<(SystemTime, PathBuf, File)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // The handle's metadata: the file may have been replaced in between.
        let Ok(meta) = file.metadata() else { continue };
        if !accept(&file, &meta) {
            continue;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _, _)| mtime > *t) {
            best = Some((mtime, path, file));
        }
    }
    best.map(|(_, p, f)| (p, f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_fingerprint_keeps_only_bytes_that_continue_the_head() {
        let mut f = Fingerprint::default();
        f.observe(0, b"abc");
        // Not contiguous: a read that resumed past the head adds nothing.
        f.observe(10, b"zzz");
        f.observe(3, b"de");
        assert_eq!(f.bytes(), b"abcde");
        let big = vec![b'x'; 2 * FINGERPRINT_BYTES];
        f.observe(5, &big);
        assert_eq!(f.bytes().len(), FINGERPRINT_BYTES);
        // A checkpoint carries only the bytes before its offset.
        assert_eq!(f.at(2), (2, fnv1a(b"ab")));
        assert_eq!(f.at(1 << 20).0 as usize, FINGERPRINT_BYTES);
        f.forget_from(3);
        assert_eq!(f.bytes(), b"abc");
        f.forget_from(100);
        assert_eq!(f.bytes(), b"abc");
    }

    #[test]
    fn a_rewritten_start_no_longer_matches_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"first line\nsecond\n").unwrap();
        let file = File::open(&path).unwrap();
        let f = Fingerprint::read(&file, 6).unwrap();
        assert_eq!(f.bytes(), b"first ");
        assert!(f.matches(&file).unwrap());
        // copytruncate, and the writer goes on past the old position.
        std::fs::write(&path, b"").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"other line\n")
            .unwrap();
        assert!(!f.matches(&file).unwrap());
        assert_eq!(end_position(&file, 11).unwrap(), 11);
    }
}
