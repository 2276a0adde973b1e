//! The line framer of one open file: lines cut at newlines, oversized lines split
//! or truncated, invalid UTF-8 passed, replaced or rejected, and lines joined into
//! multiline or joined records.
//!
//! State: a [`Framer`] is owned by its file's `Tailed` (tailed.rs). It owns what
//! is between lines: the multiline record collecting lines, the head of a line
//! being truncated, whether a line is being split, and whether each kind of bad
//! line was logged; and the block's line policies. It takes bytes from the
//! reader (reader.rs, which moves the offsets) and gives records to an [`Emit`]
//! (batch.rs's, in the agent) together with the consumed offset they reach.
//! Callers: tailed.rs only.
//!
//! Two ways of joining lines into one record, never both in one block: a
//! multiline record starts at each line that matches `multiline_start` and is
//! sent when the next one starts (or after `multiline_timeout`); a joined record
//! ([`Join`], for formats whose records span physical lines: CRI and Docker
//! partial lines, CSV quoted fields with newlines) takes lines while its format
//! says it is not complete and is sent as soon as it is (or, incomplete, after
//! `multiline_timeout`). Both are held the same way, under the same record
//! limit, and count as "a multiline record in progress" below.
//!
//! Invariant: [`Framer::consumed`] never passes a byte that is held here (a
//! multiline record in progress, a line being truncated, a line taken from the
//! reader whose records are not all given out yet) or still in the reader's
//! buffer; it only grows between two resets.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;

use crate::config::{FileConfig, InvalidUtf8, Oversized};
use crate::source::parse::presets::container::Join;

use super::reader::Reader;
use super::FileError;

/// Where the framer's records go.
pub(super) trait Emit {
    /// A record's data. `consumed`: every byte of the file before this offset is
    /// in a record given so far or was skipped (the checkpoint of a batch cut now).
    fn record(&mut self, data: Bytes, consumed: u64) -> Result<(), FileError>;
    /// A line over the record limit was split or truncated, per `action`.
    fn oversized(&mut self, action: Oversized);
    /// A line was not valid UTF-8 (`rejected`: not sent for it).
    fn invalid_utf8(&mut self, rejected: bool);
    /// The file's path, for the log.
    fn path(&self) -> &Path;
}

/// A multiline or joined record collecting lines.
#[derive(Debug)]
struct Multiline {
    data: BytesMut,
    /// Offset of its first line.
    start: u64,
    /// When its last line was added.
    last: Instant,
    truncated: bool,
    /// A joined record: whether it is still open (always, while it is held).
    open: bool,
}

impl Multiline {
    fn new(line: &[u8], start: u64) -> Multiline {
        Multiline {
            data: BytesMut::from(line),
            start,
            last: Instant::now(),
            truncated: false,
            open: false,
        }
    }
}

/// An oversized line being truncated: its head is kept, the rest dropped.
#[derive(Debug)]
struct Truncating {
    head: Bytes,
    line_start: u64,
    len: u64,
}

/// One file's line framing: its policies and what it holds between lines.
#[derive(Debug)]
pub(super) struct Framer {
    /// `max_record_bytes`.
    max: usize,
    oversized: Oversized,
    invalid_utf8: InvalidUtf8,
    multiline_start: Option<Regex>,
    /// How lines of a record that spans lines are joined (not with
    /// `multiline_start`).
    join: Option<Join>,
    multiline_timeout: Duration,
    multiline: Option<Multiline>,
    truncating: Option<Truncating>,
    /// Inside an oversized line being split: its start and length so far.
    long_line: Option<(u64, u64)>,
    /// The start of the line being given out: taken from the reader, not all of
    /// it in records yet (a full batch cut meanwhile must not pass it).
    in_hand: Option<u64>,
    logged_utf8: bool,
    logged_oversized: bool,
}

