//! The Amazon Kinesis Agent's `LOGTOJSON` formats, read as the agent reads
//! them: its patterns (`PatternConstants.java`) translated to Rust `regex`
//! syntax, compiled once, matched against the whole line (Java's
//! `Matcher.matches()`), the groups written under the agent's keys.
//!
//! The translation keeps Java's meaning where the two dialects differ:
//! `\w`, `\d` and `\s` are ASCII in Java (Unicode in Rust), so they are
//! written as ASCII classes; Java's `.` stops at `\r`, U+0085, U+2028 and
//! U+2029 besides `\n`, so it is written as the class that excludes them (a
//! line holding one of them does not match, as in the agent). Both engines
//! choose among alternatives in the same order (leftmost-first), so the
//! groups hold the same text. These are not on the hot path of the
//! shardline presets; correctness, not speed, shaped them.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use super::super::value::{Failure, Fields, Value};

pub(super) use crate::config::parse::{
    AGENT_COMBINED_KEYS as COMBINED_KEYS, AGENT_COMMON_KEYS as COMMON_KEYS,
    AGENT_ERROR_KEYS as ERROR_KEYS, AGENT_SYSLOG_KEYS as SYSLOG_KEYS,
};
/// HTTPDATE: `27/Oct/2000:09:27:09 -0400`.
pub(super) const APACHE_TIME: (&str, &str) = ("datetime", "%d/%b/%Y:%H:%M:%S %z");
/// APACHEERRORLOGTIMESTAMP: `Fri Sep 09 10:42:29.902022 2011`, or without
/// the fraction.
pub(super) const ERROR_TIME: (&str, &str) = ("timestamp", "%a %b %d %H:%M:%S%.f %Y");
/// SYSLOGTIMESTAMP: `Mar 12 12:00:08`, `Mar  7 04:22:00` (no year).
pub(super) const SYSLOG_TIME: (&str, &str) = ("timestamp", "%b %e %H:%M:%S");
/// RFC3339: `2024-01-02T03:04:05.123+01:00`.
pub(super) const RFC3339_TIME: (&str, &str) = ("timestamp", "rfc3339");

/// The agent's building blocks, by their names in `PatternConstants.java`.
mod pattern {
    pub(super) const INT: &str = r"(?:[+-]?(?:[0-9]+))";
    pub(super) const POSINT: &str = r"(?:[1-9][0-9]*)";
    pub(super) const NONNEGINT: &str = r"(?:[0-9]+)";
    /// Java's `.` without DOTALL: anything but a line terminator.
    pub(super) const DOT: &str = r"[^\n\r\x{85}\x{2028}\x{2029}]";
    pub(super) const WORD: &str = r"[0-9A-Za-z_]+";
    pub(super) const NOQUOTE: &str = r#"[^"]+"#;
    pub(super) const IP: &str = r"(?:[0-9.]+)";
    /// Java's `\s`.
    pub(super) const SPACE: &str = r"[\t\n\x0B\x0C\r ]";
    pub(super) const USER: &str = r"(?:[a-zA-Z0-9._-]+)";
    pub(super) const MONTHDAY: &str = r"(?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9])";
    pub(super) const DAY: &str = r"(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?)";
    pub(super) const MONTH: &str = r"\b(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|Sep(?:tember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\b";
    pub(super) const YEAR: &str = r"(?:[1-9][0-9]*)";
    pub(super) const HOUR: &str = r"(?:2[0123]|[01]?[0-9])";
    pub(super) const MINUTE: &str = r"(?:[0-5][0-9])";
    pub(super) const SECOND: &str = r"(?:(?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?)";
    pub(super) const RFC3339: &str = r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)(?:Z|(?:[-+][0-9]{2}:[0-9]{2}))";
    /// `[\w\._/%-]`.
    pub(super) const PROG: &str = r"([0-9A-Za-z_./%-]+)";
}

