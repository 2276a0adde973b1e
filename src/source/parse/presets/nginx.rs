//! nginx's access log in its default `combined` format and its error log,
//! read by hand without a regex, with values borrowed from the line. The
//! access line is Apache's combined line, read by the same reader.

use std::borrow::Cow;

use super::super::value::{Failure, Fields, Value};
use super::apache::access;
use super::apache::scan::{int, Scanner};

pub(super) const ACCESS_KEYS: &[&str] = &[
    "remote", "user", "time", "method", "path", "protocol", "code", "size", "referer", "agent",
];
pub(super) const ERROR_KEYS: &[&str] = &[
    "time",
    "level",
    "pid",
    "tid",
    "cid",
    "message",
    "client",
    "server",
    "request",
    "subrequest",
    "upstream",
    "host",
    "referrer",
];
/// `$time_local`: `02/Jan/2024:03:04:05 +0000`.
pub(super) const ACCESS_TIME: (&str, &str) = ("time", "%d/%b/%Y:%H:%M:%S %z");
/// `2024/01/02 03:04:05`, local time, no offset.
pub(super) const ERROR_TIME: (&str, &str) = ("time", "%Y/%m/%d %H:%M:%S");

/// nginx's access log in the default `combined` format,
/// `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"`.
///
/// Keys, in order:
/// - `remote` (string): `$remote_addr`, IPv4 or IPv6.
/// - `user` (string; `-` is null): `$remote_user`.
/// - `time` (string): `$time_local`, between the brackets.
/// - `method`, `path`, `protocol` (strings or null): `$request` split at its
///   two spaces, as in `apache_common`: a request that is not exactly three
///   parts is all in `path` with `method` and `protocol` null; `-` or `""` is
///   three nulls.
/// - `code` (integer; `-` is null): `$status`.
/// - `size` (integer; `-` is null): `$body_bytes_sent`.
/// - `referer`, `agent` (strings; `-` is null).
///
/// The `-` after the address is read and not written. Quoted fields have
/// nginx's escapes undone (`\x22` is `"`; bytes that do not make UTF-8
/// become U+FFFD). Text after the user agent (after a space), such as the
/// `"$http_x_forwarded_for"` of the `main` format, is ignored. The line
///
/// ```text
/// 203.0.113.9 - alice [02/Jan/2024:03:04:05 +0000] "GET /index.html?q=1 HTTP/1.1" 200 612 "-" "curl/8.5.0"
/// ```
///
/// is the record
///
/// ```json
/// {"remote":"203.0.113.9","user":"alice","time":"02/Jan/2024:03:04:05 +0000",
///  "method":"GET","path":"/index.html?q=1","protocol":"HTTP/1.1","code":200,"size":612,
///  "referer":null,"agent":"curl/8.5.0"}
/// ```
pub(super) fn access<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    const KEYS: access::Keys = access::Keys {
        client: "remote",
        ident: None,
        user: "user",
        time: "time",
        combined: true,
    };
    access::read(line, &KEYS, out)
}

/// nginx's error log: `2024/01/02 03:04:05 [error] 1234#5678: *99 message,
/// client: 192.0.2.1, server: example.com, request: "GET / HTTP/1.1", host:
/// "example.com"`.
///
/// Keys, in order; a part the line does not have is left out (no null):
/// - `time` (string): the first 19 bytes, `2024/01/02 03:04:05`.
/// - `level` (string): `error`, `warn`, `notice`, …
/// - `pid`, `tid` (integers): from `1234#5678:`.
/// - `cid` (integer): the connection number of `*99`, when there is one.
/// - `message` (string): the text up to the list of request details.
/// - `client`, `server`, `request`, `subrequest`, `upstream`, `host`,
///   `referrer` (strings, without their quotes): from the `, key: value` list
///   nginx ends a request's messages with, in the order written.
///
/// The list is taken from the first `, client: ` from which the rest of the
/// line is a list of those keys, each at most once, `client` and `server`
/// without quotes nor spaces, the others in double quotes (a value runs to
/// the next `, key: `, so quotes inside a request are kept). A line whose
/// tail is anything else (the stream module's `bytes from/to client:0/0`)
/// keeps it all in `message`. The line
///
/// ```text
/// 2024/01/02 03:04:05 [error] 1234#0: *99 open() "/srv/www/favicon.ico" failed (2: No such file or directory), client: 192.0.2.1, server: example.com, request: "GET /favicon.ico HTTP/1.1", host: "example.com"
/// ```
///
/// is the record
///
/// ```json
/// {"time":"2024/01/02 03:04:05","level":"error","pid":1234,"tid":0,"cid":99,
///  "message":"open() \"/srv/www/favicon.ico\" failed (2: No such file or directory)",
///  "client":"192.0.2.1","server":"example.com","request":"GET /favicon.ico HTTP/1.1",
///  "host":"example.com"}
/// ```
pub(super) fn error<'a>(line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
    let time = error_time(line)?;
    let mut s = Scanner::new(line);
    s.skip(time.len());
    s.byte(b' ', "the space after the time")?;
    s.byte(b'[', "the opening bracket of the level")?;
    let level_at = s.at();
    let level = s.until(b']', "the closing bracket of the level")?;
    if level.is_empty() || level.contains(' ') {
        return Err(Failure::no_match("the level", level_at));
    }
    s.byte(b' ', "the space after the level")?;
    let pid = number(&mut s, b'#', "the pid")?;
    let tid = number(&mut s, b':', "the thread id")?;
    let cid = if !s.is_done() {
        s.byte(b' ', "the space after the thread id")?;
        connection(&mut s)
    } else {
        None
    };
    let rest = s.rest();
    let (message, details) = split_details(rest);
    out.str("time", time);
    out.str("level", level);
    out.push("pid", Value::Int(pid));
    out.push("tid", Value::Int(tid));
    if let Some(cid) = cid {
        out.push("cid", Value::Int(cid));
    }
    out.str("message", message);
    for (key, value) in details.into_iter().flatten().flatten() {
        out.push(key, Value::Str(Cow::Borrowed(value)));
    }
    Ok(())
}