impl Framer {
    pub(super) fn new(block: &FileConfig) -> Framer {
        Framer {
            max: block.max_record_bytes,
            oversized: block.oversized,
            invalid_utf8: block.invalid_utf8,
            multiline_start: block.multiline_start.clone(),
            join: None,
            multiline_timeout: block.multiline_timeout,
            multiline: None,
            truncating: None,
            long_line: None,
            in_hand: None,
            logged_utf8: false,
            logged_oversized: false,
        }
    }

    /// Joins the lines of records that span lines by the rule of the block's
    /// format. Set before the first line; the block has no `multiline_start`.
    pub(super) fn set_join(&mut self, join: Option<Join>) {
        debug_assert!(join.is_none() || self.multiline_start.is_none());
        self.join = join;
    }

    /// Everything before this offset is in a record or was skipped, given that
    /// the reader's buffer starts at `buffered_from`.
    pub(super) fn consumed(&self, buffered_from: u64) -> u64 {
        let mut pos = buffered_from;
        if let Some(t) = &self.truncating {
            pos = pos.min(t.line_start);
        }
        if let Some(p) = &self.multiline {
            pos = pos.min(p.start);
        }
        if let Some(at) = self.in_hand {
            pos = pos.min(at);
        }
        pos
    }

    /// The file is read again from another offset: what is held is dropped (it
    /// is read again).
    pub(super) fn reset(&mut self) {
        self.multiline = None;
        self.truncating = None;
        self.long_line = None;
        self.in_hand = None;
    }

    /// When the multiline record in progress is to be sent.
    pub(super) fn multiline_deadline(&self) -> Option<Instant> {
        self.multiline
            .as_ref()
            .map(|p| p.last + self.multiline_timeout)
    }

    fn emit(&self, reader: &Reader, out: &mut impl Emit, data: Bytes) -> Result<(), FileError> {
        out.record(data, self.consumed(reader.start()))
    }

    /// Turns the complete lines in the reader's buffer into records. `last`: the
    /// file is finished, so a final line without a newline counts too.
    pub(super) fn lines(
        &mut self,
        reader: &mut Reader,
        out: &mut impl Emit,
        last: bool,
    ) -> Result<(), FileError> {
        loop {
            let newline = reader.find_newline();
            if self.truncating.is_some() {
                if !self.drop_truncated(reader, out, newline, last)? {
                    return Ok(());
                }
                continue;
            }
            match newline {
                Some(i) => {
                    let (mut line, line_start) = reader.take(i + 1);
                    line.truncate(i);
                    if line.last() == Some(&b'\r') {
                        line.truncate(i - 1);
                    }
                    self.give(reader, out, line.freeze(), line_start)?;
                }
                None if reader.buffered().len() > self.max => self.cut_unended(reader, out)?,
                None if last && !reader.buffered().is_empty() => {
                    let n = reader.buffered().len();
                    let (mut line, line_start) = reader.take(n);
                    if line.last() == Some(&b'\r') {
                        line.truncate(n - 1);
                    }
                    self.give(reader, out, line.freeze(), line_start)?;
                    return Ok(());
                }
                None => {
                    reader.hold();
                    return Ok(());
                }
            }
        }
    }

    /// Inside a line being truncated: drops the buffer up to its newline (or all of
    /// it); at its end, its head is a line. Returns whether to go on framing.
    fn drop_truncated(
        &mut self,
        reader: &mut Reader,
        out: &mut impl Emit,
        newline: Option<usize>,
        last: bool,
    ) -> Result<bool, FileError> {
        let drop = newline.map_or(reader.buffered().len(), |i| i + 1);
        let _ = reader.take(drop);
        let tr = self.truncating.as_mut().expect("a line is being truncated");
        tr.len += newline.unwrap_or(drop) as u64;
        if newline.is_none() && !last {
            return Ok(false);
        }
        // Counted and logged when it crossed the limit.
        let tr = self.truncating.take().expect("a line is being truncated");
        self.in_hand = Some(tr.line_start);
        let given = self.line(reader, out, tr.head, tr.line_start);
        self.in_hand = None;
        given?;
        Ok(newline.is_some())
    }

