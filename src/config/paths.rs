//! What `[[file]]` patterns mean for paths, for validation and for the file
//! source alike: where a pattern starts and how deep it reaches, and the
//! kernel's pseudo-filesystems that are never tailed.

use std::path::{Path, PathBuf};

/// The literal leading directory of a glob pattern, and how many path components
/// below it the pattern reaches (`None`: any number, `**`).
pub(crate) fn glob_base(pattern: &str) -> (PathBuf, Option<usize>) {
    let parts: Vec<&str> = pattern.split('/').collect();
    let first_glob = parts
        .iter()
        .position(|p| p.contains(['*', '?', '[', '{', '\\']))
        .unwrap_or(parts.len() - 1);
    let base = parts[..first_glob].join("/");
    let base = if base.is_empty() {
        "/".to_owned()
    } else {
        base
    };
    let rest = &parts[first_glob..];
    let depth = if rest.iter().any(|p| p.contains("**")) {
        None
    } else {
        Some(rest.len())
    };
    (PathBuf::from(base), depth)
}

/// Whether `path` is in one of the kernel's pseudo-filesystems (`/proc`, `/sys`,
/// `/dev`), which are never tailed: reading them can expose the agent's own
/// secrets (`/proc/self/environ`) or block forever.
pub(crate) fn is_pseudo_fs(path: &Path) -> bool {
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|root| path.starts_with(root))
}
