//! A sealed aggregate and its encoding. [`Aggregate`] owns one shard's records
//! and the key tables the [`Aggregator`](super::Aggregator) built (which alone
//! fills it); [`encode_all`], called by the PutRecords workers, writes the
//! protobuf and the MD5 trailers of a request's aggregates at once.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::encoded_len_varint;

use super::pack::{Packs, Sealed};
use super::{Encoded, Format, Pending, FRAMING_LEN, MAGIC};

/// A sealed set of user records of one shard, ready to encode. Only the
/// [`Aggregator`](super::Aggregator) fills it (the fields are the aggregate
/// module's own); delivery holds it until it is sent, or dissolves it on a
/// reshard.
#[derive(Debug, Default)]
pub struct Aggregate {
    pub(super) records: Vec<Pending>,
    /// Per record: index into the partition key table, into the explicit hash key table.
    pub(super) keys: Vec<(u32, Option<u32>)>,
    /// Partition key table, as the index of the first record that carries each key.
    pub(super) pk_owners: Vec<u32>,
    pub(super) ehk_table: Vec<u128>,
    /// Encoded protobuf length (without magic and trailer); for
    /// [`Format::Lines`], the bytes of the lines with their newlines.
    pub(super) body_len: usize,
    /// How the records are put together (set by the aggregator).
    pub(super) format: Format,
    /// With packs: how they are made, and the sealed ones (each a user record;
    /// `keys` then has one entry per pack).
    pub(super) pack: Option<Packs>,
    pub(super) packs: Vec<Sealed>,
}

/// Bytes of a length-delimited protobuf field of `len` bytes (tag, length,
/// bytes).
#[inline]
pub(super) fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Bytes of one `Record` message's body.
#[inline]
pub(super) fn record_body_len(pk_index: u32, ehk_index: Option<u32>, data_len: usize) -> usize {
    1 + encoded_len_varint(pk_index as u64)
        + ehk_index.map_or(0, |i| 1 + encoded_len_varint(i as u64))
        + field_len(data_len)
}

/// Digits of `v` in decimal (an explicit hash key is written as one).
#[inline]
pub(super) fn decimal_len(v: u128) -> usize {
    if v == 0 {
        1
    } else {
        v.ilog10() as usize + 1
    }
}

impl Aggregate {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> &[Pending] {
        &self.records
    }

    pub fn into_records(self) -> Vec<Pending> {
        self.records
    }

    /// Size of the Kinesis record this aggregate becomes (data plus partition key).
    pub fn size(&self) -> usize {
        if self.format == Format::Lines {
            return self.body_len;
        }
        if self.pack.is_some() {
            let pk = self
                .records
                .first()
                .map_or(0, |r| r.record.partition_key.len());
            return match self.packs.as_slice() {
                [] => 0,
                [one] => one.data.len() + pk,
                _ => FRAMING_LEN + self.body_len + pk,
            };
        }
        match self.records.as_slice() {
            [] => 0,
            [one] => one.record.size(),
            [first, ..] => FRAMING_LEN + self.body_len + first.record.partition_key.len(),
        }
    }

    /// The hash key Kinesis routes this record by: the first user record's.
    pub fn hash_key(&self) -> Option<u128> {
        self.records.first().map(|r| r.hash_key)
    }

    /// Encodes the Kinesis record. A lone user record goes as itself, so consumers
    /// that do not deaggregate read it unchanged; otherwise the outer partition key
    /// is the first record's and the outer explicit hash key its hash key, which lies
    /// in the shard the aggregate was built for.
    pub fn encode(&self) -> Encoded {
        encode_all(&[self])
            .pop()
            .expect("one encoding per aggregate")
    }

    /// The Kinesis record without the MD5 trailer, which [`encode_all`] adds for
    /// many aggregates at once.
    fn unsigned(&self) -> Unsigned {
        if self.format == Format::Lines {
            return Unsigned::Done(self.lines());
        }
        if self.pack.is_some() {
            return self.unsigned_packs();
        }
        let first = match self.records.as_slice() {
            [] => {
                return Unsigned::Done(Encoded {
                    partition_key: String::new(),
                    explicit_hash_key: None,
                    data: Bytes::new(),
                })
            }
            [one] => {
                return Unsigned::Done(Encoded {
                    partition_key: one.record.partition_key.clone(),
                    explicit_hash_key: one.record.explicit_hash_key.map(|k| k.to_string()),
                    data: one.record.data.clone(),
                })
            }
            [first, ..] => first,
        };
        self.body(first, self.records.iter().map(|r| &r.record.data[..]))
    }

