//! A file's checkpoint: the consumed offset, the fingerprint and the tailed path,
//! stored in the spool with the records read up to it ([`Position`] is its value,
//! the file's [`FileId`] its name).
//!
//! State: none kept here; a [`Position`] is a value. Callers: batch.rs (the
//! checkpoint written with a batch), tailed.rs (a checkpoint alone), tailer.rs
//! (start-up reads them), open.rs and recovery.rs (whether a file is the one a
//! checkpoint was written for).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::producer::Checkpoint;

use super::identity::{fnv1a, read_head, Identity};
use super::CHECKPOINT_VERSION;

/// A decoded checkpoint value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    /// Consumed offset: everything before it is in the spool (or was skipped).
    pub(super) offset: u64,
    pub(super) fingerprint_len: u16,
    pub(super) fingerprint: u64,
    /// Where the file was last seen.
    pub(super) path: PathBuf,
}

impl Position {
    pub(super) fn encode(&self) -> Vec<u8> {
        let path = self.path.as_os_str().as_bytes();
        let mut v = Vec::with_capacity(19 + path.len());
        v.push(CHECKPOINT_VERSION);
        v.extend_from_slice(&self.offset.to_le_bytes());
        v.extend_from_slice(&self.fingerprint_len.to_le_bytes());
        v.extend_from_slice(&self.fingerprint.to_le_bytes());
        v.extend_from_slice(path);
        v
    }

    pub(super) fn decode(v: &[u8]) -> Option<Position> {
        if v.first() != Some(&CHECKPOINT_VERSION) || v.len() < 19 {
            return None;
        }
        Some(Position {
            offset: u64::from_le_bytes(v[1..9].try_into().ok()?),
            fingerprint_len: u16::from_le_bytes(v[9..11].try_into().ok()?),
            fingerprint: u64::from_le_bytes(v[11..19].try_into().ok()?),
            path: PathBuf::from(OsStr::from_bytes(&v[19..])),
        })
    }

    /// Whether `file` starts with the bytes this checkpoint's fingerprint is of.
    pub(super) fn same_start(&self, file: &File) -> bool {
        let len = self.fingerprint_len as usize;
        read_head(file, len).is_ok_and(|h| h.len() == len && fnv1a(&h) == self.fingerprint)
    }

    /// Whether `file` (of `size` bytes) is the one this checkpoint was written for:
    /// long enough, and starting as it did.
    pub(super) fn matches(&self, file: &File, size: u64) -> io::Result<bool> {
        if size < self.offset {
            return Ok(false);
        }
        let head = read_head(file, self.fingerprint_len as usize)?;
        Ok(head.len() == self.fingerprint_len as usize && fnv1a(&head) == self.fingerprint)
    }
}

/// The checkpoint of the file `identity` names, at consumed offset `offset`.
pub(super) fn checkpoint(identity: &Identity, offset: u64) -> Checkpoint {
    let (fingerprint_len, fingerprint) = identity.fingerprint().at(offset);
    Checkpoint {
        name: identity.checkpoint_id().checkpoint_name(),
        value: Position {
            offset,
            fingerprint_len,
            fingerprint,
            path: identity.tailed_path().to_owned(),
        }
        .encode(),
    }
}
