//! Which added keys a JSON object line already has (for `json_merge`), read
//! the way `serde_json::Value` would read the line, so a merged record is valid
//! JSON for any consumer.

use crate::source::json::JsonKey;

/// Which added keys a line has.
pub(super) struct Has {
    pub(super) timestamp: bool,
    pub(super) id: bool,
    pub(super) entries: Vec<bool>,
}

/// A JSON value read as `serde_json::Value` would read it, and dropped: its
/// strings are checked (UTF-8, escapes, surrogate pairs), its numbers parsed, its
/// depth bounded. serde's `IgnoredAny` skips a string's bytes unchecked and a
/// number's digits unparsed, so a line it passes may not parse elsewhere.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> serde::de::Visitor<'de> for Checked {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// The added keys a JSON object line already has, and how many keys it has;
/// `None` when the line is not exactly one JSON object that any JSON reader
/// reads (see [`Checked`]).
pub(super) fn top_level_keys(
    line: &[u8],
    [timestamp, id]: [Option<&str>; 2],
    entries: &[(String, String)],
) -> Option<(Has, usize)> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};

    struct Keys<'e>([Option<&'e str>; 2], &'e [(String, String)]);
    impl<'de> Visitor<'de> for Keys<'_> {
        type Value = (Has, usize);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(Has, usize), A::Error> {
            let mut has = Has {
                timestamp: false,
                id: false,
                entries: vec![false; self.1.len()],
            };
            let mut n = 0;
            while let Some(JsonKey(k)) = map.next_key::<JsonKey<'de>>()? {
                n += 1;
                if Some(k.as_ref()) == self.0[0] {
                    has.timestamp = true;
                } else if Some(k.as_ref()) == self.0[1] {
                    has.id = true;
                } else if let Some(i) = self.1.iter().position(|(name, _)| *name == k) {
                    has.entries[i] = true;
                }
                map.next_value::<Checked>()?;
            }
            Ok((has, n))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(line);
    let found = de.deserialize_map(Keys([timestamp, id], entries)).ok()?;
    de.end().ok()?;
    Some(found)
}
