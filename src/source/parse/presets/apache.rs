//! Apache httpd's access log (common and combined formats) and error log
//! (2.4's default `ErrorLogFormat` and 2.2's), read by hand without a regex,
//! with values borrowed from the line.
//!
//! nginx's default access format is Apache's combined line under other key
//! names, so the access reader ([`access`]) and the cursor it is written with
//! ([`scan`]) live here and serve the nginx presets too.

use std::borrow::Cow;

use super::super::value::{Failure, Fields, Value};
use scan::{int, Scanner};

pub(super) mod access;
pub(super) mod scan;

pub(super) const COMMON_KEYS: &[&str] = &[
    "host", "ident", "user", "time", "method", "path", "protocol", "code", "size",
];
pub(super) const COMBINED_KEYS: &[&str] = &[
    "host", "ident", "user", "time", "method", "path", "protocol", "code", "size", "referer",
    "agent",
];
pub(super) const ERROR_KEYS: &[&str] = &[
    "time", "module", "level", "pid", "tid", "client", "code", "message",
];
/// `%t`: `[10/Oct/2000:13:55:36 -0700]`.
pub(super) const TIME: (&str, &str) = ("time", "%d/%b/%Y:%H:%M:%S %z");
/// 2.4's `%{u}t` (`Wed Oct 11 14:32:52.123456 2000`) and 2.2's time without
/// the fraction; local time, no offset.
pub(super) const ERROR_TIME: (&str, &str) = ("time", "%a %b %d %H:%M:%S%.f %Y");

/// Apache's Common Log Format, `%h %l %u %t "%r" %>s %b`.
///
/// Keys, in order:
/// - `host` (string): the client, an IPv4 or IPv6 address or a name.
/// - `ident` (string; `-` is null): the identd answer.
/// - `user` (string; `-` is null, `""` the empty string): the authenticated
///   user, which may hold spaces.
/// - `time` (string): what is between the brackets of `%t`; the preset's time
///   format reads it.
/// - `method`, `path`, `protocol` (strings or null): the request line split at
///   its two spaces. A request line that is not exactly three parts between
///   two single spaces (garbage, an HTTP/0.9 `GET /`, a path with a space) is
///   all in `path`, with `method` and `protocol` null; a request `-` or `""`
///   makes all three null.
/// - `code` (integer; `-` is null): the status.
/// - `size` (integer; `-`, which `%b` writes for no body, is null): the
///   response's size.
///
/// Quoted fields have Apache's escapes undone (`\"`, `\\`, `\xHH`, `\t`,
/// …; bytes that do not make UTF-8 become U+FFFD). Text after the size (after
/// a space) is ignored, so a combined line read as common loses its last two
/// fields and fails nothing. The line
///
/// ```text
/// 192.0.2.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326
/// ```
///
/// is the record
///
/// ```json
/// {"host":"192.0.2.1","ident":null,"user":"frank","time":"10/Oct/2000:13:55:36 -0700",
///  "method":"GET","path":"/apache_pb.gif","protocol":"HTTP/1.0","code":200,"size":2326}
/// ```
pub(super) fn common<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    access::read(line, &ACCESS_KEYS[0], out)
}

/// Apache's Combined Log Format, `%h %l %u %t "%r" %>s %b "%{Referer}i"
/// "%{User-agent}i"`: the keys of `apache_common`, then
/// - `referer` (string; `-` is null),
/// - `agent` (string; `-` is null): the User-Agent.
///
/// Text after the user agent (after a space), such as a `%D` added at the
/// end of the format, is ignored. The line
///
/// ```text
/// 2001:db8::7 - - [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.1" 200 2326 "http://example.com/" "Mozilla/5.0 (X11; Linux x86_64)"
/// ```
///
/// is the record
///
/// ```json
/// {"host":"2001:db8::7","ident":null,"user":null,"time":"10/Oct/2000:13:55:36 -0700",
///  "method":"GET","path":"/a.gif","protocol":"HTTP/1.1","code":200,"size":2326,
///  "referer":"http://example.com/","agent":"Mozilla/5.0 (X11; Linux x86_64)"}
/// ```
pub(super) fn combined<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    access::read(line, &ACCESS_KEYS[1], out)
}

