//! Checkpoints: a file's read position, stored in the spool with the records read
//! up to it, and resuming from them at start-up (a file rotated or truncated
//! while the agent was stopped included).

use super::*;

/// A decoded checkpoint value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Consumed offset: everything before it is in the spool (or was skipped).
    pub offset: u64,
    pub fingerprint_len: u16,
    pub fingerprint: u64,
    /// Where the file was last seen.
    pub path: PathBuf,
}

impl Position {
    pub fn encode(&self) -> Vec<u8> {
        let path = self.path.as_os_str().as_bytes();
        let mut v = Vec::with_capacity(19 + path.len());
        v.push(CHECKPOINT_VERSION);
        v.extend_from_slice(&self.offset.to_le_bytes());
        v.extend_from_slice(&self.fingerprint_len.to_le_bytes());
        v.extend_from_slice(&self.fingerprint.to_le_bytes());
        v.extend_from_slice(path);
        v
    }

    pub fn decode(v: &[u8]) -> Option<Position> {
        if v.first() != Some(&CHECKPOINT_VERSION) || v.len() < 19 {
            return None;
        }
        Some(Position {
            offset: u64::from_le_bytes(v[1..9].try_into().ok()?),
            fingerprint_len: u16::from_le_bytes(v[9..11].try_into().ok()?),
            fingerprint: u64::from_le_bytes(v[11..19].try_into().ok()?),
            path: PathBuf::from(std::ffi::OsStr::from_bytes(&v[19..])),
        })
    }
}

impl<S: Sink> Tail<S> {
    /// Whether the file behind `t` is the one `p` was written for.
    pub(super) fn verify(&self, t: &Tailed, p: &Position, size: u64) -> io::Result<bool> {
        if size < p.offset {
            return Ok(false);
        }
        let head = read_head(&t.file, p.fingerprint_len as usize)?;
        Ok(head.len() == p.fingerprint_len as usize && fnv1a(&head) == p.fingerprint)
    }