/// The agent's patterns, built as `PatternConstants.java` builds them.
fn patterns() -> [String; 5] {
    use pattern::*;
    // `\b` is kept where Java has it: it never changes a match here (a month
    // sits between `/`, spaces or the line's start; HOSTNAME's `\b` is an
    // alternative to an empty `\.?` tried first), so its Unicode meaning in
    // Rust cannot differ from Java's.
    let hostname = r"(?:[0-9A-Za-z_-]+)(?:\.(?:[0-9A-Za-z_-]+))*(?:\.?|\b)";
    let iporhost = format!("(?:{hostname}|{IP})");
    let urihost = format!("(?:{iporhost}(?::{POSINT})?)");
    let time = format!("(?:{HOUR}:{MINUTE}:{SECOND})");
    let httpdate = format!("(?:{MONTHDAY}/{MONTH}/{YEAR}:{time}{SPACE}{INT})");
    let error_time =
        format!("(?:{DAY}{SPACE}+{MONTH}{SPACE}+{MONTHDAY}{SPACE}+{time}{SPACE}+{YEAR})");
    let syslog_time = format!("(?:{MONTH}{SPACE}+{MONTHDAY}{SPACE}+{time})");
    let facility = format!("<{NONNEGINT}{DOT}{NONNEGINT}>");
    let prog = format!(r"{PROG}(?:\[({POSINT})\])?");
    let anydata = format!("{DOT}*");
    let common = format!(
        r#"^({iporhost}) ({USER}) ({USER}) \[({httpdate})\] "({NOQUOTE})" ({INT}|\-) ({INT}|\-)"#
    );
    let combined = format!(r#"{common} "({NOQUOTE})" "({NOQUOTE})""#);
    let error = format!(
        r"^\[({error_time})\] \[(?:({WORD}):)?({WORD})\] \[pid ({NONNEGINT})(?::tid ({NONNEGINT}))?\] \[client ({urihost})\] ({anydata})"
    );
    let syslog = format!("^({syslog_time}) (?:{facility} )?({USER}) {prog}: ({anydata})");
    let rfc3339 = format!("^({RFC3339}) (?:{facility} )?({USER}) {prog}: ({anydata})");
    [
        // ApacheLogParser appends `.*` to the access patterns.
        format!("{common}{anydata}"),
        format!("{combined}{anydata}"),
        error,
        syslog,
        rfc3339,
    ]
}

/// One of the agent's formats, compiled.
struct Format {
    /// The failure's part: the whole pattern, as the agent says no more.
    name: &'static str,
    /// The pattern, anchored at both ends.
    regex: Regex,
    keys: &'static [&'static str],
    /// Whether a group's value `-` is null (ApacheLogParser), or kept
    /// (SysLogParser).
    dash_is_null: bool,
}

static FORMATS: LazyLock<[Format; 5]> = LazyLock::new(|| {
    let [common, combined, error, syslog, rfc3339] = patterns();
    let format = |name, pattern: String, keys, dash_is_null| Format {
        name,
        // The patterns are constants of this file, held by its tests.
        regex: Regex::new(&format!(r"\A(?:{pattern})\z")).expect("the agent's pattern compiles"),
        keys,
        dash_is_null,
    };
    [
        format("the COMMONAPACHELOG pattern", common, COMMON_KEYS, true),
        format(
            "the COMBINEDAPACHELOG pattern",
            combined,
            COMBINED_KEYS,
            true,
        ),
        format("the APACHEERRORLOG pattern", error, ERROR_KEYS, true),
        format("the SYSLOG pattern", syslog, SYSLOG_KEYS, false),
        format("the RFC3339SYSLOG pattern", rfc3339, SYSLOG_KEYS, false),
    ]
});

impl Format {
    /// Writes every group under its key: a group that did not take part is
    /// null, as is `-` when `dash_is_null`; any other value a string.
    fn read<'a>(&self, line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
        let Some(groups) = self.regex.captures(line) else {
            return Err(Failure::no_match(self.name, 0));
        };
        for (i, &key) in self.keys.iter().enumerate() {
            let value = match groups.get(i + 1).map(|m| m.as_str()) {
                None => Value::Null,
                Some("-") if self.dash_is_null => Value::Null,
                Some(text) => Value::Str(Cow::Borrowed(text)),
            };
            out.push(key, value);
        }
        Ok(())
    }
}