    /// Magic, key tables and one `Record` per entry of `data` (a record's data,
    /// or a pack's), keyed by `keys`; the MD5 trailer comes later.
    fn body<'d>(&self, first: &Pending, data: impl Iterator<Item = &'d [u8]>) -> Unsigned {
        let mut buf = BytesMut::with_capacity(FRAMING_LEN + self.body_len);
        buf.put_slice(&MAGIC);
        for &owner in &self.pk_owners {
            put_bytes_field(
                &mut buf,
                1,
                self.records[owner as usize].record.partition_key.as_bytes(),
            );
        }
        for k in &self.ehk_table {
            put_bytes_field(&mut buf, 2, k.to_string().as_bytes());
        }
        for (d, &(pk_idx, ehk_idx)) in data.zip(&self.keys) {
            put_record(&mut buf, pk_idx, ehk_idx, d);
        }
        debug_assert_eq!(buf.len(), MAGIC.len() + self.body_len);
        Unsigned::Body {
            partition_key: first.record.partition_key.clone(),
            explicit_hash_key: first.hash_key.to_string(),
            buf,
        }
    }
}

impl Aggregate {
    /// How the records are put together.
    pub fn format(&self) -> Format {
        self.format
    }

    /// How the records are packed and compressed, if they are.
    pub fn packs(&self) -> Option<Packs> {
        self.pack
    }

    /// [`unsigned`](Self::unsigned) with packs: each sealed pack is a user
    /// record, keyed by its first record; a lone pack goes as itself.
    fn unsigned_packs(&self) -> Unsigned {
        let Some(first) = self.records.first() else {
            return Unsigned::Done(Encoded {
                partition_key: String::new(),
                explicit_hash_key: None,
                data: Bytes::new(),
            });
        };
        if let [one] = self.packs.as_slice() {
            return Unsigned::Done(Encoded {
                partition_key: first.record.partition_key.clone(),
                explicit_hash_key: Some(first.hash_key.to_string()),
                data: one.data.clone(),
            });
        }
        self.body(first, self.packs.iter().map(|p| &p.data[..]))
    }

    /// The [`Format::Lines`] record: each record's data and a newline.
    fn lines(&self) -> Encoded {
        let mut buf = BytesMut::with_capacity(self.body_len);
        for r in &self.records {
            buf.put_slice(&r.record.data);
            buf.put_u8(b'\n');
        }
        Encoded {
            partition_key: String::new(),
            explicit_hash_key: None,
            data: buf.freeze(),
        }
    }
}

/// An aggregate encoded but for its MD5 trailer.
enum Unsigned {
    /// Needs no trailer: a lone user record, or nothing.
    Done(Encoded),
    /// Magic and protobuf body; the MD5 of the body goes after it.
    Body {
        partition_key: String,
        explicit_hash_key: String,
        buf: BytesMut,
    },
}

/// Encodes each aggregate (see [`Aggregate::encode`]), in order. The MD5
/// trailers of all of them are computed together ([`crate::digest::digests`]): a
/// PutRecords request's aggregates are hashed several at once.
pub fn encode_all(aggs: &[&Aggregate]) -> Vec<Encoded> {
    let unsigned: Vec<Unsigned> = aggs.iter().map(|a| a.unsigned()).collect();
    let bodies: Vec<&[u8]> = unsigned
        .iter()
        .filter_map(|u| match u {
            Unsigned::Body { buf, .. } => Some(&buf[MAGIC.len()..]),
            Unsigned::Done(_) => None,
        })
        .collect();
    let mut digests = crate::digest::digests(&bodies).into_iter();
    unsigned
        .into_iter()
        .map(|u| match u {
            Unsigned::Done(e) => e,
            Unsigned::Body {
                partition_key,
                explicit_hash_key,
                mut buf,
            } => {
                let d = digests.next().expect("one digest per body");
                buf.put_slice(&d);
                Encoded {
                    partition_key,
                    explicit_hash_key: Some(explicit_hash_key),
                    data: buf.freeze(),
                }
            }
        })
        .collect()
}

/// One `Record` message of the aggregate.
fn put_record(buf: &mut BytesMut, pk_idx: u32, ehk_idx: Option<u32>, data: &[u8]) {
    let len = record_body_len(pk_idx, ehk_idx, data.len());
    put_key(buf, 3, 2);
    put_varint(buf, len as u64);
    put_key(buf, 1, 0);
    put_varint(buf, pk_idx as u64);
    if let Some(i) = ehk_idx {
        put_key(buf, 2, 0);
        put_varint(buf, i as u64);
    }
    put_bytes_field(buf, 3, data);
}

fn put_key(buf: &mut BytesMut, tag: u32, wire_type: u32) {
    put_varint(buf, ((tag << 3) | wire_type) as u64);
}

fn put_varint(buf: &mut BytesMut, v: u64) {
    prost::encoding::encode_varint(v, buf);
}

fn put_bytes_field(buf: &mut BytesMut, tag: u32, bytes: &[u8]) {
    put_key(buf, tag, 2);
    put_varint(buf, bytes.len() as u64);
    buf.put_slice(bytes);
}
