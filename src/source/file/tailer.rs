//! The tailer: every file of every `[[file]]` block, serviced in turn: read, cut
//! into records, spooled with their checkpoint.

use super::*;

/// What a service pass of one file did.
pub(super) enum Serviced {
    Keep { more: bool },
    Closed,
}

/// The tailer: every file of every `[[file]]` block, driven by [`Tail::rescan`],
/// [`Tail::changed`] and [`Tail::service`]. Blocking: run it on its own thread.
pub struct Tail<S: Sink> {
    pub(super) blocks: Vec<Arc<FileConfig>>,
    pub(super) sink: S,
    pub(super) metrics: Metrics,
    /// Open files, in the order they were opened (a rotated file is read before
    /// the one that replaced it).
    pub(super) files: BTreeMap<u64, Tailed>,
    pub(super) next_seq: u64,
    pub(super) by_id: HashMap<FileId, u64>,
    /// Paths of open files that are not draining.
    pub(super) by_path: HashMap<PathBuf, u64>,
    /// Files too old to open (`ignore_older_secs`), with the position to start at
    /// if they are modified.
    pub(super) ignored: HashMap<FileId, u64>,
    /// Checkpoints read at start-up and not yet matched to a file.
    pub(super) stored: HashMap<(String, FileId), Position>,
    pub(super) starting: bool,
    /// Paths the patterns match that are not tailed (a symbolic link, a target
    /// outside the patterns): each is logged once, while it is there.
    pub(super) skipped: HashSet<PathBuf>,
    /// Bytes searched for newlines (the cost the resumed search keeps linear).
    pub(super) scanned_bytes: u64,
}

impl<S: Sink> Tail<S> {
    /// Reads the checkpoints, opens every file the globs match (resuming at its
    /// checkpoint) and settles the checkpoints no file matched.
    pub fn start(blocks: Vec<FileConfig>, sink: S, metrics: Metrics) -> Result<Tail<S>, FileError> {
        let mut tail = Tail {
            blocks: blocks.into_iter().map(Arc::new).collect(),
            sink,
            metrics,
            files: BTreeMap::new(),
            next_seq: 0,
            by_id: HashMap::new(),
            by_path: HashMap::new(),
            ignored: HashMap::new(),
            stored: HashMap::new(),
            starting: true,
            skipped: HashSet::new(),
            scanned_bytes: 0,
        };
        let mut streams: Vec<String> = tail.blocks.iter().map(|b| b.stream.clone()).collect();
        streams.sort();
        streams.dedup();
        for stream in streams {
            let checkpoints =
                tail.sink
                    .checkpoints(&stream)
                    .map_err(|source| FileError::Checkpoints {
                        stream: stream.clone(),
                        source,
                    })?;
            for c in checkpoints {
                let Some(id) = FileId::from_checkpoint_name(&c.name) else {
                    continue;
                };
                match Position::decode(&c.value) {
                    Some(p) => {
                        tail.stored.insert((stream.clone(), id), p);
                    }
                    None => {
                        tracing::warn!(
                            stream = %stream,
                            error = "unknown checkpoint format version",
                            "Removing an unreadable file checkpoint"
                        );
                        tail.remove_checkpoint(&stream, id)?;
                    }
                }
            }
        }
        tail.rescan()?;
        tail.starting = false;
        tail.settle_unmatched()?;
        Ok(tail)
    }

    /// Bytes searched for newlines so far (tests: the search stays linear).
    pub fn scanned_bytes(&self) -> u64 {
        self.scanned_bytes
    }

