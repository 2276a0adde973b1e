//! One journal entry as `journalctl -o json` writes it: which entries a block
//! selects and the records an entry becomes.
//!
//! A field's value is a string, `null` (journalctl leaves out values it cannot
//! show), an array of numbers (bytes that are not UTF-8) or an array of those (a
//! field the entry holds more than once); the first value is the one matched and
//! sent as the message.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::journald::{Fields, Format, JournalKey, JournaldConfig, Selection};
use crate::config::Oversized;
use crate::record::{random_partition_key, MAX_PARTITION_KEY_CHARS};
use crate::source::record_id::{self, ID_ROOM};

/// A parsed entry.
#[derive(Debug)]
pub(crate) struct Entry {
    fields: Map<String, Value>,
}

/// Why a line of journalctl's output is not an entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EntryError {
    #[error("journalctl wrote a line that is not a JSON object: {0}")]
    NotJson(String),
    #[error("journal entry has no __CURSOR field")]
    NoCursor,
}

/// What an entry became.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Made {
    /// (partition key, data) of each record.
    pub records: Vec<(String, Bytes)>,
    /// The partition key field was missing: the key is random.
    pub key_fallback: bool,
    /// The message was longer than `max_record_bytes`: `"split"` or
    /// `"truncated"`.
    pub oversized: Option<&'static str>,
    /// Not sendable at all (a JSON record too large even without its message).
    pub too_large: bool,
}

/// The bytes of a field value: a string's, or an array of numbers'.
fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(items) if items.iter().all(Value::is_u64) => Some(
            items
                .iter()
                .map(|b| b.as_u64().unwrap_or_default() as u8)
                .collect(),
        ),
        // A field the entry holds more than once: its first value.
        Value::Array(items) => items.first().and_then(value_bytes),
        _ => None,
    }
}

