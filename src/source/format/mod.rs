//! Record formats of the line sources (`[[file]]` and `[[socket]]` blocks):
//! `raw` sends a line as it is; `json` wraps it in an object that says where it
//! came from:
//!
//! ```json
//! {"message":"GET /health 200","timestamp":"2026-12-01T04:06:34.123Z","host":"web-1","source":"/var/log/app.log","env":"prod"}
//! ```
//!
//! `message` is the line (invalid UTF-8 replaced by U+FFFD: a JSON string is
//! text), `timestamp` the time the line was read (RFC 3339, milliseconds, UTC),
//! `host` the host name, `source` the file or socket path, then with
//! `ec2_identity` the instance's `instance_id`, `region` and `az` (read once per
//! process through IMDSv2, before the sources start), then the block's static
//! `fields`. With `json_merge`, a line that already is a JSON object keeps its own
//! keys and gets the added keys it does not have (**the line's keys win**: the
//! added ones never overwrite what the application wrote); a line that is not a
//! JSON object is wrapped as above.
//!
//! Every record is valid JSON for any consumer: a line is merged only when
//! `serde_json` would read it whole into a `Value` (strings of valid UTF-8 without
//! lone surrogate escapes, raw control bytes or bad escapes; numbers within an
//! f64; nesting within 128 levels; nothing after the object). Anything else (invalid
//! UTF-8 in a string, `"\ud800"`, `1e400`, a byte-order mark, trailing bytes) is
//! wrapped as `message`, its invalid UTF-8 replaced by U+FFFD like any line's.
//!
//! # Record limits
//!
//! Escaping grows a line (a control byte becomes `\u00XX`, six bytes), so a line
//! that fits the record limit raw may not once wrapped. The wrapped size is
//! computed (cheaply: a line of at most a sixth of the room left by the added keys
//! always fits) and when it is over the limit the *message* is cut at a character
//! boundary to what fits, then wrapped: `split` sends the rest in further records,
//! `truncate` drops it. The caller counts the cut in the oversized metric. A JSON
//! line to merge that would overflow once the keys are added is wrapped as
//! `message` instead (and cut the same way).
//!
//! The static part of a record (host, source, fields) is rendered once per source;
//! per line only the message is escaped and the timestamp's milliseconds written
//! (the rest of the timestamp is rendered once per second).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use crate::config::parse::TimeFormat;
use crate::config::{JsonFormat, Oversized, RecordFormat};
use crate::source::log_limit::LogLimit;
use crate::source::parse::{EventTime, Parser};

mod clock;
mod merge;
mod parsed;

use clock::Clock;
use merge::top_level_keys;

pub(crate) use parsed::{ParseCounts, Tried};

/// Most bytes one byte of a line takes in a JSON string (`\u0001`).
pub(crate) const MAX_ESCAPE_GROWTH: usize = 6;

/// Records are written into shared buffers of this size, split off as they are
/// done: one allocation for some twenty records of a few hundred bytes, as a raw
/// line is a slice of the read buffer. Small, because every tailed file has its
/// own and an idle one keeps what is left of its buffer.
const ARENA_BYTES: usize = 8 * 1024;

/// Length of an RFC 3339 UTC timestamp with milliseconds.
const TIMESTAMP_BYTES: usize = "2026-12-01T04:06:34.123Z".len();

/// What wrapping did to a line's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The line went whole into one record.
    None,
    /// The line was split into several records (`oversized = "split"`).
    Split,
    /// The line's end was dropped (`oversized = "truncate"`).
    Truncated,
}

/// Formats the lines of one source as json records; `None` from
/// [`JsonFormatter::for_source`] means raw (the line is the record).
#[derive(Debug, Clone)]
pub(crate) struct JsonFormatter {
    statics: Arc<Statics>,
    clock: Clock,
    /// Where records are written (see [`ARENA_BYTES`]).
    arena: BytesMut,
    /// The rendered `timestamp` value of the line being formatted.
    stamp: Vec<u8>,
    /// The block's parser (one per file: it holds the file's CSV header).
    parser: Option<Parser>,
    /// Parse outcomes not yet counted.
    counts: ParseCounts,
    /// Why the last line that did not parse failed (for `shardline parse`).
    last_failure: Option<String>,
    /// What was off in the fields of the line parsed (`shardline parse` only;
    /// `None` in a source).
    notes: Option<Vec<String>>,
    /// The record id of the line being formatted (empty: none), and which
    /// record of it comes next (a split line's pieces after the first get
    /// `.1`, `.2`, ...).
    id: Vec<u8>,
    piece: u32,
    /// The id entry of the record being written (`"record_id":"…"`).
    id_entry: Vec<u8>,
}

