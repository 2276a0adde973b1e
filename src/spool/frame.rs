//! The bytes of segment and ack files: CRC-framed records of a few kinds.
//!
//! Every frame is `magic (4) | body length (u32 LE) | crc32c (u32 LE) | body`,
//! the CRC covering the length and the body, the body's first byte its kind. The
//! magic lets a reader that met a damaged frame find the next good one; the CRC
//! tells a torn or damaged frame from a good one. Numbers are little-endian.
//!
//! Kinds:
//! - [`HEADER`]: first frame of every file: format version, file role, stream
//!   name and segment sequence number. A version this binary does not know is
//!   refused, never guessed at.
//! - [`ENTRY`]: one batch entry: id, spool time, records, and the source
//!   checkpoint written with them (optional).
//! - [`CHECKPOINT`]: a checkpoint set or removed alone.
//! - [`FOOTER`]: written when a segment is sealed: where every entry is, and the
//!   last checkpoint values the segment holds, so an open reads no entry.
//! - [`FACT`] and [`GONE`] (a stream's manifest only): how far a segment was
//!   synced and how many undelivered records it held then, or that it was
//!   removed. Added within format 2: a binary that does not know them never
//!   opens the manifest.
//! - [`DONE`], [`PROGRESS`]: acks (in ack files): entries retired, and the
//!   records already accepted of a partly delivered entry.
//! - [`TABLE`]: the checkpoint table carried forward (in the checkpoint file).
//!
//! Owns no state: functions from bytes to bytes. Only the spool's own files
//! (`stream/`, `legacy.rs`) call it; nothing outside `spool` reads these bytes.

use bytes::Bytes;

use crate::record::UserRecord;

pub(crate) const MAGIC: [u8; 4] = *b"SLf2";
pub(crate) const FRAME_HEADER: usize = 12;
/// The on-disk format version of every file of the spool.
pub(crate) const VERSION: u8 = 2;
/// Trailer at the very end of a sealed segment: footer offset (u64) + this.
pub(crate) const TRAILER_MAGIC: [u8; 8] = *b"SLsealed";
pub(crate) const TRAILER: usize = 16;
/// Largest body a frame may claim (the largest entry is a few MiB).
pub(crate) const MAX_BODY: u32 = 256 << 20;

pub(crate) const HEADER: u8 = 0;
pub(crate) const ENTRY: u8 = 1;
pub(crate) const CHECKPOINT: u8 = 2;
pub(crate) const FOOTER: u8 = 3;
pub(crate) const DONE: u8 = 4;
pub(crate) const PROGRESS: u8 = 5;
pub(crate) const TABLE: u8 = 6;
pub(crate) const FACT: u8 = 7;
pub(crate) const GONE: u8 = 8;

/// File roles named in the header.
pub(crate) const ROLE_SEGMENT: u8 = 1;
pub(crate) const ROLE_ACKS: u8 = 2;
pub(crate) const ROLE_CHECKPOINTS: u8 = 3;
pub(crate) const ROLE_MANIFEST: u8 = 4;

/// Wraps a body (kind byte first) in a frame.
pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    push_frame(&mut out, body);
    out
}

/// Appends a framed body to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    let len = (body.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), body);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
}

/// What a frame header says, before the body is checked.
pub(crate) fn body_len(header: &[u8]) -> Option<u32> {
    if header.len() < FRAME_HEADER || header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?);
    (1..=MAX_BODY).contains(&len).then_some(len)
}

/// Checks a whole frame (header and body) and returns its body.
pub(crate) fn check(frame: &[u8]) -> Option<&[u8]> {
    let len = body_len(frame)? as usize;
    let body = frame.get(FRAME_HEADER..FRAME_HEADER + len)?;
    let crc = u32::from_le_bytes(frame[8..12].try_into().ok()?);
    (crc32c::crc32c_append(crc32c::crc32c(&frame[4..8]), body) == crc).then_some(body)
}

/// The outcome of walking the frames of a buffer.
pub(crate) struct Walk<'a> {
    /// (offset, body) of every good frame, in order.
    pub frames: Vec<(u64, &'a [u8])>,
    /// Byte ranges skipped because no good frame was found in them, followed by a
    /// good frame (damage in the middle).
    pub damaged: Vec<(u64, u64)>,
    /// Where the good frames end: bytes after it hold no good frame (a torn tail
    /// after a crash, or nothing).
    pub end: u64,
}

