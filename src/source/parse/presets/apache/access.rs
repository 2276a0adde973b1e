//! The access log line Apache's common and combined formats and nginx's
//! default `combined` format share:
//!
//! ```text
//! client ident user [time] "request" status size ["referer" "agent"] [anything]
//! ```
//!
//! One reader serves the three presets; each names the keys it writes in a
//! [`Keys`]. The reader borrows every value from the line and allocates only
//! for a quoted field holding escapes.

use std::borrow::Cow;

use super::super::super::value::{Failure, Fields, Value};
use super::scan::{dash_null, int, unescape, Quoted, Scanner};

/// The names an access log preset writes its fields under.
pub(in super::super) struct Keys {
    pub client: &'static str,
    /// `None`: the second field is read and left out (nginx writes a literal
    /// `-` there).
    pub ident: Option<&'static str>,
    pub user: &'static str,
    pub time: &'static str,
    /// Whether the line goes on with the quoted referer and user agent.
    pub combined: bool,
}

/// Reads `line` into `out` under `keys`. What follows the last field, after
/// a space, is left unread (Apache's `%D` or nginx's `$request_time` added at
/// the end of the format).
pub(in super::super) fn read<'a>(
    line: &'a str,
    keys: &Keys,
    out: &mut Fields<'a>,
) -> Result<(), Failure> {
    let mut s = Scanner::new(line);
    let client = s.token("the client address")?;
    s.byte(b' ', "the ident")?;
    let ident = s.token("the ident")?;
    s.byte(b' ', "the user")?;
    let user = user(&mut s)?;
    let time = s.until(b']', "the closing bracket of the time")?;
    s.byte(b' ', "the quoted request")?;
    let request = s.quoted("the quoted request")?;
    s.byte(b' ', "the status code")?;
    let code = s.token("the status code")?;
    let code = match code {
        "-" => Value::Null,
        code => {
            Value::Int(int(code).ok_or(Failure::no_match("the status code", s.at() - code.len()))?)
        }
    };
    s.byte(b' ', "the response size")?;
    let size = s.token("the response size")?;
    let size = match size {
        "-" => Value::Null,
        size => Value::Int(
            int(size).ok_or(Failure::no_match("the response size", s.at() - size.len()))?,
        ),
    };
    let tail = if keys.combined {
        s.byte(b' ', "the quoted referer")?;
        let referer = s.quoted("the quoted referer")?;
        s.byte(b' ', "the quoted user agent")?;
        Some((referer, s.quoted("the quoted user agent")?))
    } else {
        None
    };
    out.str(keys.client, client);
    if let Some(key) = keys.ident {
        out.push(key, dash_null(ident));
    }
    out.push(keys.user, user);
    out.str(keys.time, time);
    let [method, path, protocol] = split_request(request);
    out.push("method", method);
    out.push("path", path);
    out.push("protocol", protocol);
    out.push("code", code);
    out.push("size", size);
    if let Some((referer, agent)) = tail {
        out.push("referer", referer.dash_null());
        out.push("agent", agent.dash_null());
    }
    Ok(())
}

/// The user, up to the ` [` that opens the time (a user may hold spaces,
/// which neither server escapes), leaving the scanner after the `[`. `-` is
/// null; Apache's `""` for an empty user is the empty string.
fn user<'a>(s: &mut Scanner<'a>) -> Result<Value<'a>, Failure> {
    let rest = s.rest();
    let Some(open) = rest.find('[') else {
        return Err(Failure::no_match(
            "the opening bracket of the time",
            s.at() + rest.len(),
        ));
    };
    if open < 2 || rest.as_bytes()[open - 1] != b' ' {
        return Err(s.fail("the user"));
    }
    let user = &rest[..open - 1];
    s.skip(open + 1);
    Ok(match user {
        "-" => Value::Null,
        "\"\"" => Value::Str(Cow::Borrowed("")),
        user => Value::Str(unescape(user)),
    })
}

/// The request line `METHOD PATH PROTOCOL` as `[method, path, protocol]`.
/// A request of exactly three parts between two single spaces is split; `-`
/// or an empty request is three nulls; any other request (garbage, an
/// HTTP/0.9 `GET /`, a path with spaces) is all in `path`, with method and
/// protocol null.
fn split_request(request: Quoted<'_>) -> [Value<'_>; 3] {
    let raw = request.raw;
    if raw.is_empty() || raw == "-" {
        return [Value::Null, Value::Null, Value::Null];
    }
    let text = |s| {
        if request.escaped {
            Value::Str(unescape(s))
        } else {
            Value::Str(Cow::Borrowed(s))
        }
    };
    let split = raw.find(' ').zip(raw.rfind(' '));
    match split {
        Some((first, last))
            if first > 0
                && last > first + 1
                && last + 1 < raw.len()
                && !raw[first + 1..last].contains(' ') =>
        {
            [
                text(&raw[..first]),
                text(&raw[first + 1..last]),
                text(&raw[last + 1..]),
            ]
        }
        _ => [Value::Null, text(raw), Value::Null],
    }
}
