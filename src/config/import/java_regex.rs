//! The agent's patterns are `java.util.regex` patterns; shardline's are the
//! `regex` crate's, which has no backtracking and so none of the constructs
//! that need it. Most patterns read the same in both; this names the Java
//! constructs `regex` lacks, so that the import warns instead of writing a
//! pattern that `validate` refuses or that means something else.

/// Why `pattern` cannot be used as it is by shardline, or `None`.
pub(super) fn unsupported(pattern: &str) -> Option<String> {
    let found = java_only(pattern);
    if !found.is_empty() {
        return Some(format!(
            "it uses {}, which Rust's regex syntax lacks",
            found.join(", ")
        ));
    }
    regex::Regex::new(pattern).err().map(|e| {
        let why = e.to_string();
        let last = why.lines().last().unwrap_or_default().trim().to_owned();
        format!("Rust's regex syntax refuses it: {last}")
    })
}

/// The Java-only constructs in `pattern`, each named once, in order of first use.
fn java_only(pattern: &str) -> Vec<&'static str> {
    let b = pattern.as_bytes();
    let mut found: Vec<&'static str> = Vec::new();
    let mut add = |what: &'static str| {
        if !found.contains(&what) {
            found.push(what);
        }
    };
    let mut class = 0usize;
    let mut i = 0;
    while i < b.len() {
        // `i` may be inside a character after an escape: no text there.
        let rest = pattern.get(i..).unwrap_or_default();
        match b[i] {
            b'\\' if i + 1 < b.len() => {
                if let Some(what) = escape(b[i + 1], class > 0) {
                    add(what);
                }
                if b[i + 1] == b'Q' {
                    // \Q...\E quotes everything up to \E.
                    i = rest.find("\\E").map_or(b.len(), |e| i + e + 2);
                    continue;
                }
                i += 2;
                continue;
            }
            b'[' => class += 1,
            b']' if class > 0 => class -= 1,
            _ if class > 0 => {}
            b'(' => {
                for (prefix, what) in GROUPS {
                    if rest.starts_with(prefix) {
                        add(what);
                    }
                }
            }
            b'*' | b'+' | b'?' | b'}' if b.get(i + 1) == Some(&b'+') && !after_group(b, i) => {
                add("possessive quantifiers (*+, ++, ?+)");
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Group openings Java has and `regex` lacks.
const GROUPS: [(&str, &str); 5] = [
    ("(?=", "lookahead (?=...)"),
    ("(?!", "negative lookahead (?!...)"),
    ("(?<=", "lookbehind (?<=...)"),
    ("(?<!", "negative lookbehind (?<!...)"),
    ("(?>", "atomic groups (?>...)"),
];

/// `(?` then `+`, as in `(?+...)`, is not a quantifier: left to the compiler.
fn after_group(b: &[u8], i: usize) -> bool {
    b[i] == b'?' && i > 0 && b[i - 1] == b'('
}

/// What a Java escape `\c` is that `regex` lacks.
fn escape(c: u8, in_class: bool) -> Option<&'static str> {
    match c {
        b'1'..=b'9' if !in_class => Some("backreferences (\\1)"),
        b'k' => Some("named backreferences (\\k<name>)"),
        b'G' => Some("\\G (end of the previous match)"),
        b'Z' => Some("\\Z (end of input before a final line break)"),
        b'Q' => Some("quoting (\\Q...\\E)"),
        b'h' | b'H' => Some("\\h (horizontal whitespace)"),
        b'R' => Some("\\R (any line break)"),
        b'X' => Some("\\X (grapheme clusters)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_patterns_pass() {
        for p in [
            r"^\d{4}-\d{2}-\d{2}",
            r"^(\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] (?<req>.+?)$",
            r"[a-z&&[^aeiou]]+",
            r"^\s*(?i)error",
        ] {
            assert_eq!(unsupported(p), None, "{p}");
        }
    }

    #[test]
    fn java_constructs_are_named() {
        let cases = [
            (r"^(?=abc)", "lookahead"),
            (r"^(?!abc)", "negative lookahead"),
            (r"(?<=a)b", "lookbehind"),
            (r"(?<!a)b", "negative lookbehind"),
            (r"(a)\1", "backreferences"),
            (r"(?<x>a)\k<x>", "named backreferences"),
            (r"(?>a+)b", "atomic groups"),
            (r"a*+b", "possessive"),
            (r"a\Z", "\\Z"),
            (r"\Q.*\E", "quoting"),
        ];
        for (p, needle) in cases {
            let why = unsupported(p).unwrap_or_default();
            assert!(why.contains(needle), "{p}: {why:?}");
        }
    }

    #[test]
    fn a_digit_in_a_class_is_not_a_backreference_and_quoted_text_is_skipped() {
        assert_eq!(java_only(r"[\1-\9]"), Vec::<&str>::new());
        assert_eq!(java_only(r"\Q(?=\E"), vec!["quoting (\\Q...\\E)"]);
        assert_eq!(java_only(r"\é(?=x)"), vec!["lookahead (?=...)"]);
    }

    #[test]
    fn what_rust_refuses_otherwise_is_reported() {
        let why = unsupported("(unclosed").unwrap_or_default();
        assert!(why.starts_with("Rust's regex syntax refuses it"), "{why}");
    }
}