/// The agent's `COMMONAPACHELOG`: keys `host`, `ident`, `authuser`,
/// `datetime`, `request`, `response`, `bytes`, every value a string as
/// written, `-` null. Anything may follow the bytes (the agent's pattern
/// ends in `.*`); a request `""` does not match (`[^"]+`), nor a line
/// without the bytes, nor an IPv6 host. The line
///
/// ```text
/// 123.45.67.89 - - [27/Oct/2000:09:27:09 -0400] "GET /java/javaResources.html HTTP/1.0" 200 10450
/// ```
///
/// is the record
///
/// ```json
/// {"host":"123.45.67.89","ident":null,"authuser":null,"datetime":"27/Oct/2000:09:27:09 -0400",
///  "request":"GET /java/javaResources.html HTTP/1.0","response":"200","bytes":"10450"}
/// ```
pub(super) fn common_apache<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    FORMATS[0].read(line, out)
}

/// The agent's `COMBINEDAPACHELOG`: the keys of `COMMONAPACHELOG`, then
/// `referer` and `agent` (strings, `-` null); anything may follow the user
/// agent. A quoted field ends at its first quote, escaped or not, as in the
/// agent: a request or referer holding a `\"` makes the line not match, a
/// user agent holding one is cut before the quote (`say \`). The line
///
/// ```text
/// 123.45.67.89 - - [27/Oct/2000:09:27:09 -0400] "GET /java/javaResources.html HTTP/1.0" 200 10450 "-" "Mozilla/4.6 [en] (X11; U; OpenBSD 2.8 i386; Nav)"
/// ```
///
/// is the record
///
/// ```json
/// {"host":"123.45.67.89","ident":null,"authuser":null,"datetime":"27/Oct/2000:09:27:09 -0400",
///  "request":"GET /java/javaResources.html HTTP/1.0","response":"200","bytes":"10450",
///  "referer":null,"agent":"Mozilla/4.6 [en] (X11; U; OpenBSD 2.8 i386; Nav)"}
/// ```
pub(super) fn combined_apache<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    FORMATS[1].read(line, out)
}

/// The agent's `APACHEERRORLOG`: keys `timestamp`, `module` (null when the
/// level has none), `severity`, `processid`, `threadid` (null without
/// `:tid`), `client`, `message`; strings, `-` null. The `[pid …]` and
/// `[client …]` parts are required, so 2.2 lines and lines without a client
/// do not match. The line
///
/// ```text
/// [Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187] File does not exist: /usr/local/apache2/htdocs/favicon.ico
/// ```
///
/// is the record
///
/// ```json
/// {"timestamp":"Fri Sep 09 10:42:29.902022 2011","module":"core","severity":"error",
///  "processid":"35708","threadid":"4328636416","client":"72.15.99.187",
///  "message":"File does not exist: /usr/local/apache2/htdocs/favicon.ico"}
/// ```
pub(super) fn apache_error<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    FORMATS[2].read(line, out)
}

/// The agent's `SYSLOG`: keys `timestamp` (`Mar 12 12:00:08`, no year),
/// `hostname`, `program`, `processid` (null without `[pid]`), `message`;
/// strings, `-` kept as it is. An optional `<facility.priority>` after the
/// time is matched and not written. The line
///
/// ```text
/// Mar 12 12:00:08 server2 rcd[308]: Loaded 12 packages
/// ```
///
/// is the record
///
/// ```json
/// {"timestamp":"Mar 12 12:00:08","hostname":"server2","program":"rcd","processid":"308",
///  "message":"Loaded 12 packages"}
/// ```
pub(super) fn syslog<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    FORMATS[3].read(line, out)
}

/// The agent's `RFC3339SYSLOG`: `SYSLOG` with an RFC 3339 time
/// (`2024-01-02T03:04:05.123+01:00`, upper-case `T` and `Z` only) in
/// `timestamp`; the same keys and values. The line
///
/// ```text
/// 2024-01-02T03:04:05.123456+00:00 web-1 sshd[812]: Accepted publickey for deploy
/// ```
///
/// is the record
///
/// ```json
/// {"timestamp":"2024-01-02T03:04:05.123456+00:00","hostname":"web-1","program":"sshd",
///  "processid":"812","message":"Accepted publickey for deploy"}
/// ```
pub(super) fn rfc3339_syslog<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    FORMATS[4].read(line, out)
}

#[cfg(test)]
mod tests;
