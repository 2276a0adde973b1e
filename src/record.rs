//! User records: what a source hands to the pipeline, its validation against the
//! Kinesis limits, and the 128-bit hash key that decides its shard.
//!
//! Validation happens once, at the edge, before a record reaches the spool: a record
//! that no Kinesis stream would take (a bad key, over 10 MiB) never occupies the
//! spool. One between 1 MiB and 10 MiB is taken here, and given up when it is
//! sent if its own stream has not been raised to take it (dead-letter file and
//! failure channel, never retried, never blocking the records behind it; tested in
//! tests/streams.rs).

use bytes::Bytes;
use md5::{Digest, Md5};

/// Largest Kinesis record of a stream as created (1 MiB): data plus partition
/// key, in bytes. Aggregates never pass it, and the sources' limits default to it.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Largest Kinesis record of any stream (10 MiB, a stream raised with
/// UpdateMaxRecordSize): data plus partition key, in bytes. A record between
/// the two is accepted here and checked against its stream's own limit when it
/// is sent.
pub const MAX_LARGE_RECORD_BYTES: usize = 10 * 1024 * 1024;
/// Longest partition key, in Unicode scalar values.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// One record as an application or a log line produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Partition key: 1 to 256 Unicode characters.
    pub partition_key: String,
    /// Explicit hash key; when set it decides the shard instead of MD5 of the
    /// partition key.
    pub explicit_hash_key: Option<u128>,
    /// The payload.
    pub data: Bytes,
}

/// Why a record cannot be sent to Kinesis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("partition key is empty")]
    EmptyPartitionKey,
    #[error("partition key of {chars} characters exceeds the {MAX_PARTITION_KEY_CHARS}-character Kinesis limit")]
    PartitionKeyTooLong { chars: usize },
    #[error("record of {bytes} bytes exceeds the {MAX_LARGE_RECORD_BYTES}-byte Kinesis limit")]
    TooLarge { bytes: usize },
    /// Larger than its destination takes (a Firehose record holds at most
    /// 1,023,999 bytes of data and its newline).
    #[error("record of {bytes} bytes of data exceeds the {limit}-byte {destination} limit")]
    TooLargeFor {
        bytes: usize,
        limit: usize,
        destination: &'static str,
    },
    #[error("explicit hash key {value:?} is not a decimal integer in 0..2^128")]
    InvalidExplicitHashKey { value: String },
}

impl UserRecord {
    /// A record with a partition key and no explicit hash key.
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        UserRecord {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Checks the record against the Kinesis limits (the largest any stream
    /// takes: its own stream's is checked when it is sent).
    pub fn validate(&self) -> Result<(), RecordError> {
        validate_partition_key(&self.partition_key)?;
        let bytes = self.size();
        if bytes > MAX_LARGE_RECORD_BYTES {
            return Err(RecordError::TooLarge { bytes });
        }
        Ok(())
    }

    /// Size as Kinesis counts it against the record limit: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// The hash key that decides the record's shard.
    pub fn hash_key(&self) -> u128 {
        self.explicit_hash_key
            .unwrap_or_else(|| partition_key_hash(&self.partition_key))
    }
}

/// The hash keys of a batch: records that share the partition key of the record
/// before them (a file batch shares one) share its hash, computed once; the
/// distinct keys are hashed together ([`crate::digest::digests`]).
pub fn hash_keys(records: &[UserRecord]) -> Vec<u128> {
    /// Where a record's hash key comes from.
    enum From {
        Explicit(u128),
        /// The MD5 of `keys[i]`.
        Key(usize),
    }
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut last: Option<&str> = None;
    let mut from = Vec::with_capacity(records.len());
    for r in records {
        from.push(match r.explicit_hash_key {
            Some(e) => From::Explicit(e),
            None => {
                if last != Some(r.partition_key.as_str()) {
                    keys.push(r.partition_key.as_bytes());
                    last = Some(&r.partition_key);
                }
                From::Key(keys.len() - 1)
            }
        });
    }
    let digests = crate::digest::digests(&keys);
    from.into_iter()
        .map(|f| match f {
            From::Explicit(e) => e,
            From::Key(i) => u128::from_be_bytes(digests[i]),
        })
        .collect()
}

/// Checks a partition key: 1 to 256 Unicode characters.
pub fn validate_partition_key(key: &str) -> Result<(), RecordError> {
    if key.is_empty() {
        return Err(RecordError::EmptyPartitionKey);
    }
    // A key of at most 256 bytes has at most 256 characters: skip the count.
    if key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(RecordError::PartitionKeyTooLong { chars });
        }
    }
    Ok(())
}

