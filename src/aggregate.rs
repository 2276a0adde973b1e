//! KPL aggregation: many user records of one shard packed into one Kinesis record.
//!
//! The format is the published one of the Kinesis Producer Library
//! (`aggregation-format.md`): the magic bytes `F3 89 9A C2`, a protobuf
//! `AggregatedRecord`, and the MD5 of that protobuf as a 16-byte trailer, so that
//! the KCL and every public deaggregator read what we write.
//!
//! The [`Aggregator`] keeps the exact encoded size as records are added, so an
//! aggregate never crosses its limit and needs no trial encoding; the encoding itself
//! (and the MD5 it requires) happens in [`encode_all`], which delivery runs on the
//! worker that sends the request, so requests are hashed in parallel and the
//! aggregates of one request several at once ([`crate::digest`]). Partition keys
//! are deduplicated; the explicit hash key table is written whenever a record has
//! one. The proto2 `required` fields are always written, even when zero or empty:
//! strict deaggregators reject a record without them.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};
use prost::encoding::encoded_len_varint;
use prost::Message;

use crate::digest::DIGEST_LEN;
use crate::record::{parse_explicit_hash_key, UserRecord, MAX_RECORD_BYTES};

/// The four bytes every KPL aggregate starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Magic plus MD5 trailer.
const FRAMING_LEN: usize = MAGIC.len() + DIGEST_LEN;

/// The protobuf messages of the aggregation format, for decoding.
pub mod proto {
    /// `AggregatedRecord` of the KPL's `messages.proto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AggregatedRecord {
        #[prost(string, repeated, tag = "1")]
        pub partition_key_table: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub explicit_hash_key_table: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub records: Vec<Record>,
    }

    /// One user record inside an aggregate.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Record {
        #[prost(uint64, required, tag = "1")]
        pub partition_key_index: u64,
        #[prost(uint64, optional, tag = "2")]
        pub explicit_hash_key_index: Option<u64>,
        #[prost(bytes = "bytes", required, tag = "3")]
        pub data: bytes::Bytes,
        #[prost(message, repeated, tag = "4")]
        pub tags: Vec<Tag>,
    }

    /// A record tag (written by some producers, ignored by consumers).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tag {
        #[prost(string, required, tag = "1")]
        pub key: String,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
}

/// Why an aggregated record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("aggregate of {len} bytes is shorter than its 20 bytes of framing")]
    Truncated { len: usize },
    #[error("aggregate checksum mismatch: trailer {expected}, computed {actual}")]
    Checksum { expected: String, actual: String },
    #[error("aggregate protobuf is invalid")]
    Protobuf(#[from] prost::DecodeError),
    #[error(
        "record {record} refers to {table} table index {index}, but the table has {len} entries"
    )]
    BadIndex {
        record: usize,
        table: &'static str,
        index: u64,
        len: usize,
    },
    #[error("invalid explicit hash key in aggregate")]
    ExplicitHashKey(#[from] crate::record::RecordError),
}

/// Whether a Kinesis record's data is a KPL aggregate (by its magic bytes).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() >= FRAMING_LEN && data[..MAGIC.len()] == MAGIC
}