/// Walks the frames of `buf` (whose first byte is at file offset `base`),
/// resynchronising on the magic after a bad frame.
pub(crate) fn walk(buf: &[u8], base: u64) -> Walk<'_> {
    let mut w = Walk {
        frames: Vec::new(),
        damaged: Vec::new(),
        end: base,
    };
    let mut at = 0usize;
    let mut bad_from: Option<usize> = None;
    while at + FRAME_HEADER <= buf.len() {
        match check(&buf[at..]) {
            Some(body) => {
                if let Some(from) = bad_from.take() {
                    w.damaged.push((base + from as u64, base + at as u64));
                }
                w.frames.push((base + at as u64, body));
                at += FRAME_HEADER + body.len();
                w.end = base + at as u64;
            }
            None => {
                bad_from.get_or_insert(at);
                // The next place the magic appears.
                match memchr::memmem::find(&buf[at + 1..], &MAGIC) {
                    Some(i) => at += 1 + i,
                    None => break,
                }
            }
        }
    }
    w
}

/// A little-endian reader over a body.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    pub(super) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    pub(super) fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.bytes(16)?.try_into().ok()?))
    }
    /// A u32-length-prefixed byte string.
    pub(super) fn blob(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub(crate) fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A file's header frame body.
pub(crate) fn header(role: u8, stream: &str, seq: u64) -> Vec<u8> {
    let mut b = vec![HEADER, VERSION, role];
    b.extend_from_slice(&seq.to_le_bytes());
    put_blob(&mut b, stream.as_bytes());
    b
}

/// A parsed header: (version, role, seq, stream).
pub(crate) fn parse_header(body: &[u8]) -> Option<(u8, u8, u64, String)> {
    let mut r = Reader(body);
    if r.u8()? != HEADER {
        return None;
    }
    let version = r.u8()?;
    if version != VERSION {
        // The rest is of a format we do not know: only the version is read.
        return Some((version, 0, 0, String::new()));
    }
    let role = r.u8()?;
    let seq = r.u64()?;
    let stream = String::from_utf8(r.blob()?.to_vec()).ok()?;
    Some((version, role, seq, stream))
}

/// A checkpoint as a frame carries it: a sequence number (later wins), the
/// name, and the value (`None`: removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointRecord {
    pub seq: u64,
    pub name: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

fn put_checkpoint(b: &mut Vec<u8>, c: &CheckpointRecord) {
    b.extend_from_slice(&c.seq.to_le_bytes());
    put_blob(b, &c.name);
    match &c.value {
        Some(v) => {
            b.push(1);
            put_blob(b, v);
        }
        None => b.push(0),
    }
}

fn read_checkpoint(r: &mut Reader<'_>) -> Option<CheckpointRecord> {
    let seq = r.u64()?;
    let name = r.blob()?.to_vec();
    let value = match r.u8()? {
        1 => Some(r.blob()?.to_vec()),
        0 => None,
        _ => return None,
    };
    Some(CheckpointRecord { seq, name, value })
}

/// An entry frame's body: `ENTRY | id | spooled_at_ms | record count |
/// checkpoint? | records (key, hash key?, data)`.
pub(crate) fn entry(
    id: u64,
    at_ms: u64,
    records: &[UserRecord],
    checkpoint: Option<&CheckpointRecord>,
) -> Vec<u8> {
    let size: usize = records
        .iter()
        .map(|r| r.partition_key.len() + r.data.len() + 26)
        .sum();
    let mut b = Vec::with_capacity(FRAME_HEADER + 32 + size);
    // Room for the frame header, filled in by `seal_entry`.
    b.extend_from_slice(&[0u8; FRAME_HEADER]);
    b.push(ENTRY);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&at_ms.to_le_bytes());
    b.extend_from_slice(&(records.len() as u32).to_le_bytes());
    match checkpoint {
        Some(c) => {
            b.push(1);
            put_checkpoint(&mut b, c);
        }
        None => b.push(0),
    }
    for r in records {
        let key = r.partition_key.as_bytes();
        b.extend_from_slice(&(key.len() as u16).to_le_bytes());
        b.extend_from_slice(key);
        match r.explicit_hash_key {
            Some(h) => {
                b.push(1);
                b.extend_from_slice(&h.to_le_bytes());
            }
            None => b.push(0),
        }
        put_blob(&mut b, &r.data);
    }
    seal(b)
}

/// Fills in the frame header of a buffer built with room for it.
fn seal(mut b: Vec<u8>) -> Vec<u8> {
    let body_len = (b.len() - FRAME_HEADER) as u32;
    let len = body_len.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &b[FRAME_HEADER..]);
    b[..4].copy_from_slice(&MAGIC);
    b[4..8].copy_from_slice(&len);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