    /// A file was truncated while the agent was stopped: reads what its copy (if
    /// there is one) holds past the checkpoint, under the file's checkpoint.
    pub(super) fn read_copy_of(&mut self, t: &mut Tailed, p: &Position) -> Result<bool, FileError> {
        if p.fingerprint_len == 0 {
            return Ok(false);
        }
        let (len, hash) = (p.fingerprint_len as usize, p.fingerprint);
        let copy = find_file(&t.path, |c, meta| {
            FileId::of(meta) != t.id
                && meta.len() >= p.offset
                && !self.by_id.contains_key(&FileId::of(meta))
                && read_head(c, len).is_ok_and(|h| h.len() == len && fnv1a(&h) == hash)
        });
        if let Some((copy_path, copy)) = copy {
            t.prefix = read_head(&copy, len.min(p.offset as usize)).unwrap_or_default();
            self.drain_copy(t, copy, &copy_path, p.offset)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads `copy` from `from` to its end as the content of `t`, then points `t`
    /// at offset 0 of its own file with a checkpoint there.
    pub(super) fn drain_copy(
        &mut self,
        t: &mut Tailed,
        copy: File,
        copy_path: &Path,
        from: u64,
    ) -> Result<(), FileError> {
        tracing::info!(
            path = %t.path.display(),
            copy = %copy_path.display(),
            from,
            "Reading the rest of a truncated file from its copy"
        );
        let own = std::mem::replace(&mut t.file, copy);
        let read_err = |source| FileError::Read {
            path: copy_path.to_owned(),
            source,
        };
        let result = (|| {
            t.reset_to(from).map_err(read_err)?;
            t.committed = from;
            while let ReadEnd::Budget = self.read(t, u64::MAX, Instant::now())? {}
            self.finish_lines(t)?;
            self.spool_batch(t)
        })();
        t.file = own;
        result?;
        self.restart_at_zero(t)
    }

    /// After a truncation: the file is read again from its start.
    pub(super) fn restart_at_zero(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        t.reset_to(0).map_err(|source| FileError::Read {
            path: t.path.clone(),
            source,
        })?;
        t.prefix.clear();
        t.committed = 0;
        let cp = t.checkpoint(0);
        self.sink
            .spool(t.stream(), Vec::new(), &cp)
            .map_err(|e| FileError::spool(&t.path, e))
    }

    /// Start-up: checkpoints of files that were not found under an included path.
    pub(super) fn settle_unmatched(&mut self) -> Result<(), FileError> {
        let stored: Vec<((String, FileId), Position)> = self.stored.drain().collect();
        for ((stream, id), p) in stored {
            let block = self
                .blocks
                .iter()
                .position(|b| b.stream == stream && b.matches(&p.path));
            let same_start = |f: &File| {
                read_head(f, p.fingerprint_len as usize).is_ok_and(|h| {
                    h.len() == p.fingerprint_len as usize && fnv1a(&h) == p.fingerprint
                })
            };
            let Some(block) = block else {
                tracing::info!(
                    path = %p.path.display(),
                    stream = %stream,
                    "Removing the checkpoint of a file that is no longer tailed"
                );
                self.remove_checkpoint(&stream, id)?;
                continue;
            };
            let found = find_file(&p.path, |_, meta| FileId::of(meta) == id);
            match found {
                Some((path, file)) if path != p.path => {
                    // Rotated while the agent was stopped: finish it. If it no
                    // longer starts as it did, it was truncated (or is a new file on
                    // the same inode) and is read from the start.
                    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    let verified = size >= p.offset && same_start(&file);
                    self.open_draining(block, id, path, file, &p, verified)?;
                }
                None if p.fingerprint_len > 0 => {
                    // Truncated (copytruncate) and then deleted while the agent was
                    // stopped: what was not read is in the copy, if there is one.
                    let copy = find_file(&p.path, |f, meta| {
                        let other = FileId::of(meta);
                        !self.by_id.contains_key(&other) && meta.len() >= p.offset && same_start(f)
                    });
                    match copy {
                        Some((path, file)) => {
                            self.open_draining(block, id, path, file, &p, true)?
                        }
                        None => {
                            tracing::info!(path = %p.path.display(), stream = %stream, "Removing the checkpoint of a file that is gone");
                            self.remove_checkpoint(&stream, id)?;
                        }
                    }
                }
                _ => {
                    tracing::info!(
                        path = %p.path.display(),
                        stream = %stream,
                        "Removing the checkpoint of a file that is gone or no longer tailed"
                    );
                    self.remove_checkpoint(&stream, id)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn open_draining(
        &mut self,
        block: usize,
        id: FileId,
        path: PathBuf,
        file: File,
        p: &Position,
        verified: bool,
    ) -> Result<(), FileError> {
        tracing::info!(
            path = %path.display(),
            was = %p.path.display(),
            position = if verified { p.offset } else { 0 },
            "File was rotated while the agent was stopped; reading it to the end"
        );
        let now = Instant::now();
        let read_err = |source| FileError::Read {
            path: path.clone(),
            source,
        };
        let own = FileId::of(&file.metadata().map_err(read_err)?);
        let prefix =
            read_head(&file, (p.offset as usize).min(FINGERPRINT_BYTES)).map_err(read_err)?;
        let mut t = Tailed::new(
            self.blocks[block].clone(),
            own,
            id,
            path.clone(),
            p.path.clone(),
            file,
            prefix,
            p.offset,
            Some(now),
        );
        t.reset_to(p.offset).map_err(read_err)?;
        if !verified {
            self.metrics.file_event(FileEvent::Truncated);
            tracing::warn!(
                path = %path.display(),
                position = p.offset,
                "Rotated file no longer matches its checkpoint (truncated while the agent was stopped); reading it from the start"
            );
            if !self.read_copy_of(&mut t, p)? {
                self.restart_at_zero(&mut t)?;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(own, seq);
        self.files.insert(seq, t);
        Ok(())
    }
}