/// Reads the user records of one Kinesis record the way the KCL does: an aggregate
/// yields its records (after the magic and MD5 checks), anything else is one record
/// with the outer keys.
pub fn deaggregate(
    partition_key: &str,
    explicit_hash_key: Option<u128>,
    data: &Bytes,
) -> Result<Vec<UserRecord>, DecodeError> {
    if !data.starts_with(&MAGIC) {
        return Ok(vec![UserRecord {
            partition_key: partition_key.to_owned(),
            explicit_hash_key,
            data: data.clone(),
        }]);
    }
    if data.len() < FRAMING_LEN {
        return Err(DecodeError::Truncated { len: data.len() });
    }
    let body = data.slice(MAGIC.len()..data.len() - DIGEST_LEN);
    let trailer = &data[data.len() - DIGEST_LEN..];
    let actual: [u8; DIGEST_LEN] = Md5::digest(&body).into();
    if actual != trailer {
        return Err(DecodeError::Checksum {
            expected: hex(trailer),
            actual: hex(&actual),
        });
    }
    let message = proto::AggregatedRecord::decode(body)?;
    let ehk_table = message
        .explicit_hash_key_table
        .iter()
        .map(|k| parse_explicit_hash_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(message.records.len());
    for (i, r) in message.records.into_iter().enumerate() {
        let pk = message
            .partition_key_table
            .get(r.partition_key_index as usize)
            .ok_or(DecodeError::BadIndex {
                record: i,
                table: "partition key",
                index: r.partition_key_index,
                len: message.partition_key_table.len(),
            })?;
        let ehk = match r.explicit_hash_key_index {
            None => None,
            Some(index) => Some(*ehk_table.get(index as usize).ok_or(DecodeError::BadIndex {
                record: i,
                table: "explicit hash key",
                index,
                len: ehk_table.len(),
            })?),
        };
        out.push(UserRecord {
            partition_key: pk.clone(),
            explicit_hash_key: ehk,
            data: r.data,
        });
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A user record on its way through the pipeline: the record, where it lives in
/// the spool, and its hash key (computed once).
#[derive(Debug, Clone)]
pub struct Pending {
    /// Spool entry that holds the record.
    pub entry: u64,
    /// Position of the record inside its spool entry.
    pub index: u32,
    /// Hash key that routes the record.
    pub hash_key: u128,
    pub record: UserRecord,
}

impl Pending {
    pub fn new(entry: u64, index: u32, record: UserRecord) -> Self {
        Pending {
            entry,
            index,
            hash_key: record.hash_key(),
            record,
        }
    }
}

/// Size limits of one aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest aggregate, in bytes of Kinesis record (data plus partition key).
    pub max_bytes: usize,
    /// Most user records in one aggregate.
    pub max_records: usize,
}

/// The Kinesis record one aggregate (or a lone user record) becomes.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
}

impl Encoded {
    /// Size as Kinesis counts it: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Collects the user records of one shard until the aggregate is full.
#[derive(Debug, Default)]
pub struct Aggregator {
    agg: Aggregate,
    /// Partition key → index in the key table, keyed by a hash of the key; the
    /// string itself is compared on a hit, so a collision only costs a table entry.
    pk_index: HashMap<u64, u32, KeyHash>,
    ehk_index: HashMap<u128, u32, KeyHash>,
}

/// A sealed set of user records of one shard, ready to encode.
#[derive(Debug, Default)]
pub struct Aggregate {
    records: Vec<Pending>,
    /// Per record: index into the partition key table, into the explicit hash key table.
    keys: Vec<(u32, Option<u32>)>,
    /// Partition key table, as the index of the first record that carries each key.
    pk_owners: Vec<u32>,
    ehk_table: Vec<u128>,
    /// Encoded protobuf length (without magic and trailer).
    body_len: usize,
}

fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn record_body_len(pk_index: u32, ehk_index: Option<u32>, data_len: usize) -> usize {
    1 + encoded_len_varint(pk_index as u64)
        + ehk_index.map_or(0, |i| 1 + encoded_len_varint(i as u64))
        + field_len(data_len)
}

fn decimal_len(v: u128) -> usize {
    if v == 0 {
        1
    } else {
        v.ilog10() as usize + 1
    }
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.agg.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.agg.records.len()
    }

    /// Current size of the aggregate as a Kinesis record.
    pub fn size(&self) -> usize {
        self.agg.size()
    }

    /// What the aggregate's size would become with `record` added, and the keys it
    /// would get.
    fn size_with(&self, p: &Pending) -> (usize, (u32, Option<u32>), bool, bool) {
        let mut body = self.agg.body_len;
        let pk = &p.record.partition_key;
        let (pk_idx, new_pk) = match self.lookup_pk(p) {
            Some(i) => (i, false),
            None => {
                body += field_len(pk.len());
                (self.agg.pk_owners.len() as u32, true)
            }
        };
        let (ehk_idx, new_ehk) = match p.record.explicit_hash_key {
            None => (None, false),
            Some(k) => match self.ehk_index.get(&k) {
                Some(&i) => (Some(i), false),
                None => {
                    body += field_len(decimal_len(k));
                    (Some(self.agg.ehk_table.len() as u32), true)
                }
            },
        };
        body += field_len(record_body_len(pk_idx, ehk_idx, p.record.data.len()));
        let outer_pk = self
            .agg
            .records
            .first()
            .map_or(pk.len(), |r| r.record.partition_key.len());
        (
            FRAMING_LEN + body + outer_pk,
            (pk_idx, ehk_idx),
            new_pk,
            new_ehk,
        )
    }

    fn pk_hash(p: &Pending) -> u64 {
        fnv1a(p.record.partition_key.as_bytes())
    }

    fn lookup_pk(&self, p: &Pending) -> Option<u32> {
        let i = *self.pk_index.get(&Self::pk_hash(p))?;
        let owner = &self.agg.records[self.agg.pk_owners[i as usize] as usize];
        (owner.record.partition_key == p.record.partition_key).then_some(i)
    }

    /// Adds a record if the aggregate stays within `limits`; gives it back otherwise.
    /// An empty aggregator always takes the record (a record alone is within the
    /// Kinesis limit by validation, and is sent unaggregated).
    // The record comes back whole when it does not fit: the caller seals and
    // tries again; boxing it would cost an allocation per record.
    #[allow(clippy::result_large_err)]
    pub fn try_add(&mut self, p: Pending, limits: &Limits) -> Result<(), Pending> {
        let (size, keys, new_pk, new_ehk) = self.size_with(&p);
        if !self.is_empty()
            && (size > limits.max_bytes.min(MAX_RECORD_BYTES)
                || self.agg.records.len() >= limits.max_records)
        {
            return Err(p);
        }
        let idx = self.agg.records.len() as u32;
        if new_pk {
            self.pk_index.entry(Self::pk_hash(&p)).or_insert(keys.0);
            self.agg.pk_owners.push(idx);
        }
        if let (true, Some(k)) = (new_ehk, p.record.explicit_hash_key) {
            self.ehk_index.insert(k, self.agg.ehk_table.len() as u32);
            self.agg.ehk_table.push(k);
        }
        self.agg.body_len = size - FRAMING_LEN - self.outer_pk_len_with(&p);
        self.agg.keys.push(keys);
        self.agg.records.push(p);
        Ok(())
    }

    fn outer_pk_len_with(&self, p: &Pending) -> usize {
        self.agg
            .records
            .first()
            .map_or(p.record.partition_key.len(), |r| {
                r.record.partition_key.len()
            })
    }

    /// Takes the aggregate out, leaving the aggregator empty.
    pub fn take(&mut self) -> Aggregate {
        self.pk_index.clear();
        self.ehk_index.clear();
        std::mem::take(&mut self.agg)
    }
}

/// Hasher for keys that are hashes (or sequence numbers) already: their low bits
/// are used as they are, sparing a SipHash per record on the hot path.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by the integer keys below; a fallback that stays correct.
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        // Spread sequential keys over the table's buckets.
        self.0 = v.wrapping_mul(0x9E3779B97F4A7C15);
    }

    fn write_u128(&mut self, v: u128) {
        self.write_u64((v as u64) ^ ((v >> 64) as u64));
    }
}

