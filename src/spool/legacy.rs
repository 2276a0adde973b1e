//! Reading a spool written by shardline 0.1, where sled held the records, and
//! moving it to the current layout on the first open. Owns no state beyond the
//! migration in hand; called by the spool's open (`open.rs`) only.
//!
//! 0.1 kept one sled tree per stream (`stream/<name>`), keys a namespace byte and a
//! big-endian id: `0x00 id` an entry (version byte 1, record count u32, spool
//! time u64, then bincode), `0x00 id chunk` the same value cut in 4 KiB pieces,
//! `0x01 id` the progress bitmap of a partly delivered entry (version byte, u64
//! words), `0x02 name` a checkpoint, `0x04` the summary a clean stop left (version
//! byte, then the last entry id, the bytes and the records held, u64 each).
//! Every record not yet delivered is written to the new layout once, with the
//! checkpoints.
//!
//! # Never a silent loss
//!
//! sled reads a log cut short (a truncated or damaged file) as a shorter database
//! without a word, and rewrites the torn tail in place on open. So the migration
//! reads a copy of the old files, never the files themselves, and checks what it
//! read against the summary of each stream: a stream without one (0.1 did not stop
//! cleanly, or the end of its log is lost), a summary that does not match what was
//! found, an entry that does not decode, an empty database or one sled cannot open
//! all mean the database did not read whole. Then what could be read is migrated,
//! the old files are moved to `damaged/` untouched and an ERROR names every
//! problem; otherwise they are removed.
//!
//! # Crashes
//!
//! The new layout is made durable before the old files are removed or moved, and
//! the format file is written after that, so a crash during the migration starts
//! it again from the old files. 0.1 files beside a current spool (0.1 run again on
//! the directory after an upgrade, or a crash of 0.2.0, which wrote the format file
//! first) are migrated again into it: their records are appended, so some may be
//! sent twice, none is lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::format::{open_error, write_format};
use super::{now_ms, Checkpoint, Fs, Spool, SpoolError, SpoolOptions};
use crate::record::UserRecord;

const V1: u8 = 1;
const NS_ENTRY: u8 = 0x00;
const NS_PROGRESS: u8 = 0x01;
const NS_CHECKPOINT: u8 = 0x02;
const NS_SUMMARY: u8 = 0x04;
/// Where the old files are copied to be read (sled writes to what it opens).
const WORK_DIR: &str = "migrating-0.1";
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