    /// Number of open files.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Directories to watch: the literal leading directory of each include
    /// pattern, and whether the pattern reaches below it.
    pub fn watch_dirs(&self) -> Vec<(PathBuf, bool)> {
        let mut out: Vec<(PathBuf, bool)> = Vec::new();
        for b in &self.blocks {
            for pattern in &b.include {
                let (base, depth) = glob_base(pattern);
                out.push((base, depth.is_none_or(|d| d > 1)));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Walks every block's globs: opens new files, checks open ones for rotation and
    /// marks every file to be read.
    pub fn rescan(&mut self) -> Result<(), FileError> {
        let mut seen = HashSet::new();
        let mut found: Vec<(PathBuf, usize)> = Vec::new();
        let mut claimed = HashSet::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for pattern in &b.include {
                let (base, depth) = glob_base(pattern);
                walk(&base, depth, &mut |p: &Path| {
                    if b.matches(p) && claimed.insert(p.to_owned()) {
                        found.push((p.to_owned(), i));
                    }
                });
            }
        }
        // Open files first: a rotation is noticed (old file draining) before the new
        // file at the same path is opened.
        let seqs: Vec<u64> = self.files.keys().copied().collect();
        for seq in seqs {
            self.check_path(seq)?;
        }
        for (path, block) in found {
            if let Some(id) = self.discover(&path, block)? {
                seen.insert(id);
            }
        }
        self.ignored.retain(|id, _| seen.contains(id));
        // A skipped path that is gone is logged again if it comes back.
        self.skipped.retain(|p| claimed.contains(p));
        for t in self.files.values_mut() {
            t.dirty = true;
        }
        Ok(())
    }

    /// An inotify hint about `path`.
    pub fn changed(&mut self, path: &Path) -> Result<(), FileError> {
        if let Some(&seq) = self.by_path.get(path) {
            if let Some(t) = self.files.get_mut(&seq) {
                t.dirty = true;
            }
            return self.check_path(seq);
        }
        if let Some(block) = self.blocks.iter().position(|b| b.matches(path)) {
            self.discover(path, block)?;
        }
        Ok(())
    }

    /// Reads the files marked to be read, sends multiline records that timed out and
    /// closes rotated files that are done. Returns whether a file has more to read
    /// right away. Stops only when the sink stops; other errors are logged and the
    /// file is read again later from its checkpoint.
    pub fn service(&mut self) -> Result<bool, FileError> {
        let now = Instant::now();
        let mut more = false;
        let seqs: Vec<u64> = self.files.keys().copied().collect();
        for seq in seqs {
            let Some(mut t) = self.files.remove(&seq) else {
                continue;
            };
            match self.service_file(&mut t, now) {
                Ok(Serviced::Keep { more: m }) => {
                    more |= m;
                    self.files.insert(seq, t);
                }
                Ok(Serviced::Closed) => {
                    self.by_id.remove(&t.id);
                    if self.by_path.get(&t.path) == Some(&seq) {
                        self.by_path.remove(&t.path);
                    }
                }
                Err(FileError::Stopped) => {
                    self.files.insert(seq, t);
                    return Err(FileError::Stopped);
                }
                Err(e) => {
                    tracing::warn!(
                        path = %t.path.display(),
                        error = %error_chain(&e),
                        "Tailing a file failed; it is read again from its checkpoint shortly"
                    );
                    let committed = t.committed;
                    if let Err(e) = t.reset_to(committed) {
                        tracing::warn!(path = %t.path.display(), error = %e, "Rewinding a tailed file failed");
                    }
                    t.retry_at = Some(now + RETRY);
                    self.files.insert(seq, t);
                }
            }
        }
        Ok(more)
    }

    /// When [`service`](Self::service) has timed work next (a multiline record to
    /// send, a rotated file to close, a retry).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter_map(|t| {
                let multiline = t
                    .multiline
                    .as_ref()
                    .map(|p| p.last + t.block.multiline_timeout);
                let close = t.draining.map(|d| d.max(t.grew) + t.block.rotate_wait);
                [multiline, close, t.retry_at].into_iter().flatten().min()
            })
            .min()
    }

    /// Rescans and services until nothing is left to read (tests, and a pass that
    /// must not wait).
    pub fn poll(&mut self) -> Result<(), FileError> {
        self.rescan()?;
        while self.service()? {}
        Ok(())
    }

    /// The file to open for `path`, a match of block `block`'s patterns: the path
    /// itself, or the target of a symbolic link the block may follow. `None`: not
    /// tailed (logged once while the path is there).
    pub(super) fn admit(&mut self, path: &Path, block: usize) -> Option<PathBuf> {
        let why = match admit_path(path, &self.blocks[block]) {
            Ok(target) => return Some(target),
            Err(why) => why,
        };
        if self.skipped.insert(path.to_owned()) {
            tracing::warn!(path = %path.display(), reason = %why, "Not tailing a path the patterns match; logged once");
            self.metrics.file_event(FileEvent::Skipped);
        }
        None
    }

    pub(super) fn remove_checkpoint(&mut self, stream: &str, id: FileId) -> Result<(), FileError> {
        self.sink
            .remove_checkpoint(stream, &id.checkpoint_name())
            .map_err(|source| match source {
                ProduceError::Stopped => FileError::Stopped,
                source => FileError::Checkpoints {
                    stream: stream.to_owned(),
                    source,
                },
            })
    }

    /// Checks that an open file's path still names it; if not, the file drains.
    pub(super) fn check_path(&mut self, seq: u64) -> Result<(), FileError> {
        let Some(t) = self.files.get_mut(&seq) else {
            return Ok(());
        };
        if t.draining.is_some() {
            return Ok(());
        }
        let now_at_path = match std::fs::metadata(&t.path) {
            Ok(m) if m.is_file() => Some(FileId::of(&m)),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            // Cannot tell (permissions changed?): keep tailing the handle.
            Err(_) => return Ok(()),
        };
        if now_at_path == Some(t.id) {
            return Ok(());
        }
        let (event, what) = if now_at_path.is_some() {
            (FileEvent::Replaced, "replaced by a new file")
        } else {
            (FileEvent::Removed, "removed or renamed")
        };
        self.metrics.file_event(event);
        tracing::info!(
            path = %t.path.display(),
            position = t.read_pos,
            "Tailed file was {what}; reading its old handle to the end"
        );
        t.draining = Some(Instant::now());
        t.dirty = true;
        let path = t.path.clone();
        let block = self.blocks.iter().position(|b| Arc::ptr_eq(b, &t.block));
        self.by_path.remove(&path);
        if now_at_path.is_some() {
            if let Some(block) = block {
                self.discover(&path, block)?;
            }
        }
        Ok(())
    }
}

