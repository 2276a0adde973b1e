//! The configuration's written copies held against the types serde reads, so
//! they cannot drift from the code:
//!
//! - `docs/configuration.md`, the reference: one `## ` heading per section
//!   (`` ## `[kinesis]` ``, `` ## `[[file]]` ``, and `## Top-level keys`), under
//!   it a table whose first column names the keys in backticks and whose third
//!   column is the default. The keys of each section must be exactly those its
//!   raw type accepts; a default written as a backticked TOML value must be what
//!   serde fills in when the key is left out.
//! - `config/shardline.toml`, the annotated example: every key of every section
//!   appears in its section, set or commented out.
//! - Every ```` ```toml ```` block of `README.md` and `docs/*.md` is a whole
//!   configuration that `config::parse` accepts; a ```` ```toml fragment ````
//!   block is a piece of one whose keys must still be known.
//! - Every relative link between those pages names a file that exists and, after
//!   a `#`, a heading of that file (as GitHub makes anchors of headings).
//!
//! The keys come from serde itself: [`keys_of`] hands a type's derived
//! `Deserialize` a deserializer that records the field names passed to
//! `deserialize_struct`. No section is flattened or read as an enum, so no key
//! needs a table of its own here.
//!
//! Test-only; nothing else calls it.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Visitor};
use serde::forward_to_deserialize_any;

use super::journald::RawJournald;
use super::parse::RawParse;
use super::raw::{
    RawConfig, RawDelivery, RawDestination, RawFile, RawIngest, RawKinesis, RawMetrics, RawSocket,
    RawSpool,
};

/// The field names serde accepts for `T`.
fn keys_of<T: DeserializeOwned>() -> Vec<&'static str> {
    let seen = Cell::new(None);
    let _ = T::deserialize(FieldRecorder(&seen));
    let fields = seen.get().unwrap_or_else(|| {
        panic!(
            "{} is not read as a struct: list its keys here by hand",
            std::any::type_name::<T>()
        )
    });
    fields.to_vec()
}

/// A deserializer that only remembers the fields a struct asks for, then fails.
struct FieldRecorder<'a>(&'a Cell<Option<&'static [&'static str]>>);

