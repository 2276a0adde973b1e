//! CSV lines (RFC 4180 quoting) and the Kinesis Agent's CSVTOJSON split.
//!
//! [`Csv::split`] reads a record as Python's `csv.reader` reads it with the
//! default dialect (`doublequote`, no `skipinitialspace`, not `strict`), which
//! is the reference the tests are checked against: a quote opens a quoted field
//! only at the start of a field, so a quote inside an unquoted field is an
//! ordinary character, and text after a closing quote is added to the field.
//! The one difference: a record that ends inside a quoted field is a failure
//! (`incomplete`) where Python returns the field so far (its `strict` mode
//! refuses it too), because here it means a record the file framer could not
//! complete. A record joined from several lines (`Join::CsvQuote`) holds its
//! newlines inside quoted fields and is read as one.
//!
//! [`agent_split`] is the agent's split: Java's `String.split(regex)`, with no
//! quoting at all.

use std::borrow::Cow;

use regex::Regex;

use super::super::value::Failure;

/// The CSV dialect of a block: one-byte delimiter and quote (`None`: no
/// quoting, every quote byte is data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Csv {
    pub delimiter: u8,
    pub quote: Option<u8>,
}

/// Where the reader is in a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a field.
    Start,
    /// In an unquoted field (or after a quoted part).
    Unquoted,
    /// Inside quotes.
    Quoted,
    /// Just after a quote inside quotes: a closing quote, or the first of two.
    QuoteInQuoted,
}

/// One field being read: borrowed while it is a plain slice of the line,
/// owned once a doubled quote or a quoted part followed by more text made it
/// differ from the line.
enum Field {
    Slice(usize, usize),
    Owned(Vec<u8>),
}

impl Field {
    /// Adds the byte at `i` of `bytes`, the next one of the field.
    fn add(&mut self, bytes: &[u8], i: usize) {
        match self {
            Field::Slice(_, end) if *end == i => *end = i + 1,
            Field::Slice(start, end) => {
                let mut v = bytes[*start..*end].to_vec();
                v.push(bytes[i]);
                *self = Field::Owned(v);
            }
            Field::Owned(v) => v.push(bytes[i]),
        }
    }

    fn finish<'a>(self, line: &'a str) -> Cow<'a, str> {
        match self {
            Field::Slice(start, end) => match line.get(start..end) {
                Some(s) => Cow::Borrowed(s),
                // A non-ASCII delimiter or quote byte cut a character.
                None => String::from_utf8_lossy(&line.as_bytes()[start..end]),
            },
            Field::Owned(v) => match String::from_utf8(v) {
                Ok(s) => Cow::Owned(s),
                Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
            },
        }
    }
}

impl Csv {
    /// Splits `line` into its fields, appended to `out` (cleared first). An
    /// empty line has no fields (as in Python). Fails with `incomplete` when
    /// the line ends inside a quoted field; never otherwise.
    pub(crate) fn split<'a>(
        &self,
        line: &'a str,
        out: &mut Vec<Cow<'a, str>>,
    ) -> Result<(), Failure> {
        out.clear();
        if line.is_empty() {
            return Ok(());
        }
        let bytes = line.as_bytes();
        let quote = self.quote;
        let mut state = State::Start;
        let mut field = Field::Slice(0, 0);
        let mut quote_at = 0;
        for (i, &b) in bytes.iter().enumerate() {
            match state {
                State::Start | State::Unquoted if b == self.delimiter => {
                    let done = std::mem::replace(&mut field, Field::Slice(i + 1, i + 1));
                    out.push(done.finish(line));
                    state = State::Start;
                }
                State::Start if Some(b) == quote => {
                    field = Field::Slice(i + 1, i + 1);
                    quote_at = i;
                    state = State::Quoted;
                }
                State::Start | State::Unquoted => {
                    field.add(bytes, i);
                    state = State::Unquoted;
                }
                State::Quoted if Some(b) == quote => state = State::QuoteInQuoted,
                State::Quoted => field.add(bytes, i),
                State::QuoteInQuoted if Some(b) == quote => {
                    // A doubled quote: one quote in the field.
                    field.add(bytes, i);
                    state = State::Quoted;
                }
                State::QuoteInQuoted if b == self.delimiter => {
                    let done = std::mem::replace(&mut field, Field::Slice(i + 1, i + 1));
                    out.push(done.finish(line));
                    state = State::Start;
                }
                State::QuoteInQuoted => {
                    // Text after the closing quote: part of the field.
                    field.add(bytes, i);
                    state = State::Unquoted;
                }
            }
        }
        if state == State::Quoted {
            return Err(Failure {
                reason: "incomplete",
                part: Cow::Borrowed("a quoted field (no closing quote)"),
                at: quote_at,
            });
        }
        out.push(field.finish(line));
        Ok(())
    }
}

/// Splits `line` as Java's `line.split(delimiter)` does, which is what the
/// Kinesis Agent's CSVTOJSON does: the text between matches of the regex;
/// trailing empty strings removed; a zero-width match at the very start gives
/// no empty leading string (Java 8 and later); a line the regex does not match
/// is one field (an empty line too: `[""]`); a line of delimiters only gives
/// no field. After an empty match the search goes on one character later,
/// after a non-empty one at its end (so an empty match may follow it), as
/// Java's `Matcher.find` does.
pub(crate) fn agent_split<'a>(line: &'a str, delimiter: &Regex) -> Vec<&'a str> {
    let mut fields = Vec::new();
    let mut index = 0;
    let mut from = 0;
    while from <= line.len() {
        let Some(m) = delimiter.find_at(line, from) else {
            break;
        };
        from = if m.is_empty() {
            let next = line[m.end()..].chars().next();
            m.end() + next.map_or(1, char::len_utf8)
        } else {
            m.end()
        };
        if index == 0 && m.start() == 0 && m.is_empty() {
            continue;
        }
        fields.push(&line[index..m.start()]);
        index = m.end();
    }
    if index == 0 {
        // Java's "no match": the line as it is (a match that ends at 0 is
        // empty and skipped above).
        return vec![line];
    }
    fields.push(&line[index..]);
    while fields.last() == Some(&"") {
        fields.pop();
    }
    fields
}

#[cfg(test)]
mod tests;
