//! Container runtime log lines: CRI (containerd, CRI-O) and Docker's json-file,
//! and the rule ([`Join`]) by which the file framer joins the physical lines of
//! one record for these formats and for CSV.
//!
//! Both runtimes cut a long line into several physical lines (CRI at 16 KiB
//! with the tag `P`, Docker at 16 KiB with a `log` value not ending in a
//! newline). The framer joins them with `\n` (physical lines never contain
//! one: CRI's end at the runtime's newline and JSON escapes its own), and the
//! presets here read such a joined record as one.

use std::borrow::Cow;

use serde::Deserialize;

use super::super::value::{Failure, Fields, Value};

pub(crate) const CRI_KEYS: &[&str] = &["time", "stream", "logtag", "message"];
pub(crate) const DOCKER_KEYS: &[&str] = &["time", "stream", "message"];
pub(crate) const CRI_TIME: (&str, &str) = ("time", "rfc3339");
pub(crate) const DOCKER_TIME: (&str, &str) = ("time", "rfc3339");

/// `cri`: the CRI log format of containerd and CRI-O,
/// `TIME STREAM LOGTAG MESSAGE` (kubelet's `pkg/kubelet/kuberuntime/logs`).
///
/// Keys, in order:
/// - `time` (string, as written, RFC 3339 with nanoseconds);
/// - `stream` (string): `stdout` or `stderr`;
/// - `logtag` (string): the tag as written, `F` (full) or `P` (partial),
///   possibly with more `:`-separated flags;
/// - `message` (string): the rest of the line after the space that follows
///   the tag (empty when there is none).
///
/// A record joined from several lines (`P` lines and the `F` line that ends
/// them, joined by the file framer) is one record: `time` and `stream` from
/// its first line, `logtag` from its last, `message` the lines' messages put
/// together without separator.
///
/// Fails with `no_match` when a line has no RFC 3339-shaped time, another
/// stream or a tag not starting with `P` or `F`; with `incomplete` when the
/// last line is a partial one (`P`: the rest of the record never came).
///
/// `2016-10-06T00:17:09.669794202Z stdout F hello world` gives
/// `{"time":"2016-10-06T00:17:09.669794202Z","stream":"stdout","logtag":"F","message":"hello world"}`.
pub(crate) fn cri<'a>(record: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    let mut lines = record.split('\n');
    let first = lines.next().unwrap_or_default();
    let head = cri_line(first, 0)?;
    out.str("time", head.time);
    out.str("stream", head.stream);
    let (mut tag, mut message) = (head.tag, Cow::Borrowed(head.message));
    let mut at = first.len() + 1;
    for line in lines {
        let next = cri_line(line, at)?;
        tag = next.tag;
        message.to_mut().push_str(next.message);
        at += line.len() + 1;
    }
    if tag.split(':').next() == Some("P") {
        return Err(Failure {
            reason: "incomplete",
            part: Cow::Borrowed("a partial line (tag P) without its end"),
            at: at - 1,
        });
    }
    out.str("logtag", tag);
    out.push("message", Value::Str(message));
    Ok(())
}

/// One physical CRI line.
struct CriLine<'a> {
    time: &'a str,
    stream: &'a str,
    tag: &'a str,
    message: &'a str,
}

/// Reads one physical CRI line, at offset `at` of its record.
fn cri_line(line: &str, at: usize) -> Result<CriLine<'_>, Failure> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next().unwrap_or_default();
    let shaped = time.len() >= 20
        && time.as_bytes()[..11]
            .iter()
            .zip(b"0000-00-00T")
            .all(|(c, p)| {
                if *p == b'0' {
                    c.is_ascii_digit()
                } else {
                    c == p
                }
            });
    if !shaped {
        return Err(Failure::no_match("the time", at));
    }
    let stream = parts.next().unwrap_or_default();
    if stream != "stdout" && stream != "stderr" {
        return Err(Failure::no_match("the stream", at + time.len() + 1));
    }
    let tag = parts.next().unwrap_or_default();
    if !matches!(tag.split(':').next(), Some("P" | "F")) {
        let tag_at = at + time.len() + stream.len() + 2;
        return Err(Failure::no_match("the log tag", tag_at));
    }
    Ok(CriLine {
        time,
        stream,
        tag,
        message: parts.next().unwrap_or_default(),
    })
}

/// One line of Docker's json-file log driver.
#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
}