/// What every record of a source shares, rendered once.
#[derive(Debug)]
struct Statics {
    merge: bool,
    /// `"host":…,"source":…` and `,"key":"value"` per field: the end of every
    /// record but its closing brace.
    tail: String,
    /// The same entries one by one (key as written, `"key":value`), for
    /// merging: a key the line has is left out.
    entries: Vec<(String, String)>,
    /// The name of `message` and of `timestamp` (`None`: renamed to `""`,
    /// left out).
    message: Option<String>,
    timestamp: Option<String>,
    timestamp_format: TimeFormat,
    /// `rename`, applied to parsed keys.
    rename: Vec<(String, String)>,
    /// The record id's key, rendered with its colon (`"record_id":`), and as
    /// written.
    id_key: Option<String>,
    id_name: Option<String>,
    /// The block's metric label (`file[0]`).
    block: Arc<str>,
    /// The block's warnings about lines that did not parse.
    log: Arc<LogLimit>,
}

impl JsonFormatter {
    /// The formatter of a source of `block` (its metric label) reading from
    /// `source` (a file or socket path); `None` for the raw format.
    pub(crate) fn for_source(
        format: &RecordFormat,
        source: &str,
        block: &str,
    ) -> Option<JsonFormatter> {
        match format {
            RecordFormat::Raw => None,
            RecordFormat::Json(f) => Some(JsonFormatter::new(f, host_name(), source, block)),
        }
    }

    fn new(format: &JsonFormat, host: &str, source: &str, block: &str) -> JsonFormatter {
        let name = |key: &str| -> Option<String> {
            match format.rename.iter().find(|(from, _)| from == key) {
                Some((_, to)) if to.is_empty() => None,
                Some((_, to)) => Some(to.clone()),
                None => Some(key.to_owned()),
            }
        };
        let mut entries = Vec::new();
        let mut add = |k: &str, v: &str| {
            if let Some(n) = name(k) {
                entries.push((n.clone(), entry(&n, v)));
            }
        };
        add("host", host);
        add("source", source);
        if format.ec2_identity {
            if let Some(Some(id)) = EC2_IDENTITY.get() {
                add("instance_id", &id.instance_id);
                add("region", &id.region);
                add("az", &id.az);
            }
        }
        for (k, v) in &format.fields {
            add(k, v);
        }
        let tail = entries
            .iter()
            .map(|(_, e)| e.as_str())
            .collect::<Vec<_>>()
            .join(",");
        JsonFormatter {
            statics: Arc::new(Statics {
                merge: format.merge,
                tail,
                entries,
                message: name("message"),
                timestamp: name("timestamp"),
                timestamp_format: format.timestamp_format.clone(),
                rename: format.rename.clone(),
                id_key: format.id_key.as_ref().map(|k| {
                    let mut e = Vec::new();
                    escape(&mut e, k);
                    e.push(b':');
                    String::from_utf8(e).expect("an escaped key is UTF-8")
                }),
                id_name: format.id_key.clone(),
                block: Arc::from(block),
                log: parsed::block_log(block),
            }),
            clock: Clock::default(),
            arena: BytesMut::new(),
            stamp: Vec::new(),
            parser: format.parse.clone().map(Parser::new),
            counts: ParseCounts::default(),
            last_failure: None,
            notes: None,
            id: Vec::new(),
            piece: 0,
            id_entry: Vec::new(),
        }
    }

    /// Sets the record id of the next line (ASCII letters, digits, `-`, `.`,
    /// `:` and `_`); ignored unless the block asks for ids.
    pub(crate) fn set_id(&mut self, id: &[u8]) {
        self.id.clear();
        self.piece = 0;
        if self.statics.id_key.is_some() {
            self.id.extend_from_slice(id);
        }
    }

