//! The json record of a parsed line, and what happens to a line its parser
//! cannot read: `wrap` (the json record of the line, with `parse_error`),
//! `raw` or `drop`, per the block's `on_error`; every case counted per block
//! and reason, the first of a block and then one per interval logged with an
//! excerpt and the part of the format that failed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};

use crate::config::parse::OnError;
use crate::config::Oversized;
use crate::metrics::Metrics;
use crate::record::excerpt;
use crate::source::log_limit::LogLimit;
use crate::source::parse::value::{Failure, Value};
use crate::source::parse::{explain, Read};

use super::{escape_into, Cut, JsonFormatter, Separator, ARENA_BYTES};

/// Parse outcomes of a source not yet counted in the metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParseCounts {
    parsed: u64,
    /// (reason, action) → lines.
    errors: Vec<((&'static str, &'static str), u64)>,
}

impl ParseCounts {
    fn add(&mut self, reason: &'static str, action: &'static str, n: u64) {
        match self.errors.iter_mut().find(|(k, _)| *k == (reason, action)) {
            Some((_, c)) => *c += n,
            None => self.errors.push(((reason, action), n)),
        }
    }
}

/// The warning limit of `block`, shared by its files.
pub(super) fn block_log(block: &str) -> Arc<LogLimit> {
    static LIMITS: OnceLock<Mutex<HashMap<String, Arc<LogLimit>>>> = OnceLock::new();
    let mut limits = LIMITS
        .get_or_init(Default::default)
        .lock()
        .expect("the log limits' lock is never poisoned");
    limits.entry(block.to_owned()).or_default().clone()
}

/// What a line became, for `shardline parse`.
#[derive(Debug)]
pub(crate) enum Tried {
    /// Its records, and what was off in its fields (a value that did not
    /// convert, a time that could not be read).
    Records(Vec<Bytes>, Vec<String>),
    /// A CSV header: it named the columns.
    Header,
    /// It did not parse: why, and the records `on_error` made of it.
    Failed { why: String, records: Vec<Bytes> },
}

impl JsonFormatter {
    /// Counts the parse outcomes since the last call into `metrics`.
    pub(crate) fn report(&mut self, metrics: &Metrics) {
        let c = std::mem::take(&mut self.counts);
        let block = &self.statics.block;
        if c.parsed > 0 {
            metrics.parsed(block, c.parsed);
        }
        for ((reason, action), n) in c.errors {
            metrics.parse_errors(block, reason, action, n);
        }
    }

    /// Whether the parser waits for a CSV header line (a file read from the
    /// middle must give it its first line).
    pub(crate) fn wants_header(&self) -> bool {
        self.parser.as_ref().is_some_and(|p| p.wants_header())
    }

    /// Keeps what `old` (the formatter of the same file under its former path)
    /// holds: its parser's header and its counts.
    pub(crate) fn keep_state_of(&mut self, old: JsonFormatter) {
        self.parser = old.parser;
        self.counts = old.counts;
    }

    /// The file is read again from its start: its first line is the header
    /// again.
    pub(crate) fn forget_header(&mut self) {
        if let Some(p) = self.parser.as_mut() {
            p.forget_header();
        }
    }

    /// Gives the parser its CSV header line.
    pub(crate) fn set_header(&mut self, line: &str) {
        if let Some(p) = self.parser.as_mut() {
            if let Err(f) = p.set_header(line) {
                tracing::warn!(block = %self.statics.block, error = %f.part, "Cannot read the CSV header line");
            }
        }
    }

    /// What `line` becomes, for `shardline parse`: exactly what a source does.
    pub(crate) fn try_line(&mut self, line: &[u8], limit: usize, oversized: Oversized) -> Tried {
        let mut records = Vec::new();
        let before = self.counts.errors.iter().map(|(_, n)| n).sum::<u64>();
        let header = self.wants_header();
        self.notes = Some(Vec::new());
        self.format(line, limit, oversized, |r| records.push(r));
        if header && !self.wants_header() {
            return Tried::Header;
        }
        let errors = &self.counts.errors;
        let failed = errors.iter().map(|(_, n)| n).sum::<u64>() > before
            && !errors
                .iter()
                .all(|((r, _), _)| *r == "type" || *r == "time");
        if let (true, Some(why)) = (failed, self.last_failure.take()) {
            return Tried::Failed { why, records };
        }
        Tried::Records(records, self.notes.take().unwrap_or_default())
    }