const ACCESS_KEYS: [access::Keys; 2] = [
    access::Keys {
        client: "host",
        ident: Some("ident"),
        user: "user",
        time: "time",
        combined: false,
    },
    access::Keys {
        client: "host",
        ident: Some("ident"),
        user: "user",
        time: "time",
        combined: true,
    },
];

/// Apache's error log: 2.4's default format
/// `[%{u}t] [%-m:%l] [pid %P:tid %T] %7F: %E: [client %a] %M` and 2.2's
/// `[%t] [%l] [client %a] %M`.
///
/// Keys, in order; a part the line does not have is left out (no null):
/// - `time` (string): what is between the first brackets.
/// - `module` (string): the module before the `:` of `[core:error]`; absent
///   in 2.2 lines.
/// - `level` (string): `error`, `notice`, `trace3`, …
/// - `pid` (integer), `tid` (integer; a string if past 2^63): from
///   `[pid 1234:tid 5678]`, which 2.2 lines and `[pid 1234]` lack.
/// - `client` (string): the address (and port) of `[client 192.0.2.1:5678]`.
/// - `code` (string): the `AH00128` error code that opens the message.
/// - `message` (string): the rest. The source file (`core.c(4620)`, at debug
///   levels) and the system error (`(111)Connection refused`) that 2.4 writes
///   before the client stay at its start, followed by the text after the
///   client and the code: `(111)Connection refused: HTTP: attempt to connect
///   … failed`.
///
/// The line
///
/// ```text
/// [Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 1234:tid 5678] [client 192.0.2.1:5678] AH00128: File does not exist: /var/www/favicon.ico
/// ```
///
/// is the record
///
/// ```json
/// {"time":"Wed Oct 11 14:32:52.123456 2000","module":"core","level":"error","pid":1234,
///  "tid":5678,"client":"192.0.2.1:5678","code":"AH00128",
///  "message":"File does not exist: /var/www/favicon.ico"}
/// ```
pub(super) fn error<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    let mut s = Scanner::new(line);
    s.byte(b'[', "the opening bracket of the time")?;
    let time = s.until(b']', "the closing bracket of the time")?;
    space_or_end(&mut s, "the space after the time")?;
    s.byte(b'[', "the opening bracket of the level")?;
    let level_at = s.at();
    let level = s.until(b']', "the closing bracket of the level")?;
    let (module, level) = match level.split_once(':') {
        Some((module, level)) => (Some(module).filter(|m| !m.is_empty()), level),
        None => (None, level),
    };
    if level.is_empty() || level.contains(' ') {
        return Err(Failure::no_match("the level", level_at));
    }
    space_or_end(&mut s, "the space after the level")?;
    let ids = process(&mut s)?;
    let body = s.rest();
    let prefix_len = prefix(s.rest());
    let prefix = &s.rest()[..prefix_len];
    s.skip(prefix_len);
    let client = client(&mut s)?;
    let code = error_code(s.rest());
    if let Some(code) = code {
        s.skip(code.len() + 2);
    }
    out.str("time", time);
    if let Some(module) = module {
        out.str("module", module);
    }
    out.str("level", level);
    if let Some((pid, tid)) = ids {
        out.push("pid", Value::Int(pid));
        if let Some(tid) = tid {
            out.push("tid", tid);
        }
    }
    if let Some(client) = client {
        out.str("client", client);
    }
    if let Some(code) = code {
        out.str("code", code);
    }
    let message = if client.is_none() && code.is_none() {
        Cow::Borrowed(body)
    } else if prefix.is_empty() {
        Cow::Borrowed(s.rest())
    } else {
        Cow::Owned(format!("{prefix}{}", s.rest()))
    };
    out.push("message", Value::Str(message));
    Ok(())
}