    /// Gives out a line taken from the reader: until its last record is given,
    /// the consumed offset stays before it.
    fn give(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        self.in_hand = Some(line_start);
        let given = self.whole_line(reader, out, line, line_start);
        self.in_hand = None;
        given
    }

    /// A line longer than the record limit with no end in the buffer yet: split
    /// off a record, or keep its head and drop the rest, per `oversized`.
    fn cut_unended(&mut self, reader: &mut Reader, out: &mut impl Emit) -> Result<(), FileError> {
        let max = self.max;
        match self.oversized {
            Oversized::Split => {
                self.emit_multiline(reader, out)?;
                if self.long_line.is_none() {
                    // Counted and logged now, not when (or whether) its newline
                    // comes.
                    let (so_far, at) = (reader.buffered().len() as u64, reader.start());
                    self.oversized_line(out, so_far, at, Oversized::Split, false);
                }
                let cut = char_boundary(reader.buffered(), max);
                let (line_start, len) = self.long_line.unwrap_or((reader.start(), 0));
                self.long_line = Some((line_start, len + cut as u64));
                let (chunk, _) = reader.take(cut);
                self.emit(reader, out, chunk.freeze())?;
            }
            Oversized::Truncate => {
                let (so_far, at) = (reader.buffered().len() as u64, reader.start());
                self.oversized_line(out, so_far, at, Oversized::Truncate, false);
                let cut = char_boundary(reader.buffered(), max);
                let (head, line_start) = reader.take(cut);
                self.truncating = Some(Truncating {
                    head: head.freeze(),
                    line_start,
                    len: cut as u64,
                });
            }
        }
        Ok(())
    }

    /// Sends the line in hand as records of at most `max` bytes each; the last
    /// one passes the line.
    fn split(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        line: Bytes,
    ) -> Result<(), FileError> {
        let mut rest = line;
        while !rest.is_empty() {
            let cut = char_boundary(&rest, self.max);
            let chunk = rest.split_to(cut);
            if rest.is_empty() {
                self.in_hand = None;
            }
            self.emit(reader, out, chunk)?;
        }
        Ok(())
    }

    /// A line with its end: the tail of a split line, an oversized line, or a line.
    fn whole_line(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        if self.long_line.take().is_some() {
            // The end of a line split as it came in (counted then).
            return self.split(reader, out, line);
        }
        if line.len() <= self.max {
            return self.line(reader, out, line, line_start);
        }
        let len = line.len() as u64;
        match self.oversized {
            Oversized::Split => {
                self.oversized_line(out, len, line_start, Oversized::Split, true);
                self.emit_multiline(reader, out)?;
                self.split(reader, out, line)
            }
            Oversized::Truncate => {
                self.oversized_line(out, len, line_start, Oversized::Truncate, true);
                let cut = char_boundary(&line, self.max);
                self.line(reader, out, line.slice(..cut), line_start)
            }
        }
    }

    /// Counts (and, first in a file, logs) a line over the record limit: a whole
    /// one of `len` bytes, or one of `len` bytes so far that has no end yet.
    fn oversized_line(
        &mut self,
        out: &mut impl Emit,
        len: u64,
        at: u64,
        action: Oversized,
        complete: bool,
    ) {
        let max = self.max;
        out.oversized(action);
        if self.logged_oversized {
            return;
        }
        self.logged_oversized = true;
        let error = if complete {
            format!(
                "line of {len} bytes at offset {at} exceeds the {max}-byte record limit (max_record_bytes)"
            )
        } else {
            format!(
                "line at offset {at} exceeds the {max}-byte record limit (max_record_bytes): {len} bytes so far and no end yet"
            )
        };
        match action {
            Oversized::Split => tracing::warn!(
                path = %out.path().display(),
                error = %error,
                records = len.div_ceil(max as u64),
                "Split an oversized line into several records (oversized = \"split\"); further ones in this file are only counted"
            ),
            Oversized::Truncate => tracing::error!(
                path = %out.path().display(),
                error = %error,
                dropped_bytes = len.saturating_sub(max as u64),
                "Truncated an oversized line (oversized = \"truncate\"); further ones in this file are only counted"
            ),
        }
    }

