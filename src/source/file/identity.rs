//! File identity: device and inode, the fingerprint of a file's first bytes, and
//! finding a file again by them.

use super::*;

/// Device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub(super) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The checkpoint name of this file.
    pub fn checkpoint_name(&self) -> Vec<u8> {
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

/// FNV-1a, 64 bits: stable across versions and platforms (the fingerprint is
/// stored; `line_hash` keys must not change between releases).
pub fn fnv1a(data: &[u8]) -> u64 {
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
    mut accept: impl FnMut(&File, &std::fs::Metadata) -> bool,
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
