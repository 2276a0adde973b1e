//! One tailed file: its handle, what was read from it and not yet spooled, and
//! where it stands.

use super::*;

/// One open file.
pub(super) struct Tailed {
    pub(super) block: Arc<FileConfig>,
    /// Identity of the open handle.
    pub(super) id: FileId,
    /// Whose checkpoint this file carries: its own, or (reading a copy of a file
    /// truncated while the agent was stopped) the original's.
    pub(super) checkpoint_id: FileId,
    pub(super) path: PathBuf,
    /// The included path it was found at, kept in its checkpoint (a rotated file's
    /// new name is usually not included; start-up looks for it near this path).
    pub(super) tailed_path: PathBuf,
    /// Partition key for `file_path`.
    pub(super) path_key: String,
    /// The block's json format for this path; `None`: raw.
    pub(super) format: Option<JsonFormatter>,
    pub(super) file: File,
    /// Bytes read and not yet turned into records, from file offset `start`.
    pub(super) buf: BytesMut,
    /// Bytes at the front of `buf` already searched for a newline: the search
    /// resumes there, so a line written in small pieces is searched once.
    pub(super) searched: usize,
    pub(super) start: u64,
    /// Offset of the next byte to read (`start + buf.len()`).
    pub(super) read_pos: u64,
    /// The file's first bytes: `file[..min(FINGERPRINT_BYTES, read_pos)]`.
    pub(super) prefix: Vec<u8>,
    /// Position in the spool.
    pub(super) committed: u64,
    pub(super) multiline: Option<Multiline>,
    pub(super) truncating: Option<Truncating>,
    /// Inside an oversized line being split: its start and length so far.
    pub(super) long_line: Option<(u64, u64)>,
    pub(super) batch: Vec<UserRecord>,
    pub(super) batch_bytes: usize,
    pub(super) counts: Counts,
    /// Read at the next service.
    pub(super) dirty: bool,
    /// Rotated away or deleted: read to the end, then close. When it was noticed.
    pub(super) draining: Option<Instant>,
    /// Last time a read returned data.
    pub(super) grew: Instant,
    /// At end of file after the last read.
    pub(super) at_eof: bool,
    /// Not read again before this (after an error).
    pub(super) retry_at: Option<Instant>,
    pub(super) logged_utf8: bool,
    pub(super) logged_oversized: bool,
}

impl Tailed {
    /// A file opened at `path` (found at `tailed_path`), carrying the checkpoint
    /// of `checkpoint_id`, with `prefix` its first bytes read so far; positioned
    /// with [`reset_to`](Self::reset_to) next. `draining`: rotated away already.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        block: Arc<FileConfig>,
        id: FileId,
        checkpoint_id: FileId,
        path: PathBuf,
        tailed_path: PathBuf,
        file: File,
        prefix: Vec<u8>,
        committed: u64,
        draining: Option<Instant>,
    ) -> Tailed {
        let now = Instant::now();
        let mut t = Tailed {
            block,
            id,
            checkpoint_id,
            path: PathBuf::new(),
            tailed_path,
            path_key: String::new(),
            format: None,
            file,
            buf: BytesMut::new(),
            searched: 0,
            start: 0,
            read_pos: 0,
            prefix,
            committed,
            multiline: None,
            truncating: None,
            long_line: None,
            batch: Vec::new(),
            batch_bytes: 0,
            counts: Counts::default(),
            dirty: true,
            draining,
            grew: now,
            at_eof: false,
            retry_at: None,
            logged_utf8: false,
            logged_oversized: false,
        };
        t.set_path(path);
        t
    }

    pub(super) fn stream(&self) -> &str {
        &self.block.stream
    }

    /// Everything before this offset is in the spool or was skipped.
    pub(super) fn consumed(&self) -> u64 {
        let mut pos = self.start;
        if let Some(t) = &self.truncating {
            pos = pos.min(t.line_start);
        }
        if let Some(p) = &self.multiline {
            pos = pos.min(p.start);
        }
        pos
    }

    pub(super) fn checkpoint(&self, offset: u64) -> Checkpoint {
        let len = (offset as usize)
            .min(FINGERPRINT_BYTES)
            .min(self.prefix.len());
        Checkpoint {
            name: self.checkpoint_id.checkpoint_name(),
            value: Position {
                offset,
                fingerprint_len: len as u16,
                fingerprint: fnv1a(&self.prefix[..len]),
                path: self.tailed_path.clone(),
            }
            .encode(),
        }
    }

    pub(super) fn set_path(&mut self, path: PathBuf) {
        self.path_key = key_tail(&path.to_string_lossy());
        self.format = JsonFormatter::for_source(&self.block.format, &path.to_string_lossy());
        self.path = path;
    }

    /// Forgets what was read past `pos` and reads again from there.
    pub(super) fn reset_to(&mut self, pos: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(pos))?;
        self.buf.clear();
        self.searched = 0;
        self.start = pos;
        self.read_pos = pos;
        self.multiline = None;
        self.truncating = None;
        self.long_line = None;
        self.batch.clear();
        self.batch_bytes = 0;
        if (pos as usize) < self.prefix.len() {
            self.prefix.truncate(pos as usize);
        }
        self.at_eof = false;
        Ok(())
    }
}
