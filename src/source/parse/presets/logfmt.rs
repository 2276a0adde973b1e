//! logfmt: `key=value key2="quoted value" flag` pairs, read as the reference
//! implementation (github.com/go-logfmt/logfmt) reads them, more leniently
//! about unquoted values.
//!
//! The keys are the line's, borrowed from it; a value is borrowed unless it
//! had escapes to decode.

use std::borrow::Cow;
use std::collections::HashMap;

use super::super::value::{Failure, Fields, Value};

/// `logfmt`: space-separated `key=value` pairs.
///
/// Keys are the line's: a key is a run of bytes above space other than `=`
/// and `"`. Values:
/// - `key=value`: a string, up to the next space or control byte (`=` and `"`
///   inside it are kept: `url=/a?b=c`);
/// - `key="a \"quoted\" value"`: a string, its JSON escapes (`\"`, `\\`,
///   `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX`) decoded; another backslash
///   is kept as it is;
/// - `key=`: the empty string;
/// - `flag` (a key alone): `true` (bool).
///
/// A key that comes again replaces the value it had (the last one wins), in
/// the place where it came first. Bytes at or below space (and the space
/// itself) separate pairs.
///
/// Fails with `no_match` when the line has no `key=` at all (plain text, not
/// logfmt), when a `=` or `"` stands where a key starts, or when a quoted
/// value is followed by something else than a space; with `incomplete` when a
/// quoted value is not closed.
///
/// `level=info msg="user \"bob\" logged in" took=12ms cached` gives
/// `{"level":"info","msg":"user \"bob\" logged in","took":"12ms","cached":true}`.
pub(super) fn parse<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    let b = line.as_bytes();
    let mut keys = Keys::default();
    let mut pairs = 0;
    let mut i = 0;
    loop {
        while b.get(i).is_some_and(|&c| c <= b' ') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while b
            .get(i)
            .is_some_and(|&c| c > b' ' && c != b'=' && c != b'"')
        {
            i += 1;
        }
        if i == start {
            return Err(Failure::no_match("a key", i));
        }
        // The key ends at an ASCII byte or at the end: a character boundary.
        let key = &line[start..i];
        let value = match b.get(i) {
            Some(b'=') => {
                pairs += 1;
                let (value, end) = value(line, i + 1)?;
                i = end;
                Value::Str(value)
            }
            Some(b'"') => return Err(Failure::no_match("a key", i)),
            _ => Value::Bool(true),
        };
        keys.set(out, key, value);
    }
    if pairs == 0 {
        return Err(Failure::no_match("a key=value pair", 0));
    }
    Ok(())
}

/// The value at `at` (after its `=`) and the offset after it.
fn value(line: &str, at: usize) -> Result<(Cow<'_, str>, usize), Failure> {
    let b = line.as_bytes();
    if b.get(at) != Some(&b'"') {
        let len = b[at..].iter().take_while(|&&c| c > b' ').count();
        return Ok((Cow::Borrowed(&line[at..at + len]), at + len));
    }
    let (value, end) = quoted(line, at + 1)?;
    if b.get(end).is_some_and(|&c| c > b' ') {
        return Err(Failure::no_match("a space after a quoted value", end));
    }
    Ok((value, end))
}

/// A quoted value from `at` (after its opening quote): the value decoded and
/// the offset after its closing quote.
fn quoted(line: &str, at: usize) -> Result<(Cow<'_, str>, usize), Failure> {
    super::quoted_value(line, at, unescape).ok_or(Failure {
        reason: "incomplete",
        part: Cow::Borrowed("a quoted value (no closing quote)"),
        at: at - 1,
    })
}

/// Decodes the escape at `at` (a backslash) into `s`; returns the offset
/// after it. An escape that is not JSON's is kept as it is.
fn unescape(line: &str, at: usize, s: &mut String) -> usize {
    let b = line.as_bytes();
    let decoded = match b.get(at + 1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => return unicode(line, at, s),
        _ => {
            s.push('\\');
            return at + 1;
        }
    };
    s.push(decoded);
    at + 2
}

/// `\uXXXX` at `at` (a surrogate pair as two of them): decoded into `s`; kept
/// as it is when it is not a valid one. Returns the offset after it.
fn unicode(line: &str, at: usize, s: &mut String) -> usize {
    let hex = |from: usize| {
        line.get(from..from + 4)
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let Some(first) = hex(at + 2) else {
        s.push('\\');
        return at + 1;
    };
    if let Some(c) = char::from_u32(first) {
        s.push(c);
        return at + 6;
    }
    let low = (line.get(at + 6..at + 8) == Some("\\u"))
        .then(|| hex(at + 8))
        .flatten()
        .filter(|low| (0xDC00..0xE000).contains(low));
    match low.and_then(|low| char::from_u32(0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00))) {
        Some(c) if (0xD800..0xDC00).contains(&first) => {
            s.push(c);
            at + 12
        }
        _ => {
            s.push('\u{fffd}');
            at + 6
        }
    }
}

/// Where each key is in the fields, so that a key that comes again replaces
/// its value: a scan of the fields while they are few, a map beyond.
#[derive(Default)]
struct Keys<'a> {
    index: HashMap<&'a str, usize>,
}

/// Fields up to which a linear scan finds a key faster than a map.
const SCAN_MAX: usize = 16;

impl<'a> Keys<'a> {
    fn set(&mut self, out: &mut Fields<'a>, key: &'a str, value: Value<'a>) {
        let n = out.entries.len();
        let found = if n <= SCAN_MAX {
            out.entries.iter().position(|(k, _)| k == key)
        } else {
            if self.index.is_empty() {
                for (i, (k, _)) in out.entries.iter().enumerate() {
                    if let Cow::Borrowed(k) = k {
                        self.index.entry(k).or_insert(i);
                    }
                }
            }
            self.index.get(key).copied()
        };
        match found {
            Some(i) => out.entries[i].1 = value,
            None => {
                if !self.index.is_empty() {
                    self.index.insert(key, n);
                }
                out.push(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
