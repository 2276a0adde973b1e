//! Parsers: a line read into the fields of a JSON object record.

pub(crate) mod presets;
pub(crate) mod value;