impl<S: Sink> Tail<S> {
    pub(super) fn service_file(
        &mut self,
        t: &mut Tailed,
        now: Instant,
    ) -> Result<Serviced, FileError> {
        if t.retry_at.is_some_and(|r| now < r) {
            return Ok(Serviced::Keep { more: false });
        }
        t.retry_at = None;
        let mut more = false;
        if t.dirty || t.draining.is_some() {
            t.dirty = false;
            self.check_truncation(t)?;
            match self.read(t, READ_BUDGET_BYTES, now)? {
                ReadEnd::Budget => {
                    t.dirty = true;
                    more = true;
                }
                ReadEnd::Eof => {}
            }
            self.spool_batch(t)?;
        }
        let timed_out = t
            .multiline
            .as_ref()
            .is_some_and(|p| now >= p.last + t.block.multiline_timeout);
        if timed_out {
            self.emit_multiline(t)?;
            self.spool_batch(t)?;
        }
        if let Some(since) = t.draining {
            // Now, not the pass's start: the read above may have just moved `grew`.
            let now = Instant::now();
            if t.at_eof && !more && now >= since.max(t.grew) + t.block.rotate_wait {
                self.finish_lines(t)?;
                self.spool_batch(t)?;
                self.remove_checkpoint(&t.block.stream.clone(), t.checkpoint_id)?;
                self.metrics.file_event(FileEvent::Closed);
                tracing::info!(path = %t.path.display(), position = t.read_pos, "Closed a rotated or removed file after reading it to the end");
                return Ok(Serviced::Closed);
            }
        }
        Ok(Serviced::Keep { more })
    }