    /// Parses `line` into a record, or handles its failure.
    pub(super) fn parse_line(
        &mut self,
        line: &[u8],
        limit: usize,
        oversized: Oversized,
        mut emit: impl FnMut(Bytes),
    ) -> Cut {
        // Checked whole first: the lossy reader goes byte by byte.
        let text = match std::str::from_utf8(line) {
            Ok(t) => Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(line),
        };
        // Taken out while the line is read, so the record can be written
        // beside the fields that borrow it.
        let Some(mut parser) = self.parser.take() else {
            return Cut::None;
        };
        if parser.wants_header() {
            if let Err(f) = parser.set_header(&text) {
                tracing::warn!(block = %self.statics.block, error = %f.part, "Cannot read the CSV header line");
            }
            self.parser = Some(parser);
            return Cut::None;
        }
        let failure = match parser.read(&text) {
            Ok(read) => {
                self.counts.parsed += 1;
                if read.type_failures > 0 {
                    self.counts
                        .add("type", "kept_string", u64::from(read.type_failures));
                    if let Some(notes) = self.notes.as_mut() {
                        notes.push(format!(
                            "{} value(s) did not convert to their types and stay strings",
                            read.type_failures
                        ));
                    }
                }
                if read.time_failed {
                    self.counts.add("time", "read_time", 1);
                    if let Some(notes) = self.notes.as_mut() {
                        notes.push(format!(
                            "the time in {:?} could not be read; the read time is the timestamp",
                            parser.time_key().unwrap_or_default()
                        ));
                    }
                }
                let line = parser.config().keep_line.then_some(&*text);
                let add = parser.config().add_keys;
                let record = render(self, &read, line, parser.time_key(), add);
                if record.len() <= limit {
                    drop(read);
                    self.parser = Some(parser);
                    emit(record);
                    return Cut::None;
                }
                Failure {
                    reason: "too_large",
                    part: format!(
                        "the parsed record of {} bytes is over the {limit}-byte limit",
                        record.len()
                    )
                    .into(),
                    at: 0,
                }
            }
            Err(f) => f,
        };
        self.parser = Some(parser);
        self.failed(line, &text, failure, limit, oversized, emit)
    }

    /// A line its parser could not read: counted, logged (limited) and handled
    /// per `on_error`.
    fn failed(
        &mut self,
        line: &[u8],
        text: &str,
        failure: Failure,
        limit: usize,
        oversized: Oversized,
        mut emit: impl FnMut(Bytes),
    ) -> Cut {
        let Some(parser) = self.parser.as_ref() else {
            return Cut::None;
        };
        let on_error = parser.config().on_error;
        let action = match on_error {
            OnError::Wrap => "wrapped",
            OnError::Raw => "raw",
            OnError::Drop => "dropped",
        };
        self.counts.add(failure.reason, action, 1);
        // Explaining a pattern's failure tries parts of it: done only for the
        // log line let through and for `shardline parse`, never per line.
        let log = self.statics.log.check();
        let trying = self.notes.is_some();
        if log.is_some() || trying {
            let why = explain(&parser.config().kind, text, &failure);
            if let Some(held) = log {
                tracing::warn!(
                    block = %self.statics.block,
                    reason = failure.reason,
                    action,
                    error = %why,
                    line = %excerpt(text),
                    held_back = held,
                    "A line did not parse"
                );
            }
            if trying {
                self.last_failure = Some(why);
            }
        }
        match on_error {
            OnError::Wrap => {
                self.set_stamp(None);
                let error = format!(
                    "{}: {}",
                    crate::source::parse::reason_text(failure.reason),
                    failure.part
                );
                self.wrap(line, limit, oversized, Some(&error), emit)
            }
            OnError::Raw => {
                let n = line.len().min(limit);
                emit(Bytes::copy_from_slice(&line[..n]));
                if n < line.len() {
                    Cut::Truncated
                } else {
                    Cut::None
                }
            }
            OnError::Drop => Cut::None,
        }
    }
}

