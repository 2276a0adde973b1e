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
//! aggregates of one request several at once (`digest`). Partition keys
//! are deduplicated; the explicit hash key table is written whenever a record has
//! one. The proto2 `required` fields are always written, even when zero or empty:
//! strict deaggregators reject a record without them.
//!
//! The parts, each a file: `aggregator.rs` ([`Aggregator`]: collects one
//! shard's records and keeps the exact size, the router calls it per record),
//! `encode.rs` ([`Aggregate`], the sealed set, and [`encode_all`], called by the
//! PutRecords workers), `decode.rs` ([`deaggregate`], for tests, tools and
//! consumers), `key_hash.rs` (the hasher of keys that are hashes already). This
//! file holds the format's constants and protobuf messages and the values the
//! parts pass between them ([`Pending`], [`Limits`], [`Encoded`]).

mod aggregator;
mod decode;
mod encode;
mod key_hash;
mod pack;

use bytes::Bytes;

use crate::digest::DIGEST_LEN;
use crate::record::UserRecord;

pub use self::aggregator::Aggregator;
pub use self::decode::{deaggregate, is_aggregated, DecodeError};
pub use self::encode::{encode_all, Aggregate};

pub use self::key_hash::{KeyHash, KeyHasher};
pub use self::pack::{unpack, Codec, Packs};

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

/// Size limits of one aggregate, and the form it is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest aggregate, in bytes of record (data plus partition key).
    pub max_bytes: usize,
    /// Most user records in one aggregate.
    pub max_records: usize,
    /// How the user records are put together.
    pub format: Format,
    /// Records packed and compressed into fewer user records (Kinesis only).
    pub packs: Option<Packs>,
}

/// How an aggregate's user records are put together into one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// The KPL aggregation format (Kinesis data streams; consumers de-aggregate).
    #[default]
    Kpl,
    /// Each user record's data followed by a newline, one after the other
    /// (Firehose: its destinations read lines). No partition key is sent.
    Lines,
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

#[cfg(test)]
mod tests;