    /// Bytes the id entry takes (with a split piece's suffix, at most 11 more).
    fn id_len(&self) -> Option<usize> {
        let k = self.statics.id_key.as_ref()?;
        (!self.id.is_empty()).then_some(k.len() + self.id.len() + 2 + 11)
    }

    /// Renders the id entry of the next record into `id_entry` (empty: none).
    fn next_id(&mut self) {
        self.id_entry.clear();
        let Some(k) = &self.statics.id_key else {
            return;
        };
        if self.id.is_empty() {
            return;
        }
        self.id_entry.extend_from_slice(k.as_bytes());
        self.id_entry.push(b'"');
        self.id_entry.extend_from_slice(&self.id);
        if self.piece > 0 {
            self.id_entry.push(b'.');
            self.id_entry
                .extend_from_slice(self.piece.to_string().as_bytes());
        }
        self.id_entry.push(b'"');
        self.piece += 1;
    }

    /// Renders the `timestamp` value (`None`: the read time) into `self.stamp`.
    fn set_stamp(&mut self, at: Option<EventTime>) {
        self.stamp.clear();
        if self.statics.timestamp_format == TimeFormat::Rfc3339 {
            let now = match at {
                None => self.clock.now(),
                Some(t) => {
                    let (secs, millis) = t.secs_millis();
                    self.clock.at(secs, millis)
                }
            };
            self.stamp.push(b'"');
            self.stamp.extend_from_slice(&now);
            self.stamp.push(b'"');
        } else {
            at.unwrap_or_else(EventTime::now)
                .write(&self.statics.timestamp_format, &mut self.stamp);
        }
    }

    /// Bytes a wrapped record takes besides the escaped message (without quotes)
    /// and an error entry.
    fn overhead(&self) -> usize {
        let s = &self.statics;
        // {"message":"…","timestamp":…,<tail>}
        let message = s.message.as_ref().map(|k| k.len() + 5);
        let timestamp = s.timestamp.as_ref().map(|k| k.len() + 3 + self.stamp.len());
        let tail = (!s.tail.is_empty()).then_some(s.tail.len());
        let parts = [message, timestamp, self.id_len(), tail];
        let commas = parts.iter().flatten().count().saturating_sub(1);
        2 + parts.iter().flatten().sum::<usize>() + commas
    }

    /// Formats `line` into records of at most `limit` bytes, handed to `emit` in
    /// order; a line that does not fit is cut per `oversized`.
    pub(crate) fn format(
        &mut self,
        line: &[u8],
        limit: usize,
        oversized: Oversized,
        emit: impl FnMut(Bytes),
    ) -> Cut {
        if self.parser.is_some() {
            return self.parse_line(line, limit, oversized, emit);
        }
        self.set_stamp(None);
        self.wrap(line, limit, oversized, None, emit)
    }

