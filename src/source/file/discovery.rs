//! Discovery: which paths the globs match ([`walk`]) and which of them are
//! tailed ([`admit_path`]: symbolic links, pseudo filesystems).
//!
//! State: none. Callers: tailer.rs (rescans and the paths it is told of),
//! open.rs, and tests.

use std::path::{Path, PathBuf};

use crate::config::{is_pseudo_fs, FileConfig};

/// Why a path the patterns match is not tailed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Skip {
    #[error("it is a symbolic link and follow_symlinks is off")]
    Symlink,
    #[error("it is a symbolic link to {target:?}, which the block's patterns do not match")]
    TargetNotIncluded { target: PathBuf },
    #[error("it is or leads to {target:?}, under /proc, /sys or /dev, which are never tailed")]
    PseudoFs { target: PathBuf },
    #[error("it is a symbolic link that cannot be resolved: {error}")]
    Unresolved { error: String },
}

/// The file to open for `path` under `block`'s symlink policy: `path` itself, or
/// the canonical target of a link the block follows.
pub(super) fn admit_path(path: &Path, block: &FileConfig) -> Result<PathBuf, Skip> {
    if is_pseudo_fs(path) {
        return Err(Skip::PseudoFs {
            target: path.to_owned(),
        });
    }
    let is_link = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if !is_link {
        return Ok(path.to_owned());
    }
    if !block.follow_symlinks {
        return Err(Skip::Symlink);
    }
    let target = std::fs::canonicalize(path).map_err(|e| Skip::Unresolved {
        error: e.to_string(),
    })?;
    if is_pseudo_fs(&target) {
        return Err(Skip::PseudoFs { target });
    }
    if !block.matches(&target) {
        return Err(Skip::TargetNotIncluded { target });
    }
    Ok(target)
}

/// Calls `f` with every file under `dir`, down to `depth` components (`None`: all).
/// Symbolic links to directories are not followed (no cycles).
pub(super) fn walk(dir: &Path, depth: Option<usize>, f: &mut impl FnMut(&Path)) {
    if depth == Some(0) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, depth.map(|d| d - 1), f);
        } else {
            f(&path);
        }
    }
}
