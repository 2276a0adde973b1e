//! Discovery: which paths the globs match, which of them are tailed (symbolic
//! links, pseudo filesystems), and opening a file found at one.

use super::*;

impl<S: Sink> Tail<S> {
    /// Opens `path` for `block` unless it is open already. Returns its identity.
    pub(super) fn discover(
        &mut self,
        path: &Path,
        block: usize,
    ) -> Result<Option<FileId>, FileError> {
        let Some(target) = self.admit(path, block) else {
            return Ok(None);
        };
        let meta = match std::fs::metadata(&target) {
            Ok(m) if m.is_file() => m,
            _ => return Ok(None),
        };
        let id = FileId::of(&meta);
        if let Some(&seq) = self.by_id.get(&id) {
            let t = self.files.get_mut(&seq).expect("by_id names open files");
            if t.path != path {
                let old_still_there = std::fs::metadata(&t.path)
                    .map(|m| FileId::of(&m) == id)
                    .unwrap_or(false);
                if !old_still_there {
                    // Renamed to another included name: same file, same position.
                    if self.by_path.get(&t.path) == Some(&seq) {
                        self.by_path.remove(&t.path);
                    }
                    tracing::info!(from = %t.path.display(), to = %path.display(), "Tailed file was renamed; following it");
                    t.set_path(path.to_owned());
                    t.tailed_path = path.to_owned();
                    t.draining = None;
                    t.dirty = true;
                    self.by_path.insert(path.to_owned(), seq);
                }
            }
            return Ok(Some(id));
        }
        let config = self.blocks[block].clone();
        let stored = if self.starting {
            self.stored.remove(&(config.stream.clone(), id))
        } else {
            None
        };
        if let Some(limit) = config.ignore_older {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if age > limit {
                if !self.ignored.contains_key(&id) {
                    // Where it would start if it is modified later.
                    let pos = match (&stored, self.starting, config.read_from) {
                        (Some(p), _, _) if p.offset <= meta.len() => p.offset,
                        (None, true, ReadFrom::End) => meta.len(),
                        _ => 0,
                    };
                    if stored.is_some() {
                        // Keep its checkpoint: the file is there, only idle.
                        self.stored.remove(&(config.stream.clone(), id));
                    }
                    self.ignored.insert(id, pos);
                }
                return Ok(Some(id));
            }
        }
        // Not through a link that appeared since `admit`, and never blocking on a
        // FIFO that replaced the file.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&target)
        {
            Ok(f) => f,
            Err(e) => {
                if self.skipped.insert(path.to_owned()) {
                    tracing::warn!(path = %path.display(), error = %e, "Cannot open a file to tail; trying again at each rescan, logged once");
                }
                return Ok(None);
            }
        };
        // The handle's identity wins over the path's (it may have been replaced in
        // between).
        let meta = file.metadata().map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Ok(None);
        }
        self.skipped.remove(path);
        let id = FileId::of(&meta);
        if self.by_id.contains_key(&id) {
            return Ok(Some(id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut t = Tailed::new(
            config.clone(),
            id,
            id,
            path.to_owned(),
            path.to_owned(),
            file,
            Vec::new(),
            0,
            None,
        );
        let ignored_at = self.ignored.remove(&id);
        let (pos, resumed) = match stored {
            Some(p) => match self.verify(&t, &p, meta.len()) {
                Ok(true) => (p.offset, true),
                Ok(false) => {
                    self.metrics.file_event(FileEvent::Truncated);
                    tracing::warn!(
                        path = %path.display(),
                        position = p.offset,
                        size = meta.len(),
                        "File no longer matches its checkpoint (truncated while the agent was stopped, or a new file on a reused inode); reading it from the start"
                    );
                    let _ = self.read_copy_of(&mut t, &p)?;
                    (0, false)
                }
                Err(source) => {
                    return Err(FileError::Read {
                        path: path.to_owned(),
                        source,
                    })
                }
            },
            None => match ignored_at {
                Some(pos) if pos <= meta.len() => (pos, false),
                _ if self.starting && config.read_from == ReadFrom::End => (
                    end_position(&t.file, meta.len()).unwrap_or(meta.len()),
                    false,
                ),
                _ => (0, false),
            },
        };
        t.prefix = read_head(&t.file, (pos as usize).min(FINGERPRINT_BYTES)).map_err(|source| {
            FileError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
        t.reset_to(pos).map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        t.committed = pos;
        if !resumed || t.committed != pos {
            let cp = t.checkpoint(pos);
            self.sink
                .spool(&config.stream, Vec::new(), &cp)
                .map_err(|e| FileError::spool(path, e))?;
        }
        self.metrics.file_event(FileEvent::Opened);
        tracing::info!(
            path = %path.display(),
            position = pos,
            resumed,
            stream = %config.stream,
            "Tailing file"
        );
        self.by_id.insert(id, seq);
        self.by_path.insert(path.to_owned(), seq);
        self.files.insert(seq, t);
        Ok(Some(id))
    }
}

/// The literal leading directory of a glob pattern, and how many path components
/// below it the pattern reaches (`None`: any number, `**`).
pub fn glob_base(pattern: &str) -> (PathBuf, Option<usize>) {
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

/// Why a path the patterns match is not tailed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
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
pub fn admit_path(path: &Path, block: &FileConfig) -> Result<PathBuf, Skip> {
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

/// Whether `path` is in one of the kernel's pseudo-filesystems (`/proc`, `/sys`,
/// `/dev`), which are never tailed: reading them can expose the agent's own
/// secrets (`/proc/self/environ`) or block forever.
pub fn is_pseudo_fs(path: &Path) -> bool {
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|root| path.starts_with(root))
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