    /// Wraps `line` (or merges it, with `json_merge`) with the added keys and
    /// `error` as `parse_error`; the stamp is set.
    fn wrap(
        &mut self,
        line: &[u8],
        limit: usize,
        oversized: Oversized,
        error: Option<&str>,
        mut emit: impl FnMut(Bytes),
    ) -> Cut {
        // The line's first record gets the plain id, also after a parsed record
        // that did not fit.
        self.piece = 0;
        if self.statics.merge {
            self.next_id();
            if let Some(merged) = self.merged(line) {
                if merged.len() <= limit {
                    emit(merged.into());
                    return Cut::None;
                }
            }
            self.piece = 0;
        }
        let text = match std::str::from_utf8(line) {
            Ok(t) => Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(line),
        };
        let error_len = error.map_or(0, |e| r#","parse_error":"#.len() + 2 + e.len() * 2);
        let room = limit.saturating_sub(self.overhead() + error_len);
        let mut rest: &str = &text;
        let mut cut = Cut::None;
        loop {
            let mut n = fitting_prefix(rest, room);
            if n == 0 && !rest.is_empty() {
                // Not even one character fits beside the added keys (a tiny
                // limit): one goes anyway, so a line always makes progress.
                n = rest.chars().next().map_or(rest.len(), char::len_utf8);
            }
            emit(self.wrapped(&rest[..n], error));
            if n == rest.len() {
                return cut;
            }
            match oversized {
                Oversized::Truncate => return Cut::Truncated,
                Oversized::Split => {
                    cut = Cut::Split;
                    rest = &rest[n..];
                }
            }
        }
    }

    /// `message` wrapped with the added keys (and `error` as `parse_error`).
    fn wrapped(&mut self, message: &str, error: Option<&str>) -> Bytes {
        self.next_id();
        let need = self.overhead()
            + message.len()
            + message.len() / 8
            + error.map_or(0, str::len) * 2
            + 16;
        if self.arena.capacity() < need {
            self.arena = BytesMut::with_capacity(need.max(ARENA_BYTES));
        }
        let s = &self.statics;
        let out = &mut self.arena;
        out.extend_from_slice(b"{");
        let mut sep = Separator::default();
        if let Some(k) = &s.message {
            sep.put(out);
            escape_into(out, k.as_bytes());
            out.extend_from_slice(b":");
            escape_into(out, message.as_bytes());
        }
        if let Some(k) = &s.timestamp {
            sep.put(out);
            escape_into(out, k.as_bytes());
            out.extend_from_slice(b":");
            out.extend_from_slice(&self.stamp);
        }
        if !self.id_entry.is_empty() {
            sep.put(out);
            out.extend_from_slice(&self.id_entry);
        }
        if !s.tail.is_empty() {
            sep.put(out);
            out.extend_from_slice(s.tail.as_bytes());
        }
        if let Some(e) = error {
            sep.put(out);
            out.extend_from_slice(br#""parse_error":"#);
            escape_into(out, e.as_bytes());
        }
        out.extend_from_slice(b"}");
        out.split().freeze()
    }

    /// The line with the added keys it lacks, when it is a JSON object.
    fn merged(&self, line: &[u8]) -> Option<Vec<u8>> {
        let line = line.trim_ascii();
        if line.first() != Some(&b'{') {
            return None;
        }
        let s = &self.statics;
        let (has, keys) = top_level_keys(
            line,
            [s.timestamp.as_deref(), s.id_name.as_deref()],
            &s.entries,
        )?;
        // The object without its closing brace (and the blanks before it).
        let body = line[..line.len() - 1].trim_ascii_end();
        let mut out = Vec::with_capacity(line.len() + self.overhead());
        out.extend_from_slice(body);
        let mut first = keys == 0;
        let mut add = |out: &mut Vec<u8>, e: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(e);
        };
        if let (Some(k), false) = (&s.timestamp, has.timestamp) {
            let mut e = Vec::new();
            escape(&mut e, k);
            e.push(b':');
            e.extend_from_slice(&self.stamp);
            add(&mut out, &e);
        }
        if !has.id && !self.id_entry.is_empty() {
            add(&mut out, &self.id_entry);
        }
        for (i, (_, e)) in s.entries.iter().enumerate() {
            if !has.entries.get(i).copied().unwrap_or(false) {
                add(&mut out, e.as_bytes());
            }
        }
        out.push(b'}');
        Some(out)
    }
}

/// Writes the commas between a record's entries.
#[derive(Default)]
pub(super) struct Separator {
    started: bool,
}

impl Separator {
    pub(super) fn put(&mut self, out: &mut BytesMut) {
        if self.started {
            out.extend_from_slice(b",");
        }
        self.started = true;
    }
}

/// `"key":"value"`, escaped.
fn entry(key: &str, value: &str) -> String {
    let mut out = Vec::new();
    escape(&mut out, key);
    out.push(b':');
    escape(&mut out, value);
    String::from_utf8(out).expect("escaped UTF-8 text is UTF-8")
}

/// Appends `s` as a quoted JSON string.
fn escape(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing a string to a Vec cannot fail");
}

/// Appends `s` (UTF-8) as a quoted JSON string, escaped as serde_json does it.
/// A block of [`ESCAPE_BLOCK`] bytes is tested at once (a loop without branches,
/// which the compiler turns into vector compares) and copied whole while none of
/// its bytes needs an escape; only a block that has one is gone through byte by
/// byte.
pub(super) fn escape_into(out: &mut BytesMut, s: &[u8]) {
    out.extend_from_slice(b"\"");
    let mut start = 0;
    for (n, block) in s.chunks(ESCAPE_BLOCK).enumerate() {
        if !needs_escape(block) {
            continue;
        }
        let at = n * ESCAPE_BLOCK;
        for (j, &b) in block.iter().enumerate() {
            if escaped_len(b) == 1 {
                continue;
            }
            out.extend_from_slice(&s[start..at + j]);
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\x08' => out.extend_from_slice(b"\\b"),
                b'\x0c' => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                }
            }
            start = at + j + 1;
        }
    }
    out.extend_from_slice(&s[start..]);
    out.extend_from_slice(b"\"");
}