/// `docker`: a line of Docker's `json-file` log driver,
/// `{"log":"message\n","stream":"stderr","time":"2019-04-10T08:12:13.123456789Z"}`.
///
/// Keys, in order:
/// - `time` (string, as written, RFC 3339 with nanoseconds);
/// - `stream` (string): `stdout` or `stderr`;
/// - `message` (string): `log`, without its trailing newline.
///
/// `time` and `stream` are left out when the object has none; other members
/// (`attrs`) are not read. A record joined from several lines (lines whose
/// `log` does not end with a newline, then the one that does, joined by the
/// file framer) is one record: `time` and `stream` from its first line,
/// `message` the `log` values put together. A last `log` without a newline
/// is taken as it is (Docker writes a container's last output that way).
///
/// Fails with `no_match` when a line is not such a JSON object (at the byte
/// where the JSON reader stopped).
///
/// `{"log":"hello\n","stream":"stdout","time":"2019-04-10T08:12:13.1Z"}`
/// gives `{"time":"2019-04-10T08:12:13.1Z","stream":"stdout","message":"hello"}`.
pub(crate) fn docker<'a>(record: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    let mut lines = record.split('\n');
    let first = lines.next().unwrap_or_default();
    let head = docker_line(first, 0)?;
    if let Some(time) = head.time {
        out.push("time", Value::Str(time));
    }
    if let Some(stream) = head.stream {
        out.push("stream", Value::Str(stream));
    }
    let mut message = head.log;
    let mut at = first.len() + 1;
    for line in lines {
        message.to_mut().push_str(&docker_line(line, at)?.log);
        at += line.len() + 1;
    }
    if message.ends_with('\n') {
        match &mut message {
            Cow::Borrowed(s) => *s = &s[..s.len() - 1],
            Cow::Owned(s) => {
                s.pop();
            }
        }
    }
    out.push("message", Value::Str(message));
    Ok(())
}

/// Reads one physical json-file line, at offset `at` of its record.
fn docker_line(line: &str, at: usize) -> Result<DockerLine<'_>, Failure> {
    serde_json::from_str(line).map_err(|e| {
        let col = line
            .char_indices()
            .nth(e.column().saturating_sub(1))
            .map_or(line.len(), |(i, _)| i);
        Failure::no_match("the json-file object", at + col)
    })
}

/// How the file framer joins physical lines into one record for a format
/// whose records span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    /// CRI: a line tagged `P` continues on the next line.
    Cri,
    /// Docker json-file: a `log` value not ending in a newline continues.
    Docker,
    /// CSV with this quote byte and delimiter: a record with an open quoted
    /// field continues (a newline inside quotes is data, RFC 4180 §2.6).
    CsvQuote(u8, u8),
}

impl Join {
    /// Whether `record_so_far` (physical lines joined by `\n`) is not complete:
    /// the next line belongs to it. Looks at its last line only, except for
    /// CSV, where a quoted field is open at the end: read as the csv preset
    /// reads a record, a quote opens a field only at the field's start (a
    /// quote inside an unquoted field is data) and a doubled quote inside one
    /// is data.
    pub(crate) fn continues(&self, record_so_far: &[u8]) -> bool {
        let last = match memchr::memrchr(b'\n', record_so_far) {
            Some(i) => &record_so_far[i + 1..],
            None => record_so_far,
        };
        match *self {
            Join::Cri => {
                let tag = last.split(|&b| b == b' ').nth(2).unwrap_or_default();
                tag.split(|&b| b == b':').next() == Some(b"P")
            }
            Join::Docker => docker_partial(last),
            Join::CsvQuote(..) => record_so_far
                .split(|&b| b == b'\n')
                .fold(false, |open, line| self.continues_after(open, line)),
        }
    }

    /// [`continues`](Self::continues) taken line by line: whether a record
    /// that continued (`open`) or is new (`!open`) still continues once `line`
    /// is added to it. Folded over a record's lines it gives `continues` of the
    /// record, without reading the record again for each line (and it reads
    /// the line as it came, also when an oversized record kept only its head).
    pub(crate) fn continues_after(&self, open: bool, line: &[u8]) -> bool {
        match self {
            Join::Cri | Join::Docker => self.continues(line),
            Join::CsvQuote(quote, delimiter) => csv_open(open, line, *quote, *delimiter),
        }
    }
}

/// Whether a quoted field is open at the end of `line`, which starts inside
/// one when `open` (else it starts a record).
fn csv_open(mut open: bool, line: &[u8], quote: u8, delimiter: u8) -> bool {
    let mut field_start = !open;
    // Inside quotes, just after a quote: a closing one or the first of two.
    let mut after_quote = false;
    for &b in line {
        if open {
            if after_quote {
                after_quote = false;
                if b != quote {
                    open = false;
                    field_start = b == delimiter;
                }
            } else if b == quote {
                after_quote = true;
            }
        } else if field_start && b == quote {
            open = true;
        } else {
            field_start = b == delimiter;
        }
    }
    open && !after_quote
}

/// Whether a json-file line's `log` value does not end with a newline
/// (`\n` or `\u000a` in the JSON text). A line without a `"log":"` member is
/// not a partial (the parser reports it).
fn docker_partial(line: &[u8]) -> bool {
    const KEY: &[u8] = b"\"log\":\"";
    // Inside a JSON string a quote is escaped, so the key's text with its
    // quotes is the member and not part of another value.
    let Some(start) = line.windows(KEY.len()).position(|w| w == KEY) else {
        return false;
    };
    let mut i = start + KEY.len();
    let mut newline = false;
    while let Some(&c) = line.get(i) {
        match c {
            b'"' => return !newline,
            b'\\' => {
                let escape = line.get(i + 1..).unwrap_or_default();
                newline = escape.first() == Some(&b'n')
                    || escape
                        .get(..5)
                        .is_some_and(|e| e.eq_ignore_ascii_case(b"u000a"));
                i += if escape.first() == Some(&b'u') { 6 } else { 2 };
            }
            _ => {
                newline = false;
                i += 1;
            }
        }
    }
    // The value is not closed: not a json-file line.
    false
}

#[cfg(test)]
mod tests;
