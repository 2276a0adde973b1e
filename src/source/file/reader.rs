//! The reader of one open file: its handle, its read buffer and the two offsets
//! that say where the file stands: `start`, the offset of the first byte not yet
//! taken from the buffer, and `read_pos`, the offset of the next byte to read.
//!
//! State: a [`Reader`] is owned by its file's `Tailed` (tailed.rs). It is the only
//! code that moves an offset: reading forward ([`Reader::fill`]), handing bytes to
//! the framer ([`Reader::take`], which moves `start`), and seeking on a reset, a
//! truncation or a resume at a checkpoint ([`Reader::reset_to`]). Callers: tailed.rs
//! (reads and resets) and framer.rs (finds newlines, takes lines).
//!
//! Invariants: `start <= read_pos`, `read_pos - start` is the buffer's length, and
//! `start` only grows between two resets.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::BytesMut;

use super::identity::Fingerprint;
use super::READ_BYTES;

/// One file's handle, read buffer and offsets.
#[derive(Debug)]
pub(super) struct Reader {
    file: File,
    /// Bytes read and not yet taken, from file offset `start`.
    buf: BytesMut,
    /// Bytes at the front of `buf` already searched for a newline: the search
    /// resumes there, so a line written in small pieces is searched once.
    searched: usize,
    /// Offset of the first byte in `buf`: everything before it was taken.
    start: u64,
    /// Offset of the next byte to read (`start + buf.len()`).
    read_pos: u64,
    /// At end of file after the last read.
    at_eof: bool,
    /// Bytes searched for newlines since [`take_scanned`](Self::take_scanned).
    scanned: u64,
}

impl Reader {
    /// A reader of `file` at offset 0; positioned with [`reset_to`](Self::reset_to).
    pub(super) fn new(file: File) -> Reader {
        Reader {
            file,
            buf: BytesMut::new(),
            searched: 0,
            start: 0,
            read_pos: 0,
            at_eof: false,
            scanned: 0,
        }
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Reads `file` from now on (a copy of the file), returning the handle it
    /// read before; the offsets are set with the next [`reset_to`](Self::reset_to).
    pub(super) fn replace_file(&mut self, file: File) -> File {
        std::mem::replace(&mut self.file, file)
    }

    /// Offset of the first byte not yet taken.
    pub(super) fn start(&self) -> u64 {
        self.start
    }

    /// Offset of the next byte to read.
    pub(super) fn read_pos(&self) -> u64 {
        self.read_pos
    }

    /// At end of file after the last read.
    pub(super) fn at_eof(&self) -> bool {
        self.at_eof
    }

    /// The bytes read and not yet taken (they start at [`start`](Self::start)).
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The file's size now.
    pub(super) fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Forgets what was read past `pos` and reads again from there. Nothing
    /// changes if the seek fails.
    pub(super) fn reset_to(&mut self, pos: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(pos))?;
        self.buf.clear();
        self.searched = 0;
        self.start = pos;
        self.read_pos = pos;
        self.at_eof = false;
        Ok(())
    }

    /// One read of up to [`READ_BYTES`] onto the buffer; `fingerprint` sees the
    /// bytes at their offset. Returns the bytes read, 0 at the end of the file.
    pub(super) fn fill(&mut self, fingerprint: &mut Fingerprint) -> io::Result<usize> {
        let len = self.buf.len();
        if self.buf.capacity() - len < READ_BYTES {
            self.buf.reserve(READ_BYTES);
        }
        self.buf.resize(len + READ_BYTES, 0);
        let n = loop {
            match self.file.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            self.at_eof = true;
            return Ok(0);
        }
        fingerprint.observe(self.read_pos, &self.buf[len..len + n]);
        self.read_pos += n as u64;
        Ok(n)
    }

    /// The read stopped before the end of the file (its budget was spent).
    pub(super) fn stopped_early(&mut self) {
        self.at_eof = false;
    }

    /// Index in [`buffered`](Self::buffered) of the first newline, searching from
    /// where the last [`hold`](Self::hold) left off.
    #[inline]
    pub(super) fn find_newline(&mut self) -> Option<usize> {
        let from = self.searched.min(self.buf.len());
        let newline = memchr::memchr(b'\n', &self.buf[from..]).map(|i| from + i);
        self.scanned += (newline.map_or(self.buf.len(), |i| i + 1) - from) as u64;
        self.searched = 0;
        newline
    }

    /// The buffer holds no newline: the next search starts past what it holds.
    pub(super) fn hold(&mut self) {
        self.searched = self.buf.len();
    }