/// What an entry's first bytes say, without its records.
#[derive(Debug, Clone)]
pub(crate) struct EntryHead {
    pub id: u64,
    pub at_ms: u64,
    pub count: u32,
    pub checkpoint: Option<CheckpointRecord>,
}

pub(crate) fn entry_head(body: &[u8]) -> Option<(EntryHead, Reader<'_>)> {
    let mut r = Reader(body);
    if r.u8()? != ENTRY {
        return None;
    }
    let id = r.u64()?;
    let at_ms = r.u64()?;
    let count = r.u32()?;
    let checkpoint = match r.u8()? {
        1 => Some(read_checkpoint(&mut r)?),
        0 => None,
        _ => return None,
    };
    Some((
        EntryHead {
            id,
            at_ms,
            count,
            checkpoint,
        },
        r,
    ))
}

/// Decodes an entry's records; `whole` holds the frame body, so every record's
/// data is a slice of it (one allocation per entry).
pub(crate) fn entry_records(whole: &Bytes) -> Option<(EntryHead, Vec<UserRecord>)> {
    let (head, mut r) = entry_head(whole)?;
    let mut records = Vec::with_capacity(head.count as usize);
    for _ in 0..head.count {
        let n = r.u16()? as usize;
        let key = std::str::from_utf8(r.bytes(n)?).ok()?.to_owned();
        let explicit_hash_key = match r.u8()? {
            1 => Some(r.u128()?),
            0 => None,
            _ => return None,
        };
        let data = whole.slice_ref(r.blob()?);
        records.push(UserRecord {
            partition_key: key,
            explicit_hash_key,
            data,
        });
    }
    r.is_empty().then_some((head, records))
}

/// A checkpoint frame's body.
pub(crate) fn checkpoint(c: &CheckpointRecord) -> Vec<u8> {
    let mut b = vec![CHECKPOINT];
    put_checkpoint(&mut b, c);
    b
}

pub(crate) fn parse_checkpoint(body: &[u8]) -> Option<CheckpointRecord> {
    let mut r = Reader(body);
    (r.u8()? == CHECKPOINT).then_some(())?;
    let c = read_checkpoint(&mut r)?;
    r.is_empty().then_some(c)
}

/// Where an entry lies in its segment, as a footer lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    pub id: u64,
    pub offset: u64,
    /// Length of the whole frame.
    pub len: u32,
    pub count: u32,
    pub at_ms: u64,
}

/// A footer's body: the entries, then the last value of each checkpoint.
pub(crate) fn footer(entries: &[Placed], checkpoints: &[CheckpointRecord]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + entries.len() * 32);
    b.push(FOOTER);
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        b.extend_from_slice(&e.id.to_le_bytes());
        b.extend_from_slice(&e.offset.to_le_bytes());
        b.extend_from_slice(&e.len.to_le_bytes());
        b.extend_from_slice(&e.count.to_le_bytes());
        b.extend_from_slice(&e.at_ms.to_le_bytes());
    }
    b.extend_from_slice(&(checkpoints.len() as u32).to_le_bytes());
    for c in checkpoints {
        put_checkpoint(&mut b, c);
    }
    b
}

pub(crate) fn parse_footer(body: &[u8]) -> Option<(Vec<Placed>, Vec<CheckpointRecord>)> {
    let mut r = Reader(body);
    (r.u8()? == FOOTER).then_some(())?;
    let n = r.u32()? as usize;
    let mut entries = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        entries.push(Placed {
            id: r.u64()?,
            offset: r.u64()?,
            len: r.u32()?,
            count: r.u32()?,
            at_ms: r.u64()?,
        });
    }
    let n = r.u32()? as usize;
    let mut checkpoints = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        checkpoints.push(read_checkpoint(&mut r)?);
    }
    r.is_empty().then_some((entries, checkpoints))
}

pub(crate) fn trailer(footer_offset: u64) -> [u8; TRAILER] {
    let mut t = [0u8; TRAILER];
    t[..8].copy_from_slice(&footer_offset.to_le_bytes());
    t[8..].copy_from_slice(&TRAILER_MAGIC);
    t
}

pub(crate) fn parse_trailer(t: &[u8]) -> Option<u64> {
    (t.len() == TRAILER && t[8..] == TRAILER_MAGIC)
        .then(|| u64::from_le_bytes(t[..8].try_into().expect("eight bytes")))
}

/// Acks of whole entries.
pub(crate) fn done(ids: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(5 + ids.len() * 8);
    b.push(DONE);
    b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    b
}

/// The records accepted so far of a partly delivered entry (bit i = record i).
pub(crate) fn progress(id: u64, bits: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(13 + bits.len() * 8);
    b.push(PROGRESS);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&(bits.len() as u32).to_le_bytes());
    for w in bits {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b
}