/// A space, or the end of the line.
fn space_or_end(s: &mut Scanner<'_>, part: &'static str) -> Result<(), Failure> {
    if s.is_done() || s.eat(b' ') {
        Ok(())
    } else {
        Err(s.fail(part))
    }
}

/// `[pid 1234:tid 5678] ` or `[pid 1234] `, if next: the pid and the tid.
fn process<'a>(s: &mut Scanner<'a>) -> Result<Option<(i64, Option<Value<'a>>)>, Failure> {
    if !s.eat_str("[pid ") {
        return Ok(None);
    }
    let at = s.at();
    let ids = s.until(b']', "the closing bracket of the pid")?;
    let (pid_text, tid) = match ids.split_once(":tid ") {
        Some((pid, tid)) => (pid, Some(tid)),
        None => (ids, None),
    };
    let pid = int(pid_text).ok_or(Failure::no_match("the pid", at))?;
    let tid = match tid.map(|t| (t, int(t))) {
        None => None,
        Some((_, Some(tid))) => Some(Value::Int(tid)),
        // A thread id past i64 (pthread_t is unsigned) is kept as written.
        Some((t, None)) if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) => {
            Some(Value::Str(Cow::Borrowed(t)))
        }
        Some(_) => return Err(Failure::no_match("the thread id", at + pid_text.len() + 5)),
    };
    space_or_end(s, "the space after the pid")?;
    Ok(Some((pid, tid)))
}

/// `[client 192.0.2.1:5678] `, if next: the client. Its closing bracket is
/// the first `]` followed by a space or the end of the line, so that a
/// bracketed IPv6 address inside is kept whole.
fn client<'a>(s: &mut Scanner<'a>) -> Result<Option<&'a str>, Failure> {
    if !s.eat_str("[client ") {
        return Ok(None);
    }
    let rest = s.rest();
    let b = rest.as_bytes();
    let close = (0..b.len()).find(|&i| b[i] == b']' && matches!(b.get(i + 1), None | Some(b' ')));
    let Some(close) = close else {
        return Err(Failure::no_match(
            "the closing bracket of the client",
            s.at() + rest.len(),
        ));
    };
    s.skip(close + 1);
    s.eat(b' ');
    Ok(Some(&rest[..close]))
}

/// The length of what 2.4 writes before the client: a source file
/// (`core.c(4620): `) and a system error (`(111)Connection refused: `), each
/// optional, in that order.
fn prefix(rest: &str) -> usize {
    let mut len = 0;
    let file = rest
        .split_once(": ")
        .filter(|(f, _)| is_source_file(f))
        .map_or(0, |(f, _)| f.len() + 2);
    len += file;
    let status = rest[len..]
        .split_once(": ")
        .filter(|(e, _)| is_system_error(e))
        .map_or(0, |(e, _)| e.len() + 2);
    len + status
}

/// `name.c(123)`: no space, digits in the final parentheses.
fn is_source_file(s: &str) -> bool {
    let Some(inner) = s.strip_suffix(')') else {
        return false;
    };
    match inner.rsplit_once('(') {
        Some((name, line)) => {
            !name.is_empty() && !name.contains([' ', '[', '(']) && int(line).is_some()
        }
        None => false,
    }
}

/// `(111)Connection refused`: a number (maybe negative) in parentheses, then
/// text without a bracket.
fn is_system_error(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('(') else {
        return false;
    };
    match inner.split_once(')') {
        Some((n, text)) => {
            int(n.strip_prefix('-').unwrap_or(n)).is_some() && !text.contains(['[', ']'])
        }
        None => false,
    }
}

/// `AH00128` when `rest` opens with it and `: `.
fn error_code(rest: &str) -> Option<&str> {
    let code = rest.get(..7)?;
    let digits = code.strip_prefix("AH")?;
    (digits.bytes().all(|c| c.is_ascii_digit()) && rest[7..].starts_with(": ")).then_some(code)
}

#[cfg(test)]
mod tests;
