//! The house's sizes, held for every Rust file of the project (src, tests,
//! benches, examples): no file over 700 lines, no function over 80 (from its
//! `fn` line to its closing brace), every file of `src/` opening with a `//!`
//! that says what it owns, and no `use super::*` between sibling files (a
//! file's own `#[cfg(test)]` module may glob its parent).

use std::path::{Path, PathBuf};

use crate::util::{is_test_file, rust_files};

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 80;

fn project_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "examples"] {
        files.extend(rust_files(&root.join(dir)));
    }
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "fixtures"));
    files
}

/// `text` with comments, strings and character literals blanked (newlines
/// kept), so that braces in them are not counted.
fn blank(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |e| i + e);
            wipe(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            wipe(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"r#") || rest.starts_with(b"r\"") || rest.starts_with(b"br") {
            let start = i + usize::from(rest[0] == b'b');
            let hashes = b[start + 1..].iter().take_while(|&&c| c == b'#').count();
            let open = start + 1 + hashes;
            let is_word = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
            if open < b.len() && b[open] == b'"' && !is_word {
                let close = format!("\"{}", "#".repeat(hashes));
                let end = text[open + 1..]
                    .find(&close)
                    .map_or(b.len(), |e| open + 1 + e + close.len());
                wipe(&mut out, i, end);
                i = end;
            } else {
                i += 1;
            }
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            wipe(&mut out, i, j + 1);
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime.
            let len = if rest.get(1) == Some(&b'\\') {
                rest.iter().skip(2).position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                let ch = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + ch) == Some(&b'\'')).then_some(ch + 2)
            };
            match len {
                Some(len) => {
                    wipe(&mut out, i, i + len);
                    i += len;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every function with a body: (name, first line, lines from `fn` to its `}`).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = blank(text);
    let line_at = |at: usize| code[..at].iter().filter(|&&c| c == b'\n').count() + 1;
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(pos) = find_word(&code, b"fn", at) {
        at = pos + 2;
        let name: String = code[at..]
            .iter()
            .skip_while(|c| c.is_ascii_whitespace())
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .map(|&c| c as char)
            .collect();
        // The body opens at the first `{` outside the signature's brackets; a
        // `;` first means a declaration without a body.
        let (mut depth, mut j) = (0i32, at);
        let open = loop {
            match code.get(j) {
                None => break None,
                Some(b'(' | b'[' | b'<') => depth += 1,
                Some(b')' | b']') => depth -= 1,
                Some(b'>') if code[j - 1] != b'-' && code[j - 1] != b'=' => depth -= 1,
                Some(b';') if depth <= 0 => break None,
                Some(b'{') if depth <= 0 => break Some(j),
                _ => {}
            }
            j += 1;
        };
        let Some(open) = open else { continue };
        let mut depth = 0;
        let mut close = open;
        for (k, &c) in code.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = k;
                        break;
                    }
                }
                _ => {}
            }
        }
        let first = line_at(pos);
        found.push((name, first, line_at(close) - first + 1));
    }
    found
}

fn find_word(code: &[u8], word: &[u8], from: usize) -> Option<usize> {
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    (from..code.len().saturating_sub(word.len())).find(|&i| {
        code[i..].starts_with(word)
            && (i == 0 || !is_word(code[i - 1]))
            && !is_word(code[i + word.len()])
    })
}

fn shown(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn no_file_is_over_700_lines_and_no_function_over_80() {
    let mut over = Vec::new();
    let files = project_files();
    assert!(files.len() > 100, "{} files found", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            over.push(format!("{}: {lines} lines", shown(&file)));
        }
        for (name, line, len) in functions(&text) {
            if len > MAX_FN_LINES {
                over.push(format!("{}:{line}: fn {name} is {len} lines", shown(&file)));
            }
        }
    }
    assert!(over.is_empty(), "too long:\n{}", over.join("\n"));
}

#[test]
fn every_file_of_src_says_what_it_owns_and_siblings_import_by_name() {
    let mut broken = Vec::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in rust_files(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.starts_with("//!") {
            broken.push(format!("{}: no //! header", shown(&file)));
        }
        let is_tests = is_test_file(&file);
        let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
        if !is_tests && before_tests.contains("use super::*;") {
            broken.push(format!("{}: use super::* outside its tests", shown(&file)));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The measure itself: braces in strings, characters and comments are not
/// counted, a declaration without a body is no function, and the length runs
/// from `fn` to its closing brace.
#[test]
fn the_function_measure_counts_from_fn_to_its_closing_brace() {
    let text = "trait T {\n    fn declared(&self) -> Vec<u8>;\n}\nfn f() -> Result<(), String> {\n    let s = \"}}\";\n    let c = '}';\n    // }\n    let r = r#\"{\"#;\n    if true {\n        g::<u8>();\n    }\n    Ok(())\n}\nfn g<'a, T>() where T: Fn() -> u8 {}\n";
    let found = functions(text);
    assert_eq!(
        found,
        vec![("f".into(), 4, 10), ("g".into(), 14, 1)],
        "{found:?}"
    );
}