    /// Takes the first `n` buffered bytes (no copy: they share the buffer's
    /// memory), with the offset they start at; `start` moves past them.
    #[inline]
    pub(super) fn take(&mut self, n: usize) -> (BytesMut, u64) {
        let at = self.start;
        let bytes = self.buf.split_to(n);
        self.start += n as u64;
        (bytes, at)
    }

    /// Bytes searched for newlines since the last call.
    pub(super) fn take_scanned(&mut self) -> u64 {
        std::mem::take(&mut self.scanned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn reader_of(data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, Reader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, data).unwrap();
        let reader = Reader::new(File::open(&path).unwrap());
        (dir, path, reader)
    }

    fn offsets(r: &Reader) -> (u64, u64, usize) {
        (r.start(), r.read_pos(), r.buffered().len())
    }

    #[test]
    fn taking_moves_start_and_reading_moves_read_pos_exactly() {
        let (_dir, path, mut r) = reader_of(b"one\ntwo\nthr");
        let mut fp = Fingerprint::default();
        assert_eq!(r.fill(&mut fp).unwrap(), 11);
        assert_eq!(offsets(&r), (0, 11, 11));
        assert_eq!(fp.bytes(), b"one\ntwo\nthr");
        let i = r.find_newline().unwrap();
        let (line, at) = r.take(i + 1);
        assert_eq!((&line[..], at), (&b"one\n"[..], 0));
        assert_eq!(offsets(&r), (4, 11, 7));
        let i = r.find_newline().unwrap();
        assert_eq!(r.take(i + 1).1, 4);
        // A partial line stays, and is not searched again.
        assert_eq!(r.find_newline(), None);
        r.hold();
        assert_eq!(offsets(&r), (8, 11, 3));
        assert_eq!(r.fill(&mut fp).unwrap(), 0);
        assert!(r.at_eof());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"ee\n")
            .unwrap();
        assert_eq!(r.fill(&mut fp).unwrap(), 3);
        assert_eq!(r.find_newline(), Some(5));
        let (line, at) = r.take(6);
        assert_eq!((&line[..], at), (&b"three\n"[..], 8));
        assert_eq!(offsets(&r), (14, 14, 0));
        // "one\n" + "two\n" + "thr" (searched once) + "ee\n".
        assert_eq!(r.take_scanned(), 4 + 4 + 3 + 3);
    }

    #[test]
    fn a_line_split_across_reads_keeps_its_offsets() {
        // The newline comes in the second read: the line is taken whole, at the
        // offset its first byte was read at.
        let mut data = vec![b'a'; 10];
        data.extend(vec![b'b'; READ_BYTES]);
        data.extend(b"\nc\n");
        let (_dir, _path, mut r) = reader_of(&data);
        let mut fp = Fingerprint::default();
        assert_eq!(r.fill(&mut fp).unwrap(), READ_BYTES);
        assert_eq!(r.find_newline(), None);
        r.hold();
        assert!(r.fill(&mut fp).unwrap() > 0);
        let i = r.find_newline().unwrap();
        assert_eq!(i, 10 + READ_BYTES);
        let (line, at) = r.take(i + 1);
        assert_eq!((line.len(), at), (i + 1, 0));
        assert_eq!(r.start(), (i + 1) as u64);
        assert_eq!(r.read_pos(), data.len() as u64);
        assert_eq!(r.start() + r.buffered().len() as u64, r.read_pos());
    }

    #[test]
    fn a_reset_rereads_from_its_offset_after_a_truncation_or_at_a_checkpoint() {
        let (_dir, path, mut r) = reader_of(b"aaaa\nbbbb\ncccc\n");
        let mut fp = Fingerprint::default();
        r.fill(&mut fp).unwrap();
        let _ = r.take(5);
        // Resume at a checkpoint: what was buffered past it is read again.
        r.reset_to(10).unwrap();
        assert_eq!(offsets(&r), (10, 10, 0));
        assert!(!r.at_eof());
        r.fill(&mut fp).unwrap();
        assert_eq!(r.buffered(), b"cccc\n");
        assert_eq!(offsets(&r), (10, 15, 5));
        // copytruncate: the file shrinks below the read position; read from 0.
        std::fs::write(&path, b"new\n").unwrap();
        assert!(r.size().unwrap() < r.read_pos());
        r.reset_to(0).unwrap();
        fp.forget_from(0);
        r.fill(&mut fp).unwrap();
        assert_eq!((r.buffered(), fp.bytes()), (&b"new\n"[..], &b"new\n"[..]));
        assert_eq!(offsets(&r), (0, 4, 4));
    }
}