    /// A line within the size limit.
    fn line(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        let Some(line) = self.valid_utf8(reader, out, line, line_start)? else {
            return Ok(());
        };
        if let Some(join) = self.join {
            return self.joined(reader, out, join, line, line_start);
        }
        let Some(start_re) = &self.multiline_start else {
            if line.is_empty() {
                return Ok(());
            }
            // The line's only record: the consumed offset passes it.
            self.in_hand = None;
            return self.emit(reader, out, line);
        };
        let starts = start_re.is_match(&line);
        if starts || self.multiline.is_none() {
            self.emit_multiline(reader, out)?;
            if line.is_empty() {
                return Ok(());
            }
            self.multiline = Some(Multiline::new(&line, line_start));
            return Ok(());
        }
        self.continue_multiline(reader, out, line, line_start)
    }

    /// A line of a joined record: it starts one or continues the open one,
    /// and the record is sent as soon as its format says it is complete.
    fn joined(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        join: Join,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        let was_open = self.multiline.as_ref().is_some_and(|p| p.open);
        if !was_open && line.is_empty() {
            return Ok(());
        }
        // Read from the line as it came: the record may keep only its head.
        let open = join.continues_after(was_open, &line);
        if was_open {
            // Past the record limit, split or truncated as a multiline record.
            self.continue_multiline(reader, out, line, line_start)?;
        } else {
            self.multiline = Some(Multiline::new(&line, line_start));
        }
        if open {
            let p = self.multiline.as_mut().expect("a joined record is open");
            p.open = true;
            return Ok(());
        }
        // The line is in the record: the consumed offset passes it.
        self.in_hand = None;
        self.emit_multiline(reader, out)
    }

    /// The line as the `invalid_utf8` policy has it; `None`: nothing more to send
    /// (rejected, or split and sent already).
    fn valid_utf8(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        line: Bytes,
        line_start: u64,
    ) -> Result<Option<Bytes>, FileError> {
        let e = match std::str::from_utf8(&line) {
            Ok(_) => return Ok(Some(line)),
            Err(e) => e,
        };
        let policy = self.invalid_utf8;
        out.invalid_utf8(policy == InvalidUtf8::Reject);
        if !self.logged_utf8 {
            self.logged_utf8 = true;
            log_invalid_utf8(out.path(), policy, &line, &e, line_start);
        }
        match policy {
            InvalidUtf8::Pass => Ok(Some(line)),
            InvalidUtf8::Reject => Ok(None),
            InvalidUtf8::Replace => self.replaced(reader, out, &line, line_start),
        }
    }

    /// A line with its invalid bytes replaced by U+FFFD, which may make it
    /// oversized.
    fn replaced(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        line: &[u8],
        line_start: u64,
    ) -> Result<Option<Bytes>, FileError> {
        let fixed = String::from_utf8_lossy(line).into_owned();
        let max = self.max;
        if fixed.len() <= max {
            return Ok(Some(Bytes::from(fixed)));
        }
        // U+FFFD is 3 bytes: the line grew past the limit.
        let cut = char_boundary(fixed.as_bytes(), max);
        let fixed = Bytes::from(fixed);
        let oversized = self.oversized;
        self.oversized_line(out, fixed.len() as u64, line_start, oversized, true);
        match oversized {
            Oversized::Truncate => Ok(Some(fixed.slice(..cut))),
            Oversized::Split => {
                self.emit_multiline(reader, out)?;
                self.split(reader, out, fixed)?;
                Ok(None)
            }
        }
    }