/// Builds [`KeyHasher`]s.
pub type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
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
        for (r, &(pk_idx, ehk_idx)) in self.records.iter().zip(&self.keys) {
            let len = record_body_len(pk_idx, ehk_idx, r.record.data.len());
            put_key(&mut buf, 3, 2);
            put_varint(&mut buf, len as u64);
            put_key(&mut buf, 1, 0);
            put_varint(&mut buf, pk_idx as u64);
            if let Some(i) = ehk_idx {
                put_key(&mut buf, 2, 0);
                put_varint(&mut buf, i as u64);
            }
            put_bytes_field(&mut buf, 3, &r.record.data);
        }
        debug_assert_eq!(buf.len(), MAGIC.len() + self.body_len);
        Unsigned::Body {
            partition_key: first.record.partition_key.clone(),
            explicit_hash_key: first.hash_key.to_string(),
            buf,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pending(pk: &str, ehk: Option<u128>, data: &[u8]) -> Pending {
        Pending::new(
            0,
            0,
            UserRecord {
                partition_key: pk.into(),
                explicit_hash_key: ehk,
                data: Bytes::copy_from_slice(data),
            },
        )
    }

    const NO_LIMIT: Limits = Limits {
        max_bytes: MAX_RECORD_BYTES,
        max_records: usize::MAX,
    };

    fn aggregate(records: Vec<Pending>, limits: &Limits) -> Vec<Aggregate> {
        let mut out = Vec::new();
        let mut agg = Aggregator::new();
        for r in records {
            if let Err(r) = agg.try_add(r, limits) {
                out.push(agg.take());
                agg.try_add(r, limits)
                    .expect("empty aggregator takes any record");
            }
        }
        if !agg.is_empty() {
            out.push(agg.take());
        }
        out
    }

    fn roundtrip(agg: &Aggregate) -> Vec<UserRecord> {
        let e = agg.encode();
        let ehk = e.explicit_hash_key.as_deref().map(|k| k.parse().unwrap());
        deaggregate(&e.partition_key, ehk, &e.data).unwrap()
    }

    #[test]
    fn encoding_matches_prost_and_keeps_required_fields() {
        let records = vec![
            pending("a", None, b""),
            pending("a", Some(7), b"x"),
            pending("b", Some(7), b"yz"),
        ];
        let aggs = aggregate(records, &NO_LIMIT);
        assert_eq!(aggs.len(), 1);
        let e = aggs[0].encode();
        assert_eq!(e.size(), aggs[0].size());
        let body = &e.data[4..e.data.len() - 16];
        let expected = proto::AggregatedRecord {
            partition_key_table: vec!["a".into(), "b".into()],
            explicit_hash_key_table: vec!["7".into()],
            records: vec![
                proto::Record {
                    partition_key_index: 0,
                    explicit_hash_key_index: None,
                    data: Bytes::new(),
                    tags: vec![],
                },
                proto::Record {
                    partition_key_index: 0,
                    explicit_hash_key_index: Some(0),
                    data: Bytes::from_static(b"x"),
                    tags: vec![],
                },
                proto::Record {
                    partition_key_index: 1,
                    explicit_hash_key_index: Some(0),
                    data: Bytes::from_static(b"yz"),
                    tags: vec![],
                },
            ],
        };
        assert_eq!(body, expected.encode_to_vec().as_slice());
        // The first record has index 0 and empty data: both fields are still present
        // (`08 00` and `1a 00`).
        let first_record = &expected.records[0].encode_to_vec();
        assert_eq!(first_record.as_slice(), &[0x08, 0x00, 0x1a, 0x00]);
    }

    #[test]
    fn checksum_and_magic_mismatch_are_detected() {
        let aggs = aggregate(
            vec![pending("a", None, b"one"), pending("b", None, b"two")],
            &NO_LIMIT,
        );
        let e = aggs[0].encode();
        let mut bad = e.data.to_vec();
        let n = bad.len();
        bad[n - 20] ^= 1; // a byte of the protobuf body
        assert!(matches!(
            deaggregate("a", None, &Bytes::from(bad.clone())),
            Err(DecodeError::Checksum { .. })
        ));
        bad[n - 20] ^= 1;
        bad[n - 1] ^= 1; // a byte of the trailer
        assert!(matches!(
            deaggregate("a", None, &Bytes::from(bad.clone())),
            Err(DecodeError::Checksum { .. })
        ));
        bad[n - 1] ^= 1;
        // A wrong magic number: the data is not an aggregate, and reads as one
        // opaque record, as the KCL reads it.
        bad[0] = 0;
        let plain = deaggregate("a", None, &Bytes::from(bad.clone())).unwrap();
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].data, bad);
        assert!(matches!(
            deaggregate("a", None, &Bytes::from_static(&[0xF3, 0x89, 0x9A, 0xC2, 1])),
            Err(DecodeError::Truncated { len: 5 })
        ));
    }

    #[test]
    fn lone_record_goes_unaggregated() {
        let aggs = aggregate(vec![pending("k", Some(5), b"data")], &NO_LIMIT);
        let e = aggs[0].encode();
        assert_eq!(&e.data[..], b"data");
        assert_eq!(e.partition_key, "k");
        assert_eq!(e.explicit_hash_key.as_deref(), Some("5"));
    }

    fn arb_record() -> impl Strategy<Value = (String, Option<u128>, Vec<u8>)> {
        (
            prop_oneof!["[a-c]{1,2}", "\\PC{1,20}", "[a-z0-9]{200,256}",],
            proptest::option::of(any::<u128>()),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::collection::vec(any::<u8>(), 0..20_000),
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn deaggregate_of_aggregate_is_identity(
            xs in proptest::collection::vec(arb_record(), 1..200),
            max_bytes in prop_oneof![Just(MAX_RECORD_BYTES), 64usize..60_000],
            max_records in prop_oneof![Just(usize::MAX), 1usize..50],
        ) {
            let limits = Limits { max_bytes, max_records };
            let records: Vec<Pending> = xs
                .iter()
                .map(|(pk, ehk, data)| pending(pk, *ehk, data))
                .collect();
            let aggs = aggregate(records, &limits);
            let mut decoded = Vec::new();
            for agg in &aggs {
                let e = agg.encode();
                prop_assert_eq!(e.size(), agg.size());
                prop_assert!(e.size() <= MAX_RECORD_BYTES);
                if agg.len() > 1 {
                    prop_assert!(e.size() <= max_bytes);
                    prop_assert!(agg.len() <= max_records);
                    prop_assert!(is_aggregated(&e.data));
                }
                decoded.extend(roundtrip(agg));
            }
            let expected: Vec<UserRecord> = xs
                .into_iter()
                .map(|(pk, ehk, data)| UserRecord { partition_key: pk, explicit_hash_key: ehk, data: data.into() })
                .collect();
            prop_assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn full_aggregates_stay_within_one_mebibyte() {
        // Records sized so that the limit falls inside the length varints.
        let mut records = Vec::new();
        for i in 0..400 {
            records.push(pending(
                &format!("key-{i}"),
                None,
                &vec![b'x'; 16_380 + i % 7],
            ));
        }
        let aggs = aggregate(records, &NO_LIMIT);
        assert!(aggs.len() > 4);
        for a in &aggs[..aggs.len() - 1] {
            let size = a.encode().size();
            assert!(size <= MAX_RECORD_BYTES, "{size}");
            // Full: no room left for one more record of the same kind.
            assert!(size > MAX_RECORD_BYTES - 16_500, "{size}");
        }
    }

    #[test]
    fn an_encoded_aggregate_gives_up_its_buffer_without_a_copy() {
        // The Kinesis client turns each entry's bytes into the SDK's `Vec`; a
        // request in flight holds its aggregates once only while that takes the
        // buffer itself, which it does for a buffer nothing else shares.
        let records = (0..50)
            .map(|i| pending(&format!("k{i}"), None, &[b'y'; 700]))
            .collect();
        let aggs = aggregate(records, &NO_LIMIT);
        let refs: Vec<&Aggregate> = aggs.iter().collect();
        for e in encode_all(&refs) {
            let at = e.data.as_ptr();
            let len = e.data.len();
            let v = Vec::from(e.data);
            assert_eq!((v.as_ptr(), v.len()), (at, len));
        }
    }
}
