//! No import cycle between the files of `src/`: each file's imports (its `use`
//! trees and the `crate::`/`super::`/`self::` paths in its code) are resolved to
//! the file of the module they name, and the graph must have no circle. A parent
//! `mod.rs` and its own children may use each other (a parent owns its children;
//! a child reads its parent's types), so those edges are left out; test code
//! (`tests.rs`, `tests/`, and a file's `#[cfg(test)]` tail) too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::util::rust_files;

type Module = Vec<String>;

/// Every module file of `src/` but the binary's and test code, by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    for path in rust_files(src) {
        let rel = path.strip_prefix(src).unwrap();
        let stem = rel.file_stem().unwrap().to_string_lossy().into_owned();
        if stem == "tests" || stem == "main" || rel.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let mut module: Module = rel
            .parent()
            .unwrap()
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        if stem != "mod" && stem != "lib" {
            module.push(stem);
        }
        out.insert(module, path);
    }
    out
}

/// The file's code before its test module, without line comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim() == "#[cfg(test)]" {
            break;
        }
        out.push_str(line.split("//").next().unwrap_or_default());
        out.push('\n');
    }
    out
}

/// `a::{b, c::{d as e}}` → `a::b`, `a::c::d`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or_default();
        return vec![path.split_whitespace().collect()];
    };
    let head: String = tree[..open].split_whitespace().collect();
    let body = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut depth, mut part) = (Vec::new(), 0, String::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut part));
                continue;
            }
            _ => {}
        }
        part.push(c);
    }
    parts.push(part);
    parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(p).into_iter().map(|t| format!("{head}{t}")))
        .collect()
}

/// Every path the code names from `crate`, `super` or `self`.
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = String::new();
    let mut text = code;
    while let Some(at) = text.find("use ") {
        let word_start =
            at == 0 || !text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let end = text[at..].find(';').map(|e| at + e);
        // A use tree holds only path characters (not a "use " in a string).
        let is_tree = |t: &str| {
            t.chars()
                .all(|c| c.is_alphanumeric() || "_:{},* \n\t".contains(c))
        };
        match end {
            Some(end) if word_start && is_tree(&text[at + 4..end]) => {
                rest.push_str(&text[..at]);
                found.extend(expand(&text[at + 4..end]));
                text = &text[end + 1..];
            }
            _ => {
                rest.push_str(&text[..at + 4]);
                text = &text[at + 4..];
            }
        }
    }
    rest.push_str(text);
    // Paths in expressions and types: `crate::a::b`, `super::c`.
    let bytes = rest.as_bytes();
    for root in ["crate::", "super::", "self::"] {
        for (at, _) in rest.match_indices(root) {
            if at > 0
                && (bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':')
            {
                continue;
            }
            let len = rest[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len() - at);
            found.push(rest[at..at + len].trim_end_matches(':').to_owned());
        }
    }
    found
}

/// The module file a path from `from` names: its longest prefix that is a file.
fn resolve(from: &Module, path: &str, files: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut segs = path.split("::").peekable();
    let mut base: Module = match segs.peek().copied() {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("super") | Some("self") => from.clone(),
        _ => return None,
    };
    while let Some(&s) = segs.peek() {
        match s {
            "super" => base.pop(),
            "self" => None,
            _ => break,
        };
        segs.next();
    }
    let mut best = files.contains_key(&base).then(|| base.clone());
    for s in segs {
        base.push(s.to_owned());
        if !files.contains_key(&base) {
            break;
        }
        best = Some(base.clone());
    }
    best
}

/// The import graph: file → files it imports, parent/child edges left out.
fn graph(files: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges = BTreeMap::new();
    for (module, path) in files {
        let text = code(&std::fs::read_to_string(path).unwrap());
        let targets: BTreeSet<Module> = paths(&text)
            .iter()
            .filter_map(|p| resolve(module, p, files))
            .filter(|t| {
                !t.is_empty()
                    && t != module
                    && t.as_slice() != &module[..module.len().saturating_sub(1)]
                    && module.as_slice() != &t[..t.len().saturating_sub(1)]
            })
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

/// The graph's circles: strongly connected parts of more than one file.
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Search<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, (usize, usize)>,
        stack: Vec<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            for w in self.edges.get(v).into_iter().flatten() {
                match self.index.get(w).copied() {
                    None => {
                        self.visit(w);
                        let low = self.index[w].1.min(self.index[v].1);
                        self.index.get_mut(v).unwrap().1 = low;
                    }
                    Some((i, _)) if self.stack.contains(&w) => {
                        let low = i.min(self.index[v].1);
                        self.index.get_mut(v).unwrap().1 = low;
                    }
                    Some(_) => {}
                }
            }
            let (i, low) = self.index[v];
            if i == low {
                let at = self.stack.iter().rposition(|m| *m == v).unwrap();
                let part: Vec<Module> = self.stack.drain(at..).cloned().collect();
                if part.len() > 1 {
                    self.found.push(part);
                }
            }
        }
    }
    let mut search = Search {
        edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !search.index.contains_key(v) {
            search.visit(v);
        }
    }
    search.found
}

#[test]
fn no_import_cycle_between_the_files_of_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    assert!(files.len() > 20, "{} files found", files.len());
    let found = circles(&graph(&files));
    let named: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| files[m].strip_prefix(&src).unwrap().display().to_string())
                .collect::<Vec<_>>()
                .join(" ↔ ")
        })
        .collect();
    assert!(named.is_empty(), "import cycles:\n{}", named.join("\n"));
}

/// The checker itself finds a circle through grouped uses and paths, and not
/// one between a parent and its child.
#[test]
fn the_cycle_checker_sees_grouped_uses_and_paths_but_not_parent_and_child() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod c;\nuse c::X;\npub struct Y;\n").unwrap();
    std::fs::write(
        src.join("a/c.rs"),
        "use super::Y;\nuse crate::{b::{Z as W}};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("b.rs"),
        "// crate::a::c in a comment\nfn f() { let _ = crate::a::c::X; }\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    let files = modules(src);
    let found = circles(&graph(&files));
    let as_text = |m: &Module| m.join("::");
    assert_eq!(found.len(), 1, "{found:?}");
    let mut circle: Vec<String> = found[0].iter().map(as_text).collect();
    circle.sort();
    assert_eq!(circle, ["a::c", "b"]);
    std::fs::write(src.join("b.rs"), "fn f() {}\n").unwrap();
    assert!(circles(&graph(&modules(src))).is_empty());
}