    /// Adds a continuation line to the multiline record in progress: the record
    /// is full past `max_record_bytes`, then split or truncated.
    fn continue_multiline(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        line: Bytes,
        line_start: u64,
    ) -> Result<(), FileError> {
        let max = self.max;
        let p = self
            .multiline
            .as_mut()
            .expect("a multiline record is in progress");
        p.last = Instant::now();
        if p.data.len() + 1 + line.len() <= max {
            p.data.extend_from_slice(b"\n");
            p.data.extend_from_slice(&line);
            return Ok(());
        }
        match self.oversized {
            Oversized::Split => {
                // The record is full: this line starts the next one.
                let len = (p.data.len() + 1 + line.len()) as u64;
                let start = p.start;
                self.oversized_line(out, len, start, Oversized::Split, true);
                self.emit_multiline(reader, out)?;
                self.multiline = Some(Multiline::new(&line, line_start));
            }
            Oversized::Truncate => {
                let room = max.saturating_sub(p.data.len() + 1);
                if room > 0 {
                    let cut = char_boundary(&line, room);
                    p.data.extend_from_slice(b"\n");
                    p.data.extend_from_slice(&line[..cut]);
                }
                if !p.truncated {
                    p.truncated = true;
                    let (len, start) = ((p.data.len() + 1 + line.len()) as u64, p.start);
                    self.oversized_line(out, len, start, Oversized::Truncate, true);
                }
            }
        }
        Ok(())
    }

    /// Sends the multiline record in progress, if any.
    pub(super) fn emit_multiline(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
    ) -> Result<(), FileError> {
        match self.multiline.take() {
            Some(p) => self.emit(reader, out, p.data.freeze()),
            None => Ok(()),
        }
    }

    /// Sends the multiline record in progress if no line was added to it for
    /// `multiline_timeout`.
    pub(super) fn emit_multiline_due(
        &mut self,
        reader: &Reader,
        out: &mut impl Emit,
        now: Instant,
    ) -> Result<bool, FileError> {
        if self.multiline_deadline().is_some_and(|d| now >= d) {
            self.emit_multiline(reader, out)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The file is finished: its last line without a newline and its multiline
    /// record in progress are records.
    pub(super) fn finish(
        &mut self,
        reader: &mut Reader,
        out: &mut impl Emit,
    ) -> Result<(), FileError> {
        self.lines(reader, out, true)?;
        self.long_line = None;
        self.emit_multiline(reader, out)
    }
}

/// The end of `s[..max]` moved back to a UTF-8 character boundary, when one is
/// within 3 bytes (binary data is cut at `max`).
pub(super) fn char_boundary(s: &[u8], max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut end = max;
    while end > 0 && max - end < 3 && (s[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    if end == 0 || (s[end] & 0xC0) == 0x80 {
        max
    } else {
        end
    }
}

/// The first invalid line of a file, logged with what its policy does with it.
fn log_invalid_utf8(
    path: &Path,
    policy: InvalidUtf8,
    line: &[u8],
    e: &std::str::Utf8Error,
    line_start: u64,
) {
    let bad = line.get(e.valid_up_to()).copied().unwrap_or_default();
    let error = format!(
        "line at offset {line_start} is not valid UTF-8: byte 0x{bad:02x} at position {}",
        e.valid_up_to()
    );
    match policy {
        InvalidUtf8::Pass => {
            tracing::warn!(path = %path.display(), error = %error, "Line is not valid UTF-8; sent as it is (invalid_utf8 = \"pass\"); further ones in this file are only counted")
        }
        InvalidUtf8::Replace => {
            tracing::warn!(path = %path.display(), error = %error, "Line is not valid UTF-8; invalid bytes replaced with U+FFFD (invalid_utf8 = \"replace\"); further ones in this file are only counted")
        }
        InvalidUtf8::Reject => {
            tracing::error!(path = %path.display(), error = %error, "Line is not valid UTF-8; not sent (invalid_utf8 = \"reject\"); further ones in this file are only counted")
        }
    }
}

#[cfg(test)]
mod tests;
