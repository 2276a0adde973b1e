//! The disagreements on purpose between a preset and the independent parser
//! of its format, each with the spec that says which side is right. The
//! Kinesis Agent formats have none: their presets and `crosscheck.py` run the
//! agent's own patterns.

/// One line of one format on which the two parsers differ.
pub struct Known {
    /// The preset (`crosscheck.py`'s FORMAT).
    pub format: &'static str,
    /// The line's number in its list in [`super::samples`], from 1.
    pub line: usize,
    /// `accept` when one parser takes the line and the other refuses it,
    /// else the keys whose values differ.
    pub keys: &'static [&'static str],
    /// Why, and which side the spec says is right.
    pub why: &'static str,
}

const fn known(
    format: &'static str,
    line: usize,
    keys: &'static [&'static str],
    why: &'static str,
) -> Known {
    Known {
        format,
        line,
        keys,
        why,
    }
}

/// Apache's mod_log_config docs: in `%r` and `%{…}i`, `"` and `\` are
/// written `\"` and `\\`, other special bytes `\xhh`.
const APACHE_ESCAPES: &str = "apache-log-parser keeps Apache's escapes; shardline undoes them \
     (mod_log_config: quotes and backslashes are escaped with a backslash, other bytes as \\xhh): \
     shardline is right";
const APACHE_HTTP2: &str = "apache-log-parser knows only HTTP/1.0 and HTTP/1.1 and leaves the \
     version in the path; %r is the request line, `method SP target SP version` (RFC 9112 §3), \
     HTTP/2.0 included: shardline is right";

pub const DIFFERENCES: &[Known] = &[
    known("apache_common", 4, &["path"], APACHE_ESCAPES),
    known("apache_common", 6, &["path", "protocol"], APACHE_HTTP2),
    known(
        "apache_common",
        8,
        &["method", "path", "protocol"],
        "a space in the target makes the request line invalid (RFC 9112 §3.2: no spaces in the \
         target; Apache answered 400): apache-log-parser guesses a split, shardline keeps the \
         line whole in `path`; neither is wrong",
    ),
    known("apache_common", 9, &["path"], APACHE_ESCAPES),
    known(
        "apache_combined",
        4,
        &["agent"],
        "apache-log-parser ends the user agent at its first quote, escaped or not, and keeps \
         `Mozilla/5.0 \\`; Apache writes `\\\"` for a quote inside (mod_log_config): shardline \
         is right",
    ),
    known("apache_combined", 6, &["path", "protocol"], APACHE_HTTP2),
    known(
        "syslog_rfc3164",
        8,
        &["accept"],
        "no PRI: syslogmp refuses it; RFC 3164 §4.3.3 makes such a message valid (a relay adds \
         <13>), and rsyslog writes files without it: shardline is right",
    ),
    known(
        "syslog_rfc3164",
        9,
        &["accept"],
        "an RFC 3339 time: syslogmp refuses it, as RFC 3164 §4.1.2 allows only `Mmm dd \
         hh:mm:ss`; shardline reads rsyslog's RSYSLOG_FileFormat on purpose (documented): \
         syslogmp is right by the RFC",
    ),
    known(
        "syslog_rfc3164",
        12,
        &["accept"],
        "no HOSTNAME: syslogmp takes an empty host; RFC 3164 §4.1.2 has the HEADER hold the \
         TIMESTAMP and the HOSTNAME, each followed by a space: shardline is right",
    ),
    known(
        "syslog_rfc5424",
        1,
        &["message"],
        "syslog-rfc5424-parser keeps the BOM in the message; RFC 5424 §6.4 makes the BOM the \
         marker of a UTF-8 MSG, not text: shardline is right",
    ),
    known(
        "syslog_rfc5424",
        5,
        &["structured_data"],
        "syslog-rfc5424-parser keeps `\\\"`, `\\\\` and `\\]` in parameter values; RFC 5424 \
         §6.3.3 escapes those three characters: shardline is right",
    ),
    known(
        "syslog_rfc5424",
        6,
        &["structured_data"],
        "a parameter repeated in an element: syslog-rfc5424-parser keeps the last value; RFC \
         5424 §6.3.3 allows the repetition, shardline keeps every value (an array): shardline \
         is right",
    ),
    known(
        "syslog_rfc5424",
        7,
        &["host"],
        "the NILVALUE host (RFC 5424 §6.2.4) leaves out the parsed `host`, so the record's \
         added `host` (the machine's name, docs/parsing.md) is there: by design",
    ),
    known(
        "logfmt",
        6,
        &["key"],
        "`key=`: logfmt 0.4 gives true; the reference implementation (go-logfmt) reads an \
         empty value: shardline is right",
    ),
    known(
        "logfmt",
        7,
        &["url"],
        "`url=/a?b=c`: logfmt 0.4 ends the value at `=` and loses the rest; go-logfmt refuses \
         the `=`; shardline keeps the value whole (documented): logfmt 0.4 is wrong",
    ),
    known(
        "logfmt",
        8,
        &["msg"],
        "logfmt 0.4 does not decode `\\\\` and never closes the value; go-logfmt decodes JSON \
         escapes: shardline is right",
    ),
    known(
        "logfmt",
        9,
        &["accept"],
        "an unclosed quoted value: logfmt 0.4 keeps the line; go-logfmt refuses it \
         (unterminated quoted value): shardline is right",
    ),
    known(
        "logfmt",
        10,
        &["accept"],
        "plain text: logfmt 0.4 (like go-logfmt) reads each word as a key without a value; \
         shardline refuses a line without a key=value pair on purpose (documented)",
    ),
    known(
        "csv",
        12,
        &["accept"],
        "a quoted field never closed at the end of the file: Python returns it with the \
         newline; RFC 4180 §2 (rules 6 and 7) closes every quoted field: shardline is right",
    ),
];