/// `2024/01/02 03:04:05`, checked digit by digit.
fn error_time(line: &str) -> Result<&str, Failure> {
    const SHAPE: &[u8; 19] = b"dddd/dd/dd dd:dd:dd";
    let b = line.as_bytes();
    for (i, &want) in SHAPE.iter().enumerate() {
        let ok = match (want, b.get(i)) {
            (b'd', Some(c)) => c.is_ascii_digit(),
            (want, Some(&c)) => c == want,
            (_, None) => false,
        };
        if !ok {
            return Err(Failure::no_match("the time", i));
        }
    }
    Ok(&line[..SHAPE.len()])
}

/// Digits up to `end`, which is consumed.
fn number(s: &mut Scanner<'_>, end: u8, part: &'static str) -> Result<i64, Failure> {
    let at = s.at();
    let digits = s.until(end, part)?;
    int(digits).ok_or(Failure::no_match(part, at))
}

/// `*99 `, if next: the connection number.
fn connection(s: &mut Scanner<'_>) -> Option<i64> {
    let rest = s.rest().strip_prefix('*')?;
    let len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let cid = int(&rest[..len])?;
    if !matches!(rest.as_bytes().get(len), None | Some(b' ')) {
        return None;
    }
    s.skip(len + 1);
    s.eat(b' ');
    Some(cid)
}

/// The keys of the details list, in the order nginx writes them, and whether
/// nginx quotes their values.
const DETAILS: [(&str, bool); 7] = [
    ("client", false),
    ("server", false),
    ("request", true),
    ("subrequest", true),
    ("upstream", true),
    ("host", true),
    ("referrer", true),
];

/// The most details a line has (each key once).
type Details<'a> = [Option<(&'static str, &'a str)>; DETAILS.len()];

/// The message and its details list, split at the first `, client: ` from
/// which the rest reads as a list.
fn split_details(rest: &str) -> (&str, Option<Details<'_>>) {
    let mut from = 0;
    while let Some(i) = rest[from..].find(", client: ") {
        let at = from + i;
        if let Some(details) = details(&rest[at..]) {
            return (&rest[..at], Some(details));
        }
        from = at + 2;
    }
    (rest, None)
}

/// `, key: value, key: value…` to the end of `list`, each key one of
/// [`DETAILS`], at most once. A value runs to the next `, key: ` or the end;
/// a quoted key's value is in double quotes (which are dropped), another's
/// has no space.
fn details(list: &str) -> Option<Details<'_>> {
    let mut found: Details<'_> = [None; DETAILS.len()];
    let mut n = 0;
    let mut rest = list;
    while !rest.is_empty() {
        let (k, after) = detail_key(rest.strip_prefix(", ")?)?;
        let (key, quoted) = DETAILS[k];
        if found.iter().flatten().any(|(seen, _)| *seen == key) {
            return None;
        }
        let end = next_detail(after).unwrap_or(after.len());
        let raw = &after[..end];
        let value = if quoted {
            raw.strip_prefix('"')?.strip_suffix('"')?
        } else if raw.contains(' ') {
            return None;
        } else {
            raw
        };
        // One item per key, so `n` stays below DETAILS.len().
        found[n] = Some((key, value));
        n += 1;
        rest = &after[end..];
    }
    Some(found)
}

/// The index in [`DETAILS`] of the key `item` opens with (followed by `: `),
/// and the text after the `: `.
fn detail_key(item: &str) -> Option<(usize, &str)> {
    DETAILS.iter().enumerate().find_map(|(k, (key, _))| {
        let after = item.strip_prefix(key)?.strip_prefix(": ")?;
        Some((k, after))
    })
}

/// Where the next `, key: ` of the list starts in `s`.
fn next_detail(s: &str) -> Option<usize> {
    s.match_indices(", ")
        .map(|(i, _)| i)
        .find(|&i| detail_key(&s[i + 2..]).is_some())
}

#[cfg(test)]
mod tests;
