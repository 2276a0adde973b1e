//! The fields a parser reads from a line: keys and values borrowed from the
//! line (or the parser) where they can be, so a preset allocates little.

use std::borrow::Cow;

/// A field's value, as it goes into the JSON record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    /// JSON `null` (a `-` in the presets that say so, an absent optional group).
    Null,
    /// A string, escaped when the record is written.
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// JSON text written as it is (an object a parser built, such as RFC 5424
    /// structured data); must be valid JSON.
    Json(Cow<'a, str>),
}

/// The fields of one line, in the order they are written.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Fields<'a> {
    pub entries: Vec<(Cow<'a, str>, Value<'a>)>,
}

impl<'a> Fields<'a> {
    /// Appends a field.
    #[inline]
    pub(crate) fn push(&mut self, key: impl Into<Cow<'a, str>>, value: Value<'a>) {
        self.entries.push((key.into(), value));
    }

    /// Appends a string field borrowed from the line.
    #[inline]
    pub(crate) fn str(&mut self, key: &'static str, value: &'a str) {
        self.entries
            .push((Cow::Borrowed(key), Value::Str(Cow::Borrowed(value))));
    }

    /// The value of `key`, if a field has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Why a line is not what its parser reads: the metric's `reason` label, the
/// part of the format that did not match (for the log) and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Bounded label: `no_match` (the line is not in the format), `columns`
    /// (a CSV line with another number of columns than named), `incomplete`
    /// (a line ended inside a quoted field or a partial line was never closed).
    pub reason: &'static str,
    /// Which part of the format failed, in words (`"the status code"`,
    /// `"group 3 (?P<status>\\d+)"`).
    pub part: Cow<'static, str>,
    /// Byte offset in the line where it failed (0 when unknown).
    pub at: usize,
}

impl Failure {
    pub(crate) fn no_match(part: impl Into<Cow<'static, str>>, at: usize) -> Failure {
        Failure {
            reason: "no_match",
            part: part.into(),
            at,
        }
    }
}
