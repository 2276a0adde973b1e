//! Checks shared by every section's validation: names, paths and record
//! formats. It knows the raw types and no section.

use std::path::Path;

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

/// A block's `format`, `fields` and `json_merge`.
pub(super) fn record_format(
    field: &str,
    name: FormatName,
    fields: &std::collections::BTreeMap<String, String>,
    [merge, ec2_identity]: [bool; 2],
    problems: &mut Vec<String>,
) -> RecordFormat {
    if name == FormatName::Raw {
        if !fields.is_empty() {
            problems.push(format!("{field}.fields needs format = \"json\""));
        }
        for (set, key) in [(merge, "json_merge"), (ec2_identity, "ec2_identity")] {
            if set {
                problems.push(format!("{field}.{key} needs format = \"json\""));
            }
        }
        return RecordFormat::Raw;
    }
    for key in fields.keys() {
        if key.is_empty() {
            problems.push(format!("{field}.fields has an empty key"));
        } else if BUILT_IN_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "{field}.fields key {key:?} collides with a key every json record has ({})",
                BUILT_IN_KEYS.join(", ")
            ));
        }
    }
    RecordFormat::Json(JsonFormat {
        fields: fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        merge,
        ec2_identity,
    })
}
