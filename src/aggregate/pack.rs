//! Compressed user records: a shard's records put together into *packs* (their
//! data newline-separated, up to a size) and each pack compressed into one user
//! record of the aggregate. A consumer deaggregates first (KCL, aws-kinesis-agg),
//! then decompresses each user record and splits it at its newlines.
//!
//! The [`Aggregator`](super::Aggregator) keeps one open pack per aggregate: the
//! records at the end of its list. The open pack is counted at its
//! compression bound while it fills, and compressed when it is full or the
//! aggregate is sealed, so an aggregate never crosses its limit; a sealed
//! pack's size is exact.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

use super::Pending;

/// How a pack's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// The lines as they are (packing alone).
    None,
    /// gzip (RFC 1952) at a level of 0..=9.
    Gzip(u32),
    /// Zstandard (RFC 8878) at a level of 1..=22.
    Zstd(i32),
}

/// How a stream's records are packed and compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packs {
    pub codec: Codec,
    /// Most bytes of data (with the newlines between) in one pack; a record
    /// larger than that is a pack of its own. 0: every record alone.
    pub max_bytes: usize,
}

/// A sealed pack: where it ends in the aggregate's records, and its bytes.
#[derive(Debug, Clone)]
pub(super) struct Sealed {
    pub(super) end: usize,
    pub(super) data: Bytes,
}

impl Codec {
    /// Most bytes `n` bytes can take once compressed.
    pub(super) fn bound(&self, n: usize) -> usize {
        match self {
            Codec::None => n,
            // Stored deflate blocks (5 bytes per 16 KiB) and the gzip header
            // and trailer.
            Codec::Gzip(_) => n + 5 * (n / 16_000 + 1) + 18 + 16,
            // ZSTD_COMPRESSBOUND.
            Codec::Zstd(_) => {
                n + (n >> 8)
                    + if n < 128 << 10 {
                        ((128 << 10) - n) >> 11
                    } else {
                        0
                    }
                    + 16
            }
        }
    }

    /// The name used in the config and the docs.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip(_) => "gzip",
            Codec::Zstd(_) => "zstd",
        }
    }
}

/// The data of `records`, newline-separated, compressed with `codec`.
pub(super) fn compress(codec: Codec, records: &[Pending]) -> Bytes {
    let len: usize = records.iter().map(|r| r.record.data.len() + 1).sum();
    let mut raw = BytesMut::with_capacity(len);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            raw.put_u8(b'\n');
        }
        raw.put_slice(&r.record.data);
    }
    match codec {
        Codec::None => raw.freeze(),
        Codec::Gzip(level) => {
            let out = Vec::with_capacity(codec.bound(raw.len()));
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            gz.write_all(&raw).expect("writing to memory does not fail");
            Bytes::from(gz.finish().expect("writing to memory does not fail"))
        }
        Codec::Zstd(level) => Bytes::from(
            zstd::bulk::compress(&raw, level).expect("compressing in memory does not fail"),
        ),
    }
}

/// The lines of a user record written with `codec` (for tests, tools and
/// consumers written in Rust).
pub fn unpack(codec: Codec, data: &[u8]) -> std::io::Result<Vec<Bytes>> {
    let raw = match codec {
        Codec::None => data.to_vec(),
        Codec::Gzip(_) => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut out)?;
            out
        }
        Codec::Zstd(_) => zstd::stream::decode_all(data)?,
    };
    let raw = Bytes::from(raw);
    Ok(raw
        .split(|&b| b == b'\n')
        .map(|line| raw.slice_ref(line))
        .collect())
}
