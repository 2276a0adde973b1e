//! Reading a spool written by shardline 0.1, where sled held the records, and
//! moving it to the current layout on the first open.
//!
//! 0.1 kept one sled tree per stream (`stream/<name>`), keys a namespace byte and a
//! big-endian id: `0x00 id` an entry (version byte 1, record count u32, spool
//! time u64, then bincode), `0x00 id chunk` the same value cut in 4 KiB pieces,
//! `0x01 id` the progress bitmap of a partly delivered entry (version byte, u64
//! words), `0x02 name` a checkpoint. Every record not yet delivered is written
//! to the new layout once, with the checkpoints; the new format file is written
//! last, so a crash during the migration starts it again from the old files,
//! which are removed only after it.

use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;

use super::{Checkpoint, Spool, SpoolError, SpoolOptions};
use crate::record::UserRecord;

const V1: u8 = 1;
const NS_ENTRY: u8 = 0x00;
const NS_PROGRESS: u8 = 0x01;
const NS_CHECKPOINT: u8 = 0x02;
const HEADER_BYTES: usize = 1 + 4 + 8;
/// The header before the spool time was added to it.
const OLD_HEADER_BYTES: usize = 1 + 4;

#[derive(Deserialize)]
struct StoredRecord<'a> {
    partition_key: &'a str,
    explicit_hash_key: Option<u128>,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

#[derive(Deserialize)]
struct EntryV1<'a> {
    #[allow(dead_code)]
    stream: &'a str,
    #[serde(borrow)]
    records: Vec<StoredRecord<'a>>,
}

fn corrupt(id: u64, reason: impl Into<String>) -> SpoolError {
    SpoolError::Corrupt {
        id,
        reason: reason.into(),
    }
}

/// Decodes a 0.1 entry value.
fn decode(id: u64, v: &[u8]) -> Result<Vec<UserRecord>, SpoolError> {
    match v.first() {
        Some(&V1) if v.len() >= HEADER_BYTES => {}
        Some(&V1) => return Err(corrupt(id, "truncated header")),
        Some(other) => return Err(corrupt(id, format!("unknown format version {other}"))),
        None => return Err(corrupt(id, "empty value")),
    }
    // The header grew from 5 bytes (version, count) to 13 (and a spool time)
    // without a version change: an entry that does not decode after 13 bytes is
    // tried after 5.
    let mut decoded = None;
    let mut error = String::new();
    for header in [HEADER_BYTES, OLD_HEADER_BYTES] {
        let whole = Bytes::copy_from_slice(&v[header..]);
        match bincode::serde::borrow_decode_from_slice::<EntryV1<'_>, _>(
            &whole,
            bincode::config::standard(),
        ) {
            Ok((entry, used)) if used == whole.len() => {
                let records: Vec<UserRecord> = entry
                    .records
                    .iter()
                    .map(|r| UserRecord {
                        partition_key: r.partition_key.to_owned(),
                        explicit_hash_key: r.explicit_hash_key,
                        data: whole.slice_ref(r.data),
                    })
                    .collect();
                decoded = Some(records);
                break;
            }
            Ok(_) => error = "trailing bytes".into(),
            Err(e) => error = e.to_string(),
        }
    }
    decoded.ok_or_else(|| corrupt(id, error))
}

fn id_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(1..9)?.try_into().ok()?))
}

/// The files of a 0.1 spool (sled's own), removed once migrated.
pub(super) fn remove_old_files(dir: &Path) {
    let Ok(names) = std::fs::read_dir(dir) else {
        return;
    };
    for e in names.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name == "conf" || name == "db" || name.starts_with("snap.") {
            let _ = std::fs::remove_file(&path);
        } else if name == "blobs" {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The records of entry `id` its progress bitmap does not mark delivered.
fn undelivered(
    tree: &sled::Tree,
    id: u64,
    all: Vec<UserRecord>,
) -> Result<Vec<UserRecord>, SpoolError> {
    let bits: Vec<u64> = match tree.get([&[NS_PROGRESS][..], &id.to_be_bytes()].concat())? {
        Some(p) if p.first() == Some(&V1) && (p.len() - 1) % 8 == 0 => p[1..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("eight bytes")))
            .collect(),
        _ => Vec::new(),
    };
    let delivered = |i: usize| bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
    Ok(all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !delivered(*i))
        .map(|(_, r)| r)
        .collect())
}

