//! The layout's forbidden imports: a stage that reaches past its neighbour is
//! caught here, not in review. Each rule names a part of `src/` and the modules
//! it may never name (`crate::<module>`); test code (`tests.rs`, `tests/`, and
//! a file's `#[cfg(test)]` tail) is left out, as tests may reach anywhere.

use std::path::Path;

use crate::util::{is_test_file, rust_files};

/// (part, its files or folders under src/, modules it never imports, why).
const NEVER: &[(&str, &[&str], &[&str], &str)] = &[
    (
        "sources",
        &["source/"],
        &["deliver", "spool"],
        "a source hands records to the producer; it reaches storage only through intake",
    ),
    (
        "route",
        &["shard_map.rs", "aggregate.rs", "aggregate/", "record.rs", "digest.rs"],
        &["spool", "source"],
        "aggregation is pure: it knows records, not storage, and the flow never runs backwards",
    ),
    (
        "spool",
        &["spool/"],
        &["deliver", "intake", "source"],
        "storage knows nothing of Kinesis and sits below intake",
    ),
    (
        "telemetry",
        &["metrics/"],
        &["deliver"],
        "metrics observe; they import no stage",
    ),
    (
        "config",
        &["config/"],
        &["source"],
        "config owns every section; sources only read config",
    ),
    (
        "deliver",
        &["deliver/"],
        &["spool"],
        "delivery reaches storage only through intake",
    ),
    (
        "intake",
        &["intake/"],
        &["deliver", "source"],
        "intake is below the sources that write through it and the delivery that reads from it",
    ),
    (
        "below the agent",
        &[
            "source/", "intake/", "spool/", "deliver/", "metrics/", "status/", "config/",
            "shard_map.rs", "aggregate.rs", "aggregate/", "record.rs", "digest.rs",
            "systemd.rs", "descriptors.rs",
        ],
        &["agent"],
        "the agent wires the parts together; no part reaches back up to it",
    ),
    (
        "observers",
        &["metrics/", "status/"],
        &["spool"],
        "only intake (and the producer's wiring) names the spool; gauges and status read intake's read-only Backlog",
    ),
];

/// The lines of `text` before its test module, without comments.
fn code(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// Where `text` names `crate::<module>` (as a path or in a `use crate::{…}`).
fn names(text: &str, module: &str) -> Vec<usize> {
    let direct = format!("crate::{module}");
    let mut found = Vec::new();
    let mut in_group = false;
    for (i, line) in code(text) {
        let named = |s: &str| {
            s.match_indices(&direct).any(|(at, _)| {
                let after = s[at + direct.len()..].chars().next();
                !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        };
        if named(line) {
            found.push(i + 1);
        }
        // `use crate::{a, b::c};` over one or more lines.
        if line.contains("use crate::{") {
            in_group = true;
        }
        if in_group {
            let grouped = line
                .split(['{', ',', ' '])
                .any(|w| w.trim() == module || w.trim().starts_with(&format!("{module}::")));
            if grouped && !found.contains(&(i + 1)) {
                found.push(i + 1);
            }
            if line.contains("};") {
                in_group = false;
            }
        }
    }
    found
}

#[test]
fn no_part_imports_what_the_layout_forbids() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (part, places, never, why) in NEVER {
        let mut files = Vec::new();
        for place in *places {
            let p = src.join(place);
            if place.ends_with('/') {
                files.extend(rust_files(&p).into_iter().filter(|f| !is_test_file(f)));
            } else {
                files.push(p);
            }
        }
        assert!(!files.is_empty(), "{part}: no files at {places:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for module in *never {
                for line in names(&text, module) {
                    broken.push(format!(
                        "{}:{line}: {part} names crate::{module} ({why})",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "forbidden imports:\n{}",
        broken.join("\n")
    );
}

/// The checker itself finds what it must, and not what it must not.
#[test]
fn the_checker_sees_paths_and_grouped_uses_but_not_tests_or_comments() {
    let text = "use crate::spool::Checkpoint;\nuse crate::{\n    metrics::Metrics,\n    spool,\n};\n// crate::spool in a comment\nlet x = crate::spoolish();\n#[cfg(test)]\nmod tests { use crate::spool::Spool; }\n";
    assert_eq!(names(text, "spool"), vec![1, 4]);
    assert_eq!(names(text, "metrics"), vec![3]);
    assert_eq!(names(text, "deliver"), Vec::<usize>::new());
}
