//! Why a line did not parse, in words an operator can act on: for a pattern,
//! the part of it where the line stopped matching; for a preset, the part the
//! preset names. Run for the log (once per interval) and by `shardline parse`,
//! never per line.

use crate::config::parse::ParserKind;
use crate::record::excerpt;

use super::value::Failure;

/// A sentence saying where `line` failed its parser.
pub(crate) fn explain(kind: &ParserKind, line: &str, failure: &Failure) -> String {
    let what = match (kind, failure.reason) {
        (ParserKind::Pattern { regex, .. }, "no_match") => pattern_failure(regex.as_str(), line),
        _ if failure.at > 0 => format!("{} (at byte {})", failure.part, failure.at),
        _ => failure.part.to_string(),
    };
    format!("{}: {what}", reason_text(failure.reason))
}

/// The words for a failure's reason.
pub(crate) fn reason_text(reason: &str) -> &'static str {
    match reason {
        "columns" => "wrong number of columns",
        "incomplete" => "the line ended too early",
        _ => "the line does not match",
    }
}

/// Where a line stops matching `pattern`: the longest run of its top-level
/// parts that matches, and the part after it.
fn pattern_failure(pattern: &str, line: &str) -> String {
    let Some(parts) = top_level_parts(pattern) else {
        return "no alternative of the pattern matches".to_owned();
    };
    let mut matched: Option<(usize, usize)> = None;
    for k in (0..parts.len()).rev() {
        let prefix: String = parts[..=k].concat();
        let Ok(re) = regex::Regex::new(&prefix) else {
            continue;
        };
        if let Some(m) = re.find(line) {
            matched = Some((k + 1, m.end()));
            break;
        }
    }
    let (next, at) = matched.unwrap_or((0, 0));
    match parts.get(next) {
        Some(part) => format!(
            "matched up to byte {at} ({:?}), then the pattern's part {} of {}, {part:?}, did not match",
            excerpt(line.get(..at).unwrap_or(line)),
            next + 1,
            parts.len()
        ),
        None => "every part matched alone but not together".to_owned(),
    }
}

/// The pattern cut into its top-level parts (a group, a class, an escape or a
/// character, each with its quantifier); `None` when it has a top-level `|`.
pub(crate) fn top_level_parts(p: &str) -> Option<Vec<&str>> {
    let b = p.as_bytes();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        i = match b[i] {
            b'|' => return None,
            b'\\' => escape_end(p, i),
            b'[' => class_end(b, i),
            b'(' => group_end(b, i),
            _ => next_char(p, i),
        };
        i = quantifier_end(b, i);
        parts.push(&p[start..i.min(b.len())]);
    }
    Some(parts)
}

fn next_char(p: &str, i: usize) -> usize {
    i + p[i..].chars().next().map_or(1, char::len_utf8)
}

/// After `\x`, `\p{...}`, `\x{...}`.
fn escape_end(p: &str, i: usize) -> usize {
    let b = p.as_bytes();
    if i + 1 >= b.len() {
        return b.len();
    }
    if matches!(b[i + 1], b'p' | b'P' | b'x' | b'u') && b.get(i + 2) == Some(&b'{') {
        return b[i..]
            .iter()
            .position(|&c| c == b'}')
            .map_or(b.len(), |c| i + c + 1);
    }
    next_char(p, i + 1)
}

/// After the `]` closing the class at `i` (classes nest).
fn class_end(b: &[u8], i: usize) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 1,
            b'[' => depth += 1,
            b']' if j > i + 1 && !(j == i + 2 && b[i + 1] == b'^') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    b.len()
}

/// After the `)` closing the group at `i`.
fn group_end(b: &[u8], i: usize) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 1,
            b'[' => {
                j = class_end(b, j);
                continue;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    b.len()
}

/// After the quantifier (`*`, `+`, `?`, `{n,m}`, each maybe lazy) at `i`.
fn quantifier_end(b: &[u8], mut i: usize) -> usize {
    match b.get(i) {
        Some(b'*' | b'+' | b'?') => i += 1,
        Some(b'{') => {
            let close = b[i..].iter().position(|&c| c == b'}');
            let digits = close.is_some_and(|c| {
                b[i + 1..i + c]
                    .iter()
                    .all(|&d| d.is_ascii_digit() || d == b',')
            });
            match close {
                Some(c) if digits && c > 1 => i += c + 1,
                _ => return i,
            }
        }
        _ => return i,
    }
    if b.get(i) == Some(&b'?') {
        i += 1;
    }
    i
}