impl<'de> de::Deserializer<'de> for FieldRecorder<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(
            "only a struct's field names are recorded",
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.set(Some(fields));
        Err(de::Error::custom("field names recorded"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

/// `T` read from TOML text, as its `Debug` form (to compare two readings).
fn read<T: DeserializeOwned + Debug>(text: &str) -> Result<String, String> {
    toml::from_str::<T>(text)
        .map(|v| format!("{v:?}"))
        .map_err(|e| e.to_string())
}

/// One section of the file and the raw type that reads it.
struct Section {
    /// The name in the file (`kinesis`); empty for the top-level keys.
    name: &'static str,
    keys: fn() -> Vec<&'static str>,
    read: fn(&str) -> Result<String, String>,
    /// What the section needs before serde reads it at all (its keys without a
    /// default).
    base: &'static str,
}

fn section<T: DeserializeOwned + Debug>(name: &'static str, base: &'static str) -> Section {
    Section {
        name,
        keys: keys_of::<T>,
        read: read::<T>,
        base,
    }
}

/// Every section of the file, the top-level keys first.
fn sections() -> [Section; 11] {
    [
        section::<RawConfig>("", ""),
        section::<RawKinesis>("kinesis", ""),
        section::<RawDestination>("destination", "stream = \"s\"\n"),
        section::<RawDelivery>("delivery", ""),
        section::<RawSpool>("spool", ""),
        section::<RawSocket>("socket", ""),
        section::<RawFile>("file", ""),
        section::<RawJournald>("journald", ""),
        // A line block's sub-table (`[file.parse]`, `[socket.parse]`,
        // `[journald.parse]`), documented once.
        section::<RawParse>("parse", "preset = \"logfmt\"\n"),
        section::<RawMetrics>("metrics", ""),
        section::<RawIngest>("ingest", ""),
    ]
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_file(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The words between backticks in `text`.
fn backticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// A documented key: its name and its Default cell.
type Row = (String, String);

/// The reference's sections (by name, `""` for the top-level keys) and their rows.
fn parse_reference(doc: &str) -> Result<BTreeMap<String, Vec<Row>>, String> {
    let mut sections: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            current = section_of_heading(heading);
            if let Some(name) = &current {
                if sections.insert(name.clone(), Vec::new()).is_some() {
                    return Err(format!("section {name:?} has two headings"));
                }
            }
            continue;
        }
        let (Some(name), true) = (&current, line.starts_with("| `")) else {
            continue;
        };
        let cells: Vec<&str> = line.split('|').collect();
        let default = cells.get(3).map_or("", |c| c.trim()).to_owned();
        let rows = sections.get_mut(name).expect("inserted at its heading");
        for key in backticked(cells[1]) {
            rows.push((key.to_owned(), default.clone()));
        }
    }
    Ok(sections)
}

/// `[kinesis]` → `kinesis`, `[[file]]` → `file`, `Top-level keys` → ``; any
/// other heading is prose.
fn section_of_heading(heading: &str) -> Option<String> {
    if heading.trim() == "Top-level keys" {
        return Some(String::new());
    }
    let first = backticked(heading).next()?;
    let name = first.trim_start_matches('[').trim_end_matches(']');
    (first.starts_with('[') && !name.is_empty()).then(|| name.to_owned())
}

/// What differs between the reference and the types, one line each.
fn key_problems(doc: &str) -> Vec<String> {
    let documented = match parse_reference(doc) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for s in &sections() {
        let shown = if s.name.is_empty() {
            "top-level"
        } else {
            s.name
        };
        let mut accepted: BTreeSet<&str> = (s.keys)().into_iter().collect();
        if s.name.is_empty() {
            // The sections are top-level keys too; each has its heading.
            for other in sections().iter().filter(|o| !o.name.is_empty()) {
                accepted.remove(other.name);
            }
        }
        let Some(rows) = documented.get(s.name) else {
            problems.push(format!("section {shown} has no heading in the reference"));
            continue;
        };
        let written: BTreeSet<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        for missing in accepted.difference(&written) {
            problems.push(format!("{shown}.{missing} is accepted but not documented"));
        }
        for stale in written.difference(&accepted) {
            problems.push(format!("{shown}.{stale} is documented but not accepted"));
        }
    }
    for name in documented.keys() {
        if !sections().iter().any(|s| s.name == name) {
            problems.push(format!("[{name}] is documented but is not a section"));
        }
    }
    problems
}

/// Defaults the reference writes as a TOML value that serde does not fill in.
fn default_problems(doc: &str) -> Vec<String> {
    let documented = parse_reference(doc).expect("checked by key_problems");
    let mut problems = Vec::new();
    for s in &sections() {
        let Some(rows) = documented.get(s.name) else {
            continue;
        };
        let absent = (s.read)(s.base).unwrap_or_else(|e| panic!("[{}] {e}", s.name));
        for (key, default) in rows {
            let Some(value) = default.strip_prefix('`').and_then(|d| d.split('`').next()) else {
                continue;
            };
            let line = format!("{key} = {value}\n");
            if toml::from_str::<toml::Table>(&line).is_err() {
                // Prose in backticks (`kinesis.stream`), not a value.
                continue;
            }
            match (s.read)(&format!("{}{line}", s.base)) {
                Ok(set) if set == absent => {}
                Ok(_) => problems.push(format!(
                    "[{}] {key}: the reference's default `{value}` is not what serde fills in",
                    s.name
                )),
                Err(e) => problems.push(format!(
                    "[{}] {key}: the reference's default `{value}` does not read: {e}",
                    s.name
                )),
            }
        }
    }
    problems
}

/// The fenced ```` ```toml ```` blocks of a Markdown text: (line, info, body).
fn toml_blocks(text: &str) -> Vec<(usize, String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((i + 1, info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks.retain(|(_, info, _)| info.split_whitespace().next() == Some("toml"));
    blocks
}

/// Problems of one file's TOML blocks, and how many blocks it has.
fn block_problems(rel: &str, text: &str) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let blocks = toml_blocks(text);
    for (line, info, body) in &blocks {
        let result = match info.as_str() {
            "toml" => super::parse(body, Path::new(rel))
                .map(drop)
                .map_err(|e| e.to_string()),
            "toml fragment" => toml::from_str::<RawConfig>(body)
                .map(drop)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "unknown block kind {other:?} (`toml` or `toml fragment`)"
            )),
        };
        if let Err(e) = result {
            problems.push(format!("{rel}:{line}: {e}"));
        }
    }
    (problems, blocks.len())
}

/// The keys `config/shardline.toml` shows per section, set or commented out.
fn example_keys(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.strip_prefix("# ").unwrap_or(line).trim();
        let header = line.trim_start_matches('[').trim_end_matches(']');
        if line.starts_with('[') && line.ends_with(']') {
            // `[file.parse]` and its kin are the one `parse` section.
            current = match header.split_once('.') {
                Some((_, "parse")) => "parse".to_owned(),
                _ => header.to_owned(),
            };
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !key.is_empty()
        {
            keys.entry(current.clone())
                .or_default()
                .insert(key.to_owned());
        }
    }
    keys
}

/// The Markdown pages: the README and `docs/*.md`, relative to the root.
fn markdown_pages() -> Vec<String> {
    let mut files = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    // The client libraries' pages (their config blocks and links are the same kind).
    for entry in std::fs::read_dir(root().join("clients")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if root()
            .join("clients")
            .join(&name)
            .join("README.md")
            .exists()
        {
            files.push(format!("clients/{name}/README.md"));
        }
    }
    files.sort();
    files
}

/// A Markdown text's lines outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |l| {
        if l.starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The anchors GitHub gives a page's headings: lower case, punctuation dropped,
/// spaces made `-`.
fn anchors(text: &str) -> BTreeSet<String> {
    let heading = |l: &str| {
        Some(
            l.strip_prefix('#')?
                .trim_start_matches('#')
                .strip_prefix(' ')?
                .to_owned(),
        )
    };
    prose_lines(text)
        .filter_map(heading)
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// The relative link targets of a page (`[text](target)`), web links left out.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    for line in prose_lines(text) {
        for part in line.split("](").skip(1) {
            let target = part.split(')').next().unwrap_or_default();
            if !target.contains("://") && !target.is_empty() {
                links.push(target.to_owned());
            }
        }
    }
    links
}

#[test]
fn field_recorder_reads_a_structs_field_names() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Two {
        first: u8,
        #[serde(rename = "second_ms")]
        second: u8,
    }
    assert_eq!(keys_of::<Two>(), ["first", "second_ms"]);
}