/// Moves a 0.1 spool at `dir` to the current layout.
pub(super) fn migrate(dir: &Path, options: &SpoolOptions) -> Result<(), SpoolError> {
    tracing::info!(path = %dir.display(), "Migrating a spool written by shardline 0.1 to the segment layout");
    // A migration cut short leaves a partial new layout: it starts again.
    let _ = std::fs::remove_dir_all(dir.join("streams"));
    let _ = std::fs::remove_dir_all(dir.join("index"));
    let old = sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_capacity_bytes)
        .open()
        .map_err(SpoolError::Index)?;
    let new = Spool::open_layout(std::sync::Arc::new(super::Fs), dir, options)?;
    let (mut entries, mut records) = (0u64, 0u64);
    for name in old.tree_names() {
        let Some(stream) = name.strip_prefix(b"stream/") else {
            continue;
        };
        let stream = String::from_utf8_lossy(stream).into_owned();
        let tree = old.open_tree(&name)?;
        let target = new.stream(&stream)?;
        let mut value: Vec<u8> = Vec::new();
        let mut current: Option<u64> = None;
        let mut flush = |id: Option<u64>, value: &mut Vec<u8>| -> Result<(), SpoolError> {
            let Some(id) = id else { return Ok(()) };
            let all = match decode(id, value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(stream = %stream, entry = id, error = %e,
                        "A spool entry written by shardline 0.1 cannot be read; its records are lost");
                    value.clear();
                    return Ok(());
                }
            };
            let left = undelivered(&tree, id, all)?;
            if !left.is_empty() {
                records += left.len() as u64;
                entries += 1;
                // The old spool's bound is not this one's: the migration
                // writes everything it held.
                target.write_unbounded(&left)?;
            }
            value.clear();
            Ok(())
        };
        for kv in tree.range([NS_ENTRY].as_slice()..[NS_PROGRESS].as_slice()) {
            let (k, v) = kv?;
            let Some(id) = id_of(&k) else { continue };
            if current != Some(id) {
                flush(current, &mut value)?;
                current = Some(id);
            }
            // A whole value, or the next chunk of one (keys sort chunks in order).
            value.extend_from_slice(&v);
        }
        flush(current, &mut value)?;
        for kv in tree.scan_prefix([NS_CHECKPOINT]) {
            let (k, v) = kv?;
            target.set_checkpoint(&Checkpoint {
                name: k[1..].to_vec(),
                value: v.to_vec(),
            })?;
        }
    }
    new.sync_now()?;
    drop(new);
    drop(old);
    super::write_format(&super::Fs, dir).map_err(|source| SpoolError::Open {
        path: dir.to_owned(),
        source,
    })?;
    remove_old_files(dir);
    tracing::info!(path = %dir.display(), entries, records, "Migrated the 0.1 spool");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Rec<'a> {
        partition_key: &'a str,
        explicit_hash_key: Option<u128>,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
    }

    #[derive(serde::Serialize)]
    struct Entry<'a> {
        stream: &'a str,
        records: Vec<Rec<'a>>,
    }

    /// Regression: entries written before the spool time joined the header (5
    /// bytes, same version byte) were misread as if it were there.
    #[test]
    fn entries_with_the_old_5_byte_header_are_read_too() {
        let body = bincode::serde::encode_to_vec(
            Entry {
                stream: "s",
                records: vec![Rec {
                    partition_key: "k",
                    explicit_hash_key: Some(7),
                    data: b"old",
                }],
            },
            bincode::config::standard(),
        )
        .unwrap();
        let mut old = vec![V1];
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&body);
        let mut new = old.clone();
        new.splice(5..5, 42u64.to_le_bytes());
        for v in [old, new] {
            let r = decode(1, &v).unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(
                (
                    &r[0].partition_key[..],
                    r[0].explicit_hash_key,
                    &r[0].data[..]
                ),
                ("k", Some(7), &b"old"[..])
            );
        }
    }
}
