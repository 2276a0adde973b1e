//! How a bad value is quoted in a problem: a leaf every section's check uses.

/// A TOML value as the operator wrote it, for a message: a string in quotes,
/// anything else as TOML.
pub(super) fn written_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}
