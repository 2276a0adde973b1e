//! Reading KPL aggregates back into user records, the way the KCL does: the
//! magic, the MD5 trailer, then the protobuf. Owns no state; called by tests,
//! the benches and tools that check what reached a stream.

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

use super::{proto, FRAMING_LEN, MAGIC};
use crate::digest::DIGEST_LEN;
use crate::record::{parse_explicit_hash_key, UserRecord};

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