/// MD5 of the partition key's UTF-8 bytes, read as a big-endian integer: the
/// hash key Kinesis itself computes.
pub fn partition_key_hash(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

/// Parses an explicit hash key as Kinesis writes it: a decimal integer in 0..2^128.
pub fn parse_explicit_hash_key(value: &str) -> Result<u128, RecordError> {
    // The value is the client's: quoted in logs and answers, so only its start.
    let invalid = || RecordError::InvalidExplicitHashKey {
        value: excerpt(value),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse::<u128>().map_err(|_| invalid())
}

/// A random partition key, for sources that have no key of their own: 16 hex
/// digits spread records evenly over the hash key space.
pub fn random_partition_key() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Room a record keeps for its record id (`record_id = true`): the id with a
/// cut piece's suffix, its key, quotes and separators.
pub const RECORD_ID_ROOM: usize = 128;

/// Longest part of a user-supplied value quoted in a log line or an answer.
pub const EXCERPT_BYTES: usize = 64;

/// `value` cut to [`EXCERPT_BYTES`] at a character boundary and marked with `…`
/// when it was cut: safe to quote in a log line or an answer whatever its size.
pub fn excerpt(value: &str) -> String {
    if value.len() <= EXCERPT_BYTES {
        return value.to_owned();
    }
    let mut end = EXCERPT_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_hash_keys_match_one_by_one() {
        let records = vec![
            UserRecord::new("a", "1"),
            UserRecord::new("a", "2"),
            UserRecord {
                partition_key: "a".into(),
                explicit_hash_key: Some(7),
                data: "3".into(),
            },
            UserRecord::new("a", "4"),
            UserRecord::new("b", "5"),
            UserRecord::new("a", "6"),
        ];
        let one_by_one: Vec<u128> = records.iter().map(UserRecord::hash_key).collect();
        assert_eq!(hash_keys(&records), one_by_one);
        assert_eq!(one_by_one[2], 7);

        // Many distinct keys of every length up to the limit (hashed together,
        // several per vector where the CPU allows), some repeated, some explicit.
        let records: Vec<UserRecord> = (0..300)
            .map(|i| UserRecord {
                partition_key: "é".repeat(i % 128) + &(i / 3).to_string(),
                explicit_hash_key: (i % 11 == 0).then_some(i as u128),
                data: "x".into(),
            })
            .collect();
        let one_by_one: Vec<u128> = records.iter().map(UserRecord::hash_key).collect();
        assert_eq!(hash_keys(&records), one_by_one);
    }

    #[test]
    fn partition_key_limits() {
        assert_eq!(
            validate_partition_key(""),
            Err(RecordError::EmptyPartitionKey)
        );
        assert!(validate_partition_key(&"k".repeat(256)).is_ok());
        // 256 characters of 4 bytes each are within the limit.
        assert!(validate_partition_key(&"🙂".repeat(256)).is_ok());
        assert_eq!(
            validate_partition_key(&"k".repeat(257)),
            Err(RecordError::PartitionKeyTooLong { chars: 257 })
        );
    }

    /// Up to the 10 MiB of a stream raised with UpdateMaxRecordSize: the
    /// stream's own limit is checked when the record is sent.
    #[test]
    fn record_size_limit_counts_the_partition_key() {
        let ok = UserRecord::new("ab", vec![0u8; MAX_LARGE_RECORD_BYTES - 2]);
        assert!(ok.validate().is_ok());
        let over_default = UserRecord::new("ab", vec![0u8; MAX_RECORD_BYTES]);
        assert!(over_default.validate().is_ok());
        let big = UserRecord::new("abc", vec![0u8; MAX_LARGE_RECORD_BYTES - 2]);
        assert_eq!(
            big.validate(),
            Err(RecordError::TooLarge {
                bytes: MAX_LARGE_RECORD_BYTES + 1
            })
        );
        assert_eq!(
            big.validate().unwrap_err().to_string(),
            "record of 10485761 bytes exceeds the 10485760-byte Kinesis limit"
        );
    }

    #[test]
    fn explicit_hash_key_parsing() {
        assert_eq!(parse_explicit_hash_key("0"), Ok(0));
        assert_eq!(
            parse_explicit_hash_key("340282366920938463463374607431768211455"),
            Ok(u128::MAX)
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            "340282366920938463463374607431768211456",
            " 1",
        ] {
            assert!(parse_explicit_hash_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn md5_hash_key_is_big_endian() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(
            partition_key_hash("a"),
            0x0cc175b9c0f1b6a831c399e269772661u128
        );
    }

    #[test]
    fn excerpts_are_bounded_and_cut_between_characters() {
        assert_eq!(excerpt("short"), "short");
        let long = "9".repeat(8 << 20);
        let e = excerpt(&long);
        assert!(e.starts_with(&"9".repeat(64)), "{e}");
        assert_eq!(e.len(), 64 + "…".len(), "{e}");
        let wide = "é".repeat(100); // 2 bytes each: 64 is a boundary, 63 is not
        assert_eq!(excerpt(&wide).chars().filter(|&c| c == 'é').count(), 32);
        let odd = format!("a{}", "é".repeat(100));
        assert_eq!(excerpt(&odd).chars().filter(|&c| c == 'é').count(), 31);
    }
}
