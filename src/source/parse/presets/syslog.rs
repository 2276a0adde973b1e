//! Syslog presets: RFC 3164 (BSD) and RFC 5424, as syslog daemons write them
//! to files.
//!
//! Both read the line left to right by hand; the header fields are slices of
//! the line. RFC 5424's structured data is the one field built anew: a JSON
//! object written as [`Value::Json`], its parameter values unescaped.

use std::borrow::Cow;

use super::super::value::{Failure, Fields, Value};

pub(super) const RFC3164_KEYS: &[&str] = &[
    "pri", "facility", "severity", "time", "host", "ident", "pid", "message",
];
pub(super) const RFC5424_KEYS: &[&str] = &[
    "pri",
    "facility",
    "severity",
    "version",
    "time",
    "host",
    "app",
    "procid",
    "msgid",
    "structured_data",
    "message",
];
/// RFC 3164 times have no year: `%b %e %H:%M:%S` is read in the current year.
/// A line with an RFC 3339 time in its place (see [`rfc3164`]) needs `rfc3339`.
pub(super) const RFC3164_TIME: (&str, &str) = ("time", "%b %e %H:%M:%S");
pub(super) const RFC5424_TIME: (&str, &str) = ("time", "rfc3339");

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `syslog_rfc3164`: a BSD syslog line, `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`
/// (RFC 3164 §4.1), as rsyslog and syslog-ng write to files.
///
/// Keys, in order:
/// - `pri` (int, 0 to 191), `facility` (int, `pri / 8`), `severity` (int,
///   `pri % 8`): only when the line starts with `<PRI>` (files written by
///   rsyslog's default template have none);
/// - `time` (string, as written): `Mmm dd hh:mm:ss`, the day padded with a
///   space (`Oct  1`; `Oct 01` and `Oct 1` are read too). It has no year.
///   An RFC 3339 time in its place (`2024-10-11T22:14:15.003+02:00`,
///   rsyslog's `RSYSLOG_FileFormat`) is read too, written as it is;
/// - `host` (string): the word after the time;
/// - `ident` (string): the tag, the next word when it ends with `:` (`sshd:`,
///   `sshd[123]:`, `postfix/smtpd[9]:`), without its `[PID]` and colon;
/// - `pid` (int when all digits, else string): what is between the tag's
///   brackets; left out when there are none;
/// - `message` (string): the rest, after the one space that follows the tag.
///
/// A line whose word after the host does not end with `:` has no tag: `ident`
/// and `pid` are left out and `message` is everything after the host.
/// Fails (`no_match`) on a malformed or out-of-range PRI, a time in neither
/// form (a BSD time with a day past 31, an hour past 23 or a minute or
/// second past 59 is none, §4.1.2), or no host.
///
/// `<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed` gives
/// `{"pri":34,"facility":4,"severity":2,"time":"Oct 11 22:14:15","host":"mymachine","ident":"su","pid":230,"message":"'su root' failed"}`.
pub(super) fn rfc3164<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    let mut at = 0;
    if line.starts_with('<') {
        let (pri, len) = pri(line)?;
        push_pri(out, pri);
        at = len;
    }
    let rest = &line[at..];
    let time_len = bsd_time(rest)
        .or_else(|| rfc3339_time(rest))
        .ok_or_else(|| Failure::no_match("the time", at))?;
    out.str("time", &rest[..time_len]);
    at += time_len;
    let rest = line[at..]
        .strip_prefix(' ')
        .filter(|r| !r.is_empty() && !r.starts_with(' '))
        .ok_or_else(|| Failure::no_match("the host", at))?;
    let (host, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    out.str("host", host);
    let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
    match word.strip_suffix(':').and_then(tag) {
        Some((ident, pid)) => {
            out.str("ident", ident);
            if let Some(pid) = pid {
                out.push("pid", int_or_str(pid));
            }
            out.str("message", after);
        }
        None => out.str("message", rest),
    }
    Ok(())
}

