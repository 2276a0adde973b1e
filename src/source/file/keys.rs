//! Partition keys of file records: the file's path cut to a key's length, and a
//! JSON field of the line.
//!
//! State: none. Callers: batch.rs (the key of each record).

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};

use crate::source::json::JsonKey;

use super::MAX_KEY_BYTES;

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
pub(super) fn json_field(line: &[u8], field: &str) -> Option<String> {
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