#[test]
fn the_reference_documents_every_key_and_no_other() {
    let problems = key_problems(&read_file("docs/configuration.md"));
    assert!(
        problems.is_empty(),
        "docs/configuration.md and the config types differ:\n{}",
        problems.join("\n")
    );
}

/// The check above fails when a row goes or a stale one stays.
#[test]
fn a_missing_or_stale_key_is_named() {
    let doc = read_file("docs/configuration.md");
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `max_buffered_time_ms` | integer, milliseconds | `100`"))
        .expect("the reference documents delivery.max_buffered_time_ms");
    let without = doc.replace(&format!("{row}\n"), "");
    assert_eq!(
        key_problems(&without),
        ["delivery.max_buffered_time_ms is accepted but not documented"]
    );
    let stale = doc.replace(
        row,
        &row.replacen("`max_buffered_time_ms`", "`max_buffered_time_secs`", 1),
    );
    assert_eq!(
        key_problems(&stale),
        [
            "delivery.max_buffered_time_ms is accepted but not documented",
            "delivery.max_buffered_time_secs is documented but not accepted"
        ]
    );
}

#[test]
fn the_reference_defaults_are_what_serde_fills_in() {
    let doc = read_file("docs/configuration.md");
    let problems = default_problems(&doc);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let wrong = doc.replace("| `30000` |", "| `3000` |");
    assert_ne!(
        wrong, doc,
        "the reference gives request_timeout_ms's default"
    );
    assert_eq!(
        default_problems(&wrong),
        ["[kinesis] request_timeout_ms: the reference's default `3000` is not what serde fills in"]
    );
}

#[test]
fn every_toml_block_in_the_docs_parses() {
    let files = markdown_pages();
    let mut problems = Vec::new();
    let mut counts = BTreeMap::new();
    for rel in &files {
        let (p, n) = block_problems(rel, &read_file(rel));
        problems.extend(p);
        counts.insert(rel.as_str(), n);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(counts["README.md"] > 0, "{counts:?}");
    assert!(counts["docs/configuration.md"] > 0, "{counts:?}");
    let (broken, _) = block_problems("t.md", "```toml\n[kinesis]\nstraem = \"s\"\n```\n");
    assert_eq!(broken.len(), 1, "a block with an unknown key fails");
}

#[test]
fn the_example_config_shows_every_key() {
    let shown = example_keys(&read_file("config/shardline.toml"));
    let mut problems = Vec::new();
    for s in &sections() {
        let keys = shown.get(s.name).cloned().unwrap_or_default();
        for key in (s.keys)() {
            let is_section = sections().iter().any(|o| o.name == key);
            if !is_section && !keys.contains(key) {
                problems.push(format!("[{}] {key}", s.name));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "config/shardline.toml does not show:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_link_between_the_pages_resolves() {
    let mut problems = Vec::new();
    for rel in markdown_pages() {
        let dir = Path::new(&rel).parent().unwrap_or(Path::new(""));
        for link in relative_links(&read_file(&rel)) {
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                PathBuf::from(&rel)
            } else {
                dir.join(path)
            };
            let Ok(text) = std::fs::read_to_string(root().join(&target)) else {
                if !root().join(&target).exists() {
                    problems.push(format!("{rel}: {link}: no such file"));
                }
                continue;
            };
            if !anchor.is_empty() && !anchors(&text).contains(anchor) {
                problems.push(format!("{rel}: {link}: no such heading"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let page = "# A page\n## `[[file]]` and more\n[x](#file-and-more) [y](#gone)\n";
    assert!(anchors(page).contains("file-and-more"));
    assert_eq!(relative_links(page), ["#file-and-more", "#gone"]);
}