/// `syslog_rfc5424`: `<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
/// STRUCTURED-DATA MSG` (RFC 5424 §6).
///
/// Keys, in order:
/// - `pri` (int, 0 to 191), `facility` (int, `pri / 8`), `severity` (int,
///   `pri % 8`), `version` (int, 1 to 999);
/// - `time` (string, as written, RFC 3339), `host`, `app`, `procid` (string
///   even when numeric, as RFC 5424's PROCID is), `msgid` (strings): each
///   left out when it is the NILVALUE `-`;
/// - `structured_data` (JSON object): `{"SD-ID": {"PARAM-NAME": "value", ...},
///   ...}`, the values with their escapes `\"`, `\\`, `\]` decoded (another
///   backslash is kept, §6.3.3). A parameter name repeated within an element
///   (allowed by §6.3.3), or within a repeated SD-ID (merged into the first),
///   gives an array of its values in order. Left out when `-`;
/// - `message` (string): the MSG, a leading UTF-8 BOM removed; left out when
///   the line ends after the structured data.
///
/// Fails (`no_match`) on a missing or malformed PRI, version, header field
/// or structured data (an unclosed element or value, a bad name). A header
/// field is malformed (§6) when it holds a byte outside printable US-ASCII
/// or is longer than its limit (host 255, app 48, procid 128, msgid 32), and
/// a timestamp when it is not RFC 3339 as §6.2.3 restricts it (upper-case `T`
/// and `Z`, at most 6 fraction digits, no leap second).
///
/// `<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47
/// [exampleSDID@32473 iut="3" eventSource="Application"] An application event`
/// gives `{"pri":165,"facility":20,"severity":5,"version":1,
/// "time":"2003-10-11T22:14:15.003Z","host":"mymachine.example.com",
/// "app":"evntslog","msgid":"ID47","structured_data":{"exampleSDID@32473":
/// {"iut":"3","eventSource":"Application"}},"message":"An application event"}`.
pub(super) fn rfc5424<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    let (pri, mut at) = pri(line)?;
    push_pri(out, pri);
    let version_len = line.as_bytes()[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let version = match (version_len, line.as_bytes().get(at + version_len)) {
        (1..=3, Some(b' ')) if line.as_bytes()[at] != b'0' => &line[at..at + version_len],
        _ => return Err(Failure::no_match("the version", at)),
    };
    out.push("version", int_or_str(version));
    at += version_len + 1;
    // §6: each header field is the NILVALUE or 1 to `max` printable US-ASCII
    // bytes, the timestamp an RFC 3339 time as §6.2.3 restricts it.
    for (key, part, max) in [
        ("time", "the timestamp", 0),
        ("host", "the hostname", 255),
        ("app", "the app name", 48),
        ("procid", "the procid", 128),
        ("msgid", "the msgid", 32),
    ] {
        let rest = &line[at..];
        let len = rest.find(' ').unwrap_or(rest.len());
        let field = &rest[..len];
        let valid = match field {
            "-" => true,
            _ if max == 0 => rfc5424_time(field.as_bytes()),
            _ => len <= max && field.bytes().all(|b| b.is_ascii_graphic()),
        };
        if len == 0 || len == rest.len() || !valid {
            return Err(Failure::no_match(part, at));
        }
        if field != "-" {
            out.str(key, field);
        }
        at += len + 1;
    }
    at = structured_data(line, at, out)?;
    match line[at..].strip_prefix(' ') {
        Some(msg) => out.str("message", msg.strip_prefix('\u{feff}').unwrap_or(msg)),
        None if at == line.len() => {}
        None => return Err(Failure::no_match("the space before the message", at)),
    }
    Ok(())
}

/// `<PRI>` at the start of `line`: its value and length.
fn pri(line: &str) -> Result<(i64, usize), Failure> {
    let b = line.as_bytes();
    let digits = b
        .iter()
        .skip(1)
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if b.first() != Some(&b'<') || !(1..=3).contains(&digits) || b.get(digits + 1) != Some(&b'>') {
        return Err(Failure::no_match("the PRI", 0));
    }
    match line[1..=digits].parse::<i64>() {
        Ok(pri) if pri <= 191 => Ok((pri, digits + 2)),
        _ => Err(Failure::no_match("the PRI", 1)),
    }
}

