//! The tailer: every file of every `[[file]]` block, serviced in turn: read, cut
//! into records, spooled with their checkpoint.
//!
//! State: a [`Tail`] owns the open files (one `Tailed` each, by the order they
//! were opened, with indexes by identity and by path), the files ignored for
//! their age, the checkpoints read at start-up and not yet matched, and the
//! paths skipped. It is driven by the tailer thread (runner.rs), by tests and by
//! tools, through its public methods. Opening a file found at a path is in
//! open.rs; rotation and truncation recovery in recovery.rs; a file's own state
//! is in its `Tailed` (tailed.rs), which this loop only calls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{glob_base, FileConfig};
use crate::metrics::{FileEvent, Metrics};
use crate::producer::ProduceError;

use super::checkpoint::Position;
use super::cleanup::{Deletions, DELETE_POLL};
use super::discovery::{admit_path, walk};
use super::identity::FileId;
use super::progress::{Files, Seen, Stage};
use super::tailed::{ReadEnd, Tailed};
use super::{error_chain, FileError, Sink, READ_BUDGET_BYTES, RETRY};

/// What a service pass of one file did.
enum Serviced {
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
    /// Each file's progress into the spool and out of it (`shardline files`).
    pub(super) progress: Files,
    /// What `delete_after_delivered` remembers (paths that rotated, files held
    /// by a writer).
    pub(super) deletions: Deletions,
}

impl<S: Sink> Tail<S> {
    /// Reads the checkpoints, opens every file the globs match (resuming at its
    /// checkpoint) and settles the checkpoints no file matched.
    pub fn start(blocks: Vec<FileConfig>, sink: S, metrics: Metrics) -> Result<Tail<S>, FileError> {
        Self::start_with(blocks, sink, metrics, Files::default())
    }

