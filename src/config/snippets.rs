//! Config snippets: every `*.toml` file of the directory `conf.d` beside the
//! config file, read in name order and merged into it, so that a package or a
//! configuration tool drops one file per application.
//!
//! Tables merge key by key; `[[file]]`, `[[socket]]`, `[[journald]]` and
//! `[[destination]]` blocks add up, in file order. A key set in two files is
//! an error that names both (no file silently wins). Each file's `${VAR}`
//! references are expanded on its own, and a file that is not valid TOML is
//! named with its line.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// The snippet directory of the config at `config`: `include_dir` (relative to
/// the config file's directory), or `conf.d` beside it.
pub(super) fn dir(config: &Path, include_dir: Option<&Path>) -> PathBuf {
    config
        .parent()
        .unwrap_or(Path::new("."))
        .join(include_dir.unwrap_or(Path::new("conf.d")))
}

/// The snippet files of `dir`: its `*.toml` files in name order (none when
/// the directory does not exist).
pub(super) fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(format!(
                "cannot read the snippet directory {}: {e}",
                dir.display()
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Where each key was set: its dotted path and the file.
type Origins = Vec<(String, PathBuf)>;

/// Merges `next` (read from `file`) into `into`; a key already set elsewhere is
/// a problem naming both files.
pub(super) fn merge(
    into: &mut Table,
    next: Table,
    file: &Path,
    origins: &mut Origins,
    problems: &mut Vec<String>,
) {
    merge_at(into, next, "", file, origins, problems);
}

fn merge_at(
    into: &mut Table,
    next: Table,
    prefix: &str,
    file: &Path,
    origins: &mut Origins,
    problems: &mut Vec<String>,
) {
    for (key, value) in next {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (None, value) => {
                note(&path, &value, file, origins);
                into.insert(key, value);
            }
            (Some(Value::Table(have)), Value::Table(add)) => {
                merge_at(have, add, &path, file, origins, problems)
            }
            (Some(Value::Array(have)), Value::Array(add)) if is_blocks(have) && is_blocks(&add) => {
                have.extend(add)
            }
            (Some(_), _) => {
                let first = origins
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, f)| f.display().to_string())
                    .unwrap_or_else(|| "an earlier file".into());
                problems.push(format!(
                    "{path} is set in {first} and again in {}: set it in one file",
                    file.display()
                ));
            }
        }
    }
}

/// Notes where `value` (and every key under it) was set.
fn note(path: &str, value: &Value, file: &Path, origins: &mut Origins) {
    origins.push((path.to_owned(), file.to_owned()));
    if let Value::Table(t) = value {
        for (k, v) in t {
            note(&format!("{path}.{k}"), v, file, origins);
        }
    }
}

/// An array of tables: `[[file]]` blocks and their kin add up across files.
fn is_blocks(a: &[Value]) -> bool {
    !a.is_empty() && a.iter().all(Value::is_table)
}

#[cfg(test)]
mod tests;
