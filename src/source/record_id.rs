//! Record ids: one per record, fixed before the record reaches the spool, so
//! every copy delivery makes of it (a retry, a replay after a crash) carries the
//! same one.
//!
//! An id is `<origin>-<position>`: `origin` is 16 hex digits of the MD5 of
//! where the record comes from (the host and a file's identity, a journal's
//! sequence number id, a socket connection of this run), `position` where the
//! record is in it (the byte offset where a file's line ends, the journal's
//! sequence number, the record's number on its connection). A line cut into
//! several records gives the ones after the first `.1`, `.2`, ... A client of
//! the framed protocol may give its own id instead.
//!
//! The origin is computed once per file, journal or connection; per record only
//! the position is written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};

use crate::source::format::host_name;

pub(crate) use crate::record::RECORD_ID_ROOM as ID_ROOM;
/// Longest id a framed client may give.
pub(crate) const MAX_CLIENT_ID: usize = 64;

/// 16 hex digits of the MD5 of `parts`, each ended by a zero byte.
pub(crate) fn origin(parts: &[&[u8]]) -> String {
    let mut md5 = Md5::new();
    for p in parts {
        md5.update(p);
        md5.update([0u8]);
    }
    let digest = md5.finalize();
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The origin of a socket connection of this run: the host, this process's
/// run (a random number drawn at start) and the connection's number.
pub(crate) fn connection_origin(block: &str) -> String {
    static RUN: OnceLock<u64> = OnceLock::new();
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    let run = *RUN.get_or_init(|| fastrand::u64(..));
    let n = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    origin(&[
        host_name().as_bytes(),
        block.as_bytes(),
        &run.to_le_bytes(),
        &n.to_le_bytes(),
    ])
}

/// The ids of one socket connection (or datagram socket): its origin and the
/// number of the next record.
#[derive(Debug)]
pub(crate) struct Counter {
    origin: String,
    next: u64,
    id: Vec<u8>,
    prefixer: Prefixer,
}

impl Counter {
    /// The ids of a new connection of `block`.
    pub(crate) fn new(block: &str) -> Counter {
        Counter {
            origin: connection_origin(block),
            next: 0,
            id: Vec::new(),
            prefixer: Prefixer::default(),
        }
    }

    /// The id of the next record.
    pub(crate) fn next_id(&mut self) -> &[u8] {
        write(&mut self.id, &self.origin, self.next);
        self.next += 1;
        &self.id
    }

    /// `data` as a raw record with the next id before it.
    pub(crate) fn prefix_next(&mut self, data: &[u8]) -> Bytes {
        write(&mut self.id, &self.origin, self.next);
        self.next += 1;
        self.prefixer.prefixed(&self.id, 0, data)
    }
}

/// The origin of the last key asked for, kept: the entries of one journal
/// share one, so its MD5 is computed once, not per entry.
#[derive(Debug, Default)]
pub(crate) struct LastOrigin {
    key: String,
    origin: String,
}

impl LastOrigin {
    /// The origin of `key` alone.
    pub(crate) fn of(&mut self, key: &str) -> &str {
        if self.origin.is_empty() || self.key != key {
            self.key = key.to_owned();
            self.origin = origin(&[key.as_bytes()]);
        }
        &self.origin
    }
}

/// Writes `origin-position` into `out` (cleared first).
pub(crate) fn write(out: &mut Vec<u8>, origin: &str, position: u64) {
    out.clear();
    out.extend_from_slice(origin.as_bytes());
    out.push(b'-');
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = position;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A raw record with its id: the id, with `.piece` after the first piece of a
/// cut line, a space, then the data.
pub(crate) fn prefixed(id: &[u8], piece: usize, data: &[u8]) -> Bytes {
    prefix_into(&mut BytesMut::new(), id, piece, data)
}

/// Raw records with their ids, written into shared buffers of 16 KiB split off
/// as they are done: one allocation for some fifty records of a few hundred
/// bytes, not one each.
#[derive(Debug, Default)]
pub(crate) struct Prefixer {
    arena: BytesMut,
}

impl Prefixer {
    /// [`prefixed`], from the arena.
    pub(crate) fn prefixed(&mut self, id: &[u8], piece: usize, data: &[u8]) -> Bytes {
        prefix_into(&mut self.arena, id, piece, data)
    }
}

fn prefix_into(out: &mut BytesMut, id: &[u8], piece: usize, data: &[u8]) -> Bytes {
    let need = id.len() + 12 + data.len();
    if out.capacity() < need {
        *out = BytesMut::with_capacity(need.max(16 * 1024));
    }
    out.put_slice(id);
    if piece > 0 {
        out.put_u8(b'.');
        out.put_slice(piece.to_string().as_bytes());
    }
    out.put_u8(b' ');
    out.put_slice(data);
    out.split().freeze()
}

/// Checks an id a framed client gives: 1 to [`MAX_CLIENT_ID`] bytes of ASCII
/// letters, digits and `-._:`, so it needs no escaping anywhere.
pub(crate) fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID {
        return Err(format!(
            "record id of {} bytes is not 1 to {MAX_CLIENT_ID} bytes",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._:".contains(*c)))
    {
        return Err(format!(
            "record id {:?} holds {c:?}; ids are ASCII letters, digits and -._:",
            crate::record::excerpt(id)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_origin_and_position() {
        let o = origin(&[b"host", b"file"]);
        assert_eq!(o.len(), 16);
        assert_eq!(o, origin(&[b"host", b"file"]));
        assert_ne!(o, origin(&[b"hostf", b"ile"]));
        let mut out = Vec::new();
        write(&mut out, &o, 0);
        assert_eq!(out, format!("{o}-0").as_bytes());
        write(&mut out, &o, u64::MAX);
        assert_eq!(out, format!("{o}-{}", u64::MAX).as_bytes());
    }

    #[test]
    fn the_last_origin_is_kept_and_follows_its_key() {
        let mut last = LastOrigin::default();
        assert_eq!(last.of("s1"), origin(&[b"s1"]));
        assert_eq!(last.of("s1"), origin(&[b"s1"]));
        assert_eq!(last.of("s2"), origin(&[b"s2"]));
    }

    #[test]
    fn connections_get_distinct_origins() {
        assert_ne!(
            connection_origin("socket[0]"),
            connection_origin("socket[0]")
        );
    }

    #[test]
    fn raw_records_carry_the_id_and_a_space() {
        assert_eq!(&prefixed(b"ab-1", 0, b"line")[..], b"ab-1 line");
        assert_eq!(&prefixed(b"ab-1", 2, b"line")[..], b"ab-1.2 line");
    }

    #[test]
    fn client_ids_are_checked() {
        assert!(check_client_id("order-17:a.b_c").is_ok());
        assert!(check_client_id("").is_err());
        assert!(check_client_id("a b").is_err());
        assert!(check_client_id("\"").is_err());
        assert!(check_client_id(&"a".repeat(MAX_CLIENT_ID + 1)).is_err());
    }
}