/// The record of a parsed line: its fields (renamed), the line under
/// `message` with `keep_line`, then the added keys a field does not already
/// name (none without `add_keys`). The event time, when read, is the `timestamp`, and replaces the field
/// it was read from when that field has the timestamp's name.
fn render(
    f: &mut JsonFormatter,
    read: &Read<'_>,
    line: Option<&str>,
    time_key: Option<&str>,
    add: bool,
) -> Bytes {
    f.set_stamp(read.time);
    f.next_id();
    let s = &f.statics;
    let need = f.stamp.len() + s.tail.len() + line.map_or(0, str::len) * 2 + 256;
    if f.arena.capacity() < need {
        f.arena = BytesMut::with_capacity(need.max(ARENA_BYTES));
    }
    let out = &mut f.arena;
    let mut names = Written::with_capacity(read.fields.entries.len() + 2);
    let mut sep = Separator::default();
    out.extend_from_slice(b"{");
    let stamp_name = s.timestamp.as_deref();
    for (k, v) in &read.fields.entries {
        let Some(name) = renamed(&s.rename, k) else {
            continue;
        };
        if names.contains(name) {
            continue;
        }
        sep.put(out);
        put_key(out, name);
        let replaced =
            read.time.is_some() && Some(name) == stamp_name && Some(k.as_ref()) == time_key;
        if replaced {
            out.extend_from_slice(&f.stamp);
        } else {
            write_value(out, v);
        }
        names.push(name);
    }
    if let (Some(line), Some(k)) = (line, &s.message) {
        if !names.contains(k) {
            sep.put(out);
            put_key(out, k);
            escape_into(out, line.as_bytes());
            names.push(k);
        }
    }
    let added = if add { s.entries.as_slice() } else { &[] };
    if let (Some(k), true) = (&s.timestamp, add) {
        if !names.contains(k) {
            sep.put(out);
            put_key(out, k);
            out.extend_from_slice(&f.stamp);
        }
    }
    if !f.id_entry.is_empty() && !s.id_name.as_deref().is_some_and(|k| names.contains(k)) {
        sep.put(out);
        out.extend_from_slice(&f.id_entry);
    }
    for (k, e) in added {
        if !names.contains(k) {
            sep.put(out);
            out.extend_from_slice(e.as_bytes());
        }
    }
    out.extend_from_slice(b"}");
    out.split().freeze()
}

/// The keys a record has so far, to write each once: a mask of their
/// lengths and first and last bytes rules most keys out without a compare.
struct Written<'k> {
    names: Vec<&'k str>,
    mask: u64,
}

impl<'k> Written<'k> {
    fn with_capacity(n: usize) -> Written<'k> {
        Written {
            names: Vec::with_capacity(n),
            mask: 0,
        }
    }

    fn bit(k: &str) -> u64 {
        let b = k.as_bytes();
        let (first, last) = (b.first().copied(), b.last().copied());
        let h = k.len() * 7 + usize::from(first.unwrap_or(0)) * 3 + usize::from(last.unwrap_or(0));
        1 << (h % 64)
    }

    fn contains(&self, k: &str) -> bool {
        self.mask & Self::bit(k) != 0 && self.names.contains(&k)
    }

    fn push(&mut self, k: &'k str) {
        self.mask |= Self::bit(k);
        self.names.push(k);
    }
}

/// `"k":`, escaped only when `k` needs it (keys seldom do).
fn put_key(out: &mut BytesMut, k: &str) {
    if k.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        escape_into(out, k.as_bytes());
        out.extend_from_slice(b":");
        return;
    }
    out.reserve(k.len() + 3);
    out.extend_from_slice(b"\"");
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The name `rename` gives key `k` (`None`: left out).
fn renamed<'k>(rename: &'k [(String, String)], k: &'k str) -> Option<&'k str> {
    match rename.iter().find(|(from, _)| from == k) {
        Some((_, to)) if to.is_empty() => None,
        Some((_, to)) => Some(to),
        None => Some(k),
    }
}

/// A field's value as JSON.
fn write_value(out: &mut BytesMut, v: &Value<'_>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Str(s) => escape_into(out, s.as_bytes()),
        Value::Int(i) => write_int(out, *i),
        // With a fraction or an exponent, so a consumer reads a float.
        Value::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => {
            out.extend_from_slice(format!("{x:.1}").as_bytes())
        }
        Value::Float(x) if x.is_finite() => out.extend_from_slice(x.to_string().as_bytes()),
        Value::Float(_) => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Json(j) => out.extend_from_slice(j.as_bytes()),
    }
}

/// `i` in decimal, without an allocation.
fn write_int(out: &mut BytesMut, i: i64) {
    let mut digits = [0u8; 20];
    let mut n = i.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.extend_from_slice(b"-");
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests;