fn push_pri(out: &mut Fields<'_>, pri: i64) {
    out.push("pri", Value::Int(pri));
    out.push("facility", Value::Int(pri / 8));
    out.push("severity", Value::Int(pri % 8));
}

fn int_or_str(s: &str) -> Value<'_> {
    match s.parse::<i64>() {
        Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Value::Int(n),
        _ => Value::Str(Cow::Borrowed(s)),
    }
}

/// The length of the BSD time `Mmm dd hh:mm:ss` at the start of `s` (the day
/// as ` d`, `dd` or `d`).
fn bsd_time(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let month = b.get(..3)?;
    if !MONTHS.iter().any(|m| m.as_slice() == month) || b.get(3) != Some(&b' ') {
        return None;
    }
    let mut i = 4;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    let day = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=2).contains(&day) || b.get(i + day) != Some(&b' ') {
        return None;
    }
    let day_ok = in_range(&b[i..i + day], 1, 31);
    i += day + 1;
    let time = b.get(i..i + 8)?;
    // §4.1.2: hours 00 to 23, minutes and seconds 00 to 59.
    (day_ok && shape(time, b"00:00:00") && clock(time, 59)).then_some(i + 8)
}

/// RFC 5424 §6.2.3's TIMESTAMP (not the NILVALUE): `FULL-DATE "T"
/// FULL-TIME` of RFC 3339, with an upper-case `T` and `Z`, a fraction of 1 to
/// 6 digits, and no leap second.
fn rfc5424_time(b: &[u8]) -> bool {
    let Some(date) = b.get(..19) else {
        return false;
    };
    if !shape(date, b"0000-00-00T00:00:00")
        || !in_range(&date[5..7], 1, 12)
        || !in_range(&date[8..10], 1, 31)
        || !clock(&date[11..], 59)
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&digits) {
            return false;
        }
        rest = &fraction[digits..];
    }
    match rest {
        b"Z" => true,
        [b'+' | b'-', offset @ ..] => {
            offset.len() == 5 && shape(offset, b"00:00") && clock(offset, 0)
        }
        _ => false,
    }
}

/// Whether `hh:mm:ss` (its digits checked) has hours up to 23, minutes up
/// to 59 and seconds up to `max_second`; with `max_second` 0, `hh:mm` only.
fn clock(t: &[u8], max_second: u32) -> bool {
    in_range(&t[..2], 0, 23)
        && in_range(&t[3..5], 0, 59)
        && (max_second == 0 || in_range(&t[6..8], 0, max_second))
}

/// Whether the ASCII digits `d` make a number from `min` to `max`.
fn in_range(d: &[u8], min: u32, max: u32) -> bool {
    let n = d.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0'));
    (min..=max).contains(&n)
}

/// The length of the RFC 3339 time at the start of `s`: its date and time
/// checked, the rest (fraction, offset) taken up to the next space.
fn rfc3339_time(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if !shape(b.get(..19)?, b"0000-00-00T00:00:00") {
        return None;
    }
    Some(s.find(' ').unwrap_or(s.len()))
}

/// Whether `b` has the shape of `pattern`: a digit where it has `0`, the same
/// byte elsewhere.
fn shape(b: &[u8], pattern: &[u8]) -> bool {
    b.len() == pattern.len()
        && b.iter().zip(pattern).all(|(c, p)| match p {
            b'0' => c.is_ascii_digit(),
            _ => c == p,
        })
}

/// A tag without its colon: `ident` or `ident[pid]`.
fn tag(word: &str) -> Option<(&str, Option<&str>)> {
    let (ident, pid) = match word.strip_suffix(']').and_then(|w| w.split_once('[')) {
        Some((ident, pid)) => (ident, Some(pid)),
        None => (word, None),
    };
    (!ident.is_empty()).then_some((ident, pid))
}

