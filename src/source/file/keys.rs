//! Partition keys of file records: the file's path, a JSON field of the line, or
//! random; and the records they go into.

use super::*;
use crate::source::json::JsonKey;

/// The end of `s[..max]` moved back to a UTF-8 character boundary, when one is
/// within 3 bytes (binary data is cut at `max`).
pub(super) fn char_boundary(s: &[u8], max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut end = max;
    while end > 0 && max - end < 3 && (s[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    if end == 0 || (s[end] & 0xC0) == 0x80 {
        max
    } else {
        end
    }
}

/// Cuts a key to at most [`MAX_KEY_BYTES`], keeping its end (the file name of a
/// path), at a character boundary.
pub(super) fn key_tail(s: &str) -> String {
    if s.len() <= MAX_KEY_BYTES {
        return s.to_owned();
    }
    let mut start = s.len() - MAX_KEY_BYTES;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

/// The value of top-level `field` of a JSON object line, as a string (strings as
/// they are, numbers and booleans as written). Stops parsing once found.
pub fn json_field(line: &[u8], field: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};

    struct Find<'f, 'o> {
        field: &'f str,
        out: &'o mut Option<String>,
    }
    impl<'de> DeserializeSeed<'de> for Find<'_, '_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Find<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(JsonKey(k)) = map.next_key::<JsonKey<'de>>()? {
                if k == self.field {
                    *self.out = match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(s) => Some(s),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        serde_json::Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    };
                    // Found: the rest of the line need not be parsed.
                    return Err(A::Error::custom("found"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }

    let mut out = None;
    let mut de = serde_json::Deserializer::from_slice(line);
    let _ = Find {
        field,
        out: &mut out,
    }
    .deserialize(&mut de);
    out
}

impl<S: Sink> Tail<S> {
    /// Adds the record of a line to the batch (in the json format, the records: a
    /// line that overflows once wrapped is cut per `oversized`, and counted),
    /// sending the batch when it is full.
    pub(super) fn record(&mut self, t: &mut Tailed, data: Bytes) -> Result<(), FileError> {
        // The key is the line's, not its wrapping's: equal lines hash alike.
        let partition_key = match &t.block.partition_key {
            // One random key per batch: the batch goes to one shard, in order, and
            // is hashed once; batches spread over the shards.
            PartitionKey::Random => match t.batch.first() {
                Some(first) => first.partition_key.clone(),
                None => random_partition_key(),
            },
            PartitionKey::LineHash => format!("{:016x}", fnv1a(&data)),
            PartitionKey::FilePath => t.path_key.clone(),
            PartitionKey::JsonField(field) => match json_field(&data, field) {
                Some(k) if !k.is_empty() && k.len() <= MAX_KEY_BYTES => k,
                _ => {
                    t.counts.key_fallbacks += 1;
                    random_partition_key()
                }
            },
        };
        match t.format.as_mut() {
            None => {
                t.batch_bytes += data.len() + partition_key.len();
                t.batch.push(UserRecord {
                    partition_key,
                    explicit_hash_key: None,
                    data,
                });
            }
            Some(format) => {
                let (batch, batch_bytes) = (&mut t.batch, &mut t.batch_bytes);
                let cut =
                    format.format(&data, t.block.max_record_bytes, t.block.oversized, |data| {
                        *batch_bytes += data.len() + partition_key.len();
                        batch.push(UserRecord {
                            partition_key: partition_key.clone(),
                            explicit_hash_key: None,
                            data,
                        });
                    });
                match cut {
                    Cut::None => {}
                    Cut::Split => t.counts.split += 1,
                    Cut::Truncated => t.counts.truncated += 1,
                }
            }
        }
        if t.batch_bytes >= BATCH_BYTES {
            self.spool_batch(t)?;
        }
        Ok(())
    }
}
