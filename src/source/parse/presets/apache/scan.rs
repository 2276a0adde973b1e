//! A cursor over one log line, for the hand-written Apache and nginx readers:
//! it moves forward over the line's bytes and hands out slices of it, so that
//! values are borrowed from the line, and every step that fails says which
//! part of the format it was reading and where.
//!
//! Positions only ever stop on ASCII bytes (spaces, quotes, brackets) or at
//! the ends of the line, so every slice falls on a UTF-8 boundary.

use std::borrow::Cow;

use super::super::super::value::{Failure, Value};

/// A position in a line, moving forward.
pub(in super::super) struct Scanner<'a> {
    line: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    pub(in super::super) fn new(line: &'a str) -> Scanner<'a> {
        Scanner { line, at: 0 }
    }

    /// The byte offset reached.
    pub(in super::super) fn at(&self) -> usize {
        self.at
    }

    /// The rest of the line, not consumed.
    pub(in super::super) fn rest(&self) -> &'a str {
        // `at` is on a UTF-8 boundary (see the module's header).
        &self.line[self.at..]
    }

    pub(in super::super) fn is_done(&self) -> bool {
        self.at >= self.line.len()
    }

    /// A failure of `part` here.
    pub(in super::super) fn fail(&self, part: &'static str) -> Failure {
        Failure::no_match(part, self.at)
    }

    /// Moves over `len` bytes, which end on an ASCII byte or the line's end.
    pub(in super::super) fn skip(&mut self, len: usize) {
        self.at = (self.at + len).min(self.line.len());
    }

    /// Consumes `b` if it is next.
    pub(in super::super) fn eat(&mut self, b: u8) -> bool {
        let next = self.line.as_bytes().get(self.at) == Some(&b);
        self.at += usize::from(next);
        next
    }

    /// Consumes `s` if it is next.
    pub(in super::super) fn eat_str(&mut self, s: &str) -> bool {
        let next = self.rest().starts_with(s);
        if next {
            self.at += s.len();
        }
        next
    }

    /// Consumes `b`, or fails naming `part`.
    pub(in super::super) fn byte(&mut self, b: u8, part: &'static str) -> Result<(), Failure> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.fail(part))
        }
    }

    /// A non-empty run of bytes up to the next space or the end of the line
    /// (the space is left).
    pub(in super::super) fn token(&mut self, part: &'static str) -> Result<&'a str, Failure> {
        let bytes = &self.line.as_bytes()[self.at..];
        let len = memchr::memchr(b' ', bytes).unwrap_or(bytes.len());
        if len == 0 {
            return Err(self.fail(part));
        }
        Ok(self.take(len))
    }

    /// The bytes up to the next `b` (possibly none), consuming the `b` too.
    pub(in super::super) fn until(
        &mut self,
        b: u8,
        part: &'static str,
    ) -> Result<&'a str, Failure> {
        let bytes = &self.line.as_bytes()[self.at..];
        match memchr::memchr(b, bytes) {
            Some(len) => {
                let s = self.take(len);
                self.at += 1;
                Ok(s)
            }
            None => Err(Failure::no_match(part, self.line.len())),
        }
    }

    /// A field in double quotes whose quotes and backslashes inside are
    /// escaped with a backslash (Apache's `\"`, nginx's `\x22`): what is
    /// between the quotes, as written, and whether it holds a backslash.
    /// The opening quote must be next; the field ends at the first quote that
    /// is not escaped.
    pub(in super::super) fn quoted(&mut self, part: &'static str) -> Result<Quoted<'a>, Failure> {
        if !self.eat(b'"') {
            return Err(self.fail(part));
        }
        let bytes = self.line.as_bytes();
        let start = self.at;
        let mut i = start;
        let mut escaped = false;
        // To the next quote or backslash at once.
        while let Some(n) = bytes.get(i..).and_then(|b| memchr::memchr2(b'"', b'\\', b)) {
            i += n;
            match bytes[i] {
                b'"' => {
                    let raw = &self.line[start..i];
                    self.at = i + 1;
                    return Ok(Quoted { raw, escaped });
                }
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                _ => i += 1,
            }
        }
        Err(Failure::no_match(part, self.line.len()))
    }

    fn take(&mut self, len: usize) -> &'a str {
        let s = &self.line[self.at..self.at + len];
        self.at += len;
        s
    }
}

/// The inside of a quoted field as written in the line.
#[derive(Clone, Copy)]
pub(in super::super) struct Quoted<'a> {
    pub raw: &'a str,
    /// Whether `raw` holds a backslash, so that it needs [`unescape`].
    pub escaped: bool,
}

impl<'a> Quoted<'a> {
    /// The value: `-` is null, any other text a string with its escapes
    /// undone.
    pub(in super::super) fn dash_null(self) -> Value<'a> {
        match self.raw {
            "-" => Value::Null,
            raw if self.escaped => Value::Str(unescape(raw)),
            raw => Value::Str(Cow::Borrowed(raw)),
        }
    }
}

/// `raw` with the escapes Apache (`ap_escape_logitem`) and nginx
/// (`escape=default`) write undone: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\v`,
/// `\f` and `\xHH` (a byte; bytes that do not make UTF-8 become U+FFFD). Any
/// other backslash is kept as it is. Borrowed when there is nothing to undo.
pub(in super::super) fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let (byte, len) = match b[i + 1] {
            b'"' => (b'"', 2),
            b'\\' => (b'\\', 2),
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b't' => (b'\t', 2),
            b'b' => (0x08, 2),
            b'v' => (0x0b, 2),
            b'f' => (0x0c, 2),
            b'x' => match (b.get(i + 2).and_then(hex), b.get(i + 3).and_then(hex)) {
                (Some(hi), Some(lo)) => (hi << 4 | lo, 4),
                _ => (b'\\', 1),
            },
            _ => (b'\\', 1),
        };
        out.push(byte);
        i += len;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A run of ASCII digits as a number; `None` for anything else (a sign, an
/// empty string, a number past `i64`).
pub(in super::super) fn int(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &c in s.as_bytes() {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d))?;
    }
    Some(n)
}

/// `s` as a string value, `-` as null.
pub(in super::super) fn dash_null(s: &str) -> Value<'_> {
    if s == "-" {
        Value::Null
    } else {
        Value::Str(Cow::Borrowed(s))
    }
}

/// The fields as the JSON object text they make, keys in order (for tests
/// to compare with the records the docs show).
#[cfg(test)]
pub(in super::super) fn to_json(fields: &super::super::super::value::Fields<'_>) -> String {
    let text = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let items: Vec<String> = fields
        .entries
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Null => "null".to_string(),
                Value::Str(s) => text(s),
                Value::Int(n) => n.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Json(j) => j.to_string(),
            };
            format!("{}:{v}", text(k))
        })
        .collect();
    format!("{{{}}}", items.join(","))
}
