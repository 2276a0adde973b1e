//! The TOML the importer writes, built as lines: keys with their values already
//! quoted, each with an optional trailing note, and comments between them. It is
//! text, not a `toml::Table`, because the comments are half of what the import
//! says: why a key is what it is and what had no counterpart.

use std::fmt::Write;

/// Width comments are wrapped to.
const WIDTH: usize = 80;

/// One line of a section.
enum Line {
    Comment(String),
    Key {
        key: String,
        value: String,
        note: Option<String>,
    },
}

/// A `[section]` or `[[array]]` block (or, with an empty header, the top-level
/// keys), in the order written.
pub(super) struct Section {
    header: String,
    lines: Vec<Line>,
}

impl Section {
    /// A section written under `header` (`[kinesis]`, `[[file]]`).
    pub(super) fn new(header: &str) -> Section {
        Section {
            header: header.to_owned(),
            lines: Vec::new(),
        }
    }

    /// A comment paragraph, wrapped.
    pub(super) fn comment(&mut self, text: &str) {
        self.lines.push(Line::Comment(text.to_owned()));
    }

    /// `key = value`, `value` already TOML.
    pub(super) fn key(&mut self, key: &str, value: String) {
        self.lines.push(Line::Key {
            key: key.to_owned(),
            value,
            note: None,
        });
    }

    /// `key = value  # note`.
    pub(super) fn key_noted(&mut self, key: &str, value: String, note: &str) {
        self.lines.push(Line::Key {
            key: key.to_owned(),
            value,
            note: Some(note.to_owned()),
        });
    }

    /// Whether nothing was written in it.
    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The section as text, ending in a newline.
    pub(super) fn render(&self, out: &mut String) {
        if !self.header.is_empty() {
            out.push_str(&self.header);
            out.push('\n');
        }
        let mut after_comment = false;
        for line in &self.lines {
            match line {
                Line::Comment(text) => {
                    if after_comment {
                        // Paragraphs apart.
                        out.push_str("#\n");
                    }
                    after_comment = true;
                    for l in wrap(&printable(text, '\n'), WIDTH - 2) {
                        out.push_str(if l.is_empty() { "#" } else { "# " });
                        out.push_str(&l);
                        out.push('\n');
                    }
                }
                Line::Key { key, value, note } => {
                    if after_comment && self.header.is_empty() {
                        // The file's opening comments stand apart.
                        out.push('\n');
                    }
                    after_comment = false;
                    let _ = write!(out, "{} = {value}", bare_or_quoted(key));
                    if let Some(note) = note {
                        let _ = write!(out, "  # {}", printable(note, '\t'));
                    }
                    out.push('\n');
                }
            }
        }
    }
}

/// `text` with control characters escaped (`\r` as `\\r`), but `keep`: a
/// comment holds none (TOML refuses them), and a line break in a value quoted
/// in a comment must not end the comment.
fn printable(text: &str, keep: char) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != keep {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` cut into lines of at most `width` characters at spaces (a longer word
/// stays whole); a `\n` in it starts a new line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            } else if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

/// A TOML string: a literal string (`'...'`, no escapes: regular expressions
/// stay readable) when the text has a backslash or a quote and no `'` nor
/// control character, else a basic string with escapes.
pub(super) fn string(s: &str) -> String {
    let plain = !s.contains('\'') && !s.chars().any(char::is_control);
    if plain && (s.contains('\\') || s.contains('"')) {
        return format!("'{s}'");
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub(super) fn strings<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| string(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A TOML inline table of strings, in the order given.
pub(super) fn inline_table(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return "{}".to_owned();
    }
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {}", bare_or_quoted(k), string(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// A key as TOML writes it: bare when it can be, else quoted.
fn bare_or_quoted(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        string(key)
    }
}

/// The whole file: sections in order, a blank line between them.
pub(super) fn render(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections
        .iter()
        .filter(|s| !s.is_empty() || !s.header.is_empty())
    {
        if !out.is_empty() {
            out.push('\n');
        }
        s.render(&mut out);
    }
    out
}