    /// Notices a truncation (copytruncate) and recovers what can be recovered.
    pub(super) fn check_truncation(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        let read_err = |source| FileError::Read {
            path: t.path.clone(),
            source,
        };
        let size = t.file.metadata().map_err(read_err)?.len();
        let mut truncated = size < t.read_pos;
        if !truncated && !t.prefix.is_empty() {
            let head = read_head(&t.file, t.prefix.len()).map_err(read_err)?;
            truncated = head != t.prefix;
        }
        if !truncated {
            return Ok(());
        }
        self.metrics.file_event(FileEvent::Truncated);
        tracing::warn!(
            path = %t.path.display(),
            position = t.read_pos,
            size,
            "File was truncated (copytruncate); reading it again from the start"
        );
        let (prefix, committed, own_id) = (t.prefix.clone(), t.committed, t.id);
        let copy = if prefix.is_empty() {
            None
        } else {
            find_file(&t.path, |c, meta| {
                let id = FileId::of(meta);
                id != own_id
                    && meta.len() > committed
                    && !self.by_id.contains_key(&id)
                    && read_head(c, prefix.len()).is_ok_and(|h| h == prefix)
            })
        };
        match copy {
            Some((copy_path, copy)) => self.drain_copy(t, copy, &copy_path, committed),
            None => {
                tracing::warn!(
                    path = %t.path.display(),
                    position = t.read_pos,
                    "No copy of the truncated file was found: lines written after the last read and before the truncation, if any, are lost"
                );
                self.restart_at_zero(t)
            }
        }
    }

    /// Reads until the end of the file or `budget` bytes.
    pub(super) fn read(
        &mut self,
        t: &mut Tailed,
        budget: u64,
        now: Instant,
    ) -> Result<ReadEnd, FileError> {
        let mut total = 0u64;
        loop {
            if total >= budget {
                t.at_eof = false;
                return Ok(ReadEnd::Budget);
            }
            let len = t.buf.len();
            if t.buf.capacity() - len < READ_BYTES {
                t.buf.reserve(READ_BYTES);
            }
            t.buf.resize(len + READ_BYTES, 0);
            let n = loop {
                match t.file.read(&mut t.buf[len..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        t.buf.truncate(len);
                        return Err(FileError::Read {
                            path: t.path.clone(),
                            source,
                        });
                    }
                }
            };
            t.buf.truncate(len + n);
            if n == 0 {
                t.at_eof = true;
                return Ok(ReadEnd::Eof);
            }
            if t.prefix.len() < FINGERPRINT_BYTES && t.read_pos == t.prefix.len() as u64 {
                let take = n.min(FINGERPRINT_BYTES - t.prefix.len());
                t.prefix.extend_from_slice(&t.buf[len..len + take]);
            }
            t.read_pos += n as u64;
            t.grew = now;
            total += n as u64;
            self.lines(t, false)?;
        }
    }
}

impl<S: Sink> Tail<S> {
    /// Spools the batch with the file's checkpoint (or the checkpoint alone, if the
    /// position moved without records).
    pub(super) fn spool_batch(&mut self, t: &mut Tailed) -> Result<(), FileError> {
        // Counts go out even when nothing else moved (a line being truncated is
        // counted when it crosses the limit, before anything is spooled).
        let c = std::mem::take(&mut t.counts);
        let m = &self.metrics;
        if c.split > 0 {
            m.oversized(KIND, LineAction::Split, c.split);
        }
        if c.truncated > 0 {
            m.oversized(KIND, LineAction::Truncated, c.truncated);
        }
        if c.utf8 > 0 {
            let action = match t.block.invalid_utf8 {
                InvalidUtf8::Replace => LineAction::Replaced,
                _ => LineAction::Passed,
            };
            m.invalid_utf8(KIND, action, c.utf8);
        }
        if c.rejected_utf8 > 0 {
            m.invalid_utf8(KIND, LineAction::Rejected, c.rejected_utf8);
            m.rejected(KIND, RejectReason::InvalidUtf8, c.rejected_utf8);
        }
        if c.key_fallbacks > 0 {
            m.partition_key_fallback(KIND, c.key_fallbacks);
        }
        let pos = t.consumed();
        if t.batch.is_empty() && pos == t.committed {
            return Ok(());
        }
        let records = std::mem::take(&mut t.batch);
        t.batch_bytes = 0;
        let n = records.len() as u64;
        if n > 0 {
            m.received(KIND, n);
        }
        let cp = t.checkpoint(pos);
        self.sink
            .spool(&t.block.stream, records, &cp)
            .map_err(|e| FileError::spool(&t.path, e))?;
        t.committed = pos;
        Ok(())
    }
}

pub(super) enum ReadEnd {
    Eof,
    Budget,
}

pub(super) fn memchr(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf)
}