/// An ack frame, parsed.
pub(crate) enum Ack {
    Done(Vec<u64>),
    Progress(u64, Vec<u64>),
}

pub(crate) fn parse_ack(body: &[u8]) -> Option<Ack> {
    let mut r = Reader(body);
    let ack = match r.u8()? {
        DONE => {
            let n = r.u32()? as usize;
            Ack::Done((0..n).map(|_| r.u64()).collect::<Option<_>>()?)
        }
        PROGRESS => {
            let id = r.u64()?;
            let n = r.u32()? as usize;
            Ack::Progress(id, (0..n).map(|_| r.u64()).collect::<Option<_>>()?)
        }
        _ => return None,
    };
    r.is_empty().then_some(ack)
}

/// What a stream's manifest says of one segment as of a commit: its frames end
/// at `data_len` or later, durably; the frames before hold `entries` entries of
/// `records` records in all, and `unsent` of its records were not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Fact {
    pub data_len: u64,
    pub entries: u64,
    pub records: u64,
    pub unsent: u64,
}

/// A manifest record: a segment's fact, or its removal (`None`).
pub(crate) fn manifest_record(seq: u64, fact: Option<Fact>) -> Vec<u8> {
    match fact {
        Some(f) => {
            let mut b = Vec::with_capacity(41);
            b.push(FACT);
            b.extend_from_slice(&seq.to_le_bytes());
            for n in [f.data_len, f.entries, f.records, f.unsent] {
                b.extend_from_slice(&n.to_le_bytes());
            }
            b
        }
        None => {
            let mut b = vec![GONE];
            b.extend_from_slice(&seq.to_le_bytes());
            b
        }
    }
}

pub(crate) fn parse_manifest_record(body: &[u8]) -> Option<(u64, Option<Fact>)> {
    let mut r = Reader(body);
    let out = match r.u8()? {
        FACT => (
            r.u64()?,
            Some(Fact {
                data_len: r.u64()?,
                entries: r.u64()?,
                records: r.u64()?,
                unsent: r.u64()?,
            }),
        ),
        GONE => (r.u64()?, None),
        _ => return None,
    };
    r.is_empty().then_some(out)
}

/// The checkpoint table carried forward.
pub(crate) fn table(checkpoints: &[CheckpointRecord]) -> Vec<u8> {
    let mut b = vec![TABLE];
    b.extend_from_slice(&(checkpoints.len() as u32).to_le_bytes());
    for c in checkpoints {
        put_checkpoint(&mut b, c);
    }
    b
}

pub(crate) fn parse_table(body: &[u8]) -> Option<Vec<CheckpointRecord>> {
    let mut r = Reader(body);
    (r.u8()? == TABLE).then_some(())?;
    let n = r.u32()? as usize;
    let out = (0..n)
        .map(|_| read_checkpoint(&mut r))
        .collect::<Option<Vec<_>>>()?;
    r.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_a_flipped_byte_is_caught() {
        let records = vec![
            UserRecord::new("k", "one"),
            UserRecord {
                partition_key: "ü".into(),
                explicit_hash_key: Some(u128::MAX),
                data: Bytes::from_static(&[0, 255]),
            },
            UserRecord::new("e", ""),
        ];
        let c = CheckpointRecord {
            seq: 7,
            name: b"f".to_vec(),
            value: Some(b"pos".to_vec()),
        };
        let f = entry(3, 99, &records, Some(&c));
        let body = Bytes::copy_from_slice(check(&f).unwrap());
        let (head, back) = entry_records(&body).unwrap();
        assert_eq!((head.id, head.at_ms, head.count), (3, 99, 3));
        assert_eq!(head.checkpoint, Some(c));
        assert_eq!(back, records);
        for i in 4..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 1;
            assert!(check(&bad).is_none(), "flip at {i} not caught");
        }
    }

    #[test]
    fn a_walk_skips_damage_and_stops_at_a_torn_tail() {
        let mut buf = Vec::new();
        for i in 0..4u64 {
            push_frame(&mut buf, &done(&[i]));
        }
        let one = buf.len() / 4;
        buf[one + 14] ^= 0xff; // damage the second frame's body
        buf.truncate(buf.len() - 3); // tear the last
        let w = walk(&buf, 100);
        assert_eq!(w.frames.len(), 2);
        assert_eq!(w.damaged, vec![(100 + one as u64, 100 + 2 * one as u64)]);
        assert_eq!(w.end, 100 + 3 * one as u64);
    }
}