/// The record count in an entry's header.
fn count(v: &[u8]) -> usize {
    v.get(1..5).map_or(0, |c| {
        u32::from_le_bytes(c.try_into().expect("four bytes")) as usize
    })
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
            Ok((entry, used)) if used == whole.len() && entry.records.len() == count(v) => {
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
            Ok((entry, used)) if used == whole.len() => {
                error = format!(
                    "holds {} records where its header says {}",
                    entry.records.len(),
                    count(v)
                )
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

/// Whether a 0.1 file (sled's own) is named `name`.
fn is_old_file(name: &str) -> bool {
    name == "conf" || name == "db" || name == "blobs" || name.starts_with("snap.")
}

/// The 0.1 files in `dir`, `conf` first: a crash that leaves part of them
/// leaves no `conf`, and so no second migration of a half-removed database.
fn old_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(names) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = names
        .flatten()
        .filter(|e| is_old_file(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    files.sort_by_key(|p| p.file_name().is_none_or(|n| n != "conf"));
    files
}

fn remove_old_files(dir: &Path) {
    for path in old_files(dir) {
        if path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Moves the 0.1 files to `damaged/0.1-<ms>/`, as they were.
fn keep_old_files(dir: &Path) -> std::io::Result<PathBuf> {
    let kept = dir.join("damaged").join(format!("0.1-{}", now_ms()));
    std::fs::create_dir_all(&kept)?;
    for path in old_files(dir) {
        let name = path.file_name().expect("read_dir gives named entries");
        std::fs::rename(&path, kept.join(name))?;
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(kept)
}

/// Copies the 0.1 files to `to` (sled rewrites a torn log in place when it
/// opens it: the originals are the evidence of what was lost).
fn copy_old_files(dir: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for path in old_files(dir) {
        let name = path.file_name().expect("read_dir gives named entries");
        if path.is_dir() {
            copy_dir(&path, &to.join(name))?;
        } else {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
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

/// Where a migration writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// A directory without the current layout: a partial one is a migration cut
    /// short, started again.
    Fresh,
    /// A current spool: the old records are appended to it.
    Beside,
}

/// What a stream's tree holds, in the terms of the 0.1 summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    last: u64,
    bytes: u64,
    records: u64,
}

impl Tally {
    fn summary(v: &[u8]) -> Option<Tally> {
        let field = |i: usize| {
            Some(u64::from_le_bytes(
                v.get(1 + 8 * i..9 + 8 * i)?.try_into().ok()?,
            ))
        };
        match v.first() {
            Some(&V1) if v.len() == 25 => Some(Tally {
                last: field(0)?,
                bytes: field(1)?,
                records: field(2)?,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "last entry {}, {} bytes, {} records",
            self.last, self.bytes, self.records
        )
    }
}

/// What reading the old database gave: the counts migrated and every reason
/// to doubt it read whole.
#[derive(Debug, Default)]
struct Reading {
    entries: u64,
    records: u64,
    problems: Vec<String>,
}

/// Moves the 0.1 spool at `dir` to the current layout (see the module docs).
pub(super) fn migrate(
    dir: &Path,
    options: &SpoolOptions,
    target: Target,
) -> Result<(), SpoolError> {
    match target {
        Target::Fresh => {
            tracing::info!(path = %dir.display(), "Migrating a spool written by shardline 0.1 to the segment layout");
            let _ = std::fs::remove_dir_all(dir.join("streams"));
            let _ = std::fs::remove_dir_all(dir.join("index"));
        }
        Target::Beside => {
            tracing::warn!(path = %dir.display(),
                "Found a spool written by shardline 0.1 beside the current one (0.1 ran on this directory again, or a migration was cut short); its records are added to the current spool, so some may be sent twice");
        }
    }
    let work = dir.join(WORK_DIR);
    let _ = std::fs::remove_dir_all(&work);
    if let Err(source) = copy_old_files(dir, &work) {
        // A full disk, say: nothing is touched, the next start tries again.
        let _ = std::fs::remove_dir_all(&work);
        return Err(open_error(&work, source));
    }
    let new = Spool::open_layout(Arc::new(Fs), dir, options)?;
    let read = read_all(dir, &work, options, &new);
    let synced = new.sync_now();
    drop(new);
    let _ = std::fs::remove_dir_all(&work);
    let read = read?;
    synced?;
    if read.problems.is_empty() {
        remove_old_files(dir);
        tracing::info!(path = %dir.display(), entries = read.entries, records = read.records, "Migrated the 0.1 spool");
    } else {
        let kept = keep_old_files(dir).map_err(|source| open_error(dir, source))?;
        tracing::error!(path = %dir.display(), kept_at = %kept.display(),
            entries = read.entries, records = read.records, error = %read.problems.join("; "),
            "The spool written by shardline 0.1 does not read whole: the records that could be read are migrated, any others are lost unless recovered from the files kept");
    }
    if target == Target::Fresh {
        write_format(&Fs, dir).map_err(|source| open_error(dir, source))?;
    }
    Ok(())
}

/// Reads the old database copied to `work` into `new`.
fn read_all(
    dir: &Path,
    work: &Path,
    options: &SpoolOptions,
    new: &Spool,
) -> Result<Reading, SpoolError> {
    let mut read = Reading::default();
    if std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() == 0) {
        // sled would open it as a new, empty database.
        read.problems.push("its database file 'db' is empty".into());
        return Ok(read);
    }
    let old = match sled::Config::new()
        .path(work)
        .cache_capacity(options.cache_capacity_bytes)
        .open()
    {
        Ok(old) => old,
        Err(e) => {
            read.problems.push(format!("sled cannot open it: {e}"));
            return Ok(read);
        }
    };
    let mut streams = 0;
    for name in old.tree_names() {
        let Some(stream) = name.strip_prefix(b"stream/") else {
            continue;
        };
        streams += 1;
        let stream = String::from_utf8_lossy(stream).into_owned();
        let tree = old.open_tree(&name)?;
        read_stream(&stream, &tree, new, &mut read)?;
    }
    if streams == 0 {
        // 0.1 made the tree of its destination stream on its first start.
        read.problems.push("it holds no stream".into());
    }
    Ok(read)
}

/// Reads one stream's tree into `new` and checks it against its summary.
fn read_stream(
    stream: &str,
    tree: &sled::Tree,
    new: &Spool,
    read: &mut Reading,
) -> Result<(), SpoolError> {
    let target = new.stream(stream)?;
    let mut found = Tally::default();
    let mut value: Vec<u8> = Vec::new();
    let mut current: Option<u64> = None;
    let flush = |id: Option<u64>, value: &mut Vec<u8>, found: &mut Tally, read: &mut Reading| {
        let Some(id) = id else { return Ok(()) };
        let all = match decode(id, value) {
            Ok(r) => r,
            Err(e) => {
                read.problems.push(format!("stream '{stream}': {e}"));
                value.clear();
                return Ok(());
            }
        };
        let left = undelivered(tree, id, all)?;
        if !left.is_empty() {
            found.records += left.len() as u64;
            read.records += left.len() as u64;
            read.entries += 1;
            // The old spool's bound is not this one's: the migration
            // writes everything it held.
            target.write_unbounded(&left)?;
        }
        value.clear();
        Ok::<(), SpoolError>(())
    };
    for kv in tree.range([NS_ENTRY].as_slice()..[NS_PROGRESS].as_slice()) {
        let (k, v) = kv?;
        let Some(id) = id_of(&k) else { continue };
        found.last = found.last.max(id);
        found.bytes += v.len() as u64;
        if current != Some(id) {
            flush(current, &mut value, &mut found, read)?;
            current = Some(id);
        }
        // A whole value, or the next chunk of one (keys sort chunks in order).
        value.extend_from_slice(&v);
    }
    flush(current, &mut value, &mut found, read)?;
    for kv in tree.scan_prefix([NS_CHECKPOINT]) {
        let (k, v) = kv?;
        target.set_checkpoint(&Checkpoint {
            name: k[1..].to_vec(),
            value: v.to_vec(),
        })?;
    }
    match tree.get([NS_SUMMARY])? {
        None => read.problems.push(format!(
            "stream '{stream}' has no summary of a clean stop to check what was found ({found}) against: 0.1 stopped without one, or the end of its log is lost"
        )),
        Some(v) => match Tally::summary(&v) {
            None => read
                .problems
                .push(format!("stream '{stream}' has a summary that cannot be read")),
            Some(summary) if summary != found => read.problems.push(format!(
                "stream '{stream}' held {summary} at its last clean stop, but {found} are found"
            )),
            Some(_) => {}
        },
    }
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
