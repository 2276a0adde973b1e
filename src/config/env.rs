//! `${VAR}` and `${VAR:-default}` in the config's string values, from the
//! environment, before the config is read: one file serves every host of a
//! fleet, the stream or region set per environment.
//!
//! - `${NAME}`: the variable's value; unset is an error naming it (never a
//!   value: a variable may hold a secret).
//! - `${NAME:-default}`: the default when the variable is unset or empty.
//! - `$$`: one `$`. Any other `$` is kept as written (regular expressions end
//!   lines with `$`).
//!
//! Only string values are expanded (keys, numbers and booleans are not), in
//! place in the text, so that what the config reader says about a line still
//! names the line as written.

use toml_edit::{DocumentMut, Item, Value};

/// `text` with every string value expanded by `lookup`, or one problem per
/// variable that is unset and has no default, and per malformed reference.
pub(super) fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    // A file the reader cannot parse is left for it to say where.
    let Ok(mut doc) = text.parse::<DocumentMut>() else {
        return Ok(text.to_owned());
    };
    let mut problems = Vec::new();
    let mut changed = false;
    for (key, item) in doc.as_table_mut().iter_mut() {
        walk_item(item, key.get(), &lookup, &mut problems, &mut changed);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(if changed {
        doc.to_string()
    } else {
        text.to_owned()
    })
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn walk_item(
    item: &mut Item,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<String>,
    changed: &mut bool,
) {
    match item {
        Item::Value(v) => walk_value(v, path, lookup, problems, changed),
        Item::Table(t) => {
            for (k, i) in t.iter_mut() {
                walk_item(i, &format!("{path}.{}", k.get()), lookup, problems, changed);
            }
        }
        Item::ArrayOfTables(a) => {
            for (n, t) in a.iter_mut().enumerate() {
                for (k, i) in t.iter_mut() {
                    let p = format!("{path}[{n}].{}", k.get());
                    walk_item(i, &p, lookup, problems, changed);
                }
            }
        }
        Item::None => {}
    }
}

fn walk_value(
    value: &mut Value,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<String>,
    changed: &mut bool,
) {
    match value {
        Value::String(s) => {
            let written = s.value();
            if !written.contains('$') {
                return;
            }
            match substitute(written, lookup) {
                Ok(new) if new != *written => {
                    let decor = s.decor().clone();
                    let mut formatted = toml_edit::Formatted::new(new);
                    *formatted.decor_mut() = decor;
                    *s = formatted;
                    *changed = true;
                }
                Ok(_) => {}
                Err(e) => problems.extend(e.into_iter().map(|e| format!("{path}: {e}"))),
            }
        }
        Value::Array(a) => {
            for (n, v) in a.iter_mut().enumerate() {
                walk_value(v, &format!("{path}[{n}]"), lookup, problems, changed);
            }
        }
        Value::InlineTable(t) => {
            for (k, v) in t.iter_mut() {
                walk_value(v, &format!("{path}.{}", k.get()), lookup, problems, changed);
            }
        }
        _ => {}
    }
}

/// One string with its references replaced.
fn substitute(s: &str, lookup: Lookup<'_>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut problems = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(inner) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = inner.find('}') else {
            problems.push("`${` without its closing `}` (write `$$` for a lone `$`)".to_owned());
            return Err(problems);
        };
        let reference = &inner[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if !valid_name(name) {
            problems.push(format!(
                "`${{{name}}}` is not a variable name (letters, digits and `_`, not starting with a digit)"
            ));
        } else {
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => problems.push(format!(
                    "environment variable {name} is not set (write `${{{name}:-default}}` to give a default)"
                )),
            }
        }
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