impl Entry {
    pub(crate) fn parse(line: &[u8]) -> Result<Entry, EntryError> {
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(fields)) => {
                if fields.get("__CURSOR").and_then(Value::as_str).is_none() {
                    return Err(EntryError::NoCursor);
                }
                Ok(Entry { fields })
            }
            Ok(_) => Err(EntryError::NotJson("not an object".into())),
            Err(e) => Err(EntryError::NotJson(e.to_string())),
        }
    }

    /// The entry's cursor (checked by [`parse`](Self::parse)).
    pub(crate) fn cursor(&self) -> &str {
        self.fields
            .get("__CURSOR")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// A field's first value as text (lossy for bytes that are not UTF-8).
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.fields
            .get(name)
            .and_then(value_bytes)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Whether `select` sends this entry.
    pub(crate) fn selected(&self, select: &Selection) -> bool {
        let unit = self.text("_SYSTEMD_UNIT");
        let ident = self.text("SYSLOG_IDENTIFIER");
        let is_in = |v: &Option<String>, list: &[String]| {
            v.as_ref().is_some_and(|v| list.iter().any(|x| x == v))
        };
        if is_in(&unit, &select.exclude_units) || is_in(&ident, &select.exclude_identifiers) {
            return false;
        }
        let included = (select.units.is_empty() && select.identifiers.is_empty())
            || is_in(&unit, &select.units)
            || is_in(&ident, &select.identifiers);
        if !included {
            return false;
        }
        match (select.max_priority, self.text("PRIORITY")) {
            (Some(max), Some(p)) => p.trim().parse::<u8>().map_or(true, |p| p <= max),
            _ => true,
        }
    }

    /// The partition key of the entry's records, and whether its field was
    /// missing (the key is random then).
    pub(crate) fn partition_key(&self, config: &JournaldConfig) -> (String, bool) {
        match &config.partition_key {
            JournalKey::Random => (random_partition_key(), false),
            JournalKey::Field(f) => match self.text(f).filter(|k| !k.is_empty()) {
                Some(k) => (k.chars().take(MAX_PARTITION_KEY_CHARS).collect(), false),
                None => (random_partition_key(), true),
            },
        }
    }

    /// The `MESSAGE` field's bytes (empty when it has none).
    pub(crate) fn message(&self) -> Vec<u8> {
        self.fields
            .get("MESSAGE")
            .and_then(value_bytes)
            .unwrap_or_default()
    }

    /// The records this entry becomes under `config` (without a parse table).
    /// `id`: the record id (with `record_id = true`), before `MESSAGE` or
    /// under its key.
    pub(crate) fn records(&self, config: &JournaldConfig, id: Option<&[u8]>) -> Made {
        let mut made = Made::default();
        let (key, fallback) = self.partition_key(config);
        made.key_fallback = fallback;
        let room = if id.is_some() { ID_ROOM } else { 0 };
        let max = config.max_record_bytes.saturating_sub(room).max(1);
        match config.format {
            Format::Message => {
                let message = self.message();
                if message.len() <= max {
                    made.records.push((key, Bytes::from(message)));
                } else if config.oversized == Oversized::Split {
                    made.oversized = Some("split");
                    let message = Bytes::from(message);
                    for start in (0..message.len()).step_by(max) {
                        let end = (start + max).min(message.len());
                        made.records.push((key.clone(), message.slice(start..end)));
                    }
                } else {
                    made.oversized = Some("truncated");
                    made.records.push((key, Bytes::from(message).slice(..max)));
                }
            }
            Format::Json => {
                let mut object = self.json_object(&config.fields);
                for (k, v) in &config.added {
                    object
                        .entry(k.clone())
                        .or_insert_with(|| Value::String(v.clone()));
                }
                let id = config.record_id.as_ref().zip(id).map(|(k, id)| {
                    let id = String::from_utf8_lossy(id).into_owned();
                    object.insert(k.clone(), Value::String(id.clone()));
                    (k.as_str(), id)
                });
                if config.oversized == Oversized::Split {
                    return split_json(made, key, object, max, id);
                }
                return finish_json(made, key, object, max);
            }
        }
        if let Some(id) = id {
            for (piece, (_, data)) in made.records.iter_mut().enumerate() {
                *data = record_id::prefixed(id, piece, data);
            }
        }
        made
    }

    /// The record id of this entry: the origin of its journal's sequence
    /// number id (`s=` of the cursor) and its sequence number (`i=`, hex).
    pub(crate) fn record_id(&self, out: &mut Vec<u8>, origins: &mut record_id::LastOrigin) {
        let cursor = self.cursor();
        let part = |name: &str| {
            cursor
                .split(';')
                .find_map(|p| p.strip_prefix(name))
                .unwrap_or_default()
        };
        let (seqnum_id, seqnum) = (part("s="), part("i="));
        match u64::from_str_radix(seqnum, 16) {
            Ok(n) if !seqnum_id.is_empty() => record_id::write(out, origins.of(seqnum_id), n),
            // A cursor without them (not one journald writes): the whole cursor.
            _ => record_id::write(out, origins.of(cursor), 0),
        }
    }

    fn json_object(&self, fields: &Fields) -> Map<String, Value> {
        match fields {
            Fields::All => self.fields.clone(),
            Fields::Named(names) => names
                .iter()
                .filter_map(|n| self.fields.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }
}

/// Serializes a JSON record; a text `MESSAGE` too long for `max` bytes goes in
/// parts, each record the whole object with the next part of the message, so
/// nothing is lost (as a file's json lines are split). A `MESSAGE` that is not
/// text (bytes that are not UTF-8, an array of numbers) is cut.
fn split_json(
    mut made: Made,
    key: String,
    mut object: Map<String, Value>,
    max: usize,
    id: Option<(&str, String)>,
) -> Made {
    let whole = serde_json::to_vec(&object).expect("a JSON value serializes");
    if whole.len() <= max {
        made.records.push((key, Bytes::from(whole)));
        return made;
    }
    let Some(Value::String(message)) = object.get("MESSAGE").cloned() else {
        return finish_json(made, key, object, max);
    };
    let mut rest: &str = &message;
    let mut piece = 0;
    while !rest.is_empty() {
        if let (Some((k, id)), true) = (&id, piece > 0) {
            object.insert((*k).to_owned(), Value::String(format!("{id}.{piece}")));
        }
        piece += 1;
        // The longest prefix that fits once escaped: start from all of it and
        // take away what overflowed (escaping only grows a part).
        let mut n = rest.len();
        let data = loop {
            object.insert("MESSAGE".into(), Value::String(rest[..n].to_owned()));
            let data = serde_json::to_vec(&object).expect("a JSON value serializes");
            if data.len() <= max {
                break Some(data);
            }
            let excess = data.len() - max;
            if n == 0 {
                break None;
            }
            let mut keep = n.saturating_sub(excess.max(1));
            while !rest.is_char_boundary(keep) {
                keep -= 1;
            }
            n = keep;
        };
        match data {
            Some(data) if n > 0 => {
                made.oversized = Some("split");
                made.records.push((key.clone(), Bytes::from(data)));
                rest = &rest[n..];
            }
            // Not even one character fits beside the other fields.
            _ => {
                made.too_large = true;
                return made;
            }
        }
    }
    made
}

/// Serializes a JSON record, cutting its `MESSAGE` until it fits in `max` bytes.
fn finish_json(mut made: Made, key: String, mut object: Map<String, Value>, max: usize) -> Made {
    loop {
        let data = serde_json::to_vec(&object).expect("a JSON value serializes");
        if data.len() <= max {
            made.records.push((key, Bytes::from(data)));
            return made;
        }
        let excess = data.len() - max;
        match object.get_mut("MESSAGE") {
            Some(Value::String(m)) if !m.is_empty() => {
                made.oversized = Some("truncated");
                let mut keep = m.len().saturating_sub(excess.max(1));
                while !m.is_char_boundary(keep) {
                    keep -= 1;
                }
                m.truncate(keep);
            }
            // Bytes that are not UTF-8: each value takes 2 to 4 bytes of JSON.
            Some(Value::Array(bytes)) if !bytes.is_empty() => {
                made.oversized = Some("truncated");
                let cut = (excess / 4).clamp(1, bytes.len());
                bytes.truncate(bytes.len() - cut);
            }
            _ => {
                made.too_large = true;
                return made;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::journald::Since;

    fn config(format: Format, max: usize) -> JournaldConfig {
        JournaldConfig {
            block: "journald[0]".into(),
            parse_format: crate::config::RecordFormat::Raw,
            name: "j".into(),
            directory: None,
            journalctl: "journalctl".into(),
            select: Selection::default(),
            since: Since::Boot,
            stream: "logs".into(),
            format,
            fields: Fields::Named(vec!["MESSAGE".into(), "_SYSTEMD_UNIT".into()]),
            added: Default::default(),
            partition_key: JournalKey::Field("_SYSTEMD_UNIT".into()),
            max_record_bytes: max,
            oversized: Oversized::Split,
            record_id: None,
        }
    }

    fn entry(extra: &str) -> Entry {
        Entry::parse(format!(r#"{{"__CURSOR":"s=1;i=2"{extra}}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn lines_that_are_not_entries_are_told_apart() {
        assert_eq!(Entry::parse(b"{}").unwrap_err(), EntryError::NoCursor);
        assert!(matches!(Entry::parse(b"[1]"), Err(EntryError::NotJson(_))));
        assert!(matches!(
            Entry::parse(b"{\"a\""),
            Err(EntryError::NotJson(_))
        ));
        assert_eq!(entry("").cursor(), "s=1;i=2");
    }

    #[test]
    fn selection_includes_excludes_and_cuts_by_priority() {
        let e = entry(r#","_SYSTEMD_UNIT":"a.service","SYSLOG_IDENTIFIER":"app","PRIORITY":"6""#);
        let mut s = Selection::default();
        assert!(e.selected(&s));
        s.units = vec!["b.service".into()];
        assert!(!e.selected(&s));
        s.identifiers = vec!["app".into()];
        assert!(e.selected(&s), "an identifier includes it");
        s.exclude_units = vec!["a.service".into()];
        assert!(!e.selected(&s), "an exclusion wins");
        let s = Selection {
            max_priority: Some(5),
            ..Selection::default()
        };
        assert!(!e.selected(&s));
        assert!(entry("").selected(&s), "no priority: sent");
    }

    #[test]
    fn messages_in_bytes_and_repeated_fields_are_read() {
        let e = entry(r#","MESSAGE":[104,105,255],"_SYSTEMD_UNIT":["x.service","y.service"]"#);
        let made = e.records(&config(Format::Message, 100), None);
        assert_eq!(
            made.records,
            [("x.service".to_owned(), Bytes::from_static(b"hi\xff"))]
        );
        assert!(!made.key_fallback);
    }

    #[test]
    fn long_messages_are_split_or_truncated_and_missing_keys_fall_back() {
        let e = entry(r#","MESSAGE":"abcdefghij""#);
        let made = e.records(&config(Format::Message, 4), None);
        let data: Vec<&[u8]> = made.records.iter().map(|(_, d)| &d[..]).collect();
        assert_eq!(data, [&b"abcd"[..], b"efgh", b"ij"]);
        assert_eq!(made.oversized, Some("split"));
        assert!(made.key_fallback);
        assert_eq!(made.records[0].0.len(), 16);
        let mut c = config(Format::Message, 4);
        c.oversized = Oversized::Truncate;
        let made = e.records(&c, None);
        assert_eq!(made.records.len(), 1);
        assert_eq!(&made.records[0].1[..], b"abcd");
    }

    #[test]
    fn json_records_hold_the_chosen_fields_and_stay_valid_when_cut() {
        let e = entry(r#","MESSAGE":"h\u00e9llo \"w\"","_SYSTEMD_UNIT":"a.service","_PID":"1""#);
        let made = e.records(&config(Format::Json, 1000), None);
        let v: Value = serde_json::from_slice(&made.records[0].1).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"MESSAGE": "h\u{e9}llo \"w\"", "_SYSTEMD_UNIT": "a.service"})
        );
        // Regression (issue 22, N11): `split` truncated a json record's
        // MESSAGE without a word. Now every part is sent, each a whole object.
        for max in 30..45 {
            let made = e.records(&config(Format::Json, max), None);
            if made.too_large {
                continue;
            }
            assert_eq!(made.oversized, Some("split"));
            let mut joined = String::new();
            for (_, data) in &made.records {
                assert!(data.len() <= max, "{max}: {data:?}");
                let v: Value = serde_json::from_slice(data).unwrap();
                assert_eq!(v["_SYSTEMD_UNIT"], "a.service");
                joined.push_str(v["MESSAGE"].as_str().unwrap());
            }
            assert_eq!(joined, "h\u{e9}llo \"w\"", "{max}");
            assert!(made.records.len() > 1);
        }
        let mut truncate = config(Format::Json, 0);
        truncate.oversized = Oversized::Truncate;
        for max in 30..45 {
            truncate.max_record_bytes = max;
            let made = e.records(&truncate, None);
            if made.too_large {
                continue;
            }
            let data = &made.records[0].1;
            assert!(data.len() <= max, "{max}: {data:?}");
            let v: Value = serde_json::from_slice(data).unwrap();
            assert!("h\u{e9}llo \"w\"".starts_with(v["MESSAGE"].as_str().unwrap()));
            assert_eq!(made.oversized, Some("truncated"));
        }
        assert!(e.records(&config(Format::Json, 10), None).too_large);
        let bytes = entry(&format!(r#","MESSAGE":{:?}"#, vec![255u8; 1000]));
        let made = bytes.records(&config(Format::Json, 500), None);
        assert_eq!(made.oversized, Some("truncated"));
        assert!(made.records[0].1.len() <= 500);
        let v: Value = serde_json::from_slice(&made.records[0].1).unwrap();
        assert!(v["MESSAGE"].as_array().unwrap().len() > 100);
    }

    #[test]
    fn ids_come_from_the_journal_sequence_and_go_before_message_or_under_a_key() {
        let e =
            Entry::parse(br#"{"__CURSOR":"s=abc;i=1f;b=x;m=1;t=2;x=3","MESSAGE":"hello world"}"#)
                .unwrap();
        let (mut id, mut origins) = (Vec::new(), record_id::LastOrigin::default());
        e.record_id(&mut id, &mut origins);
        let other = Entry::parse(br#"{"__CURSOR":"s=abc;i=20;b=y","MESSAGE":"x"}"#).unwrap();
        let mut next = Vec::new();
        other.record_id(&mut next, &mut origins);
        let text = String::from_utf8(id.clone()).unwrap();
        assert!(text.ends_with("-31"), "{text}");
        assert_eq!(
            text.split('-').next(),
            String::from_utf8(next).unwrap().split('-').next()
        );
        // Message: the id, a space, then the pieces, each with its own suffix.
        let mut c = config(Format::Message, 8 + ID_ROOM);
        c.record_id = Some("record_id".into());
        let made = e.records(&c, Some(&id));
        let pieces: Vec<String> = made
            .records
            .iter()
            .map(|(_, d)| String::from_utf8(d.to_vec()).unwrap())
            .collect();
        assert_eq!(
            pieces,
            [format!("{text} hello wo"), format!("{text}.1 rld")]
        );
        // Json: under the key, and every piece keeps the whole object.
        let mut c = config(Format::Json, 1000);
        c.record_id = Some("rid".into());
        let made = e.records(&c, Some(&id));
        let v: Value = serde_json::from_slice(&made.records[0].1).unwrap();
        assert_eq!(v["rid"], text.as_str());
    }
}