/// Reads the STRUCTURED-DATA at `at` into `structured_data`; returns the
/// offset after it.
fn structured_data<'a>(line: &'a str, at: usize, out: &mut Fields<'a>) -> Result<usize, Failure> {
    let b = line.as_bytes();
    match b.get(at) {
        Some(b'-') => return Ok(at + 1),
        Some(b'[') => {}
        _ => return Err(Failure::no_match("the structured data", at)),
    }
    let mut elements: Vec<Element<'a>> = Vec::new();
    let mut i = at;
    while b.get(i) == Some(&b'[') {
        let (id, end) = sd_name(line, i + 1)?;
        let index = match elements.iter().position(|e| e.id == id) {
            Some(index) => index,
            None => {
                elements.push(Element {
                    id,
                    params: Vec::new(),
                });
                elements.len() - 1
            }
        };
        i = sd_params(line, end, &mut elements[index])?;
    }
    out.push(
        "structured_data",
        Value::Json(Cow::Owned(to_json(&elements))),
    );
    Ok(i)
}

/// One SD-ELEMENT: its SD-ID and its parameters, each with its values.
struct Element<'a> {
    id: &'a str,
    params: Vec<(&'a str, Vec<Cow<'a, str>>)>,
}

/// An SD-NAME at `at` (1 to 32 printable ASCII bytes but `=`, space, `]`,
/// `"`): the name and the offset after it.
fn sd_name(line: &str, at: usize) -> Result<(&str, usize), Failure> {
    let len = line.as_bytes()[at..]
        .iter()
        .take_while(|&&c| c.is_ascii_graphic() && !matches!(c, b'=' | b']' | b'"'))
        .count();
    if !(1..=32).contains(&len) {
        return Err(Failure::no_match("a name in the structured data", at));
    }
    Ok((&line[at..at + len], at + len))
}

/// The ` name="value"` parameters of an element from `at` to its `]`; returns
/// the offset after the `]`.
fn sd_params<'a>(
    line: &'a str,
    mut at: usize,
    element: &mut Element<'a>,
) -> Result<usize, Failure> {
    let b = line.as_bytes();
    loop {
        match b.get(at) {
            Some(b']') => return Ok(at + 1),
            Some(b' ') => {}
            _ => return Err(Failure::no_match("the structured data", at)),
        }
        let (name, end) = sd_name(line, at + 1)?;
        if b.get(end) != Some(&b'=') || b.get(end + 1) != Some(&b'"') {
            return Err(Failure::no_match("a value in the structured data", end));
        }
        let (value, end) = sd_value(line, end + 2)?;
        match element.params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => element.params.push((name, vec![value])),
        }
        at = end;
    }
}

/// A PARAM-VALUE from `at` (after its opening quote): the value unescaped and
/// the offset after its closing quote.
fn sd_value(line: &str, at: usize) -> Result<(Cow<'_, str>, usize), Failure> {
    // RFC 5424 escapes only `"`, `\` and `]`; any other backslash is itself.
    let escape = |line: &str, i: usize, s: &mut String| match line.as_bytes().get(i + 1) {
        Some(&c @ (b'"' | b'\\' | b']')) => {
            s.push(char::from(c));
            i + 2
        }
        _ => {
            s.push('\\');
            i + 1
        }
    };
    super::quoted_value(line, at, escape)
        .ok_or_else(|| Failure::no_match("a value in the structured data (no closing quote)", at))
}

/// The elements as a JSON object of objects; a parameter with several values
/// as an array.
fn to_json(elements: &[Element<'_>]) -> String {
    let mut json = String::from("{");
    for (n, e) in elements.iter().enumerate() {
        if n > 0 {
            json.push(',');
        }
        push_json_str(&mut json, e.id);
        json.push_str(":{");
        for (p, (name, values)) in e.params.iter().enumerate() {
            if p > 0 {
                json.push(',');
            }
            push_json_str(&mut json, name);
            json.push(':');
            if let [value] = values.as_slice() {
                push_json_str(&mut json, value);
                continue;
            }
            json.push('[');
            for (v, value) in values.iter().enumerate() {
                if v > 0 {
                    json.push(',');
                }
                push_json_str(&mut json, value);
            }
            json.push(']');
        }
        json.push('}');
    }
    json.push('}');
    json
}

fn push_json_str(json: &mut String, s: &str) {
    // Serialising a string into JSON text cannot fail.
    json.push_str(&serde_json::to_string(s).expect("a string serialises"));
}

#[cfg(test)]
mod tests;
