//! Checks shared by every section's validation: names, paths and record
//! formats. It knows the raw types and no section.

use std::path::Path;

use std::collections::BTreeMap;

use super::parse::RawParse;
use super::raw::{FormatName, JsonFormat, RecordFormat};
use super::BUILT_IN_KEYS;

/// Paths are absolute: a relative one would depend on the directory the agent
/// happens to start in.
pub(super) fn check_absolute(path: &Path, field: &str, problems: &mut Vec<String>) {
    if !path.is_absolute() {
        problems.push(format!("{field} {path:?} is not an absolute path"));
    }
}

/// Smallest `max_record_bytes` of a json file block: room for the added keys
/// beside some of the line.
pub(super) const MIN_JSON_RECORD_BYTES: usize = 1024;

/// The keys of a line block that shape its json records, as written.
pub(super) struct JsonKeys<'a> {
    pub format: FormatName,
    pub fields: &'a BTreeMap<String, String>,
    pub merge: bool,
    pub ec2_identity: bool,
    pub rename: &'a BTreeMap<String, String>,
    pub timestamp_format: Option<&'a str>,
    pub parse: Option<&'a RawParse>,
    /// The block reads files (a csv header needs a first line).
    pub file: bool,
    /// `record_id` and `record_id_key`.
    pub record_id: bool,
    pub record_id_key: &'a str,
}

/// A block's `format`, `fields`, `json_merge`, `ec2_identity`, `rename`,
/// `timestamp_format` and `parse` (which makes the records json).
pub(super) fn record_format(
    field: &str,
    k: JsonKeys<'_>,
    problems: &mut Vec<String>,
) -> RecordFormat {
    super::check_record_id(field, k.record_id, k.record_id_key, k.fields, problems);
    if k.format == FormatName::Raw && k.parse.is_none() {
        if !k.fields.is_empty() {
            problems.push(format!("{field}.fields needs format = \"json\""));
        }
        let set = [
            (k.merge, "json_merge"),
            (k.ec2_identity, "ec2_identity"),
            (!k.rename.is_empty(), "rename"),
            (k.timestamp_format.is_some(), "timestamp_format"),
        ];
        for (set, key) in set {
            if set {
                problems.push(format!("{field}.{key} needs format = \"json\""));
            }
        }
        return RecordFormat::Raw;
    }
    for key in k.fields.keys() {
        if key.is_empty() {
            problems.push(format!("{field}.fields has an empty key"));
        } else if BUILT_IN_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "{field}.fields key {key:?} collides with a key every json record has ({})",
                BUILT_IN_KEYS.join(", ")
            ));
        }
    }
    if k.merge && k.parse.is_some() {
        problems.push(format!(
            "{field}.json_merge and a parse table exclude each other (a parsed line is never merged)"
        ));
    }
    let (rename, timestamp_format) =
        super::parse::json_keys(field, k.rename, k.timestamp_format, problems);
    let parse = k
        .parse
        .and_then(|p| super::parse::parse_table(field, p, k.file, problems));
    RecordFormat::Json(JsonFormat {
        fields: k
            .fields
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect(),
        merge: k.merge,
        ec2_identity: k.ec2_identity,
        rename,
        timestamp_format,
        parse,
        id_key: k.record_id.then(|| k.record_id_key.to_owned()),
    })
}

/// The json format of a `[[journald]]` block: its `parse` table's (raw without
/// one); `json`: its `format` is `"json"`, which a parse table replaces.
pub(super) fn journald_parse_format(
    field: &str,
    json: bool,
    parse: Option<&RawParse>,
    rename: &BTreeMap<String, String>,
    timestamp_format: Option<&str>,
    problems: &mut Vec<String>,
) -> RecordFormat {
    if parse.is_none() {
        for (set, key) in [
            (!rename.is_empty(), "rename"),
            (timestamp_format.is_some(), "timestamp_format"),
        ] {
            if set {
                problems.push(format!("{field}.{key} needs a parse table"));
            }
        }
        return RecordFormat::Raw;
    }
    if json {
        problems.push(format!(
            "{field}: a parse table and format = \"json\" exclude each other (a parsed MESSAGE makes the record)"
        ));
    }
    let keys = JsonKeys {
        format: FormatName::Json,
        fields: &BTreeMap::new(),
        merge: false,
        ec2_identity: false,
        rename,
        timestamp_format,
        parse,
        file: false,
        record_id: false,
        record_id_key: "",
    };
    record_format(field, keys, problems)
}