/// Bytes [`escape_into`] tests at once.
const ESCAPE_BLOCK: usize = 32;

/// Whether a byte of `block` needs an escape (a control byte, `"` or `\`).
#[inline]
fn needs_escape(block: &[u8]) -> bool {
    let mut any = false;
    for &b in block {
        any |= (b < 0x20) | (b == b'"') | (b == b'\\');
    }
    any
}

/// Bytes `b` takes inside a JSON string, as serde_json writes it.
fn escaped_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 2,
        0..=0x1f => MAX_ESCAPE_GROWTH,
        _ => 1,
    }
}

/// The longest prefix of `s` (ending at a character boundary) whose escaped form
/// takes at most `room` bytes.
fn fitting_prefix(s: &str, room: usize) -> usize {
    // Most lines: even all escaped at the worst they fit.
    if s.len().saturating_mul(MAX_ESCAPE_GROWTH) <= room {
        return s.len();
    }
    let bytes = s.as_bytes();
    let mut used = 0;
    let mut fits = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if s.is_char_boundary(i) {
            fits = i;
        }
        used += escaped_len(b);
        if used > room {
            return fits;
        }
    }
    s.len()
}

/// The EC2 instance's identity, as its identity document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ec2Identity {
    pub instance_id: String,
    pub region: String,
    pub az: String,
}

/// The identity, read once (`None` inside: it could not be read; records go
/// without it).
static EC2_IDENTITY: OnceLock<Option<Ec2Identity>> = OnceLock::new();

/// How long reading the identity may take at start: a host that is not an EC2
/// instance (or blocks the metadata service) must not hold the agent up long.
const IMDS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the EC2 instance identity through IMDSv2 (aws-config's client, which
/// honours `AWS_EC2_METADATA_SERVICE_ENDPOINT`), once per process; later calls
/// return what the first one read. A failure is logged and remembered: json
/// records then go without `instance_id`, `region` and `az`.
pub(crate) async fn load_ec2_identity() -> Option<Ec2Identity> {
    if let Some(id) = EC2_IDENTITY.get() {
        return id.clone();
    }
    let client = aws_config::imds::Client::builder()
        .operation_timeout(IMDS_TIMEOUT)
        .max_attempts(2)
        .build();
    let read = async {
        let doc = client
            .get("/latest/dynamic/instance-identity/document")
            .await
            .map_err(|e| e.to_string())?;
        let doc: serde_json::Value =
            serde_json::from_str(doc.as_ref()).map_err(|e| format!("identity document: {e}"))?;
        let field = |k: &str| {
            doc.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("identity document has no {k:?}"))
        };
        Ok::<_, String>(Ec2Identity {
            instance_id: field("instanceId")?,
            region: field("region")?,
            az: field("availabilityZone")?,
        })
    };
    let id = match tokio::time::timeout(IMDS_TIMEOUT * 2, read).await {
        Ok(Ok(id)) => {
            tracing::info!(instance_id = %id.instance_id, region = %id.region, az = %id.az, "Read the EC2 instance identity");
            Some(id)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Cannot read the EC2 instance identity; json records go without instance_id, region and az");
            None
        }
        Err(_) => {
            tracing::warn!(error = "no answer from the instance metadata service", "Cannot read the EC2 instance identity; json records go without instance_id, region and az");
            None
        }
    };
    EC2_IDENTITY.get_or_init(|| id).clone()
}

/// Whether a block of `config` asks for the EC2 identity.
pub(crate) fn wants_ec2_identity(config: &crate::config::Config) -> bool {
    let asks = |f: &RecordFormat| matches!(f, RecordFormat::Json(j) if j.ec2_identity);
    config.files.iter().any(|f| asks(&f.format)) || config.sockets.iter().any(|s| asks(&s.format))
}

/// The host name, read once.
pub(crate) fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most
        // that many bytes.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return "localhost".to_owned();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

#[cfg(test)]
mod tests;