    /// [`start`](Self::start), telling `files` of every file's progress (a
    /// reload's tailer takes over the progress of the files it finds again).
    pub(crate) fn start_with(
        blocks: Vec<FileConfig>,
        sink: S,
        metrics: Metrics,
        progress: Files,
    ) -> Result<Tail<S>, FileError> {
        progress.begin();
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
            progress,
            deletions: Deletions::default(),
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
            t.mark_dirty();
        }
        Ok(())
    }

    /// An inotify hint about `path`.
    pub fn changed(&mut self, path: &Path) -> Result<(), FileError> {
        if let Some(&seq) = self.by_path.get(path) {
            if let Some(t) = self.files.get_mut(&seq) {
                t.mark_dirty();
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
            let serviced = self.service_file(&mut t, now);
            self.scanned_bytes += t.take_scanned();
            match serviced {
                Ok(Serviced::Keep { more: m }) => {
                    more |= m;
                    if !m
                        && self.deletions.delete_if_delivered(
                            &mut t,
                            &self.progress,
                            &self.metrics,
                            now,
                        )
                        && self.by_path.get(t.path()) == Some(&seq)
                    {
                        self.by_path.remove(t.path());
                    }
                    self.files.insert(seq, t);
                }
                Ok(Serviced::Closed) => {
                    self.progress.closed(t.checkpoint_id());
                    let open = &self.by_id;
                    self.deletions
                        .retain(|id| id != &t.id() && open.contains_key(id));
                    self.by_id.remove(&t.id());
                    if self.by_path.get(t.path()) == Some(&seq) {
                        self.by_path.remove(t.path());
                    }
                }
                Err(FileError::Stopped) => {
                    self.files.insert(seq, t);
                    return Err(FileError::Stopped);
                }
                Err(e) => {
                    tracing::warn!(
                        path = %t.path().display(),
                        error = %error_chain(&e),
                        "Tailing a file failed; it is read again from its checkpoint shortly"
                    );
                    if let Err(e) = t.rewind(now + RETRY) {
                        tracing::warn!(path = %t.path().display(), error = %e, "Rewinding a tailed file failed");
                    }
                    self.files.insert(seq, t);
                }
            }
        }
        Ok(more)
    }

    /// When [`service`](Self::service) has timed work next (a multiline record to
    /// send, a rotated file to close, a retry).
    pub fn next_deadline(&self) -> Option<Instant> {
        // A file waiting to be deleted waits for its delivery, which no event
        // announces: it is looked at again shortly.
        let delete = self
            .files
            .values()
            .any(|t| t.block().delete_after_delivered && !t.is_draining())
            .then(|| Instant::now() + DELETE_POLL);
        self.files
            .values()
            .filter_map(Tailed::next_deadline)
            .chain(delete)
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

    /// Lists a file just opened in the progress, before anything of it is
    /// spooled; `earlier`: an earlier run may have spooled part of it.
    pub(super) fn track(&mut self, t: &Tailed, earlier: bool) {
        let gate = if earlier {
            self.sink.earlier_runs(t.stream())
        } else {
            None
        };
        let seen = Seen {
            stream: t.stream().to_owned(),
            path: t.path().to_owned(),
            tailed_path: t.tailed_path().to_owned(),
            stage: if t.is_draining() {
                Stage::Draining
            } else {
                Stage::Tailed
            },
            size: t.size().unwrap_or(0),
            read: t.committed(),
        };
        self.progress
            .open(t.checkpoint_id(), seen, t.committed(), gate);
    }

    /// Tells the progress how a file looks after a pass that read it.
    fn show(&self, t: &Tailed) {
        let size = t.size().ok();
        self.progress.seen(t.checkpoint_id(), |s| {
            s.path = t.path().to_owned();
            s.tailed_path = t.tailed_path().to_owned();
            if let Some(size) = size {
                s.size = size;
            }
            s.read = t.committed();
        });
    }

    /// Checks that an open file's path still names it; if not, the file drains.
    pub(super) fn check_path(&mut self, seq: u64) -> Result<(), FileError> {
        let Some(t) = self.files.get_mut(&seq) else {
            return Ok(());
        };
        if t.is_draining() {
            return Ok(());
        }
        let now_at_path = match std::fs::metadata(t.path()) {
            Ok(m) if m.is_file() => Some(FileId::of(&m)),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            // Cannot tell (permissions changed?): keep tailing the handle.
            Err(_) => return Ok(()),
        };
        if now_at_path == Some(t.id()) {
            return Ok(());
        }
        let (event, what) = if now_at_path.is_some() {
            (FileEvent::Replaced, "replaced by a new file")
        } else {
            (FileEvent::Removed, "removed or renamed")
        };
        self.metrics.file_event(event);
        tracing::info!(
            path = %t.path().display(),
            position = t.read_pos(),
            "Tailed file was {what}; reading its old handle to the end"
        );
        t.start_draining(Instant::now());
        let path = t.path().to_owned();
        self.deletions.rotated(&path);
        self.progress
            .seen(t.checkpoint_id(), |s| s.stage = Stage::Draining);
        let block = self.blocks.iter().position(|b| Arc::ptr_eq(b, t.block()));
        self.by_path.remove(&path);
        if now_at_path.is_some() {
            if let Some(block) = block {
                self.discover(&path, block)?;
            }
        }
        Ok(())
    }

    /// One pass over one file: reads it (from a copy first, if it was truncated),
    /// spools what it read, sends a multiline record whose time is up, and closes
    /// it once drained.
    fn service_file(&mut self, t: &mut Tailed, now: Instant) -> Result<Serviced, FileError> {
        if !t.ready(now) {
            return Ok(Serviced::Keep { more: false });
        }
        let mut more = false;
        if t.take_work() {
            self.check_truncation(t)?;
            match t.read(&mut self.sink, &self.metrics, READ_BUDGET_BYTES, now)? {
                ReadEnd::Budget => {
                    t.mark_dirty();
                    more = true;
                }
                ReadEnd::Eof => {}
            }
            t.spool(&mut self.sink, &self.metrics)?;
            self.show(t);
        }
        if t.emit_multiline_due(&mut self.sink, &self.metrics, now)? {
            t.spool(&mut self.sink, &self.metrics)?;
        }
        if !more && t.drained() {
            t.finish(&mut self.sink, &self.metrics)?;
            t.spool(&mut self.sink, &self.metrics)?;
            self.remove_checkpoint(t.stream(), t.checkpoint_id())?;
            self.metrics.file_event(FileEvent::Closed);
            tracing::info!(path = %t.path().display(), position = t.read_pos(), "Closed a rotated or removed file after reading it to the end");
            return Ok(Serviced::Closed);
        }
        Ok(Serviced::Keep { more })
    }
}
